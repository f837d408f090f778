"""Each path's computation for a set of cells: the one code that pairwise functions and the grid
share.

A cell is a pair (row layer, column layer) of a grid; a pairwise call is a grid of one cell. Each
runner takes the measures' functions for its path (:func:`dask_repsim.registry.path_functions`),
the layers, and which layers form the rows and the columns, and returns a :class:`Cell` per
(measure, row, column): the value, and on the co-moment path its jackknife replicates and
permutation null. Input rules are the same on every path (:mod:`dask_repsim.validation`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import columns, gram, methods, minibatch, neighbours, qr, samplespace, tiles
from .exceptions import RepsimWarning
from .inputs import Layer
from .options import Options
from .passes import run_pass
from .statistics import SPLIT_EVERY


@dataclass
class Cell:
    """One measure of one pair of layers, with what was computed beside it."""

    value: Any
    replicates: list[Any] | None = None
    null: list[Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


Cells = dict[tuple[int, int, int], Cell]


def quietly(function: Callable[[Any], Any], items: Sequence[Any] | None) -> list[Any] | None:
    """``function`` of every item, without repeating the package's warnings for each (they were
    given for the full data already)."""
    if items is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        return [function(item) for item in items]


def check_permutations(permutations: int, cross_size: int) -> int:
    """``permutations``, after checking the memory its cross blocks need per task.

    ``cross_size``: entries of one permuted cross block (features of the permuted pairs' A
    side times those of their B side).
    """
    need = int(permutations) * cross_size * 8 * (SPLIT_EVERY + 2)
    budget = methods.memory_budget()
    if need > budget:
        raise ValueError(
            f"permutations={permutations} keeps {permutations} cross matrices of {cross_size} "
            f"entries per task: about {need / 2**30:.1f} GiB per task, over the memory budget "
            f"of {budget / 2**30:.1f} GiB; ask for fewer permutations or compare fewer layers "
            "at once (or raise dask config 'repsim.memory-budget')"
        )
    return int(permutations)


def _plan(layers: Sequence[Layer], rows: Sequence[int], cols: Sequence[int]) -> list[list[int]]:
    widths = [layer.data.shape[1] for layer in layers]
    passes = methods.plan_passes(widths, rows, cols, methods.max_features())
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
    options: Options,
) -> tuple[Cells, dict[str, Any]]:
    """Cells from co-moment passes: one pass when every layer fits the memory budget, else the
    fewest passes that hold every cell (:func:`dask_repsim.methods.plan_passes`)."""
    passes = _plan(layers, rows, cols)
    widths = [layer.data.shape[1] for layer in layers]
    k = check_permutations(options.permutations, max(
        sum(widths[i] for i in set(rows) & set(s)) * sum(widths[j] for j in set(cols) & set(s))
        for s in passes
    )) if options.permutations else 0
    cells: Cells = {}
    counts: dict[tuple[int, int], tuple[int, int]] = {}
    for subset in passes:
        todo = [(i, j) for i, a in enumerate(rows) for j, b in enumerate(cols)
                if (i, j) not in counts and a in subset and b in subset]
        if todo:
            _one_pass(functions, layers, rows, cols, subset, todo, options, k, cells, counts)
    n = [c for c, _ in counts.values()]
    attrs = {"n_samples": min(n), "n_samples_omitted": max(o for _, o in counts.values()),
             "n_passes": len(passes)}
    if options.nan_policy == "omit":
        attrs["n_samples_per_cell"] = counts
    return cells, attrs


def _one_pass(functions, layers, rows, cols, subset, todo, options, k, cells, counts) -> None:
    """The cells ``todo`` from one pass over the layers ``subset``."""
    position = {layer: pos for pos, layer in enumerate(subset)}
    pairs = [(position[rows[i]], position[cols[j]]) for i, j in todo]
    null_a = sorted({a for a, _ in pairs})
    null_b = sorted({b for _, b in pairs})
    result = run_pass(
        [layers[i] for i in subset], groups=options.groups_used,
        nan_policy=options.nan_policy,
        permute=(null_a, null_b, k, options.get("seed")) if k else None, pairs=pairs,
    )
    for (i, j), (a, b) in zip(todo, pairs, strict=True):
        pair = result.pair(a, b)
        reps = result.replicates(a, b) if options.interval else None
        null = result.null(a, b) if k else None
        for m, function in enumerate(functions):
            cells[m, i, j] = Cell(function(pair), quietly(function, reps), quietly(function, null))
        counts[i, j] = (result.count(a, b), result.omitted(a, b))


def qr_cells(
    functions: Sequence[Callable[..., Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
) -> tuple[Cells, dict[str, Any]]:
    """Cells from one tall-skinny QR pass over every layer: ``X_c = Q R[:, a]`` for every layer
    with one Q, so a pair's columns of R are a factor of that pair."""
    factor = qr.tsqr(list(layers))
    cells: Cells = {}
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            sub = factor.select(a, b)
            names = (layers[a].name, layers[b].name)
            for m, function in enumerate(functions):
                cells[m, i, j] = Cell(function(sub, names))
    return cells, {"n_samples": factor.count, "n_samples_omitted": 0, "n_passes": 1}


#: the module of each path that sums linear CKA
KERNEL_MODULES = {"gram": gram, "tiled": tiles}


