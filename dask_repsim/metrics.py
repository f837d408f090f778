"""Public pairwise functions of the measures beyond the classic six: linear HSIC and the
generalized shape metric.

Same shape as :mod:`dask_repsim.pairwise`: one pass of co-moments, every input rule, interval and
permutation option of the other measures.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from . import cka as cka_measures
from . import methods, shape
from .cells import cell_estimate, covariance_cell
from .options import Options, SampleDims, document, reject_unused
from .pairwise import pair_layers, sizes
from .results import Estimate


@document
def hsic(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Linear HSIC, ``||X_c^T Y_c||_F^2 / (n - 1)^2`` (Gretton et al. 2005).

    The numerator of linear CKA, without its normalisation: it grows with the scale of either
    layer, so it compares pairs only when the layers' scales are comparable. A row of Kornblith
    et al.'s (2019) Table 2, where it identifies corresponding layers less reliably than CKA.

    Parameters
    ----------
    {inputs}
    {uncertainty}
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    {returns}

    References
    ----------
    Gretton, Bousquet, Smola, Schölkopf (2005). Measuring statistical dependence with
    Hilbert-Schmidt norms. ALT.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> xc = x - x.mean(axis=0)
    >>> bool(np.isclose(hsic(x, 2 * x), np.linalg.norm(xc.T @ (2 * xc)) ** 2 / 199**2))
    True
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    layers = pair_layers(x, y, options, join)
    path = methods.choose("hsic", method, *sizes(layers))
    reject_unused(path, options)
    return cell_estimate(covariance_cell(cka_measures.linear_hsic, layers, options), options, path)


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
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    layers = pair_layers(x, y, options, join)
    path = methods.choose("shape_metric", method, *sizes(layers))
    reject_unused(path, options)
    function = partial(shape.shape_distance, alpha=alpha)
    cell = covariance_cell(function, layers, options)
    return cell_estimate(cell, options, path, similarity=False)
