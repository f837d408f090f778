"""Each path's computation for a set of cells: the one code that pairwise functions and the grid
share.

A cell is a pair (row layer, column layer) of a grid; a pairwise call is a grid of one cell. Each
runner takes the measures' functions for its path (:func:`dask_repsim.registry.path_functions`),
the layers, and which layers form the rows and the columns, and returns a :class:`Cell` per
(measure, row, column): the value, and on the co-moment path its jackknife replicates and
permutation null. Input rules are the same on every path (:mod:`dask_repsim.io.validation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .io.inputs import Layer
from .options import DEFAULTS, Options, reject_unused
from .paths import covariance, minibatch, qr, tiled
from .paths.gram import samplespace
from .paths.sample_blocks import neighbours
from .registry import check_samples, path_functions
from .results import Cell, Cells, Estimate, summarise


def run_cells(path: str, outputs: Sequence[tuple[str, str, float | None]],
             layers: Sequence[Layer], rows: Sequence[int], cols: Sequence[int],
             options: Options, *, batch_size: int | None,
             parameters: dict[str, Any] | None = None,
             ) -> tuple[Cells, dict[str, Any]]:
    """Every cell of the grid on ``path``; ``outputs`` from :func:`expand_metrics`."""
    metrics = [measure for _, measure, _ in outputs]
    check_samples(metrics, layers[rows[0]].data.shape[0])  # every measure's minimum, one rule
    if batch_size is not None and path != "minibatch":
        raise ValueError(f"batch_size= applies to method='minibatch' only, not {path!r}")
    rbf = "cka_rbf" in metrics
    reject_unused(path, options, level_used=path == "minibatch",
                  seed_used=path == "minibatch" or rbf)
    if path == "sample_blocks":
        k = (parameters or {}).get("k")
        return neighbours.sample_cells(path_functions(path, metrics, parameters), layers, rows,
                                    cols, metrics, neighbours.DEFAULT_K if k is None else k)
    if path == "gram":
        specs = [dict(spec, sigma=s) for spec, (_, _, s) in
                 zip(path_functions(path, metrics), outputs, strict=True)]
        return samplespace.gram_cells(specs, layers, rows, cols, seed=options.get("seed"))
    functions = path_functions(path, metrics, parameters)
    if path == "covariance":
        return covariance.covariance_cells(functions, layers, rows, cols, options)
    if path == "qr":
        return qr.qr_cells(functions, layers, rows, cols)
    if path == "minibatch":
        return minibatch.minibatch_cells(
            layers, rows, cols, kernel="linear", sigma=DEFAULTS["sigma"],
            batch_size=batch_size or DEFAULTS["batch_size"],
            seed=options.get("seed"), level=options.get("level"))
    return tiled.kernel_cells(functions, layers, rows, cols)


def to_arrays(cells: Cells, shape: tuple[int, int, int], what: str) -> np.ndarray | None:
    """``values``, ``replicates`` (groups first) or ``null`` (permutations first) of every cell
    as one float array, NaN where a cell was not computed; ``None`` when no cell has them."""
    if what == "value":
        out = np.full(shape, np.nan)
        for key, cell in cells.items():
            out[key] = cell.value
        return out
    first = next((getattr(c, what) for c in cells.values() if getattr(c, what) is not None), None)
    if first is None:
        return None
    out = np.full((len(first), *shape), np.nan)
    for key, cell in cells.items():
        out[(slice(None), *key)] = getattr(cell, what)
    return out


def covariance_cell(function: Callable[[Any], Any], layers: list[Layer],
                    options: Options) -> Cell:
    """``function`` of the pair's co-moments, with replicates and null when asked for."""
    cells, _ = covariance.covariance_cells([function], layers, [0], [len(layers) - 1], options)
    return cells[0, 0, 0]


def cell_estimate(cell: Cell, options: Options, method: str,
                  similarity: bool = True) -> Estimate:
    """A cell as an :class:`Estimate` with its interval and permutation fields."""
    return summarise(cell.value, cell.replicates, options.get("level"), cell.null,
                     similarity, method=method)

