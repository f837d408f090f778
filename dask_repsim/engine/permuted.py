"""Permutation nulls from the same pass: cross statistics of layers against permuted layers.

Under "x and y are unrelated", pairing sample i of x with any sample of y is as likely as with
sample i. The pass computes, besides the statistics of the data, the cross statistics of layers
A against K random row permutations of layers B (:class:`Permuted`; each side's own statistics
do not change under permutation), and each measure is recomputed from each permuted cross block.

Exchangeability assumption: samples are permuted **within blocks of**
:data:`PERMUTATION_BLOCK` **consecutive samples** (samples 0 .. B-1, B .. 2B-1, ...; the last
block may be shorter). The test assumes that under the null any order of the samples within
such a block is as likely as the stored one, which holds when the stored order is random or
unrelated to the activations. When samples are stored in a meaningful order (by class, by
time, consecutive crops of one image), the within-block null is too narrow; write the data in
a shuffled order first.

The blocks depend only on the number of samples, and the permutations of a block only on the
seed and the block's first sample (:func:`block_permutations`), so the null of a pair of
layers is the same whatever the storage chunking and whichever other layers share the pass.
A pass with permutations reads the data in row blocks whose boundaries are multiples of B
(every stored chunk is still read once) and permutes each block separately, so a task holds at
most one permutation block of the permuted layers at a time.

A null kept by sample group (the cross-validated measures' folds, ``null_groups=`` of a pass)
permutes within the cells of the blocks cut at the groups' bounds (:func:`permutation_cells`),
so that every group keeps its samples of each layer, and keeps each group's cross statistics
apart (:func:`merge_null`).

Samples left out for NaN or Inf (``nan_policy="omit"``) are left out of the permutation too: the
rows kept in a block are paired in the order the block's permutation visits them
(:func:`restrict_permutations`), which is a uniformly random pairing of the kept rows and,
when every row is kept, the block's permutation itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .moments import Centred, column_slices, layer_columns

#: Samples are permuted within blocks of this many consecutive samples (see the module notes).
PERMUTATION_BLOCK = 2048


def block_permutations(seed: int, start: int, size: int, count: int) -> np.ndarray:
    """The ``count`` row permutations (``count`` x ``size``) of the block at sample ``start``.

    They depend only on ``seed`` and the block's first sample, not on the scheduler or the
    chunking, so a permutation null is reproducible; ``start + block_permutations(...)[k]``
    are the sample indices of layers B paired with samples ``start, start + 1, ...`` of
    layers A in permutation ``k``.

    Examples
    --------
    >>> perms = block_permutations(seed=0, start=4096, size=5, count=2)
    >>> perms.shape, sorted(perms[0].tolist())
    ((2, 5), [0, 1, 2, 3, 4])
    >>> bool((perms == block_permutations(0, 4096, 5, 2)).all())
    True
    """
    stream = permutation_stream(seed, start, size)
    return np.stack([next(stream) for _ in range(count)]).reshape(count, size)


def permutation_stream(seed: int, start: int, size: int) -> Iterator[np.ndarray]:
    """The row permutations of the block at sample ``start``, one after another: the k-th is
    ``block_permutations(seed, start, size, count)[k]`` for any ``count`` > k, without holding
    the others (a pass over thousands of permutations holds one at a time)."""
    rng = np.random.default_rng([seed, start])
    while True:
        yield rng.permutation(size)


def permutation_series(n: int, seed: int, count: int,
                       block: int | None = None) -> Iterator[np.ndarray]:
    """The rows of :func:`sample_permutations` one at a time (n indices each): what a pass
    over ``count`` permutations of many samples uses, holding one permutation at a time.

    Examples
    --------
    >>> together = sample_permutations(10, seed=1, count=3, block=4)
    >>> bool(all((a == b).all() for a, b in zip(permutation_series(10, 1, 3, 4), together)))
    True
    """
    block = PERMUTATION_BLOCK if block is None else block
    streams = [(a, permutation_stream(seed, a, b - a)) for a, b in permutation_blocks(0, n, block)]
    for _ in range(count):
        yield np.concatenate([a + next(s) for a, s in streams]) if streams else \
            np.empty(0, np.int64)


def permutation_blocks(start: int, stop: int, block: int) -> Iterator[tuple[int, int]]:
    """The (first, stop) samples of the permutation blocks of samples ``start`` to ``stop``.

    ``start`` must be a multiple of ``block`` (row blocks of a pass with permutations are).

    Examples
    --------
    >>> list(permutation_blocks(8, 19, 4))
    [(8, 12), (12, 16), (16, 19)]
    """
    for first in range(start, stop, block):
        yield first, min(first + block, stop)


def permutation_cells(start: int, stop: int, block: int,
                      bounds: Sequence[int] | None = None) -> Iterator[tuple[int, int, int]]:
    """(first, stop, group) of the cells samples ``start`` to ``stop`` are permuted within:
    the permutation blocks (:func:`permutation_blocks`), each cut at the sample groups'
    ``bounds`` (first sample of each group, the sample count last) when given, so that no
    sample is paired with one of another group; ``group``: the cell's group (0 without
    ``bounds``). A cell's permutations are those of a block at its first sample
    (:func:`block_permutations`).

    Examples
    --------
    >>> list(permutation_cells(0, 10, 4, bounds=(0, 5, 10)))
    [(0, 4, 0), (4, 5, 0), (5, 8, 1), (8, 10, 1)]
    """
    for first, end in permutation_blocks(start, stop, block):
        if bounds is None:
            yield first, end, 0
            continue
        group = int(np.searchsorted(bounds, first, side="right")) - 1
        while first < end:
            cut = min(end, int(bounds[group + 1]))
            yield first, cut, group
            first, group = cut, group + 1


def merge_null(a: Permuted | dict[int, Permuted] | None,
               b: Permuted | dict[int, Permuted] | None) -> Permuted | dict | None:
    """Two ranges' permuted statistics merged (:meth:`Permuted.merge`): of the whole range, or
    of each sample group (``{group: Permuted}``) when the null is kept by group."""
    if isinstance(a, dict) or isinstance(b, dict):
        out = dict(a or {})
        for group, part in (b or {}).items():
            out[group] = Permuted.merge(out.get(group), part)
        return out
    return Permuted.merge(a, b)


def sample_permutations(n: int, seed: int, count: int, block: int | None = None) -> np.ndarray:
    """(``count``, n) sample indices of layers B paired with samples 0 .. n-1 of layers A.

    What a pass over ``n`` finite samples uses: :func:`block_permutations` of each block of
    ``block`` (default :data:`PERMUTATION_BLOCK`) consecutive samples, side by side.

    Examples
    --------
    >>> p = sample_permutations(10, seed=1, count=3, block=4)
    >>> sorted(p[0, 4:8].tolist())
    [4, 5, 6, 7]
    """
    block = PERMUTATION_BLOCK if block is None else block
    return np.concatenate(
        [a + block_permutations(seed, a, b - a, count) for a, b in permutation_blocks(0, n, block)],
        axis=1,
    ).reshape(count, n)


def restrict_permutations(perms: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The permutations of a block restricted to its kept rows, as indices among those rows.

    The i-th kept row is paired with the i-th kept row the permutation visits. With every
    row kept this is ``perms`` itself.

    Examples
    --------
    >>> perms = np.array([[2, 0, 3, 1]])
    >>> restrict_permutations(perms, np.array([True, False, True, True])).tolist()
    [[1, 0, 2]]
    """
    if keep.all():
        return perms
    rank = np.cumsum(keep) - 1
    return np.stack([rank[p[keep[p]]] for p in perms]).reshape(len(perms), int(keep.sum()))


