"""Public measures: one function per measure, and ``compare`` for several at once.

Each function takes two inputs of any kind :func:`~dask_repsim.inputs.as_layer` accepts, runs
one statistics pass over both (:mod:`dask_repsim.statistics`) on the active Dask scheduler (a
``distributed.Client`` if one is active, else local threads), and computes the measure from the
resulting small matrices.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from . import cca as _cca
from . import cka as _cka
from . import kernels as _kernels
from . import methods as _methods
from . import neurons as _neurons
from . import qr as _qr
from .exceptions import RepsimWarning
from .inputs import Layer, as_layer, layers_of
from .statistics import SPLIT_EVERY, Pair, Statistics, one_pass, pair, permuted_pairs, sides
from .uncertainty import (
    jackknife_interval,
    permutation_pvalue,
    quietly,
    replicate,
    summarise,
    total,
)

SampleDims = Sequence[Hashable] | str | None

try:
    __version__ = version("dask-repsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "unknown"


#: default number of sample groups for jackknife intervals
JACKKNIFE_GROUPS = 20


def _pair_layers(x: Any, y: Any, **kw: Any) -> list[Layer]:
    return _distinct([as_layer(x, name="x", **kw), as_layer(y, name="y", **kw)])


def _pair_of(stats: Statistics, layers: Sequence[Layer]) -> Pair:
    return pair(stats, sides(stats, [layer.name for layer in layers]), 0, len(layers) - 1)


def _pair(
    x: Any,
    y: Any,
    *,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
) -> Pair:
    """The :class:`Pair` statistics of (x, y) from one pass."""
    layers = _pair_layers(x, y, sample_dims=sample_dims, storage_options=storage_options)
    parts, _ = one_pass(layers, nan_policy=nan_policy)
    return _pair_of(parts[0], layers)


def _options(scope: dict[str, Any]) -> dict[str, Any]:
    """The input, interval and permutation options of a public function, from its locals()."""
    names = (
        "sample_dims", "storage_options", "nan_policy", "interval", "level", "groups",
        "permutations", "seed",
    )
    return {k: scope[k] for k in names}


def _float_result(measure: Callable[[Pair], float], x: Any, y: Any, **options: Any) -> float:
    value, replicates, null = _evaluate(measure, x, y, **options)
    return summarise(value, replicates, options["level"], null)


def _qr_layers(method: str, x: Any, y: Any, **options: Any) -> tuple[Layer, Layer] | None:
    """The two layers when the CCA-family ``method`` resolves to the QR path, else None."""
    layers = _pair_layers(
        x, y, sample_dims=options["sample_dims"], storage_options=options["storage_options"]
    )
    n, p, q = layers[0].data.shape[0], layers[0].data.shape[1], layers[-1].data.shape[1]
    chosen = _methods.choose("cca", method, n, p, q)
    if chosen == "covariance":
        return None
    _only_on_covariance(chosen, options)
    return layers[0], layers[-1]


def _only_on_covariance(chosen: str, options: Mapping[str, Any]) -> None:
    """Intervals, permutation tests and NaN omission come from the co-moment pass only."""
    if (
        options["interval"] is not None
        or options["permutations"]
        or options["nan_policy"] != "raise"
    ):
        raise ValueError(
            "interval=, permutations= and nan_policy='omit' need method='covariance' "
            f"(the one-pass co-moments), not {chosen!r}"
        )


def _check_interval(interval: str | None) -> None:
    if interval not in (None, "jackknife"):
        raise ValueError(f"interval must be None or 'jackknife', not {interval!r}")


def _check_permutations(permutations: int, cross_size: int) -> int:
    """``permutations`` as an int, after checking it and the memory its cross blocks need.

    ``cross_size``: entries of one permuted cross block (features of the permuted pairs' A
    side times those of their B side).
    """
    if isinstance(permutations, bool) or not isinstance(permutations, int | np.integer):
        raise TypeError(f"permutations must be an int, not {permutations!r}")
    if permutations < 0:
        raise ValueError(f"permutations must be >= 0, not {permutations}")
    # each task of the tree reduction holds its inputs' and its own permuted blocks
    need = int(permutations) * cross_size * 8 * (SPLIT_EVERY + 2)
    budget = _methods.memory_budget()
    if need > budget:
        raise ValueError(
            f"permutations={permutations} keeps {permutations} cross matrices of {cross_size} "
            f"entries per task: about {need / 2**30:.1f} GiB per task, over the memory budget "
            f"of {budget / 2**30:.1f} GiB; ask for fewer permutations or compare fewer layers "
            "at once (or raise dask config 'repsim.memory-budget')"
        )
    return int(permutations)


def _evaluate(
    measure: Callable[[Pair], Any],
    x: Any,
    y: Any,
    *,
    sample_dims: SampleDims,
    storage_options: Mapping[str, Any] | None,
    nan_policy: str,
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
    seed: int = 0,
) -> tuple[Any, list[Any] | None, list[Any] | None]:
    """``measure`` of the pair (x, y) from one pass, with its jackknife replicates (when
    ``interval`` is set) and its values under ``permutations`` permutations (else ``None``)."""
    _check_interval(interval)
    layers = _pair_layers(x, y, sample_dims=sample_dims, storage_options=storage_options)
    last = len(layers) - 1
    k = _check_permutations(permutations, layers[0].data.shape[1] * layers[-1].data.shape[1])
    parts, permuted = one_pass(
        layers,
        groups=groups if interval else 1,
        nan_policy=nan_policy,
        null=([0], [last], k, seed) if k else None,
    )
    stats = total(parts)
    layer_sides = sides(stats, [layer.name for layer in layers])
    value = measure(pair(stats, layer_sides, 0, last))
    replicates = null = None
    if interval is not None:
        replicates = replicate(lambda s: measure(_pair_of(s, layers)), parts)
    if k:
        null = quietly(measure, permuted_pairs(stats, layer_sides, permuted, 0, last, 0, 0))
    return value, replicates, null


def _distinct(layers: list[Layer]) -> list[Layer]:
    """Drop layers that are the same dask array as an earlier one: an input is read once."""
    seen: dict[str, Layer] = {}
    for layer in layers:
        seen.setdefault(layer.data.name, layer)
    return list(seen.values())


def cka(
    x: Any,
    y: Any,
    *,
    debiased: bool = False,
    kernel: str = "linear",
    sigma: float = 0.8,
    method: str = "auto",
    batch_size: int = 1000,
    seed: int = 0,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
) -> float:
    """Centred kernel alignment (CKA) between two layers' activations.

    Parameters
    ----------
    x, y
        Activations, samples along the first axis (or the ``sample_dims`` of a DataArray):
        numpy, dask or zarr arrays, zarr paths or URLs, or xarray DataArrays. Same samples, in
        the same order, in both.
    debiased
        Use the unbiased HSIC estimator (Song et al. 2012) so that the value does not drift
        with the number of samples; needs at least 4 samples and can be slightly negative.
    kernel, sigma
        ``"linear"`` (default) or ``"rbf"``: Gaussian kernels with bandwidth ``sigma`` times
        the median pairwise distance (Kornblith et al.'s ``gram_rbf``), computed exactly from
        sample-space Gram blocks; the result also carries ``.median`` and ``.median_exact``
        (above 20,000 samples the median comes from a seeded subsample).
    method
        ``"auto"`` (default: the cheapest exact path within the memory budget, see
        :mod:`dask_repsim.methods`), ``"covariance"``, ``"gram"``, ``"tiled"``, or
        ``"minibatch"``: an approximation (Nguyen et al. 2021) averaging unbiased HSIC over
        minibatches of ``batch_size`` samples (order shuffled with ``seed``), returned with a
        bootstrap interval (``.ci_low``, ``.ci_high``, ``.n_batches``, ``.approximate``).
    sample_dims
        For DataArrays, the dims that index samples (e.g. ``("sample", "height", "width")``
        to fold a conv layer's positions into samples); all others are features.
    storage_options
        Passed to fsspec when ``x`` or ``y`` is a zarr URL.
    nan_policy
        ``"raise"`` (default) or ``"omit"`` (leave samples with NaN/Inf out of both inputs).
    interval, level, groups
        ``interval="jackknife"``: also a delete-a-group jackknife standard error and a
        ``level`` interval over ``groups`` contiguous ranges of samples, from the same pass
        (:mod:`dask_repsim.uncertainty`). Every measure takes these.
    permutations, seed
        ``permutations=K``: also a permutation test from the same pass: the measure under K
        random permutations of y's samples within chunks (seeded by ``seed``), giving
        ``.pvalue``, ``.null_mean``, ``.null_std``. Assumes samples are exchangeable within a
        chunk (:mod:`dask_repsim.uncertainty`). Every measure takes these. ``seed`` also seeds
        the minibatch order and the RBF median's subsample.

    Returns
    -------
    float
        In [0, 1] (debiased: about [0, 1]); 1 when Y is an orthogonal transform and isotropic
        scaling of X. With ``interval`` or ``permutations``, an
        :class:`~dask_repsim.uncertainty.Estimate`: a float with ``.stderr``, ``.ci_low``,
        ``.ci_high``, ``.n_groups`` and/or ``.pvalue``, ``.null_mean``, ``.null_std``.

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
    options = _options(locals())
    layers = _pair_layers(x, y, sample_dims=sample_dims, storage_options=storage_options)
    lx, ly = layers[0], layers[-1]
    n, p, q = lx.data.shape[0], lx.data.shape[1], ly.data.shape[1]
    chosen = _methods.choose("cka" if kernel == "linear" else "rbf_cka", method, n, p, q)
    if chosen == "covariance":
        measure = _cka.debiased_linear_cka if debiased else _cka.linear_cka
        return _float_result(measure, x, y, **options)
    _only_on_covariance(chosen, options)
    if chosen == "minibatch":
        return _kernels.minibatch_cka(
            lx, ly, kernel=kernel, sigma=sigma, batch_size=batch_size, seed=seed, level=level
        )
    if kernel == "rbf":
        return _kernels.rbf_cka(lx, ly, sigma, debiased=debiased, seed=seed)
    if chosen == "gram":
        return _kernels.gram_cka(lx, ly, debiased=debiased)
    return _kernels.tiled_cka(lx, ly, debiased=debiased)


def cca(
    x: Any,
    y: Any,
    *,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
    seed: int = 0,
    method: str = "auto",
) -> _cca.CCAResult:
    """Canonical correlation analysis between two layers' activations.

    Parameters
    ----------
    method
        ``"auto"``/``"covariance"`` (default): from the co-moments. ``"qr"``: from a
        tall-skinny QR of the centred data (Demmel et al. 2012), which does not square the
        condition number: use it for ill-conditioned activations, where the co-moment path
        loses digits (the same option exists on ``svcca``, ``pwcca``, ``linear_regression``).

    Returns
    -------
    CCAResult
        ``.rho``: all canonical correlations, descending; ``.mean``: their mean (SVCCA's
        similarity); ``.r2``: mean of their squares (R^2_CCA, Yanai's generalised
        coefficient of determination); ``.truncated_mean(0.98)``: the mean the SVCCA reference
        code reports.

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
    qr_pair = _qr_layers(method, x, y, **_options(locals()))
    if qr_pair:
        return _qr.cca(*qr_pair)
    rho, replicates, null = _evaluate(lambda p: _cca.cca(p).rho, x, y, **_options(locals()))
    return _cca.CCAResult(
        rho, replicates=tuple(replicates or ()), level=level, null=tuple(null or ())
    )


def svcca(
    x: Any,
    y: Any,
    *,
    keep: float | int = 0.99,
    spectrum: str = "variance",
    center: bool = True,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
    seed: int = 0,
    method: str = "auto",
) -> float:
    """Singular vector CCA (Raghu et al. 2017): CCA on each side's top singular directions.

    Parameters
    ----------
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
        implementations do; CCA on the projections centres them either way.

    Returns
    -------
    float
        The mean canonical correlation between the kept directions.

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
    qr_pair = _qr_layers(method, x, y, **_options(locals()))
    if qr_pair:
        if not center:
            raise ValueError("method='qr' takes the SVD of centred data only (center=True)")
        return _qr.svcca(*qr_pair, keep=keep, spectrum=spectrum)

    def measure(p: Pair) -> float:
        return _cca.svcca(p, keep=keep, spectrum=spectrum, center=center)

    return _float_result(measure, x, y, **_options(locals()))


def pwcca(
    x: Any,
    y: Any,
    *,
    definition: str = "paper",
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
    seed: int = 0,
    method: str = "auto",
) -> float:
    """Projection-weighted CCA (Morcos, Raghu & Bengio 2018).

    A weighted mean of the canonical correlations, each weighted by how much of the layer's
    activity its canonical variate accounts for.

    Parameters
    ----------
    definition
        ``"paper"`` (default): the side with fewer units (x on ties) gives canonical variates
        ``h_i`` (unit norm); ``alpha_i = sum_j |<h_i, x_j>|`` over its centred units ``x_j``;
        the result is ``sum_i alpha_i rho_i / sum_i alpha_i``.
        ``"reference"``: what the SVCCA reference code's ``compute_pwcca`` returns, for users
        migrating from it; it uses unwhitened directions with the neuron means added back,
        so its numbers differ from the paper's.

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
    qr_pair = _qr_layers(method, x, y, **_options(locals()))
    if qr_pair:
        if definition != "paper":
            raise ValueError("method='qr' computes the paper's definition only")
        return _qr.pwcca(*qr_pair)
    measure = _cca.pwcca if definition == "paper" else _cca.pwcca_reference
    return _float_result(measure, x, y, **_options(locals()))


def linear_regression(
    x: Any,
    y: Any,
    *,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
    seed: int = 0,
    method: str = "auto",
) -> float:
    """Fraction of y's variance explained by a least-squares linear fit (with intercept) from x.

    ``R^2 = tr(Myx Mxx^+ Mxy) / tr(Myy)`` (Kornblith et al. 2019, Table 1). Not symmetric.
    Invariant to invertible linear maps of x and orthogonal transforms and scaling of y.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 3))
    >>> round(linear_regression(x, np.hstack([x, rng.normal(size=(1000, 3))])), 2)
    0.5
    """
    qr_pair = _qr_layers(method, x, y, **_options(locals()))
    if qr_pair:
        return _qr.linear_regression(*qr_pair)
    return _float_result(_cca.linear_regression, x, y, **_options(locals()))


def procrustes(
    x: Any,
    y: Any,
    *,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
    seed: int = 0,
) -> float:
    """Orthogonal Procrustes similarity ``||X_c^T Y_c||_* / (||X_c||_F ||Y_c||_F)``.

    One minus half the squared Procrustes distance between the centred, Frobenius-normalised
    activations, after the best rotation of one onto the other (Kornblith et al. 2019,
    Table 1). In [0, 1]; invariant to orthogonal transforms and isotropic scaling.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 6))
    >>> q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    >>> round(procrustes(x, 2 * x @ q), 6)
    1.0
    """
    return _float_result(_cka.procrustes, x, y, **_options(locals()))


#: name -> (function of a Pair, description stored in the result's attrs)
METRICS: dict[str, tuple[Callable[[Pair], float], str]] = {
    "cka": (_cka.linear_cka, "linear CKA (Kornblith et al. 2019)"),
    "cka_debiased": (
        _cka.debiased_linear_cka,
        "linear CKA with unbiased HSIC (Song et al. 2012; Nguyen et al. 2021)",
    ),
    "mean_cca": (lambda p: _cca.cca(p).mean, "mean of all canonical correlations"),
    "r2_cca": (lambda p: _cca.cca(p).r2, "mean of squared canonical correlations"),
    "svcca": (
        _cca.svcca,
        "SVCCA (Raghu et al. 2017): mean canonical correlation of the singular directions "
        "holding 99% of each side's variance",
    ),
    "pwcca": (_cca.pwcca, "projection-weighted CCA (Morcos et al. 2018), paper definition"),
    "linear_regression": (
        _cca.linear_regression,
        "fraction of layer_b's variance explained by a linear fit from layer_a",
    ),
    "procrustes": (_cka.procrustes, "orthogonal Procrustes similarity"),
    "matched_correlation": (
        _neurons.matched_correlation,
        "mean correlation of one-to-one (bipartite) matched units (Li et al. 2016)",
    ),
}
#: what compare computes when no metrics are named: the eight similarity measures
DEFAULT_METRICS = (
    "cka",
    "cka_debiased",
    "mean_cca",
    "r2_cca",
    "svcca",
    "pwcca",
    "linear_regression",
    "procrustes",
)


def _sample_dims_for(value: Any, sample_dims: SampleDims) -> SampleDims:
    # In a Dataset, a conv layer may have ("sample", "height", "width") where a dense layer
    # has only "sample": each variable uses the sample dims it has.
    if isinstance(value, xr.DataArray) and sample_dims is not None:
        dims = (sample_dims,) if isinstance(sample_dims, str) else tuple(sample_dims)
        present = tuple(d for d in dims if d in value.dims)
        return present or dims
    return sample_dims


def _resized(
    inputs_a: dict, inputs_b: dict, spatial_dims: Sequence[Hashable]
) -> tuple[dict, dict]:
    """Interpolate smaller spatial grids of xarray layers up to the largest one."""
    arrays = [v for v in (*inputs_a.values(), *inputs_b.values()) if isinstance(v, xr.DataArray)]
    target = {d: max((v.sizes[d] for v in arrays if d in v.dims), default=0) for d in spatial_dims}

    def grow(value: Any) -> Any:
        if not isinstance(value, xr.DataArray):
            return value
        dims = [d for d in spatial_dims if d in value.dims and value.sizes[d] < target[d]]
        if not dims:
            return value
        centres = {d: (np.arange(value.sizes[d]) + 0.5) / value.sizes[d] for d in dims}
        wanted = {d: (np.arange(target[d]) + 0.5) / target[d] for d in dims}
        out = value.drop_vars(dims, errors="ignore").assign_coords(centres)
        if isinstance(out.data, da.Array):
            out = out.chunk({d: -1 for d in dims})
        out = out.astype(np.float64).interp(wanted, kwargs={"fill_value": "extrapolate"})
        return out.drop_vars(dims)

    grown_a = {k: grow(v) for k, v in inputs_a.items()}
    grown_b = grown_a if inputs_b is inputs_a else {k: grow(v) for k, v in inputs_b.items()}
    return grown_a, grown_b


def compare(
    a: Any,
    b: Any = None,
    *,
    metrics: Iterable[str] = DEFAULT_METRICS,
    sample_dims: SampleDims = None,
    pool: str | None = None,
    resize: bool = False,
    spatial_dims: Sequence[Hashable] = ("height", "width"),
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
    interval: str | None = None,
    level: float = 0.95,
    groups: int = JACKKNIFE_GROUPS,
    permutations: int = 0,
    seed: int = 0,
    method: str = "auto",
    batch_size: int = 1000,
) -> xr.Dataset:
    """Several measures for every pair of layers of ``a`` and ``b``, from one pass over the data.

    Parameters
    ----------
    a, b
        Each a single input (any kind :func:`cka` takes), an ``xarray.Dataset`` (one variable
        per layer), a mapping of layer names to inputs, or a zarr group (object, path or URL).
        ``b=None`` compares ``a`` with itself.
    metrics
        Names from ``dask_repsim.METRICS``: ``cka``, ``cka_debiased``, ``mean_cca``,
        ``r2_cca``, ``svcca``, ``pwcca``, ``linear_regression``, ``procrustes`` (the
        default, ``DEFAULT_METRICS``), and ``matched_correlation`` (mean correlation of
        one-to-one matched units, Li et al. 2016).
    sample_dims
        For xarray inputs, the dims that index samples; each variable uses those it has. A conv
        layer's ``("sample", "height", "width")`` folds spatial positions into samples (the
        SVCCA tutorials' method); the default, ``"sample"`` alone, flattens them into features.
    pool
        ``"mean"`` averages conv layers' ``spatial_dims`` away (plain arrays: every axis after
        the second) before comparing.
    resize
        When spatial positions are folded into samples, layers need the same grid: ``True``
        interpolates (linearly, on pixel centres) every smaller ``spatial_dims`` grid up to the
        largest one among xarray inputs.
    interval, level, groups
        ``interval="jackknife"`` adds ``<metric>_stderr``, ``<metric>_low`` and
        ``<metric>_high`` variables: a delete-a-group jackknife over ``groups`` contiguous
        ranges of samples, from the same pass.
    permutations, seed
        ``permutations=K`` adds ``<metric>_pvalue``, ``<metric>_null_mean`` and
        ``<metric>_null_std``: a permutation test of every cell from the same pass, side
        ``b``'s samples permuted within chunks (:mod:`dask_repsim.uncertainty`). Each task
        holds K cross matrices of (features of a) x (features of b); an error says when
        that exceeds the memory budget.
    method, batch_size
        ``"auto"`` (default) and ``"covariance"``: the one-pass co-moments, every metric;
        ``"auto"`` falls back to the exact wide-layer CKA paths (``"gram"`` or ``"tiled"``,
        per pair) when only CKA is asked for and a pair of layers is too wide for the
        co-moments. ``"qr"``: one tall-skinny QR pass over all layers; the CCA family
        (``mean_cca``, ``r2_cca``, ``svcca``, ``pwcca``, ``linear_regression``) without
        squaring the condition number. ``"gram"``, ``"tiled"``: exact ``cka`` and
        ``cka_debiased`` from sample-space Gram blocks or feature tiles, one computation per
        pair. ``"minibatch"``: the minibatch estimate of ``cka`` (Nguyen et al. 2021, an
        approximation, with ``cka_low``/``cka_high`` bootstrap intervals) per pair, with
        ``batch_size`` samples per batch. The path used is in ``attrs["method"]``; see
        :mod:`dask_repsim.methods`.

    Returns
    -------
    xarray.Dataset
        One variable per metric over dims ``(layer_a, layer_b)``, layer names as coordinates;
        attrs say how many samples were used and what each metric is.

    Notes
    -----
    The statistics of all layers' features side by side are computed in one pass: every
    chunk of every array is read once, however many pairs and metrics there are.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 8))
    >>> ds = compare({"x": x}, {"y": x[:, ::-1]}, metrics=["cka", "procrustes"])
    >>> float(ds.cka.sel(layer_a="x", layer_b="y")), ds.cka.dims
    (1.0, ('layer_a', 'layer_b'))
    """
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    if not metrics:
        raise ValueError("no metrics asked for")
    inputs_a = layers_of(a, "x", storage_options)
    inputs_b = inputs_a if b is None or b is a else layers_of(b, "y", storage_options)
    if resize:
        inputs_a, inputs_b = _resized(inputs_a, inputs_b, spatial_dims)

    def _layer(name: str, value: Any) -> Layer:
        return as_layer(
            value,
            name=name,
            sample_dims=_sample_dims_for(value, sample_dims),
            storage_options=storage_options,
            pool=pool,
            spatial_dims=spatial_dims,
        )

    side_a = [_layer(name, value) for name, value in inputs_a.items()]
    side_b = side_a if inputs_b is inputs_a else [_layer(n, v) for n, v in inputs_b.items()]
    layers = _distinct(side_a + side_b)  # an array on both sides is read once
    position = {layer.data.name: i for i, layer in enumerate(layers)}
    rows = [position[layer.data.name] for layer in side_a]
    cols = [position[layer.data.name] for layer in side_b]
    counts = {layer.name: layer.data.shape[0] for layer in layers}
    if len(set(counts.values())) > 1:
        (small, n_small), (large, n_large) = (
            min(counts.items(), key=lambda kv: kv[1]),
            max(counts.items(), key=lambda kv: kv[1]),
        )
        raise ValueError(
            f"layers have different numbers of samples: {large} has {n_large}, {small} has "
            f"{n_small}; if spatial positions are folded into samples, use pool='mean', "
            "resize=True, or fold fewer sample_dims"
        )
    _check_interval(interval)
    widths = [layer.data.shape[1] for layer in layers]
    chosen = _compare_method(method, metrics, widths, rows, cols)
    if chosen != "covariance":
        _only_on_covariance(chosen, _options(locals()))
        values, extra, attrs = _grid_by_method(
            chosen, metrics, layers, rows, cols, level=level, seed=seed, batch_size=batch_size
        )
        dims = ("layer_a", "layer_b")
        variables = {
            m: (dims, values[k_], {"long_name": m, "description": METRICS[m][1]})
            for k_, m in enumerate(metrics)
        }
        variables.update({name: (dims, arr, {"long_name": name}) for name, arr in extra.items()})
        attrs = {
            "n_samples": layers[0].data.shape[0],
            "n_samples_omitted": 0,
            "dask_repsim_version": __version__,
            "metrics": ", ".join(metrics),
            "method": chosen,
            **attrs,
        }
        return xr.Dataset(
            variables, coords={"layer_a": list(inputs_a), "layer_b": list(inputs_b)},
            attrs=attrs,
        )
    passes = _methods.plan_passes(widths, rows, cols, _methods.max_features())
    if len(passes) > 1:
        warnings.warn(
            f"the {sum(widths)} features of all layers do not fit the memory budget together: "
            f"computing the grid in {len(passes)} passes over the data (set dask config "
            "'repsim.memory-budget' to change the budget)",
            RepsimWarning,
            stacklevel=2,
        )
    k = _check_permutations(
        permutations,
        max(
            sum(widths[i] for i in set(rows) & set(subset))
            * sum(widths[j] for j in set(cols) & set(subset))
            for subset in passes
        ),
    )
    dims = ("layer_a", "layer_b")
    shape = (len(metrics), len(rows), len(cols))
    values = np.full(shape, np.nan)
    reps = np.full((groups, *shape), np.nan) if interval else None
    nulls = np.full((k, *shape), np.nan) if k else None
    done = np.zeros((len(rows), len(cols)), dtype=bool)
    for subset in passes:
        todo = [
            (i, j) for i, ra in enumerate(rows) for j, cb in enumerate(cols)
            if not done[i, j] and ra in subset and cb in subset
        ]
        if not todo:
            continue
        position = {layer: pos for pos, layer in enumerate(subset)}
        names = [layers[i].name for i in subset]

        def grid(stats: Statistics, todo=todo, position=position, names=names) -> np.ndarray:
            """metrics x rows x cols values (NaN outside ``todo``) from one pass's statistics."""
            layer_sides = sides(stats, names)
            out = np.full(shape, np.nan)
            for i, j in todo:
                p = pair(stats, layer_sides, position[rows[i]], position[cols[j]])
                for m, metric in enumerate(metrics):
                    out[m, i, j] = METRICS[metric][0](p)
            return out

        # the null: layers of side a (as in the pass) against side b's, rows permuted
        null_a = sorted({position[rows[i]] for i, _ in todo})
        null_b = sorted({position[cols[j]] for _, j in todo})
        parts, permuted = one_pass(
            [layers[i] for i in subset],
            groups=groups if interval else 1,
            nan_policy=nan_policy,
            null=(null_a, null_b, k, seed) if k else None,
            pairs=[(position[rows[i]], position[cols[j]]) for i, j in todo],
        )
        mask = np.zeros(done.shape, dtype=bool)
        mask[tuple(np.array(todo).T)] = True
        stats = total(parts)
        values = np.where(mask, grid(stats), values)
        if interval is not None:
            reps = np.where(mask, np.stack(replicate(grid, parts)), reps)
        if k:
            layer_sides = sides(stats, names)
            for i, j in todo:
                a, b = position[rows[i]], position[cols[j]]
                permuted_ij = permuted_pairs(
                    stats, layer_sides, permuted, a, b, null_a.index(a), null_b.index(b)
                )
                for m, metric in enumerate(metrics):
                    nulls[:, m, i, j] = quietly(METRICS[metric][0], permuted_ij)
        done |= mask
    variables = {
        m: (dims, values[k_], {"long_name": m, "description": METRICS[m][1]})
        for k_, m in enumerate(metrics)
    }
    attrs = {
        "n_samples": stats.count,
        "n_samples_omitted": stats.omitted,
        "dask_repsim_version": __version__,
        "metrics": ", ".join(metrics),
        "method": "covariance",
        "n_passes": len(passes),
    }
    if interval is not None:
        stderr, low, high = jackknife_interval(values, reps, level)
        texts = {
            "stderr": "jackknife standard error",
            "low": f"lower end of the {level:.0%} jackknife interval",
            "high": f"upper end of the {level:.0%} jackknife interval",
        }
        for m_, m in enumerate(metrics):
            for suffix, arr in (("stderr", stderr), ("low", low), ("high", high)):
                text = f"{texts[suffix]} of {m}"
                variables[f"{m}_{suffix}"] = (dims, arr[m_], {"long_name": text})
        attrs.update(interval="jackknife", level=level, n_groups=groups)
    if k:
        summaries = {
            "pvalue": (permutation_pvalue(values, nulls), "permutation p-value"),
            "null_mean": (nulls.mean(axis=0), "mean under permutation"),
            "null_std": (nulls.std(axis=0, ddof=1), "standard deviation under permutation"),
        }
        for m_, m in enumerate(metrics):
            for suffix, (arr, text) in summaries.items():
                variables[f"{m}_{suffix}"] = (dims, arr[m_], {"long_name": f"{text} of {m}"})
        attrs.update(permutations=k, seed=seed)
    return xr.Dataset(
        variables, coords={"layer_a": list(inputs_a), "layer_b": list(inputs_b)}, attrs=attrs
    )