def kernel_cells(
    paths: Sequence[str],
    specs: Sequence[dict[str, Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
) -> tuple[Cells, dict[str, Any]]:
    """Linear CKA cells from Gram blocks or feature tiles, ``paths[c]`` for cell c (row-major).

    Each layer's column statistics (means for centring, and the input checks) come from one
    pass over all layers; every path shares them.
    """
    used = sorted({a for a in rows} | {b for b in cols})
    stats = dict(zip(used, columns.checked_columns([layers[u] for u in used]), strict=True))
    flags = [spec["debiased"] for spec in specs]
    cells: Cells = {}
    for c, (i, j) in enumerate((i, j) for i in range(len(rows)) for j in range(len(cols))):
        a, b = rows[i], cols[j]
        values = KERNEL_MODULES[paths[c]].cka_values(
            layers[a], layers[b], flags, means=(stats[a].mean, stats[b].mean)
        )
        for m, value in enumerate(values):
            cells[m, i, j] = Cell(value, fields={"method": paths[c]})
    n = stats[used[0]].count
    return cells, {"n_samples": n, "n_samples_omitted": 0}


def gram_cells(
    specs: Sequence[dict[str, Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    *,
    seed: int,
) -> tuple[Cells, dict[str, Any]]:
    """CKA cells of every pair from the shared sample-space tiles
    (:mod:`dask_repsim.samplespace`): each layer's Gram tile is formed once for the grid.

    ``specs[m]``: ``{"debiased": bool}`` for linear CKA, ``{"kernel": "rbf", "sigma": s}`` for
    RBF CKA at bandwidth ``s`` times the median distance.
    """
    used = sorted(set(rows) | set(cols))
    pos = {u: k for k, u in enumerate(used)}
    sigmas = sorted({spec["sigma"] for spec in specs if spec.get("kernel") == "rbf"})
    pairs = sorted({tuple(sorted((pos[a], pos[b]))) for a in rows for b in cols})
    sums, attrs = samplespace.grid_sums([layers[u] for u in used], pairs, sigmas=sigmas,
                                        seed=seed)
    cells: Cells = {}
    for m, spec in enumerate(specs):
        rbf = spec.get("kernel") == "rbf"
        kernel = 1 + sigmas.index(spec["sigma"]) if rbf else 0
        for i, a in enumerate(rows):
            for j, b in enumerate(cols):
                first, second = sorted((pos[a], pos[b]))
                names = (layers[used[first]].name, layers[used[second]].name)
                value = samplespace.cka_from_sums(sums[kernel, first, second], names,
                                                  bool(spec.get("debiased")))
                cells[m, i, j] = Cell(value, fields={
                    "method": "gram", "approximate": attrs.get("approximate") if rbf else None})
    if "median_exact" in attrs:  # netCDF attributes take no booleans
        attrs["median_exact"] = int(attrs["median_exact"])
    if "median_sq_distance" in attrs:
        def side(u: int) -> str:
            return "" if u in rows and u in cols else " of a" if u in rows else " of b"

        attrs["median_sq_distance"] = "; ".join(  # each layer's, for its bandwidths
            f"{layers[u].name}{side(u)}: {m!r}"
            for u, m in zip(used, attrs["median_sq_distance"], strict=True))
    return cells, {"n_samples_omitted": 0, **attrs}


def sample_cells(
    functions: Sequence[Callable[..., float]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    metrics: Sequence[str],
    k: int = neighbours.DEFAULT_K,
) -> tuple[Cells, dict[str, Any]]:
    """Cells of the measures of sample x sample matrices (RSA, k-nearest neighbours), each pair
    from its own pass over row-block tiles (:mod:`dask_repsim.rsa`,
    :mod:`dask_repsim.neighbours`); mutual k-NN and CKNNA, when both are in ``metrics``, from
    one pass with ``k`` neighbours."""
    shared = {name: m for m, name in enumerate(metrics) if name in neighbours.KNN_MEASURES}
    if len(shared) < 2:
        shared = {}
    cells: Cells = {}
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            values = neighbours.knn_values(layers[a], layers[b], k, measures=tuple(shared)) \
                if shared else {}
            for m, (function, name) in enumerate(zip(functions, metrics, strict=True)):
                value = values[name] if name in shared else function(layers[a], layers[b])
                cells[m, i, j] = Cell(value, fields={"method": "sample_blocks"})
    return cells, {"n_samples": int(layers[rows[0]].data.shape[0]), "n_samples_omitted": 0}


def minibatch_cells(
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    *,
    kernel: str,
    sigma: float,
    batch_size: int,
    seed: int,
    level: float,
) -> tuple[Cells, dict[str, Any]]:
    """Approximate CKA cells, each with its bootstrap interval (Nguyen et al. 2021)."""
    cells: Cells = {}
    estimate = None
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            estimate = minibatch.minibatch_cka(
                layers[a], layers[b], kernel=kernel, sigma=sigma, batch_size=batch_size,
                seed=seed, level=level,
            )
            cells[0, i, j] = Cell(float(estimate), fields=dict(estimate.__dict__))
    attrs = {"n_samples": layers[rows[0]].data.shape[0], "n_samples_omitted": 0,
             "approximate": estimate.approximate, "n_batches": estimate.n_batches,
             "batch_size": batch_size, "level": level}
    return cells, attrs


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
