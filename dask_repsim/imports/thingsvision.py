"""thingsvision's feature files into a capture store.

The layouts are those written by thingsvision 2.7.3 (github.com/ViCCo-Group/thingsvision,
commit 57e91c97, files ``thingsvision/utils/storing/helpers.py``,
``thingsvision/core/extraction/base.py`` and ``thingsvision/utils/data/helpers.py``):

- ``save_features(features, out_path, file_format)`` writes one matrix (samples first) to
  ``out_path/features.npy`` (``np.save``), ``features.pt`` (``torch.save`` of a tensor),
  ``features.hdf5`` (h5py dataset ``features``), ``features.txt`` (``np.savetxt``, 2-d only)
  or ``features.mat`` (``scipy.io.savemat``: one variable per image, named by its line of
  ``file_names.txt`` without the image suffix, when that file is in ``out_path``; else one
  variable ``features``). When that runs out of memory it splits the rows into
  ``features_01.npy``, ``features_02.npy``, ... (datasets ``features_01``, ... of
  ``features.hdf5``).
- ``extractor.extract_features(..., output_dir=D)`` writes one folder per module,
  ``D/<module>/features<suffix>_<first>-<end>.npy`` (or ``.pt``), every ``step_size``
  batches, or ``D/<module>/features<suffix>.npy`` with ``save_in_one_file=True``.
- thingsvision's ``ImageDataset`` writes ``file_names.txt`` to its ``out_path``: the images in
  the order their features are extracted, one per line (their names, or their paths for a
  dataset of class folders). Those lines are the sample ids.

What is streamed: ``.npy`` (memory map), ``.pt`` (``torch.load(mmap=True)``), HDF5 (h5py
slices), ``.txt`` (read line by line) and per-image ``.mat`` variables (a chunk of
variables per read). A ``.mat`` file's single ``features`` variable cannot be read in parts:
it is read whole, and refused over :data:`~dask_repsim.imports.common.WHOLE_FILE_LIMIT`.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .arrays import hdf5_datasets, hdf5_rows, npy_rows
from .common import (
    Rows,
    Source,
    concat,
    file_size,
    read_ids,
    torch_dtype,
    torch_load,
    torch_numpy,
    write_store,
)

FORMATS = ("npy", "pt", "hdf5", "mat", "txt")
FILE_NAMES = "file_names.txt"
# thingsvision's rm_suffix: the image suffixes it strips from .mat variable names
_IMAGE_SUFFIX = re.compile(r"(.eps|.jpg|.jpeg|.png|.PNG|.tif|.tiff)$")
_ONE = re.compile(r"^features\.(npy|pt|hdf5|mat|txt)$")
_SPLIT = re.compile(r"^features_(\d+)\.(npy|pt|mat|txt)$")
_MAT_CLASSES = {"double": "float64", "single": "float32", "logical": "bool",
                **{f"{s}int{b}": f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)}}
_MODULE = re.compile(r"^features(?P<suffix>.*?)(?:_(?P<first>\d+)-(?P<end>\d+))?\.(npy|pt)$")


def pt_rows(path: str) -> Rows:
    """The rows of a tensor saved with ``torch.save``, read through a memory map."""
    tensor = torch_load(path)
    if not hasattr(tensor, "shape") or not tensor.shape:
        raise ValueError(f"{path} does not hold a tensor with one row per sample")
    shape, dtype = tuple(tensor.shape), torch_dtype(tensor, path)
    del tensor
    return Rows(shape, dtype, path, lambda a, b: torch_numpy(torch_load(path)[a:b]))


def txt_rows(path: str) -> Rows:
    """The rows of an ``np.savetxt`` file, read line by line (a cursor follows the reads)."""
    with open(path) as f:
        first = f.readline()
        n = (1 if first.strip() else 0) + sum(1 for line in f if line.strip())
    width = np.loadtxt([first], ndmin=2).shape[1] if n else 0
    cursor: dict[str, Any] = {"at": None}

    def fetch(start: int, stop: int) -> np.ndarray:
        if cursor["at"] != start:  # reopen and skip to start (a resume, or a re-read)
            if cursor.get("file"):
                cursor["file"].close()
            cursor["file"] = open(path)  # kept open: reads are in order
            for _ in itertools.islice(cursor["file"], start):
                pass
        lines = list(itertools.islice(cursor["file"], stop - start))
        cursor["at"] = stop
        try:
            return np.loadtxt(lines, ndmin=2)
        except ValueError as err:
            raise ValueError(f"{path}, rows {start}:{stop}: not a table of numbers "
                             f"({err})") from None

    return Rows((n, width), np.dtype(np.float64), path, fetch)


def mat_rows(path: str, names: Sequence[str] | None) -> Rows:
    """A ``.mat`` file's rows: one variable per image (``names``, in order), read a chunk of
    variables at a time, or one ``features`` variable read whole (size-limited)."""
    import scipy.io

    found = {name: (shape, kind) for name, shape, kind in scipy.io.whosmat(path)}
    if names is None or "features" in found:
        if "features" not in found:
            raise ValueError(f"{path} has no variable 'features' and no {FILE_NAMES} names "
                             "its per-image variables")
        shape = found["features"][0]
        file_size(path)
        whole: dict[str, np.ndarray] = {}

        def fetch_whole(start: int, stop: int) -> np.ndarray:
            if not whole:
                whole["x"] = scipy.io.loadmat(path, variable_names=["features"])["features"]
            return whole["x"][start:stop]

        kind = found["features"][1]
        if kind not in _MAT_CLASSES:
            raise TypeError(f"{path}:features holds MATLAB {kind} data; activations must be "
                            "real numbers")
        return Rows(tuple(shape), np.dtype(_MAT_CLASSES[kind]), f"{path}:features",
                    fetch_whole)
    keys = [_IMAGE_SUFFIX.sub("", name) for name in names]
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValueError(f"{path} has no variable {missing[0]!r} (from {FILE_NAMES}); it holds "
                         f"{len(found)} variables")
    shape = found[keys[0]][0]
    one = tuple(shape[1:]) if len(shape) == 2 and shape[0] == 1 else tuple(shape)  # (1, d): a row

    def fetch(start: int, stop: int) -> np.ndarray:
        loaded = scipy.io.loadmat(path, variable_names=keys[start:stop])
        return np.stack([loaded[k].reshape(one) for k in keys[start:stop]])

    sample = scipy.io.loadmat(path, variable_names=keys[:1])[keys[0]]
    return Rows((len(keys), *one), sample.dtype, path, fetch)


def _file_rows(path: str, names: Sequence[str] | None) -> Rows:
    ext = path.rsplit(".", 1)[-1]
    if ext == "npy":
        return npy_rows(path)
    if ext == "pt":
        return pt_rows(path)
    if ext == "txt":
        return txt_rows(path)
    if ext == "mat":
        return mat_rows(path, names)
    keys = hdf5_datasets(path)
    if keys != ["features"]:  # save_features' split: features_01, features_02, ...
        keys = sorted((k for k in keys if re.fullmatch(r"features_\d+", k)),
                      key=lambda k: int(k.split("_")[1]))
        if not keys:
            raise ValueError(f"{path} holds no dataset 'features' (nor features_01, ...)")
    return concat([hdf5_rows(path, k) for k in keys], path)


def _module_rows(folder: str, suffix: str | None) -> Rows:
    """One module's folder of ``extract_features(output_dir=...)``: its batches in order."""
    found: dict[str, list[tuple[int, int, str]]] = {}
    for name in os.listdir(folder):
        match = _MODULE.match(name)
        if match:
            first, end = match["first"], match["end"]
            span = (-1, -1) if first is None else (int(first), int(end))
            found.setdefault(match["suffix"], []).append((*span, os.path.join(folder, name)))
    if suffix is None and len(found) > 1:
        raise ValueError(f"{folder} holds features of several runs (suffixes {sorted(found)}); "
                         "choose one with suffix=")
    key = next(iter(found)) if suffix is None else suffix
    if key not in found:
        raise ValueError(f"{folder} holds no features{key}*.npy or .pt files")
    files = sorted(found[key])
    if len(files) > 1 and files[0][0] == -1:
        raise ValueError(f"{folder} holds both {files[0][2]} and batch files; keep one")
    parts, expected = [], 0
    for first, end, path in files:
        rows = npy_rows(path) if path.endswith(".npy") else pt_rows(path)
        if first != -1 and (first != expected or end - first != rows.shape[0]):
            raise ValueError(f"{path} should hold samples {expected}: (after the previous "
                             f"file), it holds {first}-{end} ({rows.shape[0]} rows)")
        expected += rows.shape[0]
        parts.append(rows)
    return concat(parts, folder)


