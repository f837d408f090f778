"""The sample-space path's cells: each pair of layers of a grid by the passes its measures need.

Measures of one family share a pass over a pair's tiles (or rows) and their inference:

- the k-nearest-neighbour measures (:mod:`~dask_repsim.paths.sample_blocks.neighbours`): one
  pass for every k-NN measure, whose permutation nulls relabel the neighbour lists;
- the distance-matrix measures (:mod:`~dask_repsim.paths.sample_blocks.distances`): one pass;
- the output-layer measures (:mod:`~dask_repsim.paths.sample_blocks.outputs`): one pass over
  rows;
- the rest by their own function (the registry's), asked for its null and replicates where the
  measure has them: RSA (:mod:`~dask_repsim.paths.sample_blocks.rsa`, its value, null and
  jackknife replicates from one pass over the RDM tiles), aligned cosine
  (:mod:`~dask_repsim.paths.sample_blocks.aligned_inference`, from one pass over rows) and RTD.

A family's function returns its measures' values by name and, when asked for, ``"null"`` (name
-> the values under the permutations) and ``"replicates"`` (name -> the leave-a-group-out
values, groups first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...io.inputs import Layer
from ...results import Cell, Cells, Positions, grid_cells
from . import distances, neighbours, outputs
from .neighbours import DEFAULT_K, KNN_MEASURES


def inference(null: tuple[int, int] | None, groups: int | None) -> dict[str, Any]:
    """The keyword arguments that ask a family's function for its null (``null=(count,
    seed)``) and jackknife replicates (``groups=``): only those asked for, so that a function
    offering neither is called as without inference."""
    return {k: v for k, v in (("null", null), ("groups", groups)) if v}


def family_cells(values: dict[str, Any], names: Sequence[str]) -> dict[str, Cell]:
    """The cells of ``names`` from a family's ``values`` (with ``"null"`` and ``"replicates"``
    where computed)."""
    nulls, reps = values.get("null", {}), values.get("replicates", {})
    return {name: Cell(values[name], reps.get(name), nulls.get(name),
                       {"method": "sample_blocks"}) for name in names}


def pair_cells(functions: Sequence[Callable[..., Any]], metrics: Sequence[str], x: Layer,
               y: Layer, k: int, null: tuple[int, int] | None,
               groups: int | None) -> list[Cell]:
    """The cells of ``metrics`` (each computed by ``functions``) of layers ``x`` and ``y``."""
    knn = tuple(name for name in metrics if name in KNN_MEASURES)
    apart = tuple(name for name in metrics if name in distances.DISTANCE_MEASURES)
    outs = tuple(name for name in metrics if name in outputs.OUTPUT_MEASURES)
    found: dict[str, Cell] = {}
    if knn:  # every neighbour measure (and its null) from one pass
        values = neighbours.knn_values(x, y, k, measures=knn, **inference(null, groups))
        found.update(family_cells(values, knn))
        if "cknna" in knn:  # the HSIC terms, which the pairwise function reports
            found["cknna"].fields["cknna_hsic"] = values["cknna_hsic"]
    if apart:
        values = distances.distance_values(x, y, measures=apart, **inference(null, groups))
        found.update(family_cells(values, apart))
    if outs:
        values = outputs.output_values(x, y, measures=outs, **inference(null, groups))
        found.update(family_cells(values, outs))
    out = []
    for function, name in zip(functions, metrics, strict=True):
        if name not in found:  # a measure of its own: its value, or a family's dict
            values = function(x, y, **inference(null, groups))
            found[name] = family_cells(values if isinstance(values, dict) else {name: values},
                                       [name])[name]
        out.append(found[name])
    return out


def sample_cells(
    functions: Sequence[Callable[..., Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    metrics: Sequence[str],
    k: int = DEFAULT_K,
    todo: Positions | None = None,
    permutations: int = 0,
    seed: int = 0,
    groups: int | None = None,
) -> tuple[Cells, dict[str, Any]]:
    """Cells of the measures of sample x sample matrices (RSA, k-nearest neighbours, distance
    matrices, output layers), each pair of layers by the passes of :func:`pair_cells`;
    ``todo``: the (row, column) cells to compute (default every one); ``permutations``: the
    nulls under that many permutations of side b's samples, seeded by ``seed``; ``groups``:
    the jackknife replicates leaving out each of that many contiguous groups of samples, of
    the measures that have them (:func:`dask_repsim.registry.supports`)."""
    null = (permutations, seed) if permutations else None
    cells: Cells = {}
    for i, j in grid_cells(rows, cols, todo):
        found = pair_cells(functions, metrics, layers[rows[i]], layers[cols[j]], k, null,
                           groups)
        cells.update({(m, i, j): cell for m, cell in enumerate(found)})
    return cells, {"n_samples": int(layers[rows[0]].data.shape[0]), "n_samples_omitted": 0}
