"""Grids on the sample space: each layer's Gram tile formed once, every pair's sums from it.

For a grid of L layers on n samples, split the samples into T row blocks. A task per tile
(I, J), I <= J, reads row blocks I and J of every layer, forms each layer's centred Gram block
``K_l[I, J] = X_l[I] X_l[J]^T`` once (float64, in feature slices; ``a @ a.T`` on the diagonal),
and adds, for every requested pair (a, b) and each layer with itself, ``sum K_a * K_b`` over the
tile, plus each layer's row sums and diagonal. Those are all that biased and unbiased HSIC need
(:class:`~dask_repsim.measures.hsic.GramSums`), so linear CKA and debiased CKA of every pair follow.
Cost ``n^2 sum(p)`` for the Gram tiles plus ``n^2`` per pair, against ``n^2 (p + q)`` per pair
pair by pair; no n x n matrix is ever whole, and a task holds its tile's blocks only.

RBF CKA at several bandwidths: the first pass also writes each tile's squared distances to a
scratch directory (:mod:`dask_repsim.paths.gram.scratch`) with a histogram of them, from which each
layer's median squared distance is found exactly (over a seeded subsample beyond
:data:`MEDIAN_EXACT_MAX` samples); a second pass reads the distances back and sums the kernels of
every bandwidth. A pairwise call (``dask_repsim.cka(x, y, kernel="rbf")``) is a grid of one
cell: the same tiles, the same medians.

When the budget lets each task hold a whole n x n Gram matrix and a few temporaries of its
size (:func:`whole_plan`; at 2,048 samples 34 MB each), there is a single row block and a
single tile: the tasks share the work by layers instead, each forming the whole Gram matrices
of its share of the layers' columns (wide layers cut by columns into several tasks when they
are more than a task's share), so that each stored chunk is read once and no product is formed
twice. Each Gram matrix goes to the scratch directory as soon as it is formed (for RBF CKA
with its diagonal, from which the kernel pass forms the distances again; the layer's exact
median squared distance is found in the task, from the distances in memory), and every
pair's sum comes from the saved matrices read back in slabs of rows, one product of all the
layers' rows with their transpose per row (:func:`~dask_repsim.paths.gram.tiles.saved_sums`),
so that memory does not grow with the number of layers (a zoo of 8 ResNet-18s is 56 layers).
Otherwise the samples are cut into T row blocks.

Row blocks are read inside the tasks (a slice of the layer's dask array, computed there, stored
chunk by stored chunk), so a task's memory is what :func:`~dask_repsim.paths.gram.tiles.tile_rows`
counts; :mod:`dask_repsim.paths.gram.tiles` forms the blocks and a tile's sums. With T > 1 row
blocks, the diagonal tiles (I, I) run first, and each also writes its rows, as stored (float32
stays float32), to the scratch directory; the tiles above the diagonal then read the copies
(cut by rows into pieces when there are fewer of them than threads): each stored chunk is read
once, the first chunk of each layer once more (:func:`first_chunk_means`), and the other reads
are plain file reads that run in parallel. When the workers may be on other machines (a
``distributed`` cluster with workers on other hosts) and ``repsim.scratch`` is not set, the
cluster carries the row blocks and whole Gram matrices as task results instead
(:mod:`dask_repsim.paths.gram.carried`): each stored chunk is still read once (the first
twice), and dask moves and spills what the tiles need. There is no separate pass for the
means: centring is exact from the Gram sums.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np

from ...engine.columns import checked_columns
from ...engine.medians import MEDIAN_EXACT_MAX, MEDIAN_SAMPLE, sampled_median_sq_distance
from ...engine.parallel import (
    compute,
    memory_budget,
    task_slots,
    threads_per_process,
    workers_share_this_machine,
)
from ...engine.permuted import permutation_series
from ...engine.stream import group_bounds
from ...io.inputs import Layer
from ...io.validation import check_sample_counts, require_samples
from ...measures.hsic import GramSums, cka_ratio
from ...results import Cell, Cells, Positions, grid_cells
from . import carried, gamma, jackknife, permuted, scratch
from .tiles import (
    FEATURE_SLICE,
    SLAB_BYTES,
    GramDistances,
    RowReader,
    Tile,
    TileSums,
    distances,
    gram_tile,
    run_tiles,
    saved_sums,
    tile_rows,
    tiles_of,
    whole_gram,
)

logger = logging.getLogger("dask_repsim")

#: Largest n for which each layer's median squared distance (the RBF bandwidths) is exact:
#: :data:`~dask_repsim.engine.medians.MEDIAN_EXACT_MAX`, named here for the gram path
MEDIAN_EXACT_MAX = MEDIAN_EXACT_MAX


@dataclass(frozen=True)
class Unit:
    """Columns ``cols`` (start, stop) of layer ``layer``: a share of its whole Gram matrix."""

    layer: int
    cols: tuple[int, int]

    @property
    def width(self) -> int:
        return self.cols[1] - self.cols[0]


def whole_plan(n: int, widths: Sequence[int], itemsize: int, budget: int, threads: int,
               slots: int, rbf: bool = False) -> list[list[Unit]] | None:
    """How to form every layer's whole n x n Gram matrix in one row block: the layers' column
    ranges (units) in ``slots`` bins of about equal width, a task each; ``None`` when that
    does not fit ``budget`` (then the samples are cut into row blocks,
    :func:`~dask_repsim.paths.gram.tiles.tile_rows`).

    With a single row block each stored chunk is read once and no Gram product is formed
    twice; the tasks share the work by layers instead of by tiles. Each Gram matrix goes to
    the scratch directory as soon as it is formed (:func:`saved_grams` of them, 8 n^2 bytes
    each), and the pairs' sums are taken from there in slabs of rows
    (:func:`~dask_repsim.paths.gram.tiles.saved_sums`), RBF kernels too, so that a task
    (``threads`` at once) holds two matrices of 8 n^2 bytes (its Gram matrix and the product
    of a feature slice; for RBF CKA a third, the squared distances, whose histogram is
    counted in small pieces), reused from unit to unit, a float64 feature slice and the raw
    rows of its unit, however many layers there are. For RBF CKA the plan is taken only when
    the budget holds five such matrices a task: where three fit and five do not, reading the
    distances of row-block tiles back was faster than forming them again from whole Gram
    matrices (RBF CKA of a 10,000 x (64 + 64) pair: 4.6 s against 9.0 s). A
    layer wider than a bin's share is cut into units, each of which reads all of the layer's
    stored chunks; when the budget leaves a unit less than half that share, the row blocks
    are cheaper.

    Examples
    --------
    >>> plan = whole_plan(2048, [65536, 100, 65536, 100], 4, 2**32, 2, 2)
    >>> [[(u.layer, u.cols) for u in b] for b in plan]
    [[(0, (0, 65536)), (1, (0, 100))], [(3, (0, 100)), (2, (0, 65536))]]
    >>> [len(b) for b in whole_plan(2048, [65536, 100], 4, 2**32, 2, 2)]  # the wide one in two
    [2, 1]
    >>> whole_plan(50_000, [65536, 100], 4, 2**32, 2, 2) is None  # 20 GB per Gram matrix
    True
    """
    square = 8.0 * n * n
    cap = -(-sum(widths) // slots)
    share = min(max(widths), cap)
    while 2 * cap >= share:
        units = []
        for layer, w in enumerate(widths):
            cuts = np.linspace(0, w, -(-w // cap) + 1).astype(int)
            units += [Unit(layer, (int(a), int(b))) for a, b in zip(cuts[:-1], cuts[1:],
                                                                    strict=True)]
        per_task = square * (5 if rbf else 2) + n * (
            8.0 * min(max(widths), FEATURE_SLICE) + itemsize * max(u.width for u in units))
        if threads * per_task <= budget:
            bins: list[list[Unit]] = [[] for _ in range(min(slots, len(units)))]
            load = [0] * len(bins)
            for u in sorted(units, key=lambda u: -u.width):  # the widest first, to the least load
                k = int(np.argmin(load))
                bins[k].append(u)
                load[k] += u.width
            # every other bin narrowest first, so that reads and products of bins interleave
            return [sorted(b, key=lambda u: (u.layer, u.cols), reverse=bool(k % 2))
                    for k, b in enumerate(bins)]
        cap //= 2
    return None


def saved_grams(plan: Sequence[Sequence[Unit]]) -> int:
    """How many n x n matrices a whole-matrix ``plan`` saves: one per unit, and the sum of
    the units of each layer cut into several."""
    count: dict[int, int] = {}
    for u in (u for b in plan for u in b):
        count[u.layer] = count.get(u.layer, 0) + 1
    return sum(count.values()) + sum(c > 1 for c in count.values())


def _unit_grams(units: Sequence[Unit], readers, tile: Tile, store, single, rbf: bool,
                keep=None) -> dict[int, Any]:
    """The (partial) Gram matrix of every unit of a bin (:func:`~.tiles.whole_gram`, the rows
    shown to ``keep``, see :func:`grid_sums`). A layer that is a single unit
    (``single[layer]``) is finished here (:func:`_finish`); a share of a layer is saved to
    ``store`` for :func:`_join`. Returns the finished layers' medians (:func:`_finish`)."""
    n = tile.rows[1]
    buffer = np.empty(max(readers[u.layer].nbytes(0, n, u.cols) for u in units), np.uint8)
    work = np.empty((3 if rbf else 2, n, n))  # Gram matrix, products, squared distances
    out = {}
    for u in units:
        g = whole_gram(readers[u.layer], n, u.layer, u.cols, buffer, keep, work)
        if single[u.layer]:
            out[u.layer] = _finish(tile, g, u.layer, store, rbf, keep, work[-1])
        else:
            store.save(u.layer, f"part{u.cols[0]}", g)
        del g
    return out


