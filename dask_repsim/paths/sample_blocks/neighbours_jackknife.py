"""Leave-one-group-out jackknife replicates of the k-nearest-neighbour measures
(:mod:`~dask_repsim.paths.sample_blocks.neighbours`), exact, from their pass over the tiles.

The samples fall in G contiguous groups (:func:`~dask_repsim.engine.stream.group_bounds`, as on
the other paths). Replicate g is the measure recomputed on the ``n' = n - n_g`` samples outside
group g, each of them with its k nearest neighbours among those samples. Those are the first k
entries outside g of the sample's neighbour list over all samples (larger similarity first,
equal ones by smaller index): leaving samples out of an ordered list keeps the order of the
rest, ties included. So with ``groups=`` the pass keeps each sample's top ``m = k + e``
(:func:`list_length`) rather than its top k, and replicate g takes, for each kept sample, the
first k of its m entries that are not in g (:meth:`Lists.kept`). That is exact whenever at most
e of the m entries are in g.

A sample with more than e of its m neighbours in one group other than its own is *flagged* for
that group (:func:`flagged_samples`); with ``e >= k`` that can hold for one group at most (two
would need ``2 (e + 1) > m`` entries). A flagged sample's k nearest neighbours outside its group
come from a second pass over the tiles restricted to the flagged samples' rows
(:func:`restricted_neighbours`): each tile forms those rows' similarities to its columns, sets
the group's columns and the sample's own to ``-inf``, and keeps the k best by the same rule
(:mod:`~dask_repsim.paths.sample_blocks.candidates`), merged over tiles as the first pass
merges. The second pass reads the data once more, and runs only when some sample is flagged:
when the storage order follows the data (samples stored sorted by class have their neighbours
in their own and the adjacent groups).

``e`` decides how often the second pass runs, never the values. In a storage order unrelated to
the data, the number of a list's m entries in a group of ``n_g`` samples is about binomial
``(m, n_g / (n - 1))``; e is the smallest ``e >= min(k, n_g)`` for which the expected number of
flagged (sample, group) pairs, ``n G P(X > e)``, is below :data:`FLAG_RATE` (or ``e = n_g``,
when no sample can be flagged), and at most ``n - 1 - k`` (complete lists). For ``k = 10`` and
G = 20 that is ``m = 20`` up to 10,000 samples and 21 at a million; G = 2 needs ``m = 49`` at
1,000 samples and 63 at a million (``e`` grows as the square root of m times that of log n G).
The client then holds ``n x m`` indices and similarities of both layers (``32 n m`` bytes) and the
tasks count the lists in their row blocks' size.

Each measure of a replicate is computed from its lists as the value is from the full ones:

- the set measures (mutual k-NN, k-NN Jaccard, rank and joint rank-Jaccard similarity) compare
  indices within a row only, which need no renumbering;
- CKNNA's unbiased HSIC of the ``n' x n'`` masked kernels: the lists renumbered to the kept
  samples (a sample after the group moves down by ``n_g``), ``n'`` in the HSIC's counts and row
  sums over the kept pairs (:func:`~dask_repsim.paths.sample_blocks.neighbours.masked_hsic`);
- second-order cosine similarity: each kept sample's vectors over the union of its two
  restricted lists need both layers' similarities there. Those lists lie within the m-lists (or
  a flagged sample's restricted list); each list holds its own layer's similarities, the other
  list of the same sample some of the other layer's, and one lookup pass
  (:func:`~dask_repsim.paths.sample_blocks.second_order.lookup`, in batches of
  :data:`~dask_repsim.paths.sample_blocks.second_order.LOOKUPS`) the rest: at most ``2 n m``
  similarities for all G replicates at once.

Estimand: the measures change with n at fixed k (a replicate's k neighbours among fewer
samples reach further), so the jackknife's bias correction would extrapolate that change as if
it were bias. Their intervals are centred on the estimate (the registry's
``bias_corrected=False``): an interval for the expected value of the measure at this n and k.
Over 200 samples of ``y = tanh(x W) + noise`` (n = 200, k = 10, G = 20), 95% intervals so
centred covered the mean over 2,000 samples in 193 (second-order cosine) to 200 (joint
rank-Jaccard) cases, the jackknife's standard error 1.1 to 1.6 times the measures' standard
deviation; centred on the bias-corrected estimate, in 2 to 74 (tests/paths/
test_knn_jackknife.py). The replicates' measures cost the client G times the value's, as a
null of G permutations does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dask
import numpy as np
from scipy import stats

from ...engine.parallel import compute
from ...engine.reduction import tree_reduce
from ...engine.stream import replicate_bounds
from ...exceptions import InputError
from . import second_order
from .candidates import merge_candidates, ordered
from .outputs_inference import jackknife_bounds
from .tiles import Blocks, block_pairs, unit_rows

#: the expected number of (sample, group) pairs lacking k neighbours outside the group in the
#: top-m lists, in a storage order unrelated to the data, that :func:`list_length` allows
FLAG_RATE = 0.01
#: the most values of e :func:`list_length` tries beyond its least
_SEARCH = 4096


def check_groups(n: int, k: int, groups: int, measures: Sequence[str]) -> tuple[int, ...]:
    """The groups' bounds, or an error when a replicate would have too few samples for k
    neighbours (or, with CKNNA, for its unbiased HSIC)."""
    jackknife_bounds(n, groups)  # groups >= 2
    need = max(k + 1, 4 if "cknna" in measures else 3)
    return replicate_bounds(n, groups, need, f"the k-nearest-neighbour lists with k={k}")


def list_length(n: int, k: int, bounds: Sequence[int]) -> int:
    """``m = k + e``, each sample's neighbours the pass keeps for the replicates (see the
    module's text).

    Examples
    --------
    >>> from dask_repsim.engine.stream import group_bounds
    >>> list_length(10_000, 10, group_bounds(10_000, 20)), list_length(40, 5, (0, 20, 40))
    (20, 25)
    """
    ng = int(np.diff(bounds).max())
    top, low = n - 1 - k, min(k, ng)  # e of complete lists; the least e
    if top <= low:
        return n - 1
    e = np.arange(low, min(top, ng, low + _SEARCH) + 1)
    flagged = n * (len(bounds) - 1) * stats.binom.sf(e, k + e, ng / (n - 1))
    ok = (flagged < FLAG_RATE) | (e >= ng)
    return k + int(e[np.argmax(ok)] if ok.any() else e[-1])


def _groups_of(samples: np.ndarray, bounds: Sequence[int]) -> np.ndarray:
    return np.searchsorted(np.asarray(bounds), samples, side="right") - 1


def flagged_samples(idx: np.ndarray, bounds: Sequence[int],
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples whose m-list (``n x m`` indices) has fewer than k entries outside some group
    other than their own, and that group (one at most, for ``m - k >= k``; none when no group
    holds more than ``m - k`` samples)."""
    n, m = idx.shape
    group = _groups_of(idx, bounds)
    candidate = np.sort(group, axis=1)[:, m // 2]  # a group holding over half the list
    count = (group == candidate[:, None]).sum(axis=1)
    rows = np.flatnonzero((count > m - k) & (candidate != _groups_of(np.arange(n), bounds)))
    return rows, candidate[rows]


@dataclass(frozen=True)
class Lists:
    """One layer's m-lists (``n x m``, nearest first), its flagged samples with their group and
    their k nearest neighbours outside it, and, for second-order cosine similarity, the other
    layer's similarities at the same entries (``cross``, ``restricted_cross``)."""

    sim: np.ndarray
    idx: np.ndarray
    flagged: np.ndarray
    group: np.ndarray
    restricted_sim: np.ndarray
    restricted_idx: np.ndarray
    cross: np.ndarray | None = None
    restricted_cross: np.ndarray | None = None

    def kept(self, bounds: Sequence[int], g: int, k: int) -> list[np.ndarray]:
        """The replicate's lists without group g: for each sample outside g (in order), its
        first k entries outside g (a flagged sample: its restricted list), as ``[sim, idx]``
        and the cross similarities where known."""
        lo, hi = int(bounds[g]), int(bounds[g + 1])
        keep = np.r_[0:lo, hi:len(self.idx)]
        idx = self.idx[keep]
        first = np.argsort((idx >= lo) & (idx < hi), axis=1, kind="stable")[:, :k]
        parts = [(self.sim, self.restricted_sim), (self.idx, self.restricted_idx)]
        if self.cross is not None:
            parts.append((self.cross, self.restricted_cross))
        out = [np.take_along_axis(a[keep], first, axis=1) for a, _ in parts]
        mine = np.flatnonzero(self.group == g)
        at = self.flagged[mine] - (hi - lo) * (self.flagged[mine] >= hi)  # row in the kept
        for target, (_, restricted) in zip(out, parts, strict=True):
            target[at] = restricted[mine]
        return out


def _outside(rows: np.ndarray, others: np.ndarray, samples: np.ndarray, group: np.ndarray,
             cols: np.ndarray, bounds: Sequence[int], k: int) -> tuple:
    """The k best columns ``cols`` (unit rows ``others``) of unit rows ``rows`` (samples
    ``samples``), each row's group's columns and its own sample left out."""
    s = rows @ others.T
    s[(_groups_of(cols, bounds)[None, :] == group[:, None])
      | (cols[None, :] == samples[:, None])] = -np.inf
    return ordered(s, np.broadcast_to(cols, s.shape), k)


def _restricted_tile(i, j, k, xi, xj, yi, yj, nxi, nxj, nyi, nyj, cols_i, cols_j, want_i,
                     want_j, bounds) -> dict:
    """Per layer, the k best candidates outside their group of block i's flagged rows among
    block j and of block j's among block i (``want_*``: per layer, local rows and groups)."""
    out: dict[int, list] = {i: [], j: []}
    for side, (bi, bj, ni, nj) in enumerate(((xi, xj, nxi, nxj), (yi, yj, nyi, nyj))):
        a, b = unit_rows(bi, ni), unit_rows(bj, nj)
        rows, group = want_i[side]
        out[i].append(_outside(a[rows], b, cols_i[rows], group, cols_j, bounds, k))
        if i != j:
            rows, group = want_j[side]
            out[j].append(_outside(b[rows], a, cols_j[rows], group, cols_i, bounds, k))
    return out


def restricted_neighbours(blocks: Blocks, norms: tuple, bounds: Sequence[int], k: int,
                          flags: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple]:
    """Per layer, the flagged samples' (``flags``: per layer, samples in increasing order and
    their groups) k nearest neighbours outside their group, ``(sim, idx)`` in the flags'
    order, from one pass over the tiles of the blocks that hold flagged samples."""
    starts = np.asarray(blocks.starts)
    at = [np.searchsorted(starts, rows, side="right") - 1 for rows, _ in flags]
    want = [tuple((rows[a == r] - starts[r], group[a == r])
                  for (rows, group), a in zip(flags, at, strict=True))
            for r in range(len(blocks))]
    todo = [r for r in range(len(blocks)) if any(len(w[0]) for w in want[r])]
    cols = [np.arange(*blocks.bounds[b]) for b in range(len(blocks))]
    tiles = {
        (i, j): dask.delayed(_restricted_tile, pure=True)(
            i, j, k, blocks.x[i], blocks.x[j], blocks.y[i], blocks.y[j],
            norms[0][blocks.rows(i)], norms[0][blocks.rows(j)],
            norms[1][blocks.rows(i)], norms[1][blocks.rows(j)], cols[i], cols[j], want[i],
            want[j], tuple(bounds))
        for i, j in block_pairs(len(blocks)) if i in todo or j in todo
    }
    merged = compute(*(
        tree_reduce([t for (i, j), t in tiles.items() if r in (i, j)], merge_candidates,
                    name=f"repsim-knn-outside-{r}", args=(r, k))
        for r in todo
    ))
    return [tuple(np.concatenate([part[r][side][p] for r, part in zip(todo, merged,
                                                                       strict=True)])
                  for p in (0, 1)) for side in (0, 1)]


def _in_list(idx_have: np.ndarray, sim_have: np.ndarray, rows: np.ndarray,
             idx_want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the entries ``idx_want`` of rows ``rows``: the similarity the ``n x m`` list
    ``(sim_have, idx_have)`` gives sample ``rows[r]`` with it, and whether it lists it."""
    n = np.int64(len(idx_have))
    keys = (np.arange(n)[:, None] * n + idx_have).ravel()
    order = np.argsort(keys)
    want = (rows.astype(np.int64)[:, None] * n + idx_want).ravel()
    at = np.minimum(np.searchsorted(keys, want, sorter=order), len(keys) - 1)
    found = keys[order[at]] == want
    values = np.where(found, sim_have.ravel()[order[at]], np.nan)
    return values.reshape(idx_want.shape), found.reshape(idx_want.shape)


def _lookups(blocks: Blocks, norms: tuple, wanted: tuple) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~dask_repsim.paths.sample_blocks.second_order.lookup` of ``wanted``, in passes of
    at most :data:`~dask_repsim.paths.sample_blocks.second_order.LOOKUPS` entries."""
    sizes = [len(rows) for rows, _ in wanted]
    passes = max(1, -(-sum(sizes) // second_order.LOOKUPS))
    found: list[list[np.ndarray]] = [[], []]
    for p in range(passes):
        cut = [slice(s * p // passes, s * (p + 1) // passes) for s in sizes]
        part = second_order.lookup(blocks, norms, tuple(
            (rows[c], cols[c]) for (rows, cols), c in zip(wanted, cut, strict=True)))
        for target, values in zip(found, part, strict=True):
            target.append(values)
    return np.concatenate(found[0]), np.concatenate(found[1])


def with_cross(blocks: Blocks, norms: tuple, x: Lists, y: Lists) -> tuple[Lists, Lists]:
    """``x`` and ``y`` with each entry's similarity in the other layer: from the other layer's
    m-list of the same sample where it holds the entry, else looked up (one pass, or more
    for over :data:`~dask_repsim.paths.sample_blocks.second_order.LOOKUPS` entries)."""
    known, where = [], []
    for mine, other in ((x, y), (y, x)):
        entries = ((np.arange(len(mine.idx)), mine.idx), (mine.flagged, mine.restricted_idx))
        pairs = [_in_list(other.idx, other.sim, rows, idx) for rows, idx in entries]
        known.append(pairs)
        where.append([(np.broadcast_to(rows[:, None], idx.shape)[~found], idx[~found])
                      for (rows, idx), (_, found) in zip(entries, pairs, strict=True)])
    # x's entries need y's similarities (L), y's need x's (K): lookup takes (K, L) wanted
    wanted = tuple(tuple(np.concatenate([w[a] for w in where[side]]) for a in (0, 1))
                   for side in (1, 0))
    k_values, l_values = _lookups(blocks, norms, wanted)
    out = []
    for mine, pairs, values in zip((x, y), known, (l_values, k_values), strict=True):
        cuts = np.cumsum([0, *(int((~found).sum()) for _, found in pairs)])
        filled = []
        for (cross, found), lo, hi in zip(pairs, cuts[:-1], cuts[1:], strict=True):
            cross[~found] = values[lo:hi]
            filled.append(cross)
        out.append(Lists(mine.sim, mine.idx, mine.flagged, mine.group, mine.restricted_sim,
                         mine.restricted_idx, *filled))
    return out[0], out[1]


def _replicate(measures: Sequence[str], values: Callable[[tuple], dict], x: list, y: list,
               lo: int, hi: int) -> dict[str, float]:
    """The ``measures`` of one replicate from its lists (``[sim, idx(, cross)]`` per layer) of
    the samples outside ``lo`` to ``hi``: ``values`` of the lists renumbered to the kept
    samples, and second-order cosine similarity."""
    try:
        moved = [idx - (hi - lo) * (idx >= hi) for idx in (x[1], y[1])]
        out = values((x[0], moved[0], y[0], moved[1]))
        if "second_order_cosine" in measures:
            lists = (x[0], x[1], y[0], y[1])
            pairing = second_order.Pairing.of(lists, None)
            out["second_order_cosine"] = pairing.value(
                lists, y[2][pairing.need_k], x[2][pairing.need_l])
    except InputError as error:
        raise InputError(f"the jackknife replicate without samples {lo} to {hi - 1} (samples "
                         f"numbered among the {len(x[1])} kept): {error}") from None
    return out


def knn_replicates(blocks: Blocks, norms: tuple, lists: tuple, measures: Sequence[str],
                   bounds: Sequence[int], k: int,
                   values: Callable[[tuple], dict]) -> dict[str, list[float]]:
    """Each of ``measures`` with each group of ``bounds`` left out, from the m-lists ``lists``
    (``(sim_x, idx_x, sim_y, idx_y)``, ``n x m``, of
    :func:`~dask_repsim.paths.sample_blocks.neighbours.nearest_neighbours` over ``blocks``)
    and the passes the module's text describes: the restricted pass when a sample is flagged,
    the lookup pass for second-order cosine similarity. ``values``: the other measures of
    neighbour lists ``(sim_x, idx_x, sim_y, idx_y)`` over samples ``0 .. n' - 1``."""
    flags = [flagged_samples(idx, bounds, k) for idx in (lists[1], lists[3])]
    if any(len(rows) for rows, _ in flags):
        restricted = restricted_neighbours(blocks, norms, bounds, k, flags)
    else:
        restricted = [(np.empty((0, k)), np.empty((0, k), dtype=np.int64))] * 2
    x, y = (Lists(lists[2 * s], lists[2 * s + 1], *flags[s], *restricted[s]) for s in (0, 1))
    if "second_order_cosine" in measures:
        x, y = with_cross(blocks, norms, x, y)
    out: dict[str, list[float]] = {m: [] for m in measures}
    for g in range(len(bounds) - 1):
        found = _replicate(measures, values, x.kept(bounds, g, k), y.kept(bounds, g, k),
                           int(bounds[g]), int(bounds[g + 1]))
        for m in measures:
            out[m].append(found[m])
    return out
