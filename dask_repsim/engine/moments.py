"""Float64 sufficient statistics of the joint array of several layers, and their merge.

For the joint array ``Z = [Z_1 | ... | Z_L]`` (n samples, P = p_1 + ... + p_L features, one block
of columns per layer) every block of rows gives a :class:`Statistics`; blocks merge pairwise.
Everything a measure needs is a function of the result, whose size does not depend on n:

- ``count`` n, ``mean`` (P,), and the centred co-moment
  ``comoment`` (P, P) = sum_i (z_i - m)(z_i - m)^T
- ``norm_comoment`` (L, P) = sum_i r_li (z_i - m) and ``norm_product`` (L, L) = sum_i r_ai r_bi,
  where r_li = ||z_i,l - m_l||^2 is the squared norm of sample i's centred activations in layer l.
  Debiased (unbiased-HSIC) CKA needs ``norm_product``; ``norm_comoment`` is what lets it merge.

The merge moves both parts' statistics from their own means to the joint mean and adds them: for
the co-moment this is Chan, Golub & LeVeque's pairwise update
``M = Ma + Mb + outer(d, d) na nb / n`` (d = mean_b - mean_a); :meth:`Statistics.shift` gives the
same update for the higher-order terms. Every term is a moment about a block mean, so nothing
cancels catastrophically when activations have large means (ReLU layers).

Rows with NaN or Inf in some layer are left out of a block's statistics (:class:`Centred`);
the rows that are finite in some layers but not in others are handed back raw, so that a pass
can give each pair of layers the samples finite in both (:mod:`dask_repsim.engine.omission`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


def column_slices(sizes: Sequence[int]) -> list[slice]:
    """Column slice of each layer in the joint array of layers of ``sizes`` features.

    Examples
    --------
    >>> column_slices([2, 3])
    [slice(0, 2, None), slice(2, 5, None)]
    """
    bounds = np.cumsum((0,) + tuple(int(s) for s in sizes))
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def layer_columns(sizes: Sequence[int], layers: Sequence[int]) -> np.ndarray:
    """Indices of the joint array's columns of ``layers``, in that order."""
    slices = column_slices(sizes)
    return np.concatenate(
        [np.arange(slices[i].start, slices[i].stop) for i in layers] or [np.zeros(0, int)]
    ).astype(np.int64)


def kept_pairs(layers: int, pairs: Sequence | None) -> frozenset[tuple[int, int]] | None:
    """``pairs`` as a set of (i, j), i < j; ``None`` when that is every pair of ``layers``."""
    if pairs is None:
        return None
    kept = frozenset((min(i, j), max(i, j)) for i, j in pairs if i != j)
    return None if len(kept) == layers * (layers - 1) // 2 else kept


