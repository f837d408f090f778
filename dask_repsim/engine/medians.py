"""The median squared distance between samples, exactly from row blocks or from a subsample.

RBF CKA (:func:`dask_repsim.paths.gram.pairwise.rbf_cka`) sets each layer's bandwidth to a fraction
of the
median of all n^2 squared distances between its samples, the zero diagonal included (``gram_rbf``
of Kornblith et al. 2019). :func:`exact_median_sq_distance` finds it without holding the n x n
matrix: histograms of the row blocks' squared distances narrow the two middle order statistics
down, then their candidates are gathered and sorted. Beyond some n,
:func:`sampled_median_sq_distance` takes it over a seeded random subset of samples.
"""

from __future__ import annotations

import dask
import numpy as np

from ..io.inputs import Layer
from .columns import centred, checked_columns, default_block_rows, row_blocks
from .parallel import compute

#: Samples drawn (seeded) for the median when n exceeds the exact limit of ``rbf_cka``.
MEDIAN_SAMPLE = 4_000
# Histogram bins per pass of the exact median, and how many candidate values may be gathered
# on the client once the bins have narrowed the median down.
_MEDIAN_BINS = 2**16
_MEDIAN_GATHER = 2**24


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


def _block_distances(i: int, j: int, xi: np.ndarray, xj: np.ndarray, mx: np.ndarray):
    same = i == j
    a = centred(xi, mx)
    return sq_distances(a, a if same else centred(xj, mx), same).ravel(), 1 if same else 2


def _block_histogram(i, j, xi, xj, mx, lo, hi, bins):
    d2, w = _block_distances(i, j, xi, xj, mx)
    inside = d2[(d2 >= lo) & (d2 < hi)]
    idx = np.minimum(((inside - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    return np.bincount(idx, minlength=bins).astype(np.int64) * w


def _block_gather(i, j, xi, xj, mx, lo, hi):
    d2, w = _block_distances(i, j, xi, xj, mx)
    return w * int(np.count_nonzero(d2 < lo)), d2[(d2 >= lo) & (d2 < hi)], w


def _over_blocks(func, bx: list, *args) -> tuple:
    """``func(i, j, bx[i], bx[j], *args)`` for the row-block pairs ``i <= j``, computed."""
    return compute(
        *(
            dask.delayed(func, pure=True)(i, j, bx[i], bx[j], *args)
            for i in range(len(bx))
            for j in range(i, len(bx))
        )
    )


def _narrow(bx: list, mx: np.ndarray, hi: float, k1: int, k2: int) -> tuple[float, float]:
    """A range ``[lo, hi)`` holding the k1-th and k2-th smallest squared distances and few
    others, from histograms of the blocks."""
    lo, below = 0.0, 0
    while True:
        counts = np.sum(_over_blocks(_block_histogram, bx, mx, lo, hi, _MEDIAN_BINS), axis=0)
        cum = below + np.cumsum(counts)
        b1 = int(np.searchsorted(cum, k1, side="right"))
        b2 = int(np.searchsorted(cum, k2, side="right"))
        width = (hi - lo) / _MEDIAN_BINS
        new_lo, new_hi = lo + b1 * width, lo + (b2 + 1) * width
        new_below = below + (int(cum[b1 - 1] - below) if b1 > 0 else 0)
        span = int(cum[b2] - (cum[b1 - 1] if b1 > 0 else below))
        if span <= _MEDIAN_GATHER or new_hi - new_lo <= 4 * np.spacing(new_hi):
            # widen by a bin on each side: a value on a bin edge may round into either neighbour
            return max(0.0, new_lo - width), new_hi + width
        lo, hi, below = new_lo, new_hi, new_below


def exact_median_sq_distance(
    layer: Layer, *, block_rows: int | None = None, mean: np.ndarray | None = None
) -> float:
    """Median of all n^2 squared distances between samples, zero diagonal included, exactly.

    ``numpy.median`` of ``gram_rbf``'s distance matrix gives the same number (Kornblith et
    al.'s convention). ``mean``: the layer's column means (from
    :func:`~dask_repsim.engine.columns.checked_columns`); without them, the layer is checked here.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    >>> bool(np.isclose(exact_median_sq_distance(as_layer(x), block_rows=64), np.median(d2)))
    True
    """
    n = int(layer.data.shape[0])
    rows = block_rows or default_block_rows(n, layer.data.shape[1])
    mx = checked_columns([layer])[0].mean if mean is None else mean
    bx = row_blocks(layer, rows)
    k1, k2 = (n * n - 1) // 2, n * n // 2  # numpy's middle pair (equal when n^2 is odd)
    # D^2_ij <= 2 |x_i|^2 + 2 |x_j|^2 for centred rows: an upper bound on every distance
    norms = ((layer.data.astype(np.float64) - mx) ** 2).sum(axis=1)
    hi = 4.0 * float(compute(norms.max())[0]) * (1 + 1e-12) + 1e-300
    lo, hi = _narrow(bx, mx, hi, k1, k2)
    parts = _over_blocks(_block_gather, bx, mx, lo, hi)
    start = sum(p[0] for p in parts)
    values = np.concatenate([p[1] for p in parts])
    weights = np.concatenate([np.full(len(p[1]), p[2], dtype=np.int64) for p in parts])
    order = np.argsort(values, kind="stable")
    values, cum = values[order], start + np.cumsum(weights[order])
    if not (start <= k1 and cum[-1] > k2):  # pragma: no cover (guards the bin arithmetic)
        raise RuntimeError("median search lost the middle order statistics")
    v1 = values[np.searchsorted(cum, k1, side="right")]
    v2 = values[np.searchsorted(cum, k2, side="right")]
    return float((v1 + v2) / 2)


def sampled_median_sq_distance(
    layer: Layer, *, size: int = MEDIAN_SAMPLE, seed: int = 0, mean: np.ndarray | None = None
) -> float:
    """Median squared distance among a seeded random subset of ``size`` samples.

    The same rule as :func:`exact_median_sq_distance` (all ``size^2`` pairs of the subset, zero
    diagonal included) on samples drawn without replacement with ``numpy.random.default_rng
    (seed)``. ``mean`` centres the rows (distances do not depend on it; rounding does).

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
