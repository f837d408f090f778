"""One co-moment pass over several layers, and the per-pair statistics measures take from it.

:func:`run_pass` is what the public functions and the grid call; it hides how the engine
(:mod:`dask_repsim.statistics`) organises its sums. A :class:`PassResult` hands out, for any
pair of layers the pass covered, the :class:`~dask_repsim.views.Pair` of the full data,
its leave-one-group-out jackknife replicates and its permutation null. What a pair's statistics
are depends only on the two layers, the options and the seed: not on the other layers in the
pass, nor on how many passes a grid needs, nor on the storage chunking or the memory budget.

With ``nan_policy="omit"`` a pair uses exactly the samples finite in both of its layers
(pairwise deletion, :mod:`dask_repsim.omission`), for its value, its replicates and its null.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .exceptions import NonFiniteError, RepsimWarning
from .inputs import Layer
from .moments import Statistics
from .omission import Aside, block_null, pair_statistics
from .parallel import memory_budget
from .permuted import Permuted
from .statistics import SPLIT_EVERY, group_bounds, omission_note, pass_statistics
from .uncertainty import leave_one_out
from .views import Pair, Side, pair, permuted_pairs, sides


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
    #: the pairs (i <= j) the pass serves (``None``: every pair)
    wanted: frozenset[tuple[int, int]] | None = None
    _views: dict = field(default_factory=dict, repr=False)

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
        """The :class:`~dask_repsim.moments.Statistics` of layers ``[a, b]`` (pairwise)."""
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
        bounds = group_bounds(self.n_samples, len(self.parts))
        index, names = self.aside.index, [self.names[a], self.names[b]]
        out = []
        for g, (s, _) in enumerate(self._leave_one_out):
            keep = (index < bounds[g]) | (index >= bounds[g + 1])
            stats = pair_statistics(s, self.aside, a, b, keep)
            out.append(pair(stats, sides(stats, names), 0, 1))
        return out

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
) -> PassResult:
    """One pass over ``layers``: ``groups`` sample groups (jackknife), the cross blocks of
    ``pairs`` (default all), and with ``permute = (a, b, k, seed)`` the null of layers ``a``
    against layers ``b`` under ``k`` permutations.

    ``nan_policy="raise"`` raises :class:`~dask_repsim.exceptions.NonFiniteError` for NaN or
    Inf; ``"omit"`` gives each pair the samples finite in both of its layers and warns which
    layers had how many such samples. ``pairs`` are also the pairs pairwise deletion serves
    (default: every two distinct layers); a layer paired with itself (``(a, a)``) must be
    listed when some sample has NaN or Inf in other layers only. Listing only the pairs needed
    keeps fewer partly finite samples aside.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
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
    limit = memory_budget() // (SPLIT_EVERY + 1)  # a merge's inputs and output stay within it
    result = pass_statistics(
        layers, groups=groups, nan_policy=nan_policy, null=permute, pairs=pairs,
        wanted=sorted(wanted), limit=limit,
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
    return PassResult(
        layers, result.parts, result.total, result.permuted, permute, result.aside, wanted
    )
