"""Jackknife replicates of RSA (:mod:`dask_repsim.paths.sample_blocks.rsa`) from the same pass
over the row-block tiles as its value.

The samples fall in G contiguous groups (:func:`~dask_repsim.engine.stream.group_bounds`, as on
the other paths); replicate g is RSA of the samples outside group g. An RDM entry depends on its
two samples only (the correlation RDM on each sample's own mean and norm, the euclidean and
Mahalanobis RDMs on the difference of two rows), so the replicate's RDMs are the full RDMs
without g's rows and columns: its entries are the pairs ``i < j`` with neither in g.

Each tile task adds the moments of its entries by cell of groups (i in group a, j in group b,
``a <= b``): count, means, centred sums of squares and products, each cell centred on its own
means (:func:`tile_groups`). The client merges them into a G x G table (Chan, Golub & LeVeque's
pairwise update, as the value's tiles) and each replicate merges the cells that do not touch its
group, by prefix and suffix merges (:func:`leave_one_out`: the cells before g, those after it,
and those of rows before g and columns after it): no subtraction, so a group whose entries
dominate the spread (an outlying sample) costs no precision. From those:

- ``"corr"``, ``"cosine"``: Pearson's correlation and the cosine of the replicate's moments;
- ``"cosine_cov"``, ``"corr_cov"``: also each row's sums of ``d_ij`` (``j != i``) by group of
  columns, so that row i's sum of ``d_ij - m_g`` over the columns outside g (``m_g``: the
  replicate's mean entry) is that of its other groups, each group's sum less its count times
  ``m_g``: :mod:`~dask_repsim.paths.sample_blocks.rsa_whitened`'s terms, of ``n_g`` samples
  (``O(n G)`` per replicate);
- ``"spearman"``, ``"rho-a"``, ``"tau-b"``, ``"tau-a"``: recomputed on the gathered entries
  outside g, taken tile by tile, ranks and all: ``O(N log N)`` per replicate for ``N = n (n - 1)
  / 2`` entries, G times the value's ranking.

Each replicate equals RSA recomputed on the samples outside its group up to rounding, whatever
the tiles, the chunking or the other layers of a grid. A replicate needs at least 3 samples; an
RDM that is constant without a group's samples is an error naming the group; the G x G tables
(and, for the whitened comparisons, n x G row sums) must fit the memory budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from dask.utils import format_bytes

from ...engine.parallel import memory_budget
from ...engine.stream import replicate_bounds
from ...io.validation import constant_units
from .rsa_whitened import WHITENED, whitened_comparisons

#: bytes of an RDM block's rows (both RDMs') that :func:`tile_groups` centres at once
SLAB_BYTES = 2**21
#: bytes per RDM entry, besides the value's, while a replicate's entries are ranked: the tiles'
#: entries of both RDMs, kept for every replicate, and a vector gathered once more
JACKKNIFE_BYTES = 24
#: the fewest samples a replicate may have: two are one dissimilarity
MIN_SAMPLES = 3
#: bytes per pair of groups on the client: the table of cell moments and its rows' suffixes
GROUP_BYTES = 96
#: bytes per sample and group on the client with the whitened comparisons: the row sums by
#: group of both RDMs and a replicate's terms
ROW_BYTES = 40


def jackknife_bounds(n: int, groups: int, whiten: bool = False) -> tuple[int, ...]:
    """The bounds of ``groups`` groups of ``n`` samples (:func:`~dask_repsim.engine.stream.
    group_bounds`); an error when leaving one out leaves fewer than 3 samples, or when the
    G x G tables (and, ``whiten``, the n x G row sums) are beyond the memory budget.

    Examples
    --------
    >>> jackknife_bounds(10, 3)
    (0, 3, 7, 10)
    """
    bounds = replicate_bounds(n, int(groups), MIN_SAMPLES, "RSA")
    need, budget = GROUP_BYTES * groups**2 + ROW_BYTES * n * groups * whiten, memory_budget()
    if need > budget:
        raise ValueError(
            f"groups={groups}: RSA's jackknife holds {groups} x {groups} tables of the RDM "
            f"entries' moments{f' and {n} x {groups} row sums' if whiten else ''}, about "
            f"{format_bytes(need)}, beyond the memory budget ({format_bytes(budget)}, dask "
            "config 'repsim.memory-budget'); use fewer groups")
    return bounds


def check_rdm(name: str, moments: tuple, rdm: str, compares: Sequence[str],
              where: str = "") -> None:
    """An error for an RDM whose comparison is undefined: all entries equal (correlations,
    ranks) or all zero (cosines); ``moments``: its entries' count, mean and centred sum of
    squares; ``where``: the samples it is of, for a replicate."""
    count, mean, m = moments
    constant = bool(constant_units(np.array([m]), np.array([mean]), count)[0])
    zero = constant and mean == 0
    cosines = ("cosine", "cosine_cov")
    for c in compares:
        if (c in cosines and zero) or (c not in cosines and constant):
            raise ValueError(
                f"the {rdm} RDM of {name}{where} has the same dissimilarity ({mean:.6g}) for "
                f"all {count} pairs of samples, so compare={c!r} is undefined"
            )


def _cuts(span: tuple[int, int], bounds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The groups that the samples ``span`` overlap and the sizes of their parts in it.

    Examples
    --------
    >>> [a.tolist() for a in _cuts((5, 25), (0, 10, 20, 30))]
    [[0, 1, 2], [5, 10, 5]]
    """
    b = np.asarray(bounds)
    first = int(np.searchsorted(b, span[0], side="right")) - 1
    last = int(np.searchsorted(b, span[1] - 1, side="right")) - 1
    ids = np.arange(first, last + 1)
    edges = np.clip(b[first:last + 2], span[0], span[1])
    return ids, np.diff(edges)


