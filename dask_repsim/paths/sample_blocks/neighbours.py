"""Mutual k-nearest-neighbour alignment and CKNNA (Huh, Cheung, Wang & Isola 2024) over row-block
tiles, without ever holding the n x n similarity matrices.

Both measures start from each sample's k nearest neighbours in each layer: the k other samples of
largest cosine similarity ``K_ij = <x_i, x_j> / (||x_i|| ||x_j||)`` (raw activations, not centred;
the reference code l2-normalises each sample's features and takes inner products). Each pair of row
blocks ``I <= J`` (:mod:`dask_repsim.paths.sample_blocks.tiles`) is one task: it forms the ``b x b``
similarity block of each layer in float64 and returns, for every row of I, its k most similar
columns of J, and for every row of J its k most similar columns of I (the block's transpose). A tree
of merges keeps the k best of each row over all blocks. Only ``n x k`` indices and similarities
reach the client (``n x m``, ``m > k``, for the jackknife's replicates:
:mod:`~dask_repsim.paths.sample_blocks.neighbours_jackknife`).

Ties: neighbours are ordered by similarity, larger first, and equal similarities by sample
index, smaller first, so the neighbour sets are a deterministic function of the similarities
(the reference code's ``argsort``/``topk`` leave ties to the sorting routine).

- ``mutual_knn``: ``mean_i |N_x(i) ∩ N_y(i)| / k``, the reference ``mutual_knn``.
- ``jaccard_knn``: ``mean_i |N_x(i) ∩ N_y(i)| / |N_x(i) ∪ N_y(i)|``, the k-NN Jaccard
  similarity (ReSi's ``jaccard_similarity``, cosine neighbours).
- ``rank_similarity``: Wang et al. (2020), ReSi's ``rank_similarity``: with ``r_x(j)``, ``r_y(j)``
  the ranks (1 = nearest) of a shared neighbour j in each list, sample i's score is
  ``sum_{j in both} 2 / ((1 + |r_x - r_y|)(r_x + r_y)) / H_c`` (``H_c = 1 + 1/2 + ... + 1/c``
  for ``c`` shared neighbours, the score of ``c`` neighbours ranked alike; 0 when none is
  shared), averaged; ``joint_rank_jaccard`` averages each sample's product of that score and
  its Jaccard index.
- ``cknna``: the reference ``cknna`` with its defaults (``unbiased=True``,
  ``distance_agnostic=False``): with the mask ``M_ij = 1`` when j is among i's k neighbours in
  both layers (x's for ``M^K``), ``CKNNA = H(M∘K, M∘L) / sqrt(H(M^K∘K, M^K∘K) H(M^L∘L, M^L∘L))``
  where H is the reference's unbiased HSIC (Song et al. 2012, eq. 5) of the masked matrices,
  which are not symmetric: ``H(A, B) = [sum_ij A_ij B_ji + 1'A1 1'B1 / ((n-1)(n-2))
  - 2 1'AB1 / (n-2)] / (n (n-3))``. Computed from the neighbour lists alone: ``sum A_ij B_ji``
  runs over the pairs each of which is the other's neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import dask
import numpy as np

from ...engine.columns import checked_columns
from ...engine.parallel import compute
from ...engine.permuted import permutation_series
from ...engine.reduction import tree_reduce
from ...exceptions import InputError
from ...io.inputs import Layer
from ...io.validation import require_samples
from . import neighbours_jackknife as jackknife
from . import second_order
from . import tiles as row_tiles
from .candidates import merge_candidates, top_k
from .tiles import Blocks, block_pairs, check_patterns, row_statistics, unit_rows

# float64 b x b matrices a task holds at once: the similarity block, the argpartition indices,
# a comparison and the transposed selection.
_MATRICES = 6


def _block_rows(n: int, width: int, k: int) -> int:
    """Samples per row block of a pass keeping k neighbours per sample: a tile's candidate
    lists (2 b rows, both layers, k similarities and k indices each: ``64 b k`` bytes) count
    as ``4 k`` more features. A merge of 8 results holds their concatenation and its order,
    about ``224 b k`` bytes: less than a tile's b x b matrices while ``b >= 5 k``."""
    return row_tiles.block_rows(n, width + 4 * k, _MATRICES)


