"""Row-block tiles of sample x sample matrices, sized from the memory budget.

The sample-space measures (:mod:`dask_repsim.paths.sample_blocks.rsa`,
:mod:`dask_repsim.paths.sample_blocks.neighbours`) need, for
every pair of samples, a number computed from the two samples' activations (a dissimilarity, a
cosine similarity). Nothing n x n is held: the samples are cut into row blocks of ``b`` rows and
each pair of blocks ``I <= J`` is one Dask task, holding the four row blocks (x and y, rows of I
and of J, in float64) and a few ``b x b`` float64 matrices, and returning a small summary.

:func:`block_rows` chooses ``b`` so that the tasks running at once stay within
:func:`~dask_repsim.engine.parallel.memory_budget`: each of them may use the budget divided by
twice the
number of tasks the scheduler runs at once (the other half is left for the row blocks the
scheduler holds and for the rest of the process). :func:`row_statistics` is a pass over the rows
(cost ``n p``) giving each sample's mean over its features and the norm of its activations
(about that mean, or raw), with which the tasks normalise their rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...engine.columns import row_blocks
from ...engine.parallel import compute, memory_budget, threads_per_process
from ...exceptions import InputError
from ...io.inputs import Layer
from ...io.validation import constant_units

#: Fewest and most samples per row block.
MIN_BLOCK_ROWS, MAX_BLOCK_ROWS = 64, 4096


def concurrent_tasks() -> int:
    """How many tasks may run at once in one process
    (:func:`~dask_repsim.engine.parallel.threads_per_process`: the threaded scheduler's workers, or
    a distributed worker's threads)."""
    return threads_per_process()


def block_rows(n: int, width: int, matrices: int) -> int:
    """Samples per row block for a task holding ``matrices`` float64 ``b x b`` matrices and four
    row blocks of ``width / 2`` features on average (``width``: the two layers' features).

    ``8 (matrices b^2 + 2 b width) <= memory_budget() / (2 * concurrent_tasks())``, between
    :data:`MIN_BLOCK_ROWS` and :data:`MAX_BLOCK_ROWS`, and at most ``ceil(n / 4)`` (at least ten
    tasks to spread over the threads) when that is above the minimum.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set({"repsim.memory-budget": "2GB", "num_workers": 2,
    ...                       "scheduler": "threads"}):
    ...     block_rows(50_000, 1024, 6), block_rows(1_000, 1024, 6)
    (3061, 250)
    """
    per_task = memory_budget() / (2 * concurrent_tasks())
    a, b = 8.0 * matrices, 16.0 * width  # a r^2 + b r <= per_task
    rows = int((-b + np.sqrt(b * b + 4 * a * per_task)) / (2 * a))
    rows = max(MIN_BLOCK_ROWS, min(MAX_BLOCK_ROWS, rows, -(-n // 4)))
    return int(min(rows, n))


def block_pairs(count: int) -> list[tuple[int, int]]:
    """The pairs of row blocks ``i <= j`` of ``count`` blocks.

    Examples
    --------
    >>> block_pairs(2)
    [(0, 0), (0, 1), (1, 1)]
    """
    return [(i, j) for i in range(count) for j in range(i, count)]


class Blocks:
    """The delayed row blocks of two layers and where each block starts."""

    def __init__(self, x: Layer, y: Layer, rows: int):
        self.x, self.y = row_blocks(x, rows), row_blocks(y, rows)
        n = int(x.data.shape[0])
        self.starts = list(range(0, n, rows))
        self.bounds = [(s, min(n, s + rows)) for s in self.starts]

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, i: int) -> slice:
        """The samples of block ``i``."""
        return slice(*self.bounds[i])


def row_statistics(layers: Sequence[Layer], centre: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, each sample's mean over its features and the norm of its activations about
    that mean (``centre``) or of the raw activations (the mean is then zero), in float64.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> [(mean, norm)] = row_statistics([as_layer(np.array([[1.0, 3.0]]))], True)
    >>> mean.tolist(), norm.tolist()
    ([2.0], [1.4142135623730951])
    """
    graphs = []
    for layer in layers:
        z = layer.data.astype(np.float64)
        mean = z.mean(axis=1) if centre else None
        c = z - mean[:, None] if centre else z
        graphs.append(((c * c).sum(axis=1) ** 0.5, mean))
    out = []
    for norm, mean in compute(graphs)[0]:
        out.append((np.zeros(len(norm)) if mean is None else mean, norm))
    return out


def check_patterns(name: str, mean: np.ndarray, norm: np.ndarray, width: int, centre: bool,
                   measure: str) -> None:
    """An error naming the first sample of ``name`` whose pattern has no direction: all
    activations zero (``centre=False``, cosine similarity) or all equal (``centre=True``,
    correlation across features)."""
    if centre:
        bad = constant_units(norm**2, mean, width)
    else:
        bad = norm == 0
    if bad.any():
        first, count = int(np.argmax(bad)), int(bad.sum())
        what = (f"the same activation in all its {width} features" if centre
                else f"all its {width} activations zero")
        kind = "correlation" if centre else "cosine similarity"
        raise InputError(
            f"{name}: sample {first} has {what} ({count} such sample"
            f"{'s' if count > 1 else ''}), so its {kind} with other samples, which {measure} "
            "needs, is undefined; leave such samples out"
        )


def unit_rows(block: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """A row block in float64 with each row divided by its norm ``norm``: products of such
    blocks are cosine similarities.

    Examples
    --------
    >>> unit_rows(np.array([[3, 4]], dtype=np.float32), np.array([5.0])).tolist()
    [[0.6, 0.8]]
    """
    return np.asarray(block, dtype=np.float64) / norm[:, None]
