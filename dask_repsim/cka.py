"""Linear CKA and orthogonal Procrustes from co-moments.

Both are functions of the cross co-moment ``Mxy = X_c^T Y_c`` and the layers' own co-moments
(Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network Representations
Revisited", section 3 and Table 1).
"""

from __future__ import annotations

import numpy as np

from .linalg import svd
from .statistics import Pair


def _frobenius_sq(m: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", m, m))


def linear_cka(pair: Pair) -> float:
    """||Mxy||_F^2 / (||Mxx||_F ||Myy||_F)."""
    pair.x.require_variance()
    pair.y.require_variance()
    num = _frobenius_sq(pair.cross)
    return float(num / np.sqrt(_frobenius_sq(pair.x.comoment) * _frobenius_sq(pair.y.comoment)))


def unbiased_hsic(xty: float, norms: float, tr_x: float, tr_y: float, n: int) -> float:
    """n(n-3) x the unbiased HSIC estimator of Song et al. (2012) for linear kernels.

    In feature space, with centred X and Y: ``||X^T Y||_F^2 - n/(n-2) sum_i |x_i|^2 |y_i|^2
    + |X|_F^2 |Y|_F^2 / ((n-1)(n-2))`` (Kornblith et al.'s ``feature_space_linear_cka``).
    """
    return xty - n / (n - 2) * norms + tr_x * tr_y / ((n - 1) * (n - 2))


def debiased_linear_cka(pair: Pair) -> float:
    """Linear CKA with the unbiased HSIC estimator in numerator and denominator."""
    n = pair.count
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples, got {n}")
    pair.x.require_variance()
    pair.y.require_variance()
    tr_x, tr_y = np.trace(pair.x.comoment), np.trace(pair.y.comoment)
    xy = unbiased_hsic(_frobenius_sq(pair.cross), pair.norm_xy, tr_x, tr_y, n)
    xx = unbiased_hsic(_frobenius_sq(pair.x.comoment), pair.norm_xx, tr_x, tr_x, n)
    yy = unbiased_hsic(_frobenius_sq(pair.y.comoment), pair.norm_yy, tr_y, tr_y, n)
    for name, value in ((pair.x.name, xx), (pair.y.name, yy)):
        if value <= 0:
            raise ValueError(
                f"the unbiased HSIC of {name} with itself is {value:.3g} <= 0 at n={n}, so "
                "debiased CKA is undefined here (too few samples, or a layer that varies in "
                "only one or two samples); use debiased=False or more samples"
            )
    return float(xy / np.sqrt(xx * yy))


def procrustes(pair: Pair) -> float:
    """Orthogonal Procrustes similarity ||Mxy||_* / sqrt(tr Mxx tr Myy)."""
    pair.x.require_variance()
    pair.y.require_variance()
    nuclear = svd(pair.cross, compute_uv=False).sum()
    return float(nuclear / np.sqrt(np.trace(pair.x.comoment) * np.trace(pair.y.comoment)))
