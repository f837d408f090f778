"""How well one layer's units are predicted by a linear map of another's, cross-validated: the
predictivity scores of Brain-Score (Schrimpf et al. 2018) and Conwell et al. (2024), from the
co-moments of the folds of one pass.

The samples are split into k contiguous folds in storage order (the pass's sample groups,
:func:`~dask_repsim.engine.stream.group_bounds`). For each fold g, a regression from x to y is
fitted on the other folds, whose statistics are the merge of theirs (the jackknife's
leave-one-group-out replicate, :func:`~dask_repsim.paths.covariance.folds.split`), and
predicts the held-out fold: ``y_hat = (x - xbar_train) B + ybar_train``. Each unit's Pearson
correlation between ``y_hat`` and ``y`` over the held-out fold needs only the fold's own
co-moments about its mean (the intercept does not change a correlation)::

    r_u = (B^T Mxy_g)_uu / sqrt((B^T Mxx_g B)_uu (Myy_g)_uu)

and the score is, as Brain-Score's ``CrossRegressedCorrelation`` aggregates it, the median of
``r_u`` over y's units in each fold, averaged over the folds. Everything is a function of
per-fold sums, so the value is exact, from the one pass. A unit whose prediction or held-out
activity is constant in a fold has no correlation there: it is left out of that fold's median
(Brain-Score's median skips it as NaN), with a warning.

Regressions (both fitted to the training co-moments, centred on the training means):

- ridge: ``B = (Mxx + lambda I)^+ Mxy`` with ``lambda = ridge * tr(Mxx)``, a penalty relative to
  x's total training variance (as GULP's, :mod:`dask_repsim.measures.subspaces`), so the score
  does not depend on x's scale; eigen-directions of ``Mxx`` of at most
  :data:`~dask_repsim.engine.views.RANK_RTOL` times the largest eigenvalue carry no variance
  and are left out (the pseudo-inverse at ``ridge=0``). Without ``ridge``, each training set
  chooses its penalty from :data:`PENALTIES` by generalised cross-validation (Golub, Heath &
  Wahba 1979): ``GCV = n RSS / tr(I - A)^2`` with the hat matrix A of the fit with intercept,
  ``tr A = 1 + sum_i s_i / (s_i + lambda)`` over the eigenvalues s_i of ``Mxx``, and RSS summed
  over y's units (one penalty for all of them). scikit-learn's ``RidgeCV`` (``gcv_mode``) is
  efficient leave-one-out cross-validation instead, which weighs each sample's leverage
  separately: it may choose another penalty.
- PLS: partial least squares regression as scikit-learn's ``PLSRegression(scale=False)``
  (NIPALS PLS2 with regression deflation; Brain-Score's default with 25 components): the
  x-weights w are the first left singular vector of the deflated cross co-moment ``S``,
  ``t = X w``, ``p = Cxx w / (w^T Cxx w)``, ``q = S^T w / (w^T Cxx w)``, and deflating
  ``X <- X - t p^T``, ``Y <- Y - t q^T`` is ``Cxx <- Cxx - (t^T t) p p^T``,
  ``S <- S - (t^T t) p q^T``; ``B = W (P^T W)^-1 Q^T``. The singular vector is computed
  exactly (scikit-learn iterates the power method to its ``tol``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import svds

from ..engine.views import RANK_RTOL, Pair, Side
from ..exceptions import RepsimWarning
from .linalg import svd

#: the default number of folds (Brain-Score's 10 splits)
DEFAULT_FOLDS = 10
#: the default (and Brain-Score's) number of PLS components, at most x's training rank
DEFAULT_COMPONENTS = 25
#: the fewest samples a held-out fold may have
MIN_FOLD = 3
#: the penalties, relative to x's total training variance ``tr(Mxx)``, that GCV chooses from:
#: 41 values, 4 per decade from 1e-8 to 100
PENALTIES = np.logspace(-8, 2, 41)

#: (training Pair, held-out Pair) of each fold
Split = Sequence[tuple[Pair, Pair]]


@dataclass(frozen=True)
class OnFolds:
    """A measure of a pair's k-fold split, as the co-moment path calls it: ``function(pair,
    folds)`` with ``folds`` the (training, held-out) pairs of
    :func:`~dask_repsim.paths.covariance.folds.split` over ``k`` sample groups;
    ``check(n, p)``: the error of a split that ``n`` samples (and ``p`` units of the predicting
    layer) cannot have, raised before the pass."""

    function: Callable[[Pair, Split], float]
    k: int
    check: Callable[[int, int], None]

    def __call__(self, pair: Pair, folds: Split) -> float:
        return self.function(pair, folds)


def check_split(name: str, n: int, p: int, *, folds: int, components: int | None = None,
                ridge: float | None = None) -> None:
    """Before the pass, for ``name`` of layers with ``n`` samples and ``p`` units of x: an error
    unless ``folds`` is an int from 2 up to what ``n`` samples allow with at least
    :data:`MIN_FOLD` samples in each held-out fold, and ``components`` at most ``p``
    (``ridge`` is checked with the other parameters, :func:`dask_repsim.runners.plan_outputs`)."""
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise ValueError(f"folds must be an int >= 2 (k-fold cross-validation of {name}), "
                         f"not {folds!r}")
    if folds > n:
        raise ValueError(f"folds={folds} is more than the {n} samples of {name}")
    if n // folds < MIN_FOLD:
        raise ValueError(f"folds={folds} leaves {n // folds} of the {n} samples in a held-out "
                         f"fold; {name} correlates each fold's predictions over at least "
                         f"{MIN_FOLD} samples: use at most {n // MIN_FOLD} folds")
    if components is not None and components > p:
        raise ValueError(f"components={components} is more than the {p} units of the "
                         "predicting layer; PLS has at most that many components")


def _directions(side: Side) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of ``Mxx`` with variance (above :data:`RANK_RTOL` times
    the largest)."""
    values, vectors = side.spectrum
    kept = values > RANK_RTOL * values[0] if values[0] > 0 else np.zeros(values.size, bool)
    return values[kept], vectors[:, kept]


