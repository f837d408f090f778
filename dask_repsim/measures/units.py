"""Unit-level measures (Li, Yosinski, Clune, Lipson & Hopcroft 2016) as functions of a Pair.

Every function here takes the :class:`~dask_repsim.engine.stream.Pair` (or a
:class:`~dask_repsim.engine.stream.Side`) of one statistics pass, small p x p, p x q and q x q
co-moment matrices, and never the samples: unit-by-unit correlations, one-to-one (bipartite)
and one-to-best (semi) matching, Lasso fits of one layer's units from another's, and spectral
clustering of the units of both layers. :mod:`dask_repsim.pairwise.units` runs the pass and labels
the results with the units' coordinates.

Constant units (dead ReLUs) have no correlation with anything (0/0): :func:`warn_constant`
reports them with a :class:`~dask_repsim.RepsimWarning`, and each measure says what it does
with them.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..engine.views import RANK_RTOL, Pair, Side
from ..exceptions import RepsimWarning

__all__ = [
    "cluster_labels",
    "cross_correlation",
    "matched_correlation",
    "matching",
    "self_correlation",
    "sparse_fits",
    "warn_constant",
]


def warn_constant(side: Side, consequence: str, stacklevel: int = 4) -> None:
    """Warn (:class:`~dask_repsim.RepsimWarning`) when some of ``side``'s units are constant,
    saying what the measure does with them (``consequence``). ``stacklevel`` as in
    ``warnings.warn``; the default points at the caller of a public function that calls a
    measure that calls this."""
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


def cross_correlation(pair: Pair) -> np.ndarray:
    """p x q Pearson correlations M_xy,ij / sqrt(M_xx,ii M_yy,jj); 0 for constant units.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> from dask_repsim.paths.covariance.passes import run_pass
    >>> x = np.random.default_rng(0).normal(size=(100, 2))
    >>> pair = run_pass([as_layer(x, name="x"), as_layer(-3 * x, name="y")]).pair(0, 1)
    >>> np.round(np.diagonal(cross_correlation(pair)), 6).tolist()
    [-1.0, -1.0]
    """
    corr = pair.cross / np.outer(_std(pair.x), _std(pair.y))
    corr[pair.x.constant] = 0.0
    corr[:, pair.y.constant] = 0.0
    return np.clip(corr, -1.0, 1.0)


def self_correlation(side: Side) -> np.ndarray:
    """p x p correlations of a layer's units with each other; 0 for constant units."""
    s = _std(side)
    corr = side.comoment / np.outer(s, s)
    corr[side.constant] = 0.0
    corr[:, side.constant] = 0.0
    return np.clip(corr, -1.0, 1.0)


def matching(pair: Pair, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (into x's and y's units) and correlations of matched pairs, strongest first."""
    if method not in ("bipartite", "semi"):
        raise ValueError(f"method must be 'bipartite' or 'semi', not {method!r}")
    pair.x.require_variance()
    pair.y.require_variance()
    for side in (pair.x, pair.y):
        warn_constant(side, "they are left out of the matching")
    live_x = np.flatnonzero(~pair.x.constant)
    live_y = np.flatnonzero(~pair.y.constant)
    corr = cross_correlation(pair)[np.ix_(live_x, live_y)]
    if method == "bipartite":
        rows, cols = linear_sum_assignment(corr, maximize=True)
    else:
        rows = np.arange(len(live_x))
        cols = np.argmax(corr, axis=1)
    values = corr[rows, cols]
    order = np.argsort(-values, kind="stable")
    return live_x[rows[order]], live_y[cols[order]], values[order]


def matched_correlation(pair: Pair) -> float:
    """Mean correlation of the bipartite-matched units of a
    :class:`~dask_repsim.engine.stream.Pair`.

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
    >>> from dask_repsim.io.inputs import as_layer
    >>> from dask_repsim.engine.stream import comoments
    >>> from dask_repsim.engine.views import pair, sides
    >>> x = np.random.default_rng(0).normal(size=(200, 5))
    >>> stats = comoments([as_layer(x, name="x"), as_layer(3 * x[:, ::-1], name="y")])
    >>> round(matched_correlation(pair(stats, sides(stats, ["x", "y"]), 0, 1)), 6)
    1.0
    """
    return float(np.mean(matching(pair, "bipartite")[2]))


def sparse_fits(
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
    warn_constant(x, "they get weight 0 as predictors")
    warn_constant(y, "they are left out as targets")
    live_x = np.flatnonzero(~x.constant)
    live_y = np.flatnonzero(~y.constant)
    # Standardised units: Xs^T Xs / n and Xs^T Ys / n are correlation matrices.
    cxx = self_correlation(x)[np.ix_(live_x, live_x)]
    cxy = cross_correlation(pair)[np.ix_(live_x, live_y)]
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


def cluster_labels(pair: Pair, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
        warn_constant(side, "they are left out of the clustering and labelled -1")
    cross = cross_correlation(pair)
    corr = np.block([[self_correlation(x), cross], [cross.T, self_correlation(y)]])
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

