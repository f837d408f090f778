"""Plain array files into a capture store: per-layer ``.npy`` files and HDF5 files.

A ``.npy`` file is one layer, named by its stem, read through ``np.load(mmap_mode="r")`` a
chunk of rows at a time (the map is opened per chunk and closed again, so that the pages
read do not pile up in the process). An HDF5 file gives one layer per numeric dataset, named
by its path in the file with ``/`` written ``.`` (``block1/conv`` is the layer
``block1.conv``: a ``/`` would make a Zarr group), read by h5py slicing. A 1-d array called
``sample`` (``sample.npy``, or the dataset ``/sample``) holds the samples' ids, as in a
capture store; without it samples are numbered by position.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from ..capture.rules import SAMPLE
from .common import Rows, Source, read_ids, write_store

SUFFIXES = (".npy", ".h5", ".hdf5")


def npy_rows(path: str, where: str | None = None) -> Rows:
    """A ``.npy`` file's rows, read a chunk at a time through a memory map.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "fc.npy")
    >>> np.save(path, np.arange(12.0).reshape(4, 3))
    >>> rows = npy_rows(path)
    >>> rows.shape, rows.read(1, 2).tolist()
    ((4, 3), [[3.0, 4.0, 5.0]])
    """
    where = where or path
    try:
        mapped = np.load(path, mmap_mode="r")
    except ValueError as err:  # pickled objects cannot be mapped
        raise TypeError(f"{where} holds Python objects ({err}); activations must be "
                        "numbers") from None
    shape, dtype = tuple(mapped.shape), mapped.dtype
    del mapped
    if not shape:
        raise ValueError(f"{where} holds a single number, not one row per sample")

    def fetch(start: int, stop: int) -> np.ndarray:
        mapped = np.load(path, mmap_mode="r")
        try:
            return np.array(mapped[start:stop])
        finally:
            del mapped

    return Rows(shape, dtype, where, fetch)


def hdf5_rows(path: str, key: str) -> Rows:
    """The rows of dataset ``key`` of an HDF5 file, read by h5py slicing.

    Examples
    --------
    >>> import h5py, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "acts.h5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("block1/conv", data=np.ones((5, 2, 3)))
    >>> hdf5_rows(path, "block1/conv").shape
    (5, 2, 3)
    """
    import h5py

    where = f"{path}:/{key}"
    with h5py.File(path, "r") as f:
        if not isinstance(f.get(key), h5py.Dataset):
            raise ValueError(f"{path} has no dataset {key!r}")
        shape, dtype = tuple(f[key].shape), f[key].dtype
    if not shape:
        raise ValueError(f"{where} holds a single number, not one row per sample")

    def fetch(start: int, stop: int) -> np.ndarray:
        with h5py.File(path, "r") as f:
            return f[key][start:stop]

    return Rows(shape, dtype, where, fetch)


def hdf5_datasets(path: str) -> list[str]:
    """The paths of the datasets in an HDF5 file, in h5py's visiting order."""
    import h5py

    found: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.append(name)
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def _files(source: Any) -> tuple[str, list[str]]:
    """The folder (for relative names) and the array files of a folder, file or list."""
    if isinstance(source, str | os.PathLike):
        path = os.path.abspath(os.fspath(source))
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(SUFFIXES))
            if not files:
                raise ValueError(f"{path} holds no .npy, .h5 or .hdf5 files")
            return path, files
        paths = [path]
    else:
        paths = [os.path.abspath(os.fspath(p)) for p in source]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no file {path}")
        if not path.lower().endswith(SUFFIXES):
            raise ValueError(f"{path} is not a .npy, .h5 or .hdf5 file")
    if not paths:
        raise ValueError("no files given")
    return os.path.commonpath([os.path.dirname(p) for p in paths]), paths


def _ids(rows: Rows) -> np.ndarray:
    if len(rows.shape) != 1:
        raise ValueError(f"{rows.where} (the sample ids) must be 1-d, not of shape {rows.shape}")
    ids = rows.read(0, rows.shape[0])
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    text = [i.decode() if isinstance(i, bytes) else str(i) for i in ids.tolist()]
    return read_ids(text, rows.where)


