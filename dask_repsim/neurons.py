"""Aligning individual units between networks (Li, Yosinski, Clune, Lipson & Hopcroft 2016).

Unit-by-unit correlations, one-to-one (bipartite) and one-to-best (semi) matching, sparse linear
prediction of one layer's units from another's, and spectral clustering of the units of both
layers: every one of them is a function of the co-moments of one statistics pass
(:mod:`dask_repsim.statistics`), so the samples are read once and nothing of size n reaches the
client. Private kernels take a :class:`~dask_repsim.statistics.Pair`; the public functions run
the pass and label the results with the units' coordinates.

Constant units (dead ReLUs) have no correlation with anything (0/0). They are reported with a
:class:`~dask_repsim.RepsimWarning` and then: set to correlation 0 in
:func:`unit_correlation`, left out of :func:`match_units` and :func:`matched_correlation`,
given weight 0 as predictors and left out as targets in :func:`sparse_prediction`, and labelled
-1 in :func:`cluster_units`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment

from .exceptions import RepsimWarning
from .inputs import _split_dims
from .statistics import RANK_RTOL, Pair, Side

SampleDims = Sequence[Hashable] | str | None

__all__ = [
    "cluster_units",
    "match_units",
    "matched_correlation",
    "sparse_prediction",
    "unit_correlation",
]


# ---------------------------------------------------------------------------------------------
# Kernels: functions of a Pair (small matrices only)


def _warn_constant(side: Side, consequence: str, stacklevel: int = 4) -> None:
    n_constant = int(side.constant.sum())
    if n_constant:
        warnings.warn(
            f"{side.name}: {n_constant} of {side.n_features} units are constant over the "
            f"{side.count} samples, so their correlations are undefined; {consequence}",
            RepsimWarning,
            stacklevel=stacklevel,
        )


def _std(side: Side) -> np.ndarray:
    """sqrt(M_ii): the units' centred root sums of squares, 1 where a unit is constant."""
    return np.where(side.constant, 1.0, np.sqrt(np.clip(np.diagonal(side.comoment), 0, None)))


def _cross_correlation(pair: Pair) -> np.ndarray:
    """p x q Pearson correlations M_xy,ij / sqrt(M_xx,ii M_yy,jj); 0 for constant units."""
    corr = pair.cross / np.outer(_std(pair.x), _std(pair.y))
    corr[pair.x.constant] = 0.0
    corr[:, pair.y.constant] = 0.0
    return np.clip(corr, -1.0, 1.0)


def _self_correlation(side: Side) -> np.ndarray:
    """p x p correlations of a layer's units with each other; 0 for constant units."""
    s = _std(side)
    corr = side.comoment / np.outer(s, s)
    corr[side.constant] = 0.0
    corr[:, side.constant] = 0.0
    return np.clip(corr, -1.0, 1.0)


