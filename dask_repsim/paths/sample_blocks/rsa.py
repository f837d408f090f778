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

import dask
import numpy as np
from dask.utils import format_bytes

from ...engine.columns import checked_columns
from ...engine.medians import sq_distances
from ...engine.parallel import compute, memory_budget
from ...io.inputs import Layer
from ...io.validation import constant_units, require_samples
from . import tiles as row_tiles
from .tiles import Blocks, block_pairs, check_patterns, row_statistics

RDMS = ("correlation", "euclidean")
COMPARES = ("corr", "cosine", "spearman", "rho-a", "tau-b", "tau-a")
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
    less the column means (euclidean), float64."""
    z = np.asarray(block, dtype=np.float64)
    if rdm == "correlation":
        mean, norm = info
        return (z - mean[:, None]) / norm[:, None]
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


def _tile(same, rdm, gather, xi, xj, yi, yj, ix, jx, iy, jy) -> list:
    """Moments (and, with ``gather``, the entries) of the RDM blocks of one pair of row blocks;
    ``ix``...: what :func:`_patterns` needs for each block."""
    entries = []
    for bi, bj, info_i, info_j in ((xi, xj, ix, jx), (yi, yj, iy, jy)):
        a = _patterns(bi, rdm, info_i)
        d = _rdm_block(a, a if same else _patterns(bj, rdm, info_j), same, rdm)
        entries.append(d[np.triu(np.ones(d.shape, dtype=bool), 1)] if same else d.ravel())
    moments = EntryMoments.of(*entries)
    return [moments, *(entries if gather else (None, None))]


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


def _infos(lx: Layer, ly: Layer, rdm: str, columns: list) -> list:
    """Per layer, a function of a block's samples giving what :func:`_patterns` needs."""
    if rdm == "euclidean":
        shifts = [exact_shift(c.mean, c.sum_sq, c.count) for c in columns]
        return [lambda rows, m=m: (m,) for m in shifts]
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


def _rank_measures(parts: list, compares: Sequence[str]) -> dict[str, float]:
    d1, d2 = _gathered(parts, 1), _gathered(parts, 2)
    out = _kendall(d1, d2, compares)
    if not {"spearman", "rho-a"} & set(compares):
        return out
    r1 = average_ranks(d1)
    del d1
    r1 -= (len(r1) + 1) / 2.0
    r2 = average_ranks(d2)
    del d2
    r2 -= (len(r2) + 1) / 2.0
    cross, n = float(r1 @ r2), float(len(r1))
    out.update({"spearman": cross / np.sqrt(float(r1 @ r1) * float(r2 @ r2)),
                "rho-a": 12.0 * cross / (n**3 - n)})
    return {c: out[c] for c in compares if c in out}


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


def _check_rdm(name: str, moments: tuple, rdm: str, compares: Sequence[str]) -> None:
    """An error for an RDM whose comparison is undefined: all entries equal (correlations,
    ranks) or all zero (cosine)."""
    count, mean, m = moments
    constant = bool(constant_units(np.array([m]), np.array([mean]), count)[0])
    zero = constant and mean == 0
    for c in compares:
        if (c == "cosine" and zero) or (c != "cosine" and constant):
            raise ValueError(
                f"the {rdm} RDM of {name} has the same dissimilarity ({mean:.6g}) for all "
                f"{count} pairs of samples, so compare={c!r} is undefined"
            )


def check_choice(rdm: str, compares: Sequence[str]) -> None:
    """An error for an unknown RDM or comparison."""
    if rdm not in RDMS:
        raise ValueError(f"rdm must be one of {RDMS}, not {rdm!r}")
    bad = [c for c in compares if c not in COMPARES]
    if bad or not compares:
        raise ValueError(f"compare must be one of {COMPARES}, not {bad[0] if bad else None!r}")


def rsa_values(x: Layer, y: Layer, *, rdm: str = "correlation",
               compares: Sequence[str] = ("corr",),
               block_rows: int | None = None) -> dict[str, float]:
    """RSA of two layers: each of ``compares`` between their RDMs of kind ``rdm``.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples; checked by
        :func:`~dask_repsim.engine.columns.checked_columns` (NaN or Inf, constant layers, sample
        counts) and, for the correlation RDM, for samples equal in all their features.
    rdm, compares
        See the module docstring; ``compares`` are computed from one pass over the tiles.
    block_rows
        Samples per row block; default :func:`~dask_repsim.paths.sample_blocks.tiles.block_rows`
        (from the memory budget).

    Returns
    -------
    dict
        Comparison name -> value.

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
    check_choice(rdm, compares)
    ranks = [c for c in compares if c in GATHERED]
    columns = checked_columns([x, y])
    n = columns[0].count
    require_samples(n, 3, "RSA")
    if ranks:
        kendall = [c for c in ranks if c.startswith("tau")]
        check_rank_size(n, (kendall or ranks)[0], KENDALL_BYTES if kendall else RANK_BYTES)
    infos = _infos(x, y, rdm, columns)
    rows = block_rows or block_rows_for(n, x, y)
    blocks = Blocks(x, y, rows)
    tasks = []
    for i, j in block_pairs(len(blocks)):
        si, sj = blocks.rows(i), blocks.rows(j)
        tasks.append(dask.delayed(_tile, pure=True)(
            i == j, rdm, bool(ranks), blocks.x[i], blocks.x[j], blocks.y[i], blocks.y[j],
            infos[0](si), infos[0](sj), infos[1](si), infos[1](sj)))
    parts = [list(p) for p in compute(*tasks)]
    total = parts[0][0]
    for p in parts[1:]:
        total = EntryMoments.merge(total, p[0])
    _check_rdm(x.name, (total.count, total.mean1, total.m11), rdm, compares)
    _check_rdm(y.name, (total.count, total.mean2, total.m22), rdm, compares)
    values = _rank_measures(parts, ranks) if ranks else {}
    values.update({c: total.pearson() if c == "corr" else total.cosine()
                   for c in compares if c in ("corr", "cosine")})
    return {c: float(values[c]) for c in compares}


def block_rows_for(n: int, x: Layer, y: Layer) -> int:
    """The default samples per row block of :func:`rsa_values`."""
    return row_tiles.block_rows(n, int(x.data.shape[1] + y.data.shape[1]), _MATRICES)
