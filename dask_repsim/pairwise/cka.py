"""Public pairwise CKA and linear HSIC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..options import Options, SampleDims, document
from ..results import Estimate
from ..runners import cell_estimate, check_sigma, pair_estimate, run_pair


@document
def cka(
    x: Any, y: Any, *, debiased: bool = False, kernel: str = "linear",
    sigma: float | None = None, method: str = "auto", batch_size: int | None = None,
    seed: int | None = None, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, null: str | None = None, join: str = "exact",
) -> Estimate:
    """Centred kernel alignment (CKA) between two layers' activations.

    Parameters
    ----------
    {inputs}
    debiased
        Use the unbiased HSIC estimator (Song et al. 2012) so that the value does not drift
        with the number of samples; needs at least 4 samples and can be slightly negative.
        (Minibatch CKA is always built on unbiased HSIC, so it does not take this option.)
    kernel, sigma
        ``"linear"`` (default) or ``"rbf"``: Gaussian kernels with bandwidth ``sigma``
        (default 0.8) times the median pairwise distance (Kornblith et al.'s ``gram_rbf``),
        computed exactly from sample-space Gram blocks; the result also carries ``.median``
        and ``.median_exact`` (above 20,000 samples the median comes from a seeded
        subsample). ``"laplace"``: Laplace kernels ``exp(-||x_i - x_j|| / (sigma m))``, ``m``
        the square root of the layer's median squared distance (the same rule), on the
        ``"sample_blocks"`` path (tiles of the distance matrices, in the pass that gives
        distance correlation), with the same fields; not debiased. ``sigma`` with the linear
        kernel is an error. As the ``cka``, ``cka_debiased``, ``cka_rbf`` and ``cka_laplace``
        metrics of :func:`dask_repsim.compare`: a call is a grid of one cell
        (:mod:`dask_repsim.runners`).
    method
        ``"auto"`` (default: the cheapest exact path within the memory budget, see
        :mod:`dask_repsim.planning`), ``"covariance"``, ``"gram"``, ``"tiled"``, or, for the
        linear kernel, ``"minibatch"``: an approximation (Nguyen et al. 2021) averaging
        unbiased HSIC over minibatches of ``batch_size`` (default 1000) samples in an order
        shuffled with ``seed``, with a ``level`` bootstrap interval (``.ci_low``,
        ``.ci_high``) and ``.approximate`` saying what it approximates. ``batch_size`` on
        another path is an error.
    {uncertainty}
    {gamma}

    Returns
    -------
    {returns}
        In [0, 1] (debiased: about [0, 1]); 1 when Y is an orthogonal transform and isotropic
        scaling of X.

    Notes
    -----
    With centred activations ``X_c``, ``Y_c`` (Kornblith et al. 2019, eq. 6 in feature space)::

        CKA = ||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)

    Invariant to orthogonal transforms and isotropic scaling of either side, not to general
    invertible linear maps; it is defined however wide the layers are relative to the
    number of samples.

    References
    ----------
    Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations
    Revisited. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 10))
    >>> q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    >>> round(cka(x, 3 * x @ q), 6)
    1.0
    """
    if kernel not in ("linear", "rbf", "laplace"):
        raise ValueError(f"kernel must be 'linear', 'rbf' or 'laplace', not {kernel!r}")
    if kernel == "laplace" and debiased:
        raise ValueError("debiased=True is not available with kernel='laplace': Laplace CKA "
                         "is computed with the biased HSIC only; leave debiased out")
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed, null=null)
    call = {"method": method, "join": join, "batch_size": batch_size,
            "parameters": {"sigma": sigma}}
    if kernel == "linear":
        return pair_estimate("cka_debiased" if debiased else "cka", x, y, options, **call)
    own = {"gram": {"kernel": "rbf", "debiased": True}} if debiased else None
    cell, path, _ = run_pair(f"cka_{kernel}", x, y, options, functions=own, **call)
    # the cell carries the medians, median_exact, approximate and sigma
    return cell_estimate(cell, options, path, sigma=check_sigma(sigma)[0])


@document
def ensd(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Effective number of shared dimensions, ENSD (Giaffar, Rudelt, Buracas & Mainen 2023).

    With the centred Gram matrices ``K = X_c X_c^T`` and ``L = Y_c Y_c^T``::

        ENSD = tr K tr L tr(K L) / (tr K^2 tr L^2) = sqrt(PR_x PR_y) x CKA

    where ``PR = (tr K)^2 / tr K^2`` is a layer's participation ratio (its effective number
    of dimensions, Gao et al. 2017): how many dimensions the two layers share, from 0 to
    ``min(PR_x, PR_y)``. Invariant to rotations and isotropic scaling of either layer, as CKA.

    Parameters
    ----------
    {inputs}
    {uncertainty}
    method
        ``"auto"`` or ``"covariance"`` (the co-moments).

    Returns
    -------
    {returns}
        A number of dimensions, not a value in [0, 1]: ``PR_x`` for a layer with itself.

    References
    ----------
    Giaffar, Rudelt, Buracas, Mainen (2023). The effective number of shared dimensions: a simple
    method for revealing shared structure between datasets. bioRxiv 2023.07.27.550815.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 4)) * [4.0, 2.0, 1.0, 1.0]
    >>> xc = x - x.mean(axis=0)
    >>> pr = np.trace(xc.T @ xc) ** 2 / np.linalg.norm(xc.T @ xc) ** 2
    >>> bool(np.isclose(ensd(x, x), pr)), bool(ensd(x, x) < 4)
    (True, True)
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("ensd", x, y, options, method=method, join=join)


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
    return pair_estimate("hsic", x, y, options, method=method, join=join)
