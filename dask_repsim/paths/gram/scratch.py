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
exact: the result is ``numpy.median`` of the whole distance matrix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import dask
import numpy as np
from dask.utils import format_bytes

#: values gathered on the client once the middle order statistics are narrowed down
GATHER = 2**18
_TOP_SHIFT = 48  # keys >> 48: sign bit, 11 exponent bits, 4 mantissa bits
_STEP = 16
#: values an elementwise pass over an n x n matrix handles at a time: its temporaries stay in
#: cache, where whole-matrix ones would map fresh pages for every matrix
PIECE = 2**17


def keys(d2: np.ndarray) -> np.ndarray:
    """The order-preserving integer keys of non-negative float64 values.

    Examples
    --------
    >>> k = keys(np.array([0.0, 1e-300, 0.5, 2.0, 1e300]))
    >>> bool(np.all(np.diff(k.astype(np.float64)) > 0))
    True
    """
    return np.ascontiguousarray(d2, dtype=np.float64).view(np.uint64)


def prefix_counts(d2: np.ndarray, weight: int, lo: int, hi: int, shift: int) -> np.ndarray:
    """Weighted counts of the values with keys in ``[lo, hi)`` by key prefix ``key >> shift``,
    bin 0 being ``lo >> shift``."""
    flat = keys(d2).ravel()
    size = int(((hi - 1) >> shift) - (lo >> shift)) + 1
    counts = np.zeros(size, np.int64)
    for start in range(0, len(flat), PIECE):
        k = flat[start:start + PIECE]
        k = k[(k >= lo) & (k < hi)] if lo > 0 or hi < 2**63 else k
        idx = (k >> np.uint64(shift)) - np.uint64(lo >> shift)  # in [0, size)
        # [:size]: only a NaN with its sign bit set falls beyond (from non-finite data, which
        # the grid reports as an error before it uses a histogram)
        counts += np.bincount(idx.view(np.int64), minlength=size)[:size]
    return counts * weight


def top_counts(d2: np.ndarray, weight: int) -> np.ndarray:
    """The first pass's histogram: counts of every non-negative float64 by its top 15 bits."""
    return prefix_counts(d2, weight, 0, 2**63, _TOP_SHIFT)


class Range:
    """Where a layer's two middle order statistics are known to lie: keys in ``[lo, hi)``,
    ``below`` values (weighted) smaller than ``lo``."""

    def __init__(self, n: int) -> None:
        self.k1, self.k2 = (n * n - 1) // 2, n * n // 2  # numpy's middle pair
        self.lo, self.hi, self.below, self.shift = 0, 2**63, 0, _TOP_SHIFT
        self.count = n * n

    def narrow(self, counts: np.ndarray) -> None:
        """Keep the bins holding the middle pair; the next pass counts 16 bits further."""
        cum = self.below + np.cumsum(counts)
        b1 = int(np.searchsorted(cum, self.k1, side="right"))
        b2 = int(np.searchsorted(cum, self.k2, side="right"))
        base = self.lo >> self.shift
        below = self.below + (int(cum[b1 - 1] - self.below) if b1 > 0 else 0)
        self.count = int(cum[b2]) - below
        self.lo, self.hi = (base + b1) << self.shift, (base + b2 + 1) << self.shift
        self.below = below
        self.shift = max(0, self.shift - _STEP)

    @property
    def gather(self) -> bool:
        """Whether few enough values are left to gather them."""
        return self.count <= GATHER or self.shift == 0

    def median(self, values: np.ndarray, weights: np.ndarray) -> float:
        """The median from the gathered values in ``[lo, hi)`` and their weights."""
        order = np.argsort(values, kind="stable")
        cum = self.below + np.cumsum(weights[order])
        v1 = values[order][np.searchsorted(cum, self.k1, side="right")]
        v2 = values[order][np.searchsorted(cum, self.k2, side="right")]
        return float((v1 + v2) / 2)


def in_range(d2: np.ndarray, weight: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The values with keys in ``[lo, hi)`` and their weights."""
    k = keys(d2).ravel()
    values = d2.ravel()[(k >= lo) & (k < hi)]
    return values, np.full(len(values), weight, dtype=np.int64)


def whole_median(d2: np.ndarray) -> float:
    """The exact median of a layer's whole n x n squared distances held in memory: the
    narrowing of :func:`medians` over its one tile, with no file written or read.

    Examples
    --------
    >>> d2 = np.random.default_rng(0).random((300, 300)) ** 3
    >>> bool(whole_median(d2) == np.median(d2))
    True
    """
    r = Range(len(d2))
    r.narrow(top_counts(d2, 1))
    while not r.gather:
        r.narrow(prefix_counts(d2, 1, r.lo, r.hi, r.shift))
    return r.median(*in_range(d2, 1, r.lo, r.hi))


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
