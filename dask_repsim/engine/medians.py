"""Squared distances between rows, and the median squared distance over a seeded subsample.

RBF CKA sets each layer's bandwidth to a fraction of the median of all n^2 squared distances
between its samples, the zero diagonal included (``gram_rbf`` of Kornblith et al. 2019). The
gram path finds it exactly over its squared-distance tiles
(:func:`dask_repsim.paths.gram.scratch.medians`), up to :data:`MEDIAN_EXACT_MAX` samples; beyond,
:func:`sampled_median_sq_distance` takes it over a seeded random subset of samples.
:func:`sq_distances` is the squared-distance block that minibatch RBF kernels and RSA's
Euclidean RDMs are made of.

Exact medians of values spread over tiles: non-negative float64 numbers sort like their bit
patterns read as unsigned integers, so passes over the tiles count the values by bit prefix
(:func:`prefix_counts`): 15 bits (sign, exponent and 4 bits of mantissa) in the first pass, 16
more bits per further pass, until the two middle order statistics lie in a range (:class:`Range`)
holding at most :data:`GATHER` values, which are gathered (:func:`in_range`) and sorted. Every
step is exact: the result is ``numpy.median`` of the whole matrix. The gram path narrows over
tiles kept on scratch disk (:mod:`dask_repsim.paths.gram.scratch`), the ``sample_blocks`` path
over tiles formed again in each pass (:func:`dask_repsim.paths.sample_blocks.distances.
laplace_medians`).
"""

from __future__ import annotations

import numpy as np

from ..io.inputs import Layer
from .parallel import compute

#: Largest n for which each layer's median squared distance (RBF and Laplace CKA's bandwidths)
#: is exact, over all n^2 pairs; beyond, it is taken over a seeded subset of
#: :data:`MEDIAN_SAMPLE` samples and the results say so.
MEDIAN_EXACT_MAX = 20_000
#: Samples drawn (seeded) for the median when n exceeds :data:`MEDIAN_EXACT_MAX`.
MEDIAN_SAMPLE = 4_000
#: values gathered on the client once the middle order statistics are narrowed down
GATHER = 2**18
_TOP_SHIFT = 48  # keys >> 48: sign bit, 11 exponent bits, 4 mantissa bits
_STEP = 16
#: values an elementwise pass over an n x n matrix handles at a time: its temporaries stay in
#: cache, where whole-matrix ones would map fresh pages for every matrix
PIECE = 2**17


def keys(d2: np.ndarray) -> np.ndarray:
    """The order-preserving integer keys of non-negative float64 values.

    Examples
    --------
    >>> k = keys(np.array([0.0, 1e-300, 0.5, 2.0, 1e300]))
    >>> bool(np.all(np.diff(k.astype(np.float64)) > 0))
    True
    """
    return np.ascontiguousarray(d2, dtype=np.float64).view(np.uint64)


def prefix_counts(d2: np.ndarray, weight: int, lo: int, hi: int, shift: int) -> np.ndarray:
    """Weighted counts of the values with keys in ``[lo, hi)`` by key prefix ``key >> shift``,
    bin 0 being ``lo >> shift``."""
    flat = keys(d2).ravel()
    size = int(((hi - 1) >> shift) - (lo >> shift)) + 1
    counts = np.zeros(size, np.int64)
    for start in range(0, len(flat), PIECE):
        k = flat[start:start + PIECE]
        k = k[(k >= lo) & (k < hi)] if lo > 0 or hi < 2**63 else k
        idx = (k >> np.uint64(shift)) - np.uint64(lo >> shift)  # in [0, size)
        # [:size]: only a NaN with its sign bit set falls beyond (from non-finite data, which
        # the grid reports as an error before it uses a histogram)
        counts += np.bincount(idx.view(np.int64), minlength=size)[:size]
    return counts * weight


def top_counts(d2: np.ndarray, weight: int) -> np.ndarray:
    """The first pass's histogram: counts of every non-negative float64 by its top 15 bits."""
    return prefix_counts(d2, weight, 0, 2**63, _TOP_SHIFT)


