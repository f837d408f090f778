"""What the package computes, as data: one table of paths and one registry of measures.

The grid (:func:`dask_repsim.compare`), the pairwise functions, the command line, the docs and the
tests read these two tables; adding a path or a measure is one entry here plus its functions.

Paths (:data:`PATHS`) are the ways of computing from the data: what statistics one pass produces,
whether the result is exact, whether ``method="auto"`` may choose the path, and which options
(jackknife intervals, permutation tests, ``nan_policy="omit"``) it supports.

Measures (:data:`MEASURES`) are the ``compare`` metrics. Each names the public function that
computes it for one pair, and for each path that can compute it, what that path needs:

- ``covariance``: a function of a :class:`~dask_repsim.engine.stream.Pair` (the co-moments);
- ``qr``: a function of a :class:`~dask_repsim.paths.qr.QRPair` (the pair's spans in the
  joint R factor and the product of their bases: the data's, a replicate's or a permutation's);
- ``sample_blocks``: a function of the two :class:`~dask_repsim.io.inputs.Layer` objects;
- ``gram``, ``tiled``, ``minibatch``: the kernel options of the CKA the path sums
  (``{"debiased": bool}``, and ``{"kernel": "rbf"}`` on ``gram``); these paths compute CKA
  only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .engine.stream import replicate_bounds
from .io.validation import require_samples
from .measures import cca, cka, predictivity, shape, statistics, subspaces, units
from .paths import qr
from .paths.sample_blocks import (
    aligned_inference,
    distances,
    neighbours,
    outputs,
    rsa,
    rsa_whitened,
    topology,
)

#: default number of sample groups of jackknife intervals
JACKKNIFE_GROUPS = 20


@dataclass(frozen=True)
class PathInfo:
    """One computational path and what it supports."""

    name: str
    description: str
    #: the cost of one pair on n samples of p and q features
    cost: str
    exact: bool
    #: whether ``method="auto"`` may choose it
    auto: bool
    interval: bool
    permutations: bool
    nan_omit: bool
    #: the Gamma approximation of HSIC's null (``null="gamma"``)
    gamma: bool = False


PATHS: dict[str, PathInfo] = {
    p.name: p
    for p in (
        PathInfo("covariance", "one pass of float64 co-moments (count, mean, M = Z_c^T Z_c)",
                 "n (p+q)^2", exact=True, auto=True, interval=True, permutations=True,
                 nan_omit=True),
        PathInfo("qr", "tall-skinny QR of [1 | X | Y]; only R factors travel",
                 "2 n (p+q)^2", exact=True, auto=False, interval=True, permutations=True,
                 nan_omit=False),
        PathInfo("gram", "sample-space Gram tiles of centred row blocks, each layer's formed "
                 "once per grid", "n^2 (p+q)", exact=True, auto=True, interval=True,
                 permutations=True, nan_omit=False, gamma=True),
        PathInfo("tiled", "||X_c^T Y_c||_F^2 from feature tiles", "n p q + n (p^2+q^2)/2",
                 exact=True, auto=True, interval=True, permutations=True, nan_omit=False),
        PathInfo("sample_blocks", "row-block tiles of sample x sample matrices: RDMs, cosine "
                 "k-nearest neighbours (whose permutation nulls relabel the neighbour lists), "
                 "distance matrices", "n^2 (p+q)", exact=True, auto=True, interval=True,
                 permutations=True, nan_omit=False),
        PathInfo("minibatch", "unbiased HSIC averaged over minibatches (Nguyen et al. 2021)",
                 "n b (p+q)", exact=False, auto=False, interval=False, permutations=False,
                 nan_omit=False),
    )
}


@dataclass(frozen=True)
class Measure:
    """A similarity measure: its name, what it is, and its function on each path."""

    name: str
    description: str
    #: the public pairwise function that computes it (None: none does), and the options that
    #: select it there; ``attribute``: the attribute of that function's result it is
    function: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: path name -> what that path needs (see the module docstring)
    paths: Mapping[str, Any] = field(default_factory=dict)
    #: False for distances: smaller is more similar (permutation p-values count the other way)
    similarity: bool = True
    #: whether the value of (x, y) is the value of (y, x): a grid of a set of layers with itself
    #: then computes each unordered pair once (:func:`dask_repsim.compare_zoo`)
    symmetric: bool = True
    #: options of ``compare`` that this measure's functions take (as keyword arguments)
    parameters: tuple[str, ...] = ()
    #: fewer samples are an error (:func:`check_samples`). Two samples are one centred direction
    #: per layer, the same for every layer up to scale, so no measure is informative below 3
    min_samples: int = 3
    #: whether a jackknife interval is centred on the bias-corrected estimate (else on the
    #: estimate): see :func:`dask_repsim.results.jackknife_interval`
    bias_corrected: bool = True
    #: the number of jackknife groups when ``groups=`` is not given (a grid takes the fewest of
    #: its measures': :meth:`dask_repsim.options.Options.for_measures`)
    jackknife_groups: int = JACKKNIFE_GROUPS
    #: False for a difference of per-layer statistics, which does not depend on which sample of
    #: one layer goes with which of the other: a permutation test of it is refused
    paired: bool = True
    #: per path, what that path offers (``"permutations"``) and this measure cannot have
    lacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: True when the two layers must have the same units in the same order (output layers over
    #: the same classes): other pairs are an error
    same_units: bool = False
    #: True for a cross-validated measure: its ``covariance`` function takes the pair and its
    #: k-fold split (``function(pair, folds)``, ``folds=`` k, default 10;
    #: :class:`~dask_repsim.measures.predictivity.OnFolds`)
    folds: bool = False


def supports(measure: str, path: str, need: str) -> bool:
    """Whether ``path`` computes ``measure`` with ``need`` (``"interval"``,
    ``"permutations"``, ``"nan_omit"``, ``"gamma"``): the path offers it and the measure does
    not lack it there.

    Examples
    --------
    >>> supports("mutual_knn", "sample_blocks", "permutations")
    True
    >>> supports("distance_correlation", "sample_blocks", "nan_omit")
    False
    """
    return bool(getattr(PATHS[path], need)) and need not in MEASURES[measure].lacks.get(path, ())


def _rho_mean(pair: Any) -> float:
    return float(cca.canonical_correlations(pair)[0].mean())


def _rho_r2(pair: Any) -> float:
    rho = cca.canonical_correlations(pair)[0]
    return float((rho**2).mean())


def _qr_mean(pair: Any) -> float:
    return float(qr.canonical_correlations_of(pair).mean)


def _qr_r2(pair: Any) -> float:
    return float(qr.canonical_correlations_of(pair).r2)


def _rsa(x: Any, y: Any, rdm: str = "correlation", rdm_compare: str = "corr",
         rdm_noise: Any = None, null: tuple[int, int] | None = None,
         groups: int | None = None) -> Any:
    """RSA of layers x and y; with ``null=(count, seed)`` or ``groups=``, a dict of the value
    (``"rsa"``), its permutation null (``"null"``) and jackknife replicates (``"replicates"``)
    as :mod:`~dask_repsim.paths.sample_blocks.cells` takes them."""
    noise = rsa_whitened.layer_noise(rdm_noise, x, y)  # side a's layer x, side b's layer y
    asked = {k: v for k, v in (("null", null), ("groups", groups)) if v}
    values = rsa.rsa_values(x, y, rdm=rdm, compares=(rdm_compare,), noise=noise, **asked)
    if not asked:
        return values[rdm_compare]
    return {"rsa": values[rdm_compare],
            **{part: {"rsa": values[part][rdm_compare]} for part in ("null", "replicates")
               if part in values}}


def _distance(measure: str) -> Callable[..., float]:
    def value(x: Any, y: Any) -> float:
        return distances.distance_values(x, y, measures=(measure,))[measure]

    return value


def _laplace(x: Any, y: Any, sigma: Any = None) -> float:
    values = distances.distance_values(x, y, measures=("cka_laplace",), sigma=sigma)
    if len(values) != 1:
        raise ValueError("sigma= takes one bandwidth for one value of cka_laplace")
    return next(iter(values.values()))


def _output(measure: str) -> Callable[..., float]:
    def value(x: Any, y: Any) -> float:
        return outputs.output_values(x, y, measures=(measure,))[measure]

    return value


def _knn(measure: str) -> Callable[..., float]:
    def value(x: Any, y: Any, k: int = neighbours.DEFAULT_K) -> float:
        return neighbours.knn_values(x, y, k, measures=(measure,))[measure]

    return value


_KERNEL_PATHS = ("gram", "tiled")


def _cka_paths(debiased: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "covariance": cka.debiased_linear_cka if debiased else cka.linear_cka
    }
    paths.update({p: {"debiased": debiased} for p in _KERNEL_PATHS})
    if not debiased:  # minibatch CKA is always built on unbiased HSIC
        paths["minibatch"] = {"debiased": False}
    return paths


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("cka", "linear CKA (Kornblith et al. 2019)", "cka", {}, _cka_paths(False)),
        Measure("cka_debiased",
                "linear CKA with unbiased HSIC (Song et al. 2012; Nguyen et al. 2021)",
                "cka", {"debiased": True}, _cka_paths(True), min_samples=4,
                # the Gamma approximation is of the biased HSIC's null
                lacks={"gram": ("gamma",)}),
        Measure("cka_rbf",
                "RBF-kernel CKA, bandwidth sigma times the median distance between samples "
                "(Kornblith et al. 2019)", "cka", {"kernel": "rbf"},
                {"gram": {"kernel": "rbf", "debiased": False},
                 "minibatch": {"kernel": "rbf", "debiased": False}}, parameters=("sigma",)),
        Measure("cka_laplace",
                "Laplace-kernel CKA, exp(-distance / (sigma times the median distance between "
                "samples)) (Kornblith et al. 2019)", "cka", {"kernel": "laplace"},
                # its null and jackknife replicates from the same pass over the tiles
                # (paths/sample_blocks/distances_inference.py), as distance correlation's
                {"sample_blocks": _laplace}, parameters=("sigma",)),
        Measure("mean_cca", "mean of all canonical correlations", "cca",
                {"attribute": "mean"}, {"covariance": _rho_mean, "qr": _qr_mean}),
        Measure("r2_cca", "mean of squared canonical correlations", "cca",
                {"attribute": "r2"}, {"covariance": _rho_r2, "qr": _qr_r2}),
        Measure("svcca",
                "SVCCA (Raghu et al. 2017): mean canonical correlation of the singular "
                "directions holding 99% of each side's variance", "svcca", {},
                {"covariance": cca.svcca, "qr": qr.svcca_of}),
        Measure("svcca_r2",
                "SVCCA summarised by R^2_CCA: mean squared canonical correlation of the "
                "singular directions holding 99% of each side's variance", "svcca",
                {"summary": "r2"},
                {"covariance": cca.svcca_r2, "qr": partial(qr.svcca_of, summary="r2")}),
        Measure("pwcca", "projection-weighted CCA (Morcos et al. 2018), paper definition",
                "pwcca", {}, {"covariance": cca.pwcca, "qr": qr.pwcca_of},
                symmetric=False,  # weights from the narrower side; layer_a's when as wide
                # its weights are not smooth in the groups' statistics: the jackknife's bias
                # estimate overshoots (95% intervals around it covered 75% of 200 samples,
                # around the estimate 92.5%; tests/engine/test_uncertainty.py)
                bias_corrected=False),
        Measure("linear_regression",
                "fraction of layer_b's variance explained by a linear fit from layer_a",
                "linear_regression", {},
                {"covariance": cca.linear_regression, "qr": qr.linear_regression_of},
                symmetric=False),
        Measure("procrustes", "orthogonal Procrustes similarity", "procrustes", {},
                {"covariance": cka.procrustes}),
        Measure("hsic", "linear HSIC ||X_c^T Y_c||_F^2 / (n-1)^2 (Gretton et al. 2005), not "
                "normalised", "hsic", {}, {"covariance": cka.linear_hsic}),
        Measure("ensd", "effective number of shared dimensions (Giaffar et al. 2023): "
                "tr K tr L tr(KL) / (tr K^2 tr L^2) of the centred Gram matrices, linear CKA "
                "times the geometric mean of the participation ratios; a number of dimensions",
                "ensd", {}, {"covariance": cka.ensd}),
        Measure("cka_angular", "arccos(linear CKA): a distance, 0 for the same representation",
                None, {}, {"covariance": shape.angular_cka}, similarity=False),
        Measure("shape_metric",
                "angular shape distance after partial whitening (Williams et al. 2021): "
                "alpha=1 allows rotations (Procrustes), alpha=0 any linear map (CCA)",
                "shape_metric", {}, {"covariance": shape.shape_distance}, similarity=False,
                parameters=("alpha",)),
        Measure("permutation_distance",
                "angular distance after the best one-to-one matching of units (Williams et al. "
                "2021; netrep's PermutationMetric)", "permutation_distance", {},
                {"covariance": shape.permutation_distance}, similarity=False),
        Measure("bures_distance",
                "Bures distance of the centred linear kernels per sample, sqrt((tr Mxx + tr Myy "
                "- 2 ||Mxy||_*) / n) (Harvey et al. 2023): the size-and-shape Procrustes "
                "distance, not normalised", "bures_distance", {},
                {"covariance": shape.bures_distance},
                similarity=False),
        Measure("eigenspace_overlap",
                "eigenspace overlap score (May et al. 2019): ||U_X^T U_Y||_F^2 / max(p, q) of "
                "the activations' column spaces, not centred", "eigenspace_overlap", {},
                {"covariance": subspaces.eigenspace_overlap}),
        Measure("gulp",
                "GULP distance between the layers' ridge-regression predictors (Boix-Adsera et "
                "al. 2022), each layer normalised to unit total variance (ridge=)", "gulp", {},
                {"covariance": subspaces.gulp}, similarity=False, parameters=("ridge",)),
        Measure("rsa", "representational similarity analysis (Kriegeskorte et al. 2008): the "
                "layers' dissimilarity matrices over samples compared (rdm=, rdm_compare=, "
                "rdm_noise=)",
                "rsa", {}, {"sample_blocks": _rsa},
                parameters=("rdm", "rdm_compare", "rdm_noise")),
        Measure("distance_correlation", "distance correlation (Székely et al. 2007): the "
                "correlation of the layers' double-centred Euclidean distance matrices",
                "distance_correlation", {}, {"sample_blocks": _distance("distance_correlation")}),
        Measure("rsm_norm_difference", "RSM norm difference (Shahbazi et al. 2021): the "
                "Frobenius norm of the difference of the layers' Euclidean distance matrices",
                "rsm_norm_difference", {}, {"sample_blocks": _distance("rsm_norm_difference")},
                similarity=False,
                # it grows with the number of samples, so a replicate of fewer samples is
                # smaller for that alone and the jackknife's bias estimate doubles the centre:
                # 95% intervals around it covered the norm at n in 0 of 200 samples (n = 500),
                # around the estimate in 183 (91.5%; tests/paths/test_distances_inference.py)
                bias_corrected=False),
        Measure("magnitude_difference", "magnitude difference (ReSi): the difference of the "
                "norms of the layers' mean activation vectors", "magnitude_difference", {},
                {"covariance": statistics.magnitude_difference}, similarity=False,
                paired=False),
        Measure("uniformity_difference", "uniformity difference (Wang & Isola 2020; ReSi): the "
                "difference of the layers' log mean exp(-2 ||x_i - x_j||^2) over all pairs",
                "uniformity_difference", {},
                {"sample_blocks": _distance("uniformity_difference")}, similarity=False,
                paired=False),
        Measure("concentricity_difference", "concentricity difference (ReSi): the difference "
                "of the layers' mean cosine of each sample with the mean activation vector",
                "concentricity_difference", {},
                {"sample_blocks": _distance("concentricity_difference")}, similarity=False,
                paired=False),
        Measure("aligned_cosine", "aligned cosine similarity (Hamilton et al. 2016; ReSi): the "
                "mean cosine of each sample's activations after orthogonal Procrustes "
                "alignment of the layers", "aligned_cosine", {},
                {"sample_blocks": aligned_inference.aligned_values}),
        Measure("disagreement", "prediction disagreement (Klabunde et al. 2023; ReSi): the "
                "share of samples whose output layers predict different classes (argmax)",
                "disagreement", {}, {"sample_blocks": _output("disagreement")},
                similarity=False, same_units=True),
        Measure("jensen_shannon", "Jensen-Shannon divergence (bits) of the output layers' "
                "softmax distributions, averaged over samples (ReSi)", "jensen_shannon", {},
                {"sample_blocks": _output("jensen_shannon")}, similarity=False,
                same_units=True),
        Measure("mutual_knn", "mutual k-nearest-neighbour alignment (Huh et al. 2024): the "
                "share of each sample's k cosine neighbours both layers agree on (k=)",
                "mutual_knn", {}, {"sample_blocks": _knn("mutual_knn")}, parameters=("k",),
                # this and the other k-NN measures: a replicate's k neighbours among fewer
                # samples reach further, so the measures change with n at fixed k and the
                # jackknife's bias estimate would extrapolate that; centred on the estimate, an
                # interval for the expected value at this n and k (paths/sample_blocks/
                # neighbours_jackknife.py; tests/paths/test_knn_jackknife.py)
                bias_corrected=False),
        Measure("jaccard_knn", "k-NN Jaccard similarity (Klabunde et al. 2023; ReSi): the "
                "Jaccard index of each sample's k cosine neighbours in the two layers, averaged "
                "(k=)", "jaccard_knn", {}, {"sample_blocks": _knn("jaccard_knn")},
                parameters=("k",), bias_corrected=False),
        Measure("rank_similarity", "rank similarity (Wang et al. 2020; ReSi): how alike the two "
                "layers rank each sample's shared k cosine neighbours, averaged (k=)",
                "rank_similarity", {}, {"sample_blocks": _knn("rank_similarity")},
                parameters=("k",), bias_corrected=False),
        Measure("joint_rank_jaccard", "joint rank-Jaccard similarity (Wang et al. 2020; ReSi): "
                "each sample's rank similarity times its k-NN Jaccard index, averaged (k=)",
                "joint_rank_jaccard", {}, {"sample_blocks": _knn("joint_rank_jaccard")},
                parameters=("k",), bias_corrected=False),
        Measure("second_order_cosine", "second-order cosine similarity (Hamilton et al. "
                "2016): the cosine of each sample's similarities to its neighbours in either "
                "layer, as each layer has them, averaged (k=)", "second_order_cosine", {},
                {"sample_blocks": _knn("second_order_cosine")}, parameters=("k",),
                bias_corrected=False),
        Measure("cknna", "CKNNA (Huh et al. 2024): CKA of the cosine kernels on the pairs that "
                "are k nearest neighbours in both layers (k=)", "cknna", {},
                {"sample_blocks": _knn("cknna")}, parameters=("k",), min_samples=4,
                bias_corrected=False,
                # the masked kernels are not symmetric (j a neighbour of i, not i of j), and
                # the unbiased HSIC's 1^T K L 1 is not 1^T L K 1 for such matrices
                symmetric=False),
        Measure("ridge_predictivity",
                "cross-validated ridge predictivity of layer_b from layer_a (Brain-Score; "
                "Conwell et al. 2024): the median over layer_b's units of the held-out Pearson "
                "r, averaged over k contiguous folds (folds=; ridge=, else chosen by GCV)",
                "ridge_predictivity", {}, {"covariance": predictivity.ridge_predictivity},
                symmetric=False, parameters=("folds", "ridge"), folds=True,
                # a replicate's training sets are smaller, and a score grows with them: the
                # jackknife would extrapolate that as bias (the interval is centred on the
                # estimate, for the expected score of this split of n samples)
                bias_corrected=False),
        Measure("pls_predictivity",
                "cross-validated PLS-regression predictivity of layer_b from layer_a "
                "(Brain-Score's default regression): the median over layer_b's units of the "
                "held-out Pearson r, averaged over k contiguous folds (folds=, components=)",
                "pls_predictivity", {}, {"covariance": predictivity.pls_predictivity},
                symmetric=False, parameters=("folds", "components"), folds=True,
                # the jackknife misses the variability of PLS with fewer components than x's
                # rank, whose directions (singular vectors of a cross co-moment) jump between
                # samples: 95% intervals covered 177 and 123 of 200 (2 of 6 components, n =
                # 300 and 1,200; the score's spread 0.048 and 0.041, the mean stderr 0.037
                # and 0.018), where all 6 components (ridge-like) covered 184
                lacks={"covariance": ("interval",)}),
        Measure("rtd", "Representation Topology Divergence (Barannikov et al. 2022): the summed "
                "lengths of the one-dimensional bars of the layers' R-Cross-Barcode, both ways, "
                "halved; all samples in memory, needs gudhi (the topology extra)", "rtd", {},
                {"sample_blocks": topology.rtd_value}, similarity=False,
                # a replicate's barcode has fewer samples, hence fewer bars: the summed bar
                # length grows with n, and the jackknife's bias estimate extrapolates that
                # growth (its centre about twice the value): 95% intervals around it covered
                # the mean RTD at n = 40 in 1 of 200 samples, around the estimate in 199 (the
                # standard error 1.5 times the spread; tests/paths/test_topology_inference.py)
                bias_corrected=False,
                # with groups of a few samples the jackknife overstates RTD's variance (20
                # groups: the standard error 1.39 times the spread at n = 100, 199 of 200
                # intervals covering); with 5 groups 1.05 times, 194 and 195 of 200 at n = 40
                # and 100 (tests/paths/test_topology_inference.py)
                jackknife_groups=5),
        Measure("matched_correlation",
                "mean correlation of one-to-one (bipartite) matched units (Li et al. 2016)",
                "match_units", {}, {"covariance": units.matched_correlation}),
    )
}

#: what compare computes when no metrics are named: the eight similarity measures
DEFAULT_METRICS = (
    "cka", "cka_debiased", "mean_cca", "r2_cca", "svcca", "pwcca", "linear_regression",
    "procrustes",
)


def check_metrics(metrics: list[str]) -> list[str]:
    """``metrics`` if every name is registered; an error listing the known ones otherwise."""
    unknown = [m for m in metrics if m not in MEASURES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(MEASURES)}")
    if not metrics:
        raise ValueError("no metrics asked for")
    return metrics


def check_samples(metrics: Sequence[str], count: int) -> None:
    """:class:`~dask_repsim.SampleCountError` ("<metric> needs at least N samples, got n") for
    the first of ``metrics`` whose :attr:`Measure.min_samples` exceeds ``count``: the one rule
    of every measure and path, checked before any pass over the data."""
    for metric in metrics:
        require_samples(count, MEASURES[metric].min_samples, metric)


def check_replicate_samples(metrics: Sequence[str], count: int, groups: int) -> None:
    """:class:`~dask_repsim.SampleCountError` when a jackknife replicate (``count`` samples
    less one of ``groups`` near-equal groups) would keep fewer samples than one of
    ``metrics`` needs (:attr:`Measure.min_samples`): its replicates would be degenerate (two
    centred samples make every linear measure 1), and so would the interval
    (:func:`~dask_repsim.engine.stream.replicate_bounds`).

    Examples
    --------
    >>> check_replicate_samples(["cka"], 40, 20)  # each replicate keeps 38 samples
    >>> check_replicate_samples(["cka", "cknna"], 6, 2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_repsim.exceptions.SampleCountError: groups=2 of 6 samples ... give groups=3 or more
    """
    for metric in metrics:
        replicate_bounds(count, groups, MEASURES[metric].min_samples, metric)


def paths_of(metrics: list[str]) -> list[str]:
    """The paths that compute every one of ``metrics``, in the order of :data:`PATHS`."""
    return [p for p in PATHS if all(p in MEASURES[m].paths for m in metrics)]


def path_functions(
    path: str, metrics: list[str], parameters: Mapping[str, Any] | None = None
) -> list[Callable[..., float] | Any]:
    """What ``path`` needs for each of ``metrics``, with the ``parameters`` each takes bound;
    an error naming those it cannot compute."""
    missing = [m for m in metrics if path not in MEASURES[m].paths]
    if missing:
        able = [m for m in MEASURES if path in MEASURES[m].paths]
        one = len(missing) == 1
        raise ValueError(
            f"method={path!r} computes {', '.join(able)}, not {', '.join(missing)}, which "
            f"{'is' if one else 'are'} not available on that path; compute "
            f"{'it' if one else 'them'} with method={paths_of(missing)[0]!r}"
            if paths_of(missing) else f"method={path!r} cannot compute {', '.join(missing)}"
        )
    out = []
    for m in metrics:
        function, names = MEASURES[m].paths[path], MEASURES[m].parameters
        given = {k: v for k, v in (parameters or {}).items() if k in names and v is not None}
        if MEASURES[m].folds and path == "covariance":
            k = given.pop("folds", predictivity.DEFAULT_FOLDS)
            check = partial(predictivity.check_split, m, folds=k, **given)
            out.append(predictivity.OnFolds(partial(function, **given), k, check))
            continue
        out.append(partial(function, **given) if given else function)
    return out


def check_parameters(metrics: list[str], parameters: Mapping[str, Any]) -> None:
    """An error for a given parameter (not ``None``) that no metric of ``metrics`` takes."""
    for name, value in parameters.items():
        users = [m for m in MEASURES if name in MEASURES[m].parameters]
        if value is not None and not any(m in users for m in metrics):
            raise ValueError(f"{name}= applies to the metric(s) "
                             f"{', '.join(_selected(m) for m in users)} only; "
                             "none of them is asked for")


def _selected(metric: str) -> str:
    """A metric's name, with the call of its pairwise function that selects it when that
    takes options: ``cka_rbf (cka(kernel='rbf'))``."""
    measure = MEASURES[metric]
    options = {k: v for k, v in measure.options.items() if k != "attribute"}
    if measure.function is None or not options:
        return metric
    given = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return f"{metric} ({measure.function}({given}))"
