"""Gram blocks on row blocks of samples: reading a layer's rows inside a task, forming its
centred Gram block once, and a tile's sums for every pair of layers.

A tile ``(I, J)`` is the sample pairs of row blocks I and J; :func:`gram_tile` reads both row
blocks of every layer, forms each layer's Gram block ``X_l[I] X_l[J]^T`` (float64, in feature
slices; a symmetric rank-k update on the diagonal), and returns ``sum K_a * K_b`` over the tile
for every requested pair with each layer's row sums and diagonal (:class:`TileSums`); with a
scratch store it also saves the block's squared distances for RBF CKA, whose kernels
:func:`rbf_sums` sums from them. :mod:`dask_repsim.paths.gram.samplespace` plans the tiles of a
grid and
assembles their sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask
import numpy as np

from ...engine.parallel import compute
from . import scratch

#: features per float64 slice of a row block while a Gram block is formed
FEATURE_SLICE = 2048


class RowReader:
    """A layer's rows, read inside a task: the dask array travels with the task instead of
    being computed as one of its dependencies. ``shift``: subtracted from every row.
    ``copy``: a :class:`~dask_repsim.paths.gram.scratch.RowFile` holding the layer's rows, read
    instead."""

    def __init__(self, data, shift: np.ndarray | None,
                 copy: scratch.RowFile | None = None) -> None:
        self.data, self.mean, self.copy = data, shift, copy
        self.edges = np.cumsum((0,) + tuple(data.chunks[0]))

    def nbytes(self, start: int, stop: int, cols: tuple[int, int] | None = None) -> int:
        width = self.data.shape[1] if cols is None else cols[1] - cols[0]
        return (stop - start) * width * np.dtype(self.data.dtype).itemsize

    def rows(self, start: int, stop: int, buffer: np.ndarray | None = None,
             cols: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``start:stop`` (columns ``cols``, else all), read stored chunk by stored chunk
        into one array (in ``buffer``, bytes, when given: a task reuses its memory from layer
        to layer)."""
        c0, c1 = (0, self.data.shape[1]) if cols is None else cols
        shape, dtype = (stop - start, c1 - c0), np.dtype(self.data.dtype)
        out = np.empty(shape, dtype) if buffer is None else \
            buffer[:self.nbytes(start, stop, cols)].view(dtype).reshape(shape)
        if self.copy is not None:
            return self.copy.rows(start, stop, out)
        cuts = [start, *(int(e) for e in self.edges if start < e < stop), stop]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            out[a - start:b - start] = self.data[a:b, c0:c1].compute(scheduler="sync")
        return out

    def gram(self, xi: np.ndarray, xj: np.ndarray | None,
             shift: np.ndarray) -> tuple[np.ndarray, ...]:
        """The Gram block of rows ``xi`` and ``xj`` (``None``: the same rows) less ``shift``
        (one value per column), and their squared norms. The float64 feature slices and the
        product of each go to buffers made once per block."""
        same = xj is None
        g = np.zeros((len(xi), len(xi) if same else len(xj)))
        product = np.empty_like(g)
        width = min(xi.shape[1], FEATURE_SLICE)
        slices = [np.empty((len(x), width)) for x in ((xi,) if same else (xi, xj))]
        ni, nj = np.zeros(len(xi)), np.zeros(len(g.T))
        # NaN or Inf in the rows: the sums are checked afterwards and raise NonFiniteError
        # naming the layer and sample; numpy's own warnings on the way would only add noise
        with np.errstate(invalid="ignore", over="ignore"):
            for f in range(0, xi.shape[1], FEATURE_SLICE):
                w = min(FEATURE_SLICE, xi.shape[1] - f)
                mean = shift[f:f + w]
                a = np.subtract(xi[:, f:f + w], mean, out=slices[0][:, :w])
                if same:
                    g += np.matmul(a, a.T, out=product)  # a symmetric rank-k update
                    continue
                b = np.subtract(xj[:, f:f + w], mean, out=slices[1][:, :w])
                ni += np.einsum("ij,ij->i", a, a)
                nj += np.einsum("ij,ij->i", b, b)
                g += np.matmul(a, b.T, out=product)
        if same:
            ni = np.diagonal(g).copy()
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
    :func:`~dask_repsim.engine.medians.sq_distances`)."""
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


def tile_sums(tile: Tile, kernels: list[list[np.ndarray]], pairs) -> TileSums:
    """The :class:`TileSums` of each kernel's blocks (``kernels[k][layer]``)."""
    pair = np.array([[tile.weight * float(np.vdot(blocks[a], blocks[b])) for a, b in pairs]
                     for blocks in kernels])
    rows_i = np.array([[k.sum(axis=1) for k in blocks] for blocks in kernels])
    rows_j = None if tile.same else np.array([[k.sum(axis=0) for k in blocks]
                                              for blocks in kernels])
    diag = np.array([[np.diagonal(k).copy() for k in blocks] for blocks in kernels]) \
        if tile.same else None
    return TileSums(tile, pair, rows_i, rows_j, diag)