@dataclass(frozen=True)
class Statistics:
    """Sufficient statistics of the joint array of several layers' activations.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.arange(12.0).reshape(6, 2)
    >>> a = Statistics.from_chunk([z[:2]])
    >>> b = Statistics.from_chunk([z[2:]], offset=2)
    >>> whole = Statistics.merge(a, b)
    >>> np.allclose(whole.comoment, np.cov(z.T) * 5)
    True
    """

    sizes: tuple[int, ...]
    count: int
    mean: np.ndarray
    comoment: np.ndarray
    norm_comoment: np.ndarray
    norm_product: np.ndarray
    #: per layer, index of the first sample holding NaN or Inf (-1: none), and whether it is NaN
    first_nonfinite: np.ndarray = field(repr=False)
    nonfinite_is_nan: np.ndarray = field(repr=False)
    #: samples left out because some layer had NaN or Inf there
    omitted: int = 0
    #: the pairs of layers (i < j) whose cross blocks were computed; ``None``: all of them.
    #: The other cross blocks of ``comoment`` are NaN (every layer's own block is always kept).
    pairs: frozenset[tuple[int, int]] | None = None
    #: per layer, the number of samples at which it has NaN or Inf (``None``: none anywhere)
    nonfinite_count: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.nonfinite_count is None:
            zeros = np.zeros(len(self.sizes), dtype=np.int64)
            object.__setattr__(self, "nonfinite_count", zeros)

    @property
    def slices(self) -> list[slice]:
        """Column slice of each layer in the joint array."""
        return column_slices(self.sizes)

    def traces(self) -> np.ndarray:
        """tr(M_ll) for every layer l: the total centred sum of squares."""
        diag = np.diagonal(self.comoment)
        return np.array([diag[s].sum() for s in self.slices])

    @classmethod
    def from_chunk(
        cls, blocks: Sequence[np.ndarray], offset: int = 0, pairs: Sequence | None = None
    ) -> Statistics:
        """Statistics of one chunk of rows, given each layer's block of it (any real dtype).

        Rows with NaN or Inf in any layer are left out and recorded; the caller decides
        whether that is an error. ``pairs``: as in :meth:`from_centred`.
        """
        return cls.from_centred(Centred.of(blocks, offset), pairs)

    @classmethod
    def from_centred(cls, c: Centred, pairs: Sequence | None = None) -> Statistics:
        """Statistics of a centred chunk.

        ``pairs`` (layer index pairs) limits the cross blocks of the co-moment to those pairs;
        each layer's own block is always computed. A grid of m layers against m others needs
        m^2 cross blocks of the (2m)^2: with ``pairs`` the pass skips the products the grid
        does not use (about 40% of the arithmetic of a 6 x 6 grid).
        """
        z = c.z
        kept = kept_pairs(len(c.sizes), pairs)
        if kept is None:
            comoment = z.T @ z  # numpy hands X^T X to BLAS syrk: half the flops of a product
        else:
            comoment = block_comoment(z, c.sizes, kept)
        norms = c.norms
        norm_comoment, norm_product = norms.T @ z, norms.T @ norms
        if kept is not None:  # what belongs to pairs left out is NaN throughout, as it would
            slices = column_slices(c.sizes)  # become in the merges anyway
            for i in range(len(slices)):
                for j in range(i + 1, len(slices)):
                    if (i, j) not in kept:
                        norm_product[i, j] = norm_product[j, i] = np.nan
                        norm_comoment[i, slices[j]] = norm_comoment[j, slices[i]] = np.nan
        return cls(
            sizes=c.sizes,
            count=int(z.shape[0]),
            mean=c.mean,
            comoment=comoment,
            norm_comoment=norm_comoment,
            norm_product=norm_product,
            first_nonfinite=c.first_bad,
            nonfinite_is_nan=c.bad_is_nan,
            omitted=c.omitted,
            pairs=kept,
            nonfinite_count=c.nonfinite_count,
        )

    def shift(self, delta: np.ndarray) -> Statistics:
        """The same samples' statistics taken about ``mean - delta`` instead of ``mean``.

        With v_i = z_i - mean and r_li = ||v_i,l||^2, moving the centre by -delta gives
        v'_i = v_i + delta and r'_li = r_li + 2 v_i,l . delta_l + c_l (c_l = ||delta_l||^2);
        summing products of these, with sum_i v_i = 0, gives the updates below.
        """
        n = self.count
        slices = self.slices
        tr = self.traces()
        c = np.array([delta[s] @ delta[s] for s in slices])
        # h[:, l] = M[:, s_l] delta_l ;  g[a, b] = G[a, s_b] . delta_b
        h = np.stack([self.comoment[:, s] @ delta[s] for s in slices], axis=1)
        g = np.stack([self.norm_comoment[:, s] @ delta[s] for s in slices], axis=1)
        dhd = np.stack([h[s].T @ delta[s] for s in slices], axis=0)  # delta_a^T M_ab delta_b
        return dataclasses.replace(
            self,
            mean=self.mean - delta,
            comoment=self.comoment + n * np.outer(delta, delta),
            norm_comoment=self.norm_comoment + np.outer(tr + n * c, delta) + 2 * h.T,
            norm_product=self.norm_product
            + 2 * (g + g.T)
            + np.outer(tr, c)
            + np.outer(c, tr)
            + 4 * dhd
            + n * np.outer(c, c),
        )

    @staticmethod
    def merge(a: Statistics, b: Statistics) -> Statistics:
        """Statistics of the union of two disjoint sets of samples."""
        both = (a.first_nonfinite >= 0) & (b.first_nonfinite >= 0)
        take_b = (a.first_nonfinite < 0) | (both & (b.first_nonfinite < a.first_nonfinite))
        bookkeeping = {
            "first_nonfinite": np.where(take_b, b.first_nonfinite, a.first_nonfinite),
            "nonfinite_is_nan": np.where(take_b, b.nonfinite_is_nan, a.nonfinite_is_nan),
            "omitted": a.omitted + b.omitted,
            "nonfinite_count": a.nonfinite_count + b.nonfinite_count,
            "pairs": a.pairs,
        }
        if a.count == 0 or b.count == 0:
            return dataclasses.replace(b if a.count == 0 else a, **bookkeeping)
        d = b.mean - a.mean
        mean = a.mean + d * (b.count / (a.count + b.count))
        sa, sb = a.shift(a.mean - mean), b.shift(b.mean - mean)
        comoment = sa.comoment  # the shift's own new array: summed in place, one copy fewer
        comoment += sb.comoment
        return Statistics(
            sizes=a.sizes,
            count=a.count + b.count,
            mean=mean,
            comoment=comoment,
            norm_comoment=sa.norm_comoment + sb.norm_comoment,
            norm_product=sa.norm_product + sb.norm_product,
            **bookkeeping,
        )

    def has_pair(self, a: int, b: int) -> bool:
        """Whether the cross block of layers ``a`` and ``b`` was computed.

        Examples
        --------
        >>> import numpy as np
        >>> blocks = [np.random.default_rng(0).normal(size=(10, 2)) for _ in range(3)]
        >>> s = Statistics.from_chunk(blocks, pairs=[(0, 2)])
        >>> s.has_pair(2, 0), s.has_pair(0, 1), bool(np.isnan(s.comoment[0:2, 2:4]).any())
        (True, False, True)
        """
        return a == b or self.pairs is None or (min(a, b), max(a, b)) in self.pairs

    def select(self, layers: Sequence[int]) -> Statistics:
        """The statistics of the joint array of ``layers`` only (indices, in that order).

        Examples
        --------
        >>> import numpy as np
        >>> blocks = [np.random.default_rng(0).normal(size=(10, p)) for p in (2, 3, 1)]
        >>> s = Statistics.from_chunk(blocks).select([2, 0])
        >>> direct = Statistics.from_chunk([blocks[2], blocks[0]])
        >>> s.sizes, bool(np.allclose(s.comoment, direct.comoment))
        ((1, 2), True)
        """
        idx = list(layers)
        cols = layer_columns(self.sizes, idx)
        kept = [
            (i, j)
            for i in range(len(idx))
            for j in range(i + 1, len(idx))
            if self.has_pair(idx[i], idx[j])
        ]
        return Statistics(
            sizes=tuple(self.sizes[i] for i in idx),
            count=self.count,
            mean=self.mean[cols],
            comoment=self.comoment[np.ix_(cols, cols)],
            norm_comoment=self.norm_comoment[np.ix_(idx, cols)],
            norm_product=self.norm_product[np.ix_(idx, idx)],
            first_nonfinite=self.first_nonfinite[idx],
            nonfinite_is_nan=self.nonfinite_is_nan[idx],
            omitted=self.omitted,
            pairs=kept_pairs(len(idx), kept),
            nonfinite_count=self.nonfinite_count[idx],
        )


