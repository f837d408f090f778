"""Uncertainty from the same pass: jackknife intervals and permutation tests.

Jackknife intervals
-------------------

The pass keeps the statistics of G contiguous ranges of samples instead of only their total
(:func:`~dask_repsim.engine.stream.grouped_comoments`). Leaving group g out is the merge of the
groups before it with those after it (prefix and suffix merges, so no subtraction and no loss
of precision); each measure is recomputed from each of the G small replicates on the client.

With the full-data estimate ``t`` and replicates ``t_(g)`` (mean ``t_.``)::

    stderr = sqrt((G - 1) / G * sum_g (t_(g) - t_.)^2)
    centre = G t - (G - 1) t_.   (the bias-corrected estimate)
    interval = centre -/+ q * stderr,  q the (1 + level) / 2 quantile of Student's t, G - 1 dof

(Quenouille 1956; Tukey 1958; Efron & Stein 1981; computed in
:func:`dask_repsim.results.jackknife_interval`). Groups must be exchangeable: if the samples
are stored in a meaningful order (by class, by time), contiguous groups are not a random split
and the interval is too wide or too narrow; shuffle the storage order first.

Permutation tests
-----------------
Under "x and y are unrelated", pairing sample i of x with any sample of y is as likely as
with sample i. The pass also computes the cross statistics of x against K random row
permutations of y (:class:`~dask_repsim.engine.permuted.Permuted`; the marginal statistics of each
side do not change under permutation), and each measure is recomputed from each permuted cross
block. The p-value is ``(1 + #{null >= observed}) / (K + 1)`` (Phipson & Smyth 2010), exact for
any K when the assumption below holds.

Samples are permuted within blocks of
:data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` consecutive samples, so the test assumes that
samples are exchangeable within blocks of that many consecutive samples: under the null, any order
of the samples in a block is as likely as the stored one. That holds when the stored order is random
or unrelated to the activations. When samples are stored in a meaningful order (by class, by time,
consecutive crops of one image), the within-block null is too narrow; write the data in a shuffled
order first (e.g. ``ds.isel(sample=np.random.default_rng(0).permutation(n))`` then ``to_zarr``). The
blocks do not depend on the storage chunking, and the permutations only on ``seed`` and each block's
first sample (:func:`~dask_repsim.engine.permuted.block_permutations`), so a pair's null is the same
in any pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .moments import Statistics, merge_all

#: what groups hold: co-moment statistics, or another path's mergeable factor
Part = TypeVar("Part")


def leave_one_out(parts: Sequence[Part],
                  merge: Callable[[Any, Any], Any] = Statistics.merge) -> list[Part]:
    """The statistics of all groups but one, for each group, by prefix and suffix merges
    (``merge`` of two groups' statistics: co-moments by default; the QR path's R factors).

    Replicate g merges the groups before it (a prefix) with those after it (a suffix). The
    replicates are made from the last down, each prefix dropped once used and only the current
    suffix kept: about G copies held at once besides the groups, not 3 G; about 3 G merges.
    """
    if len(parts) < 2:
        raise ValueError("a jackknife needs at least 2 groups")
    prefix: list[Part | None] = [parts[0]]  # prefix[i]: parts[: i + 1] merged
    for part in parts[1:-1]:
        prefix.append(merge(prefix[-1], part))
    out: list[Part] = [parts[0]] * len(parts)
    out[-1] = prefix[-1]
    suffix = parts[-1]  # parts[g + 1 :] merged, for g from the last replicate down
    for g in range(len(parts) - 2, 0, -1):
        out[g] = merge(prefix[g - 1], suffix)
        prefix[g - 1] = None
        suffix = merge(parts[g], suffix)
    out[0] = suffix
    return out


def total(parts: Sequence[Statistics]) -> Statistics:
    """The statistics of all groups together."""
    return merge_all(*parts)