def saved_distances(store, layer: int, tile: Tile, g, ni, nj) -> np.ndarray:
    """Save a layer's squared distances on a tile to ``store``; their first histogram."""
    d2 = distances(g, ni, nj, tile.same)
    store.save(layer, tile.key, d2)
    return scratch.top_counts(d2, tile.weight)


def gram_tile(tile: Tile, readers, pairs, store, copies=None, keep=None) -> TileSums:
    """Linear sums of a tile; with a ``store``, its squared distances are saved there; with
    ``copies`` (a diagonal tile), the rows read are written to them; with ``keep``, each
    layer's rows are shown to ``keep.rows(layer, start, x, None)`` and its Gram block given
    to ``keep.block(layer, tile, g)``."""
    grams, hist = [], []
    size = {b: max(r.nbytes(*b) for r in readers) for b in (tile.rows, tile.cols)}
    buffers = [np.empty(size[b], np.uint8) for b in dict.fromkeys((tile.rows, tile.cols))]
    for layer, reader in enumerate(readers):
        xi = reader.rows(*tile.rows, buffers[0])
        if copies is not None:
            copies[layer].write(tile.rows[0], xi)
        xj = None if tile.same else reader.rows(*tile.cols, buffers[1])
        if keep is not None:
            for start, x in ((tile.rows[0], xi), (tile.cols[0], xj)):
                if x is not None:
                    keep.rows(layer, start, x, None)
        g, ni, nj = reader.gram(xi, xj, reader.mean)
        grams.append(g)
        if keep is not None:
            keep.block(layer, tile, g)
        if store is not None:
            hist.append(saved_distances(store, layer, tile, g, ni, nj))
    out = tile_sums(tile, [grams], pairs)
    out.hist = hist or None
    return out


def rbf_tile(tile: Tile, load, n_layers, scales, pairs, which: Sequence[int]) -> TileSums:
    """RBF sums of a tile at the bandwidths ``which`` (columns of ``scales``), from its squared
    distances (one bandwidth's kernel blocks held at a time)."""
    parts = []
    for s in which:
        blocks = []
        for layer in range(n_layers):
            k = load(layer, tile.key)
            np.exp(np.multiply(k, -1.0 / scales[layer, s], out=k), out=k)
            blocks.append(k)
        parts.append(tile_sums(tile, [blocks], pairs))
        del blocks
    return stacked(parts)


def stacked(parts: Sequence[TileSums]) -> TileSums:
    """One tile's sums for the kernels of ``parts``, in their order."""
    first = parts[0]
    stack = [np.concatenate([getattr(p, f) for p in parts]) if getattr(first, f) is not None
             else None for f in ("pair", "rows_i", "rows_j", "diag")]
    return TileSums(first.tile, *stack)


def rbf_sums(tiles: Sequence[Tile], load, n_layers, scales, pairs, slots: int) -> list:
    """Every tile's RBF sums, a task per tile and group of bandwidths: with fewer tiles than
    ``slots``, the bandwidths are shared out among tasks."""
    count = scales.shape[1]
    groups = np.array_split(np.arange(count), min(count, max(1, -(-slots // len(tiles)))))
    done = compute(*(dask.delayed(rbf_tile, pure=False)(t, load, n_layers, scales, pairs,
                                                         g.tolist())
                     for t in tiles for g in groups))
    return [stacked(done[k:k + len(groups)]) for k in range(0, len(done), len(groups))]


def run_tiles(function, tiles: Sequence[Tile], *args) -> list:
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
