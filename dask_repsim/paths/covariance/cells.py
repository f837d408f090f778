"""The co-moment path's cells: a grid's passes (the fewest the memory budget holds, narrower
with a permutation null), each pair of layers' measures from the pass that holds it, with
their jackknife replicates and permutation nulls (:mod:`.passes`; the cross-validated
measures' from :mod:`.folds`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ...engine.memory import check_permutations, least_budget, max_features
from ...engine.parallel import client_blas, memory_budget
from ...exceptions import RepsimWarning, quietly
from ...io.inputs import Layer
from ...measures.predictivity import OnFolds
from ...results import Cell, Cells, Positions, grid_cells
from . import folds
from .passes import plan_passes, run_pass


def _pass_need(widths: Sequence[int], rows: Sequence[int], cols: Sequence[int],
               subset: Sequence[int], options: Any,
               groups: tuple) -> tuple[int, int, int]:
    """(least budget, width, permuted cross entries) of a pass over the layers ``subset``
    (:func:`~dask_repsim.engine.memory.least_budget`); ``groups``: (sample groups, groups
    the null is kept by)."""
    a, b = (sum(widths[i] for i in set(side) & set(subset)) for side in (rows, cols))
    width, cross = sum(widths[i] for i in subset), a * b * groups[1]
    need = least_budget(width, groups=groups[0], permutations=options.permutations,
                        cross=cross, aside=options.nan_policy == "omit")
    return need, width, cross


def _plan(layers: Sequence[Layer], rows: Sequence[int], cols: Sequence[int], options: Any,
          groups: tuple) -> list[list[int]]:
    """The passes of a grid: the fewest that fit the budget; with a permutation null, whose
    cross blocks grow with the passes' sides, narrower passes until each fits (or only the
    widest pair is left)."""
    widths = [layer.data.shape[1] for layer in layers]
    capacity = max_features(groups=groups[0], permutations=options.permutations,
                            aside=options.nan_policy == "omit")
    passes = plan_passes(widths, rows, cols, capacity)
    widest, budget = max(widths[r] for r in rows) + max(widths[c] for c in cols), memory_budget()
    while options.permutations and capacity > widest and max(
            _pass_need(widths, rows, cols, s, options, groups)[0] for s in passes) > budget:
        capacity = max(widest, capacity * 9 // 10)
        passes = plan_passes(widths, rows, cols, capacity)
    if len(passes) > 1:
        warnings.warn(
            f"the {sum(widths)} features of all layers do not fit the memory budget together: "
            f"computing the grid in {len(passes)} passes over the data (set dask config "
            "'repsim.memory-budget' to change the budget)",
            RepsimWarning,
            stacklevel=5,
        )
    return passes


def covariance_cells(
    functions: Sequence[Callable[[Any], Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    options: Any,
    todo: Positions | None = None,
) -> tuple[Cells, dict[str, Any]]:
    """Cells from co-moment passes: one pass when every layer fits the memory budget, else the
    fewest passes that hold every cell (:func:`plan_passes`); ``todo``: the (row, column)
    cells to compute (default every one); a pass forms the cross blocks of those only."""
    mixed = _mixed(functions, layers, rows, cols, options, todo)
    if mixed is not None:
        return mixed
    groups = folds.fold_groups(functions, options, int(layers[rows[0]].data.shape[0]))
    for function in functions:
        if isinstance(function, OnFolds):
            function.check(layers[0].data.shape[0], max(layers[r].data.shape[1] for r in rows))
    passes = _plan(layers, rows, cols, options, groups)
    widths = [layer.data.shape[1] for layer in layers]
    k = 0
    for s in passes if options.permutations else ():
        k = check_permutations(options.permutations,
                               *_pass_need(widths, rows, cols, s, options, groups), groups[1])
    cells: Cells = {}
    counts: dict[tuple[int, int], tuple[int, int]] = {}
    wanted = grid_cells(rows, cols, todo)
    for subset in passes:
        here = [(i, j) for i, j in wanted
                if (i, j) not in counts and rows[i] in subset and cols[j] in subset]
        if here:
            _one_pass(functions, layers, rows, cols, subset, here, (options, groups, k), cells,
                      counts)
    n = [c for c, _ in counts.values()]
    attrs = {"n_samples": min(n), "n_samples_omitted": max(o for _, o in counts.values()),
             "n_passes": len(passes)}
    if options.nan_policy == "omit":
        attrs["n_samples_per_cell"] = counts
    return cells, attrs


def _one_pass(functions, layers, rows, cols, subset, todo, run, cells, counts) -> None:
    """The cells ``todo`` from one pass over the layers ``subset``; ``run``: (options, sample
    groups, permutations)."""
    options, (groups, null_groups, bounds), k = run
    position = {layer: pos for pos, layer in enumerate(subset)}
    pairs = [(position[rows[i]], position[cols[j]]) for i, j in todo]
    null_a = sorted({a for a, _ in pairs})
    null_b = sorted({b for _, b in pairs})
    result = run_pass(
        [layers[i] for i in subset], groups=groups,
        nan_policy=options.nan_policy,
        permute=(null_a, null_b, k, options.get("seed")) if k else None, pairs=pairs,
        null_groups=null_groups if k else 1, bounds=bounds,
    )
    on_folds = [m for m, f in enumerate(functions) if isinstance(f, OnFolds)]
    plain = [m for m in range(len(functions)) if m not in on_folds]
    for (i, j), (a, b) in zip(todo, pairs, strict=True):
        # each of the pair's values, replicates and null values is small matrix work on the
        # client: one BLAS thread (engine.parallel's notes)
        with client_blas(sum(int(layers[u].data.shape[1]) for u in (rows[i], cols[j]))):
            if plain:
                pair = result.pair(a, b)
                reps = result.replicates(a, b) if options.interval else None
                null = result.null(a, b) if k else None
                for m in plain:
                    function = functions[m]
                    cells[m, i, j] = Cell(function(pair), quietly(function, reps),
                                          quietly(function, null))
            if on_folds:
                found = folds.fold_cells([functions[m] for m in on_folds], result, a, b,
                                         options, k)
                cells.update({(m, i, j): cell for m, cell in zip(on_folds, found, strict=True)})
        counts[i, j] = (result.count(a, b), result.omitted(a, b))


def _mixed(functions: Sequence[Any], layers: Sequence[Layer], rows: Sequence[int],
           cols: Sequence[int], options: Any, todo: Positions | None,
           ) -> tuple[Cells, dict[str, Any]] | None:
    """With an interval or a null asked for, the measures on folds take passes of their own
    (their groups and null are kept by fold), so that the other measures' replicates and null
    are those they have alone: the cells of both; ``None`` when there is nothing to part."""
    on_folds = [m for m, f in enumerate(functions) if isinstance(f, OnFolds)]
    if not on_folds or len(on_folds) == len(functions) or not (
            options.interval or options.permutations):
        return None
    cells: Cells = {}
    passes = 0
    for chosen in ([m for m in range(len(functions)) if m not in on_folds], on_folds):
        part, attrs = covariance_cells([functions[m] for m in chosen], layers, rows, cols,
                                       options, todo)
        cells.update({(chosen[m], i, j): cell for (m, i, j), cell in part.items()})
        passes += attrs["n_passes"]
    return cells, {**attrs, "n_passes": passes}
