"""One co-moment pass over several layers, the per-pair statistics measures take from it, and
which layers each pass of a grid holds when they do not all fit the memory budget together.

:func:`run_pass` is what the public functions and the grid call; it hides how the engine
(:mod:`dask_repsim.engine.stream`) organises its sums. A :class:`PassResult` hands out, for any
pair of layers the pass covered, the :class:`~dask_repsim.engine.views.Pair` of the full data,
its leave-one-group-out jackknife replicates and its permutation null. What a pair's statistics
are depends only on the two layers, the options and the seed: not on the other layers in the
pass, nor on how many passes a grid needs, nor on the storage chunking or the memory budget.

With ``nan_policy="omit"`` a pair uses exactly the samples finite in both of its layers
(pairwise deletion, :mod:`dask_repsim.engine.omission`), for its value, its replicates and its null.
A measure on k folds (:class:`~dask_repsim.measures.predictivity.OnFolds`) has the pass keep its
samples in groups within the folds (:meth:`PassResult.pair_parts`); its folds, jackknife and
null are :mod:`~dask_repsim.paths.covariance.folds`'s. :func:`plan_passes` packs a wide grid's
layers into passes (:mod:`~dask_repsim.paths.covariance.cells` runs them,
:mod:`dask_repsim.planning` costs them).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ...engine.memory import aside_limit
from ...engine.moments import Statistics
from ...engine.omission import Aside, block_null, pair_statistics
from ...engine.permuted import Permuted
from ...engine.stream import group_bounds, omission_note, pass_statistics
from ...engine.uncertainty import leave_one_out
from ...engine.views import Pair, Side, pair, permuted_pairs, sides
from ...exceptions import NonFiniteError, RepsimWarning
from ...io.inputs import Layer


@dataclass(eq=False)
class PassResult:
    """The statistics of one pass over ``layers``.

    ``total``: the statistics of the samples finite in every layer (all samples when none has
    NaN or Inf); a pair's own statistics add the samples finite in both of its layers.
    """

    layers: Sequence[Layer]
    parts: list[Statistics]
    total: Statistics
    permuted: Permuted | None = None
    #: (A layers, B layers, permutations, seed) of the null, if one was computed
    permute: tuple[Sequence[int], Sequence[int], int, int] | None = None
    aside: Aside | None = None
    #: the null of each of the pass's null groups (the folds), when it was kept by group
    permuted_parts: list[Permuted] | None = None
    #: the pairs (i <= j) the pass serves (``None``: every pair)
    wanted: frozenset[tuple[int, int]] | None = None
    #: first sample of each group and the sample count (``None``: ``len(parts)`` near-equal
    #: groups, :func:`~dask_repsim.engine.stream.group_bounds`)
    bounds: tuple[int, ...] | None = None
    _views: dict = field(default_factory=dict, repr=False)

    @property
    def part_bounds(self) -> tuple[int, ...]:
        """First sample of each sample group, and the sample count last."""
        return self.bounds or group_bounds(self.n_samples, len(self.parts))

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def n_samples(self) -> int:
        """Samples in the pass, counting those left out for NaN or Inf."""
        return int(self.layers[0].data.shape[0])

    @cached_property
    def _sides(self) -> list[Side]:
        return sides(self.total, self.names)

    @cached_property
    def _leave_one_out(self) -> list[tuple[Statistics, list[Side]]]:
        return [(s, sides(s, self.names)) for s in leave_one_out(self.parts)]

    def _usable(self, a: int, b: int) -> np.ndarray | None:
        """Mask of the aside rows the pair (a, b) uses, or ``None`` when it uses none."""
        if self.aside is None or not len(self.aside.index):
            return None
        use = self.aside.usable(a, b)
        return use if use.any() else None

    def _check(self, a: int, b: int) -> None:
        if self.wanted is not None and (min(a, b), max(a, b)) not in self.wanted:
            # a layer with itself lost nothing when every omitted sample is bad in it
            if a != b or self.total.omitted != self.total.nonfinite_count[a]:
                raise ValueError(
                    f"the pass did not compute the pair ({self.names[a]}, {self.names[b]})"
                )

    def _view(self, a: int, b: int) -> tuple[Statistics, list[Side], int, int]:
        """(statistics, sides, i, j): the pair is ``pair(statistics, sides, i, j)``."""
        self._check(a, b)
        if (a, b) not in self._views:
            if self._usable(a, b) is None:
                view = (self.total, self._sides, a, b)
            else:
                stats = pair_statistics(self.total, self.aside, a, b)
                view = (stats, sides(stats, [self.names[a], self.names[b]]), 0, 1)
            if view[0].count == 0:
                raise NonFiniteError(
                    f"no samples left for {self.names[a]} and {self.names[b]}: each of the "
                    f"{self.n_samples} samples has NaN or Inf in one of them"
                )
            self._views[(a, b)] = view
        return self._views[(a, b)]

    def count(self, a: int, b: int) -> int:
        """Samples the pair (a, b) was computed from."""
        use = self._usable(a, b)
        return self.total.count + (0 if use is None else int(use.sum()))

    def omitted(self, a: int, b: int) -> int:
        """Samples left out of the pair (a, b) for NaN or Inf (``nan_policy="omit"``)."""
        return self.n_samples - self.count(a, b)

    def statistics(self, a: int, b: int) -> Statistics:
        """The :class:`~dask_repsim.engine.moments.Statistics` of layers ``[a, b]`` (pairwise)."""
        stats, _, i, j = self._view(a, b)
        return stats.select([i, j])

    def pair(self, a: int, b: int) -> Pair:
        """The statistics of layers ``a`` and ``b`` over all samples (finite in both)."""
        return pair(*self._view(a, b))

    def replicates(self, a: int, b: int) -> list[Pair]:
        """The pair's statistics with each group of samples left out (jackknife)."""
        self._view(a, b)
        use = self._usable(a, b)
        if use is None:
            return [pair(s, layer_sides, a, b) for s, layer_sides in self._leave_one_out]
        bounds = self.part_bounds
        index, names = self.aside.index, [self.names[a], self.names[b]]
        out = []
        for g, (s, _) in enumerate(self._leave_one_out):
            keep = (index < bounds[g]) | (index >= bounds[g + 1])
            stats = pair_statistics(s, self.aside, a, b, keep)
            out.append(pair(stats, sides(stats, names), 0, 1))
        return out

    def pair_parts(self, a: int, b: int) -> list[Statistics]:
        """The statistics of layers ``[a, b]`` in each sample group (samples finite in both)."""
        self._view(a, b)
        aside, bounds = self.aside, self.part_bounds
        return [pair_statistics(part, aside, a, b, None if aside is None else
                                (aside.index >= bounds[g]) & (aside.index < bounds[g + 1]))
                for g, part in enumerate(self.parts)]

    def null(self, a: int, b: int) -> list[Pair]:
        """The pair's statistics under each permutation of layer ``b``'s samples."""
        if self.permute is None:
            raise ValueError("this pass computed no permutation null")
        stats, layer_sides, i, j = self._view(a, b)
        layers_a, layers_b, k, seed = self.permute
        ia, jb = list(layers_a).index(a), list(layers_b).index(b)
        if self.aside is None or not (self.aside.blocks or len(self.aside.index)):
            return permuted_pairs(stats, layer_sides, self.permuted, a, b, ia, jb)
        # every permutation block may have been carried aside: then nothing was permuted here
        permuted = None if self.permuted is None else self.permuted.select([ia], [jb])
        if self.aside.blocks:
            extra = block_null(self.aside, a, b, k, seed, self.total.sizes)
            permuted = Permuted.merge(permuted, extra)
        if permuted.count != stats.count:  # the null permutes exactly the pair's samples
            raise AssertionError(f"null over {permuted.count} samples, pair over {stats.count}")
        return permuted_pairs(stats, layer_sides, permuted, i, j, 0, 0)


    def null_parts(self, a: int, b: int) -> list[Permuted | None]:
        """The pair's statistics under each permutation in each of the null's groups (the
        folds of a pass with ``null_groups``), the permutation cells carried aside included
        (each lies in one group: cells are cut at the groups' bounds).

        Examples
        --------
        >>> import warnings
        >>> import numpy as np
        >>> from dask_repsim.io.inputs import as_layer
        >>> x, y = np.random.default_rng(0).normal(size=(2, 90, 3))
        >>> y[5, 0] = np.nan  # carried aside with its permutation cell
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # the warning that a sample was left out
        ...     result = run_pass([as_layer(x), as_layer(y, name="y")], groups=3,
        ...                       permute=([0], [1], 4, 0), null_groups=3, nan_policy="omit")
        >>> [p.count for p in result.null_parts(0, 1)]
        [29, 30, 30]
        """
        if self.permute is None or self.permuted_parts is None:
            raise ValueError("this pass computed no null by fold")
        self._view(a, b)
        layers_a, layers_b, k, seed = self.permute
        ia, jb = list(layers_a).index(a), list(layers_b).index(b)
        parts = [None if p is None else p.select([ia], [jb]) for p in self.permuted_parts]
        if self.aside is not None and self.aside.blocks:
            bounds = group_bounds(self.n_samples, len(parts))
            for g in range(len(parts)):
                extra = block_null(self.aside, a, b, k, seed, self.total.sizes,
                                   span=(bounds[g], bounds[g + 1]))
                parts[g] = Permuted.merge(parts[g], extra)
        return parts


