"""Recording a PyTorch model's activations into a Zarr store, resumably.

:func:`capture_activations` runs a data loader through a model with forward hooks on the named
modules and appends each module's output, batch by batch, to one Zarr v3 array per layer in one
group. The result opens with ``xarray.open_zarr`` as a Dataset with a shared ``sample``
dimension, and goes straight into :func:`dask_repsim.compare`.

Crash safety comes from owning whole chunks: rows are buffered until a chunk of
``chunk_samples`` samples is full, the whole chunk is written for every layer, and only then is
the number of committed samples recorded in the group's attributes. A run killed at any moment
leaves every sample below that count written exactly once; ``resume=True`` skips those samples
of the loader and rewrites everything after them. This relies on the store writing each key
atomically, as zarr's ``LocalStore`` (write to a temporary file, then rename) and object stores
(one PUT per key) do.

PyTorch is optional: it is imported when :func:`capture_activations` is called, not when
``dask_repsim`` is.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .inputs import CAPTURE_ATTR

#: Group attribute holding the capture's description and progress.
STATE_ATTR = CAPTURE_ATTR
# Default chunk size: about this many bytes of the widest layer per chunk.
_TARGET_CHUNK_BYTES = 32 * 2**20
_DEFAULT_DIMS = {
    2: ("unit",),
    3: ("channel", "length"),
    4: ("channel", "height", "width"),
    5: ("channel", "depth", "height", "width"),
}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:  # torch is an optional dependency
        raise ImportError(
            "capture_activations needs PyTorch; install it with `pip install dask-repsim[torch]`"
        ) from err
    return torch


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


def _numpy_dtype(tensor: Any, dtype: np.dtype | None) -> np.dtype:
    if dtype is not None:
        return dtype
    name = str(tensor.dtype).removeprefix("torch.")
    # numpy has no bfloat16: store it as float32, which holds every bfloat16 value exactly
    return np.dtype("float32" if name == "bfloat16" else name)


def _to_numpy(tensor: Any, dtype: np.dtype) -> np.ndarray:
    tensor = tensor.detach().to("cpu")
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    array = tensor.numpy()
    if array.ndim == 1:
        array = array[:, None]  # one number per sample is one unit
    return array.astype(dtype, copy=False)


def _dimension_names(
    shapes: Mapping[str, tuple[int, ...]], given: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[str, ...]]:
    """Dimension names per layer: plain names where all layers agree on the size.

    xarray needs a dimension to have one size in a Dataset, so a feature dimension whose size
    differs between layers (``channel`` of two conv layers of different widths) is qualified by
    the layer's name (``conv2.channel``); ``sample`` is always shared.
    """
    given = dict(given or {})
    plain = {
        name: _DEFAULT_DIMS.get(len(shape), tuple(f"dim_{i}" for i in range(1, len(shape))))
        for name, shape in shapes.items()
        if name not in given
    }
    sizes: dict[str, set[int]] = {}
    for name, dims in plain.items():
        for dim, size in zip(dims, shapes[name][1:], strict=True):
            sizes.setdefault(dim, set()).add(size)
    for name, dims in given.items():
        for dim, size in zip(tuple(dims)[1:], shapes[name][1:], strict=True):
            sizes.setdefault(dim, set()).add(size)
    out = {}
    for name, shape in shapes.items():
        if name in given:
            dims = tuple(given[name])
            if len(dims) != len(shape):
                raise ValueError(
                    f"dimension_names[{name!r}] has {len(dims)} names for an output of shape "
                    f"(samples, ...) {tuple(shape)}"
                )
            out[name] = dims
        else:
            dims = plain[name]
            shared = (d if len(sizes[d]) == 1 else f"{name}.{d}" for d in dims)
            out[name] = ("sample",) + tuple(shared)
    return out


def _fingerprint(x: Any) -> str:
    """A hash of a batch of inputs, to tell on resume whether the loader gives the same data."""
    data = np.ascontiguousarray(x.detach().to("cpu").numpy()) if hasattr(x, "detach") else x
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def _expected_samples(loader: Iterable, n_samples: int | None) -> int | None:
    if n_samples is not None:
        return int(n_samples)
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


class _ChunkWriter:
    """Buffers rows per layer and writes them as whole chunks, then records the progress."""

    def __init__(self, root: zarr.Group, state: dict[str, Any], arrays: dict[str, zarr.Array]):
        self.root, self.state, self.arrays = root, state, arrays
        self.chunk = int(state["chunk_samples"])
        self.start = int(state["committed"])  # first sample the buffer holds
        self.filled = 0
        self.buffers = {
            name: np.empty((self.chunk,) + a.shape[1:], dtype=a.dtype) for name, a in arrays.items()
        }

    def append(self, rows: Mapping[str, np.ndarray]) -> None:
        n = len(next(iter(rows.values())))
        done = 0
        while done < n:
            take = min(n - done, self.chunk - self.filled)
            for name, buffer in self.buffers.items():
                buffer[self.filled : self.filled + take] = rows[name][done : done + take]
            self.filled += take
            done += take
            if self.filled == self.chunk:
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
        self._commit(committed=total, complete=True)
        _consolidate(self.root)


def _consolidate(root: zarr.Group) -> None:
    """Consolidated metadata, so that ``xarray.open_zarr`` opens the group without a warning."""
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not (yet) in the v3 spec; xarray reads it
        warnings.filterwarnings("ignore", "Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(root.store, path=root.path, zarr_format=3)


def capture_activations(
    model: Any,
    loader: Iterable[Any],
    *,
    layers: Sequence[str],
    store: Any,
    dtype: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    chunk_samples: int | None = None,
    n_samples: int | None = None,
    dimension_names: Mapping[str, Sequence[str]] | None = None,
) -> zarr.Group:
    """Record the outputs of named modules of a PyTorch model over a data loader into Zarr.

    Parameters
    ----------
    model
        A ``torch.nn.Module``. It runs in eval mode under ``torch.no_grad()``; its training
        mode is restored afterwards. Inputs are moved to the device of its first parameter.
    loader
        An iterable of batches: tensors, or tuples/lists whose first element is the input
        (``(images, labels)`` from a ``DataLoader``). It must give the same samples in the same
        order every time it is iterated (no unseeded shuffling) for ``resume=True`` to be
        correct; the first batch's hash is stored and checked on resume.
    layers
        Module names as ``model.named_modules()`` gives them (``"features.3"``, ``"fc1"``). A
        module must run once per forward pass. A module returning a tuple is recorded by its
        first element.
    store
        Where the Zarr v3 group goes: a local path, an fsspec URL (``s3://bucket/acts.zarr``,
        with ``storage_options``) or a zarr store object.
    dtype
        Storage dtype (e.g. ``"float16"`` to halve the size). Default: the outputs' own
        (bfloat16 is stored as float32).
    resume
        Continue an interrupted capture at the store: the loader's first ``committed`` samples
        are skipped and everything after them is written again. On a store that does not exist
        yet, a new capture starts. A complete capture is returned as it is.
    overwrite
        With ``resume=False``, replace whatever is at the store. Without it, an existing store
        is an error.
    chunk_samples
        Samples per Zarr chunk (the same for every layer). Default: about 32 MiB of the widest
        layer per chunk. Memory use is one batch plus one chunk of every layer.
    n_samples
        The number of samples the loader gives, if ``len(loader.dataset)`` does not say it;
        arrays are then created at their final size. Without either, they grow chunk by chunk.
    dimension_names
        Per layer, names for its dimensions (first the sample dimension), replacing the
        defaults: ``("sample", "unit")`` for flat outputs, ``("sample", "channel", "height",
        "width")`` for NCHW conv maps, ``("sample", "channel", "length")`` for NCL ones. A
        default feature dimension whose size differs between layers is named after the layer
        (``"conv2.channel"``), because xarray requires one size per dimension name.

    Returns
    -------
    zarr.Group
        The group: one array per layer, chunked along samples only, with ``dimension_names``;
        its attribute ``dask_repsim_capture`` records the model class, the layers, the dtype,
        the chunk size, the number of committed samples and whether the capture is complete.

    Notes
    -----
    Each chunk of ``chunk_samples`` samples is written whole for every layer before the count
    of committed samples is updated, so a capture killed at any point (even by SIGKILL) and
    resumed gives exactly the arrays of an uninterrupted run: no sample lost, none repeated.
    The last, partial chunk is written at the end, then the capture is marked complete.

    Examples
    --------
    >>> import pytest, xarray as xr, zarr
    >>> import dask_repsim
    >>> torch = pytest.importorskip("torch")
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 5)
    ... )
    >>> images = torch.randn(60, 1, 8, 8)
    >>> loader = torch.utils.data.DataLoader(images, batch_size=16)
    >>> group = capture_activations(
    ...     model, loader, layers=["1", "3"], store=zarr.storage.MemoryStore(), chunk_samples=32
    ... )
    >>> group["1"].shape, group["1"].metadata.dimension_names
    ((60, 4, 6, 6), ('sample', 'channel', 'height', 'width'))
    >>> ds = xr.open_zarr(group.store, consolidated=False)
    >>> dict(ds.sizes)["sample"], sorted(ds.data_vars)
    (60, ['1', '3'])
    >>> float(dask_repsim.cka(ds["1"], ds["1"]))
    1.0
    """
    torch = _import_torch()
    layers = list(layers)
    if not layers:
        raise ValueError("no layers to capture")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers named more than once: {layers}")
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules or name == ""]
    if missing:
        known = ", ".join(repr(n) for n in modules if n)
        raise ValueError(f"no module(s) {missing} in {type(model).__name__}; it has {known}")
    if chunk_samples is not None and chunk_samples < 1:
        raise ValueError(f"chunk_samples must be at least 1, not {chunk_samples}")
    storage_dtype = None if dtype is None else np.dtype(dtype)
    model_class = f"{type(model).__module__}.{type(model).__qualname__}"
    classes = {name: type(modules[name]).__name__ for name in layers}

    root, state = _prepare(store, storage_options, resume, overwrite)
    if state is not None:
        _check_resumable(state, layers, model_class, storage_dtype, chunk_samples)
        if state.get("complete"):
            _consolidate(root)
            return root
    skip = 0 if state is None else int(state["committed"])
    expected = _expected_samples(loader, n_samples)

    outputs: dict[str, Any] = {}

    def hook(name: str):
        def keep(module: Any, args: Any, output: Any) -> None:
            if isinstance(output, tuple | list):
                output = output[0]
            if not torch.is_tensor(output):
                raise TypeError(f"module {name!r} returned {type(output).__name__}, not a tensor")
            if name in outputs:
                raise ValueError(
                    f"module {name!r} ran twice in one forward pass; capture a module that "
                    "runs once (give a reused module such as a shared activation its own name)"
                )
            outputs[name] = output

        return keep

    parameters = [*model.parameters(), *model.buffers()]
    device = parameters[0].device if parameters else torch.device("cpu")
    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    was_training = model.training
    model.eval()
    writer = None
    try:
        with torch.no_grad():
            seen = 0
            for batch in loader:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                size = int(x.shape[0])
                if seen == 0 and state is not None and state.get("first_batch") != _fingerprint(x):
                    raise ValueError(
                        "the loader's first batch differs from the interrupted capture's; "
                        "resume needs a loader that gives the same samples in the same order "
                        "(no unseeded shuffle)"
                    )
                if seen + size <= skip:  # committed already: no forward pass needed
                    seen += size
                    continue
                outputs.clear()
                model(x.to(device))
                drop, seen = max(0, skip - seen), seen + size
                if writer is None:
                    first = state is None
                    if first:
                        state = {"first_batch": _fingerprint(x)}
                    writer = _start(
                        root, state, outputs, layers, storage_dtype, chunk_samples, expected,
                        model_class, dimension_names, classes, new=first,
                    )
                writer.append(
                    {
                        name: _to_numpy(outputs[name], writer.arrays[name].dtype)[drop:]
                        for name in layers
                    }
                )
                outputs.clear()
        if writer is None:
            if state is None:
                raise ValueError("the loader gave no samples")
            raise ValueError(
                f"the loader gave {seen} samples, but the interrupted capture had already "
                f"committed {skip}; resume needs the same loader"
            )
        writer.finish()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return root


def _prepare(
    store: Any, storage_options: Mapping[str, Any] | None, resume: bool, overwrite: bool
) -> tuple[zarr.Group, dict[str, Any] | None]:
    """The group to write to, and the interrupted capture's state when resuming one."""
    existing = _existing(store, storage_options)
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


