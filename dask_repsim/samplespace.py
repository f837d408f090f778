"""Grids on the sample space: each layer's Gram tile formed once, every pair's sums from it.

For a grid of L layers on n samples, split the samples into T row blocks. A task per tile
(I, J), I <= J, reads row blocks I and J of every layer, forms each layer's centred Gram block
``K_l[I, J] = X_l[I] X_l[J]^T`` once (float64, in feature slices; ``a @ a.T`` on the diagonal),
and adds, for every requested pair (a, b) and each layer with itself, ``sum K_a * K_b`` over the
tile, plus each layer's row sums and diagonal. Those are all that biased and unbiased HSIC need
(:class:`~dask_repsim.gram.GramSums`), so linear CKA and debiased CKA of every pair follow.
Cost ``n^2 sum(p)`` for the Gram tiles plus ``n^2`` per pair, against ``n^2 (p + q)`` per pair
pair by pair; no n x n matrix is ever whole, and a task holds its tile's blocks only.

RBF CKA at several bandwidths: the first pass also writes each tile's squared distances to a
scratch directory (:mod:`dask_repsim.scratch`) with a histogram of them, from which each
layer's median squared distance is found exactly (a seeded subsample beyond
:data:`~dask_repsim.gram.MEDIAN_EXACT_MAX` samples, as :func:`~dask_repsim.gram.rbf_cka` does);
a second pass reads the distances back and sums the kernels of every bandwidth.

Row blocks are read inside the tasks (a slice of the layer's dask array, computed there, stored
chunk by stored chunk), so a task's memory is what :func:`tile_rows` counts. With T > 1 row
blocks, the diagonal tiles (I, I) run first, and each also writes its rows, as stored (float32
stays float32), to the scratch directory; the tiles above the diagonal then read the copies
(cut by rows into pieces when there are fewer of them than threads): each stored chunk is read
once, the first chunk of each layer once more (:func:`first_chunk_means`), and the other reads
are plain file reads that run in parallel. When the workers may be on other machines (a
``distributed`` cluster with workers on other hosts) and ``repsim.scratch`` is not set, the
tiles read the source instead, each stored chunk T times. There is no separate pass for the
means: centring is exact from the Gram sums.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dask
import numpy as np

from . import scratch
from .columns import centred, checked_columns
from .gram import MEDIAN_EXACT_MAX, GramSums
from .hsic import cka_ratio
from .inputs import Layer
from .medians import MEDIAN_SAMPLE, sampled_median_sq_distance
from .parallel import compute, memory_budget, threads_per_process, workers_share_this_machine
from .validation import check_sample_counts, require_samples

logger = logging.getLogger("dask_repsim")

#: features per float64 slice of a row block while a Gram block is formed
FEATURE_SLICE = 2048


class _Reader:
    """A layer's rows, read inside a task: the dask array travels with the task instead of
    being computed as one of its dependencies. ``shift``: subtracted from every row.
    ``copy``: a :class:`~dask_repsim.scratch.RowFile` holding the layer's rows, read instead."""

    def __init__(self, data, shift: np.ndarray, copy: scratch.RowFile | None = None) -> None:
        self.data, self.mean, self.copy = data, shift, copy
        self.edges = np.cumsum((0,) + tuple(data.chunks[0]))

    def nbytes(self, start: int, stop: int) -> int:
        return (stop - start) * self.data.shape[1] * np.dtype(self.data.dtype).itemsize

    def rows(self, start: int, stop: int, buffer: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop``, read stored chunk by stored chunk into one array (in
        ``buffer``, bytes, when given: a task reuses its memory from layer to layer)."""
        shape, dtype = (stop - start, self.data.shape[1]), np.dtype(self.data.dtype)
        out = np.empty(shape, dtype) if buffer is None else \
            buffer[:self.nbytes(start, stop)].view(dtype).reshape(shape)
        if self.copy is not None:
            return self.copy.rows(start, stop, out)
        cuts = [start, *(int(e) for e in self.edges if start < e < stop), stop]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            out[a - start:b - start] = self.data[a:b].compute(scheduler="sync")
        return out

    def gram(self, xi: np.ndarray, xj: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """The centred Gram block of rows ``xi`` and ``xj`` (``None``: the same rows) and their
        squared norms."""
        same = xj is None
        g = np.zeros((len(xi), len(xi) if same else len(xj)))
        ni, nj = np.zeros(len(xi)), np.zeros(len(g.T))
        for f in range(0, xi.shape[1], FEATURE_SLICE):
            cut = slice(f, f + FEATURE_SLICE)
            a = centred(xi[:, cut], self.mean[cut])
            ni += np.einsum("ij,ij->i", a, a)
            if same:
                g += a @ a.T  # a symmetric rank-k update
                continue
            b = centred(xj[:, cut], self.mean[cut])
            nj += np.einsum("ij,ij->i", b, b)
            g += a @ b.T
        return g, ni, ni if same else nj


@dataclass(frozen=True)
class Tile:
    """The sample pairs ``rows x cols`` (start, stop); ``key`` names its files on scratch. A
    tile off the diagonal stands for its mirror image too (``weight`` 2)."""

    key: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def same(self) -> bool:
        return self.rows == self.cols

    @property
    def weight(self) -> int:
        return 1 if self.same else 2


def tiles_of(bounds: Sequence[tuple[int, int]], threads: int, split: bool) -> list[Tile]:
    """The diagonal tiles of the row blocks ``bounds``, then those above it; with ``split``,
    each of the latter cut by rows into enough pieces that there are tasks for every thread
    (two row blocks on two threads: the one tile above the diagonal in two halves).

    Examples
    --------
    >>> for t in tiles_of([(0, 10), (10, 20)], 2, split=True):
    ...     print(t.key, t.rows, t.cols, t.weight)
    0 (0, 10) (0, 10) 1
    1 (10, 20) (10, 20) 1
    2 (0, 5) (10, 20) 2
    3 (5, 10) (10, 20) 2
    """
    above = [(bounds[i], bounds[j]) for i in range(len(bounds))
             for j in range(i + 1, len(bounds))]
    pieces = max(1, -(-threads // len(above))) if split and above else 1
    out = [Tile(k, b, b) for k, b in enumerate(bounds)]
    for (r0, r1), cols in above:
        cuts = np.unique(np.linspace(r0, r1, min(pieces, r1 - r0) + 1).astype(int))
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            out.append(Tile(len(out), (int(a), int(b)), cols))
    return out


def distances(g: np.ndarray, ni: np.ndarray, nj: np.ndarray, same: bool) -> np.ndarray:
    """Squared distances from a Gram block and the rows' squared norms (as
    :func:`~dask_repsim.medians.sq_distances`)."""
    d2 = ni[:, None] + nj[None, :]
    d2 -= 2.0 * g
    np.maximum(d2, 0.0, out=d2)
    d2 += 0.0  # no negative zeros: the scratch histograms order values by their bits
    if same:
        np.fill_diagonal(d2, 0.0)
    return d2


@dataclass
class TileSums:
    """One tile's contribution: ``pair[k, c]`` = weight x sum K_a K_b for kernel k and pair c,
    each layer's row sums over the tile's columns (``rows_i``) and rows (``rows_j``), and its
    diagonal on a diagonal tile."""

    tile: Tile
    pair: np.ndarray
    rows_i: np.ndarray  # (kernels, layers, rows)
    rows_j: np.ndarray | None
    diag: np.ndarray | None
    hist: list[np.ndarray] | None = None


def _sums(tile: Tile, kernels: list[list[np.ndarray]], pairs) -> TileSums:
    """The :class:`TileSums` of each kernel's blocks (``kernels[k][layer]``)."""
    pair = np.array([[tile.weight * float(np.vdot(blocks[a], blocks[b])) for a, b in pairs]
                     for blocks in kernels])
    rows_i = np.array([[k.sum(axis=1) for k in blocks] for blocks in kernels])
    rows_j = None if tile.same else np.array([[k.sum(axis=0) for k in blocks]
                                              for blocks in kernels])
    diag = np.array([[np.diagonal(k).copy() for k in blocks] for blocks in kernels]) \
        if tile.same else None
    return TileSums(tile, pair, rows_i, rows_j, diag)