def _join(tile: Tile, layer: int, starts: Sequence[int], store, rbf: bool, keep,
          *after: Any) -> dict[int, Any]:
    """A layer cut into units: its Gram matrix, the sum of the units' saved ones (run
    ``after`` the bins that form them), finished (:func:`_finish`)."""
    g = store.load(layer, f"part{starts[0]}")
    for start in starts[1:]:
        g += store.load(layer, f"part{start}")
    return {layer: _finish(tile, g, layer, store, rbf, keep)}


def _finish(tile: Tile, g: np.ndarray, layer: int, store, rbf: bool, keep=None, out=None):
    """A layer's whole Gram matrix: given to ``keep``, saved to ``store`` (for
    :func:`~dask_repsim.paths.gram.tiles.saved_sums`) and, for RBF CKA, its diagonal with
    it; returns the exact median of its squared distances, formed in ``out`` when given
    (:func:`~dask_repsim.paths.gram.scratch.whole_median`: all n^2 of them are at hand, so
    no pass reads them again), ``None`` without ``rbf`` or beyond :data:`MEDIAN_EXACT_MAX`
    samples."""
    if keep is not None:
        keep.whole(layer, g)
    store.save(layer, f"gram{tile.key}", g)
    if not rbf:
        return None
    norms = np.diagonal(g).copy()
    store.save(layer, f"norms{tile.key}", norms)  # the distances follow (GramDistances)
    if len(g) > MEDIAN_EXACT_MAX:  # the bandwidths come from a subsample (:func:`_medians`)
        return None
    if not np.isfinite(norms).all():  # non-finite input: the grid raises before any median
        return float("nan")
    return scratch.whole_median(distances(g, norms, norms, True, out))