def _tile(i, j, k, xi, xj, yi, yj, nxi, nxj, nyi, nyj, cols_i, cols_j) -> dict:
    """Candidate neighbours, per layer, of the rows of block i among block j and of the rows of
    block j among block i: ``{i: [(values, idx) of x, of y], j: [...]}``."""
    out: dict[int, list] = {i: [], j: []}
    for bi, bj, ni, nj in ((xi, xj, nxi, nxj), (yi, yj, nyi, nyj)):
        a = unit_rows(bi, ni)
        if i == j:
            s = a @ a.T
            np.fill_diagonal(s, -np.inf)  # a sample is not its own neighbour
            out[i].append(top_k(s, cols_i, k))
            continue
        s = a @ unit_rows(bj, nj).T
        out[i].append(top_k(s, cols_j, k))
        out[j].append(top_k(np.ascontiguousarray(s.T), cols_i, k))
    return out


def nearest_neighbours(x: Layer, y: Layer, k: int, *, block_rows: int | None = None,
                       norms: tuple[np.ndarray, np.ndarray] | None = None) -> tuple:
    """Each sample's k nearest neighbours by cosine similarity in x and in y.

    ``norms``: the samples' norms in x and y (checked); computed here when not given.
    Returns ``(sim_x, idx_x, sim_y, idx_y)``, each ``n x k``, rows ordered by (larger
    similarity, smaller index).

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
    >>> sim_x, idx_x, _, _ = nearest_neighbours(as_layer(x), as_layer(x, name="y"), 2)
    >>> idx_x.tolist()
    [[1, 3], [0, 3], [3, 1], [1, 0]]
    """
    n = int(x.data.shape[0])
    if norms is None:
        norms = _checked_norms(x, y, "k nearest neighbours")
    rows = block_rows or _block_rows(n, int(x.data.shape[1] + y.data.shape[1]), k)
    blocks = Blocks(x, y, rows)
    cols = [np.arange(*blocks.bounds[b]) for b in range(len(blocks))]
    tiles = {
        (i, j): dask.delayed(_tile, pure=True)(
            i, j, k, blocks.x[i], blocks.x[j], blocks.y[i], blocks.y[j],
            norms[0][blocks.rows(i)], norms[0][blocks.rows(j)],
            norms[1][blocks.rows(i)], norms[1][blocks.rows(j)], cols[i], cols[j])
        for i, j in block_pairs(len(blocks))
    }
    merged = compute(*(
        tree_reduce([t for (i, j), t in tiles.items() if r in (i, j)], merge_candidates,
                    name=f"repsim-knn-{r}", args=(r, k))
        for r in range(len(blocks))
    ))
    return tuple(
        np.concatenate([m[r][side][part] for r, m in enumerate(merged)])
        for side in (0, 1) for part in (0, 1)
    )


def _checked_norms(x: Layer, y: Layer, measure: str) -> tuple[np.ndarray, np.ndarray]:
    checked_columns([x, y])
    norms = []
    for layer, (mean, norm) in zip((x, y), row_statistics([x, y], False), strict=True):
        check_patterns(layer.name, mean, norm, int(layer.data.shape[1]), False, measure)
        norms.append(norm)
    return norms[0], norms[1]


def mutual_fraction(idx_x: np.ndarray, idx_y: np.ndarray) -> float:
    """``mean_i |N_x(i) ∩ N_y(i)| / k`` from the neighbour lists (``n x k`` indices).

    Examples
    --------
    >>> mutual_fraction(np.array([[1, 2], [0, 2]]), np.array([[2, 1], [2, 3]]))
    0.75
    """
    return float(np.mean(_shared_neighbours(idx_x, idx_y) / idx_x.shape[1]))


