"""Exact linear CKA from products of feature tiles, never holding a (p+q)^2 matrix; with
delete-a-group jackknife replicates and a permutation null from tile products too.

``||X_c^T Y_c||_F^2`` is a sum over pairs of feature tiles of the squared norms of the tile
products, each summed over row chunks (several inside one task, partial sums added in a tree),
cost ``n (p q + p^2/2 + q^2/2)``. Rows are centred with the column means of
:func:`~dask_repsim.engine.columns.checked_columns`, which also checks the inputs (the errors of
:mod:`dask_repsim.io.validation`, as on every path).

Memory: passes
--------------
A tile pair's product is held from its first row chunk to its last, and a row chunk read for
several pairs is held until the last of them has used it. With every pair in one graph the
scheduler held most of both layers (a 65,536 x (2,048 + 2,048) float32 pair from Zarr, 1 GiB:
1.3 GB above the process's start, whatever the memory budget). So the pairs run in *passes*, one
compute each, the pairs of a pass together holding at most ``budget`` bytes of products (one
copy; default a quarter of the memory budget per thread, dask config ``repsim.memory-budget``
over :func:`~dask_repsim.engine.parallel.threads_per_process`), and the tile shrinks so that
one pair's partial sums, one per thread and ``split_every`` waiting for a merge, fit half of
the budget (:func:`inference_shape`). Each pass reads the rows of its tiles again, so a small
budget costs reads (storage chunks that span all features are read whole each time), not
values. The row chunks and how many a task sums keep the tasks' rows within the other half of
the budget (:func:`layout`). The stored chunks a task reads are not counted.

Jackknife (``groups=G``)
------------------------
The groups are :func:`~dask_repsim.engine.stream.group_bounds` (the co-moment path's); replicate
g is CKA of the samples outside group g, centred with *their* means. With ``u_i, v_i`` the rows
centred with the means of all n samples, ``C = sum_i u_i v_i^T``, ``C_g`` its sum over group g,
``a_g, b_g`` the group's column sums and ``n' = n - n_g``, the kept samples' mean is
``-a_g / n'`` and::

    R_g = sum_{i not in g} (u_i + a_g/n') (v_i + b_g/n')^T = C - C_g - a_g b_g^T / n'

A tile-pair task keeps the products of its rows group by group (a task over few row chunks
holds those of the groups its rows meet), and the last one forms C, each ``R_g`` in turn and
returns ``||C||^2, ||R_g||^2 (G), a_g^T (C - C_g) b_g (G)``: 2G + 1 numbers, not G matrices,
from the same tasks (and reads) as the value. Such a task holds about G + 2 tile products, so
the tile shrinks with G to keep them within ``budget`` (:func:`inference_shape`).
Debiased CKA also needs each replicate's ``sum_i r'_i s'_i``, ``sum r'^2``, ``sum s'^2`` and
traces, with ``r'_i = |u_i + a_g/n'|^2`` (and ``s'_i`` of y). Expanding, with ``c_x =
|a_g|^2/n'^2``, ``c_y = |b_g|^2/n'^2`` and sums over the kept samples, ``tr' = sum r - n' c_x``
and::

    sum r's' = sum r s + 2/n' b_g.(sum r_i v_i) + 2/n' a_g.(sum s_i u_i)
               + 4/n'^2 a_g^T (C - C_g) b_g + c_y sum r + c_x sum s - 3 n' c_x c_y

(``sum u_i = -a_g`` over the kept samples). The light pass forms r and s of each row chunk
(summed over feature tiles, a task holding one ``rows x tile`` block), their sums by group,
and, per feature tile of each side and group, ``sum r_i u_i``, ``sum s_i u_i`` and ``a_g``
(``v``, ``b_g`` for y); the last task of a tile returns only the dot products with ``a_g`` of
the kept samples' sums, and ``|a_g|^2``: 3 G numbers per tile.

Permutation null (``permutations=K``)
-------------------------------------
Layer y's samples are permuted within blocks of
:data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` consecutive samples, with the
permutations of :func:`~dask_repsim.engine.permuted.block_permutations` (the co-moment path's,
so the nulls agree). A permutation keeps the column sums, so ``X_c^T P Y_c = sum_i u_i
v_P(i)^T``; each side's own ``||X_c^T X_c||``, ``||Y_c^T Y_c||`` and traces stay, and debiased CKA
also needs ``sum_i r_i s_P(i)`` (the light pass). Row chunks start at multiples of the block,
so the null does not depend on the storage chunking or the tile. There is no shortcut for
``||X^T P Y||``: the null costs K times the cross term's arithmetic, ``K n p q``. A task holds
a batch of b permuted tile products of t x t, ``8 b t^2 <= budget`` (t from K,
:func:`inference_shape`); each batch reads the pair's tiles again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import dask
import numpy as np

from ..engine import columns, permuted
from ..engine.columns import BLOCK_BYTES, centred, frobenius_sq, pair_means
from ..engine.parallel import compute, memory_budget, task_slots, threads_per_process
from ..engine.stream import replicate_bounds
from ..io.inputs import Layer
from ..io.validation import require_samples
from ..measures.hsic import cka_ratio, unbiased_hsic
from ..results import Cell, Cells, Positions, grid_cells

#: The smallest tile a pass's budget shrinks the tile to (BLAS stays efficient).
MIN_TILE = 128


def inference_shape(tile: int, groups: int | None, permutations: int,
                    budget: int = BLOCK_BYTES) -> tuple[int, int, int]:
    """(value tile, null tile, permutations per batch) that keep one tile pair's products within
    ``budget`` bytes: one of the value's, G + 2 with ``groups=G``, a batch of the null's;
    never above ``tile``, never below :data:`MIN_TILE` (the batch then shrinks, at least 1).

    Examples
    --------
    >>> inference_shape(2048, None, 0)
    (2048, 2048, 0)
    >>> inference_shape(2048, 20, 1000)
    (617, 128, 512)
    """
    def shrunk(count: int) -> int:
        return min(tile, max(MIN_TILE, math.isqrt(budget // (8 * count))))

    value = shrunk(groups + 2 if groups else 1)
    null = shrunk(permutations) if permutations else tile
    batch = min(permutations, max(1, budget // (8 * null**2)))
    return value, null, batch


@dataclass(frozen=True)
class _Job:
    """What a task sums over its rows: the products (or row-norm sums) of all rows, or of each
    jackknife group's (``bounds``), or of a batch of permutations ``(seed, first, count)``;
    ``block``: the permutation block when the graph was made (the tasks use that one)."""

    n: int
    bounds: tuple[int, ...] | None = None
    perms: tuple[int, int, int] | None = None
    block: int = field(default_factory=lambda: permuted.PERMUTATION_BLOCK)

    def groups_of(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """(group, first, stop) of the rows ``start`` to ``stop``; one group without bounds."""
        if self.bounds is None:
            return [(0, start, stop)]
        cells = permuted.permutation_cells(start, stop, self.block, self.bounds)
        return [(g, a, b) for a, b, g in cells]

    def permutations(self, start: int, size: int) -> Iterator[np.ndarray]:
        """For each permutation of the batch, the rows (within the chunk of ``size`` rows at
        sample ``start``) of y paired with the chunk's rows of x."""
        seed, first, count = self.perms
        series = [
            (a - start, itertools.islice(permuted.permutation_stream(seed, a, b - a),
                                         first, first + count))
            for a, b in permuted.permutation_blocks(start, start + size, self.block)
        ]
        for _ in range(count):
            yield np.concatenate([offset + next(s) for offset, s in series])

    def pieces(self, ca: np.ndarray, cb: np.ndarray, start: int) -> Iterator[tuple[Any, Any]]:
        """(key, sum) of the tile products of centred rows ``ca``, ``cb`` (sample ``start`` on)."""
        if self.perms is not None:
            buffer = np.empty_like(cb)
            for k, index in enumerate(self.permutations(start, len(cb))):
                yield k, ca.T @ np.take(cb, index, axis=0, out=buffer)
            return
        for g, a, b in self.groups_of(start, start + len(ca)):
            sa = ca[a - start : b - start]
            sb = sa if cb is ca else cb[a - start : b - start]
            yield g, sa.T @ sb  # the same rows: numpy uses syrk
            if self.bounds is not None:
                yield ("a", g), sa.sum(axis=0)
                yield ("b", g), sb.sum(axis=0)

    def finish(self, sums: dict) -> np.ndarray:
        """A tile pair's numbers: ``||C||^2``, and with groups ``||R_g||^2`` and ``a_g^T (C -
        C_g) b_g`` for each g; with permutations the batch's ``||C_k||^2``."""
        if self.perms is not None:
            return np.array([frobenius_sq(sums[k]) for k in range(self.perms[2])])
        if self.bounds is None:
            return np.array([frobenius_sq(sums[0])])
        groups = range(len(self.bounds) - 1)
        total = _merge(*({0: sums[g]} for g in groups))[0]
        out = np.empty(1 + 2 * len(groups))
        out[0] = frobenius_sq(total)
        for g in groups:
            kept = total - sums[g]
            a, b = sums["a", g], sums["b", g]
            out[1 + len(groups) + g] = a @ kept @ b
            kept -= np.outer(a, b / (self.n - self.bounds[g + 1] + self.bounds[g]))
            out[1 + g] = frobenius_sq(kept)
        return out


