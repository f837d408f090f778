"""Linear CKA and orthogonal Procrustes from co-moments.

Both are functions of the cross co-moment ``Mxy = X_c^T Y_c`` and the layers' own co-moments
(Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network Representations
Revisited", section 3 and Table 1).
"""

from __future__ import annotations

import numpy as np

from ..engine.views import Pair
from ..io.validation import require_samples
from .hsic import cka_ratio, unbiased_hsic
from .linalg import svd


def _frobenius_sq(m: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", m, m))


def linear_cka(pair: Pair) -> float:
    """||Mxy||_F^2 / (||Mxx||_F ||Myy||_F)."""
    pair.x.require_variance()
    pair.y.require_variance()
    num = _frobenius_sq(pair.cross)
    return float(num / np.sqrt(_frobenius_sq(pair.x.comoment) * _frobenius_sq(pair.y.comoment)))


def debiased_linear_cka(pair: Pair) -> float:
    """Linear CKA with the unbiased HSIC estimator in numerator and denominator."""
    n = pair.count
    require_samples(n, 4, "debiased CKA")
    pair.x.require_variance()
    pair.y.require_variance()
    tr_x, tr_y = np.trace(pair.x.comoment), np.trace(pair.y.comoment)
    kk, ll = _frobenius_sq(pair.x.comoment), _frobenius_sq(pair.y.comoment)
    hsic = (
        unbiased_hsic(_frobenius_sq(pair.cross), pair.norm_xy, tr_x, tr_y, n),
        unbiased_hsic(kk, pair.norm_xx, tr_x, tr_x, n),
        unbiased_hsic(ll, pair.norm_yy, tr_y, tr_y, n),
    )
    return cka_ratio(hsic, (pair.x.name, pair.y.name), n, True, scale=(kk, ll))


def procrustes(pair: Pair) -> float:
    """Orthogonal Procrustes similarity ||Mxy||_* / sqrt(tr Mxx tr Myy)."""
    pair.x.require_variance()
    pair.y.require_variance()
    nuclear = svd(pair.cross, compute_uv=False).sum()
    return float(nuclear / np.sqrt(np.trace(pair.x.comoment) * np.trace(pair.y.comoment)))


def ensd(pair: Pair) -> float:
    """Effective number of shared dimensions (Giaffar et al. 2023) of the centred Gram
    matrices K and L: ``tr K tr L tr(K L) / (tr K^2 tr L^2)``, from co-moments
    ``tr Mxx tr Myy ||Mxy||_F^2 / (||Mxx||_F^2 ||Myy||_F^2)``: linear CKA times the geometric
    mean of the layers' participation ratios ``(tr M)^2 / ||M||_F^2``."""
    pair.x.require_variance()
    pair.y.require_variance()
    kk, ll = _frobenius_sq(pair.x.comoment), _frobenius_sq(pair.y.comoment)
    traces = float(np.trace(pair.x.comoment)) * float(np.trace(pair.y.comoment))
    return float(traces * _frobenius_sq(pair.cross) / (kk * ll))


def linear_hsic(pair: Pair) -> float:
    """Linear HSIC (Gretton et al. 2005), ``||X_c^T Y_c||_F^2 / (n - 1)^2``: CKA's numerator,
    not normalised, so it scales with the activations (Kornblith et al. 2019, Table 2)."""
    pair.x.require_variance()
    pair.y.require_variance()
    return float(_frobenius_sq(pair.cross) / (pair.count - 1) ** 2)
