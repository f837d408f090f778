"""Out-of-core representational similarity for neural network activations.

CCA, SVCCA, PWCCA, linear and RBF CKA, linear regression and Procrustes similarity between layers
of neural networks, and the unit-by-unit alignment of "Convergent Learning", computed from
streaming passes of float64 statistics over activations stored as numpy, dask or zarr arrays,
zarr stores (local or object storage), or xarray objects.
"""

from . import accessor  # noqa: F401  (registers the .repsim accessor on xarray objects)
from .capture.activations import capture_activations
from .capture.hugging_face import capture_hidden_states
from .exceptions import (
    InputError,
    NonFiniteError,
    NoVarianceError,
    RepsimWarning,
    SampleCountError,
)
from .grid import compare
from .imports.arrays import import_arrays
from .imports.brainscore import import_brainscore
from .imports.hf_datasets import import_hf_dataset
from .imports.net2brain import import_net2brain
from .imports.platonic import import_platonic
from .imports.thingsvision import import_thingsvision
from .imports.torchlens import import_torchlens
from .options import JACKKNIFE_GROUPS
from .pairwise.cca import cca, eigenspace_overlap, gulp, linear_regression, pwcca, svcca
from .pairwise.cka import cka, ensd, hsic
from .pairwise.distances import distance_correlation, rsm_norm_difference
from .pairwise.outputs import disagreement, jensen_shannon
from .pairwise.predictivity import pls_predictivity, ridge_predictivity
from .pairwise.samples import (
    cknna,
    jaccard_knn,
    joint_rank_jaccard,
    mutual_knn,
    rank_similarity,
    rsa,
    second_order_cosine,
)
from .pairwise.shape import (
    aligned_cosine,
    bures_distance,
    permutation_distance,
    procrustes,
    shape_metric,
)
from .pairwise.statistics import (
    concentricity_difference,
    magnitude_difference,
    uniformity_difference,
)
from .pairwise.topology import rtd
from .pairwise.units import cluster_units, match_units, sparse_prediction, unit_correlation
from .registry import DEFAULT_METRICS, MEASURES, PATHS
from .results import CCAResult, Estimate
from .version import __version__
from .zoo import (
    best_matches,
    compare_zoo,
    grow_zoo,
    network_similarity,
    select_zoo,
    unstack_zoo,
)

#: metric name -> what it is (the measure registry, :data:`dask_repsim.registry.MEASURES`)
METRICS = MEASURES

__all__ = [
    "DEFAULT_METRICS",
    "JACKKNIFE_GROUPS",
    "METRICS",
    "PATHS",
    "CCAResult",
    "Estimate",
    "InputError",
    "NoVarianceError",
    "NonFiniteError",
    "RepsimWarning",
    "SampleCountError",
    "__version__",
    "aligned_cosine",
    "bures_distance",
    "capture_activations",
    "capture_hidden_states",
    "cca",
    "cka",
    "cknna",
    "cluster_units",
    "best_matches",
    "compare",
    "compare_zoo",
    "concentricity_difference",
    "disagreement",
    "distance_correlation",
    "eigenspace_overlap",
    "ensd",
    "grow_zoo",
    "gulp",
    "hsic",
    "import_arrays",
    "import_brainscore",
    "import_hf_dataset",
    "import_net2brain",
    "import_platonic",
    "import_thingsvision",
    "import_torchlens",
    "jaccard_knn",
    "jensen_shannon",
    "joint_rank_jaccard",
    "linear_regression",
    "magnitude_difference",
    "match_units",
    "mutual_knn",
    "network_similarity",
    "permutation_distance",
    "pls_predictivity",
    "procrustes",
    "pwcca",
    "rank_similarity",
    "ridge_predictivity",
    "rsa",
    "rsm_norm_difference",
    "rtd",
    "second_order_cosine",
    "select_zoo",
    "shape_metric",
    "sparse_prediction",
    "svcca",
    "uniformity_difference",
    "unit_correlation",
    "unstack_zoo",
]