def _check_resumable(
    state: Mapping[str, Any],
    layers: list[str],
    model_class: str,
    dtype: np.dtype | None,
    chunk_samples: int | None,
) -> None:
    differences = []
    if list(state["layers"]) != layers:
        differences.append(f"layers {state['layers']} != {layers}")
    if state["model"] != model_class:
        differences.append(f"model {state['model']} != {model_class}")
    stored = state["dtype"]
    stored = set(stored.values()) if isinstance(stored, dict) else {stored}
    if dtype is not None and stored != {str(dtype)}:
        differences.append(f"dtype {state['dtype']} != {dtype}")
    if chunk_samples is not None and int(state["chunk_samples"]) != chunk_samples:
        differences.append(f"chunk_samples {state['chunk_samples']} != {chunk_samples}")
    if differences:
        raise ValueError(
            "cannot resume: the stored capture differs from this call: " + "; ".join(differences)
        )


def _start(
    root: zarr.Group,
    state: dict[str, Any],
    outputs: Mapping[str, Any],
    layers: list[str],
    dtype: np.dtype | None,
    chunk_samples: int | None,
    expected: int | None,
    model_class: str,
    dimension_names: Mapping[str, Sequence[str]] | None,
    module_classes: Mapping[str, str],
    new: bool,
) -> _ChunkWriter:
    """Create the arrays from the first batch's outputs (new capture) or reopen them (resume)."""
    if not new:
        arrays = {name: root[name] for name in layers}
        length = expected if expected is not None else int(state["committed"])
        length = max(length, int(state["committed"]))
        for array in arrays.values():
            # Arrays may have been left at different lengths by a crash between resizes.
            if array.shape[0] != length:
                array.resize((length,) + array.shape[1:])
        return _ChunkWriter(root, state, arrays)
    shapes = {}
    dtypes = {}
    for name in layers:
        out = outputs[name]
        shapes[name] = tuple(out.shape) if out.ndim > 1 else (out.shape[0], 1)
        dtypes[name] = _numpy_dtype(out, dtype)
    widest = max(math.prod(s[1:]) * dtypes[n].itemsize for n, s in shapes.items())
    chunk = chunk_samples or max(1, _TARGET_CHUNK_BYTES // max(1, widest))
    dims = _dimension_names(shapes, dimension_names)
    length = expected or 0
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
            attributes={"layer": name, "module": module_classes[name]},
        )
    state.update(
        model=model_class,
        layers=layers,
        dtype={name: str(dtypes[name]) for name in layers}
        if len(set(dtypes.values())) > 1
        else str(dtypes[layers[0]]),
        chunk_samples=chunk,
        committed=0,
        complete=False,
    )
    root.attrs[STATE_ATTR] = dict(state)
    return _ChunkWriter(root, state, arrays)
