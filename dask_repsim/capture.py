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
(one PUT per key) do. The Zarr side (the store, its state, the chunk writer) is
:mod:`dask_repsim.capture_store`; this module is the PyTorch side.

PyTorch is optional: it is imported when :func:`capture_activations` is called, not when
``dask_repsim`` is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .capture_store import (
    STATE_ATTR,
    CaptureSpec,
    ChunkWriter,
    check_resumable,
    consolidate,
    create_writer,
    prepare_store,
    reopen_writer,
)

__all__ = ["STATE_ATTR", "capture_activations"]


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:  # torch is an optional dependency
        raise ImportError(
            "capture_activations needs PyTorch; install it with `pip install dask-repsim[torch]`"
        ) from err
    return torch


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
    modules = _check_arguments(model, layers, chunk_samples)
    storage_dtype = None if dtype is None else np.dtype(dtype)
    root, state = prepare_store(store, storage_options, resume, overwrite)
    spec = CaptureSpec(
        layers=layers,
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        module_classes={name: type(modules[name]).__name__ for name in layers},
        dtype=storage_dtype,
        chunk_samples=chunk_samples,
        expected=None,
        dimension_names=dimension_names,
    )
    if state is not None:
        check_resumable(state, spec)
        if state.get("complete"):
            consolidate(root)
            return root
    spec.expected = _expected_samples(loader, n_samples)
    outputs: dict[str, Any] = {}
    device = _device(torch, model)
    handles = [
        modules[name].register_forward_hook(_keep_output(torch, name, outputs)) for name in layers
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _record(model, loader, device, outputs, root, state, spec)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return root


def _check_arguments(model: Any, layers: list[str], chunk_samples: int | None) -> dict[str, Any]:
    """The model's modules by name, once the layers and chunk size asked for are checked."""
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
    return modules


def _device(torch: Any, model: Any) -> Any:
    """Where the model's first parameter (or buffer) lives; the CPU for a model with none."""
    parameters = [*model.parameters(), *model.buffers()]
    return parameters[0].device if parameters else torch.device("cpu")


def _keep_output(torch: Any, name: str, outputs: dict[str, Any]) -> Any:
    """A forward hook that puts module ``name``'s output (a tuple's first element) in
    ``outputs``, once per forward pass."""

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


def _record(
    model: Any,
    loader: Iterable[Any],
    device: Any,
    outputs: dict[str, Any],
    root: zarr.Group,
    state: dict[str, Any] | None,
    spec: CaptureSpec,
) -> None:
    """Run the loader through the model and write the outputs of the samples after the
    ``committed`` ones of ``state`` (all of them for a new capture, ``state`` None)."""
    skip = 0 if state is None else int(state["committed"])
    writer = None
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
            if state is None:
                state = {"first_batch": _fingerprint(x)}
                writer = _new_writer(root, state, outputs, spec)
            else:
                writer = reopen_writer(root, state, spec)
        writer.append(
            {
                name: _to_numpy(outputs[name], writer.arrays[name].dtype)[drop:]
                for name in spec.layers
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


def _new_writer(
    root: zarr.Group, state: dict[str, Any], outputs: Mapping[str, Any], spec: CaptureSpec
) -> ChunkWriter:
    """Create the arrays of a new capture from the first batch's outputs."""
    shapes = {}
    dtypes = {}
    for name in spec.layers:
        out = outputs[name]
        shapes[name] = tuple(out.shape) if out.ndim > 1 else (out.shape[0], 1)
        dtypes[name] = _numpy_dtype(out, spec.dtype)
    return create_writer(root, state, shapes, dtypes, spec)
