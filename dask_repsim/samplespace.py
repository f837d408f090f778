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
blocks, a first pass copies each block, as stored (float32 stays float32), to the scratch
directory, and the tiles read the copies: each stored chunk is read once, the first chunk of
each layer once more (:func:`first_chunk_means`), and the tiles' reads are plain file reads
that run in parallel. When the workers may be on other machines (a ``distributed`` cluster
with workers on other hosts) and ``repsim.scratch`` is not set, the tiles read the source
instead, each stored chunk T times. There is no separate pass for the means: centring is exact
from the Gram sums.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dask
import dask.array as da
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

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``, read stored chunk by stored chunk into one array."""
        if self.copy is not None:
            return self.copy.rows(start, stop)
        out = np.empty((stop - start, self.data.shape[1]), dtype=self.data.dtype)
        cuts = [start, *(int(e) for e in self.edges if start < e < stop), stop]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            out[a - start:b - start] = self.data[a:b].compute(scheduler="sync")
        return out

    def gram(self, i: tuple[int, int], j: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """The centred Gram block of rows ``i`` and ``j`` (start, stop) and their squared norms."""
        same = i == j
        xi = self.rows(*i)
        xj = xi if same else self.rows(*j)
        g = np.zeros((len(xi), len(xj)))
        ni, nj = np.zeros(len(xi)), np.zeros(len(xj))
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

    i: int
    j: int
    pair: np.ndarray
    rows_i: np.ndarray  # (kernels, layers, len(I))
    rows_j: np.ndarray | None
    diag: np.ndarray | None
    hist: list[np.ndarray] | None = None


def _sums(i, j, kernels: list[list[np.ndarray]], pairs) -> TileSums:
    """The :class:`TileSums` of each kernel's blocks (``kernels[k][layer]``)."""
    same, w = i == j, 1.0 if i == j else 2.0
    pair = np.array([[w * float(np.vdot(blocks[a], blocks[b])) for a, b in pairs]
                     for blocks in kernels])
    rows_i = np.array([[k.sum(axis=1) for k in blocks] for blocks in kernels])
    rows_j = None if same else np.array([[k.sum(axis=0) for k in blocks] for blocks in kernels])
    diag = np.array([[np.diagonal(k).copy() for k in blocks] for blocks in kernels]) if same \
        else None
    return TileSums(i, j, pair, rows_i, rows_j, diag)


def _gram_tile(i, j, bounds, readers, pairs, store) -> TileSums:
    """Linear sums of tile (i, j); with a ``store``, its squared distances are saved there."""
    grams, hist = [], []
    for layer, reader in enumerate(readers):
        g, ni, nj = reader.gram(bounds[i], bounds[j])
        grams.append(g)
        if store is not None:
            d2 = distances(g, ni, nj, i == j)
            store.save(layer, i, j, d2)
            hist.append(scratch.top_counts(d2, 1 if i == j else 2))
            del d2
    out = _sums(i, j, [grams], pairs)
    out.hist = hist or None
    return out


def _rbf_tile(i, j, load, n_layers, scales, pairs) -> TileSums:
    """RBF sums of tile (i, j) at every bandwidth, from its squared distances (one bandwidth's
    kernel blocks held at a time)."""
    parts = []
    for s in range(scales.shape[1]):
        blocks = []
        for layer in range(n_layers):
            k = load(layer, i, j)
            np.exp(np.multiply(k, -1.0 / scales[layer, s], out=k), out=k)
            blocks.append(k)
        parts.append(_sums(i, j, [blocks], pairs))
        del blocks
    first = parts[0]
    stack = [np.concatenate([getattr(p, f) for p in parts]) if getattr(first, f) is not None
             else None for f in ("pair", "rows_i", "rows_j", "diag")]
    return TileSums(i, j, *stack)


def _run(function, tiles, *args) -> list:
    """``function(i, j, *args)`` of every tile, computed; a task per off-diagonal tile and per
    two diagonal tiles (half the work each), so that the tasks take about the same time and
    the threads finish together whatever order they take them in."""
    diagonal = [t for t in tiles if t[0] == t[1]]
    bundles = [[t] for t in tiles if t[0] != t[1]]
    bundles += [diagonal[k:k + 2] for k in range(0, len(diagonal), 2)]

    def task(bundle):
        return [function(i, j, *args) for i, j in bundle]

    done = compute(*(dask.delayed(task, pure=False)(b) for b in bundles))
    return [part for parts in done for part in parts]


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
    tiles = [(i, j) for i in range(len(bounds)) for j in range(i, len(bounds))]
    selves = [(a, a) for a in range(len(layers))]
    wanted = sorted(set(selves) | {tuple(sorted(p)) for p in pairs})
    readers = [_Reader(x.data, m) for x, m in zip(layers, shifts, strict=True)]
    # With several row blocks each is read by T tiles: copy the blocks to local scratch once
    # (raw, as stored) unless the processes running tasks may not share this machine's disk.
    copy = len(bounds) > 1 and bool(dask.config.get("repsim.scratch", None)
                                    or workers_share_this_machine())
    logger.info("sample-space grid: %d layers, n=%d, %d tiles of %d rows%s", len(layers), n,
                len(tiles), rows, ", row blocks copied to scratch" if copy else "")
    attrs = {"n_samples": n, "tile_rows": rows, "n_tiles": len(tiles)}
    with scratch.Store() as store:
        need = {"copies of the row blocks": sum(
                    x.data.shape[0] * w * np.dtype(x.data.dtype).itemsize
                    for x, w in zip(layers, widths, strict=True)) if copy else 0,
                "squared distances for RBF CKA": 8 * n * (n + rows) // 2 * len(layers)
                if sigmas else 0}
        if sum(need.values()):
            store.require(sum(need.values()), " and ".join(k for k, v in need.items() if v))
        if copy:  # one task per stored chunk writes its rows
            files = [store.rows(layer, x.data.shape, x.data.dtype)
                     for layer, x in enumerate(layers)]
            compute(da.store([x.data for x in layers], files, lock=False, compute=False))
            readers = [_Reader(r.data, r.mean, f) for r, f in zip(readers, files, strict=True)]
        use = store if sigmas else None
        parts = _run(_gram_tile, tiles, bounds, readers, wanted, use)
        _check(parts, layers, wanted)
        sums = _assemble(parts, bounds, wanted, n, [0])
        if sigmas:
            meds, exact = _medians(parts, tiles, store, layers, shifts, n, seed)
            scales = np.array([[2.0 * s**2 * m for s in sigmas] for m in meds])
            parts = _run(_rbf_tile, tiles, store.load, len(layers), scales, wanted)
            sums.update(_assemble(parts, bounds, wanted, n, [1 + s for s in range(len(sigmas))]))
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
        meds = scratch.medians(ranges, tiles, store.load, compute)
    for x, m in zip(layers, meds, strict=True):
        if not m > 0:
            raise ValueError(
                f"{x.name}: the median squared distance between samples is {m}; at least half "
                "of the pairs of samples coincide, so the RBF bandwidth is undefined"
            )
    return meds, n <= MEDIAN_EXACT_MAX


def _assemble(parts, bounds, wanted, n, kernels) -> dict:
    """:class:`GramSums` of every wanted pair for each kernel, from the tiles' sums."""
    n_layers = max(max(p) for p in wanted) + 1
    rows = np.zeros((len(kernels), n_layers, n))
    diag = np.zeros((len(kernels), n_layers, n))
    pair = np.zeros((len(kernels), len(wanted)))
    for part in parts:
        (i0, i1), (j0, j1) = bounds[part.i], bounds[part.j]
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