def _match(pair: Pair, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (into x's and y's units) and correlations of matched pairs, strongest first."""
    if method not in ("bipartite", "semi"):
        raise ValueError(f"method must be 'bipartite' or 'semi', not {method!r}")
    pair.x.require_variance()
    pair.y.require_variance()
    for side in (pair.x, pair.y):
        _warn_constant(side, "they are left out of the matching")
    live_x = np.flatnonzero(~pair.x.constant)
    live_y = np.flatnonzero(~pair.y.constant)
    corr = _cross_correlation(pair)[np.ix_(live_x, live_y)]
    if method == "bipartite":
        rows, cols = linear_sum_assignment(corr, maximize=True)
    else:
        rows = np.arange(len(live_x))
        cols = np.argmax(corr, axis=1)
    values = corr[rows, cols]
    order = np.argsort(-values, kind="stable")
    return live_x[rows[order]], live_y[cols[order]], values[order]


def matched_correlation(pair: Pair) -> float:
    """Mean correlation of the bipartite-matched units of a :class:`~dask_repsim.statistics.Pair`.

    The one-to-one assignment of x's units to y's maximising the total (signed) correlation
    (Li et al. 2016), with ``min(p, q)`` pairs; constant units are left out with a warning.
    1 when y's units are x's permuted and rescaled.

    Parameters
    ----------
    pair
        The statistics of two layers, as the statistics engine gives them.

    Returns
    -------
    float
        The mean of the matched correlations, in [-1, 1].

    Notes
    -----
    With ``C_ij = M_xy,ij / sqrt(M_xx,ii M_yy,jj)`` the matched pairs solve
    ``max_pi sum_i C_i,pi(i)`` over one-to-one maps ``pi`` (the Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``); the result is that sum divided by ``min(p, q)``.

    References
    ----------
    Li, Yosinski, Clune, Lipson, Hopcroft (2016). Convergent Learning: Do different neural
    networks learn the same representations? ICLR.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> from dask_repsim.statistics import comoments, pair, sides
    >>> x = np.random.default_rng(0).normal(size=(200, 5))
    >>> stats = comoments([as_layer(x, name="x"), as_layer(3 * x[:, ::-1], name="y")])
    >>> round(matched_correlation(pair(stats, sides(stats, ["x", "y"]), 0, 1)), 6)
    1.0
    """
    return float(np.mean(_match(pair, "bipartite")[2]))


def _sparse_fits(
    pair: Pair, alphas: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lasso weights (alphas, p, q_live), loss per alpha, and the indices of y's live units."""
    try:
        from sklearn.linear_model import Lasso
    except ImportError as err:  # an optional dependency: only this measure needs it
        raise ImportError(
            "sparse_prediction needs scikit-learn; install it with "
            "`pip install dask-repsim[neurons]` or `pip install scikit-learn`"
        ) from err
    x, y = pair.x, pair.y
    x.require_variance()
    y.require_variance()
    _warn_constant(x, "they get weight 0 as predictors")
    _warn_constant(y, "they are left out as targets")
    live_x = np.flatnonzero(~x.constant)
    live_y = np.flatnonzero(~y.constant)
    # Standardised units: Xs^T Xs / n and Xs^T Ys / n are correlation matrices.
    cxx = _self_correlation(x)[np.ix_(live_x, live_x)]
    cxy = _cross_correlation(pair)[np.ix_(live_x, live_y)]
    # Square root of cxx from its eigendecomposition, so that collinear (duplicated) units need no
    # special case: root^T root = cxx and root^T target = cxy, hence
    # (1/2n)||ys - Xs w||^2 = (1/2)||t - root w||^2 + const for each target column t.
    values, vectors = np.linalg.eigh(cxx)
    good = values > RANK_RTOL * values[-1]
    scale = np.sqrt(values[good])
    root = scale[:, None] * vectors[:, good].T
    target = (vectors[:, good].T @ cxy) / scale[:, None]
    rows = root.shape[0]
    weights = np.zeros((len(alphas), x.n_features, len(live_y)))
    model = Lasso(fit_intercept=False, tol=tol, max_iter=max_iter, warm_start=True)
    # Largest penalty first: each fit starts from the sparser solution of the previous one.
    for k in np.argsort(-alphas, kind="stable"):
        if alphas[k] == 0:  # ordinary least squares, minimum-norm on collinear units
            w = vectors[:, good] @ (target / scale[:, None])
        else:
            # scikit-learn divides the squared error by its own row count: rescale alpha so the
            # minimiser is the full-data Lasso's.
            model.set_params(alpha=alphas[k] / rows)
            model.fit(root, target)
            w = np.reshape(model.coef_, (len(live_y), len(live_x))).T
        weights[k][live_x] = w
    w_live = weights[:, live_x, :]
    # ||ys_j - Xs w_j||^2 / n = 1 - 2 w_j^T c_j + w_j^T C w_j, averaged over targets
    fit = np.einsum("api,pi->a", w_live, cxy)
    quad = np.einsum("api,pq,aqi->a", w_live, cxx, w_live)
    loss = (len(live_y) - 2 * fit + quad) / len(live_y)
    return weights, loss, live_y


def _cluster(pair: Pair, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral-clustering labels of x's and y's units (-1 for constant units)."""
    try:
        from sklearn.cluster import SpectralClustering
    except ImportError as err:
        raise ImportError(
            "cluster_units needs scikit-learn; install it with "
            "`pip install dask-repsim[neurons]` or `pip install scikit-learn`"
        ) from err
    x, y = pair.x, pair.y
    x.require_variance()
    y.require_variance()
    for side in (x, y):
        _warn_constant(side, "they are left out of the clustering and labelled -1")
    cross = _cross_correlation(pair)
    corr = np.block([[_self_correlation(x), cross], [cross.T, _self_correlation(y)]])
    live = np.flatnonzero(np.concatenate([~x.constant, ~y.constant]))
    if not 1 <= n_clusters <= len(live):
        raise ValueError(
            f"n_clusters must be between 1 and the {len(live)} non-constant units, "
            f"not {n_clusters}"
        )
    affinity = np.abs(corr[np.ix_(live, live)])
    np.fill_diagonal(affinity, 1.0)
    model = SpectralClustering(n_clusters, affinity="precomputed", random_state=seed)
    labels = np.full(x.n_features + y.n_features, -1)
    labels[live] = model.fit_predict(affinity)
    return labels[: x.n_features], labels[x.n_features :]


# ---------------------------------------------------------------------------------------------
# Labelled layer: run the pass, attach the units' coordinates


def _statistics(
    x: Any,
    y: Any,
    sample_dims: SampleDims,
    storage_options: Mapping[str, Any] | None,
    nan_policy: str,
) -> Pair:
    # Imported here: the api module may register this module's measures in METRICS.
    from .api import _pair

    return _pair(
        x, y, sample_dims=sample_dims, storage_options=storage_options, nan_policy=nan_policy
    )


def _unit_labels(obj: Any, n_features: int, sample_dims: SampleDims) -> np.ndarray:
    """The coordinate of a DataArray's single feature dim, else 0..n_features-1."""
    if isinstance(obj, xr.DataArray):
        _, features = _split_dims(obj, sample_dims, "input")
        if len(features) == 1 and features[0] in obj.coords:
            return np.asarray(obj[features[0]].values)
    return np.arange(n_features)


def _labels(x: Any, y: Any, pair: Pair, sample_dims: SampleDims) -> tuple[np.ndarray, np.ndarray]:
    return (
        _unit_labels(x, pair.x.n_features, sample_dims),
        _unit_labels(y, pair.y.n_features, sample_dims),
    )


def unit_correlation(
    x: Any,
    y: Any,
    *,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
) -> xr.DataArray:
    """Pearson correlation of every unit of x with every unit of y.

    Parameters
    ----------
    x, y
        Activations, samples along the first axis (or the ``sample_dims`` of a DataArray):
        numpy, dask or zarr arrays, zarr paths or URLs, or xarray DataArrays. Same samples, in
        the same order, in both.
    sample_dims
        For DataArrays, the dims that index samples; all others are features.
    storage_options
        Passed to fsspec when ``x`` or ``y`` is a zarr URL.
    nan_policy
        ``"raise"`` (default) or ``"omit"`` (leave samples with NaN/Inf out of both inputs).

    Returns
    -------
    xarray.DataArray
        Shape (p, q), dims ``(unit_a, unit_b)``. Unit coordinates come from a DataArray input's
        feature dim when it has exactly one, with a coordinate; else they are 0..p-1 (0..q-1).
        Attribute ``n_samples``.

    Warns
    -----
    RepsimWarning
        When some units are constant over the samples: their correlations are undefined and
        are set to 0.

    Notes
    -----
    From the centred co-moments ``M`` of one pass over the samples::

        corr_ij = M_xy,ij / sqrt(M_xx,ii M_yy,jj)

    which is ``np.corrcoef`` of the two layers' units, computed without holding the samples.

    References
    ----------
    Li, Yosinski, Clune, Lipson, Hopcroft (2016). Convergent Learning: Do different neural
    networks learn the same representations? ICLR.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 3))
    >>> corr = unit_correlation(x, -2 * x[:, [2, 0, 1]])
    >>> corr.dims, corr.shape
    (('unit_a', 'unit_b'), (3, 3))
    >>> np.round(corr.values).astype(int)
    array([[ 0, -1,  0],
           [ 0,  0, -1],
           [-1,  0,  0]])
    """
    p = _statistics(x, y, sample_dims, storage_options, nan_policy)
    for side in (p.x, p.y):
        _warn_constant(side, "they are set to 0", stacklevel=3)
    labels_a, labels_b = _labels(x, y, p, sample_dims)
    return xr.DataArray(
        _cross_correlation(p),
        dims=("unit_a", "unit_b"),
        coords={"unit_a": labels_a, "unit_b": labels_b},
        name="correlation",
        attrs={"n_samples": p.count, "description": "Pearson correlation of unit pairs"},
    )


def match_units(
    x: Any,
    y: Any,
    *,
    method: str = "bipartite",
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
) -> xr.Dataset:
    """Match the units of x to the units of y by the correlation of their activations.

    Parameters
    ----------
    x, y
        Activations, as :func:`unit_correlation` takes them.
    method
        ``"bipartite"`` (default): the one-to-one assignment with the largest total correlation,
        ``min(p, q)`` pairs. ``"semi"``: every unit of x with its most correlated unit of y
        (several units of x may share one of y), p pairs.
    sample_dims, storage_options, nan_policy
        As in :func:`unit_correlation`.

    Returns
    -------
    xarray.Dataset
        Along dim ``pair``, strongest first: ``unit_a`` and ``unit_b`` (the units' coordinates)
        and their ``correlation``. Attributes ``method`` and ``n_samples``.

    Warns
    -----
    RepsimWarning
        When some units are constant over the samples: they are left out of the matching.

    Notes
    -----
    Signed Pearson correlation is used, as by Li et al. (2016): a unit is matched to the unit
    that rises and falls with it, not to one that is its mirror image. With
    ``C_ij = M_xy,ij / sqrt(M_xx,ii M_yy,jj)``, bipartite matching solves
    ``max_pi sum_i C_i,pi(i)`` over one-to-one maps ``pi`` (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``); semi-matching takes ``argmax_j C_ij`` for each i.

    References
    ----------
    Li, Yosinski, Clune, Lipson, Hopcroft (2016). Convergent Learning: Do different neural
    networks learn the same representations? ICLR.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 4))
    >>> m = match_units(x, 5 * x[:, [3, 1, 0, 2]] + 1)
    >>> sorted(zip(m.unit_a.values.tolist(), m.unit_b.values.tolist()))
    [(0, 2), (1, 1), (2, 3), (3, 0)]
    >>> np.round(m.correlation.values, 6)
    array([1., 1., 1., 1.])
    """
    p = _statistics(x, y, sample_dims, storage_options, nan_policy)
    rows, cols, values = _match(p, method)
    labels_a, labels_b = _labels(x, y, p, sample_dims)
    return xr.Dataset(
        {
            "unit_a": ("pair", labels_a[rows]),
            "unit_b": ("pair", labels_b[cols]),
            "correlation": ("pair", values, {"description": "Pearson correlation"}),
        },
        attrs={"method": method, "n_samples": p.count},
    )


def sparse_prediction(
    x: Any,
    y: Any,
    *,
    alphas: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
    tol: float = 1e-6,
    max_iter: int = 10_000,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
) -> xr.Dataset:
    """Predict each unit of y from the units of x with an L1-penalised linear map (Lasso).

    Both layers' units are standardised (zero mean, unit population variance over the
    samples); for every ``alpha`` and every unit j of y, the weights minimise scikit-learn's
    Lasso objective on all n samples, without intercept::

        (1 / 2n) ||ys_j - Xs w||^2 + alpha ||w||_1

    Parameters
    ----------
    x, y
        Activations, as :func:`unit_correlation` takes them; y is predicted from x.
    alphas
        L1 penalties (>= 0). 0 is ordinary least squares (minimum-norm when units of x are
        collinear).
    tol, max_iter
        Passed to ``sklearn.linear_model.Lasso`` (its stopping criterion is relative to the
        target's squared norm, which here is at most 1).
    sample_dims, storage_options, nan_policy
        As in :func:`unit_correlation`.

    Returns
    -------
    xarray.Dataset
        Over ``alpha`` (in the order given): ``loss``, the mean squared residual over units and
        samples ``||Ys - Xs W||_F^2 / (n q)`` (0: perfect prediction; 1: none, predicting the
        mean); ``weights`` (``alpha``, ``unit_a``, ``unit_b``); ``nonzero``, the number of
        non-zero weights of each unit of y (``alpha``, ``unit_b``). Attribute ``n_samples``.

    Warns
    -----
    RepsimWarning
        When some units are constant over the samples: constant units of x get weight 0,
        constant units of y are left out (they have no standardised value to predict).

    Raises
    ------
    ImportError
        When scikit-learn is not installed.

    Notes
    -----
    Everything comes from the co-moments. With ``C = Xs^T Xs / n`` and ``c_j = Xs^T ys_j / n``
    (correlation matrices) and a square root ``C = R^T R`` (from the eigendecomposition of C,
    keeping eigenvalues above 1e-10 of the largest, so duplicated units need no special
    case), let ``b_j = R^{-T} c_j``. Then::

        (1 / 2n) ||ys_j - Xs w||^2 = (1 / 2) ||b_j - R w||^2 + (1 - ||b_j||^2) / 2

    so scikit-learn's Lasso on the r rows of ``(R, b_j)``, with ``alpha / r`` in place of
    ``alpha`` (it divides the squared error by its own row count), has the full-data Lasso's
    minimiser. The loss is ``mean_j (1 - 2 w_j^T c_j + w_j^T C w_j)``.

    This is the sparse prediction of Li et al. (2016, section 4), whose table reports the
    loss of mapping one network's layer onto another's by layer and L1 penalty; their maps were
    trained by stochastic gradient descent, so their penalties are on another scale.

    References
    ----------
    Li, Yosinski, Clune, Lipson, Hopcroft (2016). Convergent Learning: Do different neural
    networks learn the same representations? ICLR.
    Tibshirani (1996). Regression shrinkage and selection via the lasso. JRSS B.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 6))
    >>> y = x[:, :3] + 0.1 * rng.normal(size=(1000, 3))  # each unit of y copies one of x
    >>> table = sparse_prediction(x, y, alphas=[0.0, 0.1])
    >>> table.loss.round(3).values.tolist()
    [0.01, 0.02]
    >>> table.nonzero.sel(alpha=0.1).values.tolist()
    [1, 1, 1]
    """
    alpha_values = np.asarray(alphas, dtype=float).reshape(-1)
    if alpha_values.size == 0 or not (alpha_values >= 0).all():
        raise ValueError(f"alphas must be one or more numbers >= 0, not {alphas!r}")
    p = _statistics(x, y, sample_dims, storage_options, nan_policy)
    weights, loss, live_y = _sparse_fits(p, alpha_values, tol, max_iter)
    labels_a, labels_b = _labels(x, y, p, sample_dims)
    return xr.Dataset(
        {
            "loss": (
                "alpha",
                loss,
                {"description": "mean squared residual of the standardised units of y"},
            ),
            "weights": (("alpha", "unit_a", "unit_b"), weights),
            "nonzero": (("alpha", "unit_b"), (weights != 0).sum(axis=1)),
        },
        coords={"alpha": alpha_values, "unit_a": labels_a, "unit_b": labels_b[live_y]},
        attrs={"n_samples": p.count},
    )


def cluster_units(
    x: Any,
    y: Any,
    *,
    n_clusters: int,
    seed: int = 0,
    sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise",
) -> xr.Dataset:
    """Spectral clustering of the units of both layers by the correlation of their activations.

    Parameters
    ----------
    x, y
        Activations, as :func:`unit_correlation` takes them.
    n_clusters
        How many clusters.
    seed
        Random state of the k-means step of the spectral clustering.
    sample_dims, storage_options, nan_policy
        As in :func:`unit_correlation`.

    Returns
    -------
    xarray.Dataset
        ``labels_a`` (dim ``unit_a``) and ``labels_b`` (dim ``unit_b``): cluster numbers
        0..n_clusters-1 shared by both layers, -1 for constant units.

    Warns
    -----
    RepsimWarning
        When some units are constant over the samples: they are left out and labelled -1.

    Notes
    -----
    The (p + q) x (p + q) correlation matrix of all units, within and between the layers,
    ``C = D^-1/2 M D^-1/2`` with ``M = [[M_xx, M_xy], [M_yx, M_yy]]`` and ``D = diag(M)``,
    gives the affinity ``|C|`` (absolute correlation: a unit and its sign-flipped copy carry
    the same feature), clustered by ``sklearn.cluster.SpectralClustering(affinity=
    "precomputed")``. A cluster holding units of both networks is a feature they learned in
    common (Li et al. 2016, section 5).

    References
    ----------
    Li, Yosinski, Clune, Lipson, Hopcroft (2016). Convergent Learning: Do different neural
    networks learn the same representations? ICLR.
    Ng, Jordan, Weiss (2001). On spectral clustering: analysis and an algorithm. NIPS.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = rng.normal(size=(1000, 2))  # two features; each unit carries one of them
    >>> x = f[:, [0, 0, 1]] + 0.2 * rng.normal(size=(1000, 3))
    >>> y = f[:, [1, 0]] + 0.2 * rng.normal(size=(1000, 2))
    >>> ds = cluster_units(x, y, n_clusters=2)
    >>> a, b = ds.labels_a.values, ds.labels_b.values
    >>> bool(a[0] == a[1] == b[1] != a[2] == b[0])
    True
    """
    p = _statistics(x, y, sample_dims, storage_options, nan_policy)
    labels_x, labels_y = _cluster(p, int(n_clusters), seed)
    labels_a, labels_b = _labels(x, y, p, sample_dims)
    return xr.Dataset(
        {"labels_a": ("unit_a", labels_x), "labels_b": ("unit_b", labels_y)},
        coords={"unit_a": labels_a, "unit_b": labels_b},
        attrs={"n_clusters": int(n_clusters), "n_samples": p.count},
    )
