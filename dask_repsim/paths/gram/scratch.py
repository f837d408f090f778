"""Row-block copies and squared-distance tiles kept on local disk, and exact order statistics
over the distances.

The sample-space grid (:mod:`dask_repsim.paths.gram.samplespace`) reads every row block of a layer
once per tile; its diagonal tiles copy the blocks here, as stored (``itemsize x n x p`` bytes per
layer), so that each stored chunk is decoded once and the other tiles read plain files.

RBF CKA sets each layer's bandwidth to a fraction of the median of its n^2 squared distances
between samples (the zero diagonal included, Kornblith et al.'s ``gram_rbf``), so the kernel can
only be summed once that median is known. The sample-space grid
(:mod:`dask_repsim.paths.gram.samplespace`)
forms each layer's Gram tile once, writes the tile's squared distances here (one float64 ``.npy``
file per layer and tile) and counts them into a histogram of their leading bits; the median is
then narrowed down over these files, and the kernel pass reads them back instead of forming the
Gram tiles again. Disk holds ``8 n^2 / 2`` bytes per layer (the upper triangle of tiles).

Non-negative float64 numbers sort like their bit patterns read as unsigned integers, so the
histograms count the values by bit prefix: 15 bits (sign, exponent and 4 bits of mantissa) in
the first pass, 16 more bits per further pass, until the two middle order statistics lie in a
range holding at most :data:`GATHER` values, which are gathered and sorted. Every step is
exact: the result is ``numpy.median`` of the whole distance matrix
(:class:`~dask_repsim.engine.medians.Range`, in the engine: the ``sample_blocks`` path narrows
its Laplace CKA medians the same way).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import dask
import numpy as np
from dask.utils import format_bytes

# the exact order statistics over bit-prefix histograms, shared with the sample_blocks path
from ...engine.medians import (  # noqa: F401 (re-exported)
    GATHER,
    PIECE,
    Range,
    in_range,
    keys,
    prefix_counts,
    top_counts,
    whole_median,
)


def medians(
    ranges: Sequence[Range], tiles: Sequence[tuple[int, int]],
    load: Callable[[int, int], np.ndarray], compute: Callable[..., tuple],
) -> list[float]:
    """Each layer's exact median, narrowing ``ranges`` (after the first pass's histogram) with
    passes over the tiles, given as ``(key, weight)`` (2 for a tile that stands for its mirror
    image too); ``load(layer, key)`` gives a tile's squared distances."""

    def one_pass(key: int, weight: int, layer: int):
        r = ranges[layer]
        d2 = load(layer, key)
        if r.gather:
            return in_range(d2, weight, r.lo, r.hi)
        return prefix_counts(d2, weight, r.lo, r.hi, r.shift)

    def tasks(layers: Sequence[int]) -> list[list]:
        """A task per tile and layer (so that few tiles still keep every thread busy)."""
        done = compute(*(dask.delayed(one_pass, pure=False)(k, w, layer)
                         for k, w in tiles for layer in layers))
        return [list(done[t::len(layers)]) for t in range(len(layers))]

    every = range(len(ranges))
    while not all(r.gather for r in ranges):
        narrowing = [layer for layer in every if not ranges[layer].gather]
        for layer, counts in zip(narrowing, tasks(narrowing), strict=True):
            ranges[layer].narrow(np.sum(counts, axis=0))
    return [ranges[layer].median(np.concatenate([v for v, _ in parts]),
                                 np.concatenate([w for _, w in parts]))
            for layer, parts in zip(every, tasks(every), strict=True)]


class Store:
    """A directory of squared-distance tiles and copies of row blocks, removed when closed.

    The directory is made under the dask config value ``repsim.scratch`` if set, else under
    dask's ``temporary-directory``, else the system's temporary directory. Every process that
    runs tasks must see it: for RBF CKA on a cluster whose workers are on other machines, set
    ``repsim.scratch`` to a shared file system (row blocks and Gram matrices are then carried
    by the cluster, :mod:`~dask_repsim.paths.gram.carried`).
    """

    def __init__(self) -> None:
        parent = (dask.config.get("repsim.scratch", None)
                  or dask.config.get("temporary-directory", None) or None)
        self.path = tempfile.mkdtemp(prefix="repsim-scratch-", dir=parent)

    def require(self, nbytes: int, what: str) -> None:
        """Raise before anything is written when the directory's disk has under ``nbytes`` free."""
        free = shutil.disk_usage(self.path).free
        if free < nbytes:
            raise OSError(
                f"{what} need {format_bytes(nbytes)} of scratch disk, and {self.path} has "
                f"{format_bytes(free)} free; point dask config 'repsim.scratch' at a larger disk"
            )

    def file(self, layer: int, key: int | str) -> str:
        return os.path.join(self.path, f"{layer}-{key}.npy")

    def save(self, layer: int, key: int | str, d2: np.ndarray) -> None:
        np.save(self.file(layer, key), d2, allow_pickle=False)

    def load(self, layer: int, key: int) -> np.ndarray:
        return np.load(self.file(layer, key), allow_pickle=False)

    def part(self, layer: int, key: int | str, start: int, stop: int,
             out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` of a saved matrix, mapped (only they are read), or copied into
        ``out`` when given."""
        rows = np.load(self.file(layer, key), mmap_mode="r", allow_pickle=False)[start:stop]
        if out is None:
            return rows
        np.copyto(out, rows)
        return out

    def mapped(self, layer: int, key: int | str) -> np.ndarray:
        """A saved matrix, mapped: what is read of it is read when used (a task gathering
        rows many times maps it once)."""
        return np.load(self.file(layer, key), mmap_mode="r", allow_pickle=False)

    def rows(self, layer: int, shape: tuple[int, int], dtype) -> RowFile:
        """An empty raw copy of a layer (samples x features), to fill by row ranges."""
        out = RowFile(os.path.join(self.path, f"rows-{layer}.raw"), shape, dtype)
        with open(out.path, "wb") as f:
            f.truncate(shape[0] * shape[1] * out.dtype.itemsize)
        return out

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RowFile:
    """A layer's rows in a raw file (C order), written and read by row ranges (``pwrite`` and
    ``readinto``: nothing is mapped into memory, so a task's memory is what it reads)."""

    def __init__(self, path: str, shape: tuple[int, int], dtype) -> None:
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (every feature) from row ``start`` on."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        view = memoryview(rows).cast("B")
        offset = start * self.shape[1] * self.dtype.itemsize
        fd = os.open(self.path, os.O_WRONLY)
        try:
            while len(view):
                done = os.pwrite(fd, view, offset)
                view, offset = view[done:], offset + done
        finally:
            os.close(fd)

    def rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop``, into ``out`` (C-contiguous, of their shape) when given."""
        if out is None:
            out = np.empty((stop - start, self.shape[1]), self.dtype)
        view = memoryview(out).cast("B")
        with open(self.path, "rb", buffering=0) as f:
            f.seek(start * self.shape[1] * self.dtype.itemsize)
            while len(view):
                done = f.readinto(view)
                if not done:
                    raise OSError(f"{self.path}: the scratch copy ends before row {stop}")
                view = view[done:]
        return out
