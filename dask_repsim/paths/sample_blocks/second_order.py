"""Second-order cosine similarity (Hamilton, Leskovec & Jurafsky 2016) from the k-nearest-
neighbour lists and one more pass over row-block tiles.

For each sample i, the union ``U_i = N_x(i) ∪ N_y(i)`` of its k nearest neighbours in the two
layers (cosine similarity of the raw activations, as :mod:`~dask_repsim.paths.sample_blocks.
neighbours`); its second-order vectors are its cosine similarities to the samples of ``U_i`` in
each layer, ``s_x(i) = (K_ij)_{j in U_i}`` and ``s_y(i) = (L_ij)_{j in U_i}``, and the measure is
the cosine of the two, averaged over samples::

    second_order_cosine = (1/n) sum_i cos(s_x(i), s_y(i))

The neighbour pass gives ``K_ij`` for j in ``N_x(i)`` and ``L_ij`` for j in ``N_y(i)``; what is
missing, ``K_ij`` for the neighbours only y lists and ``L_ij`` for those only x lists (at most
``2 k`` per sample), comes from a second pass: each pair of row blocks forms its similarity
blocks again and picks those entries. Only ``n x 2k`` numbers reach the client.

Its permutation null (:func:`second_order_values`): with y's samples permuted, y's neighbour
lists are relabelled as for the other k-NN measures' nulls, and each permuted pairing lacks
other similarities (``K_ij`` for the neighbours the permuted y lists, ``L_perm(i)perm(j)`` for
x's): the second pass looks those up for every permutation at once (or in batches of
:data:`LOOKUPS`, a pass each), so a test of ``count`` permutations reads the tiles twice, or a
few times more.

ReSi's ``second_order_cosine_similarity`` builds the vectors from cosine *distances*
(``1 - K_ij``) where the paper uses similarities, which gives other values; the guide says so.

References
----------
Hamilton, Leskovec, Jurafsky (2016). Cultural Shift or Linguistic Drift? Comparing Two
Computational Measures of Semantic Change. EMNLP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask
import numpy as np

from ...engine.parallel import compute
from ...exceptions import InputError
from .tiles import Blocks, block_pairs, unit_rows

#: similarities looked up in one pass at most (a permutation null's pairings are batched by it):
#: 16 bytes of indices and 8 of the value each, 384 MiB
LOOKUPS = 2**24


def _pick(xi, xj, yi, yj, nxi, nxj, nyi, nyj, wanted: tuple) -> tuple:
    """The similarities at ``wanted`` entries of one pair of row blocks: per layer, the
    (local row, local column) entries of the block and of its transpose."""
    out = []
    for bi, bj, ni, nj, (rows, cols, rows_t, cols_t) in (
            (xi, xj, nxi, nxj, wanted[0]), (yi, yj, nyi, nyj, wanted[1])):
        s = unit_rows(bi, ni) @ unit_rows(bj, nj).T
        out.append((s[rows, cols], s[cols_t, rows_t]))
    return tuple(out)


def _missing(idx_have: np.ndarray, idx_other: np.ndarray) -> np.ndarray:
    """For each entry of ``idx_other``, whether its sample is absent from the same row of
    ``idx_have`` (its similarity in the first list's layer is then not known yet)."""
    k = idx_have.shape[1]
    both = np.concatenate([idx_have, idx_other], axis=1)
    order = np.argsort(both, axis=1, kind="stable")
    s = np.take_along_axis(both, order, axis=1)
    dup = np.zeros(both.shape, dtype=bool)
    row, pos = np.nonzero(s[:, 1:] == s[:, :-1])
    dup[row, order[row, pos + 1]] = True  # the second of a pair: idx_other's entry
    return ~dup[:, k:]


def _requests(rows: np.ndarray, cols: np.ndarray, bounds: list, pairs: list) -> dict:
    """The entries (global row, column) bucketed by tile: for tile (I, J), I <= J, the indices
    into ``rows`` of entries in block I x J and those in J x I (read from the transpose)."""
    starts = np.array([b[0] for b in bounds])
    br, bc = np.searchsorted(starts, rows, "right") - 1, np.searchsorted(starts, cols, "right") - 1
    out = {}
    for i, j in pairs:
        direct = np.flatnonzero((br == i) & (bc == j))
        flipped = np.flatnonzero((br == j) & (bc == i)) if i != j else np.empty(0, np.int64)
        out[i, j] = (direct, flipped)
    return out


def lookup(blocks: Blocks, norms: tuple, wanted: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The cosine similarities at ``wanted`` ``((rows, cols) of x, (rows, cols) of y)`` entries
    (global sample indices), from one pass over the tiles of ``blocks``."""
    pairs = block_pairs(len(blocks))
    req = [_requests(r, c, blocks.bounds, pairs) for r, c in wanted]
    tasks = []
    for i, j in pairs:
        si, sj = blocks.rows(i), blocks.rows(j)
        local = []
        for (rows, cols), (direct, flipped) in zip(wanted, (req[0][i, j], req[1][i, j]),
                                                   strict=True):
            local.append((rows[direct] - si.start, cols[direct] - sj.start,
                          rows[flipped] - sj.start, cols[flipped] - si.start))
        tasks.append(dask.delayed(_pick, pure=True)(
            blocks.x[i], blocks.x[j], blocks.y[i], blocks.y[j], norms[0][si], norms[0][sj],
            norms[1][si], norms[1][sj], tuple(local)))
    picked = compute(*tasks)
    found = (np.empty(len(wanted[0][0])), np.empty(len(wanted[1][0])))
    for (i, j), pick in zip(pairs, picked, strict=True):
        for target, (direct, flipped), (a, b) in zip(found, (req[0][i, j], req[1][i, j]), pick,
                                                     strict=True):
            target[direct], target[flipped] = a, b
    return found


@dataclass(frozen=True)
class Pairing:
    """What one pairing of y's samples with x's (``perm``: sample ``perm[i]`` of y with sample
    i of x; None for the stored one) needs looked up: x's similarities to the neighbours only
    y lists (``need_k``, at ``idx_y``) and y's to those only x lists (``need_l``)."""

    sim_y: np.ndarray
    idx_y: np.ndarray
    need_k: np.ndarray
    need_l: np.ndarray
    perm: np.ndarray | None

    @classmethod
    def of(cls, lists: tuple, perm: np.ndarray | None) -> Pairing:
        """The pairing of :func:`second_order_values`' ``lists`` under ``perm``: y's lists of
        sample ``perm[i]``, relabelled by the inverse permutation."""
        _, idx_x, sim_y, idx_y = lists
        if perm is not None:
            inverse = np.empty_like(perm)
            inverse[perm] = np.arange(len(perm))
            sim_y, idx_y = sim_y[perm], inverse[idx_y[perm]]
        return cls(sim_y, idx_y, _missing(idx_x, idx_y), _missing(idx_y, idx_x), perm)

    def wanted(self, idx_x: np.ndarray) -> tuple:
        """The (rows, cols) of x's and of y's similarities to look up, in y's own sample
        order for y's (``L'_ij = L_perm(i)perm(j)``)."""
        row_k, col_k = np.nonzero(self.need_k)[0], self.idx_y[self.need_k]
        row_l, col_l = np.nonzero(self.need_l)[0], idx_x[self.need_l]
        if self.perm is not None:
            row_l, col_l = self.perm[row_l], self.perm[col_l]
        return (row_k, col_k), (row_l, col_l)

    def value(self, lists: tuple, k_missing: np.ndarray, l_missing: np.ndarray) -> float:
        """The measure, from x's ``lists``, this pairing's and the looked-up similarities."""
        sim_x, idx_x = lists[0], lists[1]
        n, k = idx_x.shape
        # the union's vectors: x's k neighbours, then y's neighbours that x does not list
        kx, ly = np.zeros((n, 2 * k)), np.zeros((n, 2 * k))
        kx[:, :k] = sim_x
        shared = np.nonzero(~self.need_l)
        ly[shared] = _shared_l(self.sim_y, idx_x, self.idx_y, self.need_l)
        ly[np.nonzero(self.need_l)] = l_missing
        row_k, cols_k = np.nonzero(self.need_k)
        kx[row_k, k + cols_k], ly[row_k, k + cols_k] = k_missing, self.sim_y[self.need_k]
        return _mean_cosine(kx, ly)


def second_order_values(blocks: Blocks, norms: tuple, lists: tuple,
                        perms: Sequence[np.ndarray] = ()) -> list[float]:
    """The measure from the neighbour ``lists`` ``(sim_x, idx_x, sim_y, idx_y)`` of
    :func:`~dask_repsim.paths.sample_blocks.neighbours.nearest_neighbours` over the same
    ``blocks``, with the samples' ``norms`` in x and y; then under each of ``perms`` (y's
    samples permuted: its lists relabelled, as the k-NN measures' nulls, and the similarities
    the permuted lists lack looked up too). Pairings are looked up together, as many as
    :data:`LOOKUPS` entries allow, one more pass over the tiles each time."""
    idx_x = lists[1]
    todo = [None, *perms]
    out: list[float] = []
    while todo:
        batch, size = [], 0
        while todo and (not batch or size + 2 * idx_x.size <= LOOKUPS):
            batch.append(Pairing.of(lists, todo.pop(0)))
            size += int(batch[-1].need_k.sum() + batch[-1].need_l.sum())
        wanted = [p.wanted(idx_x) for p in batch]
        found = lookup(blocks, norms, tuple(
            tuple(np.concatenate([w[side][a] for w in wanted]) for a in (0, 1))
            for side in (0, 1)))
        ends = [np.cumsum([0, *(len(w[side][0]) for w in wanted)]) for side in (0, 1)]
        out += [p.value(lists, found[0][ends[0][b]:ends[0][b + 1]],
                        found[1][ends[1][b]:ends[1][b + 1]]) for b, p in enumerate(batch)]
    return out


def _shared_l(sim_y: np.ndarray, idx_x: np.ndarray, idx_y: np.ndarray,
              need_l: np.ndarray) -> np.ndarray:
    """L at x's neighbours that y lists too, in ``np.nonzero(~need_l)`` order."""
    row, pos = np.nonzero(~need_l)
    target = idx_x[row, pos]
    at = np.argmax(idx_y[row] == target[:, None], axis=1)
    return sim_y[row, at]


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    bad = (na == 0) | (nb == 0)
    if bad.any():
        first = int(np.argmax(bad))
        raise InputError(
            f"second-order cosine similarity is undefined: sample {first} has cosine similarity "
            "0 with every sample of its neighbourhoods in one layer (orthogonal activations); "
            f"{int(bad.sum())} such sample(s)")
    return float(np.mean(np.einsum("ij,ij->i", a, b) / (na * nb)))