def _add(out: dict, key: Any, value: Any, copy: bool) -> None:
    if key in out:
        out[key] += value
    else:
        out[key] = value.copy() if copy else value


def _merge(*parts: dict) -> dict:
    """Key by key sums of partial sums (the inputs are left as they are)."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            _add(out, key, value, True)
    return out


class _Pair(NamedTuple):
    """A tile pair of a product to sum: ``target`` 0 (``X_c^T Y_c``), 1 (``X_c^T X_c``) or 2
    (``Y_c^T Y_c``), tile a of its left factor and tile b of its right one."""

    target: int
    a: int
    b: int

    @property
    def keys(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(side, tile) of the left and right factor (side 0: x, 1: y)."""
        left, right = ((0, 1), (0, 0), (1, 1))[self.target]
        return (left, self.a), (right, self.b)

    @property
    def weight(self) -> int:
        """2 for an off-diagonal pair of a symmetric product (counted for a < b only)."""
        return 1 if self.target == 0 or self.a == self.b else 2


def _pairs(nx: int, ny: int, own: bool) -> list[_Pair]:
    """The tile pairs of ``X_c^T Y_c`` and (``own``) of ``X_c^T X_c`` and ``Y_c^T Y_c`` (a <= b)."""
    out = [_Pair(0, a, b) for a in range(nx) for b in range(ny)]
    for target, count in ((1, nx), (2, ny)) if own else ():
        out += [_Pair(target, a, b) for a in range(count) for b in range(a, count)]
    return out


