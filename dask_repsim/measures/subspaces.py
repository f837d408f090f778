"""How much two layers' activations span the same subspace of sample space, and how alike the
linear predictors built on them are.

The eigenspace overlap score (May, Zhang, Dao & Ré 2019, "On the Downstream Performance of
Compressed Word Embeddings", NeurIPS) compares the column spaces of the activation matrices
themselves, X (n x p) and Y (n x q), not centred: with U_X and U_Y orthonormal bases of the
two spaces, ``EOS = ||U_X^T U_Y||_F^2 / max(p, q)``, in [0, 1], 1 when the spaces coincide and
both layers have full column rank. It is invariant to any invertible linear map of each layer's
units, not to a shift of the activations.

GULP (Boix-Adserà, Lawrence, Stepaniants & Rigollet 2022, "GULP: a prediction-based metric
between representations", NeurIPS) compares the ridge-regression predictors the two layers
support: with each layer centred and scaled to ``tr(Sigma) = 1`` (``Sigma_X = X_c^T X_c / n``
divided by its trace, as the authors' experiments and ReSi do) and ``R_X = (Sigma_X + lambda
I)^-1``::

    d^2 = tr(R_X Sigma_X R_X Sigma_X) + tr(R_Y Sigma_Y R_Y Sigma_Y)
          - 2 tr(R_X Sigma_XY R_Y Sigma_YX)

a distance (the square root, a metric; the authors' ``predictor_dist`` and ReSi return ``d^2``).
``lambda = 0`` (the pseudo-inverse) gives ``rank_X + rank_Y - 2 sum rho^2`` over the canonical
correlations, invariant to invertible linear maps; ``lambda > 0`` weighs the directions of little
variance down, invariant to rotations and isotropic scaling.
"""

from __future__ import annotations

import numpy as np

from ..engine.views import RANK_RTOL, Pair, Side
from .cca import warn_if_wide
from .linalg import svd


def _warn_if_wide(pair: Pair, measure: str, consequence: str) -> None:
    """As CCA does (:func:`~dask_repsim.measures.cca.warn_if_wide`): a layer with as many
    varying units as the samples allow directions spans them all."""
    for side in (pair.x, pair.y):
        if side.n_features - int(side.constant.sum()) >= pair.count - 1:
            warn_if_wide(side, pair.count, measure, consequence, "CKA", stacklevel=5)


def _coordinates(side: Side) -> np.ndarray:
    """``R`` with ``X = Q R`` for an orthonormal ``Q = [1 / sqrt(n), X_c W]`` (W the layer's
    centred :attr:`~dask_repsim.engine.views.Side.basis`): ``R = [sqrt(n) m^T; W^T M]``, exact
    from the mean and the co-moments however large the mean (X = 1 m^T + X_c and
    ``1^T X_c = 0``)."""
    return np.vstack([np.sqrt(side.count) * side.mean[None, :], side.basis.T @ side.comoment])


def _span(r: np.ndarray, n: int) -> np.ndarray:
    """An orthonormal basis of the column space of ``r`` (coordinates of the activations in
    Q's basis), its rank as ``numpy.linalg.matrix_rank`` decides it for the n x p activations
    (singular values above the largest times ``max(n, p)`` units of float64 precision)."""
    u, s, _ = svd(r)
    tolerance = s[0] * max(n, r.shape[1]) * np.finfo(np.float64).eps if s.size else 0.0
    return u[:, s > tolerance]


def eigenspace_overlap(pair: Pair) -> float:
    """The eigenspace overlap score ``||U_X^T U_Y||_F^2 / max(p, q)`` (see the module notes),
    from each layer's mean and the co-moments: with ``Q_x`` and ``Q_y`` as in
    :func:`_coordinates`, ``Q_x^T Q_y`` is ``1`` in the corner and ``W_x^T M_xy W_y``
    elsewhere, and ``U_X = Q_x U_x`` for an orthonormal basis ``U_x`` of the column space of
    ``R_x``."""
    x, y = pair.x, pair.y
    n = pair.count
    x.require_variance()
    y.require_variance()
    _warn_if_wide(pair, "the eigenspace overlap", "the spaces fill the samples' space")
    ux, uy = _span(_coordinates(x), n), _span(_coordinates(y), n)
    inner = np.zeros((ux.shape[0], uy.shape[0]))
    inner[0, 0] = 1.0
    inner[1:, 1:] = x.basis.T @ pair.cross @ y.basis
    overlap = ux.T @ inner @ uy
    return float(np.einsum("ij,ij->", overlap, overlap) / max(x.n_features, y.n_features))


def _ridge_inverse(side: Side, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The eigenvalues ``lambda`` of ``Sigma = M / tr M``, its eigenvectors, and the weights
    ``1 / (lambda + ridge)`` (0 for the directions without variance, eigenvalues at most
    :data:`~dask_repsim.engine.views.RANK_RTOL` times the largest: the pseudo-inverse at
    ``ridge = 0``, and nothing to weigh at ``ridge > 0`` since their variance is 0)."""
    values, vectors = side.spectrum
    values = values / values.sum()
    kept = values > RANK_RTOL * values[0]
    inverse = np.zeros_like(values)
    inverse[kept] = 1.0 / (values[kept] + ridge)
    return values, vectors, inverse


def gulp(pair: Pair, ridge: float = 0.0) -> float:
    """The GULP distance at ridge penalty ``ridge`` (see the module notes), from co-moments:
    ``Sigma_XY = M_xy / sqrt(tr M_xx tr M_yy)``; a squared distance within rounding of its
    terms (``4 max(p, q)`` units of float64 precision) is 0."""
    x, y = pair.x, pair.y
    x.require_variance()
    y.require_variance()
    if ridge == 0:
        _warn_if_wide(pair, "GULP with ridge=0", "its value depends on the ranks only")
    lx, vx, ix = _ridge_inverse(x, ridge)
    ly, vy, iy = _ridge_inverse(y, ridge)
    cross = vx.T @ pair.cross @ vy / np.sqrt(np.trace(x.comoment) * np.trace(y.comoment))
    own = float(np.sum((lx * ix) ** 2) + np.sum((ly * iy) ** 2))
    shared = float(np.einsum("ij,ij->", (ix[:, None] * cross) * iy[None, :], cross))
    squared = own - 2.0 * shared
    rounding = 4 * max(pair.cross.shape) * np.finfo(np.float64).eps * own
    return float(np.sqrt(squared)) if squared > rounding else 0.0
