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

from .layouts import as_names, matching, resolve

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


def _from_zarr(x: zarr.Array, name: str) -> da.Array:
    """A zarr array as a dask array with one task per stored chunk."""
    # Named by where the array lives, so that the same stored array given twice (e.g. opened
    # twice) is recognised and read once.
    token = tokenize(str(x.store), x.path, x.shape, x.chunks, str(x.dtype))
    return da.from_array(
        _ChunkReader(x, name),
        chunks=x.chunks,
        name=f"from-zarr-{token}",
        meta=np.empty((0,) * x.ndim, dtype=x.dtype),
    )


def _dimension_names(array: zarr.Array) -> tuple[Any, ...] | None:
    dims = array.metadata.dimension_names if array.metadata.zarr_format == 3 else None
    if dims is None:
        dims = array.attrs.get("_ARRAY_DIMENSIONS")  # zarr v2 arrays written by xarray
    return None if dims is None else tuple(dims)


def _labelled(
    array: zarr.Array, name: str, coords: Mapping[str, np.ndarray] | None = None
) -> Any:
    """A zarr array as a DataArray when it has dimension names, so ``sample_dims`` applies,
    with the labels of its dims that ``coords`` (the group's coordinate arrays) hold."""
    dims = _dimension_names(array)
    if dims is None or any(d is None for d in dims) or len(set(dims)) != array.ndim:
        return array
    _check_dtype(np.dtype(array.dtype), name)
    labels = {
        d: coords[d]
        for d, size in zip(dims, array.shape, strict=True)
        if coords and d in coords and coords[d].shape == (size,)
    }
    return xr.DataArray(_from_zarr(array, name), dims=dims, coords=labels, name=name)


def _coordinates(arrays: Mapping[str, zarr.Array]) -> dict[str, zarr.Array]:
    """The arrays of a group that label a dim of the same name (as xarray and captures write
    them: ``sample``)."""
    return {n: a for n, a in arrays.items() if _dimension_names(a) == (n,)}


def _read(coords: Mapping[str, zarr.Array]) -> dict[str, np.ndarray]:
    """Coordinate arrays read once, for all the layers that they label."""
    return {name: np.asarray(array[...]) for name, array in coords.items()}


def _coordinate_names(arrays: Mapping[str, zarr.Array]) -> set[str]:
    """Arrays of a group that label others (as xarray writes them), not activations."""
    names = set(_coordinates(arrays))
    for array in arrays.values():
        names.update(str(array.attrs.get("coordinates", "")).split())
    return names


def _parent_coordinates(
    path: str | None, array: zarr.Array, storage_options: Mapping[str, Any] | None
) -> dict[str, np.ndarray]:
    """The coordinate arrays of the group that holds ``array`` (opened from ``path``, or an
    array object), if it is in one."""
    kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
    try:
        if path is not None:
            parent = path.rstrip("/").rsplit("/", 1)
            if len(parent) < 2 or not parent[0]:
                return {}
            group = zarr.open_group(store=_local(parent[0]), mode="r", **kwargs)
        else:
            if not array.path:
                return {}
            parent_path = array.path.rsplit("/", 1)[0] if "/" in array.path else ""
            group = zarr.open_group(store=array.store, path=parent_path, mode="r")
        return _read(_coordinates(dict(group.arrays())))
    except (FileNotFoundError, ValueError, TypeError, KeyError, OSError):
        return {}  # not inside a group: no labels