def _passes(pairs: list[_Pair], widths: Sequence[Sequence[int]], count: int,
            limit: int) -> list[list[_Pair]]:
    """``pairs`` in passes: consecutive pairs while ``count`` float64 products of each stay
    within ``limit`` bytes together (one pair at least); ``widths``: each side's tiles'."""
    out: list[list[_Pair]] = []
    held = limit + 1
    for pair in pairs:
        (sa, a), (sb, b) = pair.keys
        size = 8 * count * widths[sa][a] * widths[sb][b]
        if held + size > limit:
            out.append([])
            held = 0
        out[-1].append(pair)
        held += size
    return out


def _pair_sum(job: _Job, pair: _Pair, means: dict, blocks: dict, starts: list,
              finish: bool):
    """The sums of ``job`` of a tile pair over row chunks (``blocks``: (side, tile) -> the
    chunks; ``means``: (side, tile) -> its means), or what the job makes of them
    (``finish``): one task per tile pair and group of row chunks."""
    out: dict = {}
    left, right = pair.keys
    for k, start in enumerate(starts):
        ca = centred(blocks[left][k], means[left])
        cb = ca if right == left else centred(blocks[right][k], means[right])  # syrk
        for key, value in job.pieces(ca, cb, int(start)):
            _add(out, key, value, False)
    return job.finish(out) if finish else out