def _aside_error(aside: Aside, limit: int) -> ValueError:
    blocks = (
        f" (and the permutation null {aside.n_block_rows} rows of the blocks holding them)"
        if aside.n_block_rows
        else ""
    )
    return ValueError(
        f"{aside.n_rows} samples have NaN or Inf in some layers but not in others{blocks}; "
        "giving each pair of layers the samples finite in both (nan_policy='omit') keeps them "
        f"aside, which takes more than {limit / 2**20:.0f} MiB of the memory budget. Compare "
        "the layers with NaN or Inf in a separate call, leave those samples out of every layer "
        "before comparing, or raise dask config 'repsim.memory-budget'"
    )


def run_pass(
    layers: Sequence[Layer],
    *,
    groups: int = 1,
    nan_policy: str = "raise",
    permute: tuple[Sequence[int], Sequence[int], int, int] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    null_groups: int = 1,
    bounds: Sequence[int] | None = None,
) -> PassResult:
    """One pass over ``layers``: ``groups`` sample groups (jackknife; those of ``bounds``, the
    first sample of each and the sample count, when given), the cross blocks of ``pairs``
    (default all), and with ``permute = (a, b, k, seed)`` the null of layers ``a`` against
    layers ``b`` under ``k`` permutations; with ``null_groups`` > 1 (k folds, whose bounds the
    groups' must refine) the null of each fold, permuting within it.

    ``nan_policy="raise"`` raises :class:`~dask_repsim.exceptions.NonFiniteError` for NaN or
    Inf; ``"omit"`` gives each pair the samples finite in both of its layers and warns which
    layers had how many such samples. ``pairs`` are also the pairs pairwise deletion serves
    (default: every two distinct layers); a layer paired with itself (``(a, a)``) must be
    listed when some sample has NaN or Inf in other layers only. Listing only the pairs needed
    keeps fewer partly finite samples aside.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> result = run_pass([as_layer(x, name="x"), as_layer(2 * x, name="y")])
    >>> result.pair(0, 1).count
    100
    """
    layers = list(layers)
    if pairs is None:
        wanted = frozenset((i, j) for i in range(len(layers)) for j in range(i + 1, len(layers)))
    else:
        wanted = frozenset((min(int(i), int(j)), max(int(i), int(j))) for i, j in pairs)
    sizes = [int(np.prod(layer.data.shape[1:])) for layer in layers]
    k, cross = (0, 0) if permute is None else (int(permute[2]), sum(
        sizes[i] for i in permute[0]) * sum(sizes[j] for j in permute[1]) * null_groups)
    limit = aside_limit(sum(sizes), groups=groups, permutations=k, cross=cross)
    result = pass_statistics(
        layers, groups=groups, nan_policy=nan_policy, null=permute, pairs=pairs,
        wanted=sorted(wanted), limit=limit, null_groups=null_groups, bounds=bounds,
    )
    if result.aside is not None and result.aside.overflow:
        raise _aside_error(result.aside, limit)
    if result.total.omitted:
        warnings.warn(
            f"left out {result.total.omitted} of {layers[0].data.shape[0]} samples that have "
            "NaN or Inf in some layer (nan_policy='omit'): "
            f"{omission_note([layer.name for layer in layers], result.total)}; each pair of "
            "layers leaves out only the samples where one of its two layers has them",
            RepsimWarning,
            stacklevel=2,
        )
    return PassResult(layers, result.parts, result.total, result.permuted, permute,
                      result.aside, result.permuted_parts, wanted,
                      None if bounds is None else tuple(int(b) for b in bounds))


