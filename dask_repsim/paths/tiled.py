"""Exact linear CKA from products of feature tiles, never holding a (p+q)^2 matrix.

``||X_c^T Y_c||_F^2`` is a sum over pairs of feature tiles of the squared norms of the tile
products, each summed over row chunks inside one task: memory one ``tile x tile`` float64
product per task, cost ``n (p q + p^2/2 + q^2/2)``. Rows are centred with the column means of
:func:`~dask_repsim.engine.columns.checked_columns`, which also checks the inputs (the errors of
:mod:`dask_repsim.io.validation`, as on every path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from ..engine import columns
from ..engine.columns import BLOCK_BYTES, centred, frobenius_sq, pair_means, row_blocks
from ..engine.parallel import compute
from ..io.inputs import Layer
from ..io.validation import require_samples
from ..measures.hsic import cka_ratio, unbiased_hsic
from ..results import Cell, Cells, Positions, grid_cells


def _tile_sum(ma: np.ndarray, mb: np.ndarray, blocks_a: list, blocks_b: list, norm: bool):
    """``sum_k A_k^T B_k`` over row blocks of two feature tiles (centred), or its squared
    Frobenius norm (``norm``): one task per tile pair and group of row blocks, so that only one
    tile x tile product per task is alive."""
    out = None
    for a, b in zip(blocks_a, blocks_b, strict=True):
        ca = centred(a, ma)
        cb = ca if b is a else centred(b, mb)  # a diagonal tile: numpy uses syrk
        product = ca.T @ cb
        if out is None:
            out = product
        else:
            out += product
    return frobenius_sq(out) if norm else out


def _sum_all(*parts):
    out = parts[0].copy()
    for p in parts[1:]:
        out += p
    return out


def _row_norm_products(a, b, ma, mb):
    ra = np.einsum("ij,ij->i", centred(a, ma), centred(a, ma))
    rb = np.einsum("ij,ij->i", centred(b, mb), centred(b, mb))
    return np.array([ra @ rb, ra @ ra, rb @ rb, ra.sum(), rb.sum()])


class _Tiles:
    """One layer's (row chunk, feature tile) blocks as delayed objects, and its means."""

    def __init__(self, layer: Layer, mean: np.ndarray, rows: int, tile: int):
        data = layer.data.rechunk((rows, tile))
        self.blocks = data.to_delayed(optimize_graph=False)
        self.edges = np.cumsum((0,) + data.chunks[1])
        self.mean = mean

    def tile_mean(self, a: int) -> np.ndarray:
        return self.mean[self.edges[a] : self.edges[a + 1]]


