"""The Zarr side of :func:`~dask_repsim.capture_activations`: the store, its state,
the arrays and the chunk-by-chunk writer. Nothing here knows PyTorch; rows arrive as numpy.

The group's attribute :data:`STATE_ATTR` describes the capture (model class, layers, dtype,
chunk size, how sample ids are made) and its progress (``committed`` samples, ``complete``).
Beside the layers, a 1-d array ``sample`` (dims ``("sample",)``) holds each sample's id, which
``xarray.open_zarr`` reads as the ``sample`` coordinate and :func:`dask_repsim.compare` pairs
samples by. :class:`ChunkWriter` owns whole chunks: it writes a chunk of every layer and of the
ids before it records the new ``committed`` count, so a run killed at any moment leaves every
sample below that count written exactly once.

A resume is refused (:func:`check_resumable`) where the stored capture is not this call's:
other layers, another model class or other parameters (the hash the provenance records), a
dtype or chunk size this call gives that differs, other sample ids. A storage dtype must hold
the values (:func:`storage_dtype`, :func:`cast_rows`): a float cast to an integer dtype would
truncate fractions (most activations to zero) and is refused before any array is made; a
value beyond a narrower dtype's range (float16's 65504) is refused as its rows are written,
naming the sample.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ..io.inputs import CAPTURE_ATTR
from . import provenance
from .rules import SAMPLE, default_dims

#: Group attribute holding the capture's description and progress.
STATE_ATTR = CAPTURE_ATTR
# Default chunk size: about this many bytes of the widest layer per chunk.
_TARGET_CHUNK_BYTES = 32 * 2**20


@dataclass
class CaptureSpec:
    """What one call of :func:`~dask_repsim.capture_activations` records, and how.

    ``dtype`` and ``chunk_samples`` are the caller's choices (None: decided from the first
    batch); ``expected`` is the number of samples the loader says it gives, if it says;
    ``sample_ids`` says how ids are made (``"position"``, or where batches hold them).
    ``parameters_sha256`` and ``where``: see below.
    """

    layers: list[str]
    model_class: str
    module_classes: Mapping[str, str]
    dtype: np.dtype | None
    chunk_samples: int | None
    expected: int | None
    dimension_names: Mapping[str, Sequence[str]] | None
    sample_ids: str = "position"
    #: the model's :func:`~dask_repsim.capture.provenance.parameters_hash`, checked on resume
    #: against the one the store's provenance records (None: not checked)
    parameters_sha256: str | None = None
    #: the store as errors name it
    where: str | None = None


def _local(store: Any) -> Any:
    # A relative path would be resolved against each reader's working directory later.
    if isinstance(store, str | os.PathLike) and "://" not in os.fspath(store):
        return os.path.abspath(os.fspath(store))
    return store


def _open_group(store: Any, mode: str, storage_options: Mapping[str, Any] | None) -> zarr.Group:
    kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
    return zarr.open_group(store=_local(store), mode=mode, zarr_format=3, **kwargs)


def _existing(store: Any, storage_options: Mapping[str, Any] | None) -> zarr.Group | None:
    try:
        return _open_group(store, "r+", storage_options)
    except FileNotFoundError:  # zarr's GroupNotFoundError is one
        return None


def prepare_store(
    store: Any, storage_options: Mapping[str, Any] | None, resume: bool, overwrite: bool
) -> tuple[zarr.Group, dict[str, Any] | None]:
    """The group to write to, and the interrupted capture's state when resuming one.

    Examples
    --------
    >>> root, state = prepare_store(zarr.storage.MemoryStore(), None, resume=True, overwrite=False)
    >>> state is None  # nothing to resume: a new capture starts
    True
    """
    existing = _existing(store, storage_options)
    if existing is not None and _failed_start(existing):
        existing = None  # a capture that failed before its first batch: nothing to keep
    if existing is not None and resume:
        state = existing.attrs.get(STATE_ATTR)
        if state is None:
            raise ValueError(
                f"{store!r} holds a zarr group that is not an activation capture; nothing to resume"
            )
        if int(state.get("committed", 0)) > 0 or state.get("complete"):
            return existing, dict(state)
        # nothing committed yet: starting afresh is the same as resuming
    elif existing is not None and not overwrite:
        raise FileExistsError(
            f"{store!r} already holds a zarr group; pass resume=True to continue an interrupted "
            "capture, or overwrite=True to replace it"
        )
    return _open_group(store, "w", storage_options), None


def _failed_start(group: zarr.Group) -> bool:
    """Whether ``group`` is what a capture leaves when it fails before writing its first
    batch (its provenance, no capture state, no arrays): rerunning it starts afresh."""
    return (STATE_ATTR not in group.attrs and provenance.PROVENANCE_ATTR in group.attrs
            and not list(group.array_keys()) and not list(group.group_keys()))


def check_resumable(state: Mapping[str, Any], spec: CaptureSpec,
                    root: zarr.Group | None = None) -> None:
    """Raise ValueError listing how the stored capture differs from this call, if it does.

    Compared: the layers, the model's class and (with ``root``, where both the store's
    provenance and ``spec`` have one) its parameters' hash, the dtype and chunk size where
    this call gives them, and how sample ids are made. What may differ between runs is not:
    ``n_samples`` only sizes the arrays, and the loader's data is checked by its first batch
    and the committed ids.
    """
    differences = []
    if list(state["layers"]) != spec.layers:
        differences.append(f"layers {state['layers']} != {spec.layers}")
    if state["model"] != spec.model_class:
        differences.append(f"model {state['model']} != {spec.model_class}")
    recorded = (root.attrs.get(provenance.PROVENANCE_ATTR) if root is not None else None) or {}
    stored_hash = recorded.get("parameters_sha256") if isinstance(recorded, Mapping) else None
    if None not in (stored_hash, spec.parameters_sha256) and stored_hash != spec.parameters_sha256:
        differences.append(
            "the model's parameters differ from those the store was captured with (their "
            f"names, dtypes, shapes or values: parameters_sha256 {stored_hash[:12]}... in its "
            f"provenance, {spec.parameters_sha256[:12]}... now)")
    stored = state["dtype"]
    stored = set(stored.values()) if isinstance(stored, dict) else {stored}
    if spec.dtype is not None and stored != {str(spec.dtype)}:
        differences.append(f"dtype {state['dtype']} != {spec.dtype}")
    if spec.chunk_samples is not None and int(state["chunk_samples"]) != spec.chunk_samples:
        differences.append(f"chunk_samples {state['chunk_samples']} != {spec.chunk_samples}")
    if state.get("sample_ids") != spec.sample_ids:
        differences.append(f"sample ids {state.get('sample_ids')} != {spec.sample_ids}")
    if differences:
        raise resume_error(spec, differences)


def resume_error(spec: CaptureSpec, differences: Sequence[str]) -> ValueError:
    """The error refusing to resume the store of ``spec`` over ``differences``."""
    where = "" if spec.where is None else f" {spec.where}"
    return ValueError(
        f"cannot resume{where}: the stored capture differs from this call: "
        + "; ".join(differences)
        + "; resume with the same model and options, or start afresh with overwrite=True"
    )


def storage_dtype(have: Any, want: Any, where: str) -> np.dtype:
    """The dtype to store ``where``'s values of dtype ``have`` as: ``want`` (``have`` when
    None), once checked to hold them. A dtype that is not a real number's is a TypeError; a
    cast numpy does not call ``"same_kind"`` (a float to an integer: fractions truncated,
    most activations zero) a ValueError naming ``where`` and both dtypes. With ``have``
    None, only the first is checked. Values out of a narrower dtype's range are checked as
    they are written (:func:`cast_rows`).

    Examples
    --------
    >>> storage_dtype("float32", "float16", "layer 'fc1'")
    dtype('float16')
    >>> storage_dtype("float32", "int8", "layer 'fc1'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: cannot store layer 'fc1' (float32) as int8: the values would be truncated; ...
    """
    want = np.dtype(have if want is None else want)
    if want.kind not in "biuf":
        raise TypeError(f"cannot store {where} as {want}: activations must be real numbers "
                        "(give a float, int or bool dtype)")
    if have is not None and not np.can_cast(np.dtype(have), want, "same_kind"):
        raise ValueError(f"cannot store {where} ({np.dtype(have)}) as {want}: the values would "
                         "be truncated; give a float dtype")
    return want


def cast_rows(rows: np.ndarray, dtype: Any, where: str, start: int = 0) -> np.ndarray:
    """``rows`` (samples first, the first of them sample ``start``) as ``dtype``, checked by
    :func:`storage_dtype`; a ValueError naming the sample where a finite value would become
    infinite (float64 or float32 to float16) or an integer would leave the dtype's range.

    Examples
    --------
    >>> cast_rows(np.array([[1.5], [7e4]]), "float16", "layer 'fc1'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: layer 'fc1': sample 1 holds values too large for float16; ...
    """
    dtype = storage_dtype(rows.dtype, dtype, where)
    if rows.dtype == dtype:
        return rows
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked, and reported, below
        out = rows.astype(dtype)
    if np.can_cast(rows.dtype, dtype, "safe") or not rows.size:
        return out
    if dtype.kind == "f":
        bad, why = np.isinf(out) & np.isfinite(rows), f"values too large for {dtype}"
    else:  # integers (or bools) into a narrower integer dtype
        info = np.iinfo(dtype)
        bad = (rows < info.min) | (rows > info.max)
        why = f"values outside the range of {dtype} ({info.min} to {info.max})"
    if bad.any():
        k = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{where}: sample {start + k} holds {why}; store it with a wider dtype")
    return out


def consolidate(root: zarr.Group) -> None:
    """Consolidated metadata, so that ``xarray.open_zarr`` opens the group without a warning."""
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not (yet) in the v3 spec; xarray reads it
        warnings.filterwarnings("ignore", "Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(root.store, path=root.path, zarr_format=3)


def dimension_names(
    shapes: Mapping[str, tuple[int, ...]], given: Mapping[str, Sequence[str]] | None,
    defaults: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Dimension names per layer: plain names where all layers agree on the size.

    ``given``: names declared for a layer (samples first), used as they are. ``defaults``: the
    feature dims a layer's module type gives (:mod:`dask_repsim.capture.rules`); other layers
    get those of their number of dims. xarray needs a dimension to have one size in a
    Dataset, so a default feature dimension whose size differs between layers (``channel`` of
    two conv layers of different widths) is qualified by the layer's name
    (``conv2.channel``); ``sample`` is always shared.

    Examples
    --------
    >>> dimension_names({"conv1": (9, 4, 6, 6), "conv2": (9, 8, 6, 6)}, None)["conv2"]
    ('sample', 'conv2.channel', 'height', 'width')
    """
    given, defaults = dict(given or {}), dict(defaults or {})
    plain = {
        name: tuple(defaults.get(name) or default_dims(len(shape)))
        for name, shape in shapes.items()
        if name not in given
    }
    sizes: dict[str, set[int]] = {}
    for name, dims in plain.items():
        for dim, size in zip(dims, shapes[name][1:], strict=True):
            sizes.setdefault(dim, set()).add(size)
    for name, dims in given.items():
        if len(tuple(dims)) != len(shapes[name]):
            raise ValueError(
                f"dimension_names[{name!r}] has {len(tuple(dims))} names for an output of "
                f"shape (samples, ...) {tuple(shapes[name])}"
            )
        for dim, size in zip(tuple(dims)[1:], shapes[name][1:], strict=True):
            sizes.setdefault(dim, set()).add(size)
    out = {}
    for name in shapes:
        if name in given:
            out[name] = tuple(given[name])
        else:
            shared = (d if len(sizes[d]) == 1 else f"{name}.{d}" for d in plain[name])
            out[name] = (SAMPLE,) + tuple(shared)
    return out


class ChunkWriter:
    """Buffers rows per layer and writes them as whole chunks, then records the progress.

    ``chunks_per_write``: chunks buffered and written at once (zarr compresses the chunks of
    one write in parallel); the progress is recorded after each such write, so it stays a
    multiple of the chunk size.
    """

    def __init__(self, root: zarr.Group, state: dict[str, Any], arrays: dict[str, zarr.Array],
                 chunks_per_write: int = 1):
        # ``arrays``: the layers' and the ``sample`` ids', all written chunk by chunk
        self.root, self.state, self.arrays = root, state, arrays
        self.chunk = int(state["chunk_samples"])
        self.span = self.chunk * max(1, int(chunks_per_write))  # samples per write
        self.start = int(state["committed"])  # first sample the buffer holds
        self.filled = 0
        self.buffers = {
            name: np.empty((self.span,) + a.shape[1:], dtype=a.dtype) for name, a in arrays.items()
        }

    def append(self, rows: Mapping[str, np.ndarray]) -> None:
        n = len(next(iter(rows.values())))
        done = 0
        while done < n:
            take = min(n - done, self.span - self.filled)
            for name, buffer in self.buffers.items():
                buffer[self.filled : self.filled + take] = rows[name][done : done + take]
            self.filled += take
            done += take
            if self.filled == self.span:
                self._write()

    def _write(self) -> None:
        stop = self.start + self.filled
        for array in self.arrays.values():
            if array.shape[0] < stop:  # the loader's length was not known (or was wrong)
                array.resize((stop,) + array.shape[1:])
        for name, array in self.arrays.items():
            array[self.start : stop] = self.buffers[name][: self.filled]
        self.start, self.filled = stop, 0
        # Recorded only after every layer's chunk is in the store: a crash before this line
        # leaves the chunk to be written again on resume.
        self._commit(committed=stop)

    def _commit(self, **changes: Any) -> None:
        self.state.update(changes)
        self.root.attrs[STATE_ATTR] = dict(self.state)

    def finish(self) -> None:
        total = self.start + self.filled
        for array in self.arrays.values():
            if array.shape[0] != total:  # e.g. a loader with drop_last gives fewer samples
                array.resize((total,) + array.shape[1:])
        if self.filled:
            self._write()
        ids = self.arrays[SAMPLE][...]
        if self.state.get("sample_ids") != "position":
            _, first, counts = np.unique(ids, return_index=True, return_counts=True)
            if (counts > 1).any():
                repeated = ids[np.sort(first[counts > 1])[0]]
                repeated = repeated.item() if isinstance(repeated, np.generic) else repeated
                raise ValueError(
                    f"the loader's sample ids repeat ({repeated!r} more than once); give each "
                    "sample its own id, or leave sample_ids out to number samples by position"
                )
        provenance.finish(self.root, ids, self.state.get("dtype"))
        self._commit(committed=total, complete=True)
        consolidate(self.root)


def reopen_writer(root: zarr.Group, state: dict[str, Any], spec: CaptureSpec,
                  chunks_per_write: int = 1) -> ChunkWriter:
    """The writer of an interrupted capture, its arrays at the length this run will fill."""
    arrays = {name: root[name] for name in (*spec.layers, SAMPLE)}
    length = spec.expected if spec.expected is not None else int(state["committed"])
    length = max(length, int(state["committed"]))
    for array in arrays.values():
        # Arrays may have been left at different lengths by a crash between resizes.
        if array.shape[0] != length:
            array.resize((length,) + array.shape[1:])
    return ChunkWriter(root, state, arrays, chunks_per_write)


def create_writer(
    root: zarr.Group,
    state: dict[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, np.dtype],
    spec: CaptureSpec,
    dims: Mapping[str, tuple[str, ...]],
    ids_dtype: np.dtype,
    chunks_per_write: int = 1,
) -> ChunkWriter:
    """Create the arrays of a new capture from the first batch's output ``shapes`` (samples
    first, at least 2-d), storage ``dtypes`` and ``dims`` (:func:`dimension_names`), and the
    ``sample`` array of ids (int64 or str), record the capture's description in ``state``, and
    return the writer (``chunks_per_write``: :class:`ChunkWriter`'s)."""
    layers = spec.layers
    widest = max(math.prod(s[1:]) * dtypes[n].itemsize for n, s in shapes.items())
    chunk = spec.chunk_samples or max(1, _TARGET_CHUNK_BYTES // max(1, widest))
    length = spec.expected or 0
    arrays = {}
    for name in layers:
        kind = dtypes[name].kind
        arrays[name] = root.create_array(
            name,
            shape=(length,) + shapes[name][1:],
            chunks=(chunk,) + shapes[name][1:],
            dtype=dtypes[name],
            # unwritten rows of an unfinished capture read as NaN, not as plausible zeros
            fill_value=np.nan if kind == "f" else 0,
            dimension_names=dims[name],
            attributes={"layer": name, "module": spec.module_classes[name]},
        )
    text = ids_dtype.kind not in "iu"
    arrays[SAMPLE] = root.create_array(
        SAMPLE, shape=(length,), chunks=(chunk,), dtype=str if text else np.int64,
        fill_value="" if text else -1, dimension_names=(SAMPLE,),
        attributes={"sample_ids": spec.sample_ids},
    )
    state.update(
        model=spec.model_class,
        layers=layers,
        dtype={name: str(dtypes[name]) for name in layers}
        if len(set(dtypes.values())) > 1
        else str(dtypes[layers[0]]),
        chunk_samples=chunk,
        sample_ids=spec.sample_ids,
        committed=0,
        complete=False,
    )
    root.attrs[STATE_ATTR] = dict(state)
    return ChunkWriter(root, state, arrays, chunks_per_write)
