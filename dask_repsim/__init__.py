"""Out-of-core representational similarity for neural network activations.

CCA, SVCCA, PWCCA, linear CKA, linear regression and Procrustes similarity between layers of
neural networks, and the unit-by-unit alignment of "Convergent Learning", computed from one
streaming pass of float64 sufficient statistics over activations stored as numpy, dask or zarr
arrays, zarr stores (local or object storage), or xarray objects.
"""

from . import accessor  # noqa: F401  (registers the .repsim accessor on xarray objects)
from .api import (
    DEFAULT_METRICS,
    METRICS,
    __version__,
    cca,
    cka,
    compare,
    linear_regression,
    procrustes,
    pwcca,
    svcca,
)
from .capture import capture_activations
from .cca import CCAResult
from .exceptions import RepsimWarning
from .neurons import cluster_units, match_units, sparse_prediction, unit_correlation

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "CCAResult",
    "RepsimWarning",
    "__version__",
    "capture_activations",
    "cca",
    "cka",
    "cluster_units",
    "compare",
    "linear_regression",
    "match_units",
    "procrustes",
    "pwcca",
    "sparse_prediction",
    "svcca",
    "unit_correlation",
]
