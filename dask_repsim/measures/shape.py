"""Distances between representations: generalized shape metrics, the permutation metric,
angular CKA and the Bures distance.

Each is a true metric on representations (zero for the same representation up to the allowed
transforms, symmetric, and obeying the triangle inequality), so they can be averaged, clustered
and embedded (Williams, Kunz, Kornblith & Linderman 2021). Smaller is more similar, unlike the
similarity measures of the rest of the package.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..engine.views import RANK_RTOL, Pair, Side
from .cca import warn_if_wide
from .cka import linear_cka
from .linalg import svd

#: ``alpha`` above ``1 - ALPHA_RTOL`` is taken as 1 (no whitening), as in netrep
ALPHA_RTOL = 1e-7

#: a cosine within this many float64 rounding units of 1 is an angle of 0: ``arccos`` near 1 turns
#: the last bit of a cosine (1.1e-16) into an angle of 1.5e-8, so the angle of a layer with itself
#: would otherwise be that rounding noise
COSINE_ULPS = 4


def angle(cosine: float) -> float:
    """``arccos(cosine)`` in [0, pi/2]; exactly 0 when ``cosine`` is 1 up to its rounding.

    Examples
    --------
    >>> angle(1 - 2e-16), angle(1.0 + 2e-16), round(angle(0.5), 6)
    (0.0, 0.0, 1.047198)
    """
    if cosine >= 1 - COSINE_ULPS * np.finfo(np.float64).eps:
        return 0.0
    return float(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _weights(side: Side, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The eigenvalues ``lambda`` and eigenvectors of ``X_c^T X_c`` and the weights ``d`` of
    :func:`partial_whitening`, and the rank.

    Eigenvalues at most :data:`~dask_repsim.engine.views.RANK_RTOL` times the largest are
    directions without variance (a layer wider than its samples, duplicated units): their true
    value is 0 and what ``eigh`` gives is rounding noise of either sign, so ``lambda^-1/2`` is
    taken as 0 there (the pseudo-inverse), which leaves the weight ``alpha``. The rule is
    relative, so the distance does not change when the activations are scaled.
    """
    values, vectors = side.spectrum  # descending, clipped at 0
    kept = values > RANK_RTOL * values[0]
    d = np.full(values.shape, float(alpha))
    d[kept] += (1 - alpha) / np.sqrt(values[kept])
    return values, vectors, d, int(kept.sum())


def partial_whitening(side: Side, alpha: float) -> np.ndarray:
    """``Z = V diag(alpha + (1 - alpha) lambda^-1/2) V^T`` for ``X_c^T X_c = V diag(lambda) V^T``.

    ``alpha = 1`` leaves the data as they are (rotations only: Procrustes); ``alpha = 0`` whitens
    them fully (any invertible linear map: CCA). ``lambda^-1/2`` is 0 for the eigenvalues that
    are zero up to rounding (:func:`_weights`).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    if alpha > 1 - ALPHA_RTOL:
        return np.eye(side.n_features)
    _, vectors, d, _ = _weights(side, alpha)
    return (vectors * d) @ vectors.T


def _warn_if_degenerate(pair: Pair, alpha: float) -> None:
    """Full whitening of a layer of rank n - 1 spans every centred direction of the samples:
    each canonical correlation is 1 and the distance depends on the ranks only."""
    if alpha != 0:
        return
    for side in (pair.x, pair.y):
        rank = _weights(side, alpha)[3]
        if rank >= pair.count - 1:
            warn_if_wide(side, pair.count, "shape_metric with alpha=0",
                         "every canonical correlation is 1: the distance depends on the ranks "
                         "only", "alpha > 0, CKA or SVCCA", stacklevel=4)


def shape_distance(pair: Pair, alpha: float = 1.0) -> float:
    """Angular shape distance (Williams et al. 2021) between partially whitened activations.

    With ``X~ = X_c Z_x`` and ``Y~ = Y_c Z_y`` (:func:`partial_whitening`; the narrower side
    zero-padded, which changes nothing below), the distance after the best rotation of one onto
    the other is ``arccos(||X~^T Y~||_* / (||X~||_F ||Y~||_F))``, in [0, pi/2]. From co-moments:
    ``X~^T Y~ = Z_x M_xy Z_y`` and ``||X~||_F^2 = tr(Z_x M_xx Z_x) = sum lambda d^2``.
    """
    pair.x.require_variance()
    pair.y.require_variance()
    zx, zy = partial_whitening(pair.x, alpha), partial_whitening(pair.y, alpha)
    _warn_if_degenerate(pair, alpha)
    nuclear = svd(zx @ pair.cross @ zy, compute_uv=False).sum()
    norms = np.trace(zx @ pair.x.comoment @ zx) * np.trace(zy @ pair.y.comoment @ zy)
    return angle(nuclear / np.sqrt(norms))


def angular_cka(pair: Pair) -> float:
    """``arccos(CKA)``: the angle between the centred Gram matrices, a metric (netrep's
    ``LinearCKA``), in [0, pi/2]; 0 for a layer with itself (:func:`angle`)."""
    return angle(linear_cka(pair))


def bures_distance(pair: Pair) -> float:
    """Bures distance between the centred linear kernels per sample, ``K = X_c X_c^T / n`` and
    ``L = Y_c Y_c^T / n`` (Harvey, Lipshutz & Williams 2023): ``sqrt(tr K + tr L - 2 F(K, L))``
    with the fidelity ``F = tr((K^1/2 L K^1/2)^1/2) = ||X_c^T Y_c||_* / n``, so from co-moments
    ``sqrt((tr M_xx + tr M_yy - 2 ||M_xy||_*) / n)``. It equals the size-and-shape Procrustes
    distance per sample, ``min_Q ||X_c - Y_c Q||_F / sqrt(n)`` over orthogonal Q (the narrower
    side zero-padded; Williams et al. 2021): the root-mean-square distance between the samples'
    activations after the best rotation, which does not grow with n (so that intervals and
    comparisons across sample sizes mean something).
    :func:`~dask_repsim.measures.cka.procrustes` is the fidelity normalised,
    ``F / sqrt(tr K tr L)`` (the normalised Bures similarity). A squared distance within
    rounding of the traces (``4 max(p, q)`` units of float64 precision of ``tr K + tr L``) is 0:
    the distance of a layer with itself."""
    pair.x.require_variance()
    pair.y.require_variance()
    traces = float(np.trace(pair.x.comoment) + np.trace(pair.y.comoment))
    squared = traces - 2.0 * float(svd(pair.cross, compute_uv=False).sum())
    rounding = 4 * max(pair.cross.shape) * np.finfo(np.float64).eps * traces
    return float(np.sqrt(squared / pair.count)) if squared > rounding else 0.0


def permutation_distance(pair: Pair) -> float:
    """Angular distance after the best permutation of units (Williams et al. 2021; netrep's
    ``PermutationMetric``, angular score): ``arccos(max_P tr(P^T M_xy) / sqrt(tr M_xx tr M_yy))``
    over one-to-one matchings P of x's units with y's (the narrower side zero-padded, so its
    units are each matched once), the best matching by ``scipy.optimize.linear_sum_assignment``
    on the cross co-moment; 0 for a layer with itself up to a permutation of its units
    (:func:`angle`)."""
    pair.x.require_variance()
    pair.y.require_variance()
    rows, cols = linear_sum_assignment(pair.cross, maximize=True)
    total = float(pair.cross[rows, cols].sum())
    return angle(total / np.sqrt(np.trace(pair.x.comoment) * np.trace(pair.y.comoment)))
