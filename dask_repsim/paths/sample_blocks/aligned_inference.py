"""Permutation null and jackknife replicates of aligned cosine similarity
(:mod:`~dask_repsim.paths.sample_blocks.aligned`), from one pass over row blocks.

The value is ``(1/m) sum_i cos(x_i W, y_i)`` over the m samples with a direction in both
layers, ``W`` the p x q block of the Procrustes rotation of ``C = X^T Y``
(:func:`~dask_repsim.paths.sample_blocks.aligned.rotation`). With each sample's unit vectors
``u_i = x_i / ||x_i||`` and ``v_i = y_i / ||y_i||`` (zero for a sample that is all zeros) the
sum of cosines is ``<W, N>`` with ``N = U^T V = sum_i u_i^T v_i``: the value of any set of
samples follows from three sums over them, ``C``, ``N`` and m. So:

- jackknife: the pass sums ``C_g``, ``N_g`` and ``m_g`` over each of the G contiguous groups
  of :func:`~dask_repsim.engine.stream.group_bounds`; replicate g has its own rotation
  ``W_(g)`` of the other groups' ``C`` and is ``<W_(g), N_(g)> / m_(g)`` (sums of the other
  groups, :func:`~dask_repsim.paths.sample_blocks.outputs_inference.leave_one_out_sums`): the
  measure recomputed exactly on the samples outside group g.
- permutations: sample ``perm[i]`` of y paired with sample i of x, the permutations of every
  path (:func:`~dask_repsim.engine.permuted.permutation_series`, within blocks of
  :data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` consecutive samples). The pass reads
  row blocks of whole permutation blocks and sums, per permutation, ``X_b^T P_b Y_b``, ``U_b^T
  P_b V_b`` and the samples kept; each permutation then has its own rotation and mean cosine.

Cost: the value's products once, the same work split by groups for the jackknife, plus G
singular value decompositions of a ``max(p, q)`` square matrix on the client; per permutation
two ``n p q`` products in the pass and one such decomposition. A result holds ``2 (G + K) p
q`` float64 numbers: K permutations are taken in batches the memory budget holds
(:func:`permutation_batch`), each batch one more reading of the data. The null and the
replicates depend on the seed, n and G only, not on the storage chunking or the other layers of
a grid.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from ...engine import permuted
from ...engine.columns import checked_columns
from ...engine.memory import LEVELS
from ...engine.parallel import compute, memory_budget, threads_per_process
from ...engine.reduction import tree_reduce
from ...exceptions import InputError
from ...io.inputs import Layer
from .aligned import aligned_cosine, check_kept, rotation
from .outputs_inference import (
    Block,
    group_spans,
    jackknife_bounds,
    leave_one_out_sums,
    row_blocks,
)

#: (seed, permutations skipped, permutations, permutation block) of a pass's batch
Batch = tuple[int, int, int, int]


def _directions(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's unit vector (zero for a row of zeros) and whether it has one."""
    norms = np.linalg.norm(z, axis=1)
    kept = norms > 0
    return np.divide(z, norms[:, None], out=np.zeros_like(z), where=kept[:, None]), kept


