"""Per-unit column statistics of layers in one pass, and the input checks of the kernel paths.

The kernel paths (:mod:`~dask_repsim.paths.gram`, :mod:`~dask_repsim.paths.tiled`,
:mod:`~dask_repsim.paths.minibatch`) centre every row block with the column means before a Gram
block
or a tile product is formed: ``X X^T`` of uncentred ReLU activations would cancel catastrophically
when centred afterwards. :func:`column_statistics` computes, for several layers in one Dask pass
(a tree reduction over each layer's row chunks, each chunk read once), everything those paths
need to know about the columns: the count, the means, the centred sums of squares (merged with
Chan, Golub & LeVeque's pairwise update, never as ``E[x^2] - E[x]^2``) and the first sample
holding NaN or Inf. :func:`checked_columns` turns them into the errors of
:mod:`dask_repsim.io.validation`, the same as on every other path.

A grid computes the column statistics of each layer once, and passes each pair's means to the
kernel functions (``means=``); given no means, they run :func:`checked_columns` themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask
import numpy as np

from ..io.inputs import Layer
from ..io.validation import check_sample_counts, constant_units, first_nonfinite, no_variance_error
from .parallel import compute
from .reduction import SPLIT_EVERY, tree_reduce

#: Bytes of float64 a task converts and centres at a time when it summarises a stored chunk:
#: a chunk of many rows of a wide layer is taken in sub-blocks of rows, merged pairwise. Smaller
#: than the co-moment pass's :data:`~dask_repsim.engine.stream.SUB_BLOCK_BYTES`: a merge here
#: costs O(p), nothing beside a sub-block's O(rows p), so small sub-blocks cost no time, while a
#: co-moment sub-block's merge costs O(P^2) and that pass takes them as large as it may.
COLUMN_SUB_BLOCK_BYTES = 64 * 2**20
#: Bytes of float64 per row block of the Gram-block paths (per layer, before the block itself).
BLOCK_BYTES = 64 * 2**20
# Row blocks the Gram-block paths aim for at least (8 blocks: 36 block tasks to spread over
# threads).
_MIN_BLOCKS = 8


@dataclass(frozen=True)
class Columns:
    """Per-unit statistics of one layer over its samples (or over a range of them).

    Attributes
    ----------
    name : str
        The layer's name.
    count : int
        Number of samples.
    mean, sum_sq : numpy.ndarray
        Float64 column means and centred sums of squares ``sum_i (x_ij - mean_j)^2``, shape (p,).
    first_nonfinite : int
        First sample holding NaN or Inf, -1 when there is none.
    nonfinite_is_nan : bool
        Whether that sample holds a NaN (else an Inf).

    Examples
    --------
    >>> z = np.arange(12.0).reshape(6, 2)
    >>> a, b = Columns.of_block("z", 0, z[:2]), Columns.of_block("z", 2, z[2:])
    >>> whole = Columns.merge(a, b)
    >>> whole.mean.tolist(), whole.sum_sq.tolist(), whole.first_nonfinite
    ([5.0, 6.0], [70.0, 70.0], -1)
    """

    name: str
    count: int
    mean: np.ndarray
    sum_sq: np.ndarray
    first_nonfinite: int = -1
    nonfinite_is_nan: bool = False

    @classmethod
    def of_block(cls, name: str, offset: int, block: np.ndarray) -> Columns:
        """Statistics of the rows of ``block``, the first of which is sample ``offset``."""
        z = np.asarray(block, dtype=np.float64)
        if z.shape[0] == 0:
            zeros = np.zeros(z.shape[1])
            return cls(name, 0, zeros, zeros.copy())
        with np.errstate(invalid="ignore", over="ignore"):
            mean = z.mean(axis=0)
            centred = z - mean
            sum_sq = np.einsum("ij,ij->j", centred, centred)
        first, is_nan = -1, False
        if not np.isfinite(mean).all():  # only then look for the sample
            row = int(np.argmax(~np.isfinite(z).all(axis=1)))
            if not np.isfinite(z[row]).all():
                first, is_nan = offset + row, bool(np.isnan(z[row]).any())
        return cls(name, z.shape[0], mean, sum_sq, first, is_nan)

    @staticmethod
    def merge(a: Columns, b: Columns) -> Columns:
        """Statistics of two disjoint ranges of samples together (pairwise update)."""
        if b.count == 0:
            return a
        if a.count == 0:
            return b
        count = a.count + b.count
        with np.errstate(invalid="ignore", over="ignore"):
            delta = b.mean - a.mean
            mean = a.mean + delta * (b.count / count)
            sum_sq = a.sum_sq + b.sum_sq + delta**2 * (a.count * b.count / count)
        take_b = b.first_nonfinite >= 0 and (
            a.first_nonfinite < 0 or b.first_nonfinite < a.first_nonfinite
        )
        first, is_nan = (
            (b.first_nonfinite, b.nonfinite_is_nan)
            if take_b
            else (a.first_nonfinite, a.nonfinite_is_nan)
        )
        return Columns(a.name, count, mean, sum_sq, first, is_nan)


def _chunk(name: str, offset: int, block: np.ndarray) -> Columns:
    """Columns of a stored chunk, in sub-blocks of at most :data:`COLUMN_SUB_BLOCK_BYTES` of
    float64."""
    step = max(1, COLUMN_SUB_BLOCK_BYTES // (8 * max(1, block.shape[1])))
    out = Columns.of_block(name, offset, block[:0])
    for start in range(0, block.shape[0], step):
        part = Columns.of_block(name, offset + start, block[start : start + step])
        out = Columns.merge(out, part)
    return out


def _merge_all(*parts: Columns) -> Columns:
    out = parts[0]
    for part in parts[1:]:
        out = Columns.merge(out, part)
    return out


def _graph(layer: Layer, split_every: int):
    """The tree reduction giving ``layer``'s :class:`Columns`, not yet computed."""
    data = layer.data.rechunk({1: -1})  # a graph operation: each stored chunk is read once
    blocks = data.to_delayed(optimize_graph=False)[:, 0]
    offsets = np.cumsum((0,) + data.chunks[0])[:-1]
    parts = [
        dask.delayed(_chunk, pure=True)(layer.name, int(off), block)
        for off, block in zip(offsets, blocks, strict=True)
    ]
    if not parts:  # no samples
        return dask.delayed(Columns.of_block)(layer.name, 0, np.zeros((0, data.shape[1])))
    return tree_reduce(parts, _merge_all, name="repsim-columns", split_every=split_every)


