"""Net2Brain's extracted features into a capture store.

The layout is that of Net2Brain 1.3.1 (github.com/cvai-roig-lab/Net2Brain, commit b59ed47d,
``net2brain/feature_extraction.py``, ``FeatureExtractor.extract`` and
``consolidate_per_layer``): ``extract`` runs the images of ``data_path`` in sorted order and
writes one ``np.savez`` file per image, ``save_path/<stem>.npz`` (the stem is the image's
name up to its first dot), holding one array per layer (keyed by layer name, with the
batch axis of length 1 in front). ``consolidate_per_layer`` turns these into one
``np.savez_compressed`` file per layer, ``save_path/consolidated_<layer>.npz``, holding one
array per image keyed by its stem. Both are read here, a chunk of images at a time; the
sample ids are the image stems, in sorted order (as ``extract`` ran them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .common import Rows, Source, shared, write_store

PREFIX = "consolidated_"


def _one(array: np.ndarray) -> np.ndarray:
    """One image's array without its batch axis of length 1."""
    return array[0] if array.ndim > 1 and array.shape[0] == 1 else array.reshape(
        array.shape or (1,))


def _npz(path: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"cannot read {path} as a Net2Brain .npz file ({err})") from None


def _per_image(folder: str, files: list[str]) -> dict[str, Rows]:
    """Layers of one ``.npz`` per image: each chunk reads its images' files once."""
    paths = [os.path.join(folder, f) for f in files]
    with _npz(paths[0]) as first:
        layout = {key: (_one(first[key]).shape, first[key].dtype) for key in first.files}
    if not layout:
        raise ValueError(f"{paths[0]} holds no arrays")

    def load(start: int, stop: int) -> dict[str, np.ndarray]:
        rows: dict[str, list[np.ndarray]] = {key: [] for key in layout}
        for path in paths[start:stop]:
            with _npz(path) as data:
                for key, (shape, dtype) in layout.items():
                    if key not in data.files:
                        raise ValueError(f"{path} has no layer {key!r} (which "
                                         f"{paths[0]} has)")
                    one = _one(data[key])
                    if one.shape != shape or one.dtype != dtype:
                        raise ValueError(f"{path}: layer {key!r} is {one.dtype} of shape "
                                         f"{one.shape}, in {paths[0]} {dtype} of {shape}")
                    rows[key].append(one)
        return {key: np.stack(value) for key, value in rows.items()}

    of = shared(load)
    return {key: Rows((len(paths), *shape), dtype, f"{folder}/*.npz:{key}", of(key))
            for key, (shape, dtype) in layout.items()}


def _consolidated(folder: str, files: list[str]) -> tuple[dict[str, Rows], list[str]]:
    """Layers of one ``consolidated_<layer>.npz`` each, and the image stems (sorted)."""
    layers, stems = {}, None
    for name in files:
        path = os.path.join(folder, name)
        with _npz(path) as data:
            keys = sorted(data.files)
            if not keys:
                raise ValueError(f"{path} holds no images")
            first = _one(data[keys[0]])
        if stems is not None and keys != stems:
            raise ValueError(f"{path} holds other images than {files[0]} "
                             f"({len(keys)} vs {len(stems)})")
        stems = keys

        def fetch(start: int, stop: int, path: str = path, keys: list = keys) -> np.ndarray:
            with _npz(path) as data:
                return np.stack([_one(data[k]) for k in keys[start:stop]])

        layers[name[len(PREFIX):-4]] = Rows((len(keys), *first.shape), first.dtype, path, fetch)
    return layers, stems or []


def net2brain_source(folder: str | os.PathLike) -> Source:
    """The :class:`~dask_repsim.imports.common.Source` of a Net2Brain ``save_path``."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no folder {folder}")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".npz"))
    merged = [f for f in files if f.startswith(PREFIX)]
    if not files:
        raise ValueError(f"{folder} holds no .npz files (Net2Brain writes one per image, or "
                         "consolidated_<layer>.npz per layer)")
    if merged and len(merged) != len(files):
        raise ValueError(f"{folder} holds both consolidated_*.npz and per-image .npz files; "
                         "keep one of the two")
    if merged:
        layers, stems = _consolidated(folder, merged)
    else:
        layers, stems = _per_image(folder, files), [f[:-4] for f in files]
    return Source(tool="net2brain", root=folder, files=[os.path.join(folder, f) for f in files],
                  layers=layers, ids=np.array(stems, dtype=str), ids_from="image file stems")


def import_net2brain(
    folder: str | os.PathLike,
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
    """Import Net2Brain's extracted features into a capture store, chunk by chunk.

    Parameters
    ----------
    folder
        The ``save_path`` of Net2Brain's ``FeatureExtractor.extract``: one ``<image>.npz`` per
        image (one array per layer), or after ``consolidate_per_layer`` one
        ``consolidated_<layer>.npz`` per layer (one array per image). Each image's arrays
        lose their leading batch axis of length 1. The sample ids are the image stems, in
        sorted order.
    store
        Where the Zarr v3 group goes (see :func:`~dask_repsim.imports.arrays.import_arrays`).
    layers, resume, overwrite, chunk_samples, dtype, storage_options, preprocessing, model
        As for :func:`~dask_repsim.imports.arrays.import_arrays`.

    Returns
    -------
    zarr.Group
        The capture store, one array per layer and the ``sample`` ids.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(5):
    ...     np.savez(os.path.join(folder, f"img{i}.npz"), layer1=np.full((1, 3), i, "f4"))
    >>> group = import_net2brain(folder, os.path.join(folder, "acts.zarr"))
    >>> group["layer1"][:, 0].tolist(), group["sample"][:2].tolist()
    ([0.0, 1.0, 2.0, 3.0, 4.0], ['img0', 'img1'])
    """
    return write_store(
        net2brain_source(folder), store, layers=layers, resume=resume, overwrite=overwrite,
        chunk_samples=chunk_samples, dtype=dtype, storage_options=storage_options,
        preprocessing=preprocessing, model=model)
