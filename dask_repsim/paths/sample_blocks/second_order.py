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

ReSi's ``second_order_cosine_similarity`` builds the vectors from cosine *distances*
(``1 - K_ij``) where the paper uses similarities, which gives other values; the guide says so.

References
----------
Hamilton, Leskovec, Jurafsky (2016). Cultural Shift or Linguistic Drift? Comparing Two
Computational Measures of Semantic Change. EMNLP.
"""

from __future__ import annotations

import dask
import numpy as np

from ...engine.parallel import compute
from ...exceptions import InputError
from .tiles import Blocks, block_pairs


def _unit(block: np.ndarray, norm: np.ndarray) -> np.ndarray:
    return np.asarray(block, dtype=np.float64) / norm[:, None]


def _pick(xi, xj, yi, yj, nxi, nxj, nyi, nyj, wanted: tuple) -> tuple:
    """The similarities at ``wanted`` entries of one pair of row blocks: per layer, the
    (local row, local column) entries of the block and of its transpose."""
    out = []
    for bi, bj, ni, nj, (rows, cols, rows_t, cols_t) in (
            (xi, xj, nxi, nxj, wanted[0]), (yi, yj, nyi, nyj, wanted[1])):
        s = _unit(bi, ni) @ _unit(bj, nj).T
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


def second_order_cosine(blocks: Blocks, norms: tuple, lists: tuple) -> float:
    """The measure from the neighbour ``lists`` ``(sim_x, idx_x, sim_y, idx_y)`` of
    :func:`~dask_repsim.paths.sample_blocks.neighbours.nearest_neighbours` over the same
    ``blocks``, with the samples' ``norms`` in x and y."""
    sim_x, idx_x, sim_y, idx_y = lists
    n, k = idx_x.shape
    need_k = _missing(idx_x, idx_y)  # y's neighbours whose K is unknown
    need_l = _missing(idx_y, idx_x)  # x's neighbours whose L is unknown
    row_k, col_k = np.nonzero(need_k)[0], idx_y[need_k]
    row_l, col_l = np.nonzero(need_l)[0], idx_x[need_l]
    pairs = block_pairs(len(blocks))
    req = [_requests(r, c, blocks.bounds, pairs) for r, c in ((row_k, col_k), (row_l, col_l))]
    tasks = []
    for i, j in pairs:
        si, sj = blocks.rows(i), blocks.rows(j)
        wanted = []
        for (rows, cols), (direct, flipped) in zip(((row_k, col_k), (row_l, col_l)),
                                                   (req[0][i, j], req[1][i, j]), strict=True):
            wanted.append((rows[direct] - si.start, cols[direct] - sj.start,
                           rows[flipped] - sj.start, cols[flipped] - si.start))
        tasks.append(dask.delayed(_pick, pure=True)(
            blocks.x[i], blocks.x[j], blocks.y[i], blocks.y[j], norms[0][si], norms[0][sj],
            norms[1][si], norms[1][sj], tuple(wanted)))
    picked = compute(*tasks)
    k_missing, l_missing = np.empty(len(row_k)), np.empty(len(row_l))
    for (i, j), (pick_x, pick_y) in zip(pairs, picked, strict=True):
        for target, (direct, flipped), (a, b) in ((k_missing, req[0][i, j], pick_x),
                                                  (l_missing, req[1][i, j], pick_y)):
            target[direct], target[flipped] = a, b
    # the union's vectors: x's k neighbours, then y's neighbours that x does not list
    kx = np.zeros((n, 2 * k))
    ly = np.zeros((n, 2 * k))
    kx[:, :k], ly[:, :k] = sim_x, 0.0
    ly[np.nonzero(~need_l)[0], np.nonzero(~need_l)[1]] = _shared_l(sim_y, idx_x, idx_y, need_l)
    ly[row_l, np.nonzero(need_l)[1]] = l_missing
    cols_k = np.nonzero(need_k)[1]
    kx[row_k, k + cols_k], ly[row_k, k + cols_k] = k_missing, sim_y[need_k]
    return _mean_cosine(kx, ly)


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