def _merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Moments ``[count, mean1, mean2, m11, m22, m12]`` (last axis) of ``a`` and ``b``
    together, elementwise (the pairwise update of
    :meth:`~dask_repsim.paths.sample_blocks.rsa.EntryMoments.merge`)."""
    k = a[..., 0] + b[..., 0]
    w = np.divide(b[..., 0], k, out=np.zeros_like(k), where=k > 0)
    e1, e2 = b[..., 1] - a[..., 1], b[..., 2] - a[..., 2]
    cross = a[..., 0] * w
    return np.stack([k, a[..., 1] + e1 * w, a[..., 2] + e2 * w,
                     a[..., 3] + b[..., 3] + e1 * e1 * cross,
                     a[..., 4] + b[..., 4] + e2 * e2 * cross,
                     a[..., 5] + b[..., 5] + e1 * e2 * cross], axis=-1)


def _merge_all(cells: np.ndarray) -> np.ndarray:
    """The moments of all ``cells`` (first axis) together: weighted means, and the cells'
    centred sums plus their means' spread about them, every term non-negative for squares."""
    if len(cells) == 0:
        return np.zeros(6)
    k = cells[:, 0].sum()
    if k == 0:
        return np.zeros(6)
    mean = (cells[:, 0] @ cells[:, 1:3]) / k
    dev = cells[:, 1:3] - mean
    weighted = cells[:, 0, None] * dev
    return np.array([k, *mean, cells[:, 3].sum() + weighted[:, 0] @ dev[:, 0],
                     cells[:, 4].sum() + weighted[:, 1] @ dev[:, 1],
                     cells[:, 5].sum() + weighted[:, 0] @ dev[:, 1]])


def leave_one_out(table: np.ndarray) -> np.ndarray:
    """Per group g, the moments of the cells ``table[a, b]`` (``a <= b``; G x G x 6) with
    neither a nor b equal to g, merged without subtraction: those with ``b < g``, those with
    ``a > g`` (prefix and suffix merges of the table's columns and rows), and those with ``a <
    g < b`` (each row's suffix from column ``g + 1``, rows before g merged).

    Examples
    --------
    >>> cell = lambda k, m: np.array([k, m, m, 0.0, 0.0, 0.0])
    >>> table = np.zeros((3, 3, 6))
    >>> table[0, 0], table[1, 1], table[2, 2] = cell(1, 1.0), cell(1, 2.0), cell(1, 4.0)
    >>> table[0, 2] = cell(2, 3.0)
    >>> leave_one_out(table)[1].tolist()  # cells (0, 0), (0, 2), (2, 2)
    [4.0, 2.75, 2.75, 4.75, 4.75, 4.75]
    """
    groups = len(table)
    suffix = np.zeros((groups, groups + 1, 6))  # suffix[a, s]: row a's cells from column s
    for col in range(groups - 1, -1, -1):
        suffix[:, col] = _merge(table[:, col], suffix[:, col + 1])
    out = np.zeros((groups, 6))
    before = np.zeros(6)  # the cells of columns before g
    for g in range(groups):
        out[g] = _merge(before, _merge_all(suffix[:g, g + 1]))
        before = _merge(before, _merge_all(table[:g + 1, g]))
    after = np.zeros(6)  # the cells of rows after g
    for g in range(groups - 1, -1, -1):
        out[g] = _merge(out[g], after)
        after = _merge(suffix[g, g], after)
    return out


