"""Public pairwise functions of the CCA family: CCA, SVCCA, PWCCA and linear
regression, on the co-moments or the QR path.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from ..measures import cca as cca_measures
from ..options import Options, SampleDims, document
from ..registry import MEASURES
from ..results import CCAResult, Estimate
from ..runners import DETAILS, pair_estimate, run_pair


@document
def cca(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> CCAResult:
    """Canonical correlation analysis between two layers' activations.

    Parameters
    ----------
    {inputs}
    {uncertainty}
    {method}

    Returns
    -------
    CCAResult
        A float, the mean canonical correlation, with ``.rho``: all canonical correlations,
        descending; ``.mean`` and ``.r2`` (mean of their squares: R^2_CCA, Yanai's generalised
        coefficient of determination) as :class:`~dask_repsim.results.Estimate`;
        ``.truncated_mean(0.98)``: the mean the SVCCA reference code reports.

    Notes
    -----
    The canonical correlations are the singular values of ``Mxx^-1/2 Mxy Myy^-1/2`` where
    ``M`` are centred co-moments (Hotelling 1936). Constant units (dead ReLUs) and exactly
    collinear directions (duplicated units) have no canonical direction and are dropped, with a
    warning for constant units, so there are ``min(rank X, rank Y)`` correlations. After
    standardising units, directions with variance below 1e-10 of the largest are treated as
    collinear.

    CCA is invariant to any invertible linear map of either side. That is also its weakness:
    when a layer has as many units as there are samples (minus one), any other layer lies in
    its span and every correlation is 1 (Kornblith et al. 2019, section 3); a warning says so.
    Use :func:`cka` or :func:`svcca` there.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 4))
    >>> y = x @ rng.normal(size=(4, 4)) + 5.0  # an invertible linear map of x
    >>> np.round(cca(x, y).rho, 6)
    array([1., 1., 1., 1.])
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                       nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                       permutations=permutations, seed=seed)
    cell, path, _ = run_pair("mean_cca", x, y, options, method=method, join=join,
                             functions=DETAILS["mean_cca"])
    return CCAResult(cell.value, replicates=cell.replicates or (), level=options.get("level"),
                     null=cell.null or (), method=path)