def _file_names(folder: str, given: str | os.PathLike | None) -> list[str] | None:
    path = os.fspath(given) if given is not None else os.path.join(folder, FILE_NAMES)
    if not os.path.isfile(path):
        if given is not None:
            raise FileNotFoundError(f"no file {path}")
        return None
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines


def thingsvision_source(path: str | os.PathLike, layer: str | None = None,
                        suffix: str | None = None,
                        file_names: str | os.PathLike | None = None) -> Source:
    """The :class:`~dask_repsim.imports.common.Source` of thingsvision's output at ``path``
    (:func:`import_thingsvision` describes the arguments)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file or folder {path}")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    names = _file_names(folder, file_names)
    entries = sorted(os.listdir(folder))
    if os.path.isfile(path):
        chosen = [path]
    else:
        chosen = [os.path.join(path, e) for e in entries if _ONE.match(e)]
        split = sorted((e for e in entries if _SPLIT.match(e)), key=lambda e: int(
            _SPLIT.match(e)[1]))
        chosen = chosen or [os.path.join(path, e) for e in split]
    if chosen:
        if suffix is not None:
            raise ValueError("suffix= applies to the per-module folders of extract_features, "
                             f"not to {chosen[0]}")
        ext = {c.rsplit(".", 1)[-1] for c in chosen}
        if len(ext) > 1:
            raise ValueError(f"{folder} holds features in several formats ({sorted(ext)}); "
                             "give the file to import")
        rows = concat([_file_rows(c, names) for c in chosen], path)
        layers, files = {layer or "features": rows}, chosen
    else:
        if layer is not None:
            raise ValueError(f"layer= names the one matrix of save_features; {path} holds "
                             "one folder per module, whose names are the layers")
        modules = [e for e in entries if os.path.isdir(os.path.join(path, e))
                   and any(_MODULE.match(f) for f in os.listdir(os.path.join(path, e)))]
        if not modules:
            raise ValueError(f"{path} holds no thingsvision features (features.<format>, "
                             f"features_01.<format>, or one folder per module); formats "
                             f"{', '.join(FORMATS)}")
        layers = {m: _module_rows(os.path.join(path, m), suffix) for m in modules}
        files = sorted(os.path.join(path, m, f) for m in modules
                       for f in os.listdir(os.path.join(path, m)) if _MODULE.match(f))
    ids_file = os.fspath(file_names) if file_names is not None else os.path.join(folder,
                                                                                   FILE_NAMES)
    return Source(
        tool="thingsvision", root=folder, files=files + ([ids_file] if names else []),
        layers=layers, ids=None if names is None else read_ids(names, ids_file),
        ids_from=FILE_NAMES if names is not None else "position")


def import_thingsvision(
    path: str | os.PathLike,
    store: Any,
    *,
    layer: str | None = None,
    suffix: str | None = None,
    file_names: str | os.PathLike | None = None,
    layers: Sequence[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_samples: int | None = None,
    dtype: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    preprocessing: Any = None,
    model: str | None = None,
) -> zarr.Group:
    """Import thingsvision's saved features into a capture store, chunk by chunk.

    Parameters
    ----------
    path
        What thingsvision wrote: the ``out_path`` folder of ``save_features`` (``features``
        or ``features_01``, ... in one of the formats npy, pt, hdf5, mat, txt), one such
        file, or the ``output_dir`` of ``extract_features`` (one folder per module, each
        holding ``features<suffix>[_<first>-<end>].npy`` or ``.pt``). The layouts are
        thingsvision 2.7.3's (this module's text says where in its code).
    store
        Where the Zarr v3 group goes (see :func:`~dask_repsim.imports.arrays.import_arrays`).
    layer
        The name of ``save_features``' one matrix in the store (default ``"features"``);
        an error for the per-module layout, whose folder names are the layers.
    suffix
        The ``file_name_suffix`` of the ``extract_features`` run to import, where the
        module folders hold several (``"_train"``, ``"_val"``).
    file_names
        The ``file_names.txt`` of thingsvision's ``ImageDataset`` (one image per line, in
        the order of the features), whose lines become the sample ids. Default:
        ``file_names.txt`` in the features' folder, if there is one; else samples are
        numbered by position.
    layers, resume, overwrite, chunk_samples, dtype, storage_options, preprocessing, model
        As for :func:`~dask_repsim.imports.arrays.import_arrays`.

    Returns
    -------
    zarr.Group
        The capture store, one array per layer and the ``sample`` ids.

    Examples
    --------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> with open(os.path.join(out, "file_names.txt"), "w") as f:
    ...     _ = f.write("".join(f"img{i}.jpg\\n" for i in range(6)))
    >>> np.save(os.path.join(out, "features.npy"), np.ones((6, 4), dtype="float32"))
    >>> group = import_thingsvision(out, os.path.join(out, "acts.zarr"), layer="fc7")
    >>> group["fc7"].shape, group["sample"][:2].tolist()
    ((6, 4), ['img0.jpg', 'img1.jpg'])
    """
    source = thingsvision_source(path, layer, suffix, file_names)
    return write_store(
        source, store, layers=layers, resume=resume, overwrite=overwrite,
        chunk_samples=chunk_samples, dtype=dtype, storage_options=storage_options,
        preprocessing=preprocessing, model=model)
