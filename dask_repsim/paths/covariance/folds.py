"""The cross-validated measures' statistics on the co-moment path: their folds, jackknife and
permutation null, from one pass (:class:`~dask_repsim.paths.covariance.passes.PassResult`).

A measure on k folds (:class:`~dask_repsim.measures.predictivity.OnFolds`) is a function of
the statistics of each fold and of its training set, the other folds merged. The pass keeps
its samples in contiguous groups (:func:`~dask_repsim.engine.stream.group_bounds`):

- the value: k groups, the folds (:func:`split`);
- with an interval (ridge's: PLS has none, the registry says why), the jackknife's
  ``groups=`` groups (at least k) within the folds, each fold split into near-equal runs
  (:func:`nested_bounds`), so that a grid's other measures have as many replicates. Replicate
  g is the whole k-fold score without group g: the fold holding g is held out without it (or
  leaves the mean, when it was g alone), and the other folds train without it
  (:func:`split_replicates`). A replicate's training sets are smaller
  than the value's, and a score grows with its training set, so the interval is centred on
  the estimate: it is an interval for the expected score of a k-fold split of this many
  samples, not of the score's limit;
- with a permutation null, the pass keeps the permuted cross statistics of each fold
  (``null_groups=k``), permuting y's samples within the cells of its permutation blocks cut
  at the fold bounds, so that every fold keeps its own samples of each layer: each side's
  statistics of each fold do not change, and the permuted fold and training statistics are
  the fold's permuted cross statistics and the merge of the others' (:func:`split_null`).
  Permuting within folds is a permutation test of the same hypothesis (x and y unrelated,
  samples exchangeable within a block) on a smaller group of permutations.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from ...engine.moments import Statistics, merge_all
from ...engine.permuted import Permuted
from ...engine.stream import group_bounds
from ...engine.uncertainty import leave_one_out
from ...engine.views import Pair, pair, permuted_pairs, sides
from ...exceptions import quietly
from ...measures.predictivity import MIN_FOLD, OnFolds, Split
from ...results import Cell
from .passes import PassResult


def nested_bounds(n: int, k: int, groups: int) -> tuple[int, ...]:
    """First sample of each of ``groups`` contiguous groups within k folds (the folds of
    :func:`~dask_repsim.engine.stream.group_bounds`), and ``n`` last: fold f split into
    ``groups // k`` near-equal runs, one more for the first ``groups % k`` folds.

    Examples
    --------
    >>> nested_bounds(30, 3, 7)
    (0, 3, 7, 10, 15, 20, 25, 30)
    """
    folds = group_bounds(n, k)
    out: list[int] = []
    for f in range(k):
        runs = groups // k + (f < groups % k)
        out += [folds[f] + b for b in group_bounds(folds[f + 1] - folds[f], runs)[:-1]]
    return (*out, n)


def fold_groups(functions: Sequence[Any], options: Any,
                n: int) -> tuple[int, int, tuple[int, ...] | None]:
    """(sample groups, null groups, the groups' bounds or ``None`` for near-equal ones) of the
    passes of ``functions`` over ``n`` samples: without measures on folds, the jackknife's
    groups and one null; with k folds, the folds, or with an interval the jackknife's
    ``groups=`` (at least k), each within a fold (:func:`nested_bounds`); the null kept by
    fold."""
    folds = {f.k for f in functions if isinstance(f, OnFolds)}
    if not folds:
        return options.groups_used, 1, None
    (k,) = folds
    if options.interval is None:
        return k, k, None
    groups = options.get("groups")
    if groups < k:
        raise ValueError(f"interval= of a cross-validated measure leaves out groups of samples "
                         f"within its folds: groups={groups} is fewer than the folds={k}; ask "
                         f"for at least {k} groups")
    if groups > n:
        raise ValueError(f"groups={groups} is more than the {n} samples")
    bounds = nested_bounds(n, k, groups)
    folds = group_bounds(n, k)
    for f in range(k):  # a fold of one group leaves with it; one of more keeps MIN_FOLD
        inner = [b for b in bounds if folds[f] <= b <= folds[f + 1]]
        least = folds[f + 1] - folds[f] - max(np.diff(inner))
        if len(inner) > 2 and least < MIN_FOLD:
            raise ValueError(
                f"interval= of a cross-validated measure leaves each of groups={groups} out "
                f"in turn, within the folds={k}: a held-out fold of {n} samples then keeps "
                f"{least}, fewer than {MIN_FOLD}; use fewer groups= (as few as the folds) or "
                "fewer folds=")
    return groups, k, bounds


def _as_pair(result: PassResult, a: int, b: int, stats: Statistics) -> Pair:
    return pair(stats, sides(stats, [result.names[a], result.names[b]]), 0, 1)


def _fold_statistics(result: PassResult, parts: Sequence[Statistics], k: int,
                     drop: int | None = None) -> list[Statistics]:
    """The statistics of each of the k folds (:func:`~dask_repsim.engine.stream.group_bounds`),
    merged from the pass's groups within it, without group ``drop``: a fold that was group
    ``drop`` alone is left out (its replicate is the score of the other folds)."""
    fold_of = np.searchsorted(group_bounds(result.n_samples, k), result.part_bounds[:-1],
                              side="right") - 1
    kept = [[p for g, p in enumerate(parts) if fold_of[g] == f and g != drop] for f in range(k)]
    return [merge_all(*fold) for fold in kept if fold]


def split(result: PassResult, a: int, b: int, k: int, drop: int | None = None) -> Split:
    """(training, held-out) statistics of the pair (a, b) for each fold of its k-fold split,
    without group ``drop`` when given (a jackknife replicate of the split)."""
    folds = _fold_statistics(result, result.pair_parts(a, b), k, drop)
    return [(_as_pair(result, a, b, train), _as_pair(result, a, b, test))
            for train, test in zip(leave_one_out(folds), folds, strict=True)]


def split_replicates(result: PassResult, a: int, b: int, k: int) -> list[tuple[Pair, Split]]:
    """(pair, split) of the pair (a, b) with each of the pass's groups left out in turn."""
    rest = leave_one_out(result.pair_parts(a, b))
    return [(_as_pair(result, a, b, s), split(result, a, b, k, drop=g))
            for g, s in enumerate(rest)]


def _permuted(result: PassResult, a: int, b: int, stats: Statistics,
              null: Permuted) -> list[Pair]:
    """The pair of ``stats`` (layers ``[a, b]``) under each permutation of ``null``."""
    if null.count != stats.count:  # the null permutes exactly these samples
        raise AssertionError(f"null over {null.count} samples, pair over {stats.count}")
    return permuted_pairs(stats, sides(stats, [result.names[a], result.names[b]]), null,
                          0, 1, 0, 0)


def _merged(nulls: Sequence[Permuted], but: int | None = None) -> Permuted:
    out = None
    for h, null in enumerate(nulls):
        out = out if h == but else Permuted.merge(out, null)
    return out


def split_null(result: PassResult, a: int, b: int, k: int) -> list[tuple[Pair, Split]]:
    """(pair, split) of the pair (a, b) under each permutation of layer b's samples within
    the folds (a pass that kept its null by fold, ``null_groups=k``)."""
    nulls = result.null_parts(a, b)
    folds = _fold_statistics(result, result.pair_parts(a, b), k)
    each = [zip(_permuted(result, a, b, train, _merged(nulls, f)),
                _permuted(result, a, b, test, nulls[f]), strict=True)
            for f, (train, test) in enumerate(zip(leave_one_out(folds), folds, strict=True))]
    totals = _permuted(result, a, b, merge_all(*folds), _merged(nulls))
    return [(t, list(s)) for t, s in zip(totals, zip(*each, strict=True), strict=True)]


def _on_split(function: OnFolds, item: tuple[Pair, Split]) -> float:
    return function(*item)


def fold_cells(functions: Sequence[OnFolds], result: PassResult, a: int, b: int,
               options: Any, permutations: int) -> list[Cell]:
    """The cells of the measures on folds of the pair (a, b): the value of the k-fold split,
    and where asked its jackknife replicates and null."""
    k = functions[0].k
    value, folds = result.pair(a, b), split(result, a, b, k)
    reps = split_replicates(result, a, b, k) if options.interval else None
    null = split_null(result, a, b, k) if permutations else None
    return [Cell(f(value, folds), quietly(partial(_on_split, f), reps),
                 quietly(partial(_on_split, f), null)) for f in functions]
