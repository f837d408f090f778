"""Shared fixtures: real Zarr stores, and one that counts how often each chunk is read."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage


class CountingStore(zarr.storage.WrapperStore):
    """A zarr store that counts reads of every key (chunks and metadata alike).

    Counts are kept per store object in this process, so use it with dask's local (threaded or
    synchronous) scheduler.
    """

    def __init__(self, store):
        super().__init__(store)
        self.reads: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    async def get(self, key, prototype, byte_range=None):
        with self._lock:
            self.reads[key] = self.reads.get(key, 0) + 1
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        with self._lock:
            for key, _ in key_ranges:
                self.reads[key] = self.reads.get(key, 0) + 1
        return await super().get_partial_values(prototype, key_ranges)

    def chunk_reads(self) -> dict[str, int]:
        """Reads of chunk keys only (Zarr v3 default chunk keys: ``<array>/c/<i>/<j>``)."""
        return {k: v for k, v in self.reads.items() if "/c/" in f"/{k}"}

    def _with_store(self, store):  # keep counting when zarr re-wraps the store read-only
        return self


def write_zarr(
    path: Path | str | zarr.storage.StoreLike,
    name: str,
    data: np.ndarray,
    chunks: tuple[int, ...],
    dims: tuple[str, ...] | None = None,
) -> zarr.Array:
    """Write ``data`` as a Zarr v3 array ``name`` in the group at ``path``."""
    root = zarr.open_group(path, mode="a")
    dims = dims or ("sample",) + tuple(f"{name}_dim{i}" for i in range(1, data.ndim))
    arr = root.create_array(
        name, shape=data.shape, chunks=chunks, dtype=data.dtype, dimension_names=dims
    )
    arr[...] = data
    return arr


@pytest.fixture
def counting_store(tmp_path):
    """A CountingStore over a fresh local store in tmp_path."""
    return CountingStore(zarr.storage.LocalStore(tmp_path / "counted.zarr"))


@pytest.fixture
def small_blocks(request, monkeypatch):
    """Permutation blocks of the test module's ``BLOCK`` samples (64 where it has none), so
    that test data spans several of them."""
    from dask_repsim.engine import permuted

    block = getattr(request.module, "BLOCK", 64)
    monkeypatch.setattr(permuted, "PERMUTATION_BLOCK", block)
    return block
