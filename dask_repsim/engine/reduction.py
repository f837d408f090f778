"""The one tree reduction of the package: per-chunk results merged up a Dask tree.

Every pass of the package (the co-moment pass, the column statistics, the tall-skinny QR, the
nearest-neighbour candidates) reduces one result per chunk of rows with a merge function, up a
tree of fan-in :data:`SPLIT_EVERY` built by :func:`tree_reduce`. The tree's shape depends only
on the number of chunks and ``split_every``, so the order in which results merge, and with it
every rounding, is the same whatever the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask
from dask.base import tokenize

#: Results merged per node of the tree: one merge task of up to this many results, or, for a
#: ``pairwise`` reduction, a chain of that many binary merges.
SPLIT_EVERY = 8


def tree_reduce(
    parts: Sequence[Any],
    merge: Callable[..., Any],
    *,
    name: str,
    split_every: int = SPLIT_EVERY,
    args: tuple = (),
    pairwise: bool = False,
):
    """The delayed merge of ``parts`` (delayed per-chunk results, at least one; a single part
    is returned as it is), not yet computed.

    Each node of the tree merges up to ``split_every`` consecutive results of the level below
    with ``merge(*args, *results)``. With ``pairwise``, ``merge`` takes two results and a node
    is the chain ``merge(merge(merge(r1, r2), r3), ...)`` of one task per merge: the same
    arithmetic as a ``merge`` that folds its inputs left to right, while a task holds two
    results rather than ``split_every`` and the scheduler keeps one running result per level
    rather than up to ``split_every - 1`` finished ones.

    Examples
    --------
    >>> import operator
    >>> parts = [dask.delayed(i) for i in range(20)]
    >>> tree_reduce(parts, lambda *xs: sum(xs), name="sum").compute()
    190
    >>> tree_reduce(parts, operator.add, name="add", split_every=3, pairwise=True).compute()
    190
    """
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, not {split_every}")
    parts = list(parts)
    if not parts:
        raise ValueError("a tree reduction needs at least one part")
    token = tokenize(name, merge, split_every, args, pairwise, [p.key for p in parts])
    level = 0
    while len(parts) > 1:
        merged = []
        for i in range(0, len(parts), split_every):
            group = parts[i : i + split_every]
            key = f"{name}-merge-{token}-{level}-{i}"
            if not pairwise:
                merged.append(
                    dask.delayed(merge, pure=True)(*args, *group, dask_key_name=key)
                )
                continue
            out = group[0]
            for j, part in enumerate(group[1:], 1):
                out = dask.delayed(merge, pure=True)(*args, out, part, dask_key_name=f"{key}-{j}")
            merged.append(out)
        parts, level = merged, level + 1
    return parts[0]