def arrays_source(source: Any) -> Source:
    """The :class:`~dask_repsim.imports.common.Source` of a folder, file or list of files."""
    root, files = _files(source)
    layers: dict[str, Rows] = {}
    for path in files:
        if path.lower().endswith(".npy"):
            found = {os.path.basename(path)[:-4]: npy_rows(path)}
        else:
            found = {key.replace("/", "."): hdf5_rows(path, key) for key in hdf5_datasets(path)}
        for name, rows in found.items():
            if name in layers:
                raise ValueError(f"two arrays are called {name!r}: {layers[name].where} and "
                                 f"{rows.where}; give the files one at a time")
            layers[name] = rows
    ids_rows = layers.pop(SAMPLE, None)
    if not layers:
        raise ValueError(f"{root}: the files hold no arrays besides the sample ids")
    kinds = sorted({"npy" if f.lower().endswith(".npy") else "hdf5" for f in files})
    return Source(
        tool="+".join(kinds), root=root, files=files, layers=layers,
        ids=None if ids_rows is None else _ids(ids_rows),
        ids_from="position" if ids_rows is None else os.path.relpath(ids_rows.where, root))


def import_arrays(
    source: str | os.PathLike | Sequence[str | os.PathLike],
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
    """Import ``.npy`` and HDF5 files of activations into a capture store, chunk by chunk.

    Parameters
    ----------
    source
        A folder (its ``.npy``, ``.h5`` and ``.hdf5`` files, in name order), one file, or a
        list of files. Each ``.npy`` file is a layer named by its stem; each numeric dataset
        of an HDF5 file a layer named by its path (``/`` written ``.``). Samples along the
        first axis; every layer must hold the same number. A 1-d array ``sample``
        (``sample.npy``, or the dataset ``/sample``) gives the samples' ids (ints or
        strings, unique); without it, samples are numbered by position.
    store
        Where the Zarr v3 group goes: a local path, an fsspec URL (with
        ``storage_options``) or a zarr store object.
    layers
        The layers to import, in the order the store lists them (default: all, in file
        order). An HDF5 file with datasets that are not activations (strings, metadata)
        needs them named here.
    resume
        Continue an interrupted import of the same files: the committed samples are kept,
        the rest written again. The files' names and sizes, the sample ids and the first
        samples' values are compared with the interrupted run's; a difference is an error.
        On a store that does not exist yet, a new import starts.
    overwrite
        With ``resume=False``, replace whatever is at the store.
    chunk_samples
        Samples per Zarr chunk (default: about 32 MiB of the widest layer). Memory use is
        about two chunks of every layer.
    dtype
        Storage dtype (e.g. ``"float16"``); default the files' own. A value that does not
        fit (a finite number that would become infinite) is an error.
    storage_options
        fsspec options for a URL ``store``.
    preprocessing
        What was done to the inputs, recorded in the store's provenance.
    model
        The model's name, recorded in the provenance (default: the file format).

    Returns
    -------
    zarr.Group
        The capture store: an array per layer (``dimension_names`` samples first), the
        ``sample`` ids, the import's state and its provenance (``source``: the tool and the
        files read).

    Examples
    --------
    >>> import tempfile, xarray as xr
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "fc1.npy"), np.arange(40.0).reshape(10, 4))
    >>> np.save(os.path.join(folder, "sample.npy"), np.arange(100, 110))
    >>> group = import_arrays(folder, os.path.join(folder, "acts.zarr"), chunk_samples=4)
    >>> group["fc1"].shape, group["sample"][:3].tolist()
    ((10, 4), [100, 101, 102])
    >>> xr.open_zarr(os.path.join(folder, "acts.zarr")).fc1.dims
    ('sample', 'unit')
    """
    return write_store(
        arrays_source(source), store, layers=layers, resume=resume, overwrite=overwrite,
        chunk_samples=chunk_samples, dtype=dtype, storage_options=storage_options,
        preprocessing=preprocessing, model=model)
