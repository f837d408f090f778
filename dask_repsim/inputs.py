"""Turning what users hold into a 2-D dask array of samples x features.

Accepted: numpy arrays, dask arrays, zarr arrays, a zarr path or URL (anything fsspec opens,
with ``storage_options=``) and xarray DataArrays. Rows are samples. For plain arrays the first
axis is the sample axis and every other axis is flattened into features; a DataArray names its
sample dimensions with ``sample_dims`` (default: a dimension called ``sample``, else the first
one) and every other dimension is flattened into features, so a conv layer's ``height, width``
can be folded into samples (``sample_dims=("sample", "height", "width")``) or into features.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize

# Row chunk used when wrapping an in-memory array: ~64 MiB of float64 per chunk.
_TARGET_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Layer:
    """One input, as the engine sees it: a lazy (samples, features) array plus its labels."""

    name: str
    data: da.Array
    feature_dims: tuple[str, ...] = ()
    feature_shape: tuple[int, ...] = ()


class _ChunkReader:
    """A zarr array whose read errors name the array and the chunk (for corrupt stores)."""

    def __init__(self, array: zarr.Array, name: str):
        self.array, self.name = array, name
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        try:
            return self.array[key]
        except Exception as err:
            index = tuple(k.start // c for k, c in zip(key, self.array.chunks, strict=False))
            where = f"{self.array.store}/{self.array.path}".rstrip("/")
            raise OSError(
                f"{self.name}: cannot read chunk {index} of the zarr array at {where} "
                f"({type(err).__name__}: {err})"
            ) from err


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind == "c":
        raise TypeError(f"{name} has complex dtype {dtype}; activations must be real numbers")
    if dtype.kind not in "biuf" and dtype.name != "bfloat16":
        raise TypeError(f"{name} has non-numeric dtype {dtype}; activations must be numbers")


def _rows_chunk(shape: tuple[int, ...]) -> int:
    row_bytes = 8 * max(1, math.prod(shape[1:]))
    return max(1, min(shape[0], _TARGET_CHUNK_BYTES // row_bytes))


def _open_zarr_path(path: str, storage_options: Mapping[str, Any] | None) -> zarr.Array:
    kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
    try:
        node = zarr.open(store=path, mode="r", **kwargs)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no zarr array at {path!r}") from err
    if not isinstance(node, zarr.Array):
        names = sorted(node.array_keys())
        raise ValueError(
            f"{path!r} is a zarr group, not an array; give one of its arrays "
            f"({', '.join(names) or 'it has none'}), or pass the group to compare()"
        )
    return node


def _split_dims(
    x: xr.DataArray, sample_dims: Sequence[Hashable] | str | None, name: str
) -> tuple[tuple[Hashable, ...], tuple[Hashable, ...]]:
    """(sample dims, feature dims) of a DataArray, checked against what it has."""
    if sample_dims is None:
        sample_dims = ("sample",) if "sample" in x.dims else x.dims[:1]
    elif isinstance(sample_dims, str):
        sample_dims = (sample_dims,)
    missing = [d for d in sample_dims if d not in x.dims]
    if missing:
        raise ValueError(
            f"sample_dims {tuple(missing)} not in {name}; "
            f"its dims are {tuple(x.dims)}"
        )
    return tuple(sample_dims), tuple(d for d in x.dims if d not in sample_dims)


def as_layer(
    x: Any,
    *,
    name: str = "x",
    sample_dims: Sequence[Hashable] | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    pool: str | None = None,
    spatial_dims: Sequence[Hashable] = ("height", "width"),
) -> Layer:
    """Wrap ``x`` as a lazy (samples, features) float-or-integer dask array.

    ``pool="mean"`` averages a conv layer's spatial positions away (in float64, inside the
    pass): for a DataArray the ``spatial_dims`` it has, for a plain array every axis after the
    second (the NCHW layout frameworks record).

    Examples
    --------
    >>> import numpy as np
    >>> layer = as_layer(np.zeros((10, 2, 3)), name="conv1")
    >>> layer.data.shape
    (10, 6)
    """
    if isinstance(x, xr.DataArray):
        samples, features = _split_dims(x, sample_dims, name)
        if not features:
            raise ValueError(
                f"{name} has dims {tuple(x.dims)}, all of them sample dims; activations need "
                "at least one feature dim"
            )
        _check_dtype(x.dtype, name)
        if _pooling(pool):
            pooled = [d for d in spatial_dims if d in features]
            if pooled:
                x = x.astype(np.float64).mean(pooled)
                features = tuple(d for d in features if d not in pooled)
        x = x.transpose(*samples, *features)
        arr = x.data if isinstance(x.data, da.Array) else np.asarray(x.data)
        if isinstance(arr, np.ndarray):
            arr = da.from_array(arr, chunks=(_rows_chunk(arr.shape),) + arr.shape[1:])
        feature_shape = tuple(x.sizes[d] for d in features)
        arr = arr.reshape((math.prod(x.sizes[d] for d in samples), math.prod(feature_shape)))
        return _finish(arr, name, tuple(str(d) for d in features), feature_shape)
    if isinstance(x, str | os.PathLike):
        x = _open_zarr_path(os.fspath(x), storage_options)
    if isinstance(x, zarr.Array):
        _check_dtype(np.dtype(x.dtype), name)
        # Name the graph by where the array lives, so that the same stored array given twice
        # (e.g. opened twice) is recognised and read once.
        token = tokenize(str(x.store), x.path, x.shape, x.chunks, str(x.dtype))
        arr = da.from_array(
            _ChunkReader(x, name),
            chunks=x.chunks,
            name=f"from-zarr-{token}",
            meta=np.empty((0,) * x.ndim, dtype=x.dtype),
        )
    elif isinstance(x, da.Array):
        arr = x
    elif isinstance(x, np.ndarray):
        arr = da.from_array(x, chunks=(_rows_chunk(x.shape),) + x.shape[1:]) if x.ndim else x
    else:
        raise TypeError(
            f"{name}: cannot use {type(x).__name__} as activations; give a numpy, dask or zarr "
            "array, a zarr path or URL, or an xarray DataArray"
        )
    _check_dtype(np.dtype(arr.dtype), name)
    if arr.ndim < 2:
        raise ValueError(
            f"{name} has shape {arr.shape}; activations need at least 2 dims "
            "(samples, features...)"
        )
    if _pooling(pool) and arr.ndim > 2:
        arr = arr.mean(axis=tuple(range(2, arr.ndim)), dtype=np.float64)
    feature_shape = tuple(arr.shape[1:])
    if arr.ndim > 2:
        arr = arr.reshape((arr.shape[0], math.prod(feature_shape)))
    return _finish(arr, name, (), feature_shape)


def _pooling(pool: str | None) -> bool:
    if pool not in (None, "mean"):
        raise ValueError(f"pool must be None or 'mean', not {pool!r}")
    return pool == "mean"


def _finish(
    arr: da.Array, name: str, feature_dims: tuple[str, ...], feature_shape: tuple[int, ...]
) -> Layer:
    if arr.ndim < 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} has no features after folding (shape {arr.shape})")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has 0 samples")
    return Layer(name, arr, feature_dims, feature_shape)