class Range:
    """Where a layer's two middle order statistics are known to lie: keys in ``[lo, hi)``,
    ``below`` values (weighted) smaller than ``lo``."""

    def __init__(self, n: int) -> None:
        self.k1, self.k2 = (n * n - 1) // 2, n * n // 2  # numpy's middle pair
        self.lo, self.hi, self.below, self.shift = 0, 2**63, 0, _TOP_SHIFT
        self.count = n * n

    def narrow(self, counts: np.ndarray) -> None:
        """Keep the bins holding the middle pair; the next pass counts 16 bits further."""
        cum = self.below + np.cumsum(counts)
        b1 = int(np.searchsorted(cum, self.k1, side="right"))
        b2 = int(np.searchsorted(cum, self.k2, side="right"))
        base = self.lo >> self.shift
        below = self.below + (int(cum[b1 - 1] - self.below) if b1 > 0 else 0)
        self.count = int(cum[b2]) - below
        self.lo, self.hi = (base + b1) << self.shift, (base + b2 + 1) << self.shift
        self.below = below
        self.shift = max(0, self.shift - _STEP)

    @property
    def gather(self) -> bool:
        """Whether few enough values are left to gather them."""
        return self.count <= GATHER or self.shift == 0

    def median(self, values: np.ndarray, weights: np.ndarray) -> float:
        """The median from the gathered values in ``[lo, hi)`` and their weights."""
        order = np.argsort(values, kind="stable")
        cum = self.below + np.cumsum(weights[order])
        v1 = values[order][np.searchsorted(cum, self.k1, side="right")]
        v2 = values[order][np.searchsorted(cum, self.k2, side="right")]
        return float((v1 + v2) / 2)


def in_range(d2: np.ndarray, weight: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The values with keys in ``[lo, hi)`` and their weights."""
    k = keys(d2).ravel()
    values = d2.ravel()[(k >= lo) & (k < hi)]
    return values, np.full(len(values), weight, dtype=np.int64)


def whole_median(d2: np.ndarray) -> float:
    """The exact median of a layer's whole n x n squared distances held in memory: the
    narrowing of :func:`medians` over its one tile, with no file written or read.

    Examples
    --------
    >>> d2 = np.random.default_rng(0).random((300, 300)) ** 3
    >>> bool(whole_median(d2) == np.median(d2))
    True
    """
    r = Range(len(d2))
    r.narrow(top_counts(d2, 1))
    while not r.gather:
        r.narrow(prefix_counts(d2, 1, r.lo, r.hi, r.shift))
    return r.median(*in_range(d2, 1, r.lo, r.hi))


def sq_distances(a: np.ndarray, b: np.ndarray, same: bool) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (centred data).

    ``same``: ``a`` and ``b`` are the same rows, whose diagonal is set to exactly zero.

    Examples
    --------
    >>> a = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> sq_distances(a, a, True).tolist()
    [[0.0, 25.0], [25.0, 0.0]]
    """
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :]
    d2 -= 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    if same:
        np.fill_diagonal(d2, 0.0)  # exactly, as the distance of a sample to itself
    return d2


def sampled_median_sq_distance(
    layer: Layer, *, size: int = MEDIAN_SAMPLE, seed: int = 0, mean: np.ndarray | None = None
) -> float:
    """Median squared distance among a seeded random subset of ``size`` samples.

    The rule of ``gram_rbf`` (all ``size^2`` pairs of the subset, zero diagonal included, as
    ``numpy.median`` of their distance matrix) on samples drawn without replacement with
    ``numpy.random.default_rng(seed)``. ``mean`` centres the rows (distances do not depend on
    it; rounding does); without it, the subset's own means.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(5000, 2))
    >>> med = sampled_median_sq_distance(as_layer(x), size=1000, seed=0)
    >>> bool(abs(med - 4 * np.log(2)) < 0.1)  # population: twice the median of chi2(2)
    True
    """
    n = int(layer.data.shape[0])
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    rows = np.asarray(compute(layer.data[idx])[0], dtype=np.float64)
    rows -= rows.mean(axis=0) if mean is None else mean
    return float(np.median(sq_distances(rows, rows, True)))