def _tile_norm(ta: _Tiles, tb: _Tiles, a: int, b: int, split_every: int):
    """``||sum_k A_k^T B_k||_F^2`` of tile a of one side and tile b of the other, delayed: row
    chunks summed ``split_every`` per task, partial sums added in a tree, then the norm."""
    means = ta.tile_mean(a), tb.tile_mean(b)
    starts = range(0, ta.blocks.shape[0], split_every)
    parts = [
        dask.delayed(_tile_sum, pure=True)(
            *means,
            list(ta.blocks[k : k + split_every, a]),
            list(tb.blocks[k : k + split_every, b]),
            len(starts) == 1,
        )
        for k in starts
    ]
    if len(parts) == 1:
        return parts[0]
    while len(parts) > 1:
        parts = [
            dask.delayed(_sum_all, pure=True)(*parts[i : i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    return dask.delayed(frobenius_sq, pure=True)(parts[0])


def _frobenius_graphs(tx: _Tiles, ty: _Tiles, split_every: int) -> list:
    """Delayed ``||X_c^T Y_c||_F^2``, ``||X_c^T X_c||_F^2`` and ``||Y_c^T Y_c||_F^2``; the
    symmetric ones over tiles ``a <= b``, off-diagonal pairs twice."""
    nx, ny = tx.blocks.shape[1], ty.blocks.shape[1]

    def own(t: _Tiles, count: int) -> list:
        return [
            (1 if a == b else 2) * _tile_norm(t, t, a, b, split_every)
            for a in range(count)
            for b in range(a, count)
        ]

    xy = [_tile_norm(tx, ty, a, b, split_every) for a in range(nx) for b in range(ny)]
    return [dask.delayed(sum)(xy), dask.delayed(sum)(own(tx, nx)), dask.delayed(sum)(own(ty, ny))]


def cka_values(
    x: Layer,
    y: Layer,
    debiased: Sequence[bool],
    *,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    tile: int = 2048,
    chunk_rows: int | None = None,
    split_every: int = 8,
) -> list[float]:
    """Exact linear CKA for each flag of ``debiased``, from one set of tile products.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples.
    debiased
        For each value wanted: use the unbiased HSIC estimator of Song et al. (2012).
    means
        The column means of x and y from :func:`~dask_repsim.engine.columns.checked_columns` (the
        inputs count as checked); None: checked and computed here, one pass over both.
    tile
        Features per tile: a task holds one ``chunk_rows x tile`` block of each side and one
        ``tile x tile`` float64 product.
    chunk_rows
        Samples per row chunk. Default: about 64 MiB of float64 per ``chunk_rows x tile`` block.
    split_every
        Row chunks per task (their products summed inside it), and partial sums per task of
        the tree reduction above them.

    Notes
    -----
    ``||X_c^T Y_c||_F^2 = sum_ab ||sum_k X_c[k, a]^T Y_c[k, b]||_F^2`` over feature tiles a of
    x, b of y and row chunks k; likewise ``||X_c^T X_c||_F^2`` over tiles ``a <= b``.
    ``CKA = ||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` (Kornblith et al. 2019).
    The debiased estimator also needs ``sum_i |x_i|^2 |y_i|^2``, one more light pass
    (:func:`dask_repsim.measures.hsic.unbiased_hsic`).

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 50))
    >>> q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    >>> y = as_layer(-2 * x @ q, name="y")
    >>> [round(v, 9) for v in cka_values(as_layer(x), y, (True, False), tile=16)]
    [1.0, 1.0]
    """
    n, mx, my = pair_means(x, y, means)
    if any(debiased):
        require_samples(n, 4, "debiased CKA")
    rows = chunk_rows or int(max(1, min(n, BLOCK_BYTES // (8 * tile))))
    graphs = _frobenius_graphs(_Tiles(x, mx, rows, tile), _Tiles(y, my, rows, tile), split_every)
    if any(debiased):
        norms = [
            dask.delayed(_row_norm_products, pure=True)(a, b, mx, my)
            for a, b in zip(row_blocks(x, rows), row_blocks(y, rows), strict=True)
        ]
        graphs.append(dask.delayed(sum)(norms))
    out = compute(*graphs)
    s_xy, s_xx, s_yy = (float(v) for v in out[:3])
    values = []
    for flag in debiased:
        hsic = (s_xy, s_xx, s_yy)
        if flag:
            nxy, nxx, nyy, tr_x, tr_y = out[3]
            hsic = (
                unbiased_hsic(s_xy, nxy, tr_x, tr_y, n),
                unbiased_hsic(s_xx, nxx, tr_x, tr_x, n),
                unbiased_hsic(s_yy, nyy, tr_y, tr_y, n),
            )
        values.append(cka_ratio(hsic, (x.name, y.name), n, flag, scale=(s_xx, s_yy)))
    return values


def kernel_cells(
    specs: Sequence[dict[str, Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    todo: Positions | None = None,
) -> tuple[Cells, dict[str, Any]]:
    """Linear CKA cells from feature tiles, pair by pair; ``todo``: the (row, column) cells to
    compute (default every one).

    Each layer's column statistics (means for centring, and the input checks) come from one
    pass over all layers.
    """
    wanted = grid_cells(rows, cols, todo)
    used = sorted({rows[i] for i, _ in wanted} | {cols[j] for _, j in wanted})
    stats = dict(zip(used, columns.checked_columns([layers[u] for u in used]), strict=True))
    flags = [spec["debiased"] for spec in specs]
    cells: Cells = {}
    for i, j in wanted:
        a, b = rows[i], cols[j]
        values = cka_values(
            layers[a], layers[b], flags, means=(stats[a].mean, stats[b].mean)
        )
        for m, value in enumerate(values):
            cells[m, i, j] = Cell(value, fields={"method": "tiled"})
    n = stats[used[0]].count
    return cells, {"n_samples": n, "n_samples_omitted": 0}