@dataclass(frozen=True)
class Permuted:
    """Cross statistics of layers A against layers B whose rows are permuted within blocks.

    For K permutations P_k and centred v (A's features), w (B's features), r, s (their
    per-layer squared row norms), the fields are the sums over samples of ``v w_k^T``,
    ``r s_k^T``, ``r w_k^T`` and ``s_k v^T`` with ``w_k = P_k w``, ``s_k = P_k s``: exactly what
    :class:`~dask_repsim.engine.moments.Statistics` holds for the cross blocks of ``[A | P_k B]``.
    A and
    B's own statistics do not change under permutation, so only these are kept; they merge
    with the same pairwise update as the co-moment.
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
        cls, c: Centred, a: Sequence[int], b: Sequence[int], perms: np.ndarray
    ) -> Permuted:
        """Cross statistics of layers ``a`` against layers ``b`` with ``b``'s rows permuted.

        ``perms`` (K x rows of ``c``): row ``perms[k, i]`` of ``b`` is paired with row ``i``.
        """
        cols_a, cols_b = layer_columns(c.sizes, a), layer_columns(c.sizes, b)
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
        sa, sb = column_slices(self.sizes_a), column_slices(self.sizes_b)
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
    def merge(a: Permuted | None, b: Permuted | None) -> Permuted | None:
        """Permuted cross statistics of the union of two disjoint sets of samples."""
        if a is None or b is None:
            return b if a is None else a
        if a.count == 0 or b.count == 0:
            return b if a.count == 0 else a
        w = b.count / (a.count + b.count)
        mean_a = a.mean_a + (b.mean_a - a.mean_a) * w
        mean_b = a.mean_b + (b.mean_b - a.mean_b) * w
        x = a.shift(a.mean_a - mean_a, a.mean_b - mean_b)
        y = b.shift(b.mean_a - mean_a, b.mean_b - mean_b)
        cross = x.cross  # the shift's own new array: summed in place, one copy fewer
        cross += y.cross
        return Permuted(
            sizes_a=a.sizes_a,
            sizes_b=a.sizes_b,
            count=a.count + b.count,
            mean_a=mean_a,
            mean_b=mean_b,
            trace_a=x.trace_a + y.trace_a,
            trace_b=x.trace_b + y.trace_b,
            cross=cross,
            norm_cross=x.norm_cross + y.norm_cross,
            norm_ab=x.norm_ab + y.norm_ab,
            norm_ba=x.norm_ba + y.norm_ba,
        )

    def select(self, a: Sequence[int], b: Sequence[int]) -> Permuted:
        """The statistics of A layers ``a`` against B layers ``b`` (positions among each side).

        Examples
        --------
        >>> import numpy as np
        >>> blocks = [np.random.default_rng(0).normal(size=(8, p)) for p in (2, 3, 1)]
        >>> perms = block_permutations(0, 0, 8, 2)
        >>> full = Permuted.from_centred(Centred.of(blocks, 0), [0, 1], [2, 1], perms)
        >>> part = Permuted.from_centred(Centred.of(blocks, 0), [1], [1], perms)
        >>> bool(np.allclose(full.select([1], [1]).cross, part.cross))
        True
        """
        ca, cb = layer_columns(self.sizes_a, a), layer_columns(self.sizes_b, b)
        ia, jb = list(a), list(b)
        return Permuted(
            sizes_a=tuple(self.sizes_a[i] for i in ia),
            sizes_b=tuple(self.sizes_b[j] for j in jb),
            count=self.count,
            mean_a=self.mean_a[ca],
            mean_b=self.mean_b[cb],
            trace_a=self.trace_a[ia],
            trace_b=self.trace_b[jb],
            cross=self.cross[:, ca][:, :, cb],
            norm_cross=self.norm_cross[:, ia][:, :, jb],
            norm_ab=self.norm_ab[:, ia][:, :, cb],
            norm_ba=self.norm_ba[:, jb][:, :, ca],
        )


#: the name this module's function had when permutations were drawn per stored chunk
chunk_permutations = block_permutations