def _slab_cells(slab: list, kept: np.ndarray | None, parts: tuple) -> np.ndarray:
    """The moments of one slab of rows' entries by cell (row group part x column group), each
    centred on its own means (two passes): ``slab`` the two RDMs' rows, ``kept`` the entries
    ``i < j`` (a diagonal tile) or None, ``parts = (starts, sizes, col_starts, col_sizes)``."""
    starts, sizes, col_starts, col_sizes = parts

    def cells(v: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(v, col_starts, axis=1), starts, axis=0)

    if kept is None:
        count = np.outer(sizes, col_sizes).astype(np.float64)
    else:  # a diagonal tile: its entries i < j only
        count = cells(kept.astype(np.float64))
        slab = [np.where(kept, e, 0.0) for e in slab]
    means = [np.divide(cells(e), count, out=np.zeros_like(count), where=count > 0)
             for e in slab]
    centred = [e - np.repeat(np.repeat(mu, sizes, axis=0), col_sizes, axis=1)
               for e, mu in zip(slab, means, strict=True)]
    if kept is not None:
        for c in centred:
            c[~kept] = 0.0
    c1, c2 = centred
    return np.stack([count, *means, cells(c1 * c1), cells(c2 * c2), cells(c1 * c2)], axis=-1)


@dataclass(frozen=True)
class TileGroups:
    """What a tile adds for the replicates (:func:`tile_groups`). ``cells[a, b]``: the moments
    ``[count, mean1, mean2, m11, m22, m12]`` of its entries with i in its ``a``-th row group
    and j in its ``b``-th column group (groups ``row_ids``, ``col_ids``), each centred on its
    own means; with the whitened comparisons, ``rows[s, i, b]``: RDM s's sum of ``d_ij`` over
    the tile's columns ``j != i`` in its ``b``-th column group and, off the diagonal, ``cols[s,
    j, a]`` the same of column j over its ``a``-th row group."""

    row_ids: np.ndarray
    col_ids: np.ndarray
    cells: np.ndarray
    rows: np.ndarray | None
    cols: np.ndarray | None