#: the metrics each path other than the co-moments computes
_PATH_METRICS = {
    "qr": ("mean_cca", "r2_cca", "svcca", "pwcca", "linear_regression"),
    "gram": ("cka", "cka_debiased"),
    "tiled": ("cka", "cka_debiased"),
    "minibatch": ("cka",),
}


def _compare_method(
    method: str, metrics: Sequence[str], widths: Sequence[int], rows: Sequence[int],
    cols: Sequence[int],
) -> str:
    """The path ``compare`` uses: ``method``, or for ``"auto"`` the co-moments unless only
    CKA is asked for and some pair of layers is too wide for them (then ``"wide"``: each
    pair's own exact CKA path)."""
    allowed = ("auto", "covariance", *_PATH_METRICS)
    if method not in allowed:
        raise ValueError(f"method must be one of {allowed}, not {method!r}")
    if method == "auto":
        widest = max(widths[r] for r in rows) + max(widths[c] for c in cols)
        only_cka = set(metrics) <= set(_PATH_METRICS["gram"])
        return "wide" if only_cka and widest > _methods.max_features() else "covariance"
    if method != "covariance":
        unsupported = [m for m in metrics if m not in _PATH_METRICS[method]]
        if unsupported:
            raise ValueError(
                f"method={method!r} computes {', '.join(_PATH_METRICS[method])}, not "
                f"{', '.join(unsupported)}; compute those with method='covariance'"
            )
    return method


