"""The HSIC formulas every CKA path shares (Gretton et al. 2005; Song et al. 2012).

Written once here: the co-moment, Gram-block, feature-tile and minibatch paths all assemble CKA
from these, so the same data give the same value, and the same error, on every path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A self-HSIC at most this fraction of its terms' size (``sum K.K``) is zero up to rounding.
HSIC_RTOL = 1e-10


def unbiased_hsic(xty: float, norms: float, tr_x: float, tr_y: float, n: int) -> float:
    """n(n-3) x the unbiased HSIC estimator of Song et al. (2012) for linear kernels.

    In feature space, with centred X and Y: ``||X^T Y||_F^2 - n/(n-2) sum_i |x_i|^2 |y_i|^2
    + |X|_F^2 |Y|_F^2 / ((n-1)(n-2))`` (Kornblith et al.'s ``feature_space_linear_cka``).
    """
    return xty - n / (n - 2) * norms + tr_x * tr_y / ((n - 1) * (n - 2))


def cka_ratio(
    hsic: Sequence[float],
    names: Sequence[str],
    n: int,
    debiased: bool,
    *,
    scale: tuple[float, float] = (0.0, 0.0),
    measure: str = "debiased CKA",
    remedy: str = "use debiased=False or more samples",
) -> float:
    """``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``; an error naming the input whose HSIC with
    itself is not positive (the same words on every path).

    ``scale``: the size of each side's terms (``sum K.K``); a self-HSIC within
    :data:`HSIC_RTOL` of it is zero up to rounding. The unbiased self-HSIC of a layer that varies
    in one sample is exactly zero, and rounding alone would give it either sign.

    Examples
    --------
    >>> cka_ratio((2.0, 4.0, 1.0), ("x", "y"), 10, False)
    1.0
    """
    xy, xx, yy = (float(v) for v in hsic)
    for name, value, size in zip(names, (xx, yy), scale, strict=True):
        if abs(value) <= HSIC_RTOL * abs(size):
            value = 0.0
        if not value > 0:
            if debiased:
                raise ValueError(
                    f"the unbiased HSIC of {name} with itself is {value:.3g} <= 0 at n={n}, so "
                    f"{measure} is undefined here (too few samples, or a layer that varies in "
                    f"only one or two samples); {remedy}"
                )
            raise ValueError(
                f"the HSIC of {name} with itself is {value:.3g} at n={n}, so CKA is undefined here"
            )
    return float(xy / np.sqrt(xx * yy))


@dataclass(frozen=True)
class GramSums:
    """What HSIC needs from the Gram matrices K (of x) and L (of y), summed over blocks.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 4))
    >>> k, g = x @ x.T, y @ y.T
    >>> h = np.eye(20) - 1 / 20
    >>> xy, _, _ = GramSums.of_matrices(k, g).hsic(debiased=False)
    >>> bool(np.isclose(xy, np.trace(k @ h @ g @ h)))
    True
    """

    n: int
    kl: float  # sum_ij K_ij L_ij
    kk: float
    ll: float
    k_rows: np.ndarray  # K 1
    l_rows: np.ndarray
    k_diag: np.ndarray
    l_diag: np.ndarray

    @classmethod
    def of_matrices(cls, k: np.ndarray, g: np.ndarray) -> GramSums:
        """The sums of two whole Gram matrices."""
        e = "ij,ij->"
        return cls(
            k.shape[0], float(np.einsum(e, k, g)), float(np.einsum(e, k, k)),
            float(np.einsum(e, g, g)), k.sum(axis=1), g.sum(axis=1),
            np.diagonal(k).copy(), np.diagonal(g).copy(),
        )

    def hsic(self, debiased: bool) -> tuple[float, float, float]:
        """(HSIC(K,L), HSIC(K,K), HSIC(L,L)), each times n^2 (biased) or n(n-3) (debiased)."""
        n = self.n
        if not debiased:
            # tr(K H L H) = sum K.L - 2/n (K1).(L1) + (1'K1)(1'L1)/n^2 (H = I - 11'/n)
            def biased(s: float, a: np.ndarray, b: np.ndarray) -> float:
                return s - 2.0 / n * float(a @ b) + a.sum() * b.sum() / n**2

            return (
                biased(self.kl, self.k_rows, self.l_rows),
                biased(self.kk, self.k_rows, self.k_rows),
                biased(self.ll, self.l_rows, self.l_rows),
            )

        # Song et al. (2012), eq. (5), with K~, L~ the Gram matrices with zeroed diagonals:
        # tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1. With tr(K~L~) = sum K.L -
        # dK.dL and K~1 = K1 - dK this is hsic.unbiased_hsic (the feature-space form, where
        # K1 = 0) of sum K.L less the row-sum terms, norms dK.dL and traces 1'K~1, 1'L~1.
        def unbiased(s: float, a: np.ndarray, b: np.ndarray, da_: np.ndarray, db: np.ndarray):
            rows = float(a @ b) - float(a @ db) - float(da_ @ b)
            trace_a, trace_b = a.sum() - da_.sum(), b.sum() - db.sum()
            return unbiased_hsic(s - 2.0 / (n - 2) * rows, float(da_ @ db), trace_a, trace_b, n)

        k, g, dk, dg = self.k_rows, self.l_rows, self.k_diag, self.l_diag
        return (
            unbiased(self.kl, k, g, dk, dg),
            unbiased(self.kk, k, k, dk, dk),
            unbiased(self.ll, g, g, dg, dg),
        )

