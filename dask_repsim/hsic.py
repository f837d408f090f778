"""The HSIC formulas every CKA path shares (Gretton et al. 2005; Song et al. 2012).

Written once here: the co-moment, Gram-block, feature-tile and minibatch paths all assemble CKA
from these, so the same data give the same value, and the same error, on every path.
"""

from __future__ import annotations

from collections.abc import Sequence

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
