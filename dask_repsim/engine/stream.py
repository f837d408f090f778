"""The statistics engine: one streaming pass over the samples, float64 sufficient statistics.

Every row block of all layers together gives :class:`~dask_repsim.engine.moments.Statistics` (one
per sample group it overlaps), and with a permutation null the
:class:`~dask_repsim.engine.permuted.Permuted` cross statistics of its permutation blocks; blocks
merge pairwise up a Dask tree (:func:`row_block_reduction`,
:func:`~dask_repsim.engine.reduction.tree_reduce`). Every stored chunk of every array is read
once, and a task centres a sub-block of joint rows at a time (one permutation block,
:data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` samples, for the null): as many rows as
the memory budget leaves it (:func:`~dask_repsim.engine.memory.sub_block_rows`), at most
:data:`SUB_BLOCK_BYTES`. What a pass holds is :mod:`dask_repsim.engine.memory`'s model.

Rows with NaN or Inf are left out of the statistics; with ``nan_policy="raise"`` the pass then
raises :class:`~dask_repsim.exceptions.NonFiniteError` naming the first one. For pairwise deletion
(:mod:`dask_repsim.paths.covariance.passes`) the pass also carries aside the rows finite in some
layers but not in others (:class:`~dask_repsim.engine.omission.Aside`). :func:`one_pass` is the
lower-level interface that leaves such rows out of every layer (listwise deletion).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from ..exceptions import NonFiniteError, RepsimWarning, SampleCountError
from ..io.inputs import Layer
from ..io.validation import check_sample_counts, first_nonfinite
from . import permuted as _permuted
from .memory import MIN_SUB_BLOCK_ROWS, sub_block_rows
from .moments import Centred, Statistics, joint_rows, merge_all
from .omission import Aside, useful_rows
from .parallel import compute
from .permuted import Permuted, merge_null, permutation_cells
from .reduction import SPLIT_EVERY, tree_reduce

#: Most bytes of float64 joint rows a task centres at a time, whatever the budget leaves it: a
#: stored chunk of many rows of a wide grid is taken in sub-blocks (merged with the pairwise
#: update), so a task's memory is bounded by the grid's width, not by the storage chunking.
#: Each sub-block costs one merge of the P x P statistics, so they are as large as allowed.
SUB_BLOCK_BYTES = 512 * 2**20


@dataclass(frozen=True)
class PassPlan:
    """What every task of a pass computes (an argument of the chunk function)."""

    #: first sample of each sample group, and the number of samples last
    bounds: tuple[int, ...]
    #: the layer pairs whose cross blocks are computed (``None``: all)
    pairs: tuple[tuple[int, int], ...] | None = None
    #: the layer pairs a pairwise deletion serves (``None``: listwise deletion, nothing aside)
    wanted: tuple[tuple[int, int], ...] | None = None
    #: (A layers, B layers, permutations, seed, block) of the permutation null, or ``None``
    null: tuple[tuple[int, ...], tuple[int, ...], int, int, int] | None = None
    #: bounds of the groups the null is kept by, permuted within each (``None``: one null)
    null_bounds: tuple[int, ...] | None = None
    #: bytes the rows carried aside may take
    limit: int = 0
    #: rows a task centres at a time
    sub_block: int = MIN_SUB_BLOCK_ROWS

    @property
    def null_pairs(self) -> list[tuple[int, int]]:
        """The (A layer, B layer) pairs of the null that pairwise deletion serves."""
        a, b = self.null[0], self.null[1]
        wanted = set(self.wanted or ())
        return [(i, j) for i in a for j in b if (min(i, j), max(i, j)) in wanted]


class Partial(dict):
    """What a task returns: ``{group: Statistics}`` for the sample groups its rows fall in, with
    the rows it carried aside (``.aside``) and its permuted statistics (``.permuted``)."""

    def __init__(
        self,
        groups: dict[int, Statistics],
        aside: Aside | None = None,
        permuted: Permuted | dict[int, Permuted] | None = None,
    ) -> None:
        super().__init__(groups)
        self.aside, self.permuted = aside, permuted

    @property
    def groups(self) -> dict[int, Statistics]:
        return dict(self)

    @staticmethod
    def merge(*parts: Partial) -> Partial:
        groups: dict[int, Statistics] = {}
        aside, permuted = parts[0].aside, None
        for i, part in enumerate(parts):
            for group, stats in part.items():
                groups[group] = Statistics.merge(groups[group], stats) if group in groups else stats
            if i and aside is not None:
                aside = Aside.merge(aside, part.aside)
            permuted = merge_null(permuted, part.permuted)
        return Partial(groups, aside, permuted)


def group_bounds(n: int, groups: int) -> tuple[int, ...]:
    """First sample of each of ``groups`` contiguous, near-equal groups, and ``n`` last.

    Examples
    --------
    >>> group_bounds(100, 3)
    (0, 33, 67, 100)
    """
    if groups > n:
        raise ValueError(f"groups={groups} is more than the {n} samples: a jackknife group "
                         "needs at least one sample")
    if groups < 1:
        raise ValueError(f"groups must be at least 1, not {groups}")
    return tuple(int(b) for b in np.linspace(0, n, groups + 1).round())


def replicate_bounds(n: int, groups: int, need: int, what: str) -> tuple[int, ...]:
    """The bounds of ``groups`` groups of ``n`` samples (:func:`group_bounds`), or a
    :class:`~dask_repsim.SampleCountError` when leaving the largest group out keeps fewer
    than ``need`` samples, for ``what`` (the replicates' measure). More groups are smaller
    ones: the error names the fewest groups that keep enough, or the samples needed.

    Examples
    --------
    >>> replicate_bounds(10, 3, 3, "cka")
    (0, 3, 7, 10)
    >>> replicate_bounds(6, 2, 4, "debiased CKA")
    Traceback (most recent call last):
    ...
    dask_repsim.exceptions.SampleCountError: groups=2 of 6 samples leaves 3 samples when a \
group is left out; the jackknife replicates of debiased CKA need at least 4: give groups=3 or \
more
    """
    bounds = group_bounds(n, int(groups))
    left = n - int(np.diff(bounds).max())
    if left >= need:
        return bounds
    enough = next((g for g in range(int(groups) + 1, n + 1)
                   if n - int(np.diff(group_bounds(n, g)).max()) >= need), None)
    fix = f"give groups={enough} or more" if enough else \
        f"a jackknife of it needs at least {need + 1} samples"
    raise SampleCountError(
        f"groups={groups} of {n} samples leaves {left} sample{'s' if left != 1 else ''} when a "
        f"group is left out; the jackknife replicates of {what} need at least {need}: {fix}")


def _sub_block(
    piece: list[np.ndarray], offset: int, plan: PassPlan, aside: Aside | None
) -> tuple[Statistics, Aside | None]:
    """Statistics of one sub-block of rows, and the aside rows with its own added."""
    c = Centred.of(piece, offset, aside=aside is not None)
    stats = Statistics.from_centred(c, plan.pairs)
    if aside is not None and len(c.aside_index):
        aside = Aside.merge(aside, Aside.of(c, plan.wanted, plan.limit))
    return stats, aside


def _group_statistics(
    offset: int, plan: PassPlan, blocks: Sequence[np.ndarray]
) -> tuple[dict[int, Statistics], Aside | None]:
    """Statistics of one row block per sample group it overlaps, and its aside rows.

    The block is taken in equal sub-blocks of at most ``plan.sub_block`` rows, each merged into
    the group's running statistics as soon as it is computed.
    """
    sizes = [int(np.prod(b.shape[1:])) for b in blocks]
    aside = None if plan.wanted is None else Aside.empty(sizes, plan.limit)
    rows = blocks[0].shape[0]
    step = -(-rows // max(1, -(-rows // plan.sub_block)))
    bounds, out = plan.bounds, {}
    start, stop_all = offset, offset + rows
    group = int(np.searchsorted(bounds, offset, side="right")) - 1
    while start < stop_all:
        stop = min(int(bounds[group + 1]), stop_all)
        for sub in range(start, stop, step):
            piece = [b[sub - offset : min(sub + step, stop) - offset] for b in blocks]
            stats, aside = _sub_block(piece, sub, plan, aside)
            out[group] = Statistics.merge(out[group], stats) if group in out else stats
        start, group = stop, group + 1
    return out, aside


def _null_statistics(
    offset: int, plan: PassPlan, blocks: Sequence[np.ndarray], aside: Aside | None
) -> tuple[Permuted | None, Aside | None]:
    """Permuted statistics of a row block, one permutation block at a time.

    A block with rows that some pair of the null keeps but other layers do not is carried
    aside whole (pairwise deletion): its null is computed per pair on the client.
    """
    a, b, k, seed, size = plan.null
    null_pairs = plan.null_pairs if aside is not None else []
    permuted = None if plan.null_bounds is None else {}
    for first, stop, group in permutation_cells(offset, offset + blocks[0].shape[0], size,
                                                plan.null_bounds):
        piece = [x[first - offset : stop - offset] for x in blocks]
        c = Centred.of(piece, first, aside=aside is not None)
        if len(c.aside_index) and useful_rows(c.aside_finite, null_pairs).any():
            aside = aside.with_block(first, joint_rows(piece))
            continue
        perms = _permuted.block_permutations(seed, first, stop - first, k)
        if c.kept is not None:
            perms = _permuted.restrict_permutations(perms, c.kept)
        cell = Permuted.from_centred(c, a, b, perms)
        permuted = merge_null(permuted, {group: cell} if plan.null_bounds else cell)
    return permuted, aside


def chunk_statistics(offset: int, plan: PassPlan, *blocks: np.ndarray) -> Partial:
    """What one row block (rows ``offset``, ... of every layer) contributes to a pass."""
    groups, aside = _group_statistics(offset, plan, blocks)
    if plan.null is None:
        return Partial(groups, aside)
    permuted, aside = _null_statistics(offset, plan, blocks, aside)
    return Partial(groups, aside, permuted)


def row_chunks(arrays: Sequence[da.Array], align: int | None = None) -> tuple[int, ...]:
    """Row chunks that refine every array's own: each stored chunk is then read exactly once.

    With ``align``, every boundary is moved up to a multiple of ``align`` (or the end), so that
    row blocks are unions of whole blocks of ``align`` samples.

    Examples
    --------
    >>> import dask.array as da
    >>> x, y = da.zeros((10, 2), chunks=4), da.zeros((10, 3), chunks=5)
    >>> row_chunks([x, y]), row_chunks([x, y], align=3)
    ((4, 1, 3, 2), (6, 3, 1))
    """
    bounds = set()
    for a in arrays:
        bounds.update(np.cumsum((0,) + a.chunks[0]).tolist())
    if align:
        n = arrays[0].shape[0]
        bounds = {min(n, -(-int(b) // align) * align) for b in bounds}
    return tuple(int(b) for b in np.diff(sorted(bounds)))


def row_block_reduction(
    layers: Sequence[Layer],
    chunk: Callable[..., Any],
    merge: Callable[..., Any],
    *,
    name: str,
    split_every: int = SPLIT_EVERY,
    args: tuple = (),
    align: int | None = None,
    pairwise: bool = False,
):
    """A Dask tree reduction over row blocks of all layers together, not yet computed.

    ``chunk(offset, *args, *blocks)`` runs once per row block (``blocks``: that block of every
    layer, full width) and the results merge up :func:`~dask_repsim.engine.reduction.tree_reduce`
    (``merge``, ``split_every`` and ``pairwise`` as there). Every chunk of every array is read
    once: the arrays are re-chunked (a graph operation, no extra read) to the common refinement
    of their row chunks (:func:`row_chunks`) and to full width.
    """
    check_sample_counts([layer.name for layer in layers], [layer.data.shape[0] for layer in layers])
    rows = row_chunks([layer.data for layer in layers], align)
    blocks = [
        layer.data.rechunk({0: rows, 1: -1}).to_delayed(optimize_graph=False)[:, 0]
        for layer in layers
    ]
    token = tokenize(*(layer.data.name for layer in layers), name, args, rows)
    offsets = np.cumsum((0,) + rows)[:-1]
    parts = [
        dask.delayed(chunk, pure=True)(
            int(off), *args, *(b[i] for b in blocks), dask_key_name=f"{name}-chunk-{token}-{i}"
        )
        for i, off in enumerate(offsets)
    ]
    return tree_reduce(parts, merge, name=name, split_every=split_every, pairwise=pairwise)


def statistics_graph(
    layers: Sequence[Layer],
    *,
    split_every: int = SPLIT_EVERY,
    groups: int = 1,
    null: tuple | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    wanted: Sequence[tuple[int, int]] | None = None,
    limit: int = 0,
    null_groups: int = 1,
    bounds: Sequence[int] | None = None,
):
    """The tree reduction giving a pass's :class:`Partial`, not yet computed.

    Its groups are ``groups`` contiguous, near-equal ranges of samples (independent of the
    chunking), or those of ``bounds`` (first sample of each, the sample count last); one group
    is the plain total. With ``null = (a, b, k, seed)`` it also holds the
    :class:`~dask_repsim.engine.permuted.Permuted` statistics of layers ``a`` against layers ``b``
    under ``k`` permutations within blocks of ``PERMUTATION_BLOCK`` samples. ``pairs`` limits
    the cross blocks computed to those layer pairs; ``wanted`` (pairwise deletion) are the
    pairs whose partly finite rows are carried aside, up to ``limit`` bytes. ``null_groups``
    > 1: the null of each of that many groups (:func:`group_bounds`), each permuted within
    itself (a permutation cell carried aside lies in one group).
    """
    n = layers[0].data.shape[0]
    sizes = [int(np.prod(layer.data.shape[1:])) for layer in layers]
    block, permutations, cross = None, 0, 0
    if null is not None:
        block = int(_permuted.PERMUTATION_BLOCK)
        null = (tuple(null[0]), tuple(null[1]), int(null[2]), int(null[3]), block)
        permutations = null[2]
        cross = sum(sizes[i] for i in null[0]) * sum(sizes[j] for j in null[1]) * null_groups
    if null_groups > 1 and null is None:
        raise ValueError("a null kept by sample group needs a null")
    rows = sub_block_rows(sum(sizes), groups=groups, permutations=permutations, cross=cross)
    plan = PassPlan(
        bounds=tuple(int(b) for b in bounds) if bounds is not None else group_bounds(n, groups),
        pairs=None if pairs is None else tuple(sorted({tuple(map(int, p)) for p in pairs})),
        wanted=None if wanted is None else tuple(sorted({tuple(map(int, p)) for p in wanted})),
        null=null,
        null_bounds=group_bounds(n, null_groups) if null_groups > 1 else None,
        limit=int(limit),
        sub_block=max(MIN_SUB_BLOCK_ROWS, min(rows, SUB_BLOCK_BYTES // (8 * max(1, sum(sizes))))),
    )
    return row_block_reduction(
        layers, chunk_statistics, Partial.merge, name="repsim", split_every=split_every,
        args=(plan,), align=block, pairwise=True,
    )


@dataclass
class PassStatistics:
    """A computed pass: statistics per sample group and in total, permuted, aside rows."""

    parts: list[Statistics]
    total: Statistics
    permuted: Permuted | None
    aside: Aside | None
    #: the null of each of the ``null_groups`` groups, when it was kept by group
    permuted_parts: list[Permuted] | None = None


def pass_statistics(
    layers: Sequence[Layer],
    *,
    groups: int = 1,
    nan_policy: str = "raise",
    null: tuple[Sequence[int], Sequence[int], int, int] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    wanted: Sequence[tuple[int, int]] | None = None,
    limit: int = 0,
    split_every: int = SPLIT_EVERY,
    null_groups: int = 1,
    bounds: Sequence[int] | None = None,
) -> PassStatistics:
    """Compute a pass (:func:`statistics_graph`) on the active Dask scheduler.

    With ``nan_policy="raise"``, NaN or Inf anywhere raises
    :class:`~dask_repsim.exceptions.NonFiniteError` naming the layer and its first bad sample.
    """
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', not {nan_policy!r}")
    graph = statistics_graph(
        layers, split_every=split_every, groups=groups, null=null, pairs=pairs,
        wanted=wanted if nan_policy == "omit" else None, limit=limit, null_groups=null_groups,
        bounds=bounds,
    )
    (partial,) = compute(graph)
    parts = [partial[g] for g in sorted(partial)]
    total = merge_all(*parts)
    if nan_policy == "raise":
        names = [layer.name for layer in layers]
        error = first_nonfinite(names, total.first_nonfinite, total.nonfinite_is_nan)
        if error is not None:
            raise error
    by_group, permuted = None, partial.permuted
    if null is not None and null_groups > 1:  # a group whose cells all went aside has none
        found = partial.permuted if isinstance(partial.permuted, dict) else {}
        by_group = [found.get(g) for g in range(null_groups)]
        permuted = reduce(Permuted.merge, by_group)
    return PassStatistics(parts, total, permuted, partial.aside, by_group)


def omission_note(names: Sequence[str], stats: Statistics) -> str:
    """Which layers have NaN or Inf at how many samples, e.g. ``"x at 2 samples, z at 5"``."""
    counts = [(name, int(c)) for name, c in zip(names, stats.nonfinite_count, strict=True) if c]
    return ", ".join(
        f"{name} at {c} sample{'s' if c != 1 else ''}" if i == 0 else f"{name} at {c}"
        for i, (name, c) in enumerate(counts)
    )


def one_pass(
    layers: Sequence[Layer],
    *,
    groups: int = 1,
    nan_policy: str = "raise",
    null: tuple[Sequence[int], Sequence[int], int, int] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    split_every: int = SPLIT_EVERY,
) -> tuple[list[Statistics], Permuted | None]:
    """Group statistics and, with ``null = (a, b, k, seed)``, a permutation null, in one pass.

    Returns the :class:`Statistics` of ``groups`` contiguous ranges of samples and the
    :class:`Permuted` cross statistics of layers ``a`` against layers ``b`` (indices into
    ``layers``) under ``k`` random permutations within blocks (``None`` without ``null``).
    ``pairs``: only these layer pairs' cross blocks are computed (default: all).
    ``nan_policy="omit"`` leaves a sample with NaN or Inf in any layer out of every layer
    (listwise; :func:`dask_repsim.paths.covariance.passes.run_pass` gives each pair its own
    samples).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> layers = [as_layer(rng.normal(size=(60, 3)), name="x"), as_layer(rng.normal(size=(60, 2)))]
    >>> parts, permuted = one_pass(layers, groups=3, null=([0], [1], 4, 0))
    >>> [s.count for s in parts], permuted.cross.shape
    ([20, 20, 20], (4, 3, 2))
    """
    result = pass_statistics(
        layers, groups=groups, nan_policy=nan_policy, null=null, pairs=pairs,
        split_every=split_every,
    )
    stats = result.total
    if stats.count == 0:
        raise NonFiniteError(f"no samples left: all {stats.omitted} have NaN or Inf")
    if stats.omitted:
        note = omission_note([layer.name for layer in layers], stats)
        warnings.warn(
            f"left out {stats.omitted} of {stats.count + stats.omitted} samples that have NaN or "
            f"Inf in some input (nan_policy='omit'): {note}",
            RepsimWarning,
            stacklevel=4,
        )
    return result.parts, result.permuted


def comoments(
    layers: Sequence[Layer], *, nan_policy: str = "raise", split_every: int = SPLIT_EVERY
) -> Statistics:
    """Compute the :class:`Statistics` of ``layers`` in one pass (on the active Dask scheduler).

    ``nan_policy="raise"`` raises :class:`~dask_repsim.exceptions.NonFiniteError` naming the
    first sample with NaN or Inf; ``"omit"`` leaves such samples out of every layer and reports
    how many in ``.omitted``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> s = comoments([as_layer(x)])
    >>> s.count, np.allclose(s.comoment, np.cov(x.T) * 99)
    (100, True)
    """
    return grouped_comoments(layers, groups=1, nan_policy=nan_policy, split_every=split_every)[0]


def grouped_comoments(
    layers: Sequence[Layer],
    *,
    groups: int,
    nan_policy: str = "raise",
    split_every: int = SPLIT_EVERY,
) -> list[Statistics]:
    """The :class:`Statistics` of ``groups`` contiguous ranges of samples, from one pass.

    Merging them gives :func:`comoments`' total; leaving one out gives jackknife replicates.
    NaN/Inf are handled as in :func:`comoments`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> [s.count for s in grouped_comoments([as_layer(x)], groups=3)]
    [33, 34, 33]
    """
    return one_pass(layers, groups=groups, nan_policy=nan_policy, split_every=split_every)[0]
