"""Brain-Score activations (brainio ``NeuroidAssembly`` netCDF files) into a capture store.

The layout is that of brain-score/model-tools (commit 75365b54,
``model_tools/activations/core.py``, ``_package_layer`` and ``_package``) saved by brainio
1.1.0 (commit acff11f1, ``brainio/packaging.py``, ``write_netcdf``): a DataArray of dims
``(presentation, neuroid)`` (``stimulus_path`` before a stimulus set's metadata is
attached), whose MultiIndex coordinates are reset to plain ones for netCDF. Along
``neuroid``: ``layer`` (the layers, concatenated in network order), ``neuroid_id``
(``model.layer.number``), ``neuroid_num``, ``model`` and, by layer type, ``channel``,
``channel_x``, ``channel_y`` or ``embedding``; along ``presentation``: ``stimulus_path``,
``stimulus_id`` (and a stimulus set's columns). brainio writes it as the variable ``data``
of a compressed Dataset (``compress=True``), else as the DataArray itself.

Each value of ``layer`` becomes a layer of the store, its feature dim ``neuroid``
(``<layer>.neuroid`` where layers differ in size); its neuroid coordinates (all but
``layer``) become arrays ``<layer>.<coordinate>`` along that dim, listed in the layer's
``coordinates`` attribute, so xarray opens them as coordinates; the other presentation
coordinates become arrays along ``sample``, listed there too. The sample ids are
``stimulus_id`` (else ``image_id``, else ``stimulus_path``, else positions). The file is
opened lazily with xarray and read a chunk of presentations (all neuroids) at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
import zarr

from .common import Rows, Source, read_ids, shared, write_store

NEUROID = "neuroid"
ID_COORDS = ("stimulus_id", "image_id", "stimulus_path")


def _variable(ds: xr.Dataset, path: str) -> xr.DataArray:
    found = [v for v in ds.data_vars.values() if NEUROID in v.dims]
    if len(found) != 1:
        raise ValueError(f"{path} holds {len(found)} variables with a {NEUROID!r} dimension "
                         f"({', '.join(map(str, ds.data_vars))}); a brainio assembly file "
                         "holds one")
    var = found[0]
    if var.ndim != 2:
        raise ValueError(f"{path}: {var.name!r} has dims {var.dims}; a model activations "
                         f"assembly has two, (presentation, {NEUROID})")
    return var


def _ids(var: xr.DataArray, dim: str) -> tuple[np.ndarray | None, str]:
    for name in ID_COORDS:
        if name in var.coords and var[name].dims == (dim,):
            values = var[name].values
            if values.dtype.kind in "iu":
                return values.astype(np.int64), name
            return read_ids([str(v) for v in values.tolist()], name), name
    return None, "position"


def _layers(var: xr.DataArray, path: str) -> dict[str, np.ndarray]:
    """Each layer's neuroid indices, layers in the order they first appear."""
    if "layer" not in var.coords:
        stem = os.path.basename(path).rsplit(".", 1)[0]
        return {stem: np.arange(var.sizes[NEUROID])}
    values = np.asarray(var["layer"].values).astype(str)
    _, first = np.unique(values, return_index=True)
    return {str(values[i]): np.flatnonzero(values == values[i]) for i in np.sort(first)}