def _whole(tile: Tile, plan: Sequence[Sequence[Unit]], readers, pairs, store, rbf: bool,
           keep, share: tuple[int, int]) -> list[TileSums]:
    """The sums of the single tile of all samples: a task per bin of units, one per layer cut
    into units; each layer's whole Gram matrix goes to ``store`` as it is formed, and a pass
    over the saved matrices, in slabs of rows, sums every pair with one product."""
    units = [(k, u) for k, b in enumerate(plan) for u in b]
    count = {layer: sum(u.layer == layer for _, u in units) for layer in range(len(readers))}
    single = {layer: c == 1 for layer, c in count.items()}
    bins = [dask.delayed(_unit_grams, pure=False)(b, readers, tile, store, single, rbf, keep)
            for b in plan]
    joins = [dask.delayed(_join, pure=False)(
                 tile, layer, [u.cols[0] for _, u in units if u.layer == layer], store, rbf,
                 keep, *{bins[k] for k, u in units if u.layer == layer})
             for layer in range(len(readers)) if not single[layer]]
    meds: dict[int, Any] = {}
    for done in compute(*bins, *joins):
        meds.update(done)
    parts = saved_sums([tile], store.part, "gram", len(readers), None, pairs, *share)
    if rbf:
        parts[0].medians = [meds[layer] for layer in range(len(readers))]
    return parts


