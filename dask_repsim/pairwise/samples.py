"""Public pairwise functions of the sample-space measures: RSA, mutual k-NN alignment and
CKNNA.

Same inputs and shape as :mod:`dask_repsim.pairwise`: any input it accepts, samples paired by label,
the same input errors. They run on the ``"sample_blocks"`` path, tiles of sample x sample matrices
(:mod:`dask_repsim.paths.sample_blocks.tiles`, :mod:`dask_repsim.paths.sample_blocks.rsa`,
:mod:`dask_repsim.paths.sample_blocks.neighbours`): exact, cost ``n^2 (p + q)``, memory a few row
blocks per task
whatever n. That path has no NaN omission; which of its measures have jackknife intervals and
permutation tests, the registry says (:func:`dask_repsim.registry.supports`); asking for what
a measure lacks is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..options import Options, SampleDims, document
from ..results import Estimate
from ..runners import DEFAULT_K, measure_estimate, run_pair

_UNSUPPORTED = """interval, level, groups, permutations, seed
        A jackknife interval (``interval="jackknife"``, ``level``, ``groups``) and a
        permutation test (``permutations``, ``seed``), where this measure has them on the
        ``"sample_blocks"`` path: the table of :doc:`/guide/uncertainty` says which
        (:func:`dask_repsim.registry.supports`). Asking for one it lacks is an error that
        says so, the same as from :func:`dask_repsim.compare`."""


def sample_space_documented(function: Any) -> Any:
    """:func:`~dask_repsim.options.document`, with the options the path refuses."""
    function.__doc__ = function.__doc__.replace("{unsupported}", _UNSUPPORTED)
    return document(function)


def run_sample_space(measure: str, x: Any, y: Any, parameters: dict[str, Any], join: str,
         functions: Any = None, **given: Any) -> tuple[Any, str, Options]:
    """The cell of ``measure`` for the pair (:func:`dask_repsim.runners.run_pair`), the path
    that ran, and the options of the call."""
    options = Options(**given)
    cell, path, _ = run_pair(measure, x, y, options, join=join, parameters=parameters,
                             functions=functions)
    return cell, path, options


@sample_space_documented
def rsa(
    x: Any, y: Any, *, rdm: str = "correlation", compare: str = "corr", noise: Any = None,
    sample_dims: SampleDims = None, storage_options: Mapping[str, Any] | None = None,
    nan_policy: str = "raise", interval: str | None = None, level: float | None = None,
    groups: int | None = None, permutations: int = 0, seed: int | None = None,
    join: str = "exact",
) -> Estimate:
    """Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008).

    Each layer's representational dissimilarity matrix (RDM) over the samples, compared on
    the entries ``i < j``, as rsatoolbox's ``calc_rdm`` and ``compare`` define them.

    Parameters
    ----------
    {inputs}
    rdm
        ``"correlation"`` (default): ``1 - r_ij``, the Pearson correlation of samples i and
        j across features. ``"euclidean"``: the squared euclidean distance divided by the
        number of features (rsatoolbox's ``"euclidean"``). ``"mahalanobis"``: ``(x_i -
        x_j)' P (x_i - x_j) / p`` with each layer's noise precision ``P`` (``noise=``),
        rsatoolbox's ``calc_rdm(method="mahalanobis", noise=P)``: distances in units of the
        noise (Walther et al. 2016), the euclidean RDM of the rows ``x L`` (``P = L L'``).
    compare
        ``"corr"`` (default): Pearson correlation of the two RDMs' entries; ``"cosine"``:
        their cosine; ``"spearman"``: the Pearson correlation of their ranks (ties averaged);
        ``"rho-a"``: Spearman's rho without tie correction, ``12 sum (r1 - m)(r2 - m) /
        (N^3 - N)`` over the N entries; ``"tau-b"``: Kendall's tau-b (scipy's
        ``kendalltau``); ``"tau-a"``: Kendall's tau without the tie correction, concordant
        minus discordant pairs over all ``N (N - 1) / 2`` pairs (rsatoolbox's, the choice of
        Nili et al. 2014 for models that predict tied dissimilarities); ``"cosine_cov"`` and
        ``"corr_cov"``: rsatoolbox's whitened cosine and correlation (Diedrichsen et al.
        2021), the entries whitened by their covariance under i.i.d. noise, equal to the
        cosine of the double-centred RDMs ``H D H`` (``"corr_cov"``: each RDM's entries less
        their mean first); the comparisons for unbiased (cross-validated) distance estimates.
        ``"corr"``, ``"cosine"`` and the whitened ones stream over tiles for any number of
        samples; the rank comparisons hold all entries at once, up to
        :data:`dask_repsim.paths.sample_blocks.rsa.RANK_MAX_SAMPLES` samples and the memory budget.
    noise
        With ``rdm="mahalanobis"`` (and only then): the noise precision matrices ``(P_x,
        P_y)``, features x features each (one matrix serves both layers when they are as
        wide), symmetric positive semidefinite (a rank-deficient one is allowed). In
        :func:`dask_repsim.compare` it is ``rdm_noise=``, a mapping of layer names to
        matrices.
    permutations, seed
        ``permutations=K``: also a permutation test from the same pass over the tiles, RSA
        under K random permutations of y's samples within blocks of 2,048 consecutive samples
        (seeded by ``seed``, default 0; the permutations of every path), giving ``.pvalue``,
        ``.null_mean``, ``.null_std`` and ``.null``, for every ``rdm`` and ``compare``
        (:mod:`dask_repsim.paths.sample_blocks.rsa_null`). Assumes samples are exchangeable
        within a block: store them in a shuffled order. Each permutation reads the tiles' RDM
        entries once more (``n^2 / 2``, whatever the features); Kendall's taus are recomputed,
        ``O(N log N)`` each for ``N = n (n - 1) / 2`` entries.
    interval, level, groups
        ``interval="jackknife"``: also a ``level`` (default 0.95) interval from RSA with each
        of ``groups`` (default 20) contiguous groups of samples left out, each replicate
        recomputed exactly from the same pass over the tiles, giving ``.stderr``,
        ``.ci_centre``, ``.ci_low``, ``.ci_high``, for every ``rdm`` and ``compare``
        (:mod:`dask_repsim.paths.sample_blocks.rsa_jackknife`). The rank comparisons rank each
        replicate's entries again: ``groups`` times the value's ranking.

    Returns
    -------
    Estimate
        A float, with ``.method`` ``"sample_blocks"``, ``.rdm`` and ``.compare``; with
        ``interval``, the interval's fields; with ``permutations``, the permutation test's.

    Notes
    -----
    Exact, in float64: each pair of row blocks is one task forming both RDMs' blocks and returning
    moments that merge exactly (:mod:`dask_repsim.paths.sample_blocks.rsa`). Cost ``n^2 (p + q) /
    2``; no n x n matrix is held. A sample whose activations are equal in all features has no
    correlation with the others: with ``rdm="correlation"`` it is an error.

    References
    ----------
    Kriegeskorte, Mur, Bandettini (2008). Representational similarity analysis - connecting
    the branches of systems neuroscience. Frontiers in Systems Neuroscience 2, 4.
    Diedrichsen, Berlot, Mur, Schütt, Shahbazi, Kriegeskorte (2021). Comparing representational
    geometries using whitened unbiased-distance-matrix similarity. Neurons, Behavior, Data
    analysis and Theory 5(3). Walther, Nili, Ejaz, Alink, Kriegeskorte, Diedrichsen (2016).
    Reliability of dissimilarity measures for multi-voxel pattern analysis. NeuroImage 137.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 10))
    >>> q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    >>> round(rsa(x, 2 * x @ q, rdm="euclidean"), 6)
    1.0
    >>> precision = np.diag(rng.uniform(0.5, 2.0, size=10))  # noise precision of x and of y
    >>> round(rsa(x, x, rdm="mahalanobis", noise=precision, compare="corr_cov"), 6)
    1.0
    """
    parameters = {"rdm": rdm, "rdm_compare": compare, "rdm_noise": noise}
    cell, path, options = run_sample_space(
        "rsa", x, y, parameters, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("rsa", cell, options, path, rdm=rdm, compare=compare)


@sample_space_documented
def mutual_knn(
    x: Any, y: Any, *, k: int = DEFAULT_K, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Mutual k-nearest-neighbour alignment (Huh, Cheung, Wang & Isola 2024).

    For each sample, the share of its k nearest neighbours (cosine similarity of the raw
    activations, the sample itself excluded) that both layers agree on, averaged over
    samples: ``mean_i |N_x(i) ∩ N_y(i)| / k``.

    Parameters
    ----------
    {inputs}
    k
        Neighbours per sample, ``1 <= k < n`` (default 10, as the paper).
    {unsupported}

    Returns
    -------
    Estimate
        A float in [0, 1], with ``.method`` ``"sample_blocks"`` and ``.k``.

    Notes
    -----
    Equal similarities are ordered by sample index (smaller first), so the neighbour sets are
    deterministic; the reference code leaves ties to its sort. It also clips outlying
    activations (its ``remove_outliers``) before measuring: that is preprocessing, not done
    here. A sample whose activations are all zero has no cosine similarity: an error.

    References
    ----------
    Huh, Cheung, Wang, Isola (2024). The Platonic Representation Hypothesis. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 8))
    >>> float(mutual_knn(x, 5 * x, k=10))
    1.0
    """
    cell, path, options = run_sample_space(
        "mutual_knn", x, y, {"k": k}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("mutual_knn", cell, options, path, k=k)


@sample_space_documented
def jaccard_knn(
    x: Any, y: Any, *, k: int = DEFAULT_K, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """k-nearest-neighbour Jaccard similarity (Klabunde et al. 2023; ReSi's
    ``jaccard_similarity``).

    For each sample, its k nearest neighbours in each layer (cosine similarity of the raw
    activations, the sample itself excluded, as :func:`mutual_knn`), and the Jaccard index of
    the two sets, averaged over samples: ``mean_i |N_x(i) ∩ N_y(i)| / |N_x(i) ∪ N_y(i)|``.
    With ``c_i`` shared neighbours that is ``mean_i c_i / (2 k - c_i)``: the same neighbour
    lists as mutual k-NN, weighed so that a partial overlap counts less.

    Parameters
    ----------
    {inputs}
    k
        Neighbours per sample, ``1 <= k < n`` (default 10, as ReSi).
    {unsupported}

    Returns
    -------
    Estimate
        A float in [0, 1], with ``.method`` ``"sample_blocks"`` and ``.k``; about
        ``k / (2 (n - 1) - k)`` for unrelated layers.

    Notes
    -----
    Ties and all-zero samples as :func:`mutual_knn`.

    References
    ----------
    Klabunde, Schumacher, Strohmaier, Lemmerich (2023). Similarity of Neural Network Models: A
    Survey of Functional and Representational Measures. ACM Computing Surveys (2025).

    Klabunde, Wald, Schumacher, Strohmaier, Lemmerich (2024). ReSi: A Comprehensive Benchmark
    for Representational Similarity Measures. ICLR 2025.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 8))
    >>> float(jaccard_knn(x, 5 * x, k=10))
    1.0
    """
    cell, path, options = run_sample_space(
        "jaccard_knn", x, y, {"k": k}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("jaccard_knn", cell, options, path, k=k)


@sample_space_documented
def rank_similarity(
    x: Any, y: Any, *, k: int = DEFAULT_K, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Rank similarity of the k-nearest-neighbour lists (Wang et al. 2020; ReSi's
    ``rank_similarity``).

    For each sample i, its k nearest neighbours in each layer (cosine similarity of the raw
    activations, the sample itself excluded, as :func:`mutual_knn`), ranked 1 (nearest) to
    k. Each neighbour j the two lists share scores ``2 / ((1 + |r_x(j) - r_y(j)|)
    (r_x(j) + r_y(j)))``: most when it has the same rank in both, and more near the top. The
    sum is divided by ``H_c = 1 + 1/2 + ... + 1/c``, its value when the ``c`` shared
    neighbours are ranked alike, so a sample whose shared neighbours keep their order scores 1
    however few they are; a sample with none scores 0. Averaged over samples.

    Parameters
    ----------
    {inputs}
    k
        Neighbours per sample, ``1 <= k < n`` (default 10, as ReSi).
    {unsupported}

    Returns
    -------
    Estimate
        A float in [0, 1], with ``.method`` ``"sample_blocks"`` and ``.k``.

    Notes
    -----
    Ties and all-zero samples as :func:`mutual_knn`. The score looks at the order of the
    shared neighbours only, not at how many are shared (:func:`joint_rank_jaccard` weighs it
    by the Jaccard index).

    References
    ----------
    Wang, Rao, Guo, Wang, Liu, Guan (2020). Towards Understanding the Instability of Network
    Embedding. IEEE Transactions on Knowledge and Data Engineering 34(2).

    Klabunde, Wald, Schumacher, Strohmaier, Lemmerich (2024). ReSi: A Comprehensive Benchmark
    for Representational Similarity Measures. ICLR 2025.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 8))
    >>> float(rank_similarity(x, 5 * x, k=10))
    1.0
    """
    cell, path, options = run_sample_space(
        "rank_similarity", x, y, {"k": k}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("rank_similarity", cell, options, path, k=k)


@sample_space_documented
def joint_rank_jaccard(
    x: Any, y: Any, *, k: int = DEFAULT_K, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Joint rank and Jaccard similarity of the k-nearest-neighbour lists (Wang et al. 2020;
    ReSi's ``joint_rank_jaccard_similarity``).

    Each sample's :func:`rank_similarity` score times its :func:`jaccard_knn` index
    ``c / (2 k - c)`` (``c`` shared neighbours of ``k``), averaged over samples: high only when
    the lists share many neighbours and rank them alike.

    Parameters
    ----------
    {inputs}
    k
        Neighbours per sample, ``1 <= k < n`` (default 10, as ReSi).
    {unsupported}

    Returns
    -------
    Estimate
        A float in [0, 1], with ``.method`` ``"sample_blocks"`` and ``.k``.

    Notes
    -----
    Ties and all-zero samples as :func:`mutual_knn`.

    References
    ----------
    As :func:`rank_similarity`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 8))
    >>> float(joint_rank_jaccard(x, 5 * x, k=10))
    1.0
    """
    cell, path, options = run_sample_space(
        "joint_rank_jaccard", x, y, {"k": k}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("joint_rank_jaccard", cell, options, path, k=k)


@sample_space_documented
def second_order_cosine(
    x: Any, y: Any, *, k: int = DEFAULT_K, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Second-order cosine similarity (Hamilton, Leskovec & Jurafsky 2016).

    For each sample i, the union ``U_i`` of its k nearest neighbours in the two layers (cosine
    similarity of the raw activations, the sample itself excluded, as :func:`mutual_knn`), its
    cosine similarities to those samples in each layer, ``s_x(i) = (K_ij)_{{j in U_i}}`` and
    ``s_y(i) = (L_ij)_{{j in U_i}}``, and the cosine of the two vectors, averaged over samples.
    Where the set measures ask whether the layers agree on who the neighbours are, this asks
    whether they agree on how similar the sample is to each of them.

    Parameters
    ----------
    {inputs}
    k
        Neighbours per sample, ``1 <= k < n`` (default 10, as ReSi).
    {unsupported}

    Returns
    -------
    Estimate
        A float in [-1, 1] (in [0, 1] for non-negative activations), with ``.method``
        ``"sample_blocks"`` and ``.k``.

    Notes
    -----
    One pass for the neighbour lists and one more for the similarities they do not hold
    (:mod:`~dask_repsim.paths.sample_blocks.second_order`). ReSi's
    ``second_order_cosine_similarity`` builds the vectors from cosine distances ``1 - K_ij``
    instead of the paper's similarities, which gives other values. A sample whose
    similarities to its whole neighbourhood are 0 in one layer has no second-order cosine: an
    error. Ties and all-zero samples as :func:`mutual_knn`.

    References
    ----------
    Hamilton, Leskovec, Jurafsky (2016). Cultural Shift or Linguistic Drift? Comparing Two
    Computational Measures of Semantic Change. EMNLP.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 8))
    >>> round(float(second_order_cosine(x, 5 * x, k=10)), 12)
    1.0
    """
    cell, path, options = run_sample_space(
        "second_order_cosine", x, y, {"k": k}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("second_order_cosine", cell, options, path, k=k)


@sample_space_documented
def cknna(
    x: Any, y: Any, *, k: int = DEFAULT_K, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Centred kernel nearest-neighbour alignment, CKNNA (Huh, Cheung, Wang & Isola 2024).

    CKA of the cosine-similarity kernels restricted to pairs of samples that are k nearest
    neighbours in both layers, with the unbiased HSIC estimator, as the paper's reference
    code (``cknna`` with ``unbiased=True``) computes it.

    Parameters
    ----------
    {inputs}
    k
        Neighbours per sample, ``2 <= k < n`` (default 10, as the paper).
    {unsupported}

    Returns
    -------
    Estimate
        A float, with ``.method`` ``"sample_blocks"``, ``.k``, ``.hsic`` (the unbiased HSIC
        terms ``(KL, KK, LL)``) and ``.reference_value``: ``KL / (sqrt(KK LL) + 1e-6)``, the
        number the reference code returns.

    Notes
    -----
    ``K_ij`` is the cosine similarity of samples i and j in x (the reference code
    l2-normalises each sample and takes inner products), L the same in y. With ``M_ij = 1``
    when j is among i's k nearest neighbours (i excluded) in both layers, ``M^K``, ``M^L``
    the masks of one layer, and the reference's unbiased HSIC H (Song et al. 2012, eq. 5, of
    the masked, not symmetric, matrices)::

        CKNNA = H(M∘K, M∘L) / sqrt(H(M^K∘K, M^K∘K) H(M^L∘L, M^L∘L))
        H(A, B) = [sum_ij A_ij B_ji + 1'A1 1'B1 / ((n-1)(n-2)) - 2 1'AB1 / (n-2)] / (n (n-3))

    Differences from the reference code: its denominator adds 1e-6 (``.reference_value``
    keeps it), which lowers the value by a relative ``1e-6 / sqrt(KK LL)``: the HSIC terms
    shrink as k/n grows small, so at 400 samples and k = 10 the fourth digit moves; ties
    in the neighbour ranking are broken by sample index here; its outlier clipping of the
    features is preprocessing, not done here. A kernel whose masked HSIC with itself is not
    positive leaves CKNNA undefined: an error.

    References
    ----------
    Huh, Cheung, Wang, Isola (2024). The Platonic Representation Hypothesis. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 8))
    >>> round(cknna(x, 5 * x, k=10), 9)
    1.0
    """
    cell, path, options = run_sample_space(
        "cknna", x, y, {"k": k}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    fields = dict(cell.fields)
    kl, kk, ll = fields.pop("cknna_hsic")
    cell = dataclasses.replace(cell, fields=fields)
    return measure_estimate("cknna", cell, options, path, k=k, hsic=(kl, kk, ll),
                         reference_value=kl / (float(kk * ll) ** 0.5 + 1e-6))


