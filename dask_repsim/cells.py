"""One cell of a grid as a pairwise result: what the pairwise functions share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import runners
from .inputs import Layer
from .options import Options
from .results import Estimate, summarise


def covariance_cell(function: Callable[[Any], Any], layers: list[Layer],
                    options: Options) -> runners.Cell:
    """``function`` of the pair's co-moments, with replicates and null when asked for."""
    cells, _ = runners.covariance_cells([function], layers, [0], [len(layers) - 1], options)
    return cells[0, 0, 0]


def cell_estimate(cell: runners.Cell, options: Options, method: str,
                  similarity: bool = True) -> Estimate:
    """A cell as an :class:`Estimate` with its interval and permutation fields."""
    return summarise(cell.value, cell.replicates, options.get("level"), cell.null,
                     similarity, method=method)
