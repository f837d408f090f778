"""Aligning individual units between networks (Li, Yosinski, Clune, Lipson & Hopcroft 2016).

Unit-by-unit correlations, one-to-one (bipartite) and one-to-best (semi) matching, sparse linear
prediction of one layer's units from another's, and spectral clustering of the units of both
layers: every one of them is a function of the co-moments of one statistics pass, so the
samples are read once and nothing of size n reaches the client. The pass is the cell of a grid
of one cell on the co-moment path, run by the dispatcher every function shares
(:func:`dask_repsim.runners.run_pair`, as ``compare``'s ``matched_correlation``): the inputs
are gathered as everywhere, labelled samples paired by label (``join=``). The measures
themselves, functions of a :class:`~dask_repsim.engine.stream.Pair`, are in
:mod:`dask_repsim.measures.units`; the public functions here label the results with the units'
coordinates.

Constant units (dead ReLUs) have no correlation with anything (0/0). They are reported with a
:class:`~dask_repsim.RepsimWarning` and then: set to correlation 0 in
:func:`unit_correlation`, left out of :func:`match_units` and :func:`matched_correlation`,
given weight 0 as predictors and left out as targets in :func:`sparse_prediction`, and labelled
-1 in :func:`cluster_units`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..engine.views import Pair
from ..io.inputs import split_dims
from ..measures.units import (
    cluster_labels,
    cross_correlation,
    matched_correlation,
    matching,
    sparse_fits,
    warn_constant,
)
from ..options import Options, SampleDims
from ..runners import run_pair

__all__ = [
    "cluster_units",
    "match_units",
    "matched_correlation",
    "sparse_prediction",
    "unit_correlation",
]


# ---------------------------------------------------------------------------------------------
# Labelled layer: run the pass, attach the units' coordinates


def _itself(pair: Pair) -> Pair:
    return pair


def _statistics(
    x: Any,
    y: Any,
    sample_dims: SampleDims,
    storage_options: Mapping[str, Any] | None,
    nan_policy: str,
    join: str,
) -> Pair:
    """The :class:`Pair` statistics of (x, y): a grid of one cell on the co-moment path
    (:func:`dask_repsim.runners.run_pair`, as ``matched_correlation`` in ``compare``), the
    samples paired by label as every function pairs them; an input given twice (the same dask
    array) is read once."""
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy)
    cell, _, _ = run_pair("matched_correlation", x, y, options, join=join,
                          functions={"covariance": _itself})
    return cell.value


def _unit_labels(obj: Any, n_features: int, sample_dims: SampleDims) -> np.ndarray:
    """The coordinate of a DataArray's single feature dim, else 0..n_features-1."""
    if isinstance(obj, xr.DataArray):
        _, features = split_dims(obj, sample_dims, "input")
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
    join: str = "exact",
) -> xr.DataArray:
    """Pearson correlation of every unit of x with every unit of y.

    Parameters
    ----------
    x, y
        Activations, samples along the first axis (or the ``sample_dims`` of a DataArray):
        numpy, dask or zarr arrays, zarr paths or URLs, or xarray DataArrays. Plain arrays are
        paired by position; DataArrays (and captured groups) with a sample coordinate are
        paired by label, as by every function of the package.
    sample_dims
        For DataArrays, the dims that index samples; all others are features.
    storage_options
        Passed to fsspec when ``x`` or ``y`` is a zarr URL.
    nan_policy
        ``"raise"`` (default) or ``"omit"`` (leave samples with NaN/Inf out of both inputs).
    join
        For inputs with sample labels: ``"exact"`` (default) pairs them by label and refuses
        different label sets; ``"inner"`` compares the samples both hold.

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
    p = _statistics(x, y, sample_dims, storage_options, nan_policy, join)
    for side in (p.x, p.y):
        warn_constant(side, "they are set to 0", stacklevel=3)
    labels_a, labels_b = _labels(x, y, p, sample_dims)
    return xr.DataArray(
        cross_correlation(p),
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
    join: str = "exact",
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
    sample_dims, storage_options, nan_policy, join
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
    p = _statistics(x, y, sample_dims, storage_options, nan_policy, join)
    rows, cols, values = matching(p, method)
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
    join: str = "exact",
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
    sample_dims, storage_options, nan_policy, join
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
    p = _statistics(x, y, sample_dims, storage_options, nan_policy, join)
    weights, loss, live_y = sparse_fits(p, alpha_values, tol, max_iter)
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
    join: str = "exact",
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
    sample_dims, storage_options, nan_policy, join
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
    p = _statistics(x, y, sample_dims, storage_options, nan_policy, join)
    labels_x, labels_y = cluster_labels(p, int(n_clusters), seed)
    labels_a, labels_b = _labels(x, y, p, sample_dims)
    return xr.Dataset(
        {"labels_a": ("unit_a", labels_x), "labels_b": ("unit_b", labels_y)},
        coords={"unit_a": labels_a, "unit_b": labels_b},
        attrs={"n_clusters": int(n_clusters), "n_samples": p.count},
    )