def gcv_penalty(train: Pair) -> float:
    """The penalty of :data:`PENALTIES` (relative to ``tr(Mxx)``) of least generalised
    cross-validation error on ``train`` (see the module notes), from its co-moments:
    ``RSS(lambda) = RSS(0) + sum_i c_i lambda^2 / (s_i (s_i + lambda)^2)`` with ``c_i`` the
    squared norm of ``v_i^T Mxy``, and ``tr(I - A) = n - 1 - r + sum_i lambda / (s_i +
    lambda)`` over the r directions with variance; ``RSS(0) = 0`` when they span the n - 1
    centred directions (the fit interpolates)."""
    n = train.count
    s, v = _directions(train.x)
    c = np.sum((v.T @ train.cross) ** 2, axis=1)
    rss0 = 0.0 if s.size >= n - 1 else max(float(np.trace(train.y.comoment) - np.sum(c / s)),
                                           0.0)
    lam = PENALTIES[:, None] * np.trace(train.x.comoment)
    rss = rss0 + np.sum(c * lam**2 / (s * (s + lam) ** 2), axis=1)
    free = (n - 1 - s.size) + np.sum(lam / (s + lam), axis=1)
    return float(PENALTIES[np.argmin(n * rss / free**2)])


def ridge_coefficients(train: Pair, ridge: float | None = None) -> tuple[np.ndarray, float]:
    """``(B, ridge)``: the ridge coefficients ``(Mxx + ridge tr(Mxx) I)^+ Mxy`` (p x q) of the
    training statistics, and the relative penalty used (:func:`gcv_penalty`'s when ``ridge``
    is ``None``)."""
    if ridge is None:
        ridge = gcv_penalty(train)
    s, v = _directions(train.x)
    weights = 1.0 / (s + ridge * np.trace(train.x.comoment))
    return v @ (weights[:, None] * (v.T @ train.cross)), float(ridge)


def _components_error(k: int, asked: int, name: str, why: str) -> ValueError:
    return ValueError(f"components={asked}: after {k} PLS components of {name}'s training "
                      f"activations {why}; ask for at most {k} components")


def _leading(cross: np.ndarray) -> tuple[np.ndarray, float]:
    """The leading left singular vector of ``cross`` and its singular value: by Lanczos
    (``scipy.sparse.linalg.svds``, to machine precision, ``tol=0``, from a fixed start so
    that the result does not depend on a random one) for matrices of more than 2 rows and
    columns, where it is one product per iteration instead of a whole SVD (25 components of
    512 x 512 co-moments in 10 folds: 250 SVDs); by the SVD below that."""
    if min(cross.shape) <= 2 or not np.any(cross):
        u, sv, _ = svd(cross)
        return u[:, 0], float(sv[0])
    start = np.random.default_rng(0).standard_normal(min(cross.shape))
    u, sv, _ = svds(cross, k=1, tol=0, v0=start)
    return u[:, 0], float(sv[0])


