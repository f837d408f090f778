"""The co-moment pass's memory model: the bytes a pass over P joint features holds in one
process at its peak, which the memory budget bounds.

A pass (:mod:`dask_repsim.engine.stream`) computes one result per row block and merges them
pairwise up a tree (:func:`~dask_repsim.engine.reduction.tree_reduce`). One copy of a result is
the statistics of a range of samples: the P x P float64 co-moment matrix and, with a permutation
null, the K permuted cross blocks (K x A features x B features). With T tasks running at once in
the process (:func:`~dask_repsim.engine.parallel.threads_per_process`), :func:`pass_bytes`
counts:

- :data:`TASK_COPIES` copies per task: a merge's two inputs and the two moved to their joint
  mean, summed in place (a row-block task merging its sub-blocks holds as many);
- :data:`LEVELS` copies the scheduler keeps between tasks, one running result per level of the
  tree;
- with G jackknife groups, two more co-moment matrices per group beyond the first: each group's
  statistics in the running results, and on the client its leave-one-out statistics besides
  the group's own;
- each task's rows in float64: a sub-block of its row block (:func:`sub_block_rows`) or, with
  a permutation null, a permutation block three times (the centred rows and the two sides of
  the permuted products);
- with ``nan_policy="omit"``, the rows carried aside, up to a limit per copy
  (:func:`aside_limit`).

The stored chunks a task reads are not counted (their size is the storage's choice), nor row
blocks' results that wait for a merge because the other threads finish row blocks faster than
merges consume them: row blocks of a few rows of a wide pass, whose products cost less than a
merge (a few hundred rows or more keep them from piling up).

:func:`least_budget` is the least budget that holds a pass (sub-blocks of at least
``max(P, 256)`` rows; with ``nan_policy="omit"`` a quarter of the budget kept for the rows
carried aside), and :func:`max_features` its inverse, the widest pass a budget holds. What the
statistics leave of the budget is shared half and half between larger sub-blocks and the rows
carried aside. The budget is per process, as on the sample-space paths: the tasks running at
once share it.
"""

from __future__ import annotations

from .parallel import memory_budget, threads_per_process
from .permuted import PERMUTATION_BLOCK

__all__ = ["LEVELS", "MIN_SUB_BLOCK_ROWS", "TASK_COPIES", "aside_limit", "least_budget",
           "max_features", "pass_bytes", "sub_block_rows"]

#: Copies of a range's statistics one task holds at its peak: a pairwise merge's two inputs and
#: both moved to their joint mean (the output is summed into one of those).
TASK_COPIES = 4
#: Running results the scheduler keeps between tasks, one per level of the pass's tree
#: (4 levels of 8: up to 4,096 row blocks).
LEVELS = 4
#: Fewest rows a task centres at a time (fewer would spend more on merges than on products).
MIN_SUB_BLOCK_ROWS = 256


def pass_bytes(
    width: int,
    *,
    threads: int | None = None,
    groups: int = 1,
    permutations: int = 0,
    cross: int = 0,
    rows: int | None = None,
    aside: int = 0,
) -> int:
    """Bytes a co-moment pass over ``width`` joint features holds in one process at its peak.

    ``threads``: tasks running at once in the process (default
    :func:`~dask_repsim.engine.parallel.threads_per_process`); ``groups``: jackknife groups;
    ``permutations``: permutations of a null, whose cross blocks have ``cross`` entries each
    (the permuted pairs' A features times their B features); ``rows``: rows of each task's
    sub-block (default the least, ``max(width, 256)``); ``aside``: bytes of rows carried aside
    per copy of the statistics.

    Examples
    --------
    >>> pass_bytes(1000, threads=2) / 2**20  # 12 copies of 7.6 MiB, two sub-blocks of 1000 rows
    106.8115234375
    >>> pass_bytes(1000, threads=2, groups=20) / 2**20
    396.728515625
    """
    threads = threads_per_process() if threads is None else int(threads)
    width = int(width)
    if rows is None:
        rows = max(width, MIN_SUB_BLOCK_ROWS)
    if permutations:
        rows = max(rows, 3 * PERMUTATION_BLOCK)
    copy = 8 * (width * width + int(permutations) * int(cross)) + int(aside)
    statistics = (threads * TASK_COPIES + LEVELS) * copy + 16 * width * width * (groups - 1)
    return statistics + threads * 8 * width * int(rows)


