"""Public pairwise functions of alignment after a rotation or a permutation: orthogonal
Procrustes similarity, the generalized shape metric, the permutation metric and the Bures
distance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..options import Options, SampleDims, document
from ..results import Estimate
from ..runners import measure_estimate, pair_estimate
from .samples import run_sample_space, sample_space_documented


@document
def procrustes(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Orthogonal Procrustes similarity ``||X_c^T Y_c||_* / (||X_c||_F ||Y_c||_F)``.

    One minus half the squared Procrustes distance between the centred, Frobenius-normalised
    activations, after the best rotation of one onto the other (Kornblith et al. 2019,
    Table 1). In [0, 1]; invariant to orthogonal transforms and isotropic scaling.

    Parameters
    ----------
    {inputs}
    {uncertainty}
    method
        ``"auto"`` or ``"covariance"`` (the co-moments, the only path that computes it).

    Returns
    -------
    {returns}

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 6))
    >>> q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    >>> round(procrustes(x, 2 * x @ q), 6)
    1.0
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                       nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                       permutations=permutations, seed=seed)
    return pair_estimate("procrustes", x, y, options, method=method, join=join)


@document
def shape_metric(
    x: Any, y: Any, *, alpha: float = 1.0, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Generalized shape metric (Williams, Kunz, Kornblith & Linderman 2021): an angular
    distance, 0 for the same representation up to the allowed transforms.

    Parameters
    ----------
    {inputs}
    alpha
        Partial whitening, in [0, 1]: each side's centred activations are multiplied by
        ``V diag(alpha + (1 - alpha) lambda^-1/2) V^T`` (eigendecomposition of
        ``X_c^T X_c``, eigenvalues clipped at 1e-7 as in netrep). ``1`` (default) allows only
        rotations (the angular Procrustes distance, ``arccos`` of :func:`procrustes`); ``0``
        allows any invertible linear map (a CCA distance); values between interpolate.
    {uncertainty}
        Permutation p-values count the null values at or *below* the observed distance.
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    {returns}
        In [0, pi/2]; a true metric (symmetric, triangle inequality).

    Notes
    -----
    With the partially whitened ``X~`` and ``Y~`` (the narrower zero-padded), the distance
    after the best rotation is ``arccos(||X~^T Y~||_* / (||X~||_F ||Y~||_F))``, computed from
    co-moments. netrep's ``LinearMetric(alpha, score_method="angular")`` defines the same
    quantity.

    References
    ----------
    Williams, Kunz, Kornblith, Linderman (2021). Generalized Shape Metrics on Neural
    Representations. NeurIPS.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 4))
    >>> q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    >>> round(shape_metric(x, x @ q), 6), round(shape_metric(x, x @ rng.normal(size=(4, 4)),
    ...                                                      alpha=0.0), 6)
    (0.0, 0.0)
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("shape_metric", x, y, options, method=method, join=join,
                         parameters={"alpha": alpha})


@document
def bures_distance(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Bures distance ``sqrt((tr M_xx + tr M_yy - 2 ||M_xy||_*) / n)`` between the centred
    linear kernels per sample: the size-and-shape Procrustes distance
    ``min_Q ||X_c - Y_c Q||_F / sqrt(n)``.

    The Bures distance between the kernel matrices ``X_c X_c^T / n`` and ``Y_c Y_c^T / n``
    (Harvey, Lipshutz & Williams 2023) equals the root-mean-square distance between the
    samples' centred activations after the best rotation of one layer onto the other (the
    narrower layer zero-padded). It is *not* normalised: it grows with the activations' scale
    (not with the number of samples). :func:`procrustes` is its normalised counterpart (the
    normalised Bures similarity, ``||M_xy||_* / sqrt(tr M_xx tr M_yy)``). Invariant to
    orthogonal transforms of the units and to shifts, not to scale.

    Parameters
    ----------
    {inputs}
    {uncertainty}
        Permutation p-values count the null values at or *below* the observed distance.
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    {returns}
        ``>= 0``; 0 for a layer with itself up to a rotation and a shift.

    References
    ----------
    Harvey, Lipshutz, Williams (2023). Duality of Bures and Shape Distances with Implications
    for Comparing Neural Representations. UniReps workshop, NeurIPS.
    Williams, Kunz, Kornblith, Linderman (2021). Generalized Shape Metrics on Neural
    Representations. NeurIPS.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 4))
    >>> q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    >>> float(bures_distance(x, x @ q + 3.0))
    0.0
    >>> xc = x - x.mean(axis=0)
    >>> bool(np.isclose(bures_distance(x, 2 * x), np.linalg.norm(xc) / np.sqrt(500)))
    True
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("bures_distance", x, y, options, method=method, join=join)


@document
def permutation_distance(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Angular distance after the best one-to-one matching of units (Williams et al. 2021).

    ``arccos(max_P tr(P^T X_c^T Y_c) / (||X_c||_F ||Y_c||_F))`` over the permutations P of
    the units (the narrower layer zero-padded): the shape metric whose allowed transforms are
    the permutations of units, as netrep's ``PermutationMetric`` with the angular score.
    Where :func:`shape_metric` allows any rotation, this asks whether the *units themselves*
    correspond, as :func:`match_units` does with correlations; the matching maximises the
    summed covariance (``scipy.optimize.linear_sum_assignment``). Invariant to permutations of
    units, isotropic scaling and shifts; not to rotations.

    Parameters
    ----------
    {inputs}
    {uncertainty}
        Permutation p-values count the null values at or *below* the observed distance.
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    {returns}
        In [0, pi/2] (up to pi only when every matching pairs units of negative covariance);
        0 for a layer with itself up to a permutation of its units; a metric.

    References
    ----------
    Williams, Kunz, Kornblith, Linderman (2021). Generalized Shape Metrics on Neural
    Representations. NeurIPS.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 4))
    >>> float(permutation_distance(x, 3 * x[:, [2, 0, 3, 1]] + 1.0))
    0.0
    >>> q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    >>> bool(permutation_distance(x, x @ q) > 0.3)  # a rotation is not a permutation
    True
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("permutation_distance", x, y, options, method=method, join=join)


@sample_space_documented
def aligned_cosine(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Aligned cosine similarity (Hamilton, Leskovec & Jurafsky 2016; ReSi's
    ``aligned_cossim``): x rotated onto y by orthogonal Procrustes, then each sample's cosine
    similarity between its two activation vectors, averaged.

    With the activations as given (not centred; the narrower layer padded with zero units),
    ``Q = U V^T`` from ``X^T Y = U S V^T``, and ``mean_i cos(x_i Q, y_i)``.

    Parameters
    ----------
    {inputs}
    {unsupported}

    Returns
    -------
    Estimate
        A float in [-1, 1], 1 when y is a rotation and scaling of x, with ``.method``
        ``"sample_blocks"``.

    Notes
    -----
    Two passes over the rows (the cross product ``X^T Y``, then the cosines;
    :mod:`dask_repsim.paths.sample_blocks.aligned`); with a jackknife interval or a
    permutation test, one pass, each replicate and permutation with its own rotation
    (:mod:`dask_repsim.paths.sample_blocks.aligned_inference`). Invariant to rotations,
    reflections and isotropic scaling of either layer (the rotation and the cosines do not see
    the scale), not to translations. Samples whose activations are all zero in either layer
    have no cosine and are left out with a warning, as ReSi does.

    References
    ----------
    Hamilton, Leskovec, Jurafsky (2016). Diachronic Word Embeddings Reveal Statistical Laws of
    Semantic Change. ACL.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 4))
    >>> q = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))[0]
    >>> round(float(aligned_cosine(x, 2 * x @ q)), 12)
    1.0
    """
    cell, path, options = run_sample_space(
        "aligned_cosine", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("aligned_cosine", cell, options, path)
