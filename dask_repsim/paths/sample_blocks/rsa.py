"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008) over row-block
tiles: the two layers' representational dissimilarity matrices (RDMs) over samples, compared on
their upper triangles, without ever holding an n x n matrix.

Each pair of row blocks ``I <= J`` (:mod:`dask_repsim.paths.sample_blocks.tiles`) is one task: it
forms the two RDMs' ``b x b`` blocks in float64, takes their entries ``i < j`` and returns their
count, means and centred sums of squares and products, which merge exactly (Chan, Golub & LeVeque's
pairwise update; nothing cancels when dissimilarities have a large mean). Pearson and cosine
comparisons are functions of the merged moments. Spearman and rho-a need the ranks of all ``n (n -
1) / 2`` entries at once: the tasks then also return their entries, gathered on the client up to
:data:`RANK_MAX_SAMPLES` samples and the memory budget.

The definitions are rsatoolbox's (``calc_rdm`` and ``compare``, version 0.3):

- ``rdm="correlation"``: ``d_ij = 1 - r_ij``, ``r_ij`` the Pearson correlation of samples i and j
  across features (each sample less its mean over features, scaled to unit norm);
- ``rdm="euclidean"``: ``d_ij = ||x_i - x_j||^2 / p``, the squared distance over the number of
  features (computed from rows less about their column means, which does not change it:
  :func:`exact_shift`);
- ``compare="corr"``: Pearson correlation of the two vectors of ``d_ij, i < j``; ``"cosine"``:
  their cosine (uncentred); ``"spearman"``: the Pearson correlation of their ranks (ties get
  their average rank); ``"rho-a"``: ``12 sum_k (r1_k - m)(r2_k - m) / (N^3 - N)`` with the
  average ranks ``r``, their mean ``m = (N + 1) / 2`` and N entries: the expected Spearman
  correlation when ties are broken at random (Nili et al. 2014), equal to ``"spearman"``
  without ties and smaller with them; ``"tau-b"``: Kendall's tau-b
  (``scipy.stats.kendalltau``); ``"tau-a"``: ``(C - D) / (N (N - 1) / 2)`` with C and D the
  concordant and discordant pairs of entries, from tau-b and each vector's tied pairs.