@document
def svcca(
    x: Any, y: Any, *, keep: float | int = 0.99, spectrum: str = "variance",
    center: bool = True, summary: str = "mean", sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Singular vector CCA (Raghu et al. 2017): CCA on each side's top singular directions.

    Parameters
    ----------
    {inputs}
    keep
        A float in (0, 1]: keep, on each side, the smallest number k of singular directions
        of the centred data whose squared singular values (variances) reach that fraction of
        the total. An int: keep that many directions (the reference tutorial uses 20).
    spectrum
        ``"variance"`` (default): the fraction is of the sum of squared singular values.
        ``"singular_values"``: of the sum of singular values, as some implementations do
        (this keeps more directions for the same fraction).
    center
        ``True`` (default): SVD of the centred data. ``False``: of the raw data, as some
        implementations do; CCA on the projections centres them either way (co-moment path
        only).
    summary
        ``"mean"`` (default): the mean canonical correlation (Raghu et al.'s rho-bar).
        ``"r2"``: the mean squared canonical correlation (R^2_CCA; Kornblith et al. 2019,
        Table 2, metric ``svcca_r2``).
    {uncertainty}
    {method}

    Returns
    -------
    {returns}
        The mean (or mean squared) canonical correlation between the kept directions.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.normal(size=(2000, 3)) * [10.0, 5.0, 3.0]
    >>> x = np.hstack([signal, rng.normal(size=(2000, 5)) * 0.01])
    >>> y = np.hstack([signal @ rng.normal(size=(3, 3)), rng.normal(size=(2000, 5)) * 0.01])
    >>> round(svcca(x, y, keep=0.99), 4)
    1.0
    """
    if spectrum not in ("variance", "singular_values"):
        raise ValueError(f"spectrum must be 'variance' or 'singular_values', not {spectrum!r}")
    if summary not in ("mean", "r2"):
        raise ValueError(f"summary must be 'mean' or 'r2', not {summary!r}")
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                       nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                       permutations=permutations, seed=seed)

    if method == "qr" and not center:
        raise ValueError("method='qr' takes the SVD of centred data only (center=True)")
    kinds = MEASURES["svcca"].paths  # one function per path for both summaries
    own = {"covariance": partial(kinds["covariance"], keep=keep, spectrum=spectrum,
                                 center=center, summary=summary),
           "qr": partial(kinds["qr"], keep=keep, spectrum=spectrum, summary=summary)}
    measure = "svcca" if summary == "mean" else "svcca_r2"
    return pair_estimate(measure, x, y, options, method=method, join=join, functions=own)


@document
def pwcca(
    x: Any, y: Any, *, definition: str = "paper", epsilon: float | None = None,
    sample_dims: SampleDims = None, storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise", interval: str | None = None, level: float | None = None,
    groups: int | None = None, permutations: int = 0, seed: int | None = None,
    method: str = "auto", join: str = "exact",
) -> Estimate:
    """Projection-weighted CCA (Morcos, Raghu & Bengio 2018).

    A weighted mean of the canonical correlations, each weighted by how much of the layer's
    activity its canonical variate accounts for.

    Parameters
    ----------
    {inputs}
    definition
        ``"paper"`` (default): the side with fewer units (x on ties) gives canonical variates
        ``h_i`` (unit norm); ``alpha_i = sum_j |<h_i, x_j>|`` over its centred units ``x_j``;
        the result is ``sum_i alpha_i rho_i / sum_i alpha_i``.
        ``"reference"``: what the SVCCA reference code's ``compute_pwcca`` returns, for users
        migrating from it; it uses unwhitened directions with the neuron means added back,
        so its numbers differ from the paper's.
    epsilon
        With ``definition="reference"`` only: the reference code's ``epsilon`` (default 0;
        its tutorials use 1e-10): units whose variance, relative to the largest co-moment
        entry, is below it are dropped and it is added to the scaled co-moments' diagonal.
    {uncertainty}
    {method}

    Returns
    -------
    {returns}

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 5))
    >>> round(pwcca(x, x @ rng.normal(size=(5, 5))), 6)
    1.0
    """
    if definition not in ("paper", "reference"):
        raise ValueError(f"definition must be 'paper' or 'reference', not {definition!r}")
    if epsilon is not None and definition != "reference":
        raise ValueError("epsilon= is the reference code's option: it applies with "
                         "definition='reference' only")
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                       nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                       permutations=permutations, seed=seed)

    if method == "qr" and definition != "paper":
        raise ValueError("method='qr' computes the paper's definition only")
    own = None if definition == "paper" else {
        "covariance": partial(cca_measures.pwcca_reference, epsilon=epsilon or 0.0)}
    return pair_estimate("pwcca", x, y, options, method=method, join=join, functions=own)


@document
def linear_regression(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Fraction of y's variance explained by a least-squares linear fit (with intercept) from x.

    ``R^2 = tr(Myx Mxx^+ Mxy) / tr(Myy)`` (Kornblith et al. 2019, Table 1). Not symmetric.
    Invariant to invertible linear maps of x and orthogonal transforms and scaling of y.

    Parameters
    ----------
    {inputs}
    {uncertainty}
    {method}

    Returns
    -------
    {returns}

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 3))
    >>> round(linear_regression(x, np.hstack([x, rng.normal(size=(1000, 3))])), 2)
    0.5
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                       nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                       permutations=permutations, seed=seed)
    return pair_estimate("linear_regression", x, y, options, method=method, join=join)


@document
def eigenspace_overlap(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Eigenspace overlap score ``||U_X^T U_Y||_F^2 / max(p, q)`` (May et al. 2019).

    ``U_X`` and ``U_Y`` are orthonormal bases of the spaces the activations span in sample
    space (the column spaces of X and Y, as given, *not* centred, as in the paper). In [0, 1]:
    1 when both layers have full column rank and span the same space. Invariant to any
    invertible linear map of each layer's units, not to a shift. The sum of squared canonical
    correlations of the uncentred activations, divided by the wider layer's width: a layer
    wider than its rank scores below 1 even against itself.

    Parameters
    ----------
    {inputs}
    {uncertainty}
    method
        ``"auto"`` or ``"covariance"`` (the means and co-moments).

    Returns
    -------
    {returns}

    References
    ----------
    May, Zhang, Dao, Ré (2019). On the Downstream Performance of Compressed Word Embeddings.
    NeurIPS.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 4))
    >>> round(eigenspace_overlap(x, x @ rng.normal(size=(4, 4))), 6)
    1.0
    >>> round(eigenspace_overlap(x, x[:, :2]), 6)  # a 2-d subspace of the 4-d one
    0.5
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("eigenspace_overlap", x, y, options, method=method, join=join)


@document
def gulp(
    x: Any, y: Any, *, ridge: float = 0.0, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """GULP distance between the ridge-regression predictors two layers support
    (Boix-Adserà et al. 2022).

    Each layer is centred and scaled so that its covariance ``Sigma`` has trace 1; with
    ``R = (Sigma + ridge I)^-1``, ``d^2 = tr(R_X Sigma_X R_X Sigma_X) + tr(R_Y Sigma_Y R_Y
    Sigma_Y) - 2 tr(R_X Sigma_XY R_Y Sigma_YX)``: how differently the best linear predictors
    of any bounded target from the two layers can predict, over the samples.

    Parameters
    ----------
    {inputs}
    ridge
        The ridge penalty ``lambda >= 0`` of the predictors, relative to the normalised
        covariance (trace 1). ``0`` (default; the pseudo-inverse): invariant to every
        invertible linear map, ``d^2 = rank_X + rank_Y - 2 sum rho^2`` over the canonical
        correlations, degenerate like CCA when a layer is nearly as wide as the number of
        samples; ``> 0``: directions of little variance count less, invariant to rotations and
        isotropic scaling.
    {uncertainty}
        Permutation p-values count the null values at or *below* the observed distance.
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    {returns}
        ``>= 0``, a metric; the square root of what the authors' ``predictor_dist`` and ReSi's
        ``gulp`` return.

    References
    ----------
    Boix-Adserà, Lawrence, Stepaniants, Rigollet (2022). GULP: a prediction-based metric
    between representations. NeurIPS.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 4))
    >>> float(gulp(x, x))
    0.0
    >>> round(gulp(x, x @ rng.normal(size=(4, 4)) + 1.0), 4)  # the same predictors (rounding)
    0.0
    >>> round(gulp(x, x[:, :2]), 6)  # sqrt(4 + 2 - 2 * 2): two directions x alone predicts
    1.414214
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("gulp", x, y, options, method=method, join=join,
                         parameters={"ridge": ridge})
