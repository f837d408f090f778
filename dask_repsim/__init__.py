"""Out-of-core representational similarity for neural network activations.

CCA, SVCCA, PWCCA, linear CKA, linear regression and Procrustes similarity between layers of
neural networks, computed from one streaming pass of float64 sufficient statistics over
activations stored as numpy, dask or zarr arrays, zarr stores (local or object storage), or
xarray objects.
"""

from .api import METRICS, __version__, cca, cka, compare, linear_regression, procrustes, pwcca, svcca
from .cca import CCAResult
from .exceptions import RepsimWarning

__all__ = [
    "METRICS",
    "CCAResult",
    "RepsimWarning",
    "__version__",
    "cca",
    "cka",
    "compare",
    "linear_regression",
    "procrustes",
    "pwcca",
    "svcca",
]