def _gram_tile(tile: Tile, readers, pairs, store, copies=None) -> TileSums:
    """Linear sums of a tile; with a ``store``, its squared distances are saved there; with
    ``copies`` (a diagonal tile), the rows read are written to them."""
    grams, hist = [], []
    size = {b: max(r.nbytes(*b) for r in readers) for b in (tile.rows, tile.cols)}
    buffers = [np.empty(size[b], np.uint8) for b in dict.fromkeys((tile.rows, tile.cols))]
    for layer, reader in enumerate(readers):
        xi = reader.rows(*tile.rows, buffers[0])
        if copies is not None:
            copies[layer].write(tile.rows[0], xi)
        g, ni, nj = reader.gram(xi, None if tile.same else reader.rows(*tile.cols, buffers[1]))
        grams.append(g)
        if store is not None:
            d2 = distances(g, ni, nj, tile.same)
            store.save(layer, tile.key, d2)
            hist.append(scratch.top_counts(d2, tile.weight))
            del d2
    out = _sums(tile, [grams], pairs)
    out.hist = hist or None
    return out


def _rbf_tile(tile: Tile, load, n_layers, scales, pairs) -> TileSums:
    """RBF sums of a tile at every bandwidth, from its squared distances (one bandwidth's
    kernel blocks held at a time)."""
    parts = []
    for s in range(scales.shape[1]):
        blocks = []
        for layer in range(n_layers):
            k = load(layer, tile.key)
            np.exp(np.multiply(k, -1.0 / scales[layer, s], out=k), out=k)
            blocks.append(k)
        parts.append(_sums(tile, [blocks], pairs))
        del blocks
    first = parts[0]
    stack = [np.concatenate([getattr(p, f) for p in parts]) if getattr(first, f) is not None
             else None for f in ("pair", "rows_i", "rows_j", "diag")]
    return TileSums(tile, *stack)


