"""Permutation nulls and jackknife replicates of the output-layer measures (prediction
disagreement, Jensen-Shannon divergence), from their one pass over row blocks.

Both are means over samples of a function of each sample's two rows, ``t = (1/n) sum_i
f(x_i, y_i)``, so everything inference needs is a sum over samples the pass adds up block by
block:

- jackknife: the sums ``S_g`` of ``f(x_i, y_i)`` over each of the G contiguous groups of
  :func:`~dask_repsim.engine.stream.group_bounds`; replicate g is ``(sum_{h != g} S_h) / (n -
  n_g)``, the mean over the samples outside group g, exactly (:func:`leave_one_out_sums`). For
  a mean the bias-corrected centre ``G t - (G - 1) t_.`` equals the estimate ``t``.
- permutations: sample ``perm[i]`` of y paired with sample i of x, ``perm`` the permutations
  of every path (:func:`~dask_repsim.engine.permuted.permutation_series`: within blocks of
  :data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` consecutive samples, seeded by the
  seed and each block's first sample). The permutations stay within blocks, so the pass reads
  row blocks whose boundaries are multiples of the permutation block (:func:`row_blocks`) and
  adds, for each permutation, ``f(x_i, y_perm(i))`` over each block.

Each layer's rows are reduced once per block to what ``f`` needs (disagreement: the predicted
classes; Jensen-Shannon: the softmax distributions and their entropies), and a permutation
pairs the reduced rows anew: a permutation costs ``n`` comparisons for disagreement, ``O(n c)``
for the Jensen-Shannon divergence over c classes (``H(m) - (H(p) + H(q)) / 2``, one logarithm
per entry), besides the one reading of the data. The null and the replicates depend on the
seed, n and G only, not on the storage chunking or the other layers of a grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dask
import numpy as np
from dask.delayed import Delayed

from ...engine import permuted
from ...engine.parallel import compute
from ...engine.reduction import tree_reduce
from ...engine.stream import group_bounds
from ...io.inputs import Layer

#: a measure's row functions: each layer's rows reduced, then each sample's value from the two
Rows = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]
#: a measure's rows for its value and replicates, and for its null
#: (:data:`~dask_repsim.paths.sample_blocks.outputs.ROWS`, ``PERMUTED_ROWS``)
Measure = tuple[Rows, Rows]
#: a row block of a pass: its first sample, x's rows and y's rows
Block = tuple[int, Delayed, Delayed]


def row_blocks(x: Layer, y: Layer, null: tuple[int, int] | None) -> list[Block]:
    """(first sample, x's rows, y's rows) of each row block of a pass, every unit in one block;
    with ``null``, blocks of whole permutation blocks (a multiple of
    :data:`~dask_repsim.engine.permuted.PERMUTATION_BLOCK` samples near the stored chunks'
    size), else the stored chunks of x."""
    a = x.data.rechunk({1: -1})
    if null:
        block = permuted.PERMUTATION_BLOCK
        a = a.rechunk({0: block * max(1, round(max(a.chunks[0]) / block))})
    b = y.data.rechunk({0: a.chunks[0], 1: -1})
    starts = np.cumsum((0, *a.chunks[0][:-1])).tolist()
    return list(zip(starts, a.to_delayed().ravel(), b.to_delayed().ravel(), strict=True))


def group_spans(start: int, stop: int,
                bounds: tuple[int, ...]) -> Iterator[tuple[int, int, int]]:
    """(group, first, stop) of the samples ``start`` to ``stop`` in each group of ``bounds``
    they overlap, as positions among those samples.

    Examples
    --------
    >>> list(group_spans(10, 30, (0, 15, 25, 40)))
    [(0, 0, 5), (1, 5, 15), (2, 15, 20)]
    """
    for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if lo < stop and hi > start:
            yield g, max(lo, start) - start, min(hi, stop) - start


def leave_one_out_sums(parts: np.ndarray) -> np.ndarray:
    """For each group g (``parts``' first axis, at least 2), the sum of the other groups'
    parts: the groups before g plus those after it (no subtraction, no cancellation).

    Examples
    --------
    >>> leave_one_out_sums(np.array([1.0, 2.0, 4.0])).tolist()
    [6.0, 5.0, 3.0]
    """
    if len(parts) < 2:
        raise ValueError("a jackknife needs at least 2 groups")
    before = np.cumsum(parts, axis=0)  # before[g]: parts[: g + 1]
    after = np.cumsum(parts[::-1], axis=0)[::-1]  # after[g]: parts[g:]
    out = np.empty_like(before)
    out[0], out[-1] = after[1], before[-2]
    out[1:-1] = before[:-2] + after[2:]
    return out


def jackknife_bounds(n: int, groups: int | None) -> tuple[int, ...]:
    """The groups' bounds (:func:`~dask_repsim.engine.stream.group_bounds`), or all samples in
    one group without ``groups``."""
    if groups is None:
        return (0, n)
    if groups < 2:
        raise ValueError(f"groups must be at least 2 (a jackknife leaves out one group of "
                         f"samples at a time), not {groups}")
    return group_bounds(n, groups)


def _output_part(rows: Mapping[str, Measure], start: int, a: np.ndarray, b: np.ndarray,
                 bounds: tuple[int, ...], null: tuple[int, int] | None,
                 block: int) -> np.ndarray:
    """Per measure: its sums over the block's samples in each group, then under each
    permutation (measures x (G + count))."""
    stop, groups = start + len(a), len(bounds) - 1
    count, seed = null or (0, 0)
    out = np.zeros((len(rows), groups + count))
    for m, ((reduce, compare), _) in enumerate(rows.values()):
        values = compare(reduce(a), reduce(b))
        for g, lo, hi in group_spans(start, stop, bounds):
            out[m, g] = values[lo:hi].sum()
    if not count:
        return out
    reduced = [(reduce(a), reduce(b), compare) for _, (reduce, compare) in rows.values()]
    for first, end in permuted.permutation_blocks(start, stop, block):
        lo, hi = first - start, end - start
        stream = permuted.permutation_stream(seed, first, end - first)
        for k in range(count):
            perm = next(stream)
            for m, (ra, rb, compare) in enumerate(reduced):
                out[m, groups + k] += compare(ra[lo:hi], rb[lo:hi][perm]).sum()
    return out


def output_inference(x: Layer, y: Layer, rows: Mapping[str, Measure],
                     null: tuple[int, int] | None, groups: int | None) -> dict[str, Any]:
    """The output-layer measures of ``rows`` (name -> :data:`Measure`), with ``null=(count,
    seed)`` their values under ``count`` permutations of y's samples (``"null"``) and with
    ``groups`` their leave-a-group-out values (``"replicates"``), from one pass (see the
    module's text). ``x`` and ``y`` are checked by the caller.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> from dask_repsim.paths.sample_blocks.outputs import ROWS
    >>> a = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 2.0]])
    >>> rows = {"disagreement": (ROWS["disagreement"], ROWS["disagreement"])}
    >>> v = output_inference(as_layer(a), as_layer(a[::-1], name="y"), rows, None, 2)
    >>> v["disagreement"], v["replicates"]["disagreement"]
    (1.0, [1.0, 1.0])
    """
    n = int(x.data.shape[0])
    bounds = jackknife_bounds(n, groups)
    block = permuted.PERMUTATION_BLOCK
    parts = [dask.delayed(_output_part, pure=True)(rows, start, a, b, bounds, null, block)
             for start, a, b in row_blocks(x, y, null)]
    (sums,) = compute(tree_reduce(parts, np.add, name="output-inference", pairwise=True))
    g = len(bounds) - 1
    out: dict[str, Any] = {m: float(sums[i, :g].sum() / n) for i, m in enumerate(rows)}
    if groups:
        kept = n - np.diff(bounds)
        out["replicates"] = {m: (leave_one_out_sums(sums[i, :g]) / kept).tolist()
                             for i, m in enumerate(rows)}
    if null:
        out["null"] = {m: (sums[i, g:] / n).tolist() for i, m in enumerate(rows)}
    return out

