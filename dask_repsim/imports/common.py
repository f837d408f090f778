"""What every importer shares: a source's layers as row readers, and the streaming,
resumable driver that writes them into a capture store.

An importer turns another tool's files into a :class:`Source`: per layer a :class:`Rows`
reader (the layer's shape, samples first, its dtype, where it lives, and a function that
reads rows ``start:stop``), the sample ids where the files hold them, and the files read.
:func:`write_store` then writes the source chunk by chunk with the capture writer of
:mod:`dask_repsim.capture.store` (the same arrays, state and commit protocol as
:func:`~dask_repsim.capture_activations`): memory holds :data:`WRITE_CHUNKS` chunks of every
layer (written at once, so that zarr compresses them in parallel), a run
killed at any moment resumes with ``resume=True`` to the store an uninterrupted run gives,
and a resume from other files than the interrupted run's is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from ..capture import provenance
from ..capture.rules import SAMPLE
from ..capture.store import (
    CaptureSpec,
    ChunkWriter,
    cast_rows,
    check_resumable,
    consolidate,
    create_writer,
    dimension_names,
    prepare_store,
    reopen_writer,
    storage_dtype,
)

#: Bytes a format that cannot be read in parts (a MATLAB v5 variable) may read at once.
WHOLE_FILE_LIMIT = 2**30
#: Chunks written at once (zarr compresses them in parallel): memory holds this many chunks of
#: every layer, and the committed count advances by as many.
WRITE_CHUNKS = max(1, min(4, os.cpu_count() or 1))
#: State key of the source's fingerprint, compared on resume.
SOURCE_KEY = "import_source"
# Rows of every layer whose hash identifies the source on resume.
_FINGERPRINT_ROWS = 8


@dataclass
class Rows:
    """One layer of a source: ``shape`` (samples first), ``dtype``, ``where`` (the file and
    key, for errors) and ``fetch(start, stop)``, which reads those rows as numpy.

    Examples
    --------
    >>> data = np.arange(12.0).reshape(6, 2)
    >>> rows = Rows((6, 2), data.dtype, "x.npy", lambda a, b: data[a:b])
    >>> rows.read(4, 6).tolist()
    [[8.0, 9.0], [10.0, 11.0]]
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    where: str
    fetch: Callable[[int, int], np.ndarray]

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.asarray(self.fetch(start, stop))
        if out.shape != (stop - start, *self.shape[1:]):
            raise ValueError(f"{self.where}: rows {start}:{stop} have shape {out.shape}, not "
                             f"{(stop - start, *self.shape[1:])}; the file changed while read?")
        return out


def concat(parts: Sequence[Rows], where: str) -> Rows:
    """Rows that are ``parts`` one after the other (files that each hold some samples).

    Examples
    --------
    >>> a, b = np.zeros((2, 3)), np.ones((3, 3))
    >>> rows = concat([Rows(a.shape, a.dtype, "a", lambda i, j: a[i:j]),
    ...                Rows(b.shape, b.dtype, "b", lambda i, j: b[i:j])], "a+b")
    >>> rows.shape, rows.read(1, 3)[:, 0].tolist()
    ((5, 3), [0.0, 1.0])
    """
    if not parts:
        raise ValueError(f"{where}: no files")
    first = parts[0]
    for part in parts[1:]:
        if part.shape[1:] != first.shape[1:] or part.dtype != first.dtype:
            raise ValueError(f"{part.where} holds {part.dtype} rows of shape {part.shape[1:]}, "
                             f"but {first.where} {first.dtype} rows of shape {first.shape[1:]}")
    bounds = np.cumsum([0] + [p.shape[0] for p in parts])

    def fetch(start: int, stop: int) -> np.ndarray:
        pieces = []
        for k, part in enumerate(parts):
            lo, hi = max(start, bounds[k]), min(stop, bounds[k + 1])
            if lo < hi:
                pieces.append(part.read(int(lo - bounds[k]), int(hi - bounds[k])))
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    return Rows((int(bounds[-1]), *first.shape[1:]), first.dtype, where, fetch)


