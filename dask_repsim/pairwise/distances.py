"""Public pairwise functions of the measures of two layers' Euclidean distance matrices over
samples: distance correlation and the RSM norm difference.

Same inputs and shape as :mod:`dask_repsim.pairwise`. They run on the ``"sample_blocks"``
path (:mod:`dask_repsim.paths.sample_blocks.distances`): exact, cost ``n^2 (p + q)``, memory a
few row blocks per task whatever n; jackknife intervals and permutation tests from the same pass
(:mod:`dask_repsim.paths.sample_blocks.distances_inference`); no NaN omission there, so asking
for it is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..options import SampleDims
from ..results import Estimate
from ..runners import measure_estimate
from .samples import run_sample_space, sample_space_documented


@sample_space_documented
def distance_correlation(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Distance correlation of the two layers (Székely, Rizzo & Bakirov 2007).

    With ``D`` and ``E`` the n x n Euclidean distance matrices of the samples in each layer,
    double-centred to ``A = H D H`` and ``B = H E H`` (``H = I - 11'/n``), the distance
    covariance is ``dCov^2 = mean_ij A_ij B_ij`` and the distance correlation
    ``sqrt(dCov^2(D, E) / sqrt(dCov^2(D, D) dCov^2(E, E)))``: 0 exactly when the two
    layers' samples are independent (in the population), 1 when one layer is a rotated,
    scaled and shifted copy of the other. It sees non-linear dependence that linear CKA does
    not; with squared distances in place of distances it would be linear CKA.

    Parameters
    ----------
    {inputs}
    interval, level, groups, permutations, seed
        As for :func:`dask_repsim.cka`: a delete-a-group jackknife interval and a permutation
        test (y's distance matrix permuted), both from the same pass over the tiles.

    Returns
    -------
    Estimate
        A float in [0, 1], with ``.method`` ``"sample_blocks"``.

    Notes
    -----
    The V-statistic of the paper and ReSi's ``distance_correlation`` (biased: about
    ``sqrt(c / sqrt(p q))``-sized for independent layers of p and q features in few samples,
    not 0). Invariant to rotations, translations and the scale of either layer; not to other
    linear maps. One pass over tiles of the distance matrices
    (:mod:`dask_repsim.paths.sample_blocks.distances`).

    References
    ----------
    Székely, Rizzo, Bakirov (2007). Measuring and testing dependence by correlation of
    distances. Annals of Statistics 35, 2769-2794.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> round(float(distance_correlation(x, 3 * x[:, ::-1] + 1)), 12)
    1.0
    """
    cell, path, options = run_sample_space(
        "distance_correlation", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("distance_correlation", cell, options, path)


@sample_space_documented
def rsm_norm_difference(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """The Frobenius norm of the difference of the two layers' Euclidean distance matrices
    (the RSM norm difference; Shahbazi et al. 2021, as Klabunde et al. 2023 survey it).

    ``||D - E||_F = sqrt(sum_ij (||x_i - x_j|| - ||y_i - y_j||)^2)`` over all ordered pairs of
    samples: 0 when the layers place every pair of samples at the same distance (a rotation
    and a shift of each other), larger the more they differ. A distance in the layers' own
    units: it changes with their scale (compare layers normalised alike) and grows with the
    number of samples, about as n.

    Parameters
    ----------
    {inputs}
    interval, level, groups, permutations, seed
        As for :func:`dask_repsim.cka`: a delete-a-group jackknife interval and a permutation
        test (y's distance matrix permuted; the null values at or below the norm count), both
        from the same pass over the tiles. The interval is centred on the estimate, not on
        the bias-corrected one: the norm grows with the number of samples, so each replicate
        is smaller for that alone.

    Returns
    -------
    Estimate
        A float >= 0 (a distance: smaller is more similar), with ``.method``
        ``"sample_blocks"``.

    Notes
    -----
    ReSi's ``rsm_norm_diff`` applies ``numpy.linalg.norm(S - S', ord=2)`` to the full n x n
    matrices, which for a matrix is its largest singular value, not the Frobenius norm that
    the survey defines and this function computes; the two agree only when the difference
    has rank one. Invariant to rotations, reflections and translations of either layer.

    References
    ----------
    Shahbazi, Shirali, Aghajan, Nili (2021). Using distance on the Riemannian manifold to
    compare representations in brain and in models. NeuroImage 239.

    Klabunde, Schumacher, Strohmaier, Lemmerich (2023). Similarity of Neural Network Models: A
    Survey of Functional and Representational Measures. ACM Computing Surveys (2025).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> round(float(rsm_norm_difference(x, x[:, ::-1] + 1)), 9)
    0.0
    >>> bool(abs(rsm_norm_difference(x, 2 * x) - np.sqrt(
    ...     ((np.linalg.norm(x[:, None] - x[None], axis=2)) ** 2).sum())) < 1e-9)
    True
    """
    cell, path, options = run_sample_space(
        "rsm_norm_difference", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("rsm_norm_difference", cell, options, path)