def _bins(items: list[int], widths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing packing of layers into bins of at most ``capacity`` features."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(items, key=lambda i: -widths[i]):
        for b, free in enumerate(room):
            if widths[i] <= free:
                bins[b].append(i)
                room[b] -= widths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - widths[i])
    return bins


def plan_passes(
    widths: list[int], rows: list[int], cols: list[int], capacity: int
) -> list[list[int]]:
    """Sets of layers, each narrow enough for one pass, that together hold every (row, col) pair.

    One pass when everything fits. Otherwise the row layers and the column layers are packed
    (first-fit decreasing) into bins, and each pass is one row bin with one column bin; when a
    grid compares layers with themselves, bins of half the capacity are paired (i <= j). Of a few
    ways to share the capacity between the sides, the one with the fewest passes is used.

    Examples
    --------
    >>> plan_passes([100, 100, 100], [0, 1, 2], [0, 1, 2], capacity=1000)
    [[0, 1, 2]]
    >>> len(plan_passes([100, 100, 100, 100], [0, 1, 2, 3], [0, 1, 2, 3], capacity=200))
    10
    """
    everything = sorted(set(rows) | set(cols))
    if sum(widths[i] for i in everything) <= capacity:
        return [everything]
    widest = max(widths[r] for r in rows) + max(widths[c] for c in cols)
    if widest > capacity:
        raise ValueError(
            f"two layers together have {widest} features, more than the {capacity} whose "
            "co-moments fit the memory budget; compare them with cka(..., method='gram' or "
            "'tiled') (the sample-space measures do not need the co-moments), reduce their "
            "features first (compare(..., pool='mean') averages conv layers' positions), or "
            "raise dask config 'repsim.memory-budget'"
        )
    best: list[list[int]] | None = None
    if sorted(rows) == sorted(cols) and 2 * max(widths[i] for i in rows) <= capacity:
        bins = _bins(list(rows), widths, capacity // 2)
        best = [sorted(set(a) | set(b)) for k, a in enumerate(bins) for b in bins[k:]]
    widest_row, widest_col = max(widths[r] for r in rows), max(widths[c] for c in cols)
    splits = [int(capacity * s) for s in (0.25, 0.5, 0.75)] + [widest_row, capacity - widest_col]
    for cap_rows in splits:
        cap_cols = capacity - cap_rows
        if cap_rows < widest_row or cap_cols < widest_col:
            continue
        plan = [
            sorted(set(a) | set(b))
            for a in _bins(list(rows), widths, cap_rows)
            for b in _bins(list(cols), widths, cap_cols)
        ]
        if best is None or len(plan) < len(best):
            best = plan
    assert best is not None  # the split at widest_row always fits, as widest <= capacity
    return best