def least_budget(
    width: int, *, groups: int = 1, permutations: int = 0, cross: int = 0, aside: bool = False
) -> int:
    """The least memory budget that holds a pass over ``width`` joint features:
    :func:`pass_bytes` with the least sub-blocks and, with ``aside`` (``nan_policy="omit"``),
    a third more, so that a quarter of the budget is left for the rows carried aside.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"num_workers": 2}):
    ...     least_budget(1000) // 2**20, least_budget(1000, aside=True) // 2**20
    (106, 142)
    """
    need = pass_bytes(width, groups=groups, permutations=permutations, cross=cross)
    return -(-need * 4 // 3) if aside else need


def max_features(*, groups: int = 1, permutations: int = 0, aside: bool = False) -> int:
    """The widest pass (joint features of its layers) that the memory budget holds: the inverse
    of :func:`least_budget`, counting a null's permutation blocks but not its cross blocks (they
    depend on how a grid's layers are split into passes, and are checked per pass).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"repsim.memory-budget": "2 GiB", "num_workers": 2}):
    ...     max_features(), max_features(groups=20), max_features(permutations=100)
    (4378, 2272, 4245)
    """
    budget = memory_budget()

    def fits(width: int) -> bool:
        return least_budget(width, groups=groups, permutations=permutations, aside=aside) <= budget

    low, high = 0, 1
    while fits(high):
        low, high = high, 2 * high
    while high - low > 1:  # least_budget grows with the width
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _spare(width: int, groups: int, permutations: int, cross: int) -> tuple[int, int]:
    """(bytes the budget leaves beyond the statistics and the least sub-blocks, threads)."""
    threads = threads_per_process()
    need = pass_bytes(width, threads=threads, groups=groups, permutations=permutations,
                      cross=cross)
    return max(0, memory_budget() - need), threads


def sub_block_rows(width: int, *, groups: int = 1, permutations: int = 0, cross: int = 0) -> int:
    """Rows each task of a pass centres at a time: the least sub-block, ``max(width, 256)``
    rows, and half of what the budget leaves beyond :func:`pass_bytes`, shared by the tasks.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"repsim.memory-budget": "1 GiB", "num_workers": 2}):
    ...     sub_block_rows(1000), sub_block_rows(4000)
    (31054, 4000)
    """
    spare, threads = _spare(width, groups, permutations, cross)
    least = max(int(width), MIN_SUB_BLOCK_ROWS)
    return least + spare // (2 * threads * 8 * max(1, int(width)))


def aside_limit(width: int, *, groups: int = 1, permutations: int = 0, cross: int = 0) -> int:
    """Bytes of rows a copy of a pass's statistics may carry aside (``nan_policy="omit"``):
    the other half of what the budget leaves beyond :func:`pass_bytes`, over the copies the
    process holds.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"repsim.memory-budget": "1 GiB", "num_workers": 2}):
    ...     aside_limit(1000) // 2**20
    38
    """
    spare, threads = _spare(width, groups, permutations, cross)
    return spare // (2 * (threads * TASK_COPIES + LEVELS))


def check_permutations(permutations: int, need: int, width: int, cross: int,
                       folds: int = 1) -> int:
    """``permutations``, after checking that a pass over ``width`` joint features with that
    many permuted cross blocks of ``cross`` entries (features of the permuted pairs' A side
    times those of their B side, times the ``folds`` a null is kept by), which needs a budget
    of ``need`` bytes, fits the memory budget."""
    budget = memory_budget()
    if need > budget:
        per = f" ({cross // folds} for each of the {folds} folds)" if folds > 1 else ""
        raise ValueError(
            f"permutations={permutations} keeps {permutations} cross matrices of {cross} "
            f"entries{per} in every copy of a pass's statistics: with the co-moments of its "
            f"{width} features, about {need / 2**30:.1f} GiB per process, over the memory budget "
            f"of {budget / 2**30:.1f} GiB; ask for fewer permutations or compare fewer layers "
            "at once (or raise dask config 'repsim.memory-budget')"
        )
    return int(permutations)