def column_statistics(layers: Sequence[Layer], *, split_every: int = SPLIT_EVERY) -> list[Columns]:
    """The :class:`Columns` of each layer, from one Dask computation.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, np.inf]])
    >>> (c,) = column_statistics([as_layer(x, name="a")])
    >>> c.count, c.mean.tolist(), c.sum_sq[0].item(), c.first_nonfinite, c.nonfinite_is_nan
    (3, [3.0, inf], 8.0, 2, False)
    """
    return list(compute(*(_graph(layer, split_every) for layer in layers)))


def checked_columns(layers: Sequence[Layer]) -> list[Columns]:
    """:func:`column_statistics`, raising for input no measure can be computed from.

    Raises, through :mod:`dask_repsim.io.validation`: ``SampleCountError`` when the layers have
    different numbers of samples, ``NonFiniteError`` for the earliest sample holding NaN or Inf
    (naming its layer), ``NoVarianceError`` for a layer whose units are all constant.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(5, 2))
    >>> checked_columns([as_layer(x), as_layer(np.ones((5, 3)), name="y")])
    Traceback (most recent call last):
    ...
    dask_repsim.exceptions.NoVarianceError: y has no variance: all 3 units are constant over ...
    """
    names = [layer.name for layer in layers]
    check_sample_counts(names, [layer.data.shape[0] for layer in layers])
    columns = column_statistics(layers)
    error = first_nonfinite(
        names, [c.first_nonfinite for c in columns], [c.nonfinite_is_nan for c in columns]
    )
    if error is not None:
        raise error
    for c in columns:
        if constant_units(c.sum_sq, c.mean, c.count).all():
            raise no_variance_error(c.name, len(c.mean), c.count)
    return columns


def pair_means(
    x: Layer, y: Layer, means: tuple[np.ndarray, np.ndarray] | None
) -> tuple[int, np.ndarray, np.ndarray]:
    """The number of samples and the column means of ``x`` and ``y``.

    ``means`` from :func:`checked_columns` are used as they are (the layers were checked);
    without them, :func:`checked_columns` runs here.
    """
    if means is None:
        cx, cy = checked_columns([x, y])
        return cx.count, cx.mean, cy.mean
    n = check_sample_counts([x.name, y.name], [x.data.shape[0], y.data.shape[0]])
    return n, np.asarray(means[0], dtype=np.float64), np.asarray(means[1], dtype=np.float64)


def centred(block: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``block`` in float64, less the column means."""
    return np.asarray(block, dtype=np.float64) - mean


def frobenius_sq(m: np.ndarray) -> float:
    """Squared Frobenius norm ``sum_ij m_ij^2``."""
    return float(np.einsum("ij,ij->", m, m))


def row_blocks(layer: Layer, rows: int) -> list:
    """Delayed row blocks of ``layer`` (full width), ``rows`` samples each (the last shorter)."""
    return list(layer.data.rechunk({0: rows, 1: -1}).to_delayed(optimize_graph=False)[:, 0])


def default_block_rows(n: int, width: int) -> int:
    """Samples per row block: about :data:`BLOCK_BYTES` of float64, at most 4096 rows and at
    most n / 8 (at least 8 blocks, to keep the threads busy), at least 64.

    Examples
    --------
    >>> default_block_rows(100_000, 50_000), default_block_rows(2_000, 10)
    (167, 250)
    """
    by_memory = BLOCK_BYTES // (8 * max(1, width))
    return int(max(64, min(n, 4096, by_memory, -(-n // _MIN_BLOCKS))))
