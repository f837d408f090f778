"""Permutation nulls on the sample-space tiles: ``sum K_a * P L_b P^T`` from the saved matrices.

Under "layers a and b are unrelated", pairing sample i of a with any sample of b is as likely as
with sample i. Permuting b's samples by P turns its Gram (or kernel) matrix L into ``P L P^T``;
each layer's own sums do not change, its row sums and diagonal are permuted, so the only new
number per pair and permutation is ``sum_ij K_a[i, j] L_b[P(i), P(j)]``. This module sums it
from the matrices the grid has already saved to scratch (whole Gram matrices, the Gram tiles of
row blocks, or the squared distances of RBF CKA), without reading the activations again: per
permutation, each permuted layer's matrix is gathered once and each pair's sum is one product
of the slabs of every row layer with every permuted column layer
(:func:`permuted_slab`).

The permutations are those of the co-moment path (:mod:`dask_repsim.engine.permuted`): within
blocks of :data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` consecutive samples, seeded by
``seed`` and each block's first sample, so the same seed gives the same null on either path
(linear CKA's nulls agree to rounding) and for any plan. Row blocks of the tiles are then whole
permutation blocks (:func:`aligned_rows`): a permuted tile ``(P L P^T)[I, J]`` is tile
``L[I, J]`` with its rows and columns permuted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dask
import numpy as np

from ...engine import permuted as _permuted
from ...engine.parallel import compute
from ...measures.hsic import GramSums
from .tiles import Tile, distances, slabs


@dataclass
class Request:
    """A permutation null asked of :func:`~dask_repsim.paths.gram.samplespace.grid_sums`: the
    ``(a, b)`` pairs of layers (b's samples permuted), ``count`` permutations, ``seed``, for
    the linear kernel (``linear``) and the RBF kernels (``rbf``); the grid fills in
    ``sums[kernel]`` ((pairs, count) permuted ``sum K_a * P L_b P^T``)."""

    directed: list[tuple[int, int]]
    count: int
    seed: int
    linear: bool = True
    rbf: bool = False
    #: samples per permutation block, read once on the client (tasks may run elsewhere): row
    #: blocks of the tiles must be whole blocks (:func:`aligned_rows`)
    block: int = field(default_factory=lambda: int(_permuted.PERMUTATION_BLOCK))
    sums: dict[int, np.ndarray] = field(default_factory=dict)

    def run(self, tiles: Sequence[Tile], source: Source, n_layers: int, pairs, n: int,
            share: tuple[int, int], sums: dict) -> None:
        """The permuted sums of ``source``'s kernels."""
        found = permuted_sums(tiles, source, self, *share)
        self.sums.update({number: found[k] for k, number in enumerate(source.numbers)})


def aligned_rows(rows: int, n: int, block: int, budget_rows: bool = True) -> int:
    """Samples per row block of a grid with a permutation null: ``n`` (one block) or a multiple
    of the permutation ``block``, at most ``rows``. ``budget_rows``: whether ``rows`` came from
    the memory budget (else it was asked for, and must be aligned as given).

    Examples
    --------
    >>> aligned_rows(10_000, 50_000, 4096), aligned_rows(10_000, 9_000, 4096)
    (8192, 9000)
    """
    if rows >= n:
        return n
    if rows % block == 0:
        return rows
    if not budget_rows:
        raise ValueError(f"row blocks of {rows} samples split the permutation blocks of "
                         f"{block} samples; give a multiple of {block}")
    if rows < block:
        raise ValueError(
            f"a permutation test on the sample-space tiles needs row blocks of at least "
            f"{block} samples (the permutation blocks), and the memory budget allows {rows}; "
            "raise dask config 'repsim.memory-budget', or compute the measure with "
            "method='covariance'")
    return rows // block * block


class Source:
    """The matrices the grid saved to scratch and the kernels made of them, for the extras.

    ``store``: a :class:`~dask_repsim.paths.gram.scratch.Store`, its ``part`` (rows by
    range), ``mapped`` and ``load`` of a layer's matrix under ``prefix`` + the tile's key.
    ``gram``: the matrices are Gram matrices (else squared distances); ``linear``: make the
    linear kernel (the Gram matrix itself); ``scales`` (layers x bandwidths): make the RBF
    kernels ``exp(-d2 / scale)``, the squared distances formed from a Gram matrix with the
    layer's saved diagonal (``norms<key>``). ``numbers``: the kernels' numbers in the grid's
    sums (0 linear, 1 + s RBF at bandwidth s). A Gram matrix then serves every kernel,
    gathered once per permutation.
    """

    def __init__(self, store, prefix: str, *, gram: bool, linear: bool,
                 scales: np.ndarray | None) -> None:
        self.store, self.prefix, self.gram = store, prefix, gram
        self.linear, self.scales = linear, scales
        rbf = [] if scales is None else [1 + s for s in range(scales.shape[1])]
        self.numbers = ([0] if linear else []) + rbf

    @property
    def kernels(self) -> int:
        return len(self.numbers)

    def norms(self, layer: int, key: int) -> np.ndarray | None:
        """A layer's saved Gram diagonal, when its distances are formed here."""
        if self.gram and self.scales is not None:
            return self.store.load(layer, f"norms{key}")
        return None

    def slab(self, tile: Tile, n_layers: int, span: tuple[int, int]) -> np.ndarray:
        """Every kernel of every layer on the rows ``span`` (from the tile's first row) of
        ``tile``: (kernels, layers, rows, the tile's columns), each layer's saved values read
        once."""
        r0, r1 = span
        m, width = r1 - r0, tile.cols[1] - tile.cols[0]
        raw, work = np.empty((m, width)), np.empty((m, width))
        kernels = np.empty((self.kernels, n_layers, m, width))
        own_rows, own_cols = np.arange(*tile.rows)[r0:r1], np.arange(*tile.cols)
        for layer in range(n_layers):
            self.store.part(layer, f"{self.prefix}{tile.key}", r0, r1, raw)
            self.fill(raw, layer, self.norms(layer, tile.key), own_rows, own_cols,
                      kernels[:, layer], work)
        return kernels

    def fill(self, raw: np.ndarray, layer: int, norms: np.ndarray | None, rows: np.ndarray,
             cols: np.ndarray, out: np.ndarray, work: np.ndarray) -> None:
        """Every kernel of a layer's saved values ``raw`` (samples ``rows`` x ``cols`` of its
        matrix) into ``out`` (kernels x raw's shape; ``raw`` may be ``out[0]``, the linear
        kernel), with ``work`` (raw's shape) for the squared distances."""
        if self.linear and raw is not out[0]:
            np.copyto(out[0], raw)
        if self.scales is None:
            return
        d2 = distances(raw, norms[rows], norms[cols], False, work) if self.gram else raw
        for s in range(self.scales.shape[1]):
            k = out[int(self.linear) + s]
            np.multiply(d2, -1.0 / self.scales[layer, s], out=k)
            np.exp(k, out=k)


def _stream(seed: int, span: tuple[int, int], start: int, block: int):
    """Each permutation of the samples ``span`` (whole permutation blocks), as indices from
    ``start``, one after another."""
    streams = [(a, _permuted.permutation_stream(seed, a, b - a))
               for a, b in _permuted.permutation_blocks(span[0], span[1], block)]
    while True:
        yield np.concatenate([a - start + next(s) for a, s in streams])


#: permutations whose products are formed together (one product with the row layers for all):
#: on the ResNet-18 grid at 2,048 images, 4 took 0.20 s a permutation, 8 0.23 s, 2 0.22 s,
#: one at a time 0.30 s
PERMUTATION_BATCH = 4


def permuted_slab(tile: Tile, source: Source, directed, span: tuple[int, int],
                  request: Request, limit: int) -> np.ndarray:
    """``weight x sum K_a * (P L_b P^T)`` over the rows ``span`` of ``tile`` for every pair
    ``(a, b)`` of ``directed``, kernel and permutation: (kernels, pairs, count). The row
    layers' rows are read once (``store.part``). The permutations go in batches of
    :data:`PERMUTATION_BATCH`, the rows in pieces that keep a batch's permuted rows within
    ``limit`` bytes: for each piece and permutation of a batch, each column layer's rows
    ``P(piece)`` are gathered (from ``store.mapped``) and their columns permuted, once for every
    kernel, and one product of the row layers' piece with the batch's permuted rows gives
    every pair's sum for every permutation of the batch."""
    r0, r1 = span
    width, m = tile.cols[1] - tile.cols[0], r1 - r0
    key = f"{source.prefix}{tile.key}"
    left = sorted({a for a, _ in directed})
    right = sorted({b for _, b in directed})
    at = [(left.index(a), right.index(b)) for a, b in directed]
    norms = {layer: source.norms(layer, tile.key) for layer in set(left) | set(right)}
    saved = {layer: source.store.mapped(layer, key) for layer in right}
    batch = min(PERMUTATION_BATCH, request.count)
    step = max(1, min(m, limit // (8 * width * source.kernels * batch * len(right))))
    pieces = [(a, min(r1, a + step)) for a in range(r0, r1, step)]
    rows_k = _row_pieces(tile, source, key, left, norms, pieces)
    raw, work, gathered = (np.empty((step, width)) for _ in range(3))
    flat = np.empty((source.kernels, batch, len(right), step, width))
    out = np.empty((source.kernels, len(directed), request.count))
    i_perm = _stream(request.seed, tile.rows, tile.rows[0], request.block)
    j_perm = i_perm if tile.same else _stream(request.seed, tile.cols, tile.cols[0],
                                              request.block)
    for first in range(0, request.count, batch):
        perms = [(pi, pi if tile.same else next(j_perm))
                 for pi in (next(i_perm) for _ in range(min(batch, request.count - first)))]
        sums = np.zeros((source.kernels, len(left), len(perms), len(right)))
        for (a, b), left_rows in zip(pieces, rows_k, strict=True):
            for p, (pi, pj) in enumerate(perms):
                for j, layer in enumerate(right):
                    np.take(saved[layer], pi[a:b], axis=0, out=gathered[:b - a])
                    permuted = flat[0, p, j, :b - a] if source.linear else raw[:b - a]
                    np.take(gathered[:b - a], pj, axis=1, out=permuted)
                    source.fill(permuted, layer, norms[layer], tile.rows[0] + pi[a:b],
                                tile.cols[0] + pj, flat[:, p, j, :b - a], work[:b - a])
            with np.errstate(invalid="ignore", over="ignore"):
                for k in range(source.kernels):
                    right_rows = flat[k, :len(perms), :, :b - a].reshape(
                        len(perms) * len(right), -1)
                    sums[k] += (left_rows[k] @ right_rows.T).reshape(sums.shape[1:])
        for c, (i, j) in enumerate(at):
            out[:, c, first:first + len(perms)] = sums[:, i, :, j]
    return out * tile.weight


def _row_pieces(tile: Tile, source: Source, key: str, left, norms, pieces) -> list[np.ndarray]:
    """The row layers' kernels on each piece of rows, (kernels, layers, piece x columns)
    each: what every permutation's product reads."""
    width = tile.cols[1] - tile.cols[0]
    own_cols = np.arange(*tile.cols)
    out = []
    for a, b in pieces:
        raw, work = np.empty((b - a, width)), np.empty((b - a, width))
        rows = np.empty((source.kernels, len(left), b - a, width))
        for i, layer in enumerate(left):
            source.store.part(layer, key, a, b, raw)
            source.fill(raw, layer, norms[layer], tile.rows[0] + np.arange(a, b), own_cols,
                        rows[:, i], work)
        out.append(rows.reshape(source.kernels, len(left), -1))
    return out


def permuted_sums(tiles: Sequence[Tile], source: Source, request: Request, slots: int,
                  limit: int) -> np.ndarray:
    """Every pair's permuted sums over ``tiles``, (kernels, pairs, count): a task per tile and
    slab of its rows, added in tile and slab order. A task holds its slab's kernels of every
    row layer within half of ``limit`` bytes, and a batch's permuted rows within the other
    half (:func:`permuted_slab`)."""
    held = source.kernels * len({a for a, _ in request.directed}) + 3
    spans = [(t, span) for t in tiles for span in slabs(t, len(tiles), held, slots, limit // 2)]
    parts = compute(*(dask.delayed(permuted_slab, pure=False)(t, source, request.directed,
                                                              span, request, limit // 2)
                      for t, span in spans))
    return np.sum(parts, axis=0)  # in task order: the same for any scheduler


def null_sums(sums: dict, kernel: int, a: int, b: int, pair_sum: float,
              permutation: np.ndarray) -> GramSums:
    """The :class:`GramSums` of layer a against layer b with b's samples permuted by
    ``permutation`` (n indices), from the grid's ``sums`` (its self pairs ``(kernel, l, l)``)
    and the pair's permuted sum ``pair_sum``."""
    k, g = sums[kernel, a, a], sums[kernel, b, b]
    return GramSums(k.n, float(pair_sum), k.kl, g.kl, k.k_rows, g.k_rows[permutation],
                    k.k_diag, g.k_diag[permutation])
