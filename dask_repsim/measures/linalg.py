"""Dense linear algebra on the client, with the fallbacks LAPACK sometimes needs."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def svd(a: np.ndarray, *, compute_uv: bool = True):
    """``numpy.linalg.svd(a, full_matrices=False)``, retried with LAPACK's ``gesvd`` when the
    default divide-and-conquer driver (``gesdd``) fails to converge.

    ``gesdd`` occasionally reports non-convergence on valid, nearly rank-deficient matrices
    (e.g. a layer with almost as many units as samples), depending on the BLAS build and its
    thread count; ``gesvd`` is slower but robust there.

    Examples
    --------
    >>> s = svd(np.diag([3.0, 1.0]), compute_uv=False)
    >>> s.tolist()
    [3.0, 1.0]
    """
    try:
        return np.linalg.svd(a, full_matrices=False, compute_uv=compute_uv)
    except np.linalg.LinAlgError:
        return scipy.linalg.svd(
            a, full_matrices=False, compute_uv=compute_uv, lapack_driver="gesvd"
        )