class _Tiles:
    """One layer's (row chunk, feature tile) blocks as delayed objects, its means, and how
    many row chunks a task sums (``per_task``)."""

    def __init__(self, layer: Layer, mean: np.ndarray, rows: int, tile: int, per_task: int = 1):
        data = layer.data.rechunk((rows, tile))
        self.blocks = data.to_delayed(optimize_graph=False)
        self.edges = np.cumsum((0,) + data.chunks[1])
        self.starts = np.cumsum((0,) + data.chunks[0])[:-1]
        self.mean = mean
        self.per_task = per_task

    def tile_mean(self, a: int) -> np.ndarray:
        return self.mean[self.edges[a] : self.edges[a + 1]]


def _reduce(parts: list, split_every: int, finish):
    """Partial sums added in a tree (``split_every`` per task), then ``finish`` of the total."""
    while len(parts) > 1:
        parts = [
            dask.delayed(_merge, pure=True)(*parts[i : i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    return dask.delayed(finish, pure=True)(parts[0])


def _pair_graph(tiles: Sequence[_Tiles], pair: _Pair, job: _Job, split_every: int):
    """Delayed: ``job``'s numbers of one tile pair, row chunks summed ``per_task`` per task,
    partial sums added in a tree, then finished."""
    used = sorted(set(pair.keys))
    means = {(side, a): tiles[side].tile_mean(a) for side, a in used}
    step = tiles[0].per_task
    starts = range(0, tiles[0].blocks.shape[0], step)
    parts = [
        dask.delayed(_pair_sum, pure=True)(
            job, pair, means,
            {(side, a): list(tiles[side].blocks[k : k + step, a]) for side, a in used},
            list(tiles[0].starts[k : k + step]), len(starts) == 1)
        for k in starts
    ]
    return parts[0] if len(parts) == 1 else _reduce(parts, split_every, job.finish)


def _frobenius(tiles: Sequence[_Tiles], passes: list[list[_Pair]], job: _Job,
               split_every: int, light: Sequence = ()) -> tuple[list, list]:
    """``job``'s numbers of ``X_c^T Y_c`` and of ``X_c^T X_c`` and ``Y_c^T Y_c`` (when
    ``passes`` hold their pairs), summed over tile pairs, and the delayed ``light`` computed
    with the first pass (which reads the same row chunks): one compute per pass, so that only
    one pass's products are held from its first row to its last (see the module's notes)."""
    totals: list = [0, 0, 0]
    found_light: list = []
    for i, group in enumerate(passes):
        found = compute([_pair_graph(tiles, pair, job, split_every) for pair in group],
                        *(() if i else light))
        for pair, numbers in zip(group, found[0], strict=True):
            totals[pair.target] = totals[pair.target] + pair.weight * numbers
        found_light = found_light or list(found[1:])
    return totals, found_light


def _row_norm(block: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Squared norms of a tile's rows, centred."""
    u = centred(block, mean)
    return np.einsum("ij,ij->i", u, u)


def _row_terms(job: _Job, r: np.ndarray, s: np.ndarray, start: int) -> dict:
    """What debiased CKA needs of a row chunk's centred squared row norms r (of x) and s (of
    y), by jackknife group: ``sum r s, sum r^2, sum s^2, sum r, sum s``; with permutations
    ``"null"``, ``sum r_i s_P(i)`` for each."""
    out: dict = {}
    for g, first, stop in job.groups_of(start, start + len(r)):
        rg, sg = r[first - start : stop - start], s[first - start : stop - start]
        _add(out, ("n", g), np.array([rg @ sg, rg @ rg, sg @ sg, rg.sum(), sg.sum()]), False)
    if job.perms is not None:
        out["null"] = np.array([r @ s[index] for index in job.permutations(start, len(r))])
    return out


def _side_sums(job: _Job, block: np.ndarray, mean: np.ndarray, own: np.ndarray,
               other: np.ndarray, start: int) -> dict:
    """A feature tile of one side's row chunk, by jackknife group: ``sum own_i u_i``, ``sum
    other_i u_i`` and ``sum u_i`` (own, other: this side's and the other's row norms)."""
    u = centred(block, mean)
    out: dict = {}
    for g, first, stop in job.groups_of(start, start + len(u)):
        rows = slice(first - start, stop - start)
        for key, value in (("own", own[rows] @ u[rows]), ("other", other[rows] @ u[rows]),
                           ("sum", u[rows].sum(axis=0))):
            _add(out, (key, g), value, False)
    return out


def _side_finish(sums: dict) -> np.ndarray:
    """(3, G) of a feature tile: ``a_g . sum_{i not in g} own_i u_i``, the same of ``other``,
    and ``|a_g|^2`` (``a_g`` the group's column sums)."""
    groups = sum(1 for key in sums if key[0] == "sum")
    total = _merge(*({key[0]: value} for key, value in sums.items()))
    out = np.empty((3, groups))
    for g in range(groups):
        a = sums["sum", g]
        out[:, g] = (a @ (total["own"] - sums["own", g]),
                     a @ (total["other"] - sums["other", g]), a @ a)
    return out


def _light_graphs(tx: _Tiles, ty: _Tiles, job: _Job, split_every: int) -> list:
    """Delayed: the row-norm sums of :func:`_row_terms` over all row chunks, and with groups
    each side's (3, G) of :func:`_side_finish` summed over its tiles. Row norms are summed
    over feature tiles, so a task holds one ``rows x tile`` block."""
    chunks = range(tx.blocks.shape[0])
    norms = [
        [dask.delayed(sum)([dask.delayed(_row_norm, pure=True)(t.blocks[k, a], t.tile_mean(a))
                            for a in range(t.blocks.shape[1])]) for k in chunks]
        for t in (tx, ty)
    ]
    terms = [dask.delayed(_row_terms, pure=True)(job, norms[0][k], norms[1][k],
                                                 int(tx.starts[k])) for k in chunks]
    out = [_reduce(terms, split_every, _merge)]
    for t, (own, other) in ((tx, norms), (ty, norms[::-1])) if job.bounds is not None else ():
        out.append(dask.delayed(sum)([
            _reduce([dask.delayed(_side_sums, pure=True)(job, t.blocks[k, a], t.tile_mean(a),
                                                         own[k], other[k], int(t.starts[k]))
                     for k in chunks], split_every, _side_finish)
            for a in range(t.blocks.shape[1])
        ]))
    return out


class _Terms(NamedTuple):
    """What CKA of one set of samples is made of: the count, the squared norms of the centred
    cross and own products, and (debiased) ``sum r s, sum r^2, sum s^2, tr_x, tr_y``."""

    n: int
    xy: float
    xx: float
    yy: float
    norms: tuple[float, ...] | None = None

    def cka(self, debiased: bool, names: tuple[str, str]) -> float:
        hsic = (self.xy, self.xx, self.yy)
        if debiased:
            nxy, nxx, nyy, tr_x, tr_y = self.norms
            hsic = (
                unbiased_hsic(self.xy, nxy, tr_x, tr_y, self.n),
                unbiased_hsic(self.xx, nxx, tr_x, tr_x, self.n),
                unbiased_hsic(self.yy, nyy, tr_y, tr_y, self.n),
            )
        return cka_ratio(hsic, names, self.n, debiased, scale=(self.xx, self.yy))


def _replicates(tiles: Sequence[np.ndarray], light: dict | None, sides: Sequence[np.ndarray],
                bounds: Sequence[int]) -> list[_Terms]:
    """Each jackknife replicate's terms from the tile numbers (``||R_g||^2`` and ``a_g^T (C -
    C_g) b_g`` of xy, xx, yy) and the light pass's group sums (see the module notes)."""
    groups, n = len(bounds) - 1, bounds[-1]
    total = None if light is None else sum(light["n", g] for g in range(groups))
    out = []
    for g in range(groups):
        kept = n - bounds[g + 1] + bounds[g]
        norms_g = [float(t[1 + g]) for t in tiles]
        if light is None:
            out.append(_Terms(kept, *norms_g))
            continue
        rs, rr, ss, r, s = total - light["n", g]
        cx, cy = sides[0][2, g] / kept**2, sides[1][2, g] / kept**2
        ru, su = 2 / kept * sides[0][:2, g]
        sv, rv = 2 / kept * sides[1][:2, g]
        w_xy, w_xx, w_yy = (4 / kept**2 * t[1 + groups + g] for t in tiles)
        nxy = rs + rv + su + w_xy + cy * r + cx * s - 3 * kept * cx * cy
        nxx = rr + 2 * ru + w_xx + 2 * cx * r - 3 * kept * cx**2
        nyy = ss + 2 * sv + w_yy + 2 * cy * s - 3 * kept * cy**2
        out.append(_Terms(kept, *norms_g, (nxy, nxx, nyy, r - kept * cx, s - kept * cy)))
    return out


def _terms(found: Sequence, n: int, bounds: Sequence[int] | None, debiased: bool,
           permutations: int) -> tuple[_Terms, list[_Terms] | None, list[_Terms] | None]:
    """The terms of the value, of each replicate and of each permutation from what the graphs
    of :func:`cka_cells` computed (tile numbers, [light pass], [null batches])."""
    light = found[1][0] if debiased else None
    value = _Terms(n, *(float(t[0]) for t in found[0]), None if light is None else tuple(
        sum(v for k, v in light.items() if k != "null")))
    reps = None if bounds is None else _replicates(
        found[0], light, found[1][1:] if debiased else (), bounds)
    if not permutations:
        return value, reps, None
    norms = [None] * permutations if light is None else light["null"]
    null = [value._replace(xy=float(c), norms=value.norms and (m, *value.norms[1:]))
            for c, m in zip(np.concatenate(found[-1]), norms, strict=True)]
    return value, reps, null


def _checked(n: int, debiased: Sequence[bool], groups: int | None, permutations: int,
             seed: int) -> tuple[int, ...] | None:
    """The jackknife's group bounds (None without groups), after checking the options."""
    if any(debiased):
        require_samples(n, 4, "debiased CKA")
    for name, value, least in (("permutations", permutations, 0), ("seed", seed, 0)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, not {value!r}")
    if groups is None:
        return None
    if not isinstance(groups, int | np.integer) or isinstance(groups, bool) or groups < 2:
        raise ValueError(f"groups must be an int >= 2 (a jackknife leaves out one group of "
                         f"samples at a time), not {groups!r}")
    return replicate_bounds(n, int(groups), 4 if any(debiased) else 3,
                            "debiased CKA" if any(debiased) else "CKA")


def _tile_widths(features: int, tile: int) -> list[int]:
    """The widths of ``features`` cut into tiles of ``tile`` (the last one the rest)."""
    return [tile] * (features // tile) + ([features % tile] if features % tile else [])


def layout(n: int, widest: int, memory: int, threads: int, split_every: int = 8,
           chunk_rows: int | None = None, aligned: bool = False,
           slots: int | None = None) -> tuple[int, int]:
    """(samples per row chunk, row chunks per task) for tile pairs of at most ``widest``
    features together, within half of the ``memory`` budget of a process that runs
    ``threads`` tasks at once: a task holds its row chunks (counted as float64) and their
    centred copies, ``threads (per_task + 1) rows widest 8 <= memory / 2``. Rows: about 64 MiB
    per chunk at most, ``chunk_rows`` when given; ``aligned``: a multiple of the permutation
    block (at least one block, which the budget then may not hold). A tile pair has at least
    ``slots`` tasks (the tasks that run at once in all; default ``threads``) where n allows.

    Examples
    --------
    >>> layout(1_000_000, 4096, 2**31, 2)  # 2 GiB, two threads: 64 MiB chunks, 7 per task
    (2048, 7)
    >>> layout(1_000_000, 4096, 2**28, 2)  # 256 MiB: 32 MiB chunks, one per task
    (1024, 1)
    >>> layout(4_000, 4096, 2**31, 2)  # few samples: a chunk for each of the two threads
    (2000, 1)
    """
    slots = slots or threads
    rows = chunk_rows or int(max(1, min(n, BLOCK_BYTES // (8 * widest),
                                        memory // (32 * threads * widest), -(-n // slots))))
    if aligned:
        block = permuted.PERMUTATION_BLOCK
        rows = max(block, rows // block * block)
    chunks = -(-n // rows)
    return rows, max(1, min(split_every, memory // (16 * threads * rows * widest) - 1,
                            -(-chunks // slots)))


def cka_cells(
    x: Layer,
    y: Layer,
    debiased: Sequence[bool],
    *,
    groups: int | None = None,
    permutations: int = 0,
    seed: int = 0,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    tile: int = 2048,
    chunk_rows: int | None = None,
    split_every: int = 8,
    budget: int | None = None,
) -> list[Cell]:
    """Exact linear CKA for each flag of ``debiased``, with its jackknife replicates
    (``groups``) and permutation null (``permutations``, ``seed``), from tile products.

    Parameters are :func:`cka_values`', and ``groups`` (int >= 2: the replicates leaving out
    each of that many contiguous groups of samples,
    :func:`~dask_repsim.engine.stream.group_bounds`),
    ``permutations`` (K: the null, layer y's samples permuted within blocks, see the module
    notes), ``seed`` (of the permutations) and ``budget`` (bytes of tile products a pass may
    hold, one copy; default a quarter of the memory budget per thread, see the module's
    notes). Tile pairs are computed in passes whose products fit ``budget``, one after
    another; the tile shrinks (with G and K) so that one pair fits (:func:`inference_shape`),
    and the row chunks so that the tasks' rows fit half of the memory budget (:func:`layout`).
    With G or K, row chunks are rounded down to a multiple of the permutation block (at least
    one block).

    Returns
    -------
    list of Cell
        One per flag: ``value``, ``replicates`` (G floats or None), ``null`` (K floats or None).

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(200, 30)), rng.normal(size=(200, 20))
    >>> (cell,) = cka_cells(as_layer(x), as_layer(y, name="y"), (False,), groups=4, tile=8)
    >>> def cka(a, b):
    ...     a, b = a - a.mean(0), b - b.mean(0)
    ...     return np.sum((a.T @ b) ** 2) / np.linalg.norm(a.T @ a) / np.linalg.norm(b.T @ b)
    >>> keep = np.r_[0:50, 100:200]  # without group 1 (samples 50 to 99)
    >>> len(cell.replicates), bool(np.isclose(cell.replicates[1], cka(x[keep], y[keep])))
    (4, True)
    """
    n, mx, my = pair_means(x, y, means)
    bounds = _checked(n, debiased, groups, permutations, seed)
    memory, threads = memory_budget(), threads_per_process()
    # a pair alone: its tree's partial sums, one per task running and split_every waiting
    one = budget or max(1, memory // (2 * (threads + split_every)))
    limit = budget or max(one, memory // (4 * threads))
    value_tile, null_tile, batch = inference_shape(tile, groups, permutations, one)

    def plan(width: int, count: int, own: bool) -> tuple[tuple[_Tiles, _Tiles], list]:
        widths = [_tile_widths(int(layer.data.shape[1]), width) for layer in (x, y)]
        passes = _passes(_pairs(len(widths[0]), len(widths[1]), own), widths, count, limit)
        widest = max(sum(widths[side][a] for side, a in set(pair.keys))
                     for group in passes for pair in group)
        rows, per_task = layout(n, widest, memory, threads, split_every, chunk_rows,
                                bool(groups or permutations), task_slots())
        return (_Tiles(x, mx, rows, width, per_task), _Tiles(y, my, rows, width, per_task)), passes

    value_tiles, passes = plan(value_tile, groups + 2 if groups else 1, True)
    light = []
    if any(debiased):
        perms = (seed, 0, permutations) if permutations else None
        light = _light_graphs(*value_tiles, _Job(n, bounds, perms), split_every)
    totals, found_light = _frobenius(value_tiles, passes, _Job(n, bounds), split_every, light)
    graphs: list = [totals, *([found_light] if light else [])]
    if permutations:
        null_tiles, passes = plan(null_tile, batch, False)
        graphs.append([
            _frobenius(null_tiles, passes,
                       _Job(n, None, (seed, first, min(batch, permutations - first))),
                       split_every)[0][0]
            for first in range(0, permutations, batch)
        ])
    value, reps, null = _terms(graphs, n, bounds, any(debiased), permutations)
    names = (x.name, y.name)
    return [Cell(value.cka(flag, names),
                 None if reps is None else [t.cka(flag, names) for t in reps],
                 None if null is None else [t.cka(flag, names) for t in null])
            for flag in debiased]


def cka_values(
    x: Layer,
    y: Layer,
    debiased: Sequence[bool],
    *,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    tile: int = 2048,
    chunk_rows: int | None = None,
    split_every: int = 8,
) -> list[float]:
    """Exact linear CKA for each flag of ``debiased``, from one set of tile products.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples.
    debiased
        For each value wanted: use the unbiased HSIC estimator of Song et al. (2012).
    means
        The column means of x and y from :func:`~dask_repsim.engine.columns.checked_columns` (the
        inputs count as checked); None: checked and computed here, one pass over both.
    tile
        Features per tile, at most: it shrinks so that a ``tile x tile`` float64 product fits
        a pass (see the module's notes).
    chunk_rows
        Samples per row chunk. Default (:func:`layout`): at most about 64 MiB of float64 per
        ``chunk_rows x tile`` block, fewer so that the tasks' rows fit half of the memory
        budget, and a chunk for each task that can run at once where the samples allow.
    split_every
        Row chunks per task at most (their products summed inside it; fewer where the memory
        budget or the threads ask for it), and partial sums per task of the tree reduction
        above them.

    Notes
    -----
    ``||X_c^T Y_c||_F^2 = sum_ab ||sum_k X_c[k, a]^T Y_c[k, b]||_F^2`` over feature tiles a of
    x, b of y and row chunks k; likewise ``||X_c^T X_c||_F^2`` over tiles ``a <= b``.
    ``CKA = ||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` (Kornblith et al. 2019).
    The debiased estimator also needs ``sum_i |x_i|^2 |y_i|^2``, one more light pass
    (:func:`dask_repsim.measures.hsic.unbiased_hsic`) over the same blocks.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 50))
    >>> q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    >>> y = as_layer(-2 * x @ q, name="y")
    >>> [round(v, 9) for v in cka_values(as_layer(x), y, (True, False), tile=16)]
    [1.0, 1.0]
    """
    return [cell.value for cell in cka_cells(x, y, debiased, means=means, tile=tile,
                                             chunk_rows=chunk_rows, split_every=split_every)]


def kernel_cells(
    specs: Sequence[dict[str, Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    todo: Positions | None = None,
    *,
    groups: int | None = None,
    permutations: int = 0,
    seed: int = 0,
) -> tuple[Cells, dict[str, Any]]:
    """Linear CKA cells from feature tiles, pair by pair; ``todo``: the (row, column) cells to
    compute (default every one); ``groups``: each cell's jackknife replicates over that many
    sample groups; ``permutations``: its null, the column layer's samples permuted (``seed``),
    as on the co-moment path (:func:`cka_cells`).

    Each layer's column statistics (means for centring, and the input checks) come from one
    pass over all layers.
    """
    wanted = grid_cells(rows, cols, todo)
    used = sorted({rows[i] for i, _ in wanted} | {cols[j] for _, j in wanted})
    stats = dict(zip(used, columns.checked_columns([layers[u] for u in used]), strict=True))
    flags = [spec["debiased"] for spec in specs]
    cells: Cells = {}
    for i, j in wanted:
        a, b = rows[i], cols[j]
        found = cka_cells(layers[a], layers[b], flags, means=(stats[a].mean, stats[b].mean),
                          groups=groups, permutations=permutations, seed=seed)
        for m, cell in enumerate(found):
            cells[m, i, j] = Cell(cell.value, cell.replicates, cell.null, {"method": "tiled"})
    n = stats[used[0]].count
    return cells, {"n_samples": n, "n_samples_omitted": 0}
