"""Distances between representations: generalized shape metrics and angular CKA.

Both are true metrics on representations (zero for the same representation up to the allowed
transforms, symmetric, and obeying the triangle inequality), so they can be averaged, clustered
and embedded (Williams, Kunz, Kornblith & Linderman 2021). Smaller is more similar, unlike the
similarity measures of the rest of the package.
"""

from __future__ import annotations

import numpy as np

from ..engine.views import Pair, Side
from .cka import linear_cka
from .linalg import svd

#: eigenvalues of ``X_c^T X_c`` are clipped to this before partial whitening, as in netrep
#: (Williams et al.'s reference code); it only matters for directions without variance
EIGENVALUE_FLOOR = 1e-7


def partial_whitening(side: Side, alpha: float) -> np.ndarray:
    """``Z = V diag(alpha + (1 - alpha) lambda^-1/2) V^T`` for ``X_c^T X_c = V diag(lambda) V^T``.

    ``alpha = 1`` leaves the data as they are (rotations only: Procrustes); ``alpha = 0`` whitens
    them fully (any invertible linear map: CCA).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    if alpha > 1 - EIGENVALUE_FLOOR:
        return np.eye(side.n_features)
    values, vectors = np.linalg.eigh(side.comoment)
    d = alpha + (1 - alpha) * np.maximum(values, EIGENVALUE_FLOOR) ** -0.5
    return (vectors * d) @ vectors.T


def shape_distance(pair: Pair, alpha: float = 1.0) -> float:
    """Angular shape distance (Williams et al. 2021) between partially whitened activations.

    With ``X~ = X_c Z_x`` and ``Y~ = Y_c Z_y`` (:func:`partial_whitening`; the narrower side
    zero-padded, which changes nothing below), the distance after the best rotation of one onto
    the other is ``arccos(||X~^T Y~||_* / (||X~||_F ||Y~||_F))``, in [0, pi/2]. From co-moments:
    ``X~^T Y~ = Z_x M_xy Z_y`` and ``||X~||_F^2 = tr(Z_x M_xx Z_x)``.
    """
    pair.x.require_variance()
    pair.y.require_variance()
    zx, zy = partial_whitening(pair.x, alpha), partial_whitening(pair.y, alpha)
    nuclear = svd(zx @ pair.cross @ zy, compute_uv=False).sum()
    norms = np.trace(zx @ pair.x.comoment @ zx) * np.trace(zy @ pair.y.comoment @ zy)
    return float(np.arccos(np.clip(nuclear / np.sqrt(norms), -1.0, 1.0)))


def angular_cka(pair: Pair) -> float:
    """``arccos(CKA)``: the angle between the centred Gram matrices, a metric (netrep's
    ``LinearCKA``), in [0, pi/2]."""
    return float(np.arccos(np.clip(linear_cka(pair), -1.0, 1.0)))
