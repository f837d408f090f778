"""The statistics engine: one streaming pass over the samples, float64 sufficient statistics.

For the joint array ``Z = [Z_1 | ... | Z_L]`` (n samples, P = p_1 + ... + p_L features, one block
of columns per layer) every chunk of rows gives a :class:`Statistics`; chunks merge pairwise in a
Dask tree reduction. Everything a measure needs is a function of the result, whose size does not
depend on n:

- ``count`` n, ``mean`` (P,), and the centred co-moment
  ``comoment`` (P, P) = sum_i (z_i - m)(z_i - m)^T
- ``norm_comoment`` (L, P) = sum_i r_li (z_i - m) and ``norm_product`` (L, L) = sum_i r_ai r_bi,
  where r_li = ||z_i,l - m_l||^2 is the squared norm of sample i's centred activations in layer l.
  Debiased (unbiased-HSIC) CKA needs ``norm_product``; ``norm_comoment`` is what lets it merge.

The merge moves both parts' statistics from their own means to the joint mean and adds them: for
the co-moment this is Chan, Golub & LeVeque's pairwise update
``M = Ma + Mb + outer(d, d) na nb / n`` (d = mean_b - mean_a); :meth:`Statistics.shift` gives the
same update for the higher-order terms. Every term is a moment about a chunk mean, so nothing
cancels catastrophically when activations have large means (ReLU layers).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from .exceptions import RepsimWarning
from .inputs import Layer
from .parallel import compute

#: Statistics chunks merged per task in the tree reduction.
SPLIT_EVERY = 8
#: Bytes of float64 joint rows a task centres at a time: a stored chunk of many rows of a wide
#: grid is taken in sub-blocks of about this size (merged with the pairwise update), so a task's
#: memory is bounded by the grid's width, not by the storage chunking.
SUB_BLOCK_BYTES = 512 * 2**20


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

    @property
    def slices(self) -> list[slice]:
        """Column slice of each layer in the joint array."""
        return _slices(self.sizes)

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
        return cls.from_centred(_Centred.of(blocks, offset), pairs)

    @classmethod
    def from_centred(cls, c: _Centred, pairs: Sequence | None = None) -> Statistics:
        """Statistics of a centred chunk.

        ``pairs`` (layer index pairs) limits the cross blocks of the co-moment to those pairs;
        each layer's own block is always computed. A grid of m layers against m others needs
        m^2 cross blocks of the (2m)^2: with ``pairs`` the pass skips the products the grid
        does not use (about 40% of the arithmetic of a 6 x 6 grid).
        """
        z = c.z
        kept = _kept_pairs(len(c.sizes), pairs)
        if kept is None:
            comoment = z.T @ z  # numpy hands X^T X to BLAS syrk: half the flops of a product
        else:
            comoment = _block_comoment(z, c.sizes, kept)
        norms = c.norms
        norm_comoment, norm_product = norms.T @ z, norms.T @ norms
        if kept is not None:  # what belongs to pairs left out is NaN throughout, as it would
            slices = _slices(c.sizes)  # become in the merges anyway
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
        return Statistics(
            sizes=self.sizes,
            count=n,
            mean=self.mean - delta,
            comoment=self.comoment + n * np.outer(delta, delta),
            norm_comoment=self.norm_comoment + np.outer(tr + n * c, delta) + 2 * h.T,
            norm_product=self.norm_product
            + 2 * (g + g.T)
            + np.outer(tr, c)
            + np.outer(c, tr)
            + 4 * dhd
            + n * np.outer(c, c),
            first_nonfinite=self.first_nonfinite,
            nonfinite_is_nan=self.nonfinite_is_nan,
            omitted=self.omitted,
            pairs=self.pairs,
        )

    @staticmethod
    def merge(a: Statistics, b: Statistics) -> Statistics:
        """Statistics of the union of two disjoint sets of samples."""
        both = (a.first_nonfinite >= 0) & (b.first_nonfinite >= 0)
        take_b = (a.first_nonfinite < 0) | (both & (b.first_nonfinite < a.first_nonfinite))
        bad = np.where(take_b, b.first_nonfinite, a.first_nonfinite)
        bad_is_nan = np.where(take_b, b.nonfinite_is_nan, a.nonfinite_is_nan)
        if a.count == 0 or b.count == 0:
            whole = b if a.count == 0 else a
        else:
            d = b.mean - a.mean
            mean = a.mean + d * (b.count / (a.count + b.count))
            sa, sb = a.shift(a.mean - mean), b.shift(b.mean - mean)
            whole = Statistics(
                sizes=a.sizes,
                count=a.count + b.count,
                mean=mean,
                comoment=sa.comoment + sb.comoment,
                norm_comoment=sa.norm_comoment + sb.norm_comoment,
                norm_product=sa.norm_product + sb.norm_product,
                first_nonfinite=bad,
                nonfinite_is_nan=bad_is_nan,
                pairs=a.pairs,
            )
        return Statistics(
            sizes=whole.sizes,
            count=whole.count,
            mean=whole.mean,
            comoment=whole.comoment,
            norm_comoment=whole.norm_comoment,
            norm_product=whole.norm_product,
            first_nonfinite=bad,
            nonfinite_is_nan=bad_is_nan,
            omitted=a.omitted + b.omitted,
            pairs=a.pairs,
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


def _slices(sizes: Sequence[int]) -> list[slice]:
    bounds = np.cumsum((0,) + tuple(sizes))
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _kept_pairs(layers: int, pairs: Sequence | None) -> frozenset[tuple[int, int]] | None:
    """``pairs`` as a set of (i, j), i < j; ``None`` when that is every pair of ``layers``."""
    if pairs is None:
        return None
    kept = frozenset((min(i, j), max(i, j)) for i, j in pairs if i != j)
    return None if len(kept) == layers * (layers - 1) // 2 else kept


def _block_comoment(z: np.ndarray, sizes: Sequence[int], kept: frozenset) -> np.ndarray:
    """``z^T z`` with only the diagonal blocks and the cross blocks of ``kept``; NaN elsewhere.

    Each layer's partners after it are taken in runs of adjacent layers, one product per run.
    """
    slices = _slices(sizes)
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


@dataclass
class _Centred:
    """One chunk of rows of the joint array as float64, finite rows only, centred on its mean."""

    z: np.ndarray
    mean: np.ndarray
    sizes: tuple[int, ...]
    first_bad: np.ndarray
    bad_is_nan: np.ndarray
    omitted: int

    @classmethod
    def of(cls, blocks: Sequence[np.ndarray], offset: int) -> _Centred:
        sizes = tuple(int(np.prod(b.shape[1:])) for b in blocks)
        z = np.empty((blocks[0].shape[0], sum(sizes)))
        first_bad = np.full(len(blocks), -1, dtype=np.int64)
        bad_is_nan = np.zeros(len(blocks), dtype=bool)
        bounds = np.cumsum((0,) + sizes)
        for block, start, stop in zip(blocks, bounds[:-1], bounds[1:], strict=True):
            z[:, start:stop] = block.reshape(block.shape[0], -1)  # cast to float64 here
        mean = z.mean(axis=0)
        omitted = 0
        if not np.isfinite(mean).all():
            finite = np.ones(z.shape[0], dtype=bool)
            for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                ok = np.isfinite(z[:, start:stop]).all(axis=1)
                if not ok.all():
                    row = int(np.argmin(ok))
                    first_bad[i] = offset + row
                    bad_is_nan[i] = bool(np.isnan(z[row, start:stop]).any())
                finite &= ok
            z = z[finite]
            omitted = int((~finite).sum())
            mean = z.mean(axis=0) if len(z) else np.zeros(z.shape[1])
        z -= mean
        return cls(z, mean, sizes, first_bad, bad_is_nan, omitted)

    @cached_property
    def norms(self) -> np.ndarray:
        """(rows, layers): each row's squared norm within each layer."""
        z = self.z
        return np.stack([np.einsum("ij,ij->i", z[:, s], z[:, s]) for s in _slices(self.sizes)], 1)