def open_input(x: Any, name: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """``x`` as what the label and dim rules see: a zarr array (object, path or URL) with
    dimension names becomes a DataArray carrying its group's coordinates (a capture's
    ``sample`` ids); anything else is returned as it is.

    Examples
    --------
    >>> import numpy as np
    >>> open_input(np.zeros((3, 2)), "x").shape
    (3, 2)
    """
    path = os.fspath(x) if isinstance(x, str | os.PathLike) else None
    if path is not None:
        x = _open_zarr_path(path, storage_options)
    if isinstance(x, zarr.Array):
        return _labelled(x, name, _parent_coordinates(path, x, storage_options))
    return x


def layers_of(
    obj: Any, default: str = "x", storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Layer names and inputs in ``obj``, for comparing many layers at once.

    An ``xarray.Dataset`` or a netCDF file gives one layer per data variable; a zarr group
    (object, path or URL) one per array, sorted by name, skipping coordinate arrays that xarray
    writes. A group written by :func:`~dask_repsim.capture_activations` (or a Dataset opened from
    one) gives its layers in network order, as they were captured. A mapping gives its items; a
    named DataArray itself; anything else is one layer called ``default``. Zarr arrays with
    dimension names become DataArrays, so ``sample_dims`` applies to them, carrying their
    group's coordinate arrays (a capture's ``sample`` ids), so samples pair by label
    (:mod:`dask_repsim.io.labels`).

    Examples
    --------
    >>> import numpy as np
    >>> sorted(layers_of({"fc1": np.zeros((4, 2)), "fc2": np.ones((4, 3))}))
    ['fc1', 'fc2']
    """
    if isinstance(obj, str | os.PathLike):
        path = os.fspath(obj)
        local = "://" not in path
        if (local and os.path.isfile(path)) or path.lower().endswith(_NETCDF_SUFFIXES):
            kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
            obj = xr.open_dataset(_local(path), chunks={}, **({} if local else kwargs))
            if not obj.data_vars:
                raise ValueError(f"{path!r} has no data variables")
        else:
            obj = _open_zarr(path, storage_options)
            if isinstance(obj, zarr.Array):
                name = path.rstrip("/").rsplit("/", 1)[-1] or default
                return {name: _labelled(obj, name, _parent_coordinates(path, obj,
                                                                       storage_options))}
    if isinstance(obj, xr.Dataset):
        items = [(str(k), v) for k, v in obj.data_vars.items()]
        if CAPTURE_ATTR in obj.attrs:  # a capture opened with xarray: back to network order
            items.sort(key=_capture_order(obj.attrs))
        return dict(items)
    if isinstance(obj, zarr.Group):
        arrays = dict(sorted(obj.arrays(), key=_capture_order(obj.attrs)))
        skip, coords = _coordinate_names(arrays), _read(_coordinates(arrays))
        layers = {name: _labelled(a, name, coords) for name, a in arrays.items()
                  if name not in skip}
        if not layers:
            groups = sorted(obj.group_keys())
            hint = f"; give one of its groups: {', '.join(groups)}" if groups else ""
            raise ValueError(f"the zarr group at {obj.store_path} holds no arrays{hint}")
        return layers
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, xr.DataArray) and obj.name is not None:
        return {str(obj.name): obj}
    return {default: obj}


#: ``xarray.DataTree`` (xarray >= 2024.10), or nothing an object can be an instance of
_DATATREE: Any = getattr(xr, "DataTree", ())

#: what a zoo is, for its errors
ZOO_FORMS = ("a mapping of network names to networks, a zarr group (object, path or URL) "
             "holding one group per network, or an xarray.DataTree with one child node per "
             "network")
#: what a network of a zoo is, for its errors
NETWORK_FORMS = ("a mapping of layer names to arrays, an xarray.Dataset, a zarr group (object, "
                 "path or URL) or a netCDF file")


def networks_of(
    zoo: Any, what: str = "zoo", storage_options: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Network names and each network's layers (:func:`layers_of`) in a zoo.

    A zoo is a mapping of network names to networks (each a mapping of layer names to
    arrays, an ``xarray.Dataset``, a zarr group object or path, a netCDF file), a zarr group
    (object, path or URL) whose child groups are the networks (as several
    :func:`~dask_repsim.capture_activations` calls write into one store), or an
    ``xarray.DataTree`` whose child nodes are the networks, their data variables the layers.
    The networks of a store or a tree come in name order, a mapping's in its own; a group's or
    a node's layers in name order (a capture's in network order). ``what`` names the zoo in
    errors.

    Examples
    --------
    >>> import numpy as np
    >>> zoo = networks_of({"seed0": {"fc": np.zeros((4, 2))}, "seed1": {"fc": np.ones((4, 2))}})
    >>> {net: list(layers) for net, layers in zoo.items()}
    {'seed0': ['fc'], 'seed1': ['fc']}
    """
    if isinstance(zoo, str | os.PathLike):
        zoo = _open_zoo(os.fspath(zoo), what, storage_options)
    if isinstance(zoo, _DATATREE):
        extra = list(zoo.data_vars)
        if extra:
            raise ValueError(f"the {what}'s root node holds data variables {extra}; a zoo's "
                             "networks are its child nodes, their data variables the layers")
        networks = {str(k): _node_dataset(v) for k, v in sorted(zoo.children.items())}
    elif isinstance(zoo, zarr.Group):
        arrays = dict(zoo.arrays())
        extra = sorted(set(arrays) - set(_coordinates(arrays)))
        if extra:
            raise ValueError(f"the zarr group at {zoo.store_path} holds arrays ({', '.join(extra)})"
                             f" beside its network groups; a zoo holds one group per network")
        networks = dict(sorted(zoo.groups()))
    elif isinstance(zoo, Mapping) and not isinstance(zoo, xr.Dataset):
        networks = {str(k): v for k, v in zoo.items()}
    else:
        one = " (one network: give {name: network})" if isinstance(zoo, xr.Dataset) else ""
        raise TypeError(f"the {what} must be {ZOO_FORMS}; got {type(zoo).__name__}{one}")
    if not networks:
        raise ValueError(f"the {what} holds no networks")
    out = {name: _network(net, name, what, storage_options) for name, net in networks.items()}
    for name, layers in out.items():
        if not layers:
            raise ValueError(f"network {name!r} of the {what} holds no layers")
    return out


def _open_zoo(path: str, what: str, storage_options: Mapping[str, Any] | None) -> Any:
    """The zarr group at ``path``, with an error saying what a zoo store is otherwise."""
    try:
        node = _open_zarr(path, storage_options)
    except FileNotFoundError as err:
        hint = (f"; a zoo store needs its root group beside one group per network "
                f"(zarr.open_group({path!r}, mode='a') creates it)") if os.path.isdir(path) else ""
        raise FileNotFoundError(f"no zarr group at {path!r}{hint}") from err
    if isinstance(node, zarr.Array):
        raise ValueError(f"the {what} at {path!r} is a zarr array (one layer); a zoo store is "
                         "a group holding one group per network")
    return node


def _node_dataset(node: Any) -> xr.Dataset:
    """A DataTree node's layers as a Dataset (with the coordinates it inherits), in name
    order unless it holds a capture."""
    ds = node.to_dataset()
    return ds if CAPTURE_ATTR in ds.attrs else ds[sorted(map(str, ds.data_vars))]


def _network(net: Any, name: str, what: str,
             storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The layers of the network ``name`` (:func:`layers_of`), which must be one."""
    if isinstance(net, _DATATREE):
        net = _node_dataset(net)
    if isinstance(net, str | os.PathLike):
        path = os.fspath(net)
        netcdf = ("://" not in path and os.path.isfile(path)) or path.lower().endswith(
            _NETCDF_SUFFIXES)
        net = net if netcdf else _open_zarr(path, storage_options)
    if isinstance(net, zarr.Group):
        arrays = dict(net.arrays())
        if not set(arrays) - _coordinate_names(arrays):
            return {}
    if isinstance(net, np.ndarray | da.Array | zarr.Array | xr.DataArray):
        raise TypeError(f"{what}[{name!r}] is an array (one layer), not a network: a zoo maps "
                        f"network names to networks ({NETWORK_FORMS}); to compare the layers "
                        "of one network, use compare()")
    if not isinstance(net, Mapping | xr.Dataset | zarr.Group | str | os.PathLike):
        raise TypeError(f"{what}[{name!r}] is a {type(net).__name__}, not a network "
                        f"({NETWORK_FORMS})")
    return layers_of(net, name, storage_options)


#: Group attribute in which :func:`~dask_repsim.capture_activations` records its state,
#: the layers in the order the user gave them (network order) among it.
CAPTURE_ATTR = "dask_repsim_capture"


def _capture_order(attrs: Mapping[str, Any]) -> Any:
    """Sort key for ``(name, array)`` items of a group or Dataset with these attributes: the
    order of a capture's layers, if it is one, else by name (anything else after, by name)."""
    state = attrs.get(CAPTURE_ATTR)
    listed = state.get("layers") if isinstance(state, Mapping) else None
    position = {str(n): i for i, n in enumerate(listed)} if isinstance(listed, list) else {}
    return lambda item: (position.get(item[0], len(position)), item[0])


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind == "c":
        raise TypeError(f"{name} has complex dtype {dtype}; activations must be real numbers")
    if dtype.kind not in "biuf" and dtype.name != "bfloat16":
        raise TypeError(f"{name} has non-numeric dtype {dtype}; activations must be numbers")


def _rows_chunk(shape: tuple[int, ...]) -> int:
    row_bytes = 8 * max(1, math.prod(shape[1:]))
    return max(1, min(shape[0], _TARGET_CHUNK_BYTES // row_bytes))


_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")


def _local(path: str) -> str:
    # Workers of a cluster have their own working directory, and zarr reads missing chunks as
    # fill values: a relative path would silently give zeros there.
    return path if "://" in path else os.path.abspath(path)


def _open_zarr(path: str, storage_options: Mapping[str, Any] | None) -> zarr.Array | zarr.Group:
    if "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(f"no zarr array or group at {path!r}")
    kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
    try:
        return zarr.open(store=_local(path), mode="r", **kwargs)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no zarr array or group at {path!r}") from err


def _open_zarr_path(path: str, storage_options: Mapping[str, Any] | None) -> zarr.Array:
    node = _open_zarr(path, storage_options)
    if not isinstance(node, zarr.Array):
        names = sorted(node.array_keys())
        raise ValueError(
            f"{path!r} is a zarr group, not an array; give one of its arrays "
            f"({', '.join(names) or 'it has none'}), or pass the group to compare()"
        )
    return node


def split_dims(
    x: xr.DataArray, sample_dims: Sequence[Hashable] | str | None, name: str
) -> tuple[tuple[Hashable, ...], tuple[Hashable, ...]]:
    """(sample dims, feature dims) of a DataArray, checked against what it has.

    Sample dims are found by role (:mod:`dask_repsim.io.layouts`): ``"height"`` also names a
    capture's ``conv1.height``. The default is the dim ``sample``, else the first one.

    Examples
    --------
    >>> x = xr.DataArray(np.zeros((2, 3, 4, 4)),
    ...                  dims=("sample", "conv1.channel", "conv1.height", "conv1.width"))
    >>> split_dims(x, ("sample", "height", "width"), "conv1")
    (('sample', 'conv1.height', 'conv1.width'), ('conv1.channel',))
    """
    if sample_dims is None:
        sample_dims = resolve(x.dims, "sample", name) or x.dims[:1]
    missing = [d for d in as_names(sample_dims) if not matching(x.dims, d)]
    if missing:
        raise ValueError(
            f"sample_dims {tuple(missing)} not in {name}; "
            f"its dims are {tuple(x.dims)}"
        )
    found = resolve(x.dims, sample_dims, name)
    return found, tuple(d for d in x.dims if d not in found)


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
    pass): for a DataArray the ``spatial_dims`` it has, by role (also as ``<layer>.height``,
    the names :func:`~dask_repsim.capture_activations` gives layers whose grids
    differ; ``spatial_dims=("token",)`` averages a sequence's tokens), for a plain array every
    axis after the second (the NCHW layout frameworks record). Plain arrays take their first
    axis as samples whatever ``sample_dims`` says: it names dims of DataArrays.

    Examples
    --------
    >>> import numpy as np
    >>> layer = as_layer(np.zeros((10, 2, 3)), name="conv1")
    >>> layer.data.shape
    (10, 6)
    """
    if isinstance(x, xr.DataArray):
        samples, features = split_dims(x, sample_dims, name)
        if not features:
            raise ValueError(
                f"{name} has dims {tuple(x.dims)}, all of them sample dims; activations need "
                "at least one feature dim"
            )
        _check_dtype(x.dtype, name)
        if _pooling(pool):
            # a capture names a layer's own spatial dims "<layer>.height" when layers differ
            pooled = [d for d in resolve(x.dims, spatial_dims, name) if d in features]
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
        arr = _from_zarr(x, name)
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
