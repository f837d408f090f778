"""Public measures of one pair of layers: one function per measure, the same shape for all.

Each function resolves its options (:mod:`dask_repsim.options`), picks a path
(:mod:`dask_repsim.methods`), rejects options that path does not use, and computes the pair as
a grid of one cell with that path's runner (:mod:`dask_repsim.runners`), exactly as
:func:`dask_repsim.compare` computes a cell. Results are floats (:class:`~dask_repsim.results.
Estimate`; :class:`~dask_repsim.results.CCAResult` for :func:`cca`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import xarray as xr

from . import cca as cca_measures
from . import cka as cka_measures
from . import gram, methods, minibatch, qr, runners
from .cells import cell_estimate, covariance_cell
from .inputs import Layer, as_layer, open_input
from .labels import align_samples, check_join
from .layouts import check_requested
from .options import DEFAULTS, Options, SampleDims, document, reject_unused
from .results import CCAResult, Estimate
from .validation import check_sample_counts


def distinct(layers: list[Layer]) -> list[Layer]:
    """Drop layers that are the same dask array as an earlier one: an input is read once."""
    seen: dict[str, Layer] = {}
    for layer in layers:
        seen.setdefault(layer.data.name, layer)
    return list(seen.values())


def pair_layers(x: Any, y: Any, options: Options, join: str = "exact") -> list[Layer]:
    """The layers of ``x`` and ``y`` (one when they are the same array), their samples paired
    by label (:mod:`dask_repsim.labels`; ``join="inner"``: the samples both hold), the
    requested sample dims checked (:mod:`dask_repsim.layouts`), sample counts checked."""
    check_join(join)
    storage = options.storage_options
    inputs = {"x": open_input(x, "x", storage), "y": open_input(y, "y", storage)}
    if not any(isinstance(v, xr.DataArray) for v in inputs.values()):
        # a DataArray names the dims it lacks itself (as_layer); plain arrays have none
        check_requested(inputs, "sample_dims", options.sample_dims)
    x, y = align_samples(list(inputs.items()), options.sample_dims, join)
    kw = {"sample_dims": options.sample_dims, "storage_options": storage}
    lx, ly = as_layer(x, name="x", **kw), as_layer(y, name="y", **kw)
    check_sample_counts([lx.name, ly.name], [lx.data.shape[0], ly.data.shape[0]])
    return distinct([lx, ly])


def sizes(layers: list[Layer]) -> tuple[int, int, int]:
    """Samples, features of the first layer, features of the last."""
    return layers[0].data.shape[0], layers[0].data.shape[1], layers[-1].data.shape[1]


def _cca_path(method: str, layers: list[Layer], options: Options) -> str:
    """The path of a CCA-family measure, after rejecting options it does not use."""
    path = methods.choose("cca", method, *sizes(layers))
    reject_unused(path, options)
    return path


@document
def cka(
    x: Any, y: Any, *, debiased: bool = False, kernel: str = "linear",
    sigma: float | None = None, method: str = "auto", batch_size: int | None = None,
    seed: int | None = None, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, join: str = "exact",
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
        subsample). ``sigma`` with the linear kernel is an error.
    method
        ``"auto"`` (default: the cheapest exact path within the memory budget, see
        :mod:`dask_repsim.methods`), ``"covariance"``, ``"gram"``, ``"tiled"``, or
        ``"minibatch"``: an approximation (Nguyen et al. 2021) averaging unbiased HSIC over
        minibatches of ``batch_size`` (default 1000) samples in an order shuffled with
        ``seed``, with a ``level`` bootstrap interval (``.ci_low``, ``.ci_high``) and
        ``.approximate`` saying what it approximates. ``batch_size`` on another path is an
        error.
    {uncertainty}

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
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf', not {kernel!r}")
    if sigma is not None and kernel != "rbf":
        raise ValueError("sigma= is the RBF bandwidth: it applies with kernel='rbf' only")
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                       nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                       permutations=permutations, seed=seed)
    layers = pair_layers(x, y, options, join)
    path = methods.choose("cka" if kernel == "linear" else "rbf_cka", method, *sizes(layers))
    if batch_size is not None and path != "minibatch":
        raise ValueError(f"batch_size= applies to method='minibatch' only, not {path!r}")
    if debiased and path == "minibatch":
        raise ValueError("minibatch CKA is always built on unbiased HSIC (Nguyen et al. 2021): "
                         "leave debiased= out with method='minibatch'")
    reject_unused(path, options, level_used=path == "minibatch",
                  seed_used=path == "minibatch" or kernel == "rbf")
    lx, ly = layers[0], layers[-1]
    if path == "minibatch":
        return minibatch.minibatch_cka(
            lx, ly, kernel=kernel, sigma=DEFAULTS["sigma"] if sigma is None else sigma,
            batch_size=batch_size or DEFAULTS["batch_size"], seed=options.get("seed"),
            level=options.get("level"),
        )
    if kernel == "rbf":
        return gram.rbf_cka(lx, ly, DEFAULTS["sigma"] if sigma is None else sigma,
                            debiased=debiased,
                            seed=options.get("seed"))
    if path == "covariance":
        function = cka_measures.debiased_linear_cka if debiased else cka_measures.linear_cka
        return cell_estimate(covariance_cell(function, layers, options), options, path)
    last = len(layers) - 1
    if path == "gram":  # the sample-space tiles that grids share
        cells, _ = runners.gram_cells([{"debiased": debiased}], layers, [0], [last], seed=0)
    else:
        cells, _ = runners.kernel_cells([path], [{"debiased": debiased}], layers, [0], [last])
    return Estimate(cells[0, 0, 0].value, method=path)


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
    layers = pair_layers(x, y, options, join)
    if _cca_path(method, layers, options) == "qr":
        return qr.cca(layers[0], layers[-1])

    def rho(pair: Any) -> Any:
        return cca_measures.canonical_correlations(pair)[0]

    cell = covariance_cell(rho, layers, options)
    return CCAResult(cell.value, replicates=cell.replicates or (), level=options.get("level"),
                     null=cell.null or (), method="covariance")


def _cca_family(covariance: Callable[[Any], float], on_qr: Callable[[Layer, Layer], float],
                x: Any, y: Any, method: str, options: Options, join: str = "exact") -> Estimate:
    """A CCA-family measure on the co-moments or the QR path."""
    layers = pair_layers(x, y, options, join)
    if _cca_path(method, layers, options) == "qr":
        return Estimate(on_qr(layers[0], layers[-1]), method="qr")
    return cell_estimate(covariance_cell(covariance, layers, options), options, "covariance")


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

    def on_qr(lx: Layer, ly: Layer) -> float:
        if not center:
            raise ValueError("method='qr' takes the SVD of centred data only (center=True)")
        return qr.svcca(lx, ly, keep=keep, spectrum=spectrum, summary=summary)

    def measure(pair: Any) -> float:
        return cca_measures.svcca(pair, keep=keep, spectrum=spectrum, center=center,
                                  summary=summary)

    return _cca_family(measure, on_qr, x, y, method, options, join)


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

    def on_qr(lx: Layer, ly: Layer) -> float:
        if definition != "paper":
            raise ValueError("method='qr' computes the paper's definition only")
        return qr.pwcca(lx, ly)

    def measure(pair: Any) -> float:
        if definition == "paper":
            return cca_measures.pwcca(pair)
        return cca_measures.pwcca_reference(pair, epsilon or 0.0)

    return _cca_family(measure, on_qr, x, y, method, options, join)


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
    return _cca_family(cca_measures.linear_regression, qr.linear_regression, x, y, method,
                       options, join)


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
    layers = pair_layers(x, y, options, join)
    path = methods.choose("procrustes", method, *sizes(layers))
    reject_unused(path, options)
    cell = covariance_cell(cka_measures.procrustes, layers, options)
    return cell_estimate(cell, options, path)
