"""A Hugging Face ``datasets.Dataset`` of activation columns into a capture store.

A ``Dataset`` is an Apache Arrow table, memory-mapped from its cache files when it was loaded
or saved on disk (``load_dataset``, ``load_from_disk``), so it is read in slices of rows
without being loaded whole: each chunk of samples is one ``dataset.with_format("numpy")[start:
stop]`` of the layer columns. A layer is a column of fixed-shape numbers: an ``Array2D`` to
``Array5D`` feature, or a fixed-length ``List``/``Sequence`` of numbers (nested lists of fixed
lengths too); other columns (text, labels, variable-length lists) are not layers unless named
in ``layers=``, where a column that is not one is an error. ``id_column=`` names the column of
sample ids (ints or strings, unique); without it samples are numbered by position.

A streaming ``IterableDataset`` (``load_dataset(..., streaming=True)``) has no length and no
slices to resume from: it is refused, with the way to save it first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .common import Rows, Source, write_store

#: feature types whose every value has one fixed shape
_ARRAYS = ("Array2D", "Array3D", "Array4D", "Array5D")


def _fixed_shape(feature: Any) -> tuple[int, ...] | None:
    """The shape of each value of a column of fixed-shape numbers, or None for any other."""
    kind = type(feature).__name__
    if kind in _ARRAYS:
        return tuple(int(s) for s in feature.shape)
    if kind in ("List", "Sequence", "LargeList"):
        length = getattr(feature, "length", -1)
        inner = _fixed_shape(getattr(feature, "feature", None))
        if length is None or length < 0 or inner is None:
            return None
        return (int(length), *inner)
    if kind == "Value" and np.dtype(_numpy_dtype(feature)).kind in "biuf":
        return ()
    return None


def _numpy_dtype(feature: Any) -> str:
    """The numpy dtype of a feature's numbers ("object" for text and the like)."""
    while not hasattr(feature, "dtype") and hasattr(feature, "feature"):
        feature = feature.feature
    name = str(getattr(feature, "dtype", "object"))
    try:
        return str(np.dtype(name))
    except TypeError:
        return "object"


def _columns(dataset: Any, layers: Sequence[str] | None, id_column: str | None) -> list[str]:
    """The layer columns: those asked for, checked, else every non-scalar numeric array."""
    shapes = {name: _fixed_shape(f) for name, f in dataset.features.items()}
    if layers is not None:
        layers = [layers] if isinstance(layers, str) else list(layers)
        missing = [c for c in layers if c not in shapes]
        if missing:
            raise ValueError(f"no column(s) {missing} in the dataset; it has {list(shapes)}")
        bad = [c for c in layers if shapes[c] is None]
        if bad:
            raise ValueError(f"column(s) {bad} do not hold numbers of one fixed shape "
                             f"({', '.join(str(dataset.features[c]) for c in bad)}), so they "
                             "are not layers")
        return layers
    found = [c for c, s in shapes.items() if s and c != id_column]
    if not found:
        raise ValueError(f"the dataset has no column of fixed-shape numeric arrays (its "
                         f"columns: {dict(dataset.features)}); name the layers in layers=")
    return found


def _ids(dataset: Any, id_column: str | None) -> np.ndarray | None:
    if id_column is None:
        return None
    if id_column not in dataset.features:
        raise ValueError(f"no column {id_column!r} in the dataset; it has "
                         f"{list(dataset.features)}")
    ids = np.asarray(dataset.with_format("numpy", columns=[id_column])[id_column])
    if ids.ndim != 1 or ids.dtype.kind not in "iuUSO":
        raise ValueError(f"column {id_column!r} does not hold one int or string per sample")
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