def chunk_permutations(seed: int, offset: int, size: int, count: int) -> np.ndarray:
    """The ``count`` row permutations (``count`` x ``size``) of the row block at ``offset``.

    They depend only on ``seed`` and the block's first sample, not on the scheduler, so a
    permutation null is reproducible; ``offset + chunk_permutations(...)[k]`` are the
    permuted sample indices of permutation ``k`` in that block.

    Examples
    --------
    >>> perms = chunk_permutations(seed=0, offset=1000, size=5, count=2)
    >>> perms.shape, sorted(perms[0].tolist())
    ((2, 5), [0, 1, 2, 3, 4])
    >>> bool((perms == chunk_permutations(0, 1000, 5, 2)).all())
    True
    """
    rng = np.random.default_rng([seed, offset])
    return np.stack([rng.permutation(size) for _ in range(count)]).reshape(count, size)


@dataclass(frozen=True)
class Permuted:
    """Cross statistics of layers A against layers B whose rows are permuted within chunks.

    For K permutations P_k (each a product of within-chunk permutations) and centred v (A's
    features), w (B's features), r, s (their per-layer squared row norms), the fields are the
    sums over samples of ``v w_k^T``, ``r s_k^T``, ``r w_k^T`` and ``s_k v^T`` with
    ``w_k = P_k w``, ``s_k = P_k s``: exactly what :class:`Statistics` holds for the cross
    blocks of ``[A | P_k B]``. A and B's own statistics do not change under permutation,
    so only these are kept; they merge with the same pairwise update as the co-moment.
    """

    sizes_a: tuple[int, ...]
    sizes_b: tuple[int, ...]
    count: int
    mean_a: np.ndarray
    mean_b: np.ndarray
    #: sum of each layer's squared centred row norms: tr(M_ll)
    trace_a: np.ndarray
    trace_b: np.ndarray
    #: (K, Pa, Qb) sum_i v_i w_k,i^T
    cross: np.ndarray
    #: (K, La, Lb) sum_i r_i s_k,i^T
    norm_cross: np.ndarray
    #: (K, La, Qb) sum_i r_i w_k,i^T
    norm_ab: np.ndarray
    #: (K, Lb, Pa) sum_i s_k,i v_i^T
    norm_ba: np.ndarray

    @classmethod
    def from_centred(
        cls, c: _Centred, a: Sequence[int], b: Sequence[int], perms: np.ndarray
    ) -> Permuted:
        """Cross statistics of layers ``a`` against layers ``b`` with ``b``'s rows permuted."""
        slices = _slices(c.sizes)
        cols_a = np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in a])
        cols_b = np.concatenate([np.arange(slices[j].start, slices[j].stop) for j in b])
        pa, qb = len(cols_a), len(cols_b)
        r, s = c.norms[:, list(a)], c.norms[:, list(b)]
        # One product per permutation gives all four sums: [v | r]^T [w | s]_k. Both sides
        # row-major, so that gathering the permuted rows copies whole rows.
        left = np.empty((c.z.shape[0], pa + len(a)))
        left[:, :pa], left[:, pa:] = c.z[:, cols_a], r
        right = np.empty((c.z.shape[0], qb + len(b)))
        right[:, :qb], right[:, qb:] = c.z[:, cols_b], s
        k = len(perms)
        cross = np.empty((k, pa, qb))
        norm_cross = np.empty((k, len(a), len(b)))
        norm_ab = np.empty((k, len(a), qb))
        norm_ba = np.empty((k, len(b), pa))
        permuted = np.empty_like(right)
        for i, perm in enumerate(perms):
            np.take(right, perm, axis=0, out=permuted)
            full = left.T @ permuted
            cross[i], norm_ab[i] = full[:pa, :qb], full[pa:, :qb]
            norm_ba[i], norm_cross[i] = full[:pa, qb:].T, full[pa:, qb:]
        return cls(
            sizes_a=tuple(c.sizes[i] for i in a),
            sizes_b=tuple(c.sizes[j] for j in b),
            count=int(c.z.shape[0]),
            mean_a=c.mean[cols_a],
            mean_b=c.mean[cols_b],
            trace_a=r.sum(axis=0),
            trace_b=s.sum(axis=0),
            cross=cross,
            norm_cross=norm_cross,
            norm_ab=norm_ab,
            norm_ba=norm_ba,
        )

    @property
    def n_permutations(self) -> int:
        return self.cross.shape[0]

    def shift(self, delta_a: np.ndarray, delta_b: np.ndarray) -> Permuted:
        """The same statistics about ``mean - delta`` (:meth:`Statistics.shift`, cross blocks).

        With v' = v + da, w' = w + db, r'_l = r_l + 2 v_l . da_l + c_l and
        s'_m = s_m + 2 w_m . db_m + e_m (c, e the squared norms of da, db per layer), and
        sum_i v_i = sum_i w_i = 0, the sums of products expand to the updates below.
        """
        n = self.count
        sa, sb = _slices(self.sizes_a), _slices(self.sizes_b)
        c = np.array([delta_a[s] @ delta_a[s] for s in sa])
        e = np.array([delta_b[s] @ delta_b[s] for s in sb])
        cr, g, h = self.cross, self.norm_ab, self.norm_ba
        # u[k, l] = da_l^T C_k[s_l, :] ;  t[k, m] = C_k[:, s_m] db_m
        u = np.stack([np.einsum("p,kpq->kq", delta_a[s], cr[:, s, :]) for s in sa], axis=1)
        t = np.stack([np.einsum("kpq,q->kp", cr[:, :, s], delta_b[s]) for s in sb], axis=1)
        # G_k[l, s_m] . db_m ;  H_k[m, s_l] . da_l ;  da_l^T C_k[s_l, s_m] db_m
        gd = np.stack([g[:, :, s] @ delta_b[s] for s in sb], axis=2)
        hd = np.stack([h[:, :, s] @ delta_a[s] for s in sa], axis=1)
        dcd = np.stack([u[:, :, s] @ delta_b[s] for s in sb], axis=2)
        return Permuted(
            sizes_a=self.sizes_a,
            sizes_b=self.sizes_b,
            count=n,
            mean_a=self.mean_a - delta_a,
            mean_b=self.mean_b - delta_b,
            trace_a=self.trace_a + n * c,
            trace_b=self.trace_b + n * e,
            cross=cr + n * np.outer(delta_a, delta_b),
            norm_cross=self.norm_cross
            + 2 * gd
            + 2 * hd
            + 4 * dcd
            + np.outer(self.trace_a, e)
            + np.outer(c, self.trace_b)
            + n * np.outer(c, e),
            norm_ab=g + np.outer(self.trace_a + n * c, delta_b) + 2 * u,
            norm_ba=h + np.outer(self.trace_b + n * e, delta_a) + 2 * t,
        )

    @staticmethod
    def merge(a: Permuted, b: Permuted) -> Permuted:
        """Permuted cross statistics of the union of two disjoint sets of samples."""
        if a.count == 0 or b.count == 0:
            return b if a.count == 0 else a
        w = b.count / (a.count + b.count)
        mean_a = a.mean_a + (b.mean_a - a.mean_a) * w
        mean_b = a.mean_b + (b.mean_b - a.mean_b) * w
        x = a.shift(a.mean_a - mean_a, a.mean_b - mean_b)
        y = b.shift(b.mean_a - mean_a, b.mean_b - mean_b)
        return Permuted(
            sizes_a=a.sizes_a,
            sizes_b=a.sizes_b,
            count=a.count + b.count,
            mean_a=mean_a,
            mean_b=mean_b,
            trace_a=x.trace_a + y.trace_a,
            trace_b=x.trace_b + y.trace_b,
            cross=x.cross + y.cross,
            norm_cross=x.norm_cross + y.norm_cross,
            norm_ab=x.norm_ab + y.norm_ab,
            norm_ba=x.norm_ba + y.norm_ba,
        )


