"""The CCA family from co-moments: canonical correlations, SVCCA, PWCCA, linear regression.

Every function here takes a :class:`~dask_repsim.engine.stream.Pair` (the small matrices of one
statistics pass) and does dense linear algebra of size features x features on the client.

Canonical correlations are the singular values of ``Wx^T Mxy Wy`` where ``Wx^T Mxx Wx = I``
(Hotelling 1936). The whitening bases drop constant units and exactly collinear directions
(:class:`~dask_repsim.engine.stream.Side`), so there are ``min(rank X, rank Y)`` correlations.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import solve_triangular

from ..engine.views import RANK_RTOL, Pair, Side
from ..exceptions import RepsimWarning
from ..results import CCAResult
from .linalg import svd


def warn_if_wide(side: Side, count: int, measure: str, consequence: str, instead: str,
                 stacklevel: int = 5) -> None:
    """The warning (:class:`~dask_repsim.RepsimWarning`) for a measure that is defined but
    degenerate because ``side`` has as many independent directions as ``count`` samples allow
    (n - 1 after centring): ``consequence`` says what the value then is, ``instead`` what to
    use. ``stacklevel`` as in ``warnings.warn``."""
    p = side.n_features - int(side.constant.sum())
    warnings.warn(
        f"{side.name} has {p} varying units for {count} samples: centred data has rank at most "
        f"{count - 1}, so {measure} is degenerate ({consequence}); use {instead} for layers "
        "this wide (Kornblith et al. 2019, section 3)",
        RepsimWarning,
        stacklevel=stacklevel,
    )


def _warn_if_degenerate(pair: Pair, measure: str = "CCA",
                        instead: str = "CKA or SVCCA") -> None:
    n = pair.count
    for side in (pair.x, pair.y):
        if side.n_features - int(side.constant.sum()) >= n - 1:
            warn_if_wide(side, n, measure, "every correlation is 1", instead)


def canonical_correlations(pair: Pair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations and the whitened left/right singular vectors ``(rho, U, V)``.

    The canonical weights are ``Wx @ U`` and ``Wy @ V``: the canonical variates ``X_c Wx U`` have
    unit norm. Computed once per pair (mean CCA, R2 CCA and PWCCA share it).
    """
    if "cca" not in pair.cache:
        _warn_if_degenerate(pair)
        wx, wy = pair.x.whitener.basis, pair.y.whitener.basis
        u, s, vt = svd(wx.T @ pair.cross @ wy)
        pair.cache["cca"] = (np.clip(s, 0.0, 1.0), u, vt.T)
    return pair.cache["cca"]


def cca(pair: Pair) -> CCAResult:
    """All canonical correlations of the pair."""
    return CCAResult(canonical_correlations(pair)[0])


def _top_directions(
    side: Side, keep: float | int, spectrum: str, center: bool
) -> tuple[np.ndarray, int]:
    """The right singular vectors SVCCA keeps, and how many."""
    side.varying  # noqa: B018 (checks for variance; warns about constant units, as CCA does)
    if center:
        values, vectors = side.spectrum
    else:  # the uncentred second moment; CCA on the projections still centres them
        values, vectors = np.linalg.eigh(
            side.comoment + side.count * np.outer(side.mean, side.mean)
        )
        values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    values = values[values > RANK_RTOL * values[0]]
    if isinstance(keep, int | np.integer) and not isinstance(keep, bool):
        if keep < 1:
            raise ValueError(f"keep must be >= 1 directions, not {keep}")
        k = min(int(keep), len(values))
    else:
        if not 0 < keep <= 1:
            raise ValueError(f"keep as a fraction of variance must be in (0, 1], not {keep}")
        weights = values if spectrum == "variance" else np.sqrt(values)
        share = np.cumsum(weights) / weights.sum()
        k = int(np.searchsorted(share, keep * (1 - 1e-12))) + 1
    return vectors[:, :k], k


def svcca(
    pair: Pair,
    keep: float | int = 0.99,
    spectrum: str = "variance",
    center: bool = True,
    summary: str = "mean",
) -> float:
    """The mean (``summary="mean"``, Raghu et al.'s rho-bar) or the mean square (``"r2"``,
    R^2_CCA, Kornblith et al. 2019 Table 2) of the canonical correlations of the top singular
    directions of each side."""
    if spectrum not in ("variance", "singular_values"):
        raise ValueError(f"spectrum must be 'variance' or 'singular_values', not {spectrum!r}")
    if summary not in ("mean", "r2"):
        raise ValueError(f"summary must be 'mean' or 'r2', not {summary!r}")
    vx, _ = _top_directions(pair.x, keep, spectrum, center)
    vy, _ = _top_directions(pair.y, keep, spectrum, center)
    px = Side(pair.x.name, pair.count, vx.T @ pair.x.mean, vx.T @ pair.x.comoment @ vx)
    py = Side(pair.y.name, pair.count, vy.T @ pair.y.mean, vy.T @ pair.y.comoment @ vy)
    projected = Pair(px, py, vx.T @ pair.cross @ vy, pair.norm_xy, pair.norm_xx, pair.norm_yy)
    _warn_if_degenerate(projected, "SVCCA's CCA of the kept directions",
                        "CKA, or SVCCA keeping fewer directions (keep=)")
    wx, wy = px.whitener.basis, py.whitener.basis
    rho = np.clip(svd(wx.T @ projected.cross @ wy, compute_uv=False), 0.0, 1.0)
    return float(np.mean(rho if summary == "mean" else rho**2))