def pls_coefficients(train: Pair, components: int | None = None) -> np.ndarray:
    """The PLS regression coefficients ``B`` (p x q) of the training statistics with
    ``components`` components (default: :data:`DEFAULT_COMPONENTS`, at most the number of
    directions of x with variance, and fewer when the deflated cross co-moment vanishes
    before: y's covariance with x is used up); see the module notes."""
    s, _ = _directions(train.x)
    k = min(DEFAULT_COMPONENTS, s.size) if components is None else int(components)
    cxx, cross = train.x.comoment.copy(), train.cross.copy()
    top, first = s[0] if s.size else 0.0, None
    weights, loadings, y_loadings = [], [], []
    for c in range(k):
        w, top_sv = _leading(cross)
        first = top_sv if first is None else first
        if components is None and top_sv <= RANK_RTOL * first:
            break  # the default stops where y's covariance with x is used up
        if c == s.size or top_sv <= RANK_RTOL * first:
            why = ("no direction with variance is left" if c == s.size else
                   f"nothing in them covaries with {train.y.name}'s")
            raise _components_error(c, k, train.x.name, why)
        tt = float(w @ cxx @ w)
        if tt <= RANK_RTOL * top:
            raise _components_error(c, k, train.x.name, "no direction with variance is left")
        p, q = cxx @ w / tt, cross.T @ w / tt
        cxx -= tt * np.outer(p, p)
        cross -= tt * np.outer(p, q)
        weights.append(w)
        loadings.append(p)
        y_loadings.append(q)
    if not weights:
        return np.zeros_like(train.cross)
    w, p, q = (np.column_stack(a) for a in (weights, loadings, y_loadings))
    return w @ np.linalg.solve(p.T @ w, q.T)


def fold_correlations(coefficients: np.ndarray, train: Pair, test: Pair) -> np.ndarray:
    """Each unit of y's Pearson correlation between the predictions ``x B`` (plus any
    intercept) and y over the held-out fold ``test``; NaN where the prediction or y is
    constant over the fold, or y over the training set."""
    b = coefficients
    cov = np.einsum("iu,iu->u", b, test.cross)
    var_pred = np.einsum("iu,iu->u", b, test.x.comoment @ b)
    var_y = np.diagonal(test.y.comoment)
    undefined = test.y.constant | train.y.constant | (var_pred <= 0)
    if train.x.constant.all() or test.x.constant.all():
        undefined[:] = True
    r = np.full(b.shape[1], np.nan)
    ok = ~undefined
    r[ok] = cov[ok] / np.sqrt(var_pred[ok] * var_y[ok])
    return r


def _fold_note(g: int, k: int, test: Pair) -> str:
    return f"held-out fold {g + 1} of {k} ({test.count} samples)"


def cross_validated_score(pair: Pair, split: Split, fit: Callable[[Pair], np.ndarray],
                          name: str) -> float:
    """The mean over the folds of ``split`` of the median over y's units of the held-out
    Pearson correlations (:func:`fold_correlations`) of the coefficients ``fit(train)``;
    ``pair``: the statistics of all samples (whose layers must vary)."""
    pair.x.require_variance()
    pair.y.require_variance()
    medians, left_out = [], 0
    for g, (train, test) in enumerate(split):
        if test.count < MIN_FOLD or train.count < MIN_FOLD:
            small = test if test.count < MIN_FOLD else train
            which = "held-out fold" if small is test else "training set of fold"
            raise ValueError(f"{name}: the {which} {g + 1} of {len(split)} has {small.count} "
                             f"samples with finite values in {pair.x.name} and {pair.y.name}, "
                             f"fewer than {MIN_FOLD}: use fewer folds")
        r = fold_correlations(fit(train), train, test)
        if np.isnan(r).all():
            raise ValueError(f"{name}: no unit of {pair.y.name} has a correlation on the "
                             f"{_fold_note(g, len(split), test)}: its predictions or its "
                             "activations are constant there")
        left_out += int(np.isnan(r).sum())
        medians.append(float(np.nanmedian(r)))
    if left_out:
        warnings.warn(f"{name}: {left_out} (unit, fold) pairs of {pair.y.name} have no "
                      f"correlation (the unit's predictions from {pair.x.name} or its "
                      "activations are constant over the fold or its training set) and are "
                      "left out of their folds' medians", RepsimWarning, stacklevel=4)
    return float(np.mean(medians))


def ridge_predictivity(pair: Pair, split: Split, ridge: float | None = None) -> float:
    """Cross-validated ridge predictivity of y from x (:func:`cross_validated_score` of
    :func:`ridge_coefficients`)."""
    return cross_validated_score(pair, split, lambda t: ridge_coefficients(t, ridge)[0],
                                 "ridge_predictivity")


def pls_predictivity(pair: Pair, split: Split, components: int | None = None) -> float:
    """Cross-validated PLS predictivity of y from x (:func:`cross_validated_score` of
    :func:`pls_coefficients`)."""
    return cross_validated_score(pair, split, lambda t: pls_coefficients(t, components),
                                 "pls_predictivity")