def _share(budget: int, threads: int) -> tuple[int, int]:
    """The task slots and the bytes a task of the passes over saved matrices holds at once,
    taken once per grid: a worker lost on the way changes neither how the rows are shared
    out nor, so, a value."""
    return task_slots(), int(min(SLAB_BYTES, budget // max(1, threads)))


def grid_sums(layers: Sequence[Layer], pairs: Sequence[tuple[int, int]], *,
              sigmas: Sequence[float] = (), seed: int = 0, rows: int | None = None,
              keep: Any = None, extras: Sequence[Any] = ()) -> tuple[dict, dict]:
    """Every pair's Gram sums, linear and (with ``sigmas``) RBF, from each layer's tiles once.

    Returns ``(sums, attrs)``: ``sums[(kernel, a, b)]`` is the :class:`GramSums` of layers a and
    b for kernel 0 (linear) or 1 + s (RBF at ``sigmas[s]``); attrs describe the run. ``rows``:
    samples per row block (default: from the memory budget, one block when it holds every
    layer's whole Gram matrix).

    ``keep``: where each layer's Gram matrix goes as it is formed (a Gram store,
    :class:`dask_repsim.paths.gram.store.Keep`): in one row block its ``whole(layer, g)`` is
    given the whole matrix in the task that summed it; with several, ``block(layer, tile, g)``
    each tile's block (the scratch directory is ``keep.scratch`` by then), and
    ``finish(tiles, row_sums)`` assembles them once the sums are checked. Every row block read
    is shown to its ``rows(layer, start, x, cols)`` (rows ``start:start + len(x)``, columns
    ``cols``, ``None`` for all), from which it may keep what it needs (a fingerprint of the
    data) without reading again.

    ``extras``: what to compute beside the sums from the matrices saved to scratch, each filled
    in: a permutation null (:class:`~dask_repsim.paths.gram.permuted.Request`, whose row blocks
    are whole permutation blocks, :func:`~dask_repsim.paths.gram.permuted.aligned_rows`) and
    jackknife group sums (:class:`~dask_repsim.paths.gram.jackknife.Request`).
    """
    n = check_sample_counts([x.name for x in layers], [x.data.shape[0] for x in layers])
    widths = [int(x.data.shape[1]) for x in layers]
    itemsize = max(np.dtype(x.data.dtype).itemsize for x in layers)
    budget, threads = memory_budget(), threads_per_process()
    # the processes running tasks see this machine's disk (or a shared scratch directory):
    # else the cluster carries row blocks and Gram matrices (:mod:`.carried`)
    shared = bool(dask.config.get("repsim.scratch", None) or workers_share_this_machine())
    share = _share(budget, threads)
    plan = whole_plan(n, widths, itemsize, budget, threads, share[0], rbf=bool(sigmas)) \
        if rows is None else None
    align = next((r.block for r in extras if r.block is not None), None)
    rows = n if plan is not None else _block_rows(layers, n, rows, budget, threads, shared, align)
    if any(r.linear for r in extras) and plan is None:
        keep = _SaveTiles()  # the extras read the Gram tiles back
    _need_shared(shared, bool(sigmas), bool(extras), keep is not None and plan is None)
    # a single row block takes each unit's shift from the rows it reads
    shifts = first_chunk_means(layers) if plan is None else [None] * len(layers)
    bounds = [(s, min(n, s + rows)) for s in range(0, n, rows)]
    wanted = sorted({(a, a) for a in range(len(layers))} | {tuple(sorted(p)) for p in pairs})
    readers = [RowReader(x.data, m) for x, m in zip(layers, shifts, strict=True)]
    # With several row blocks each is read by T tiles: the diagonal tiles (one per block)
    # read the source and copy their rows to local scratch (raw, as stored), and the tiles
    # above the diagonal read the copies; without a shared disk the cluster carries them.
    copy = len(bounds) > 1 and shared
    # a null reads whole tiles of row blocks: tiles cut by rows would not hold P(rows)
    tiles = tiles_of(bounds, threads, split=copy and align is None)
    if plan is not None:
        logger.info("sample-space grid: %d layers, n=%d, whole Gram matrices in one row block: "
                    "%d column ranges in %d tasks", len(layers), n, sum(map(len, plan)),
                    len(plan))
    else:
        logger.info("sample-space grid: %d layers, n=%d, %d row blocks of %d rows, %d tiles%s",
                    len(layers), n, len(bounds), rows, len(tiles),
                    ", row blocks copied to scratch" if copy else
                    ", row blocks carried by the cluster" if len(bounds) > 1 else "")
    attrs = {"n_samples": n, "tile_rows": rows, "n_tiles": len(tiles)}
    with scratch.Store() as store:
        triangle = 8 * n * (n + rows) // 2 * len(layers)  # one layer's tiles on and above
        need = {"copies of the row blocks": sum(
                    x.data.shape[0] * w * np.dtype(x.data.dtype).itemsize
                    for x, w in zip(layers, widths, strict=True)) if copy else 0,
                "squared distances for RBF CKA": triangle if sigmas and plan is None else 0,
                "Gram tiles": triangle if keep is not None and plan is None else 0,
                "whole Gram matrices": 8 * n * n * saved_grams(plan) if plan and shared
                else 0}
        if sum(need.values()):
            store.require(sum(need.values()), " and ".join(k for k, v in need.items() if v))
        if keep is not None:
            keep.scratch = store
        parts = _linear_parts(plan, tiles, readers, wanted, store if sigmas else None,
                              store if copy else None, store if shared else None, keep, share)
        _check(parts, layers, wanted)
        sums = _assemble(parts, wanted, n, [0])
        if keep is not None and plan is None:
            keep.finish(tiles, [sums[0, a, a].k_rows for a in range(len(layers))])
        scales = None
        if sigmas:  # whole Gram matrices: their distances are formed from them when read
            source = store if plan is None else GramDistances(store)
            rbf, scales = _rbf_grid(parts, tiles, source, layers, shifts, sigmas, seed, wanted,
                                    attrs, share)
            sums.update(rbf)
        _run_extras(extras, tiles, store, plan is not None, scales, wanted, n, share, sums)
    return sums, attrs


def _run_extras(extras, tiles, store, whole: bool, scales: np.ndarray | None, wanted, n: int,
                share: tuple[int, int], sums: dict) -> None:
    """Each of ``extras`` (:func:`grid_sums`) run on the matrices saved to ``store``: whole
    Gram matrices serve the linear and the RBF kernels (``scales``) at once; row-block tiles
    are read as Gram tiles for the linear kernel and as squared distances for the RBF ones.
    Each is given the grid's ``sums`` (the Gamma approximation centres its kernels with their
    row sums)."""
    n_layers = max(max(p) for p in wanted) + 1
    for extra in extras:
        rbf = scales if extra.rbf else None
        if whole:
            sources = [permuted.Source(store, "gram", gram=True, linear=extra.linear,
                                       scales=rbf)]
        else:
            sources = [permuted.Source(store, prefix, gram=prefix == "gram", linear=linear,
                                       scales=kernel)
                       for prefix, linear, kernel, asked in (
                           ("gram", True, None, extra.linear), ("", False, rbf, rbf is not None))
                       if asked]
        for source in sources:
            extra.run(tiles, source, n_layers, wanted, n, share, sums)


def _block_rows(layers: Sequence[Layer], n: int, rows: int | None, budget: int, threads: int,
                shared: bool, align: int | None) -> int:
    """Samples per row block when the Gram matrices are not whole: ``rows`` if given, else
    from the memory budget (:func:`~dask_repsim.paths.gram.tiles.tile_rows`), made whole stored
    chunks, or whole blocks of ``align`` samples (a permutation null's)."""
    if rows is not None:
        return rows if align is None else permuted.aligned_rows(rows, n, align, False)
    widths = [int(x.data.shape[1]) for x in layers]
    itemsize = max(np.dtype(x.data.dtype).itemsize for x in layers)
    rows = tile_rows(n, widths, itemsize, budget, threads, carried=not shared)
    if align is not None:
        return permuted.aligned_rows(rows, n, align)
    stored = max(int(x.data.chunks[0][0]) for x in layers)
    if rows >= stored:  # whole stored chunks per row block: none is read by two blocks
        rows = rows // stored * stored
    return rows


class _SaveTiles:
    """``keep`` for :func:`grid_sums` when its extras need the linear Gram tiles of
    row blocks: each block saved to scratch as ``gram<tile key>``, as whole matrices are."""

    scratch: Any = None

    def rows(self, *args: Any) -> None:
        """The rows read: nothing to keep."""

    def block(self, layer: int, tile: Tile, g: np.ndarray) -> None:
        self.scratch.save(layer, f"gram{tile.key}", g)

    def finish(self, *args: Any) -> None:
        """Nothing to assemble: the extras read the tiles as saved."""


def _need_shared(shared: bool, rbf: bool, extras: bool, tiles_kept: bool) -> None:
    """Unless the workers share a scratch directory (``shared``), the error of what keeps
    files there: RBF CKA, extras (:func:`grid_sums`) or a Gram store's row-block tiles."""
    if not shared and (rbf or extras or tiles_kept):
        _unshared("RBF CKA" if rbf else "a permutation null or an interval on the "
                  "sample-space tiles" if extras else "a Gram store of row-block tiles")


def _unshared(what: str) -> None:
    """The error when files must go to a scratch directory that the workers may not see."""
    raise ValueError(
        f"{what} keeps files in a scratch directory that every worker must see, and the "
        "workers of this cluster may be on other machines: set dask config 'repsim.scratch' "
        "to a shared file system")


def _linear_parts(plan, tiles, readers, wanted, distances_to, copies_to, grams_to, keep,
                  share: tuple[int, int]) -> list[TileSums]:
    """Every tile's linear sums: the whole Gram matrices of ``plan`` (saved to ``grams_to``,
    a store, else carried by the cluster), or the tiles, the diagonal ones first and copying
    their rows when ``copies_to`` (a store) is given, else with the row blocks carried by the
    cluster; each Gram matrix or block given to ``keep`` when it is not ``None``; squared
    distances saved to ``distances_to`` when it is not ``None``; ``share``: the task slots
    and bytes of the passes over saved matrices (:func:`_share`)."""
    if plan is not None and grams_to is None:
        return carried.whole_parts(tiles[0], plan, readers, wanted, keep, *share)
    if plan is not None:
        return _whole(tiles[0], plan, readers, wanted, grams_to, distances_to is not None,
                      keep, share)
    if copies_to is None and len(tiles) > 1:
        return carried.tile_parts(tiles, readers, wanted)
    if copies_to is None:
        return run_tiles(gram_tile, tiles, readers, wanted, distances_to, None, keep)
    files = [copies_to.rows(layer, r.data.shape, r.data.dtype) for layer, r in enumerate(readers)]
    diagonal = [t for t in tiles if t.same]
    parts = run_tiles(gram_tile, diagonal, readers, wanted, distances_to, files, keep)
    readers = [RowReader(r.data, r.mean, f) for r, f in zip(readers, files, strict=True)]
    return parts + run_tiles(gram_tile, tiles[len(diagonal):], readers, wanted, distances_to,
                             None, keep)


def _rbf_grid(parts, tiles, source, layers, shifts, sigmas, seed, wanted, attrs,
              share: tuple[int, int]) -> tuple[dict, np.ndarray]:
    """RBF sums of every pair at every bandwidth, from the distances ``source`` gives (its
    ``part``; its ``load`` for the medians of row-block tiles, whole Gram matrices having
    found theirs), and the kernels' scales (layers x bandwidths: ``2 sigma^2 median``); the
    medians (and whether they are exact) go to ``attrs``."""
    n = tiles[-1].cols[1]
    meds, exact = _medians(parts, tiles, source, layers, shifts, n, seed)
    scales = np.array([[2.0 * s**2 * m for s in sigmas] for m in meds])
    parts = saved_sums(tiles, source.part, "", len(layers), scales, wanted, *share)
    attrs.update(median_sq_distance=[float(m) for m in meds], median_exact=exact)
    if not exact:
        attrs["approximate"] = (
            "cka_rbf: RBF bandwidths from each layer's median squared distance among a "
            f"seeded random subset of {min(MEDIAN_SAMPLE, n)} samples (n > {MEDIAN_EXACT_MAX})")
    return _assemble(parts, wanted, n, [1 + s for s in range(len(sigmas))]), scales


def first_chunk_means(layers: Sequence[Layer]) -> list[np.ndarray]:
    """Each layer's column means over its first stored chunk.

    The tiles subtract them before any product, so that large offsets (ReLU layers, values around
    1e9) cost no precision; exact centring is then algebraic (``tr(K H L H)`` from the row sums,
    :class:`~dask_repsim.measures.hsic.GramSums`; unbiased HSIC and distances do not depend on a
    shift). This reads one chunk per layer instead of a column pass over all the data.
    """
    return list(compute(*(x.data[: x.data.chunks[0][0]].astype(np.float64).mean(axis=0)
                          for x in layers)))


def _check(parts: Sequence[TileSums], layers: Sequence[Layer], wanted) -> None:
    """The errors of every path for NaN or Inf and for a layer without variance: when a sum
    is not finite or a layer's Gram matrix is zero, the column pass names the cause."""
    selves = [wanted.index((a, a)) for a in range(len(layers))]
    total = np.sum([p.pair[0] for p in parts], axis=0)
    if np.isfinite(total).all() and (total[selves] > 0).all():
        return
    checked_columns(layers)  # raises NonFiniteError or NoVarianceError, naming the layer
    raise ValueError("the Gram tiles are not finite although the inputs are")  # pragma: no cover


def _medians(parts, tiles, source, layers, shifts, n, seed) -> tuple[list[float], bool]:
    """Each layer's median squared distance: exact from the scratch tiles up to
    MEDIAN_EXACT_MAX samples, else over a seeded subsample (its rows shifted by ``shifts``,
    found here when not given)."""
    if n <= MEDIAN_EXACT_MAX and parts[0].medians is not None:  # whole Gram matrices
        meds = parts[0].medians
    elif n > MEDIAN_EXACT_MAX:
        if any(m is None for m in shifts):
            shifts = first_chunk_means(layers)
        meds = [sampled_median_sq_distance(x, size=MEDIAN_SAMPLE, seed=seed, mean=m)
                for x, m in zip(layers, shifts, strict=True)]
    else:
        ranges = [scratch.Range(n) for _ in layers]
        for layer, r in enumerate(ranges):
            r.narrow(np.sum([p.hist[layer] for p in parts if p.hist is not None], axis=0))
        meds = scratch.medians(ranges, [(t.key, t.weight) for t in tiles], source.load,
                               compute)
    for x, m in zip(layers, meds, strict=True):
        if not m > 0:
            raise ValueError(
                f"{x.name}: the median squared distance between samples is {m}; at least half "
                "of the pairs of samples coincide, so the RBF bandwidth is undefined"
            )
    return meds, n <= MEDIAN_EXACT_MAX


def _assemble(parts, wanted, n, kernels) -> dict:
    """:class:`GramSums` of every wanted pair for each kernel, from the tiles' sums."""
    n_layers = max(max(p) for p in wanted) + 1
    rows = np.zeros((len(kernels), n_layers, n))
    diag = np.zeros((len(kernels), n_layers, n))
    pair = np.zeros((len(kernels), len(wanted)))
    for part in parts:
        (i0, i1), (j0, j1) = part.at or part.tile.rows, part.tile.cols
        for group in (part.pair[None] if part.groups is None else part.groups):
            pair += group  # groups of rows in row order: the same sums for any tasks
        rows[:, :, i0:i1] += part.rows_i
        if part.rows_j is not None:
            rows[:, :, j0:j1] += part.rows_j
        if part.diag is not None:
            diag[:, :, i0:i1] = part.diag
    index = {p: c for c, p in enumerate(wanted)}
    out = {}
    for k_, k in enumerate(kernels):
        for (a, b), c in index.items():
            out[k, a, b] = GramSums(n, pair[k_, c], pair[k_, index[a, a]], pair[k_, index[b, b]],
                                    rows[k_, a], rows[k_, b], diag[k_, a], diag[k_, b])
    return out


def cka_from_sums(sums: GramSums, names: tuple[str, str], debiased: bool) -> float:
    """CKA from a pair's :class:`GramSums`, with the errors of every path."""
    if debiased:
        require_samples(sums.n, 4, "debiased CKA")
    return cka_ratio(sums.hsic(debiased), names, sums.n, debiased, scale=(sums.kk, sums.ll))


def _rbf_fields(attrs: dict[str, Any], sides: tuple[int, int], sigma: float) -> dict[str, Any]:
    """What an RBF cell carries besides its value: the medians of its two layers (``sides``:
    their positions among the grid's layers), whether they are exact, and the bandwidth."""
    meds, exact = attrs["median_sq_distance"], bool(attrs["median_exact"])
    approximate = None if exact else (
        "RBF bandwidths from the median squared distance among a seeded random subset of "
        f"{min(MEDIAN_SAMPLE, attrs['n_samples'])} samples (n > {MEDIAN_EXACT_MAX})")
    return {"approximate": approximate, "median": tuple(meds[k] for k in sides),
            "median_exact": exact, "sigma": sigma}


def _null_cells(cells: Cells, specs, sigmas, null: permuted.Request, sums, rows, cols,
                names) -> None:
    """Each cell's permutation null from the permuted sums of ``null``: the pair's
    :class:`GramSums` with the column layer's row sums and diagonal permuted as its samples
    were (:func:`~dask_repsim.paths.gram.permuted.null_sums`); ``rows``, ``cols``: the grid's
    layers as positions among those summed, ``names`` theirs."""
    index = {p: c for c, p in enumerate(null.directed)}
    kernels = [1 + sigmas.index(s["sigma"]) if s.get("kernel") == "rbf" else 0 for s in specs]
    values: dict[tuple[int, int, int], list[float]] = {key: [] for key in cells}
    n = sums[0, 0, 0].n
    for p, perm in enumerate(permutation_series(n, null.seed, null.count, null.block)):
        for m, i, j in cells:
            a, b = rows[i], cols[j]
            kernel, spec = kernels[m], specs[m]
            both = permuted.null_sums(sums, kernel, a, b, null.sums[kernel][index[a, b], p], perm)
            values[m, i, j].append(cka_from_sums(both, (names[a], names[b]),
                                                 bool(spec.get("debiased"))))
    for key, cell in cells.items():
        cells[key] = Cell(cell.value, cell.replicates, values[key], cell.fields)


def _replicate_cells(cells: Cells, specs, sigmas, jack: jackknife.Request, sums, rows, cols,
                     names) -> None:
    """Each cell's jackknife replicates, CKA with each group of samples left out
    (:func:`~dask_repsim.paths.gram.jackknife.replicate_sums`); ``rows``, ``cols``, ``names``
    as in :func:`_null_cells`."""
    kernels = [1 + sigmas.index(s["sigma"]) if s.get("kernel") == "rbf" else 0 for s in specs]
    bounds = group_bounds(sums[0, 0, 0].n, jack.groups)
    for (m, i, j), cell in cells.items():
        a, b = rows[i], cols[j]
        found = jackknife.replicate_sums(sums, jack.grouped[kernels[m]], kernels[m], jack.pairs,
                                         a, b, bounds)
        values = [cka_from_sums(one, (names[a], names[b]), bool(specs[m].get("debiased")))
                  for one in found]
        cells[m, i, j] = Cell(cell.value, values, cell.null, cell.fields)


def _gamma_cells(cells: Cells, specs, sigmas, approx: gamma.Request, sums, rows, cols,
                 names) -> None:
    """Each cell's p-value and null moments from the Gamma approximation
    (:func:`~dask_repsim.paths.gram.gamma.gamma_fields`), in its fields; ``rows``, ``cols``
    as in :func:`_null_cells`."""
    kernels = [1 + sigmas.index(s["sigma"]) if s.get("kernel") == "rbf" else 0 for s in specs]
    index = {p: c for c, p in enumerate(approx.pairs)}
    for (m, i, j), cell in cells.items():
        first, second = sorted((rows[i], cols[j]))
        square = approx.squares[kernels[m]][index[first, second]]
        fields = gamma.gamma_fields(sums[kernels[m], first, second], float(square))
        cells[m, i, j] = Cell(cell.value, cell.replicates, cell.null, {**cell.fields, **fields})


def gram_cells(
    specs: Sequence[dict[str, Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    *,
    seed: int,
    block_rows: int | None = None,
    todo: Positions | None = None,
    permutations: int = 0,
    groups: int | None = None,
    gamma_null: bool = False,
) -> tuple[Cells, dict[str, Any]]:
    """CKA cells of every pair from the shared sample-space tiles: each layer's Gram tile is
    formed once for the grid (a pairwise call is a grid of one cell).

    ``specs[m]``: ``{"debiased": bool}`` for linear CKA, ``{"kernel": "rbf", "sigma": s,
    "debiased": bool}`` for RBF CKA at bandwidth ``s`` times the median distance. Every cell's
    ``fields`` hold ``method`` ("gram") and ``approximate``; an RBF cell's also ``median`` (its
    row and column layers' median squared distances: the bandwidths are ``2 s^2 median``),
    ``median_exact`` and ``sigma``. ``seed``: of the subsample the medians are taken over beyond
    :data:`MEDIAN_EXACT_MAX` samples. ``block_rows``: samples per row block (default: from the
    memory budget, :func:`grid_sums`). ``todo``: the (row, column) cells to compute (default
    every one); the tiles sum each unordered pair of layers once however many cells ask for it.
    ``permutations``: the cells' permutation null, the column layer's samples permuted
    (:mod:`dask_repsim.paths.gram.permuted`; ``seed`` seeds it). ``groups``: the cells'
    jackknife replicates over that many groups of samples
    (:mod:`dask_repsim.paths.gram.jackknife`). ``gamma_null``: each cell's p-value from the
    Gamma approximation of the null (:mod:`dask_repsim.paths.gram.gamma`), in its fields.
    """
    wanted = grid_cells(rows, cols, todo)
    used = sorted({rows[i] for i, _ in wanted} | {cols[j] for _, j in wanted})
    pos = {u: k for k, u in enumerate(used)}
    sigmas = sorted({spec["sigma"] for spec in specs if spec.get("kernel") == "rbf"})
    for s in sigmas:
        if not s > 0:
            raise ValueError(f"sigma must be > 0, not {s}")
    pairs = sorted({tuple(sorted((pos[rows[i]], pos[cols[j]]))) for i, j in wanted})
    kinds = {"linear": any(spec.get("kernel") != "rbf" for spec in specs), "rbf": bool(sigmas)}
    null = permuted.Request(sorted({(pos[rows[i]], pos[cols[j]]) for i, j in wanted}),
                            permutations, seed, **kinds) if permutations else None
    jack = jackknife.Request(groups, **kinds) if groups else None
    approx = gamma.Request(**kinds) if gamma_null else None
    sums, attrs = grid_sums([layers[u] for u in used], pairs, sigmas=sigmas, seed=seed,
                            rows=block_rows,
                            extras=[r for r in (null, jack, approx) if r is not None])
    cells: Cells = {}
    for m, spec in enumerate(specs):
        rbf = spec.get("kernel") == "rbf"
        kernel = 1 + sigmas.index(spec["sigma"]) if rbf else 0
        for i, j in wanted:
            a, b = rows[i], cols[j]
            first, second = sorted((pos[a], pos[b]))
            names = (layers[used[first]].name, layers[used[second]].name)
            value = cka_from_sums(sums[kernel, first, second], names, bool(spec.get("debiased")))
            fields = _rbf_fields(attrs, (pos[a], pos[b]), spec["sigma"]) if rbf else \
                {"approximate": None}
            cells[m, i, j] = Cell(value, fields={"method": "gram", **fields})
    sides = ([pos[u] for u in rows], [pos[u] for u in cols], [layers[u].name for u in used])
    if null is not None:
        _null_cells(cells, specs, sigmas, null, sums, *sides)
    if jack is not None:
        _replicate_cells(cells, specs, sigmas, jack, sums, *sides)
    if approx is not None:
        _gamma_cells(cells, specs, sigmas, approx, sums, *sides)
    if "median_exact" in attrs:  # netCDF attributes take no booleans
        attrs["median_exact"] = int(attrs["median_exact"])
    if "median_sq_distance" in attrs:
        def side(u: int) -> str:
            return "" if u in rows and u in cols else " of a" if u in rows else " of b"

        attrs["median_sq_distance"] = "; ".join(  # each layer's, for its bandwidths
            f"{layers[u].name}{side(u)}: {m!r}"
            for u, m in zip(used, attrs["median_sq_distance"], strict=True))
    return cells, {"n_samples_omitted": 0, **attrs}