def tile_groups(blocks: Sequence[np.ndarray], same: bool,
                spans: tuple[tuple[int, int], tuple[int, int]], bounds: Sequence[int],
                whiten: bool) -> TileGroups:
    """The :class:`TileGroups` of a tile's two RDM blocks (not changed) over the samples
    ``spans`` (rows, columns), with the groups ``bounds``; a slab of :data:`SLAB_BYTES` of rows
    at a time."""
    (a, b), (c, d) = spans
    row_ids, row_sizes = _cuts((a, b), bounds)
    col_ids, col_sizes = _cuts((c, d), bounds)
    col_starts = np.r_[0, np.cumsum(col_sizes)[:-1]]
    row_group = np.repeat(np.arange(len(row_ids)), row_sizes)
    cells = np.zeros((len(row_ids), len(col_ids), 6))
    rows = np.zeros((2, b - a, len(col_ids))) if whiten else None
    cols = np.zeros((2, d - c, len(row_ids))) if whiten and not same else None
    step = max(1, SLAB_BYTES // (16 * (d - c)))
    for r in range(0, b - a, step):
        m = min(step, b - a - r)
        slab = [block[r:r + m] for block in blocks]
        here = row_group[r:r + m]
        starts = np.flatnonzero(np.r_[True, here[1:] != here[:-1]])
        for s, e in enumerate(slab if whiten else ()):  # the row sums are over j != i
            if same:
                e = e.copy()
                e[np.arange(m), r + np.arange(m)] = 0.0
            rows[s, r:r + m] = np.add.reduceat(e, col_starts, axis=1)
            if cols is not None:
                cols[s][:, here[starts]] += np.add.reduceat(e, starts, axis=0).T
        kept = np.arange(d - c)[None, :] > (r + np.arange(m))[:, None] if same else None
        found = _slab_cells(slab, kept, (starts, np.diff(np.r_[starts, m]), col_starts,
                                         col_sizes))
        cells[here[starts]] = _merge(cells[here[starts]], found)
    return TileGroups(row_ids, col_ids, cells, rows, cols)


def group_table(parts: list, groups: int) -> np.ndarray:
    """The G x G table of cell moments (``[count, mean1, mean2, m11, m22, m12]``) of all tiles'
    :class:`TileGroups` (``parts[t][5]``), merged tile by tile."""
    table = np.zeros((groups, groups, 6))
    for part in parts:
        found = part[5]
        at = (slice(int(found.row_ids[0]), int(found.row_ids[-1]) + 1),
              slice(int(found.col_ids[0]), int(found.col_ids[-1]) + 1))
        table[at] = _merge(table[at], found.cells)
    return table


def _kept(start: int, stop: int, lo: int, hi: int) -> np.ndarray:
    """The samples of ``start..stop-1`` outside ``lo..hi-1``, from ``start``."""
    k = stop - start
    return np.r_[0:int(np.clip(lo - start, 0, k)), int(np.clip(hi - start, 0, k)):k]


def _outside(parts: list, which: int, layout: Any, lo: int, hi: int) -> np.ndarray:
    """The gathered entries ``parts[t][which]`` of the pairs with neither sample in
    ``lo..hi-1``, tile by tile (the same order for both RDMs)."""
    pieces = []
    for part, (same, (a, b), (c, d), _) in zip(parts, layout.tiles, strict=True):
        v, k = part[which], b - a
        rows = _kept(a, b, lo, hi)
        if not same:
            keep = _kept(c, d, lo, hi)
            full = len(rows) == k and len(keep) == d - c
            pieces.append(v if full else v.reshape(k, d - c)[np.ix_(rows, keep)].ravel())
            continue
        cut, end = int(np.clip(lo - a, 0, k)), int(np.clip(hi - a, 0, k))
        if cut == end:
            pieces.append(v)
            continue
        start = np.arange(k + 1) * (k - 1) - np.arange(k + 1) * np.arange(-1, k) // 2
        for i in range(cut):  # row i's entries j = i+1..k-1 from start[i]: j < cut, j >= end
            pieces += [v[start[i]:start[i] + cut - i - 1],
                       v[start[i] + end - i - 1:start[i + 1]]]
        pieces.append(v[start[end]:])  # the rows from end: every column after them
    return np.concatenate(pieces)


def _group_row_sums(parts: list, layout: Any, bounds: Sequence[int]) -> np.ndarray:
    """``S[s, i, h]``: RDM s's sum of ``d_ij`` over ``j != i`` in group h, from the tiles'
    :class:`TileGroups`."""
    out = np.zeros((2, layout.samples, len(bounds) - 1))
    for part, (same, (a, b), (c, d), _) in zip(parts, layout.tiles, strict=True):
        found = part[5]
        rows_at = slice(int(found.row_ids[0]), int(found.row_ids[-1]) + 1)
        cols_at = slice(int(found.col_ids[0]), int(found.col_ids[-1]) + 1)
        out[:, a:b, cols_at] += found.rows
        if not same:
            out[:, c:d, rows_at] += found.cols
    return out


def replicate_values(parts: list, layout: Any, bounds: Sequence[int], total: Any,
                     compares: Sequence[str], names: tuple[str, str], rdm: str,
                     rank: Callable[[list], tuple] | None = None) -> dict[str, list[float]]:
    """Each comparison of ``compares`` with each group of samples ``bounds`` left out (module
    docstring), from the tiles' ``parts`` (``[moments, entries 1, entries 2, ..., TileGroups]``,
    of the tiles of ``layout``, :class:`~dask_repsim.paths.sample_blocks.rsa_null.Layout`), their
    merged :class:`~dask_repsim.paths.sample_blocks.rsa.EntryMoments` ``total``, and ``rank``,
    the gathered comparisons of ``[[None, entries 1, entries 2]]`` (value first)."""
    table = group_table(parts, len(bounds) - 1)
    replicates = leave_one_out(table)
    del table
    whitened = [c for c in compares if c in WHITENED]
    sums = _group_row_sums(parts, layout, bounds) if whitened else None
    sizes = np.diff(bounds)
    out: dict[str, list[float]] = {c: [] for c in compares}
    for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        count, mean1, mean2, m11, m22, m12 = replicates[g]
        moments = replace(total, count=int(round(count)), mean1=float(mean1),
                          mean2=float(mean2), m11=float(m11), m22=float(m22), m12=float(m12))
        where = f" without samples {lo} to {hi - 1} (jackknife group {g + 1} of " \
                f"{len(bounds) - 1})"
        check_rdm(names[0], (moments.count, moments.mean1, moments.m11), rdm, compares, where)
        check_rdm(names[1], (moments.count, moments.mean2, moments.m22), rdm, compares, where)
        found = {c: moments.pearson() if c == "corr" else moments.cosine()
                 for c in compares if c in ("corr", "cosine")}
        if whitened:  # each row's sum of d_ij - m_g over the other groups' j != i
            keep, samples = _kept(0, layout.samples, lo, hi), layout.samples - (hi - lo)
            count = sizes - (np.repeat(np.arange(len(sizes)), sizes)[keep, None]
                             == np.arange(len(sizes)))
            r = []
            for s, mean in enumerate((moments.mean1, moments.mean2)):
                terms = sums[s, keep] - count * mean
                terms[:, g] = 0.0
                r.append(terms.sum(axis=1))
            found.update(whitened_comparisons(
                {"11": moments.m11, "22": moments.m22, "12": moments.m12},
                {st: float(r[int(st[0]) - 1] @ r[int(st[1]) - 1]) for st in ("11", "22", "12")},
                (moments.mean1, moments.mean2), samples, whitened))
        if rank is not None:
            found.update(rank([[None, _outside(parts, 1, layout, lo, hi),
                                _outside(parts, 2, layout, lo, hi)]])[0])
        for c in compares:
            if not np.isfinite(found[c]):
                raise ValueError(f"compare={c!r} of the RDMs{where} is undefined")
            out[c].append(float(found[c]))
    return out