def dataset_source(dataset: Any, layers: Sequence[str] | None = None,
                   id_column: str | None = None) -> Source:
    """The :class:`~dask_repsim.imports.common.Source` of a ``datasets.Dataset`` (or the
    folder ``Dataset.save_to_disk`` wrote)."""
    if isinstance(dataset, str | os.PathLike):
        import datasets

        dataset = datasets.load_from_disk(os.fspath(dataset))
    kind = type(dataset).__name__
    if kind in ("IterableDataset", "DatasetDict", "IterableDatasetDict") or not hasattr(
            dataset, "with_format") or not hasattr(dataset, "features"):
        hint = (" pick a split (dataset['train'])" if "Dict" in kind else
                " save it with Dataset.from_generator(...).save_to_disk() or load it without "
                "streaming=True first, so that it can be read in slices and resumed")
        raise TypeError(f"a {kind} is not a datasets.Dataset of rows;{hint}")
    columns = _columns(dataset, layers, id_column)
    n = len(dataset)
    files = [f["filename"] for f in dataset.cache_files]
    layer_rows = {}
    for column in columns:
        table = dataset.with_format("numpy", columns=[column])

        def fetch(start: int, stop: int, table: Any = table, column: str = column) -> np.ndarray:
            return np.asarray(table[start:stop][column])

        shape = _fixed_shape(dataset.features[column])
        layer_rows[column] = Rows((n, *shape), np.dtype(_numpy_dtype(dataset.features[column])),
                                  f"column {column!r}", fetch)
    root = os.path.dirname(files[0]) if files else os.getcwd()
    return Source(tool="datasets", root=root, files=files, layers=layer_rows,
                  ids=_ids(dataset, id_column),
                  ids_from="position" if id_column is None else f"column {id_column!r}",
                  details={"rows": n, "split": None if dataset.split is None
                           else str(dataset.split)})


def import_hf_dataset(
    dataset: Any,
    store: Any,
    *,
    layers: Sequence[str] | None = None,
    id_column: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_samples: int | None = None,
    dtype: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    preprocessing: Any = None,
    model: str | None = None,
) -> zarr.Group:
    """Import the activation columns of a Hugging Face ``datasets.Dataset``.

    Parameters
    ----------
    dataset
        A ``datasets.Dataset`` (memory-mapped from its Arrow cache files when loaded from
        disk: read a chunk of rows at a time), or the folder ``Dataset.save_to_disk`` wrote.
        A streaming ``IterableDataset`` is refused (it cannot be sliced or resumed).
    store
        Where the Zarr v3 group goes (see :func:`~dask_repsim.imports.arrays.import_arrays`).
    layers
        The columns to import, as layers (default: every column of fixed-shape numeric
        arrays, ``Array2D``-``Array5D`` or fixed-length lists of numbers, but ``id_column``).
    id_column
        The column of sample ids (ints or strings, unique; default: positions).
    resume, overwrite, chunk_samples, dtype, storage_options, preprocessing, model
        As for :func:`~dask_repsim.imports.arrays.import_arrays`.

    Returns
    -------
    zarr.Group
        The capture store, one array per layer column and the ``sample`` ids.

    Examples
    --------
    >>> import pytest, tempfile
    >>> datasets = pytest.importorskip("datasets")
    >>> features = datasets.Features({
    ...     "image": datasets.Value("string"),
    ...     "fc": datasets.Sequence(datasets.Value("float32"), length=3),
    ...     "conv": datasets.Array2D((2, 2), "float32")})
    >>> rows = {"image": [f"img{i}.png" for i in range(6)],
    ...         "fc": np.ones((6, 3)).tolist(), "conv": np.zeros((6, 2, 2)).tolist()}
    >>> ds = datasets.Dataset.from_dict(rows, features=features)
    >>> group = import_hf_dataset(ds, os.path.join(tempfile.mkdtemp(), "acts.zarr"),
    ...                           id_column="image")
    >>> sorted(group.array_keys()), group["conv"].shape, group["sample"][:2].tolist()
    (['conv', 'fc', 'sample'], (6, 2, 2), ['img0.png', 'img1.png'])
    """
    return write_store(
        dataset_source(dataset, layers, id_column), store, resume=resume, overwrite=overwrite,
        chunk_samples=chunk_samples, dtype=dtype, storage_options=storage_options,
        preprocessing=preprocessing, model=model)
