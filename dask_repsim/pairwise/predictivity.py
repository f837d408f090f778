"""Public pairwise functions of the cross-validated predictivities: ridge and PLS regression
from one layer to another, scored as Brain-Score does, from one pass of co-moments
(:mod:`dask_repsim.measures.predictivity`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..measures.predictivity import DEFAULT_FOLDS
from ..options import Options, SampleDims, document
from ..results import Estimate
from ..runners import pair_estimate


@document
def ridge_predictivity(
    x: Any, y: Any, *, folds: int = DEFAULT_FOLDS, ridge: float | None = None,
    sample_dims: SampleDims = None, storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise", interval: str | None = None, level: float | None = None,
    groups: int | None = None, permutations: int = 0, seed: int | None = None,
    method: str = "auto", join: str = "exact",
) -> Estimate:
    """Cross-validated ridge-regression predictivity of ``y``'s units from ``x``: how well a
    linear map of one layer predicts another layer's (or a brain area's) units on held-out
    samples (Brain-Score, Schrimpf et al. 2018; Conwell et al. 2024).

    The samples are split into ``folds`` contiguous folds in storage order. For each, a ridge
    regression with intercept is fitted on the other folds and predicts the held-out fold;
    the score is the median over ``y``'s units of the Pearson correlation between prediction
    and activation on the held-out fold, averaged over the folds (Brain-Score's
    ``CrossRegressedCorrelation`` aggregation). All of it comes from the folds' co-moments,
    in one pass: exact.

    Parameters
    ----------
    {inputs}
    folds
        Folds of the cross-validation (default 10), contiguous ranges of samples in storage
        order: store the samples shuffled when their order means something (by class, by
        time); each fold needs at least 3 samples.
    ridge
        The penalty ``lambda`` relative to ``x``'s total variance on the training folds:
        ``B = (Mxx + lambda tr(Mxx) I)^+ Mxy`` for the centred training co-moments, so the
        score does not depend on ``x``'s scale (scikit-learn's ``alpha`` is ``lambda
        tr(Mxx)``). ``0``: least squares (the minimum-norm fit when ``x`` is wider than the
        training samples). Default: chosen on each training set by generalised
        cross-validation (Golub, Heath & Wahba 1979), one penalty for all of ``y``'s units,
        from ``numpy.logspace(-8, 2, 41)``; scikit-learn's ``RidgeCV`` computes efficient
        leave-one-out instead, which may choose another penalty.
    {uncertainty}
        Here the jackknife's ``groups`` (at least ``folds``) lie within the folds, each fold
        split into near-equal runs, and a replicate is the whole k-fold score without one of
        them (a fold that was one group leaves the mean); the interval
        is centred on the estimate, for the expected score of a k-fold split of this many
        samples (the score grows with the training sets, which a replicate shrinks).
        Permutations move ``y``'s samples within each fold, so every fold keeps its samples
        (with ``nan_policy="raise"`` only).
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    Estimate
        A float in [-1, 1]; 1 when every unit of ``y`` is an exact linear function of ``x``.
        Not symmetric: ``ridge_predictivity(y, x)`` predicts ``x`` from ``y``. A unit whose
        prediction or activation is constant over a fold is left out of that fold's median,
        with a warning. With ``interval`` or ``permutations``, the fields of
        :class:`~dask_repsim.results.Estimate`.

    References
    ----------
    Golub, Heath, Wahba (1979). Generalized cross-validation as a method for choosing a good
    ridge parameter. Technometrics.
    Schrimpf et al. (2018). Brain-Score: which artificial neural network for object
    recognition is most brain-like? bioRxiv.
    Conwell, Prince, Kay, Alvarez, Konkle (2024). A large-scale examination of inductive
    biases shaping high-level visual representation in brains and machines. Nature
    Communications.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 8))
    >>> round(ridge_predictivity(x, x @ rng.normal(size=(8, 3)) + 5.0, ridge=0.0), 6)
    1.0
    >>> noisy = x[:, :2] + rng.normal(size=(500, 2))
    >>> bool(0.5 < ridge_predictivity(x, noisy) < 0.9)
    True
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("ridge_predictivity", x, y, options, method=method, join=join,
                         parameters={"folds": folds, "ridge": ridge})


@document
def pls_predictivity(
    x: Any, y: Any, *, folds: int = DEFAULT_FOLDS, components: int | None = None,
    sample_dims: SampleDims = None, storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise", interval: str | None = None, level: float | None = None,
    groups: int | None = None, permutations: int = 0, seed: int | None = None,
    method: str = "auto", join: str = "exact",
) -> Estimate:
    """Cross-validated partial-least-squares predictivity of ``y``'s units from ``x``: the
    score of :func:`ridge_predictivity` with PLS regression, Brain-Score's default
    (scikit-learn's ``PLSRegression(n_components=25, scale=False)``).

    PLS2 with regression deflation (NIPALS), from the training folds' co-moments: each
    component's x-weights are the exact first left singular vector of the deflated cross
    co-moment (scikit-learn iterates the power method to its ``tol``), and deflation acts on
    the co-moments. The same folds and score as :func:`ridge_predictivity`.

    Parameters
    ----------
    {inputs}
    folds
        Folds of the cross-validation (default 10), contiguous in storage order, as for
        :func:`ridge_predictivity`.
    {uncertainty}
        Permutations as for :func:`ridge_predictivity`, within folds. No interval (asking is
        an error): with fewer components than ``x``'s rank the jackknife misses how the PLS
        directions jump between samples (95% intervals covered 62% to 89%).
    components
        PLS components (default 25 or, when fewer, the number of directions of ``x`` with
        variance on each training set, and fewer where the deflated cross co-moment vanishes
        first); more than ``x``'s units, or than a training set allows, is an error.
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    Estimate
        A float in [-1, 1], as for :func:`ridge_predictivity`.

    References
    ----------
    Wold, Sjöström, Eriksson (2001). PLS-regression: a basic tool of chemometrics.
    Chemometrics and Intelligent Laboratory Systems.
    Schrimpf et al. (2018). Brain-Score: which artificial neural network for object
    recognition is most brain-like? bioRxiv.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 8))
    >>> round(pls_predictivity(x, x @ rng.normal(size=(8, 3))), 6)
    1.0
    >>> bool(pls_predictivity(x, x[:, :2] + rng.normal(size=(500, 2)), components=2) > 0.5)
    True
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("pls_predictivity", x, y, options, method=method, join=join,
                         parameters={"folds": folds, "components": components})