def merge_all(*parts: Statistics) -> Statistics:
    """The statistics of the union of disjoint parts (at least one)."""
    out = parts[0]
    for part in parts[1:]:
        out = Statistics.merge(out, part)
    return out


def block_comoment(z: np.ndarray, sizes: Sequence[int], kept: frozenset) -> np.ndarray:
    """``z^T z`` with only the diagonal blocks and the cross blocks of ``kept``; NaN elsewhere.

    Each layer's partners after it are taken in runs of adjacent layers, one product per run.
    """
    slices = column_slices(sizes)
    out = np.full((z.shape[1], z.shape[1]), np.nan)
    for i, si in enumerate(slices):
        zi = z[:, si]
        out[si, si] = zi.T @ zi
        partners = sorted(j for a, j in kept if a == i)
        runs: list[list[int]] = []
        for j in partners:
            if runs and runs[-1][-1] == j - 1:
                runs[-1].append(j)
            else:
                runs.append([j])
        for run in runs:
            cols = slice(slices[run[0]].start, slices[run[-1]].stop)
            block = zi.T @ z[:, cols]
            out[si, cols] = block
            out[cols, si] = block.T
    return out


def joint_rows(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """The layers' blocks of the same rows side by side, as one float64 (rows, P) array."""
    sizes = [int(np.prod(b.shape[1:])) for b in blocks]
    z = np.empty((blocks[0].shape[0], sum(sizes)))
    for block, s in zip(blocks, column_slices(sizes), strict=True):
        z[:, s] = block.reshape(block.shape[0], -1)  # cast to float64 here
    return z


def finite_by_layer(z: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """(rows, layers) mask: whether each row is finite in each layer."""
    return np.stack([np.isfinite(z[:, s]).all(axis=1) for s in column_slices(sizes)], axis=1)


@dataclass
class Centred:
    """One chunk of rows of the joint array as float64, finite rows only, centred on its mean.

    ``aside_*``: the rows finite in some layers but not in others (raw, with their sample
    indices and per-layer finiteness), when asked for; empty otherwise.
    """

    z: np.ndarray
    mean: np.ndarray
    sizes: tuple[int, ...]
    first_bad: np.ndarray
    bad_is_nan: np.ndarray
    omitted: int
    nonfinite_count: np.ndarray
    aside_index: np.ndarray
    aside_rows: np.ndarray
    aside_finite: np.ndarray
    #: which of the given rows ``z`` holds (``None``: all of them)
    kept: np.ndarray | None = None

    @classmethod
    def of(cls, blocks: Sequence[np.ndarray], offset: int, aside: bool = False) -> Centred:
        """The centred finite rows of ``blocks`` (rows ``offset``, ``offset + 1``, ...)."""
        sizes = tuple(int(np.prod(b.shape[1:])) for b in blocks)
        z = joint_rows(blocks)
        layers = len(sizes)
        mean = z.mean(axis=0)
        first_bad = np.full(layers, -1, dtype=np.int64)
        bad_is_nan = np.zeros(layers, dtype=bool)
        nonfinite = np.zeros(layers, dtype=np.int64)
        index, rows, finite_rows = np.zeros(0, np.int64), z[:0], np.zeros((0, layers), bool)
        omitted, good = 0, None
        if not np.isfinite(mean).all():
            finite = finite_by_layer(z, sizes)
            for i, s in enumerate(column_slices(sizes)):
                if not finite[:, i].all():
                    row = int(np.argmin(finite[:, i]))
                    first_bad[i] = offset + row
                    bad_is_nan[i] = bool(np.isnan(z[row, s]).any())
            nonfinite = (~finite).sum(axis=0).astype(np.int64)
            good = finite.all(axis=1)
            if aside:
                partial = np.flatnonzero(~good & finite.any(axis=1))
                index, rows, finite_rows = offset + partial, z[partial], finite[partial]
            z = z[good]
            omitted = int((~good).sum())
            mean = z.mean(axis=0) if len(z) else np.zeros(z.shape[1])
        z -= mean
        return cls(
            z, mean, sizes, first_bad, bad_is_nan, omitted, nonfinite, index, rows, finite_rows,
            good,
        )

    @cached_property
    def norms(self) -> np.ndarray:
        """(rows, layers): each row's squared norm within each layer."""
        z = self.z
        return np.stack(
            [np.einsum("ij,ij->i", z[:, s], z[:, s]) for s in column_slices(self.sizes)], 1
        )