- ``rdm="mahalanobis"`` (``calc_rdm(method="mahalanobis", noise=P)``): ``d_ij = (x_i - x_j)' P
  (x_i - x_j) / p`` with a noise precision ``P`` per layer, the euclidean RDM of the rows
  ``x L`` (``P = L L'``); ``compare="cosine_cov"`` and ``"corr_cov"``: the whitened cosine and
  correlation of Diedrichsen et al. (2021), from the same tiles plus each row's sum of
  dissimilarities (:mod:`dask_repsim.paths.sample_blocks.rsa_whitened`).

Permutation tests of every comparison come from the same pass
(:mod:`dask_repsim.paths.sample_blocks.rsa_null`).

References
----------
Kriegeskorte, Mur, Bandettini (2008). Representational similarity analysis - connecting the
branches of systems neuroscience. Front. Syst. Neurosci. 2, 4. Nili, Wingfield, Walther, Su,
Marslen-Wilson, Kriegeskorte (2014). A toolbox for representational similarity analysis. PLoS
Comput. Biol. 10, e1003553.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import dask
import numpy as np
from dask.utils import format_bytes

from ...engine.columns import checked_columns
from ...engine.medians import sq_distances
from ...engine.parallel import compute, memory_budget
from ...engine.permuted import permutation_series
from ...io.inputs import Layer
from ...io.validation import require_samples
from . import rsa_jackknife, rsa_null
from . import tiles as row_tiles
from .rsa_jackknife import JACKKNIFE_BYTES, check_rdm
from .rsa_whitened import (
    WHITENED,
    check_noise_choice,
    noise_factor,
    tile_row_sums,
    whitened_values,
)
from .tiles import Blocks, block_pairs, check_patterns, row_statistics

RDMS = ("correlation", "euclidean", "mahalanobis")
COMPARES = ("corr", "cosine", "spearman", "rho-a", "tau-b", "tau-a")
#: every comparison: those of the entries and the whitened ones (``WHITENED``)
ALL_COMPARES = COMPARES + WHITENED
#: the comparisons that need every entry at once (ranks, pairs of entries)
GATHERED = ("spearman", "rho-a", "tau-b", "tau-a")
#: Bytes per RDM entry while counting Kendall's concordant pairs (scipy's kendalltau: sort
#: orders, sorted copies and ranks of both vectors)
KENDALL_BYTES = 96
#: Most samples whose RDM entries are ranked (``compare="spearman"`` or ``"rho-a"``):
#: ``n (n - 1) / 2`` entries of each RDM, gathered and ranked on the client, within the memory
#: budget as well (:data:`RANK_BYTES` per entry).
RANK_MAX_SAMPLES = 20_000
#: Bytes per RDM entry while ranking: both RDMs' entries, a sort order, tie groups and ranks.
RANK_BYTES = 48
# float64 b x b matrices a task holds at once: two RDM blocks, their centred entries and the
# temporaries of a distance block.
_MATRICES = 6


@dataclass(frozen=True)
class EntryMoments:
    """Count, means and centred second moments of paired RDM entries ``(d1, d2)``.

    Examples
    --------
    >>> d1, d2 = np.array([1.0, 2.0, 4.0, 7.0]), np.array([2.0, 1.0, 5.0, 9.0])
    >>> m = EntryMoments.merge(EntryMoments.of(d1[:1], d2[:1]), EntryMoments.of(d1[1:], d2[1:]))
    >>> bool(np.isclose(m.pearson(), np.corrcoef(d1, d2)[0, 1]))
    True
    >>> bool(np.isclose(m.cosine(), d1 @ d2 / np.linalg.norm(d1) / np.linalg.norm(d2)))
    True
    """

    count: int
    mean1: float
    mean2: float
    m11: float
    m22: float
    m12: float

    @classmethod
    def of(cls, d1: np.ndarray, d2: np.ndarray) -> EntryMoments:
        """The moments of two equally long vectors of entries."""
        if len(d1) == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        mean1, mean2 = float(d1.mean()), float(d2.mean())
        c1, c2 = d1 - mean1, d2 - mean2
        return cls(len(d1), mean1, mean2, float(c1 @ c1), float(c2 @ c2), float(c1 @ c2))

    @staticmethod
    def merge(a: EntryMoments, b: EntryMoments) -> EntryMoments:
        """The moments of the entries of ``a`` and ``b`` together (pairwise update)."""
        if b.count == 0:
            return a
        if a.count == 0:
            return b
        n = a.count + b.count
        e1, e2 = b.mean1 - a.mean1, b.mean2 - a.mean2
        w = a.count * b.count / n
        return EntryMoments(
            n, a.mean1 + e1 * b.count / n, a.mean2 + e2 * b.count / n,
            a.m11 + b.m11 + e1 * e1 * w, a.m22 + b.m22 + e2 * e2 * w, a.m12 + b.m12 + e1 * e2 * w,
        )

    def pearson(self) -> float:
        """Pearson correlation of the entries."""
        return self.m12 / np.sqrt(self.m11 * self.m22)

    def cosine(self) -> float:
        """Cosine of the two vectors of entries (uncentred)."""
        s11 = self.m11 + self.count * self.mean1**2
        s22 = self.m22 + self.count * self.mean2**2
        return (self.m12 + self.count * self.mean1 * self.mean2) / np.sqrt(s11 * s22)


def _patterns(block: np.ndarray, rdm: str, info: tuple) -> np.ndarray:
    """Rows prepared for the RDM: unit-norm deviations from each sample's mean (correlation) or
    less the column means (euclidean; mahalanobis, then times the precision's factor), float64."""
    z = np.asarray(block, dtype=np.float64)
    if rdm == "correlation":
        mean, norm = info
        return (z - mean[:, None]) / norm[:, None]
    if rdm == "mahalanobis":
        return (z - info[0]) @ info[1]
    return z - info[0]


def _rdm_block(a: np.ndarray, b: np.ndarray, same: bool, rdm: str) -> np.ndarray:
    """The RDM block of prepared rows ``a`` (block I) and ``b`` (block J)."""
    if rdm == "correlation":
        d = a @ b.T
        np.subtract(1.0, d, out=d)
        return d
    d = sq_distances(a, b, same)
    d /= a.shape[1]
    return d


def _tile(same, rdm, gather, whiten, xi, xj, yi, yj, ix, jx, iy, jy, null=None,
          spans=None, groups=None) -> list:
    """Moments (and, with ``gather``, the entries; with ``whiten``, the row sums of
    :func:`~dask_repsim.paths.sample_blocks.rsa_whitened.tile_row_sums`; with ``null``, a
    :class:`~dask_repsim.paths.sample_blocks.rsa_null.NullSpec`, the permuted cross products of
    :func:`~dask_repsim.paths.sample_blocks.rsa_null.tile_cross` over the samples ``spans``;
    with the jackknife's group bounds ``groups``, the moments by cell of groups of
    :func:`~dask_repsim.paths.sample_blocks.rsa_jackknife.tile_groups`) of the RDM blocks of
    one pair of row blocks; ``ix``...: what :func:`_patterns` needs for each block."""
    entries, blocks = [], []
    for bi, bj, info_i, info_j in ((xi, xj, ix, jx), (yi, yj, iy, jy)):
        a = _patterns(bi, rdm, info_i)
        d = _rdm_block(a, a if same else _patterns(bj, rdm, info_j), same, rdm)
        entries.append(d[np.triu(np.ones(d.shape, dtype=bool), 1)] if same else d.ravel())
        blocks.append(d if whiten or null or groups else None)
    moments = EntryMoments.of(*entries)
    means = (moments.mean1, moments.mean2)
    grouped = rsa_jackknife.tile_groups(blocks, same, spans, groups, whiten) \
        if groups else None  # before the row sums, which may overwrite the blocks
    cross = None
    if null is not None:  # before the row sums, which may overwrite the blocks
        cross = rsa_null.tile_cross(blocks, same, means, spans, null)
    sums = None
    if whiten:  # the blocks are free to overwrite unless the entries returned are views of them
        sums = tile_row_sums(blocks, same, means, same or not gather)
    return [moments, *(entries if gather else (None, None)), sums, cross, grouped]


def exact_shift(mean: np.ndarray, sum_sq: np.ndarray, count: int) -> np.ndarray:
    """Column shifts for the euclidean RDM: each mean rounded to a multiple of a power of two
    at most its column's standard deviation.

    Centring keeps squared distances from cancelling when activations have large means; with
    these shifts integer-valued (and other coarse binary-fraction) activations stay exact, so
    their squared distances, and the ties the rank comparisons see, are exact too.

    Examples
    --------
    >>> exact_shift(np.array([1e9 + 0.3, 0.7]), np.array([4.0, 0.09]), 4).tolist()
    [1000000000.0, 0.75]
    """
    std = np.sqrt(np.asarray(sum_sq, dtype=np.float64) / max(count, 1))
    step = np.exp2(np.floor(np.log2(np.where(std > 0, std, 1.0))))
    return np.where(std > 0, np.round(mean / step) * step, mean)


def _infos(lx: Layer, ly: Layer, rdm: str, columns: list, noise: tuple | None) -> list:
    """Per layer, a function of a block's samples giving what :func:`_patterns` needs."""
    if rdm in ("euclidean", "mahalanobis"):
        shifts = [exact_shift(c.mean, c.sum_sq, c.count) for c in columns]
        if rdm == "euclidean":
            return [lambda rows, m=m: (m,) for m in shifts]
        factors = [dask.delayed(noise_factor(layer.name, p, int(layer.data.shape[1])))
                   for layer, p in zip((lx, ly), noise, strict=True)]
        return [lambda rows, m=m, f=f: (m, f) for m, f in zip(shifts, factors, strict=True)]
    measure = f"the {rdm} RDM"
    out = []
    for layer, (mean, norm) in zip((lx, ly), row_statistics([lx, ly], True), strict=True):
        check_patterns(layer.name, mean, norm, int(layer.data.shape[1]), True, measure)
        out.append(lambda rows, m=mean, s=norm: (m[rows], s[rows]))
    return out


def check_rank_size(n: int, compare: str, per_entry: int = RANK_BYTES) -> None:
    """An error when the RDM entries of ``n`` samples are too many to rank exactly."""
    entries = n * (n - 1) // 2
    need, budget = per_entry * entries, memory_budget()
    if n > RANK_MAX_SAMPLES or need > budget:
        raise ValueError(
            f"compare={compare!r} ranks all {entries:,} dissimilarities of each {n}-sample "
            f"RDM at once: about {format_bytes(need)}, exact up to {RANK_MAX_SAMPLES:,} "
            f"samples within the memory budget ({format_bytes(budget)}, dask config "
            "'repsim.memory-budget'); use compare='corr' or 'cosine', which stream over tiles "
            "of any n, or compare a subset of the samples"
        )


def _gathered(parts: list, which: int) -> np.ndarray:
    """The entries ``parts[k][which]`` of every tile in one vector, freeing each part."""
    out = np.empty(sum(len(p[which]) for p in parts))
    start = 0
    for p in parts:
        out[start : start + len(p[which])] = p[which]
        start += len(p[which])
        p[which] = None
    return out


def average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``v``, ties given their average rank (``scipy.stats.rankdata``).

    Examples
    --------
    >>> average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    order = np.argsort(v, kind="stable")
    s = v[order]
    new = np.empty(len(v), dtype=bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    del s
    starts = np.flatnonzero(new)
    average = (starts + np.append(starts[1:], len(v)) + 1) / 2.0
    values = average[np.cumsum(new) - 1]
    del new
    ranks = np.empty(len(v))
    ranks[order] = values
    return ranks


def _rank_measures(parts: list, compares: Sequence[str], null: rsa_null.NullSpec | None = None,
                   layout: rsa_null.Layout | None = None) -> tuple[dict, dict]:
    """The gathered comparisons and, with ``null`` (tiles of ``layout``), their nulls
    (:func:`~dask_repsim.paths.sample_blocks.rsa_null.kendall_null`, :func:`~dask_repsim.
    paths.sample_blocks.rsa_null.rank_cross`)."""
    d1, d2 = _gathered(parts, 1), _gathered(parts, 2)
    out, nulls = _kendall(d1, d2, compares), {}
    if null is not None and out:
        rows = rsa_null.kendall_null(d2, layout, null, partial(_kendall, d1, compares=compares))
        nulls = {c: [row[c] for row in rows] for c in out}
    if not {"spearman", "rho-a"} & set(compares):
        return out, nulls
    r1 = average_ranks(d1)
    del d1
    r1 -= (len(r1) + 1) / 2.0
    r2 = average_ranks(d2)
    del d2
    r2 -= (len(r2) + 1) / 2.0
    n, norm = float(len(r1)), np.sqrt(float(r1 @ r1) * float(r2 @ r2))
    scaled = {"spearman": lambda cross: cross / norm,
              "rho-a": lambda cross: 12.0 * cross / (n**3 - n)}
    out.update({c: f(float(r1 @ r2)) for c, f in scaled.items()})
    if null is not None:
        crosses = rsa_null.rank_cross(r1, r2, layout, null)
        nulls.update({c: [float(f(v)) for v in crosses] for c, f in scaled.items()
                      if c in compares})
    return {c: out[c] for c in compares if c in out}, nulls


def _tied_pairs(v: np.ndarray) -> int:
    """The number of pairs of equal entries of ``v``."""
    counts = np.unique(v, return_counts=True)[1].astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _kendall(d1: np.ndarray, d2: np.ndarray, compares: Sequence[str]) -> dict[str, float]:
    """Kendall's tau-b (scipy's ``kendalltau``) and tau-a of the entries: with ``N`` entries,
    ``n0 = N (N - 1) / 2`` pairs and ``t1``, ``t2`` pairs tied in each vector,
    ``C - D = tau_b sqrt((n0 - t1)(n0 - t2))`` and ``tau_a = (C - D) / n0``."""
    if not {"tau-b", "tau-a"} & set(compares):
        return {}
    from scipy import stats

    tau_b = float(stats.kendalltau(d1, d2).statistic)
    n0 = len(d1) * (len(d1) - 1) // 2
    excess = np.sqrt(float(n0 - _tied_pairs(d1)) * float(n0 - _tied_pairs(d2)))
    return {"tau-b": tau_b, "tau-a": float(np.clip(tau_b * excess / n0, -1.0, 1.0))}


def check_choice(rdm: str, compares: Sequence[str], noise: Any = None) -> None:
    """An error for an unknown RDM or comparison, or noise precisions given or missing
    (:func:`~dask_repsim.paths.sample_blocks.rsa_whitened.check_noise_choice`)."""
    if rdm not in RDMS:
        raise ValueError(f"rdm must be one of {RDMS}, not {rdm!r}")
    bad = [c for c in compares if c not in ALL_COMPARES]
    if bad or not compares:
        raise ValueError(
            f"compare must be one of {ALL_COMPARES}, not {bad[0] if bad else None!r}")
    check_noise_choice(rdm, noise)


def rsa_values(x: Layer, y: Layer, *, rdm: str = "correlation",
               compares: Sequence[str] = ("corr",), noise: tuple | None = None,
               block_rows: int | None = None, null: tuple[int, int] | None = None,
               groups: int | None = None) -> dict[str, Any]:
    """RSA of two layers: each of ``compares`` between their RDMs of kind ``rdm``.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples; checked by
        :func:`~dask_repsim.engine.columns.checked_columns` (NaN or Inf, constant layers, sample
        counts) and, for the correlation RDM, for samples equal in all their features.
    rdm, compares
        See the module docstring; ``compares`` are computed from one pass over the tiles.
    noise
        For ``rdm="mahalanobis"`` only: the noise precision matrices ``(P_x, P_y)``, each
        features x features, symmetric positive semidefinite.
    block_rows
        Samples per row block; default :func:`~dask_repsim.paths.sample_blocks.tiles.block_rows`
        (from the memory budget). With ``null``: n, or a multiple of the permutation block
        (:func:`~dask_repsim.paths.sample_blocks.rsa_null.null_rows`).
    null
        ``(count, seed)``: also each comparison under ``count`` permutations of y's samples
        (:mod:`~dask_repsim.paths.sample_blocks.rsa_null`), from the same pass.
    groups
        Also each comparison with each of ``groups`` contiguous groups of samples left out
        (:mod:`~dask_repsim.paths.sample_blocks.rsa_jackknife`), from the same pass.

    Returns
    -------
    dict
        Comparison name -> value; with ``null``, ``"null"``: comparison -> its ``count``
        values under the permutations; with ``groups``, ``"replicates"``: comparison -> its
        leave-a-group-out values, group by group.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 5))
    >>> values = rsa_values(as_layer(x), as_layer(2 * x + 1, name="y"), rdm="euclidean",
    ...                     compares=("corr", "spearman"), block_rows=16)
    >>> {k: round(v, 9) for k, v in values.items()}
    {'corr': 1.0, 'spearman': 1.0}
    """
    check_choice(rdm, compares, noise)
    ranks = [c for c in compares if c in GATHERED]
    columns = checked_columns([x, y])
    n = columns[0].count
    require_samples(n, 3, "RSA")
    spec = rsa_null.NullSpec.of(null)
    whiten = any(c in WHITENED for c in compares)
    bounds = rsa_jackknife.jackknife_bounds(n, groups, whiten) if groups else None
    if ranks:
        kendall = [c for c in ranks if c.startswith("tau")]  # a null holds one more vector
        check_rank_size(n, (kendall or ranks)[0], (KENDALL_BYTES if kendall else RANK_BYTES)
                        + 8 * bool(spec) + JACKKNIFE_BYTES * bool(bounds))
    infos = _infos(x, y, rdm, columns, noise)
    width = int(x.data.shape[1] + y.data.shape[1])
    rows = rsa_null.null_rows(n, width, _MATRICES + rsa_null.NULL_MATRICES, block_rows,
                              spec.block) if spec else block_rows or block_rows_for(n, x, y)
    blocks = Blocks(x, y, rows)
    streamed = spec if spec and len(ranks) < len(compares) else None  # corr, cosines
    tasks = []
    pairs = block_pairs(len(blocks))
    for i, j in pairs:
        si, sj = blocks.rows(i), blocks.rows(j)
        tasks.append(dask.delayed(_tile, pure=True)(
            i == j, rdm, bool(ranks), whiten, blocks.x[i], blocks.x[j], blocks.y[i],
            blocks.y[j], infos[0](si), infos[0](sj), infos[1](si), infos[1](sj), streamed,
            (blocks.bounds[i], blocks.bounds[j]), bounds))
    parts = [list(p) for p in compute(*tasks)]
    total = parts[0][0]
    for p in parts[1:]:
        total = EntryMoments.merge(total, p[0])
    check_rdm(x.name, (total.count, total.mean1, total.m11), rdm, compares)
    check_rdm(y.name, (total.count, total.mean2, total.m22), rdm, compares)
    layout = rsa_null.Layout.of(pairs, blocks.bounds)
    replicates = rsa_jackknife.replicate_values(
        parts, layout, bounds, total, compares, (x.name, y.name), rdm,
        partial(_rank_measures, compares=ranks) if ranks else None) if bounds else None
    nulls, cross = rsa_null.streamed_nulls(parts, total, compares) if streamed else ({}, None)
    values: dict[str, Any] = {}
    if whiten:
        series = permutation_series(n, spec.seed, spec.count, spec.block) if streamed else None
        values = whitened_values(parts, pairs, blocks.bounds, total, compares,
                                 (cross, series) if streamed else None)
        nulls.update(values.pop("null", {}))
    if ranks:
        found, rank_nulls = _rank_measures(parts, ranks, spec, layout)
        values.update(found)
        nulls.update(rank_nulls)
    values.update({c: total.pearson() if c == "corr" else total.cosine()
                   for c in compares if c in ("corr", "cosine")})
    out: dict[str, Any] = {c: float(values[c]) for c in compares}
    if spec:
        out["null"] = {c: nulls[c] for c in compares}
    if replicates:
        out["replicates"] = replicates
    return out


def block_rows_for(n: int, x: Layer, y: Layer) -> int:
    """The default samples per row block of :func:`rsa_values`."""
    return row_tiles.block_rows(n, int(x.data.shape[1] + y.data.shape[1]), _MATRICES)