def _grid_by_method(
    chosen: str, metrics: Sequence[str], layers: Sequence[Layer], rows: Sequence[int],
    cols: Sequence[int], *, level: float, seed: int, batch_size: int,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """(metrics x rows x cols values, extra variables, attrs) on a path other than the
    co-moments."""
    values = np.full((len(metrics), len(rows), len(cols)), np.nan)
    extra: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    if chosen == "qr":
        factor = _qr.tsqr(layers)  # one pass over every layer
        slices = factor.slices
        functions = {
            "mean_cca": lambda f, names: _qr.canonical_correlations_from_r(f, names).mean,
            "r2_cca": lambda f, names: _qr.canonical_correlations_from_r(f, names).r2,
            "svcca": _qr.svcca_from_r,
            "pwcca": _qr.pwcca_from_r,
            "linear_regression": _qr.linear_regression_from_r,
        }
        for i, a in enumerate(rows):
            for j, b in enumerate(cols):
                # X_c = Q R[:, a] for every layer with one Q: a pair's columns of R are a
                # factor of that pair
                sub = _qr.RFactor(
                    (layers[a].data.shape[1], layers[b].data.shape[1]),
                    factor.count,
                    np.concatenate([factor.mean[slices[a]], factor.mean[slices[b]]]),
                    np.hstack([factor.r[:, slices[a]], factor.r[:, slices[b]]]),
                )
                names = (layers[a].name, layers[b].name)
                for k, m in enumerate(metrics):
                    values[k, i, j] = functions[m](sub, names)
        attrs["n_passes"] = 1
        return values, extra, attrs
    low = np.full(values.shape, np.nan)
    high = np.full(values.shape, np.nan)
    used = set()
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            la, lb = layers[a], layers[b]
            path = chosen
            if chosen == "wide":
                n, p, q = la.data.shape[0], la.data.shape[1], lb.data.shape[1]
                path = _methods.choose("cka", "auto", n, p, q)
            used.add(path)
            # one pass (or one set of Gram / tile sums) per pair gives every metric
            debiased = [m == "cka_debiased" for m in metrics]
            if path == "covariance":
                stats = _pair(la.data, lb.data)
                values[:, i, j] = [METRICS[m][0](stats) for m in metrics]
            elif path == "gram":
                values[:, i, j] = _kernels.gram_cka_values(la, lb, debiased)
            elif path == "tiled":
                values[:, i, j] = _kernels.tiled_cka_values(la, lb, debiased)
            else:  # minibatch: linear CKA only
                r = _kernels.minibatch_cka(la, lb, batch_size=batch_size, seed=seed, level=level)
                values[:, i, j], low[:, i, j], high[:, i, j] = float(r), r.ci_low, r.ci_high
                attrs["n_batches"] = r.n_batches
    if chosen == "minibatch":
        extra = {"cka_low": low[0], "cka_high": high[0]}
        attrs.update(
            approximate="minibatch CKA (Nguyen et al. 2021): unbiased HSIC averaged over "
            f"minibatches of {batch_size} samples, {level:.0%} bootstrap intervals",
            batch_size=batch_size, level=level,
        )
    if chosen == "wide":  # each pair's own exact path
        attrs["method"] = ", ".join(sorted(used))
    return values, extra, attrs