def svcca_r2(pair: Pair) -> float:
    """SVCCA summarised by R^2_CCA (the mean squared canonical correlation), 99% variance."""
    return svcca(pair, summary="r2")


def pwcca(pair: Pair) -> float:
    """Projection-weighted CCA as defined by Morcos, Raghu & Bengio (2018)."""
    rho, u, v = canonical_correlations(pair)
    use_x = pair.x.varying.size <= pair.y.varying.size  # constant units have no variate
    side, rotation = (pair.x, u) if use_x else (pair.y, v)
    m = len(rho)
    weights = side.whitener.basis @ rotation[:, :m]  # canonical variates h_i = X_c a_i, unit norm
    alpha = np.abs(side.comoment @ weights).sum(axis=0)  # sum_j |<h_i, x_j>|
    return float(alpha @ rho / alpha.sum())


def _reference_whitening(matrix: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference code's ``positivedef_matrix_sqrt(pinv(S + epsilon I))`` of the scaled
    co-moment ``S = M / max|M|``, after dropping units with ``S_jj < epsilon``; and the kept
    units."""
    scaled = matrix / np.abs(matrix).max()
    kept = np.flatnonzero(np.diagonal(scaled) >= epsilon)
    scaled = scaled[np.ix_(kept, kept)] + epsilon * np.eye(kept.size)
    values, vectors = np.linalg.eigh(scaled)
    good = values > RANK_RTOL * values[-1]
    inv = np.zeros_like(values)
    inv[good] = 1 / np.sqrt(values[good])
    return (vectors * inv) @ vectors.T, kept


def pwcca_reference(pair: Pair, epsilon: float = 0.0) -> float:
    """PWCCA as the SVCCA reference code's ``compute_pwcca`` computes it.

    That code takes the rotation ``u`` of ``Sxx^-1/2 Sxy Syy^-1/2`` as the canonical directions
    without whitening them, adds the neuron means back, orthonormalises the result by QR and
    weights by the absolute projections of the uncentred activations. Everything it needs is
    in the co-moments: with ``D = X_c u + 1 mu^T``, ``D^T D = u^T M u + n mu mu^T`` and
    ``D^T X = u^T M + n mu mu^T``. ``epsilon`` is the reference code's: co-moments scaled by
    their largest entry, units whose scaled variance is below ``epsilon`` dropped, ``epsilon``
    added to the diagonal (its tutorials use 1e-10). Constant units are dropped (with the
    warning every CCA-family measure gives) whatever ``epsilon``; the reference code keeps them
    at ``epsilon=0`` and its value then depends on how QR completes a zero direction. Its crash
    when the first input has more units than the second is not reproduced. Because the means
    are added to directions whose sign is arbitrary, the value depends on the signs LAPACK
    gives the singular vectors; it matches the reference code's, which makes the same call.
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, not {epsilon}")
    kx, ky = pair.x.varying, pair.y.varying
    mx = pair.x.comoment[np.ix_(kx, kx)]
    my = pair.y.comoment[np.ix_(ky, ky)]
    wx, cx = _reference_whitening(mx, epsilon)
    wy, cy = _reference_whitening(my, epsilon)
    cross = pair.cross[np.ix_(kx[cx], ky[cy])] / np.sqrt(np.abs(mx).max() * np.abs(my).max())
    u, s, vt = np.linalg.svd(wx @ cross @ wy)
    use_x = cx.size <= cy.size
    side, units, rotation = (pair.x, kx[cx], u) if use_x else (pair.y, ky[cy], vt.T)
    n, mu, m = side.count, side.mean[units], side.comoment[np.ix_(units, units)]
    gram = rotation.T @ m @ rotation + n * np.outer(mu, mu)
    try:
        r = np.linalg.cholesky(gram)  # D = P R with R = r^T, so P^T X = r^-1 D^T X
    except np.linalg.LinAlgError:
        raise ValueError(
            f"pwcca(definition='reference') is undefined here: the reference code's directions "
            f"for {side.name} (canonical directions plus the unit means) are numerically "
            "linearly dependent, as with collinear units or means far larger than the spread; "
            "pass epsilon= to drop near-constant units, or use definition='paper', which does "
            "not depend on the means"
        ) from None
    alpha = np.abs(solve_triangular(r, rotation.T @ m + n * np.outer(mu, mu), lower=True))
    weights = alpha.sum(axis=1) / alpha.sum()
    return float(weights @ np.abs(s))


def linear_regression(pair: Pair) -> float:
    """Fraction of y's variance explained by a least-squares fit from x.

    ``tr(Myx Mxx^+ Mxy) / tr(Myy)``, with the pseudo-inverse taken on the whitening basis. When
    x has rank n - 1 it spans every centred direction of the samples and fits any y exactly:
    1, with a warning.
    """
    pair.y.require_variance()
    basis = pair.x.whitener.basis
    if basis.shape[1] >= pair.count - 1:
        warn_if_wide(pair.x, pair.count, "linear_regression", "any y is fitted exactly: the "
                     "value is 1", "CKA", stacklevel=4)
    fitted = basis.T @ pair.cross
    return float(np.sum(fitted**2) / np.trace(pair.y.comoment))