def _merge_all(*parts: Statistics) -> Statistics:
    out = parts[0]
    for part in parts[1:]:
        out = Statistics.merge(out, part)
    return out


def _chunk(offset: int, bounds: np.ndarray, null: tuple | None, pairs, *blocks: np.ndarray):
    """Statistics of one row block, one entry per sample group the block overlaps.

    ``pairs``: the layer pairs whose cross blocks are needed (``None``: all).

    With ``null = (a, b, k, seed)``, also the :class:`Permuted` cross statistics of layers
    ``a`` against layers ``b`` under ``k`` permutations of the block's rows.
    """
    out = {}
    stop_all = offset + blocks[0].shape[0]
    width = sum(int(np.prod(b.shape[1:])) for b in blocks)
    pieces = -(-8 * width * blocks[0].shape[0] // SUB_BLOCK_BYTES)  # equal pieces, each
    step = max(256, -(-blocks[0].shape[0] // max(1, pieces)))  # at most SUB_BLOCK_BYTES
    start = offset
    group = int(np.searchsorted(bounds, offset, side="right")) - 1
    while start < stop_all:
        stop = min(int(bounds[group + 1]), stop_all)
        out[group] = _merge_all(
            *(
                Statistics.from_chunk(
                    [b[sub - offset : min(sub + step, stop) - offset] for b in blocks], sub, pairs
                )
                for sub in range(start, stop, step)
            )
        )
        start, group = stop, group + 1
    if null is None:
        return out
    a, b, k, seed = null
    centred = _Centred.of(blocks, offset)
    perms = chunk_permutations(seed, offset, centred.z.shape[0], k)
    return out, Permuted.from_centred(centred, a, b, perms)


def _merge_groups(*parts: dict[int, Statistics]) -> dict[int, Statistics]:
    out: dict[int, Statistics] = {}
    for part in parts:
        for group, stats in part.items():
            out[group] = Statistics.merge(out[group], stats) if group in out else stats
    return out


def _merge_with_null(*parts: tuple[dict[int, Statistics], Permuted]):
    permuted = parts[0][1]
    for part in parts[1:]:
        permuted = Permuted.merge(permuted, part[1])
    return _merge_groups(*(part[0] for part in parts)), permuted


def _common_row_chunks(arrays: Sequence[da.Array]) -> tuple[int, ...]:
    """Row chunks that refine every array's own: each stored chunk is then read exactly once."""
    bounds = set()
    for a in arrays:
        bounds.update(np.cumsum((0,) + a.chunks[0]).tolist())
    return tuple(int(b) for b in np.diff(sorted(bounds)))


def row_block_reduction(
    layers: Sequence[Layer],
    chunk: Callable[..., Any],
    merge: Callable[..., Any],
    *,
    name: str,
    split_every: int = SPLIT_EVERY,
    args: tuple = (),
):
    """A Dask tree reduction over row blocks of all layers together, not yet computed.

    ``chunk(offset, *args, *blocks)`` runs once per row block (``blocks``: that block of every
    layer, full width) and ``merge(*parts)`` combines up to ``split_every`` results. Every
    chunk of every array is read once: the arrays are re-chunked (a graph operation, no extra
    read) to the common refinement of their row chunks and to full width.
    """
    counts = {layer.data.shape[0] for layer in layers}
    if len(counts) > 1:
        described = ", ".join(f"{layer.name} has {layer.data.shape[0]}" for layer in layers)
        raise ValueError(f"inputs have different numbers of samples: {described}")
    rows = _common_row_chunks([layer.data for layer in layers])
    blocks = [
        layer.data.rechunk({0: rows, 1: -1}).to_delayed(optimize_graph=False)[:, 0]
        for layer in layers
    ]
    token = tokenize(*(layer.data.name for layer in layers), split_every, name, args)
    offsets = np.cumsum((0,) + rows)[:-1]
    parts = [
        dask.delayed(chunk, pure=True)(
            int(off), *args, *(b[i] for b in blocks), dask_key_name=f"{name}-chunk-{token}-{i}"
        )
        for i, off in enumerate(offsets)
    ]
    level = 0
    while len(parts) > 1:
        parts = [
            dask.delayed(merge, pure=True)(
                *parts[i : i + split_every], dask_key_name=f"{name}-merge-{token}-{level}-{i}"
            )
            for i in range(0, len(parts), split_every)
        ]
        level += 1
    return parts[0]


def statistics_graph(
    layers: Sequence[Layer],
    *,
    split_every: int = SPLIT_EVERY,
    groups: int = 1,
    null: tuple | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
):
    """The tree reduction giving the :class:`Statistics` of ``layers``, not yet computed.

    The result is a dict ``{g: Statistics}`` of ``groups`` contiguous, near-equal ranges of
    samples (independent of the chunking); one group is the plain total. With ``null = (a, b,
    k, seed)`` it is a pair of that dict and the :class:`Permuted` statistics of layers ``a``
    against layers ``b`` under ``k`` within-chunk permutations. ``pairs`` limits the cross
    blocks computed to those layer pairs (:meth:`Statistics.from_centred`).
    """
    n = layers[0].data.shape[0]
    if not 1 <= groups <= n:
        raise ValueError(f"groups must be between 1 and the {n} samples, not {groups}")
    bounds = np.linspace(0, n, groups + 1).round().astype(np.int64)
    return row_block_reduction(
        layers,
        _chunk,
        _merge_groups if null is None else _merge_with_null,
        name="repsim",
        split_every=split_every,
        args=(bounds, null, None if pairs is None else tuple(sorted(map(tuple, pairs)))),
    )


def comoments(
    layers: Sequence[Layer], *, nan_policy: str = "raise", split_every: int = SPLIT_EVERY
) -> Statistics:
    """Compute the :class:`Statistics` of ``layers`` in one pass (on the active Dask scheduler).

    ``nan_policy="raise"`` raises ``ValueError`` naming the first sample with NaN or Inf;
    ``"omit"`` leaves such samples out of every layer and reports how many in ``.omitted``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> s = comoments([as_layer(x)])
    >>> s.count, np.allclose(s.comoment, np.cov(x.T) * 99)
    (100, True)
    """
    return grouped_comoments(layers, groups=1, nan_policy=nan_policy, split_every=split_every)[0]


def grouped_comoments(
    layers: Sequence[Layer],
    *,
    groups: int,
    nan_policy: str = "raise",
    split_every: int = SPLIT_EVERY,
) -> list[Statistics]:
    """The :class:`Statistics` of ``groups`` contiguous ranges of samples, from one pass.

    Merging them gives :func:`comoments`' total; leaving one out gives jackknife replicates.
    NaN/Inf are handled as in :func:`comoments`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> [s.count for s in grouped_comoments([as_layer(x)], groups=3)]
    [33, 34, 33]
    """
    return one_pass(layers, groups=groups, nan_policy=nan_policy, split_every=split_every)[0]


def one_pass(
    layers: Sequence[Layer],
    *,
    groups: int = 1,
    nan_policy: str = "raise",
    null: tuple[Sequence[int], Sequence[int], int, int] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    split_every: int = SPLIT_EVERY,
) -> tuple[list[Statistics], Permuted | None]:
    """Group statistics and, with ``null = (a, b, k, seed)``, a permutation null, in one pass.

    Returns the :class:`Statistics` of ``groups`` contiguous ranges of samples and the
    :class:`Permuted` cross statistics of layers ``a`` against layers ``b`` (indices into
    ``layers``) under ``k`` random within-chunk permutations (``None`` without ``null``).
    ``pairs``: only these layer pairs' cross blocks are computed (default: all).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> layers = [as_layer(rng.normal(size=(60, 3)), name="x"), as_layer(rng.normal(size=(60, 2)))]
    >>> parts, permuted = one_pass(layers, groups=3, null=([0], [1], 4, 0))
    >>> [s.count for s in parts], permuted.cross.shape
    ([20, 20, 20], (4, 3, 2))
    """
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', not {nan_policy!r}")
    graph = statistics_graph(
        layers, split_every=split_every, groups=groups, null=null, pairs=pairs
    )
    (result,) = compute(graph)
    parts, permuted = result if null is not None else (result, None)
    parts = [parts[g] for g in sorted(parts)]
    stats = _merge_all(*parts)
    if nan_policy == "raise" and (stats.first_nonfinite >= 0).any():
        bad = [
            (int(stats.first_nonfinite[i]), "NaN" if stats.nonfinite_is_nan[i] else "Inf", layer)
            for i, layer in enumerate(layers)
            if stats.first_nonfinite[i] >= 0
        ]
        index, kind, layer = min(bad, key=lambda t: t[0])
        raise ValueError(
            f"{layer.name} has {kind} at sample {index} (the first non-finite sample); "
            "pass nan_policy='omit' to leave such samples out of both inputs"
        )
    if stats.count == 0:
        raise ValueError(f"no samples left: all {stats.omitted} have NaN or Inf")
    if stats.omitted:
        warnings.warn(
            f"left out {stats.omitted} of {stats.count + stats.omitted} samples that have NaN or "
            "Inf in some input (nan_policy='omit')",
            RepsimWarning,
            stacklevel=4,
        )
    return parts, permuted


# Units whose standard deviation is below this fraction of their |mean| are constant (dead); their
# residual variance is rounding error from the chunk means, not signal.
CONSTANT_RTOL = 1e-9
# After standardising units, directions whose variance is below this fraction of the largest are
# treated as exact collinearity (duplicated units, float32 rounding of linear combinations).
RANK_RTOL = 1e-10


@dataclass(frozen=True)
class Whitener:
    """A basis W (p x r) of a layer's non-degenerate directions with W^T M W = I."""

    basis: np.ndarray
    #: indices of the units that are not constant
    kept: np.ndarray
    n_constant: int


@dataclass(eq=False)
class Side:
    """One layer's marginal statistics, with the decompositions measures share (computed once)."""

    name: str
    count: int
    mean: np.ndarray
    comoment: np.ndarray

    @property
    def n_features(self) -> int:
        return self.comoment.shape[0]

    @cached_property
    def spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (descending, >= 0) and eigenvectors of the co-moment matrix.

        The eigenvalues are the squared singular values of the centred data, the eigenvectors
        its right singular vectors.
        """
        values, vectors = np.linalg.eigh(self.comoment)
        return np.clip(values[::-1], 0, None), vectors[:, ::-1]

    @cached_property
    def constant(self) -> np.ndarray:
        """Mask of the units that do not vary over the samples (dead units)."""
        std = np.sqrt(np.clip(np.diagonal(self.comoment), 0, None) / self.count)
        return (std <= CONSTANT_RTOL * np.abs(self.mean)) | (std == 0)

    def require_variance(self) -> None:
        """Raise ``ValueError`` when every unit of this layer is constant."""
        if self.constant.all():
            raise ValueError(
                f"{self.name} has no variance: all {self.n_features} units are constant over "
                f"the {self.count} samples"
            )

    @cached_property
    def varying(self) -> np.ndarray:
        """Indices of the units CCA-family measures use; warns (once) about the constant ones."""
        self.require_variance()
        kept = np.flatnonzero(~self.constant)
        if kept.size < self.n_features:
            warnings.warn(
                f"{self.name}: {self.n_features - kept.size} of {self.n_features} units are "
                "constant over the samples and are left out of CCA-family measures",
                RepsimWarning,
                stacklevel=5,
            )
        return kept

    @cached_property
    def whitener(self) -> Whitener:
        """Whitening basis after dropping constant units and exactly collinear directions."""
        kept, constant = self.varying, self.constant
        var = np.diagonal(self.comoment)
        scale = np.sqrt(var[kept])
        corr = self.comoment[np.ix_(kept, kept)] / np.outer(scale, scale)
        values, vectors = np.linalg.eigh(corr)
        good = values > RANK_RTOL * values[-1]
        basis = np.zeros((self.n_features, int(good.sum())))
        basis[kept] = vectors[:, good][:, ::-1] / np.sqrt(values[good][::-1]) / scale[:, None]
        return Whitener(basis, kept, int(constant.sum()))


@dataclass(eq=False)
class Pair:
    """The statistics of two layers x and y that every pairwise measure is a function of."""

    x: Side
    y: Side
    #: cross co-moment M_xy (p x q)
    cross: np.ndarray
    #: sum_i r_xi r_yi, sum_i r_xi^2, sum_i r_yi^2 (centred squared row norms; debiased CKA)
    norm_xy: float
    norm_xx: float
    norm_yy: float
    #: decompositions several measures share, computed by the first that needs them
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return self.x.count


def sides(stats: Statistics, names: Sequence[str]) -> list[Side]:
    """One :class:`Side` per layer of ``stats``."""
    return [
        Side(name, stats.count, stats.mean[s], stats.comoment[s, s])
        for name, s in zip(names, stats.slices, strict=True)
    ]


def pair(stats: Statistics, layer_sides: Sequence[Side], a: int, b: int) -> Pair:
    """The :class:`Pair` of layers ``a`` and ``b`` of ``stats``."""
    if not stats.has_pair(a, b):
        raise ValueError(f"the statistics hold no cross block of layers {a} and {b}")
    sa, sb = stats.slices[a], stats.slices[b]
    g = stats.norm_product
    return Pair(layer_sides[a], layer_sides[b], stats.comoment[sa, sb], g[a, b], g[a, a], g[b, b])


def permuted_pairs(
    stats: Statistics,
    layer_sides: Sequence[Side],
    permuted: Permuted,
    a: int,
    b: int,
    ia: int,
    jb: int,
) -> list[Pair]:
    """The :class:`Pair` of layers ``a`` and ``b`` of ``stats`` under each permutation.

    ``ia``, ``jb``: the positions of ``a`` among the permuted statistics' A layers and of
    ``b`` among its B layers.
    """
    sa, sb = _slices(permuted.sizes_a)[ia], _slices(permuted.sizes_b)[jb]
    g = stats.norm_product
    return [
        Pair(layer_sides[a], layer_sides[b], cross[sa, sb], float(nc[ia, jb]), g[a, a], g[b, b])
        for cross, nc in zip(permuted.cross, permuted.norm_cross, strict=True)
    ]