def _coords(var: xr.DataArray, index: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for name, coord in var.coords.items():
        if coord.dims == (NEUROID,) and name not in ("layer", NEUROID):
            values = np.asarray(coord.values)[index]
            out[str(name)] = values.astype(str) if values.dtype.kind in "OSU" else values
    return out


def _sample_coords(var: xr.DataArray, dim: str, ids_from: str) -> dict[str, np.ndarray]:
    """The coordinates along the presentations (the stimulus set's columns), but the ids."""
    out = {}
    for name, coord in var.coords.items():
        if coord.dims == (dim,) and name not in (dim, ids_from):
            values = np.asarray(coord.values)
            out[str(name)] = values.astype(str) if values.dtype.kind in "OSU" else values
    return out


def brainscore_source(path: str | os.PathLike) -> Source:
    """The :class:`~dask_repsim.imports.common.Source` of a brainio netCDF file."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file {path}")
    try:
        ds = xr.open_dataset(path)  # lazy: only the rows indexed are read
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot open {path} as netCDF ({err})") from None
    var = _variable(ds, path)
    dim = next(d for d in var.dims if d != NEUROID)
    ids, ids_from = _ids(var, str(dim))
    groups = _layers(var, path)
    dtype = var.dtype

    def load(start: int, stop: int) -> dict[str, np.ndarray]:
        rows = var.isel({dim: slice(start, stop)}).transpose(dim, NEUROID).values
        return {name: rows[:, index] for name, index in groups.items()}

    of = shared(load)
    n = var.sizes[dim]
    layers = {name: Rows((n, len(index)), dtype, f"{path}:{var.name}[layer={name!r}]", of(name))
              for name, index in groups.items()}
    models = np.unique(var["model"].values).astype(str) if "model" in var.coords else []
    return Source(
        tool="brainscore", root=os.path.dirname(path), files=[path], layers=layers, ids=ids,
        ids_from=ids_from, model=str(models[0]) if len(models) == 1 else None,
        coords={name: _coords(var, index) for name, index in groups.items()},
        sample_coords=_sample_coords(var, str(dim), ids_from),
        feature_dims={name: (NEUROID,) for name in groups})


def import_brainscore(
    path: str | os.PathLike,
    store: Any,
    *,
    layers: Sequence[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_samples: int | None = None,
    dtype: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    preprocessing: Any = None,
    model: str | None = None,
) -> zarr.Group:
    """Import a Brain-Score activations assembly (brainio netCDF) into a capture store.

    Parameters
    ----------
    path
        A netCDF file holding one ``NeuroidAssembly`` of dims ``(presentation, neuroid)``
        as brainio's ``write_netcdf`` (or ``DataArray.to_netcdf`` after ``reset_index``)
        writes it. One layer per value of its ``layer`` coordinate (a file without one is
        one layer named after the file), in the order they appear; ``stimulus_id`` (else
        ``image_id``, ``stimulus_path``) gives the sample ids. The neuroid coordinates are
        kept as arrays ``<layer>.<coordinate>`` along the layer's feature dim, the other
        coordinates along ``presentation`` (``stimulus_path``, a stimulus set's columns) as
        arrays along ``sample``; all are listed in each layer's ``coordinates`` attribute.
    store
        Where the Zarr v3 group goes (see :func:`~dask_repsim.imports.arrays.import_arrays`).
    layers, resume, overwrite, chunk_samples, dtype, storage_options, preprocessing
        As for :func:`~dask_repsim.imports.arrays.import_arrays`.
    model
        The model's name in the provenance (default: the ``model`` coordinate's value).

    Returns
    -------
    zarr.Group
        The capture store: a ``(sample, neuroid)`` array per layer, its neuroid coordinates,
        and the ``sample`` ids.

    Examples
    --------
    >>> import tempfile
    >>> assembly = xr.DataArray(
    ...     np.arange(12.0).reshape(3, 4), dims=("presentation", "neuroid"),
    ...     coords={"stimulus_id": ("presentation", ["a", "b", "c"]),
    ...             "layer": ("neuroid", ["conv1", "conv1", "fc", "fc"]),
    ...             "neuroid_num": ("neuroid", [0, 1, 2, 3])})
    >>> path = os.path.join(tempfile.mkdtemp(), "acts.nc")
    >>> assembly.to_dataset(name="data").to_netcdf(path)
    >>> group = import_brainscore(path, path + ".zarr")
    >>> group["fc"][...].tolist(), group["fc.neuroid_num"][...].tolist()
    ([[2.0, 3.0], [6.0, 7.0], [10.0, 11.0]], [2, 3])
    >>> xr.open_zarr(path + ".zarr")["fc"].coords["fc.neuroid_num"].dims
    ('neuroid',)
    """
    return write_store(
        brainscore_source(path), store, layers=layers, resume=resume, overwrite=overwrite,
        chunk_samples=chunk_samples, dtype=dtype, storage_options=storage_options,
        preprocessing=preprocessing, model=model)
