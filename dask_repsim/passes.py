"""One co-moment pass over several layers, and the per-pair statistics measures take from it.

:func:`run_pass` is what the public functions and the grid call; it hides how the engine
(:mod:`dask_repsim.statistics`) organises its sums. A :class:`PassResult` hands out, for any
pair of layers the pass covered, the :class:`~dask_repsim.statistics.Pair` of the full data,
its leave-one-group-out jackknife replicates and its permutation null. What a pair's statistics
are depends only on the two layers, the options and the seed: not on the other layers in the
pass, nor on how many passes a grid needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .inputs import Layer
from .statistics import Pair, Permuted, Statistics, one_pass, pair, permuted_pairs, sides
from .uncertainty import leave_one_out, total


@dataclass
class PassResult:
    """The statistics of one pass over ``layers``."""

    layers: Sequence[Layer]
    parts: list[Statistics]
    permuted: Permuted | None
    permuted_a: Sequence[int]
    permuted_b: Sequence[int]

    def __post_init__(self) -> None:
        self.total = total(self.parts)
        self._sides = sides(self.total, [layer.name for layer in self.layers])

    def count(self, a: int, b: int) -> int:
        """Samples the pair (a, b) was computed from."""
        return self.total.count

    def omitted(self, a: int, b: int) -> int:
        """Samples left out of the pair (a, b) for NaN or Inf (``nan_policy="omit"``)."""
        return self.total.omitted

    def pair(self, a: int, b: int) -> Pair:
        """The statistics of layers ``a`` and ``b`` over all samples."""
        return pair(self.total, self._sides, a, b)

    def replicates(self, a: int, b: int) -> list[Pair]:
        """The pair's statistics with each group of samples left out (jackknife)."""
        names = [layer.name for layer in self.layers]
        return [pair(s, sides(s, names), a, b) for s in leave_one_out(self.parts)]

    def null(self, a: int, b: int) -> list[Pair]:
        """The pair's statistics under each permutation of layer ``b``'s samples."""
        if self.permuted is None:
            raise ValueError("this pass computed no permutation null")
        return permuted_pairs(
            self.total, self._sides, self.permuted, a, b,
            list(self.permuted_a).index(a), list(self.permuted_b).index(b),
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

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> result = run_pass([as_layer(x, name="x"), as_layer(2 * x, name="y")])
    >>> result.pair(0, 1).count
    100
    """
    parts, permuted = one_pass(
        list(layers), groups=groups, nan_policy=nan_policy, null=permute, pairs=pairs
    )
    a, b = (permute[0], permute[1]) if permute else ((), ())
    return PassResult(list(layers), parts, permuted, a, b)
