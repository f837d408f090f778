"""Permutation nulls of RSA (:mod:`dask_repsim.paths.sample_blocks.rsa`) from the same pass over
the row-block tiles as its value.

Under "x and y are unrelated", pairing sample i of x with any sample of y is as likely as with
sample i. Permuting y's samples by P (sample ``P(i)`` of y paired with sample i of x) turns its
RDM ``D2`` into ``P D2 P'``, whose entries ``i < j`` are those of ``D2`` in another order: their
count, mean and sum of squares do not change, nor do anything of x's. What changes:

- ``"corr"``, ``"cosine"``: the cross product ``sum_{i<j} d1_ij d2_P(i)P(j)`` only;
- ``"cosine_cov"``, ``"corr_cov"``: that and the row sums' term ``r1 . r2[P]`` (the row sums of
  ``P D2 P'`` are those of ``D2`` permuted; :mod:`~dask_repsim.paths.sample_blocks.rsa_whitened`);
- ``"spearman"``, ``"rho-a"``: the entries of ``P D2 P'`` move with their ranks, so its ranks are
  ``D2``'s ranks moved to the permuted positions: the cross product of the centred ranks;
- ``"tau-b"``, ``"tau-a"``: recomputed (``scipy.stats.kendalltau``) on the gathered entries with
  ``D2``'s moved to the permuted positions, ``O(N log N)`` per permutation for ``N = n (n - 1) /
  2`` entries.

The permutations are those of the other paths (:mod:`dask_repsim.engine.permuted`): within
blocks of :data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` consecutive samples, seeded by
``seed`` and each block's first sample, so the null depends on the seed and n only, not on the
tiles, the chunking or the other layers of a grid. Row blocks of the tiles are then whole
permutation blocks, or all n samples in one block when ``n <= PERMUTATION_BLOCK``
(:func:`null_rows`): a permuted tile ``(P D2 P')[I, J]`` is tile ``D2[I, J]`` with its rows and
columns permuted, and each tile task adds, for every permutation, the sum of ``d1 * d2``
permuted over its own entries (:func:`tile_cross`; a diagonal tile's entries ``i < j`` are half
its off-diagonal sum) with no other pass over the data. The gathered comparisons permute the
tiles of the gathered entries the same way on the client (:func:`rank_cross`,
:func:`kendall_null`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from dask.utils import format_bytes

from ...engine import permuted as _permuted
from ...engine.parallel import memory_budget
from . import tiles as row_tiles

#: b x b float64 matrices a tile task holds besides the value's for the null: each RDM block
#: centred
NULL_MATRICES = 2
#: bytes of permuted rows gathered at once (:func:`permuted_cross`): on a 4,096-sample tile,
#: 28 ms a permutation against 168 ms gathering the whole tile's rows, then its columns
GATHER_BYTES = 2**21


@dataclass(frozen=True)
class NullSpec:
    """``count`` permutations seeded by ``seed`` within blocks of ``block`` samples (read once
    on the client: tasks may run elsewhere)."""

    count: int
    seed: int
    block: int

    @classmethod
    def of(cls, null: tuple[int, int] | None) -> NullSpec | None:
        """The spec of ``null=(count, seed)``, or None without permutations."""
        if not null or not null[0]:
            return None
        return cls(int(null[0]), int(null[1]), int(_permuted.PERMUTATION_BLOCK))


def null_rows(n: int, width: int, matrices: int, asked: int | None, block: int,
              measure: str = "RSA") -> int:
    """Samples per row block of RSA (or ``measure``, named in the error) with a permutation
    null: ``n`` (one tile) or a multiple of the permutation ``block``; ``asked``
    (``block_rows=``) must be one of those. From the memory budget (as
    :func:`~dask_repsim.paths.sample_blocks.tiles.block_rows`, shared by no more tasks than
    there are tiles) otherwise, an error when it does not allow whole permutation blocks.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"repsim.memory-budget": "16GB", "num_workers": 2,
    ...                       "scheduler": "threads"}):
    ...     null_rows(10_000, 64, 10, None, 4096), null_rows(300, 64, 10, None, 4096)
    (4096, 300)
    """
    if asked is not None:
        if asked >= n or asked % block == 0:
            return min(int(asked), n)
        raise ValueError(f"row blocks of {asked} samples split the permutation blocks of "
                         f"{block} samples; give a multiple of {block} (or n = {n})")
    need = min(n, block)
    blocks = -(-n // need)  # no more tasks run at once than there are tiles
    tasks = min(row_tiles.concurrent_tasks(), blocks * (blocks + 1) // 2)
    per_task = memory_budget() / (2 * tasks)
    a, b = 8.0 * matrices, 16.0 * width  # a r^2 + b r <= per_task, as tiles.block_rows
    allowed = int((-b + np.sqrt(b * b + 4 * a * per_task)) / (2 * a))
    if allowed < need:
        whole = f"all {n} samples in one row block" if n <= block else \
            f"row blocks of {block} samples"
        threads = "" if tasks == 1 else f", or run fewer than {tasks} tasks at once"
        raise ValueError(
            f"a permutation test of {measure} needs whole permutation blocks in each row block of "
            f"the tiles ({whole}), and the memory budget ({format_bytes(memory_budget())}, "
            f"shared by {tasks} task{'s' if tasks > 1 else ''} at once) allows {allowed} "
            f"samples per row block: raise dask config 'repsim.memory-budget'{threads}")
    rows = row_tiles.block_rows(n, width, matrices)
    return n if rows >= n else min(n, max(rows // block, 1) * block)


def local_permutations(seed: int, span: tuple[int, int], block: int) -> Iterator[np.ndarray]:
    """Each permutation of the samples ``span`` (whole permutation blocks), as indices from
    ``span[0]``, one after another: the rows ``span`` of
    :func:`~dask_repsim.engine.permuted.permutation_series` less ``span[0]``."""
    streams = [(a - span[0], _permuted.permutation_stream(seed, a, b - a))
               for a, b in _permuted.permutation_blocks(span[0], span[1], block)]
    while True:
        yield np.concatenate([a + next(s) for a, s in streams])


def permuted_cross(a: np.ndarray, b: np.ndarray, same: bool, rows: tuple[int, int],
                   cols: tuple[int, int], spec: NullSpec) -> np.ndarray:
    """``sum a * (P b P')`` over a tile's entries for each permutation (``spec.count``): ``a``,
    ``b`` the tile's matrices over the samples ``rows`` x ``cols``, symmetric with a zero
    diagonal on a diagonal tile (``same``), whose entries ``i < j`` are half the sum. The
    permuted rows are gathered :data:`GATHER_BYTES` at a time, which stay in cache."""
    out = np.zeros(spec.count)
    row_perms = local_permutations(spec.seed, rows, spec.block)
    col_perms = row_perms if same else local_permutations(spec.seed, cols, spec.block)
    step = max(1, GATHER_BYTES // (8 * b.shape[1]))
    gathered, permuted = np.empty((step, b.shape[1])), np.empty((step, b.shape[1]))
    for k in range(spec.count):
        pi = next(row_perms)
        pj = pi if same else next(col_perms)
        for r in range(0, len(pi), step):
            m = min(step, len(pi) - r)
            np.take(b, pi[r:r + m], axis=0, out=gathered[:m])
            np.take(gathered[:m], pj, axis=1, out=permuted[:m])
            out[k] += np.vdot(a[r:r + m], permuted[:m])
    return out / 2.0 if same else out


def _centred(d: np.ndarray, mean: float, same: bool) -> np.ndarray:
    """An RDM block less ``mean``, with a zero diagonal on a diagonal tile (whose blocks are
    symmetric up to rounding: the sum over ``i != j`` is twice that over ``i < j``)."""
    c = d - mean
    if same:
        np.fill_diagonal(c, 0.0)
    return c


def tile_cross(blocks: Sequence[np.ndarray], same: bool, means: tuple[float, float],
               spans: tuple[tuple[int, int], tuple[int, int]], spec: NullSpec) -> np.ndarray:
    """A tile's centred cross product ``sum (d1 - m1)(d2 - m2)`` (``m``: the tile's own mean
    entries, as its :class:`~dask_repsim.paths.sample_blocks.rsa.EntryMoments`) under each
    permutation of y's samples; ``blocks``: the tile's two RDM blocks (not changed)."""
    a = _centred(blocks[0], means[0], same)
    b = _centred(blocks[1], means[1], same)
    return permuted_cross(a, b, same, *spans, spec)


def streamed_nulls(parts: list, total: Any, compares: Sequence[str]) -> tuple[dict, np.ndarray]:
    """``"corr"`` and ``"cosine"`` (those in ``compares``) under each permutation, and the
    centred cross product of all entries under each: the total's, less each tile's own, plus
    the tile's permuted (``parts[t][4]``); the means and the pairwise merge's corrections do not
    change under permutation."""
    cross = total.m12 + sum(p[4] - p[0].m12 for p in parts)
    out = {}
    for c in compares:
        if c in ("corr", "cosine"):
            out[c] = [float(replace(total, m12=float(v)).pearson() if c == "corr" else
                            replace(total, m12=float(v)).cosine()) for v in cross]
    return out, cross


@dataclass(frozen=True)
class Layout:
    """Where each tile's entries lie in the gathered vector of all entries: per tile, whether
    it is diagonal, its samples (rows, columns) and its first entry."""

    tiles: tuple[tuple[bool, tuple[int, int], tuple[int, int], int], ...]

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, int]], bounds: Sequence[tuple[int, int]]) -> Layout:
        """The layout of the tiles ``pairs`` of row blocks ``bounds``, in order."""
        out, start = [], 0
        for i, j in pairs:
            (a, b), (c, d) = bounds[i], bounds[j]
            out.append((i == j, (a, b), (c, d), start))
            start += (b - a) * (b - a - 1) // 2 if i == j else (b - a) * (d - c)
        return cls(tuple(out))

    @property
    def samples(self) -> int:
        return self.tiles[-1][2][1]

    def matrix(self, v: np.ndarray, tile: int) -> np.ndarray:
        """Tile ``tile``'s entries of ``v`` as its matrix (symmetric, zero diagonal, when
        diagonal)."""
        same, (a, b), (c, d), start = self.tiles[tile]
        if not same:
            return v[start:start + (b - a) * (d - c)].reshape(b - a, d - c)
        m = np.zeros((b - a, b - a))
        m[np.triu_indices(b - a, 1)] = v[start:start + (b - a) * (b - a - 1) // 2]
        m += m.T
        return m


def rank_cross(r1: np.ndarray, r2: np.ndarray, layout: Layout, spec: NullSpec) -> np.ndarray:
    """``sum r1 * r2`` over the entries under each permutation of y's samples, ``r1``, ``r2``
    (the centred ranks) gathered in tile order: tile by tile, as the tasks' own sums."""
    out = np.zeros(spec.count)
    for t, (same, rows, cols, _) in enumerate(layout.tiles):
        out += permuted_cross(layout.matrix(r1, t), layout.matrix(r2, t), same, rows, cols, spec)
    return out


def kendall_null(d2: np.ndarray, layout: Layout, spec: NullSpec,
                 kendall: Callable[[np.ndarray], dict]) -> list[dict]:
    """``kendall`` (of y's gathered entries) under each permutation of y's samples: ``d2``'s
    entries moved to the permuted positions, tile by tile, one permutation at a time."""
    out = []
    moved = np.empty_like(d2)
    for perm in _permuted.permutation_series(layout.samples, spec.seed, spec.count, spec.block):
        for t, (same, (a, b), (c, d), start) in enumerate(layout.tiles):
            pi, pj = perm[a:b] - a, perm[c:d] - c
            m = layout.matrix(d2, t)[pi][:, pj]
            length = (b - a) * (b - a - 1) // 2 if same else m.size
            moved[start:start + length] = m[np.triu_indices(b - a, 1)] if same else m.ravel()
        out.append(kendall(moved))
    return out
