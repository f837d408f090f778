"""What the single-machine grid keeps on local disk, carried by the cluster instead.

On one machine (dask's local schedulers, or a ``distributed`` cluster whose workers all run
here) the sample-space grid (:mod:`dask_repsim.paths.gram.samplespace`) keeps the copies of its
row blocks and its whole Gram matrices in the scratch directory. When the workers may be on
other machines and ``repsim.scratch`` names no shared file system, that disk is not seen by
all of them; these functions let the results travel as task results instead: dask hands them
to the workers that need them and spills them to each worker's own disk under memory pressure.

- Row blocks (T > 1 row blocks): a task per layer and row block reads its rows once, so that
  each stored chunk is decoded once (the first chunk of each layer once more, for the shift);
  a task per tile and layer forms the layer's Gram block from the two row blocks it is given;
  a task per tile sums every pair from its layers' blocks.
- Whole Gram matrices (one row block): each bin of units returns its Gram matrices cut in
  slabs of rows, a task per layer adds a cut layer's units, and a task per slab sums every
  pair from that slab of every layer.

Values are those of the single-machine grid: the same blocks, the same sums. RBF CKA's squared
distances stay in the scratch directory, which then must be a shared file system
(``repsim.scratch``), as must the Gram store's tiles; the grid says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask
import numpy as np

from ...engine.parallel import compute
from .tiles import Tile, TileSums, slab_sums, slabs, tile_sums, whole_gram


def _block(reader, xi: np.ndarray, xj: np.ndarray | None) -> np.ndarray:
    """A layer's Gram block on a tile from its two row blocks (``xj`` ``None`` on the
    diagonal)."""
    return reader.gram(xi, xj, reader.mean)[0]


def _tile(tile: Tile, pairs, *blocks: np.ndarray) -> TileSums:
    """A tile's sums from every layer's block."""
    return tile_sums(tile, np.stack(blocks), pairs)


def tile_parts(tiles: Sequence[Tile], readers, pairs) -> list[TileSums]:
    """Every tile's linear sums, with the row blocks carried by the cluster: the tiles' rows
    and columns are whole row blocks (:func:`~dask_repsim.paths.gram.tiles.tiles_of` without
    ``split``)."""
    bounds = sorted({t.rows for t in tiles} | {t.cols for t in tiles})
    rows = {(layer, b): dask.delayed(r.rows, pure=False)(*b)  # each row block read once
            for layer, r in enumerate(readers) for b in bounds}
    out = []
    for t in tiles:
        blocks = [dask.delayed(_block, pure=False)(r, rows[layer, t.rows],
                                                   None if t.same else rows[layer, t.cols])
                  for layer, r in enumerate(readers)]
        out.append(dask.delayed(_tile, pure=False)(t, pairs, *blocks))
    return list(compute(*out))


def _unit_slabs(unit, reader, n: int, cuts, keep) -> list[np.ndarray]:
    """A unit's (partial) Gram matrix over all n samples, as slabs of rows ``cuts``."""
    g = whole_gram(reader, n, unit.layer, unit.cols, keep=keep)
    return [g[a:b].copy() for a, b in cuts]


def _layer_slabs(layer: int, keep, *units: list[np.ndarray]) -> list[np.ndarray]:
    """A layer's Gram matrix in slabs, the sum of its units'; given whole to ``keep``."""
    slabs = units[0] if len(units) == 1 else [s.copy() for s in units[0]]
    for more in units[1:]:
        for s, m in zip(slabs, more, strict=True):
            s += m
    if keep is not None:
        keep.whole(layer, np.concatenate(slabs))
    return slabs


class _Held:
    """``load(layer, key, start, stop, out)`` of
    :func:`~dask_repsim.paths.gram.tiles.slab_sums` over slabs given in memory, one per
    layer."""

    def __init__(self, slabs: Sequence[np.ndarray]) -> None:
        self.slabs = slabs

    def __call__(self, layer: int, key: str, start: int, stop: int,
                 out: np.ndarray) -> np.ndarray:
        out[...] = self.slabs[layer]
        return out


def _slab(tile: Tile, pairs, span: tuple[int, int], *slabs: np.ndarray) -> TileSums:
    """Every pair's sums over the rows ``span`` from the slab of every layer."""
    width = tile.cols[1] - tile.cols[0]
    return slab_sums(tile, _Held(slabs), "", len(slabs), None, pairs, span,
                     8 * len(slabs) * width * (span[1] - span[0]))


def whole_parts(tile: Tile, plan, readers, pairs, keep, slots: int,
                limit: int) -> list[TileSums]:
    """The sums of the single tile of all samples (the units of ``plan``, as in
    :func:`~dask_repsim.paths.gram.samplespace.whole_plan`), the Gram matrices carried by the
    cluster in slabs of rows of at most ``limit`` bytes for all layers together, at least
    ``slots`` of them; each layer's whole Gram matrix given to ``keep`` (a Gram store) when
    it is not ``None``. A task per unit rather than per bin: a bin's results would all wait
    in one worker's memory."""
    n, n_layers = tile.rows[1], len(readers)
    cuts = slabs(tile, 1, n_layers, slots, limit)
    units: dict[int, list] = {}
    for u in (u for b in plan for u in b):
        units.setdefault(u.layer, []).append(dask.delayed(_unit_slabs, pure=False)(
            u, readers[u.layer], n, cuts, keep))
    done = [dask.delayed(_layer_slabs, pure=False)(layer, keep, *units[layer])
            for layer in range(n_layers)]
    return list(compute(*(dask.delayed(_slab, pure=False)(tile, pairs, span,
                                                          *[d[s] for d in done])
                          for s, span in enumerate(cuts))))
