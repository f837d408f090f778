"""Pairwise deletion for ``nan_policy="omit"``: each pair of layers keeps the samples finite in
both of its layers, whatever other layers share the pass.

A pass accumulates its statistics over the rows finite in every layer. The few rows that are
finite in some layers but not in others are carried aside raw (:class:`Aside`: sample index,
values, per-layer finiteness), and a pair's statistics are the clean statistics restricted to
its two layers merged with those of the aside rows finite in both (:func:`pair_statistics`).
With a permutation null, a permutation block holding such a row is carried aside whole and its
permuted statistics are computed per pair (:func:`block_null`), permuting the rows finite in
both layers as :func:`~dask_repsim.engine.permuted.restrict_permutations` derives from the block's
permutation. What is carried aside is bounded by a byte limit (the memory budget); past it
the pass reports how many samples are affected instead of holding them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .moments import Centred, Statistics, column_slices, finite_by_layer
from .permuted import Permuted, block_permutations, restrict_permutations


def useful_rows(finite: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mask of the rows (of a (rows, layers) finiteness mask) finite in both layers of a pair.

    Examples
    --------
    >>> finite = np.array([[True, False, True], [False, True, False]])
    >>> useful_rows(finite, [(0, 2), (1, 1)]).tolist(), useful_rows(finite, [(0, 1)]).tolist()
    ([True, True], [False, False])
    """
    out = np.zeros(finite.shape[0], dtype=bool)
    for i, j in pairs:
        out |= finite[:, i] & finite[:, j]
    return out


@dataclass(frozen=True)
class Aside:
    """Rows (and permutation blocks) finite in some layers but not in others, kept raw."""

    sizes: tuple[int, ...]
    #: (m,) sample indices, (m, P) raw rows, (m, L) per-layer finiteness of the aside rows
    index: np.ndarray
    rows: np.ndarray
    finite: np.ndarray
    #: (first sample, raw rows) of the permutation blocks whose null is computed per pair
    blocks: tuple[tuple[int, np.ndarray], ...]
    #: bytes the aside data may take; past it the data is dropped and only counted
    limit: int
    #: rows set aside and rows of blocks set aside, kept or not
    n_rows: int = 0
    n_block_rows: int = 0
    overflow: bool = False

    @classmethod
    def empty(cls, sizes: Sequence[int], limit: int) -> Aside:
        width = int(sum(sizes))
        return cls(
            tuple(sizes), np.zeros(0, np.int64), np.zeros((0, width)),
            np.zeros((0, len(sizes)), bool), (), limit,
        )

    @classmethod
    def of(cls, c: Centred, pairs: Sequence[tuple[int, int]], limit: int) -> Aside:
        """The aside rows of a centred chunk that some pair of ``pairs`` uses."""
        use = useful_rows(c.aside_finite, pairs)
        out = cls(
            c.sizes, c.aside_index[use], c.aside_rows[use], c.aside_finite[use], (), limit,
            n_rows=int(use.sum()),
        )
        return out.bounded()

    def with_block(self, first: int, rows: np.ndarray) -> Aside:
        """This, and the raw rows of the permutation block starting at sample ``first``."""
        out = dataclasses.replace(
            self, blocks=self.blocks + ((first, rows),), n_block_rows=self.n_block_rows + len(rows)
        )
        return out.bounded()

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + sum(rows.nbytes for _, rows in self.blocks)

    def bounded(self) -> Aside:
        """This, or past the limit an overflowing record of its counts only."""
        if self.overflow or self.nbytes <= self.limit:
            return self
        empty = Aside.empty(self.sizes, self.limit)
        return dataclasses.replace(
            empty, n_rows=self.n_rows, n_block_rows=self.n_block_rows, overflow=True
        )

    @staticmethod
    def merge(a: Aside, b: Aside) -> Aside:
        """The aside rows of two disjoint sets of samples."""
        if a.overflow or b.overflow:
            out = a if a.overflow else b
            return dataclasses.replace(
                out, n_rows=a.n_rows + b.n_rows, n_block_rows=a.n_block_rows + b.n_block_rows
            )
        out = Aside(
            a.sizes,
            np.concatenate([a.index, b.index]),
            np.concatenate([a.rows, b.rows]),
            np.concatenate([a.finite, b.finite]),
            a.blocks + b.blocks,
            a.limit,
            a.n_rows + b.n_rows,
            a.n_block_rows + b.n_block_rows,
        )
        return out.bounded()

    def usable(self, a: int, b: int) -> np.ndarray:
        """Mask of the aside rows finite in both layers ``a`` and ``b``."""
        return self.finite[:, a] & self.finite[:, b]


def pair_statistics(
    clean: Statistics, aside: Aside | None, a: int, b: int, keep: np.ndarray | None = None
) -> Statistics:
    """Statistics of layers ``[a, b]`` over the samples finite in both.

    ``clean``: statistics of the rows finite in every layer; ``keep``: which aside rows may
    count (e.g. those outside a left-out group; default all).
    """
    out = clean.select([a, b])
    if aside is None or not len(aside.index):
        return out
    use = aside.usable(a, b) if keep is None else aside.usable(a, b) & keep
    if not use.any():
        return out
    order = np.argsort(aside.index[use], kind="stable")  # the same sums however chunked
    rows = aside.rows[use][order]
    slices = clean.slices
    extra = Statistics.from_chunk([rows[:, slices[a]], rows[:, slices[b]]])
    merged = Statistics.merge(out, extra)
    return dataclasses.replace(merged, omitted=out.omitted - int(use.sum()))


def block_null(
    aside: Aside, a: int, b: int, count: int, seed: int, sizes: Sequence[int],
    span: tuple[int, int] | None = None,
) -> Permuted | None:
    """The permuted statistics of layer ``a`` against layer ``b`` over the aside blocks (those
    that start in ``span``, first and stop sample, when given: a null kept by group).

    In each block the rows finite in both layers are permuted as
    :func:`~dask_repsim.engine.permuted.restrict_permutations` derives from the block's permutation.
    """
    slices = column_slices(sizes)
    parts = []
    for first, rows in sorted(aside.blocks, key=lambda block: block[0]):
        if span is not None and not span[0] <= first < span[1]:
            continue
        finite = finite_by_layer(rows, sizes)
        keep = finite[:, a] & finite[:, b]
        perms = block_permutations(seed, first, len(rows), count)
        kept = rows[keep]
        c = Centred.of([kept[:, slices[a]], kept[:, slices[b]]], first)
        parts.append(Permuted.from_centred(c, [0], [1], restrict_permutations(perms, keep)))
    out = None
    for part in parts:
        out = Permuted.merge(out, part)
    return out

