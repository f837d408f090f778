"""Gram blocks on row blocks of samples: reading a layer's rows inside a task, forming its
centred Gram block once, and a tile's sums for every pair of layers.

A tile ``(I, J)`` is the sample pairs of row blocks I and J; :func:`gram_tile` reads both row
blocks of every layer, forms each layer's Gram block ``X_l[I] X_l[J]^T`` (float64, in feature
slices; a symmetric rank-k update on the diagonal), and returns ``sum K_a * K_b`` over the tile
for every requested pair with each layer's row sums and diagonal (:class:`TileSums`); with a
scratch store it also saves the block's squared distances for RBF CKA, whose kernels
:func:`saved_sums` sums from them (and, for whole Gram matrices saved there, their linear
sums). :mod:`dask_repsim.paths.gram.samplespace` plans the tiles of a
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

    def gram(self, xi: np.ndarray, xj: np.ndarray | None, shift: np.ndarray,
             out: np.ndarray | None = None,
             product: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """The Gram block of rows ``xi`` and ``xj`` (``None``: the same rows) less ``shift``
        (one value per column), into ``out`` when given, and their squared norms. The float64
        feature slices and the product of each go to buffers made once per block (the
        products to ``product``, of the block's shape, when given)."""
        same = xj is None
        g = np.zeros((len(xi), len(xi) if same else len(xj))) if out is None else out
        g[...] = 0.0
        product = np.empty_like(g) if product is None else product
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


def whole_gram(reader: RowReader, n: int, layer: int, cols: tuple[int, int] | None,
               buffer: np.ndarray | None = None, keep=None,
               work: np.ndarray | None = None) -> np.ndarray:
    """The (partial) Gram matrix of columns ``cols`` of a layer over all n samples, the columns
    shifted by their means over the layer's first stored chunk (the rows are at hand, so no
    pass reads that chunk again); the rows read are shown to ``keep.rows`` when given. With
    ``work`` (2 x n x n), the matrix is formed in ``work[0]`` and the products in ``work[1]``:
    a task forming several reuses that memory rather than mapping fresh pages each time."""
    x = reader.rows(0, n, buffer, cols)
    if keep is not None:
        keep.rows(layer, 0, x, cols)
    out, product = (None, None) if work is None else work[:2]
    return reader.gram(x, None, x[:reader.edges[1]].mean(axis=0, dtype=np.float64),
                       out, product)[0]


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
        for a, b in row_cuts(r1 - r0, pieces):
            out.append(Tile(len(out), (r0 + a, r0 + b), cols))
    return out


def distances(g: np.ndarray, ni: np.ndarray, nj: np.ndarray, same: bool,
              out: np.ndarray | None = None) -> np.ndarray:
    """Squared distances from a Gram block and the rows' squared norms (as
    :func:`~dask_repsim.engine.medians.sq_distances`), into ``out`` when given; a few rows
    at a time (:data:`~dask_repsim.paths.gram.scratch.PIECE` values)."""
    d2 = np.empty(g.shape) if out is None else out
    step = max(1, scratch.PIECE // max(1, g.shape[1]))
    twice = np.empty((min(step, len(g)), g.shape[1]))
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite sums are checked later
        for a in range(0, len(g), step):  # ``out`` may be ``g``: its rows are read first
            twice_g = np.multiply(g[a:a + step], 2.0, out=twice[:len(g[a:a + step])])
            rows = np.add(ni[a:a + step, None], nj[None, :], out=d2[a:a + step])
            rows -= twice_g
            np.maximum(rows, 0.0, out=rows)
            rows += 0.0  # no negative zeros: the scratch histograms order values by their bits
    if same:
        np.fill_diagonal(d2, 0.0)
    return d2


class GramDistances:
    """The squared distances of the single tile of all samples, formed when asked from each
    layer's saved whole Gram matrix and its diagonal (``gram{key}`` and ``norms{key}`` in
    ``store``): the values :func:`distances` gave when the matrix was formed, without writing
    another 8 n^2 bytes per layer to disk. ``part`` as the store's."""

    def __init__(self, store) -> None:
        self.store = store

    def part(self, layer: int, key: int | str, start: int, stop: int,
             out: np.ndarray | None = None) -> np.ndarray:
        norms = self.store.load(layer, f"norms{key}")
        d2 = distances(self.store.part(layer, f"gram{key}", start, stop), norms[start:stop],
                       norms, False, out)
        d2[np.arange(stop - start), np.arange(start, stop)] = 0.0  # the diagonal
        return d2


@dataclass
class TileSums:
    """One tile's contribution: ``pair[k, c]`` = weight x sum K_a K_b for kernel k and pair c,
    each layer's row sums over the tile's columns (``rows_i``) and rows (``rows_j``), and its
    diagonal on a diagonal tile. ``at``: the samples ``rows_i`` and ``diag`` are of, when they
    are a share of the tile's rows (see :func:`saved_sums`); ``groups``: ``pair`` by groups of
    rows, to be added in row order (``pair`` is then their sum, for checks only);
    ``medians``: each layer's exact median squared distance, on the tile of all samples
    (whole Gram matrices, :func:`~dask_repsim.paths.gram.scratch.whole_median`)."""

    tile: Tile
    pair: np.ndarray
    rows_i: np.ndarray  # (kernels, layers, rows)
    rows_j: np.ndarray | None
    diag: np.ndarray | None
    hist: list[np.ndarray] | None = None
    at: tuple[int, int] | None = None
    groups: np.ndarray | None = None  # (groups, kernels, pairs): ``pair`` by row groups
    medians: list[float] | None = None  # each layer's, found where its whole matrix was


def products(flat: np.ndarray, pairs) -> np.ndarray:
    """``sum K_a * K_b`` of every pair (a, b) from the layers' blocks as the rows of ``flat``
    (layers x entries): one product of the matrix with its transpose, where a product per
    pair would read every block once per pair.

    Examples
    --------
    >>> products(np.array([[1.0, 2.0], [3.0, 4.0]]), [(0, 0), (0, 1), (1, 1)]).tolist()
    [5.0, 11.0, 25.0]
    """
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite sums are checked later
        full = flat @ flat.T
    return np.array([full[a, b] for a, b in pairs])


def tile_sums(tile: Tile, blocks: np.ndarray, pairs) -> TileSums:
    """The :class:`TileSums` of a tile's linear Gram blocks ``blocks`` (layers x rows x cols)."""
    pair = tile.weight * products(blocks.reshape(len(blocks), -1), pairs)[None]
    with np.errstate(invalid="ignore", over="ignore"):
        rows_i, rows_j = blocks.sum(axis=2)[None], \
            None if tile.same else blocks.sum(axis=1)[None]
    diag = np.diagonal(blocks, axis1=1, axis2=2).copy()[None] if tile.same else None
    return TileSums(tile, pair, rows_i, rows_j, diag)


def saved_distances(store, layer: int, tile: Tile, g, ni, nj, out=None) -> np.ndarray:
    """Save a layer's squared distances on a tile to ``store`` (formed in ``out`` when
    given); their first histogram."""
    d2 = distances(g, ni, nj, tile.same, out)
    store.save(layer, tile.key, d2)
    return scratch.top_counts(d2, tile.weight)


def gram_tile(tile: Tile, readers, pairs, store, copies=None, keep=None) -> TileSums:
    """Linear sums of a tile; with a ``store``, its squared distances are saved there; with
    ``copies`` (a diagonal tile), the rows read are written to them; with ``keep``, each
    layer's rows are shown to ``keep.rows(layer, start, x, None)`` and its Gram block given
    to ``keep.block(layer, tile, g)``."""
    hist = []
    size = {b: max(r.nbytes(*b) for r in readers) for b in (tile.rows, tile.cols)}
    buffers = [np.empty(size[b], np.uint8) for b in dict.fromkeys((tile.rows, tile.cols))]
    shape = (tile.rows[1] - tile.rows[0], tile.cols[1] - tile.cols[0])
    grams = np.empty((len(readers), *shape))
    work = np.empty((1 if store is None else 2, *shape))  # products; squared distances
    for layer, reader in enumerate(readers):
        xi = reader.rows(*tile.rows, buffers[0])
        if copies is not None:
            copies[layer].write(tile.rows[0], xi)
        xj = None if tile.same else reader.rows(*tile.cols, buffers[1])
        if keep is not None:
            for start, x in ((tile.rows[0], xi), (tile.cols[0], xj)):
                if x is not None:
                    keep.rows(layer, start, x, None)
        g, ni, nj = reader.gram(xi, xj, reader.mean, grams[layer], work[0])
        if keep is not None:
            keep.block(layer, tile, g)
        if store is not None:
            hist.append(saved_distances(store, layer, tile, g, ni, nj, work[-1]))
    out = tile_sums(tile, grams, pairs)
    out.hist = hist or None
    return out


#: bytes of the saved rows of every layer that a task of :func:`saved_sums` holds at once
SLAB_BYTES = 64 * 2**20


#: rows whose products a pass over saved matrices adds up before adding the group to the
#: total, in row order: tasks hold whole groups, so the sums do not depend on how many tasks
ROW_GROUP = 64


def slab_sums(tile: Tile, load, prefix: str, n_layers: int, scales: np.ndarray | None,
              pairs, span: tuple[int, int], limit: int) -> TileSums:
    """The sums of the matrices saved for ``tile`` (``load(layer, key, start, stop, out)``:
    rows start:stop of layer's matrix under ``key``, prefix + the tile's key, written into
    ``out``), over the tile's rows ``span`` (counted from the tile's first row, starting at a
    multiple of :data:`ROW_GROUP`): the linear Gram blocks when ``scales`` is ``None``, else
    the RBF kernels ``exp(-d2 / scales[layer, s])`` of the saved squared distances at every
    column s, each slab of distances read once for every bandwidth. The rows of every layer
    are read in slabs of at most ``limit`` bytes in all (a slab of distances and its kernel
    with several bandwidths); every pair's sum is one product per row (the layers' rows times
    their transpose), added row by row within each group of :data:`ROW_GROUP` rows, and the
    groups' sums are returned apart (``groups``) for the caller to add in row order: a pair's
    sum then depends neither on the slabs, nor on the tasks, nor on the number of layers (a
    zoo's cells equal the two-network grid's)."""
    r0, r1 = span
    width = tile.cols[1] - tile.cols[0]
    kernels = [None] if scales is None else list(range(scales.shape[1]))
    copies = 2 if len(kernels) > 1 else 1  # the distances kept apart from each kernel
    step = max(1, min(r1 - r0, int(limit // (8 * copies * n_layers * width))))
    buffer = np.empty((copies, n_layers, step * width))
    sums = _SlabSums(tile, span, len(kernels), n_layers, pairs)
    key = f"{prefix}{tile.key}"
    for a in range(r0, r1, step):
        b = min(r1, a + step)
        read, flat = buffer[0, :, :(b - a) * width], buffer[-1, :, :(b - a) * width]
        for layer in range(n_layers):
            load(layer, key, a, b, read[layer].reshape(b - a, width))
        for k, s in enumerate(kernels):
            if s is not None:
                for layer in range(n_layers):
                    np.exp(np.multiply(read[layer], -1.0 / scales[layer, s], out=flat[layer]),
                           out=flat[layer])
            sums.add(k, a, b, flat.reshape(n_layers, b - a, width))
    return sums.result()


class _SlabSums:
    """What :func:`slab_sums` adds up over the rows ``span`` of ``tile``, slab by slab."""

    def __init__(self, tile: Tile, span: tuple[int, int], kernels: int, n_layers: int,
                 pairs) -> None:
        r0, r1 = span
        width = tile.cols[1] - tile.cols[0]
        self.tile, self.span, self.index = tile, span, tuple(np.array(pairs).T)
        self.full = np.zeros((kernels, n_layers, n_layers))  # the current group's, per kernel
        self.groups = np.zeros((-(-(r1 - r0) // ROW_GROUP), kernels, len(pairs)))
        self.rows_i = np.empty((kernels, n_layers, r1 - r0))
        self.rows_j = None if tile.same else np.zeros((kernels, n_layers, width))
        self.diag = np.empty((kernels, n_layers, r1 - r0)) if tile.same else None

    def add(self, k: int, a: int, b: int, rows: np.ndarray) -> None:
        """Kernel k's rows a:b of every layer (layers x rows x columns)."""
        r0, r1 = self.span
        full = self.full[k]
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite sums are checked later
            for r in range(a, b):
                full += rows[:, r - a] @ rows[:, r - a].T
                if (r + 1) % ROW_GROUP == 0 or r + 1 == r1:  # a group's last row
                    self.groups[(r - r0) // ROW_GROUP, k] = full[self.index]
                    full[...] = 0.0
            self.rows_i[k, :, a - r0:b - r0] = rows.sum(axis=2)
            if self.diag is not None:
                self.diag[k, :, a - r0:b - r0] = rows[:, np.arange(b - a), np.arange(a, b)]
            else:
                self.rows_j[k] += [x.sum(axis=0) for x in rows]

    def result(self) -> TileSums:
        self.groups *= self.tile.weight
        start = self.tile.rows[0]
        return TileSums(self.tile, self.groups.sum(axis=0), self.rows_i, self.rows_j,
                        self.diag, at=(start + self.span[0], start + self.span[1]),
                        groups=self.groups)


def saved_sums(tiles: Sequence[Tile], load, prefix: str, n_layers: int,
               scales: np.ndarray | None, pairs, slots: int, limit: int) -> list[TileSums]:
    """Every tile's :func:`slab_sums`, a task per tile and slab of its rows (:func:`slabs`)."""
    spans = [(t, span) for t in tiles for span in slabs(t, len(tiles), n_layers, slots, limit)]
    return list(compute(*(dask.delayed(slab_sums, pure=False)(
        t, load, prefix, n_layers, scales, pairs, span, limit) for t, span in spans)))


def slabs(tile: Tile, count: int, n_layers: int, slots: int, limit: int) -> list[tuple[int, int]]:
    """The rows of ``tile`` (one of ``count``) in slabs of whole groups of :data:`ROW_GROUP`
    rows, as many as keep a slab within ``limit`` bytes for all ``n_layers`` layers' float64
    rows where a group does, and with fewer tiles than ``slots`` as many as give every slot a
    task: each slab is one task of the passes over saved matrices, whether they
    are on scratch or carried by the cluster (:mod:`~dask_repsim.paths.gram.carried`), so
    both add the same partial sums in the same order.

    Examples
    --------
    >>> cuts = slabs(Tile(0, (0, 2048), (0, 2048)), 1, 56, 2, 64 * 2**20)  # 73 rows fit
    >>> len(cuts), cuts[:3]  # whole groups of 64 rows, one or two a slab
    (29, [(0, 64), (64, 128), (128, 192)])
    """
    rows, width = tile.rows[1] - tile.rows[0], tile.cols[1] - tile.cols[0]
    per_slab = max(1, limit // (8 * n_layers * width))
    parts = max(-(-slots // count), -(-rows // per_slab))
    return [(a * ROW_GROUP, min(rows, b * ROW_GROUP))  # whole groups of rows
            for a, b in row_cuts(-(-rows // ROW_GROUP), parts)]


def row_cuts(n: int, parts: int) -> list[tuple[int, int]]:
    """``range(n)`` in at most ``parts`` consecutive pieces of about equal size.

    Examples
    --------
    >>> row_cuts(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    cuts = np.unique(np.linspace(0, n, min(parts, n) + 1).astype(int))
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def run_tiles(function, tiles: Sequence[Tile], *args) -> list:
    """``function(tile, *args)`` of every tile, a task each, computed."""
    return list(compute(*(dask.delayed(function, pure=False)(t, *args) for t in tiles)))


def tile_rows(n: int, widths: Sequence[int], itemsize: int, budget: int, threads: int,
              carried: bool = False) -> int:
    """Samples per row block so that a task's blocks fit ``budget / threads`` bytes.

    A task holds each layer's Gram block, two temporaries, the widest layer's two raw row
    blocks and two float64 feature slices; when the cluster carries the row blocks
    (``carried``, :mod:`~dask_repsim.paths.gram.carried`), a tile's task holds its layers'
    blocks as given and stacked, twice as many. At most ``n / T``
    rows, with T the fewest row blocks whose T^2 / 2 units of work (a diagonal tile is half a
    unit) are at least as many as the threads.

    Examples
    --------
    >>> tile_rows(2048, [65536, 100], 4, 2**31, 2)
    1024
    """
    a = 8.0 * (2 * len(widths) if carried else len(widths) + 3)
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