def _run(function, tiles: Sequence[Tile], *args) -> list:
    """``function(tile, *args)`` of every tile, a task each, computed."""
    return list(compute(*(dask.delayed(function, pure=False)(t, *args) for t in tiles)))


def tile_rows(n: int, widths: Sequence[int], itemsize: int, budget: int, threads: int) -> int:
    """Samples per row block so that a task's blocks fit ``budget / threads`` bytes.

    A task holds each layer's Gram block (or one bandwidth's kernel blocks), two temporaries,
    the widest layer's two raw row blocks and two float64 feature slices. At most ``n / T``
    rows, with T the fewest row blocks whose T^2 / 2 units of work (a diagonal tile is half a
    unit) are at least as many as the threads.

    Examples
    --------
    >>> tile_rows(2048, [65536, 100], 4, 2**31, 2)
    1024
    """
    a = 8.0 * (len(widths) + 3)
    b = 2.0 * max(widths) * itemsize + 16.0 * min(max(widths), FEATURE_SLICE)
    per_task = budget / max(1, threads)
    rows = int((-b + np.sqrt(b * b + 4 * a * per_task)) / (2 * a))
    blocks = min(n, int(np.ceil(np.sqrt(2 * threads))))
    rows = min(rows, -(-n // blocks))
    if rows < 16:
        raise ValueError(
            f"the memory budget ({budget / 2**20:.0f} MiB for {threads} thread(s)) leaves "
            f"under 16 samples per tile for layers {max(widths)} features wide; raise dask "
            "config 'repsim.memory-budget'"
        )
    return rows


def grid_sums(layers: Sequence[Layer], pairs: Sequence[tuple[int, int]], *,
              sigmas: Sequence[float] = (), seed: int = 0, rows: int | None = None,
              ) -> tuple[dict, dict]:
    """Every pair's Gram sums, linear and (with ``sigmas``) RBF, from each layer's tiles once.

    Returns ``(sums, attrs)``: ``sums[(kernel, a, b)]`` is the :class:`GramSums` of layers a and
    b for kernel 0 (linear) or 1 + s (RBF at ``sigmas[s]``); attrs describe the run.
    """
    n = check_sample_counts([x.name for x in layers], [x.data.shape[0] for x in layers])
    shifts = first_chunk_means(layers)
    widths = [int(x.data.shape[1]) for x in layers]
    itemsize = max(np.dtype(x.data.dtype).itemsize for x in layers)
    budget, threads = memory_budget(), threads_per_process()
    if rows is None:
        rows = tile_rows(n, widths, itemsize, budget, threads)
        stored = max(int(x.data.chunks[0][0]) for x in layers)
        if rows >= stored:  # whole stored chunks per row block: none is read by two blocks
            rows = rows // stored * stored
    bounds = [(s, min(n, s + rows)) for s in range(0, n, rows)]
    selves = [(a, a) for a in range(len(layers))]
    wanted = sorted(set(selves) | {tuple(sorted(p)) for p in pairs})
    readers = [_Reader(x.data, m) for x, m in zip(layers, shifts, strict=True)]
    # With several row blocks each is read by T tiles: the diagonal tiles (one per block)
    # read the source and copy their rows to local scratch (raw, as stored), and the tiles
    # above the diagonal read the copies, unless the processes running tasks may not share
    # this machine's disk.
    copy = len(bounds) > 1 and bool(dask.config.get("repsim.scratch", None)
                                    or workers_share_this_machine())
    tiles = tiles_of(bounds, threads, split=copy)
    logger.info("sample-space grid: %d layers, n=%d, %d row blocks of %d rows, %d tiles%s",
                len(layers), n, len(bounds), rows, len(tiles),
                ", row blocks copied to scratch" if copy else "")
    attrs = {"n_samples": n, "tile_rows": rows, "n_tiles": len(tiles)}
    with scratch.Store() as store:
        need = {"copies of the row blocks": sum(
                    x.data.shape[0] * w * np.dtype(x.data.dtype).itemsize
                    for x, w in zip(layers, widths, strict=True)) if copy else 0,
                "squared distances for RBF CKA": 8 * n * (n + rows) // 2 * len(layers)
                if sigmas else 0}
        if sum(need.values()):
            store.require(sum(need.values()), " and ".join(k for k, v in need.items() if v))
        use = store if sigmas else None
        if copy:
            files = [store.rows(layer, x.data.shape, x.data.dtype)
                     for layer, x in enumerate(layers)]
            diagonal = [t for t in tiles if t.same]
            parts = _run(_gram_tile, diagonal, readers, wanted, use, files)
            readers = [_Reader(r.data, r.mean, f) for r, f in zip(readers, files, strict=True)]
            parts += _run(_gram_tile, tiles[len(diagonal):], readers, wanted, use)
        else:
            parts = _run(_gram_tile, tiles, readers, wanted, use)
        _check(parts, layers, wanted)
        sums = _assemble(parts, wanted, n, [0])
        if sigmas:
            meds, exact = _medians(parts, tiles, store, layers, shifts, n, seed)
            scales = np.array([[2.0 * s**2 * m for s in sigmas] for m in meds])
            parts = _run(_rbf_tile, tiles, store.load, len(layers), scales, wanted)
            sums.update(_assemble(parts, wanted, n, [1 + s for s in range(len(sigmas))]))
            attrs.update(median_sq_distance=[float(m) for m in meds], median_exact=exact)
            if not exact:  # as the pairwise rbf_cka says it
                attrs["approximate"] = (
                    "cka_rbf: RBF bandwidths from each layer's median squared distance among a "
                    f"seeded random subset of {min(MEDIAN_SAMPLE, n)} samples "
                    f"(n > {MEDIAN_EXACT_MAX})")
    return sums, attrs


def first_chunk_means(layers: Sequence[Layer]) -> list[np.ndarray]:
    """Each layer's column means over its first stored chunk.

    The tiles subtract them before any product, so that large offsets (ReLU layers, values
    around 1e9) cost no precision; exact centring is then algebraic (``tr(K H L H)`` from the
    row sums, :class:`~dask_repsim.gram.GramSums`; unbiased HSIC and distances do not depend on
    a shift). This reads one chunk per layer instead of a column pass over all the data.
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


def _medians(parts, tiles, store, layers, shifts, n, seed) -> tuple[list[float], bool]:
    """Each layer's median squared distance: exact from the scratch tiles up to
    MEDIAN_EXACT_MAX samples, else over a seeded subsample (as ``rbf_cka``)."""
    if n > MEDIAN_EXACT_MAX:
        meds = [sampled_median_sq_distance(x, size=MEDIAN_SAMPLE, seed=seed, mean=m)
                for x, m in zip(layers, shifts, strict=True)]
    else:
        ranges = [scratch.Range(n) for _ in layers]
        for layer, r in enumerate(ranges):
            r.narrow(np.sum([p.hist[layer] for p in parts], axis=0))
        meds = scratch.medians(ranges, [(t.key, t.weight) for t in tiles], store.load,
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
        (i0, i1), (j0, j1) = part.tile.rows, part.tile.cols
        pair += part.pair
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