def _shared_neighbours(idx_x: np.ndarray, idx_y: np.ndarray) -> np.ndarray:
    """Each sample's number of neighbours in both lists: ``|N_x(i) ∩ N_y(i)|``."""
    both = np.sort(np.concatenate([idx_x, idx_y], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1)  # each list holds an index once


def jaccard_fraction(idx_x: np.ndarray, idx_y: np.ndarray) -> float:
    """``mean_i |N_x(i) ∩ N_y(i)| / |N_x(i) ∪ N_y(i)|`` from the neighbour lists: with c
    shared neighbours of k, ``c / (2 k - c)``.

    Examples
    --------
    >>> jaccard_fraction(np.array([[1, 2], [0, 2]]), np.array([[2, 1], [2, 3]]))
    0.6666666666666666
    """
    common = _shared_neighbours(idx_x, idx_y)
    return float(np.mean(common / (2 * idx_x.shape[1] - common)))


def rank_scores(idx_x: np.ndarray, idx_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's rank similarity and number of shared neighbours from the neighbour lists
    (``n x k`` indices, nearest first).

    Examples
    --------
    >>> score, common = rank_scores(np.array([[1, 2], [0, 2]]), np.array([[1, 2], [3, 0]]))
    >>> score.round(6).tolist(), common.tolist()  # ranks (1, 1) and (2, 2); (1, 2)
    ([1.0, 0.333333], [2, 1])
    """
    n, k = idx_x.shape
    idx = np.concatenate([idx_x, idx_y], axis=1)
    order = np.argsort(idx, axis=1, kind="stable")  # x's entry before y's for a shared index
    s = np.take_along_axis(idx, order, axis=1)
    row, pos = np.nonzero(s[:, 1:] == s[:, :-1])
    rank_x = order[row, pos] + 1.0
    rank_y = order[row, pos + 1] - k + 1.0
    terms = 2.0 / ((1.0 + np.abs(rank_x - rank_y)) * (rank_x + rank_y))
    common = np.bincount(row, minlength=n)
    harmonic = np.concatenate([[1.0], np.cumsum(1.0 / np.arange(1, k + 1))])  # H_0 unused
    score = np.bincount(row, weights=terms, minlength=n) / harmonic[common]
    return np.where(common > 0, score, 0.0), common


def rank_fraction(idx_x: np.ndarray, idx_y: np.ndarray, joint: bool = False) -> float:
    """Rank similarity (``joint``: joint rank-Jaccard similarity) from the neighbour lists."""
    score, common = rank_scores(idx_x, idx_y)
    if joint:
        score = score * common / (2 * idx_x.shape[1] - common)
    return float(np.mean(score))


def masked_hsic(n: int, rows: np.ndarray, cols: np.ndarray, a: np.ndarray,
                b: np.ndarray) -> float:
    """The reference code's unbiased HSIC of ``A`` and ``B``, n x n matrices zero but at the
    entries ``(rows, cols)`` (no diagonal), where they hold ``a`` and ``b``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> m = (rng.random((8, 8)) < 0.4) & ~np.eye(8, dtype=bool)
    >>> a_, b_ = rng.normal(size=(8, 8)) * m, rng.normal(size=(8, 8)) * m
    >>> direct = (np.sum(a_ * b_.T) + a_.sum() * b_.sum() / (7 * 6)
    ...           - 2 * np.sum(a_ @ b_) / 6) / (8 * 5)
    >>> r, c = np.nonzero(m)
    >>> bool(np.isclose(masked_hsic(8, r, c, a_[r, c], b_[r, c]), direct))
    True
    """
    keys = rows.astype(np.int64) * n + cols
    order = np.argsort(keys)
    reverse = cols.astype(np.int64) * n + rows
    at = np.minimum(np.searchsorted(keys, reverse, sorter=order), len(keys) - 1)
    found = keys[order[at]] == reverse
    mutual = float(a[found] @ b[order[at[found]]])  # sum_ij A_ij B_ji
    col_a = np.bincount(cols, weights=a, minlength=n)
    row_b = np.bincount(rows, weights=b, minlength=n)
    total = mutual + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2.0 * (col_a @ row_b) / (n - 2)
    return float(total / (n * (n - 3)))


def _shared(sim_x, idx_x, sim_y, idx_y) -> tuple:
    """The entries (row, column, K, L) where both layers list the column as a neighbour."""
    k = idx_x.shape[1]
    idx = np.concatenate([idx_x, idx_y], axis=1)
    order = np.argsort(idx, axis=1, kind="stable")  # x's entry before y's for a shared index
    s = np.take_along_axis(idx, order, axis=1)
    row, pos = np.nonzero(s[:, 1:] == s[:, :-1])
    kx = sim_x[row, order[row, pos]]
    ly = sim_y[row, order[row, pos + 1] - k]
    return row, s[row, pos], kx, ly


def cknna_value(sim_x, idx_x, sim_y, idx_y, names: tuple[str, str] = ("x", "y")) -> tuple:
    """CKNNA and its three HSIC terms ``(KL, KK, LL)`` from the neighbour lists."""
    n, k = idx_x.shape
    rows = np.repeat(np.arange(n), k)
    kl = masked_hsic(n, *_shared(sim_x, idx_x, sim_y, idx_y))
    kk = masked_hsic(n, rows, idx_x.ravel(), sim_x.ravel(), sim_x.ravel())
    ll = masked_hsic(n, rows, idx_y.ravel(), sim_y.ravel(), sim_y.ravel())
    for name, h in zip(names, (kk, ll), strict=True):
        if not h > 0:
            raise InputError(
                f"CKNNA is undefined: the unbiased HSIC of {name}'s {k}-NN-masked kernel with "
                f"itself is {h:.3g}, not positive (try a larger k)"
            )
    return float(kl / np.sqrt(kk * ll)), (kl, kk, ll)


def check_k(k: int, n: int, measure: str, least: int = 1) -> int:
    """``k`` if it is an int with ``least <= k < n``; an error otherwise."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, not {k!r}")
    if not least <= k < n:
        raise ValueError(f"{measure} needs {least} <= k < n (the other samples), got k={k} "
                         f"with n={n} samples")
    return int(k)


KNN_MEASURES = ("mutual_knn", "jaccard_knn", "rank_similarity", "joint_rank_jaccard",
                "second_order_cosine", "cknna")
#: each measure's name in errors
_NAMES = {"mutual_knn": "mutual k-NN", "jaccard_knn": "k-NN Jaccard",
          "rank_similarity": "rank similarity", "joint_rank_jaccard": "joint rank-Jaccard",
          "second_order_cosine": "second-order cosine similarity"}
#: neighbours per sample when k is not given (as Huh et al. 2024)
DEFAULT_K = 10


#: the measures that are functions of the neighbour lists' indices alone
_SET_MEASURES = ("mutual_knn", "jaccard_knn", "rank_similarity", "joint_rank_jaccard")


def _set_measure(measure: str, idx_x: np.ndarray, idx_y: np.ndarray) -> float:
    """One of :data:`_SET_MEASURES` from the neighbour lists' indices."""
    if measure == "mutual_knn":
        return mutual_fraction(idx_x, idx_y)
    if measure == "jaccard_knn":
        return jaccard_fraction(idx_x, idx_y)
    return rank_fraction(idx_x, idx_y, joint=measure == "joint_rank_jaccard")


def list_values(lists: tuple, measures: Sequence[str],
                names: tuple[str, str] = ("x", "y")) -> dict:
    """The set measures and CKNNA (with its HSIC terms, ``cknna_hsic``) among ``measures``
    from the neighbour lists ``(sim_x, idx_x, sim_y, idx_y)`` of samples ``0 .. n - 1``."""
    out: dict = {m: _set_measure(m, lists[1], lists[3]) for m in measures if m in _SET_MEASURES}
    if "cknna" in measures:
        out["cknna"], out["cknna_hsic"] = cknna_value(*lists, names=names)
    return out


def knn_values(x: Layer, y: Layer, k: int, *, measures: tuple[str, ...] = KNN_MEASURES,
               block_rows: int | None = None, null: tuple[int, int] | None = None,
               groups: int | None = None) -> dict:
    """Mutual k-NN alignment, k-NN Jaccard similarity, rank and joint rank-Jaccard similarity
    and CKNNA of two layers from one pass over the tiles (second-order cosine similarity: one
    more, :mod:`~dask_repsim.paths.sample_blocks.second_order`).

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples; checked by
        :func:`~dask_repsim.engine.columns.checked_columns` and for samples whose activations are
        all zero (no cosine similarity).
    k
        Neighbours per sample, ``1 <= k < n`` (``2 <= k`` for CKNNA, as the reference code).
    measures
        Which of :data:`KNN_MEASURES` to compute.
    block_rows
        Samples per row block; default :func:`~dask_repsim.paths.sample_blocks.tiles.block_rows`.
    null
        ``(count, seed)``: also each measure under ``count`` permutations of y's samples
        (:func:`permuted_values`), from the same neighbour lists (second-order cosine: and
        the similarities the permuted lists lack, looked up in its second pass,
        :func:`~dask_repsim.paths.sample_blocks.second_order.second_order_values`).
    groups
        Also each measure with each of ``groups`` contiguous groups of samples left out
        (:func:`~dask_repsim.engine.stream.group_bounds`), each replicate exact: the pass
        keeps longer lists, from which each replicate takes its samples' k nearest neighbours
        among the samples it keeps (:mod:`~dask_repsim.paths.sample_blocks.
        neighbours_jackknife`, which says when it needs one more pass).

    Returns
    -------
    dict
        The ``measures`` (floats) and, with CKNNA, ``cknna_hsic``: its unbiased HSIC terms
        ``(KL, KK, LL)``; the reference code returns ``KL / (sqrt(KK LL) + 1e-6)``. With
        ``null``, ``"null"``: measure -> its ``count`` values under the permutations. With
        ``groups``, ``"replicates"``: measure -> its ``groups`` leave-a-group-out values, in
        group order.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 8))
    >>> v = knn_values(as_layer(x), as_layer(3 * x, name="y"), 10, block_rows=32)
    >>> v["mutual_knn"], round(v["cknna"], 9)
    (1.0, 1.0)
    """
    unknown = [m for m in measures if m not in KNN_MEASURES]
    if unknown or not measures:
        raise ValueError(f"measures must be among {KNN_MEASURES}, not {measures!r}")
    norms = _checked_norms(x, y, " and ".join(measures))
    n = len(norms[0])
    if "cknna" in measures:
        require_samples(n, 4, "CKNNA")
        check_k(k, n, "CKNNA", 2)
    check_k(k, n, next((_NAMES[m] for m in measures if m in _NAMES), "mutual k-NN"))
    bounds, length = None, k
    if groups:
        bounds = jackknife.check_groups(n, k, groups, measures)
        length = jackknife.list_length(n, k, bounds)
    rows = block_rows or _block_rows(n, int(x.data.shape[1] + y.data.shape[1]), length)
    full = nearest_neighbours(x, y, length, block_rows=rows, norms=norms)
    lists = tuple(a[:, :k] for a in full)  # the first k of each ordered list: its top k
    names = (x.name, y.name)
    out = list_values(lists, measures, names)
    if null is not None:
        out["null"] = permuted_values(lists, [m for m in measures if m != "second_order_cosine"],
                                      *null)
    if "second_order_cosine" in measures:  # one more pass, for the similarities not listed
        perms = permutation_series(n, null[1], null[0]) if null is not None else ()
        found = second_order.second_order_values(Blocks(x, y, rows), norms, lists, perms)
        out["second_order_cosine"] = found[0]
        if null is not None:
            out["null"]["second_order_cosine"] = found[1:]
    if bounds is not None:
        out["replicates"] = jackknife.knn_replicates(
            Blocks(x, y, rows), norms, full, measures, bounds, k,
            partial(list_values, measures=measures, names=names))
    return out


def permuted_values(lists: tuple, measures: Sequence[str], count: int,
                    seed: int) -> dict[str, list[float]]:
    """Each k-NN set measure and CKNNA under ``count`` permutations of y's samples (those of
    :func:`~dask_repsim.engine.permuted.permutation_series`, the other paths' permutations for
    the same seed), from the neighbour lists alone.

    With y's samples permuted by ``perm`` (sample ``perm[i]`` of y paired with sample ``i`` of
    x), sample i's neighbours in the permuted y are those of ``perm[i]`` in y, relabelled by
    the inverse permutation, at the same similarities and in the same order: no pass over the
    data is needed. (Ties at the k-th neighbour stay broken as in y, by y's sample order.)
    """
    sim_x, idx_x, sim_y, idx_y = lists
    out: dict[str, list[float]] = {m: [] for m in measures}
    for perm in permutation_series(len(idx_x), seed, count):
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        moved = inverse[idx_y[perm]]
        for m in measures:
            if m == "cknna":
                out[m].append(cknna_value(sim_x, idx_x, sim_y[perm], moved)[0])
            else:
                out[m].append(_set_measure(m, idx_x, moved))
    return out