@dataclass
class Source:
    """Another tool's activation files, as :func:`write_store` reads them.

    ``layers``: name -> :class:`Rows`, in network order; ``ids``: one id per sample, or None
    for positions; ``ids_from``: where the ids come from (recorded, compared on resume);
    ``root``: the folder files are named relative to in the fingerprint; ``coords``: per
    layer, arrays along its feature dim (brain-score's neuroid coordinates);
    ``sample_coords``: arrays along the samples besides the ids (brain-score's stimulus
    coordinates), one value per sample;
    ``feature_dims``: per layer, names of its feature dims; ``details``: more provenance.
    """

    tool: str
    root: str
    files: list[str]
    layers: dict[str, Rows]
    ids: np.ndarray | None = None
    ids_from: str = "position"
    model: str | None = None
    coords: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    sample_coords: dict[str, np.ndarray] = field(default_factory=dict)
    feature_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def file_size(path: str, limit: int = WHOLE_FILE_LIMIT) -> int:
    """The size of a file that must be read whole; an error naming it when over ``limit``."""
    size = os.path.getsize(path)
    if size > limit:
        raise ValueError(
            f"{path} is {size / 2**30:.1f} GiB and its format cannot be read in parts; "
            f"the limit is {limit / 2**30:.1f} GiB. Save it as .npy or HDF5 (readable chunk "
            "by chunk), or raise dask_repsim.imports.common.WHOLE_FILE_LIMIT")
    return size


def check_numeric(dtype: np.dtype, where: str) -> np.dtype:
    """``dtype`` if activations can have it; an error naming the file otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"{where} holds {dtype} data; activations must be real numbers")
    return dtype


def select(available: Sequence[str], layers: Sequence[str] | None, where: str) -> list[str]:
    """The layers asked for (all by default), in the order asked, each checked to exist."""
    if layers is None:
        return list(available)
    layers = [layers] if isinstance(layers, str) else list(layers)
    missing = [name for name in layers if name not in available]
    if missing:
        raise ValueError(f"no layer(s) {missing} in {where}; it holds {list(available)}")
    if len(set(layers)) != len(layers) or not layers:
        raise ValueError(f"layers must name each layer once, not {layers}")
    return layers


def read_ids(lines: Sequence[str], where: str) -> np.ndarray:
    """Sample ids from text (one per sample): int64 when all are integers, else str."""
    ids = [line.strip() for line in lines]
    if any(not i for i in ids):
        raise ValueError(f"{where}: sample id {ids.index('')} is empty")
    try:
        return np.array([int(i) for i in ids], dtype=np.int64)
    except ValueError:
        return np.array(ids, dtype=str)


def _check(source: Source, layers: list[str]) -> int:
    """The number of samples, once every layer and the ids are checked to agree on it."""
    counts = {name: source.layers[name].shape[0] for name in layers}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{source.layers[n].where}: {c}" for n, c in counts.items())
        raise ValueError(f"the layers hold different numbers of samples ({listed})")
    n = next(iter(counts.values()))
    if n == 0:
        raise ValueError(f"{source.layers[layers[0]].where} holds no samples")
    for name in layers:
        check_numeric(source.layers[name].dtype, source.layers[name].where)
    if source.ids is not None:
        if len(source.ids) != n:
            raise ValueError(f"{source.ids_from} gives {len(source.ids)} sample ids for {n} "
                             "samples")
        _, first, counts_ = np.unique(source.ids, return_index=True, return_counts=True)
        if (counts_ > 1).any():
            k = int(np.sort(first[counts_ > 1])[0])
            raise ValueError(f"sample id {source.ids[k].item()!r} (sample {k}) repeats in "
                             f"{source.ids_from}; each sample needs its own id")
    if SAMPLE in layers:
        raise ValueError(f"a layer cannot be called {SAMPLE!r}: the store's sample ids are")
    return n


def _storage_dtypes(source: Source, layers: list[str], dtype: Any) -> dict[str, np.dtype]:
    out = {}
    for name in layers:
        have = source.layers[name].dtype
        check_numeric(have if dtype is None else np.dtype(dtype), f"dtype={dtype!r}")
        out[name] = storage_dtype(have, dtype, source.layers[name].where)
    return out


def _fingerprint(source: Source, layers: list[str], n: int) -> dict[str, Any]:
    """What identifies the source on resume: file names and sizes, layers, ids, first rows."""
    digest = hashlib.sha256()
    for name in layers:
        digest.update(np.ascontiguousarray(source.layers[name].read(0, min(n, _FINGERPRINT_ROWS)))
                      .tobytes())
    ids = "" if source.ids is None else "\n".join(map(str, source.ids.tolist()))
    return {
        "files": [[os.path.relpath(f, source.root), os.path.getsize(f)] for f in source.files],
        "samples": n,
        "layers": {name: [list(source.layers[name].shape[1:]), str(source.layers[name].dtype)]
                   for name in layers},
        "ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
        "first_rows_sha256": digest.hexdigest(),
    }


def _check_same_source(stored: Mapping[str, Any] | None, now: Mapping[str, Any]) -> None:
    stored = json.loads(json.dumps(stored))  # lists, as the attributes hold them
    now = json.loads(json.dumps(now))
    differ = [key for key in now if stored is None or stored.get(key) != now[key]]
    if differ:
        what = {"files": "the files or their sizes", "samples": "the number of samples",
                "layers": "the layers' shapes or dtypes", "ids_sha256": "the sample ids",
                "first_rows_sha256": "the values of the first samples"}
        raise ValueError("cannot resume: the source differs from the interrupted import's ("
                         + ", ".join(what[k] for k in differ) + "); import it afresh with "
                         "overwrite=True")


def _shape(rows: Rows) -> tuple[int, ...]:
    return rows.shape if len(rows.shape) > 1 else (*rows.shape, 1)  # one unit per sample


def _write_coords(root: zarr.Group, source: Source, writer: ChunkWriter,
                  dims: Mapping[str, tuple[str, ...]]) -> None:
    """Each layer's coordinate arrays along its feature dim, named ``layer.coordinate`` and
    listed in the layer's ``coordinates`` attribute (so xarray reads them as coordinates)."""
    for layer, coords in source.coords.items():
        if layer not in writer.arrays:
            continue
        names = []
        for coord, values in coords.items():
            name = f"{layer}.{coord}"
            if name in writer.arrays:
                raise ValueError(f"coordinate {name!r} has the name of a layer")
            values = np.asarray(values)
            text = values.dtype.kind in "OUS"
            array = root.create_array(
                name, shape=values.shape, chunks=values.shape or (1,),
                dtype=str if text else values.dtype, dimension_names=(dims[layer][1],),
                fill_value="" if text else None)
            array[...] = values.astype(str) if text else values
            names.append(name)
        writer.arrays[layer].attrs["coordinates"] = " ".join(names)


