"""Squared distances between rows, and the median squared distance over a seeded subsample.

RBF CKA sets each layer's bandwidth to a fraction of the median of all n^2 squared distances
between its samples, the zero diagonal included (``gram_rbf`` of Kornblith et al. 2019). The
gram path finds it exactly over its squared-distance tiles
(:func:`dask_repsim.paths.gram.scratch.medians`), up to
:data:`~dask_repsim.paths.gram.samplespace.MEDIAN_EXACT_MAX` samples; beyond,
:func:`sampled_median_sq_distance` takes it over a seeded random subset of samples.
:func:`sq_distances` is the squared-distance block that minibatch RBF kernels and RSA's
Euclidean RDMs are made of.
"""

from __future__ import annotations

import numpy as np

from ..io.inputs import Layer
from .parallel import compute

#: Samples drawn (seeded) for the median when n exceeds the exact limit of the gram path.
MEDIAN_SAMPLE = 4_000


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
