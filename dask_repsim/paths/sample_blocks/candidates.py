"""Candidate neighbours in the order every k-nearest-neighbour pass keeps them: larger
similarity first, equal similarities by smaller sample index, so that a neighbour list is a
deterministic function of the similarities (:mod:`~dask_repsim.paths.sample_blocks.neighbours`,
:mod:`~dask_repsim.paths.sample_blocks.neighbours_jackknife`). A tile gives each of its rows
its best columns (:func:`top_k`); results merge by row block (:func:`merge_candidates`).
"""

from __future__ import annotations

import numpy as np


def top_k(s: np.ndarray, cols: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``min(k, columns)`` largest entries of ``s`` (columns ``cols``), larger
    first, equal values by smaller column index first: (values, column indices).

    Examples
    --------
    >>> s = np.array([[0.5, 0.9, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]])
    >>> values, idx = top_k(s, np.array([10, 11, 12, 13]), 2)
    >>> values.tolist(), idx.tolist()
    ([[0.9, 0.5], [0.2, 0.2]], [[11, 10], [10, 11]])
    """
    c = s.shape[1]
    kk = min(k, c)
    part = np.argpartition(s, c - kk, axis=1)[:, c - kk :]
    values = np.take_along_axis(s, part, axis=1)
    idx = cols[part]
    # entries equal to a row's k-th value left out of the partition: sort those rows fully
    ties = np.flatnonzero((s >= values.min(axis=1)[:, None]).sum(axis=1) > kk)
    if len(ties):
        sub = s[ties]
        order = np.lexsort((np.broadcast_to(cols, sub.shape), -sub), axis=-1)[:, :kk]
        values[ties], idx[ties] = np.take_along_axis(sub, order, axis=1), cols[order]
    return ordered(values, idx, kk)


def ordered(values: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row by (larger value, smaller index).

    Examples
    --------
    >>> values, idx = ordered(np.array([[0.2, 0.9, 0.2]]), np.array([[7, 3, 5]]), 2)
    >>> values.tolist(), idx.tolist()
    ([[0.9, 0.2]], [[3, 5]])
    """
    order = np.lexsort((idx, -values), axis=-1)[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(idx, order, axis=1)


def merge_candidates(r: int, k: int, *parts: dict) -> dict:
    """The k best candidates of the rows of block ``r`` over ``parts`` (each ``{r: [(values,
    idx) of x, of y], ...}``), per layer."""
    merged = []
    for side in (0, 1):
        values = np.concatenate([p[r][side][0] for p in parts], axis=1)
        idx = np.concatenate([p[r][side][1] for p in parts], axis=1)
        merged.append(ordered(values, idx, k))
    return {r: merged}