def write_store(
    source: Source,
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
    """Write ``source`` into a capture store, chunk by chunk; the arguments are the
    importers' (:func:`dask_repsim.imports.arrays.import_arrays` describes them).

    Examples
    --------
    >>> data = np.arange(20.0).reshape(10, 2)
    >>> src = Source("npy", ".", [], {"x": Rows(data.shape, data.dtype, "x", lambda a, b:
    ...                                         data[a:b])})
    >>> group = write_store(src, zarr.storage.MemoryStore(), chunk_samples=4)
    >>> bool(group["x"][...].sum() == data.sum()), group["sample"][...].tolist()[:3]
    (True, [0, 1, 2])
    """
    if chunk_samples is not None and int(chunk_samples) < 1:
        raise ValueError(f"chunk_samples must be at least 1, not {chunk_samples}")
    names = select(list(source.layers), layers, source.root)
    n = _check(source, names)
    dtypes = _storage_dtypes(source, names, dtype)
    fingerprint = _fingerprint(source, names, n)
    root, state = prepare_store(store, storage_options, resume, overwrite)
    spec = CaptureSpec(
        layers=names, model_class=model or source.model or source.tool,
        module_classes={name: source.tool for name in names},
        dtype=None if dtype is None else np.dtype(dtype),
        chunk_samples=None if chunk_samples is None else int(chunk_samples), expected=n,
        dimension_names=None, sample_ids=source.ids_from)
    if state is not None:
        check_resumable(state, spec)
        _check_same_source(state.get(SOURCE_KEY), fingerprint)
        if state.get("complete"):
            consolidate(root)
            return root
        writer = _with_sample_coords(root, reopen_writer(root, state, spec, WRITE_CHUNKS),
                                     {name: root[name] for name in source.sample_coords})
    else:
        writer = _new_store(root, source, names, dtypes, spec, fingerprint, preprocessing)
    _stream(source, names, writer, n)
    writer.finish()
    return root


def _new_store(root: zarr.Group, source: Source, names: list[str],
               dtypes: Mapping[str, np.dtype], spec: CaptureSpec, fingerprint: dict[str, Any],
               preprocessing: Any) -> ChunkWriter:
    """Provenance, the arrays (layers, ids, coordinates) and the writer of a new import."""
    described = {"tool": source.tool, "files": [os.path.abspath(f) for f in source.files],
                 **source.details}
    one = set(map(str, dtypes.values()))
    provenance.record(root, provenance.describe(
        model_name=spec.model_class, source=described, preprocessing=preprocessing,
        dtype=one.pop() if len(one) == 1 else None))
    shapes = {name: _shape(source.layers[name]) for name in names}
    dims = dimension_names(shapes, None, {name: source.feature_dims[name] for name in names
                                          if name in source.feature_dims})
    ids_dtype = np.dtype(np.int64) if source.ids is None else source.ids.dtype
    writer = create_writer(root, {SOURCE_KEY: fingerprint}, shapes, dict(dtypes), spec, dims,
                           ids_dtype, WRITE_CHUNKS)
    for name in names:
        writer.arrays[name].attrs["source"] = source.layers[name].where
    _write_coords(root, source, writer, dims)
    along = {}
    for name, values in source.sample_coords.items():
        if name in writer.arrays:
            raise ValueError(f"the samples' coordinate {name!r} has the name of a layer")
        text = np.asarray(values).dtype.kind in "OSU"
        along[name] = root.create_array(
            name, shape=writer.arrays[SAMPLE].shape, chunks=(writer.chunk,),
            dtype=str if text else np.asarray(values).dtype, dimension_names=(SAMPLE,),
            fill_value="" if text else None)
    for name in names:  # on the writer's own array objects, which write their metadata
        listed = [c for c in writer.arrays[name].attrs.get("coordinates", "").split() if c]
        if along:
            writer.arrays[name].attrs["coordinates"] = " ".join([*listed, *along])
    return _with_sample_coords(root, writer, along)


def _with_sample_coords(root: zarr.Group, writer: ChunkWriter,
                        along: Mapping[str, zarr.Array]) -> ChunkWriter:
    """The writer, writing the arrays ``along`` the samples chunk by chunk with the layers."""
    if not along:
        return writer
    for array in along.values():
        if array.shape != writer.arrays[SAMPLE].shape:
            array.resize(writer.arrays[SAMPLE].shape)
    return ChunkWriter(root, writer.state, {**writer.arrays, **along}, WRITE_CHUNKS)


def _stream(source: Source, names: list[str], writer: ChunkWriter, n: int) -> None:
    """Append the samples after the committed ones, a chunk of rows read at a time."""
    step = writer.chunk
    for start in range(writer.start, n, step):
        stop = min(start + step, n)
        rows = {}
        for name in names:
            layer = source.layers[name]
            data = layer.read(start, stop).reshape((stop - start, *_shape(layer)[1:]))
            rows[name] = cast_rows(data, writer.arrays[name].dtype, layer.where, start)
        ids = np.arange(start, stop) if source.ids is None else source.ids[start:stop]
        along = {name: np.asarray(values)[start:stop]
                 for name, values in source.sample_coords.items()}
        writer.append({**rows, SAMPLE: ids, **along})


def shared(load: Callable[[int, int], Mapping[str, np.ndarray]]
           ) -> Callable[[str], Callable[[int, int], np.ndarray]]:
    """Per-layer fetch functions over one ``load(start, stop)`` of every layer's rows, which
    runs once per chunk (files that hold all layers: one per image, one table of all units).

    Examples
    --------
    >>> calls = []
    >>> fetch = shared(lambda a, b: calls.append((a, b)) or {"x": np.arange(a, b)})
    >>> fetch("x")(0, 3).tolist(), fetch("x")(0, 3).tolist(), calls
    ([0, 1, 2], [0, 1, 2], [(0, 3)])
    """
    last: dict[str, Any] = {}

    def of(name: str) -> Callable[[int, int], np.ndarray]:
        def fetch(start: int, stop: int) -> np.ndarray:
            if last.get("key") != (start, stop):
                last.clear()  # the previous chunk's rows go before the next are read
                last["rows"], last["key"] = load(start, stop), (start, stop)
            return last["rows"][name]

        return fetch

    return of


def torch_load(path: str) -> Any:
    """``torch.load`` of a file saved with ``torch.save``, memory-mapped (nothing is read
    until sliced) and without running pickled code (``weights_only``)."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"reading {path} needs PyTorch; install it with "
                          "`pip install dask-repsim[torch]`") from err
    try:
        return torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except RuntimeError as err:  # the legacy (not zip) format cannot be mapped
        raise ValueError(f"cannot memory-map {path} ({err}); save it again with a recent "
                         "torch.save") from None


def torch_dtype(tensor: Any, where: str) -> np.dtype:
    """The numpy dtype a tensor is read as (bfloat16 as float32, which holds it exactly)."""
    name = str(tensor.dtype).removeprefix("torch.")
    try:
        return np.dtype("float32" if name == "bfloat16" else name)
    except TypeError:
        raise TypeError(f"{where} holds {name} data; activations must be real numbers") from None


def torch_numpy(tensor: Any) -> np.ndarray:
    """A (sliced) tensor as a numpy copy."""
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    return tensor.detach().cpu().numpy().copy()
