"""Jackknife replicates on the sample-space tiles: CKA with each group of samples left out.

With the samples in G contiguous groups (:func:`~dask_repsim.engine.stream.group_bounds`, the
co-moment path's), leaving group g out of a pair's HSIC needs, besides the grid's sums
(:class:`~dask_repsim.measures.hsic.GramSums`), the sums of ``K_a * K_b`` over each block of
groups (g, h) and each layer's row sums by group of columns. From those::

    sum over (i, j) outside g of K_a K_b = total - 2 sum_h S[g, h] + S[g, g]
    row sums of K_a without g's columns = K_a 1 - B_a[:, g]

and each leave-a-group-out replicate is the pair's CKA of the remaining samples, exactly (it
equals CKA recomputed on them, :func:`replicate_sums`). :func:`grouped_sums` takes both from
the matrices the grid has saved to scratch, a task per tile and slab of rows, without reading
the activations again. RBF kernels keep the bandwidths of all samples in every replicate (the
interval is that of CKA at those bandwidths).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dask
import numpy as np

from ...engine.parallel import compute
from ...engine.stream import group_bounds
from ...measures.hsic import GramSums
from .permuted import Source
from .tiles import Tile, slabs


@dataclass
class Request:
    """Jackknife replicates asked of :func:`~dask_repsim.paths.gram.samplespace.grid_sums`:
    ``groups`` contiguous groups of samples, for the linear kernel (``linear``) and the RBF
    kernels (``rbf``); the grid fills in ``grouped[kernel]`` (:class:`Grouped`)."""

    groups: int
    linear: bool = True
    rbf: bool = False
    #: row blocks need no alignment
    block: None = None
    grouped: dict = field(default_factory=dict)
    #: the pairs of layers the grid summed, in the order of ``Grouped.blocks``
    pairs: list = field(default_factory=list)

    def run(self, tiles: Sequence[Tile], source: Source, n_layers: int, pairs, n: int,
            share: tuple[int, int], sums: dict) -> None:
        """The group sums of ``source``'s kernels."""
        self.pairs = list(pairs)
        found = grouped_sums(tiles, source, n_layers, pairs, n, group_bounds(n, self.groups),
                             *share)
        self.grouped.update({number: Grouped(found.blocks[k], found.rows[k])
                             for k, number in enumerate(source.numbers)})


@dataclass
class Grouped:
    """What :func:`grouped_sums` adds up: ``blocks[k, c, g, h]`` the sum of ``K_a * K_b`` of
    pair c over samples (i in group g, j in group h) for kernel k, and ``rows[k, l, i, h]``
    the sum of layer l's row i over the columns of group h."""

    blocks: np.ndarray
    rows: np.ndarray


def _cuts(span: tuple[int, int], bounds: Sequence[int]) -> list[tuple[int, int, int]]:
    """The pieces (group, start, stop) of the samples ``span`` in the groups ``bounds``.

    Examples
    --------
    >>> _cuts((5, 25), (0, 10, 20, 30))
    [(0, 5, 10), (1, 10, 20), (2, 20, 25)]
    """
    out = []
    for g in range(len(bounds) - 1):
        a, b = max(span[0], bounds[g]), min(span[1], bounds[g + 1])
        if a < b:
            out.append((g, a, b))
    return out


def grouped_slab(tile: Tile, source: Source, n_layers: int, pairs, span: tuple[int, int],
                 bounds: Sequence[int]):
    """The group sums of rows ``span`` (from the tile's first row) of ``tile``: (blocks, row
    part, column part), the row part (kernels, layers, rows, G) for the span's samples, the
    column part (kernels, layers, columns, G) for the tile's columns when it stands for its
    mirror too, else ``None``."""
    groups = len(bounds) - 1
    r0, r1 = span
    c0, c1 = tile.cols
    width, m = c1 - c0, r1 - r0
    index = tuple(np.array(pairs).T)
    blocks = np.zeros((source.kernels, len(pairs), groups, groups))
    rows = np.zeros((source.kernels, n_layers, m, groups))
    cols = None if tile.same else np.zeros((source.kernels, n_layers, width, groups))
    kernels = source.slab(tile, n_layers, span)
    row_cuts = _cuts((tile.rows[0] + r0, tile.rows[0] + r1), bounds)
    col_cuts = _cuts(tile.cols, bounds)
    for k, kernel in enumerate(kernels):
        with np.errstate(invalid="ignore", over="ignore"):
            for g, a, b in row_cuts:
                part = kernel[:, a - tile.rows[0] - r0:b - tile.rows[0] - r0]
                for h, c, d in col_cuts:
                    flat = np.ascontiguousarray(part[:, :, c - c0:d - c0]).reshape(n_layers, -1)
                    found = (flat @ flat.T)[index]
                    blocks[k, :, g, h] += found
                    if cols is not None:  # the mirror tile's (j, i)
                        blocks[k, :, h, g] += found
                if cols is not None:
                    cols[k, :, :, g] = part.sum(axis=1)
            for h, c, d in col_cuts:
                rows[k, :, :, h] = kernel[:, :, c - c0:d - c0].sum(axis=2)
    return blocks, rows, cols


def grouped_sums(tiles: Sequence[Tile], source: Source, n_layers: int, pairs, n: int,
                 bounds: Sequence[int], slots: int, limit: int) -> Grouped:
    """:class:`Grouped` of every pair over ``tiles``: a task per tile and slab of rows
    (:func:`grouped_slab`), added in tile and slab order."""
    spans = [(t, span) for t in tiles for span in slabs(t, len(tiles),
                                                       (source.kernels + 1) * n_layers, slots,
                                                       limit)]
    parts = compute(*(dask.delayed(grouped_slab, pure=False)(t, source, n_layers, pairs, span,
                                                             bounds) for t, span in spans))
    groups = len(bounds) - 1
    blocks = np.zeros((source.kernels, len(pairs), groups, groups))
    rows = np.zeros((source.kernels, n_layers, n, groups))
    for (tile, (r0, r1)), (b, r, c) in zip(spans, parts, strict=True):
        blocks += b
        start = tile.rows[0]
        rows[:, :, start + r0:start + r1] += r
        if c is not None:
            rows[:, :, tile.cols[0]:tile.cols[1]] += c
    return Grouped(blocks, rows)


def replicate_sums(sums: dict, grouped: Grouped, kernel: int, pairs, a: int, b: int,
                   bounds: Sequence[int]) -> list[GramSums]:
    """The :class:`GramSums` of layers a and b with each group of samples left out, from the
    grid's ``sums`` (of kernel ``kernel``) and its ``grouped`` sums."""
    index = {p: c for c, p in enumerate(pairs)}
    s_ab, s_aa, s_bb = (grouped.blocks[index[p]]
                        for p in (tuple(sorted((a, b))), (a, a), (b, b)))
    full_a, full_b = sums[kernel, a, a], sums[kernel, b, b]
    out = []
    for g in range(len(bounds) - 1):
        keep = np.r_[0:bounds[g], bounds[g + 1]:full_a.n]

        def without(s: np.ndarray, g: int = g) -> float:
            return float(s.sum() - 2.0 * s[g].sum() + s[g, g])

        out.append(GramSums(
            len(keep), without(s_ab), without(s_aa), without(s_bb),
            full_a.k_rows[keep] - grouped.rows[a, keep, g],
            full_b.k_rows[keep] - grouped.rows[b, keep, g],
            full_a.k_diag[keep], full_b.k_diag[keep]))
    return out