def _part(start: int, a: np.ndarray, b: np.ndarray, bounds: tuple[int, ...] | None,
          batch: Batch | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(C, N, m)`` of a row block's samples in each group of ``bounds``, then under each
    permutation of ``batch``: ((G + K) x p x q, (G + K) x p x q, G + K)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    (ua, ka), (ub, kb) = _directions(a), _directions(b)
    groups, q, stop = 0 if bounds is None else len(bounds) - 1, b.shape[1], start + len(a)
    seed, skip, count, block = batch or (0, 0, 0, 0)
    cross = np.zeros((groups + count, a.shape[1], q))
    normed, kept = np.zeros_like(cross), np.zeros(groups + count)
    for g, lo, hi in group_spans(start, stop, bounds or (0, 0)):
        cross[g] += a[lo:hi].T @ b[lo:hi]
        normed[g] += ua[lo:hi].T @ ub[lo:hi]
        kept[g] += np.count_nonzero(ka[lo:hi] & kb[lo:hi])
    if not count:
        return cross, normed, kept
    right = np.concatenate([b, ub, kb[:, None].astype(np.float64)], axis=1)
    for first, end in permuted.permutation_blocks(start, stop, block):
        lo, hi = first - start, end - start
        stream = permuted.permutation_stream(seed, first, end - first)
        for _ in range(skip):
            next(stream)
        for k in range(groups, groups + count):
            moved = right[lo:hi][next(stream)]
            cross[k] += a[lo:hi].T @ moved[:, :q]
            normed[k] += ua[lo:hi].T @ moved[:, q:2 * q]
            kept[k] += np.count_nonzero(ka[lo:hi] & (moved[:, 2 * q] > 0))
    return cross, normed, kept


def _merge(one: tuple, other: tuple) -> tuple:
    return tuple(u + v for u, v in zip(one, other, strict=True))


def _sums(blocks: list[Block], bounds: tuple[int, ...] | None,
          batch: Batch | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass: the sums of :func:`_part` over every row block."""
    parts = [dask.delayed(_part, pure=True)(start, a, b, bounds, batch)
             for start, a, b in blocks]
    (sums,) = compute(tree_reduce(parts, _merge, name="aligned-inference", pairwise=True))
    return sums


def _mean_cosine(cross: np.ndarray, normed: np.ndarray, kept: float, which: str) -> float:
    """``<W, N> / m`` for the samples whose sums these are (``which`` names them in errors)."""
    if kept < 0.5:
        raise InputError(f"aligned cosine similarity is undefined {which}: every sample there "
                         "is all zeros in one of the layers")
    return float(np.sum(rotation(cross) * normed) / kept)


def permutation_batch(p: int, q: int, groups: int, count: int) -> int:
    """Permutations per pass, at least one: as many as the memory budget holds in the
    pass's results (``2 p q`` float64 numbers a permutation; a merge task holds three results,
    the scheduler one per level of the tree) besides the ``groups``' sums.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"repsim.memory-budget": "1GB", "scheduler": "sync"}):
    ...     permutation_batch(512, 512, 20, 999)  # 34 slices of 4 MiB in 7 copies, less 20
    14
    """
    per_slice = 16 * p * q + 8
    copies = 3 * threads_per_process() + LEVELS
    return int(max(1, min(count, memory_budget() // (copies * per_slice) - groups)))


def aligned_values(x: Layer, y: Layer, *, null: tuple[int, int] | None = None,
                   groups: int | None = None) -> dict[str, Any]:
    """Aligned cosine similarity of two layers (``"aligned_cosine"``) with, for ``null=(count,
    seed)``, its values under ``count`` permutations of y's samples (``"null"``) and, for
    ``groups``, its leave-a-group-out values (``"replicates"``), as
    :mod:`~dask_repsim.paths.sample_blocks.cells` takes them: see the module's text. Without
    either, the value of :func:`~dask_repsim.paths.sample_blocks.aligned.aligned_cosine`.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(100, 4))
    >>> v = aligned_values(as_layer(a), as_layer(2 * a, name="y"), null=(3, 0), groups=5)
    >>> round(v["aligned_cosine"], 12), [round(r, 12) for r in v["replicates"]["aligned_cosine"]]
    (1.0, [1.0, 1.0, 1.0, 1.0, 1.0])
    >>> bool(max(v["null"]["aligned_cosine"]) < 0.5)
    True
    """
    if not (null or groups):
        return {"aligned_cosine": aligned_cosine(x, y)}
    checked_columns([x, y])  # sample counts, NaN and Inf, constant layers: the usual errors
    n = int(x.data.shape[0])
    bounds = jackknife_bounds(n, groups)
    g = len(bounds) - 1
    count, seed = null or (0, 0)
    size = permutation_batch(int(x.data.shape[1]), int(y.data.shape[1]), g, count)
    blocks = row_blocks(x, y, null)
    block = permuted.PERMUTATION_BLOCK
    cross, normed, kept = _sums(blocks, bounds, (seed, 0, min(size, count), block))
    check_kept(int(round(kept[:g].sum())), n, x.name, y.name)
    out: dict[str, Any] = {"aligned_cosine": _mean_cosine(
        cross[:g].sum(axis=0), normed[:g].sum(axis=0), kept[:g].sum(), "here")}
    if groups:
        left = [leave_one_out_sums(s[:g]) for s in (cross, normed, kept)]
        out["replicates"] = {"aligned_cosine": [
            _mean_cosine(left[0][i], left[1][i], left[2][i],
                         f"without samples {lo} to {hi - 1} (jackknife group {i})")
            for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]}
    if count:  # each batch's sums reduced to its null values before the next pass
        null = _null_values(cross[g:], normed[g:], kept[g:], 0, y.name)
        for skip in range(size, count, size):
            batch = (seed, skip, min(size, count - skip), block)
            null += _null_values(*_sums(blocks, None, batch), skip, y.name)
        out["null"] = {"aligned_cosine": null}
    return out


def _null_values(cross: np.ndarray, normed: np.ndarray, kept: np.ndarray, first: int,
                 name: str) -> list[float]:
    """The values under permutations ``first``, ``first + 1``, ... from their sums."""
    return [_mean_cosine(cross[k], normed[k], kept[k],
                         f"under permutation {first + k} of {name}'s samples")
            for k in range(len(kept))]
