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
:mod:`dask_repsim.capture.store`; this module is the PyTorch side.

PyTorch is optional: it is imported when :func:`capture_activations` is called, not when
``dask_repsim`` is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from . import provenance
from .rules import (
    SAMPLE,
    batch_ids,
    batch_input,
    check_order,
    describe_ids,
    module_layout,
    output_tensor,
    sample_first,
)
from .store import (
    STATE_ATTR,
    CaptureSpec,
    ChunkWriter,
    cast_rows,
    check_resumable,
    consolidate,
    create_writer,
    dimension_names,
    prepare_store,
    reopen_writer,
    resume_error,
    storage_dtype,
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


def numpy_dtype(tensor: Any, dtype: np.dtype | None) -> np.dtype:
    if dtype is not None:
        return dtype
    name = str(tensor.dtype).removeprefix("torch.")
    # numpy has no bfloat16: store it as float32, which holds every bfloat16 value exactly
    return np.dtype("float32" if name == "bfloat16" else name)


def to_numpy(tensor: Any, dtype: np.dtype | None, axis: int = 0, where: str = "the output",
             start: int = 0) -> np.ndarray:
    """A recorded output as numpy, its sample axis (``axis``) first, cast to ``dtype`` where
    given (a lossy cast is an error naming ``where`` and the sample, the first of the rows
    being sample ``start``: :func:`~dask_repsim.capture.store.cast_rows`)."""
    tensor = tensor.detach().to("cpu")
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    array = np.moveaxis(tensor.numpy(), axis, 0)
    if array.ndim == 1:
        array = array[:, None]  # one number per sample is one unit
    return array if dtype is None else cast_rows(array, dtype, where, start)


def fingerprint(x: Any) -> str:
    """A hash of a batch of inputs, to tell on resume whether the loader gives the same data."""
    data = np.ascontiguousarray(x.detach().to("cpu").numpy()) if hasattr(x, "detach") else x
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def expected_samples(loader: Iterable, n_samples: int | None) -> int | None:
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
    layers: str | Sequence[str],
    store: Any,
    dtype: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    chunk_samples: int | None = None,
    n_samples: int | None = None,
    dimension_names: Mapping[str, Sequence[str]] | None = None,
    sample_ids: int | str | None = None,
    input_key: str | None = None,
    preprocessing: Any = None,
) -> zarr.Group:
    """Record the outputs of named modules of a PyTorch model over a data loader into Zarr.

    Parameters
    ----------
    model
        A ``torch.nn.Module``. It runs in eval mode under ``torch.no_grad()``; its training
        mode is restored afterwards. Inputs are moved to the device of its first parameter.
    loader
        An iterable of batches: tensors, tuples/lists whose first element is the input
        (``(images, labels)`` from a ``DataLoader``), or dicts holding the input under
        ``input_key``. Samples are counted along the input's first axis. It must give the same
        samples in the same order every time it is iterated (no unseeded shuffling) for
        ``resume=True`` to be correct; the first batch's hash and the committed samples' ids
        are checked on resume.
    layers
        Module names as ``model.named_modules()`` gives them (``"features.3"``, ``"fc1"``); a
        single string is one name. A module must run once per forward pass. An output that
        is a tuple or list is recorded by its first element (an LSTM's output sequence, an
        attention module's output), one with a ``last_hidden_state`` by that
        (:mod:`dask_repsim.capture.rules`).
    store
        Where the Zarr v3 group goes: a local path, an fsspec URL (``s3://bucket/acts.zarr``,
        with ``storage_options``) or a zarr store object.
    dtype
        Storage dtype (e.g. ``"float16"`` to halve the size). Default: the outputs' own
        (bfloat16 is stored as float32). A cast that would truncate (float outputs to an
        integer dtype) or overflow (a value beyond float16's range) is an error naming the
        layer, the dtype (and the sample).
    resume
        Continue an interrupted capture at the store: the loader's first ``committed`` samples
        are skipped and everything after them is written again. On a store that does not exist
        yet, a new capture starts. A complete capture is returned as it is. Refused, before
        anything is written, where the store was captured with other layers, another model
        class or other parameters (their hash in the provenance), another ``dtype`` or
        ``chunk_samples`` (where given; left out, the store's are used), other sample ids
        or ``dimension_names``, or from a loader whose first batch differs.
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
        Per layer, the dims of its output in the order the module produces them, one of them
        ``"sample"`` (moved first when it is not), replacing the layout the module type gives:
        ``("sample", "token", "unit")`` for batch-first sequence outputs of transformer,
        attention and recurrent modules (``("token", "sample", "unit")`` when not batch
        first) and of ``Linear`` applied to a sequence, ``("sample", "channel", "length")`` for
        1-d convs; ``("sample", "unit")``, ``("sample", "channel", "height", "width")`` by the
        number of dims otherwise (:mod:`dask_repsim.capture.rules`), except a 3-d output of a
        module whose type does not say (a transformer block of another library, an activation
        inside one): that must be declared here, as a sequence and a 1-d conv would be named
        differently. A default feature
        dimension whose size differs between layers is named after the layer
        (``"conv2.channel"``), because xarray requires one size per dimension name;
        ``sample_dims``, ``pool`` and ``resize`` find it by its role all the same.
    sample_ids, input_key
        The ids written as the group's ``sample`` coordinate: ``None`` (default) each sample's
        position in the loader (a shuffling ``DataLoader`` is then refused: positions would not
        identify samples); an int ``k``, element ``k`` of tuple/list batches; a str, that key
        of dict batches (ints or strings, one per sample, unique). ``input_key``: the key
        of the model input in dict batches. :func:`dask_repsim.compare` pairs two captures'
        samples by these ids.
    preprocessing
        What was done to the inputs (image size, normalisation, tokenizer settings), recorded
        in the store's provenance (:mod:`dask_repsim.capture.provenance`) as given if a
        string, else as its ``repr``. Default: the ``transform`` of ``loader.dataset`` where
        it has one, else nothing. :func:`dask_repsim.compare` warns when two stores of the
        same model record different preprocessing.

    Returns
    -------
    zarr.Group
        The group: one array per layer, chunked along samples only, with ``dimension_names``,
        and a 1-d ``sample`` array of ids; its attribute ``dask_repsim_capture`` records the
        model class, the layers, the dtype, the chunk size, how ids are made, the number of
        committed samples and whether the capture is complete; ``dask_repsim_provenance``
        what made it (model class and parameter hash, preprocessing, versions, sample count
        and ids' hash).

    Notes
    -----
    Each chunk of ``chunk_samples`` samples is written whole for every layer (and its ids)
    before the count of committed samples is updated, so a capture killed at any point (even
    by SIGKILL) and resumed gives exactly the arrays of an uninterrupted run: no sample lost,
    none repeated. The last, partial chunk is written at the end, then the capture is marked
    complete.

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
    >>> dict(ds.sizes)["sample"], sorted(ds.data_vars), ds.sample.values[:3].tolist()
    (60, ['1', '3'], [0, 1, 2])
    >>> float(dask_repsim.cka(ds["1"], ds["1"]))
    1.0
    """
    torch = _import_torch()
    layers = [layers] if isinstance(layers, str) else list(layers)
    modules = _check_arguments(model, layers, chunk_samples, dimension_names)
    check_order(loader, sample_ids)
    storage = None if dtype is None else storage_dtype(None, dtype, "the activations")
    root, state = prepare_store(store, storage_options, resume, overwrite)
    spec = CaptureSpec(
        layers=layers,
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        module_classes={name: type(modules[name]).__name__ for name in layers},
        dtype=storage,
        chunk_samples=chunk_samples,
        expected=None,
        dimension_names=dimension_names,
        sample_ids=describe_ids(sample_ids),
        where=repr(store),
    )
    if state is not None and _resumed_complete(model, loader, root, state, spec, input_key):
        return root
    spec.expected = expected_samples(loader, n_samples)
    if state is None:
        provenance.record(root, provenance.describe(
            model=model, preprocessing=_preprocessing(loader, preprocessing),
            dtype=storage))
    outputs: dict[str, Any] = {}
    run = _Run(torch, model, modules, outputs, sample_ids, input_key)
    handles = [
        modules[name].register_forward_hook(keep_output(torch, name, outputs)) for name in layers
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _record(run, loader, root, state, spec)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return root


def _preprocessing(loader: Iterable[Any], given: Any) -> Any:
    """What the caller says was done to the inputs, else the loader's dataset's transform."""
    if given is not None:
        return given
    transform = getattr(getattr(loader, "dataset", None), "transform", None)
    return None if transform is None else repr(transform)


def _check_arguments(model: Any, layers: list[str], chunk_samples: int | None,
                     dims: Mapping[str, Sequence[str]] | None) -> dict[str, Any]:
    """The model's modules by name, once the layers, chunk size and dims asked for are
    checked."""
    if not layers:
        raise ValueError("no layers to capture")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers named more than once: {layers}")
    if SAMPLE in layers:
        raise ValueError(f"a layer cannot be called {SAMPLE!r}: the group's sample ids are")
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules or name == ""]
    if missing:
        known = ", ".join(repr(n) for n in modules if n)
        raise ValueError(f"no module(s) {missing} in {type(model).__name__}; it has {known}")
    if chunk_samples is not None and chunk_samples < 1:
        raise ValueError(f"chunk_samples must be at least 1, not {chunk_samples}")
    for name, names in (dims or {}).items():
        if isinstance(names, str):
            raise ValueError(f"dimension_names[{name!r}] must name each dim of the layer's "
                             f"output (e.g. ('sample', 'token', 'unit')), not the string "
                             f"{names!r}")
    return modules


def _resumed_complete(model: Any, loader: Iterable[Any], root: zarr.Group,
                      state: Mapping[str, Any], spec: CaptureSpec, input_key: str | None) -> bool:
    """Whether the capture to resume is complete, once checked to be this call's (same
    parameters, options: :func:`~dask_repsim.capture.store.check_resumable`); a complete one
    is checked to come from the loader's first batch too (the rest of it is not read)."""
    spec.parameters_sha256 = provenance.parameters_hash(model)
    check_resumable(state, spec, root)
    if not state.get("complete"):
        return False
    stored = state.get("first_batch")
    for batch in loader:
        if stored is not None and fingerprint(batch_input(batch, input_key)) != stored:
            raise ValueError(
                f"the loader's first batch differs from that of the complete capture at "
                f"{spec.where}; resume needs a loader that gives the same samples in the same "
                "order (no unseeded shuffle)"
            )
        break
    consolidate(root)
    return True


def _device(torch: Any, model: Any) -> Any:
    """Where the model's first parameter (or buffer) lives; the CPU for a model with none."""
    parameters = [*model.parameters(), *model.buffers()]
    return parameters[0].device if parameters else torch.device("cpu")


def keep_output(torch: Any, name: str, outputs: dict[str, Any]) -> Any:
    """A forward hook that puts module ``name``'s recorded output (a tuple's first element,
    :func:`~dask_repsim.capture.rules.output_tensor`) in ``outputs``, once per forward pass."""

    def keep(module: Any, args: Any, output: Any) -> None:
        output = output_tensor(output, name, torch.is_tensor)
        if name in outputs:
            raise ValueError(
                f"module {name!r} ran twice in one forward pass; capture a module that "
                "runs once (give a reused module such as a shared activation its own name)"
            )
        outputs[name] = output

    return keep


class _Run:
    """What one capture run needs besides the store: the model, its hooked outputs, how to
    read batches, and (from the first forward pass) each layer's sample axis and dims."""

    def __init__(self, torch: Any, model: Any, modules: Mapping[str, Any],
                 outputs: dict[str, Any], sample_ids: int | str | None, input_key: str | None):
        self.model, self.modules, self.outputs = model, modules, outputs
        self.sample_ids, self.input_key = sample_ids, input_key
        self.device = _device(torch, model)
        self.axes: dict[str, int] = {}
        self.dims: dict[str, tuple[str, ...]] = {}

    def layouts(self, spec: CaptureSpec) -> None:
        """Each layer's sample axis and dims, from the first forward pass's outputs."""
        declared, defaults, shapes = {}, {}, {}
        given = dict(spec.dimension_names or {})
        for name in spec.layers:
            out = self.outputs[name]
            if name in given and len(tuple(given[name])) != max(out.ndim, 2):
                raise ValueError(f"dimension_names[{name!r}] has {len(tuple(given[name]))} "
                                 f"names for an output of shape {tuple(out.shape)}")
            layout = given.get(name) or module_layout(self.modules[name], out.ndim)
            if layout is None and out.ndim == 3:
                raise ValueError(
                    f"layer {name!r} ({type(self.modules[name]).__name__}) gives a 3-d output "
                    f"{tuple(out.shape)} whose layout its type does not say: a sequence's "
                    "(sample, token, unit), as a transformer block's, or a 1-d conv's (sample, "
                    "channel, length); declare it, e.g. dimension_names={"
                    f"{name!r}: ('sample', 'token', 'unit')}}")
            axis, dims = (0, None) if layout is None else sample_first(layout, name)
            self.axes[name] = axis
            shape = list(out.shape) if out.ndim > 1 else [out.shape[0], 1]
            shapes[name] = (shape.pop(axis), *shape)
            if name in given:
                declared[name] = dims
            elif dims is not None:
                defaults[name] = dims[1:]
        self.dims = dimension_names(shapes, declared, defaults)

    def rows(self, name: str, dtype: np.dtype | None, size: int, start: int = 0) -> np.ndarray:
        """Layer ``name``'s output of this batch (its first sample sample ``start`` of the
        loader), samples first, as ``dtype``, checked to have ``size`` samples."""
        rows = to_numpy(self.outputs[name], dtype, self.axes[name], f"layer {name!r}", start)
        if rows.shape[0] != size:
            raise ValueError(
                f"layer {name!r} gives {rows.shape[0]} samples for a batch of {size}: its "
                "output is not samples first; declare its layout with dimension_names (e.g. "
                "('token', 'sample', 'unit'))"
            )
        return rows


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def check_ids(root: zarr.Group, ids: np.ndarray, start: int) -> None:
    """On resume: the ids of committed samples ``start, ...`` must be the stored ones."""
    stored = root[SAMPLE][start : start + len(ids)]
    differ = np.flatnonzero(stored != ids)
    if len(differ):
        k = differ[0]
        raise ValueError(
            f"the loader's sample ids differ from the interrupted capture's: sample {start + k} "
            f"is {_plain(ids[k])!r} now, {_plain(stored[k])!r} in the store; resume needs the same "
            "samples in the same order"
        )


def _record(
    run: _Run, loader: Iterable[Any], root: zarr.Group, state: dict[str, Any] | None,
    spec: CaptureSpec,
) -> None:
    """Run the loader through the model and write the outputs of the samples after the
    ``committed`` ones of ``state`` (all of them for a new capture, ``state`` None)."""
    skip = 0 if state is None else int(state["committed"])
    writer = None
    seen = 0
    for batch in loader:
        x = batch_input(batch, run.input_key)
        size = int(x.shape[0])
        ids = batch_ids(batch, run.sample_ids, seen, size)
        if seen == 0 and state is not None and state.get("first_batch") != fingerprint(x):
            raise ValueError(
                "the loader's first batch differs from the interrupted capture's; "
                "resume needs a loader that gives the same samples in the same order "
                "(no unseeded shuffle)"
            )
        if seen < skip and run.sample_ids is not None:
            check_ids(root, ids[: skip - seen], seen)
        if seen + size <= skip:  # committed already: no forward pass needed
            seen += size
            continue
        run.outputs.clear()
        run.model(x.to(run.device))
        start, drop, seen = seen, max(0, skip - seen), seen + size
        if writer is None:
            run.layouts(spec)
            if state is None:
                state = {"first_batch": fingerprint(x)}
                writer = _new_writer(run, root, state, spec, ids.dtype, size)
            else:
                _check_dims(root, run, spec)
                writer = reopen_writer(root, state, spec)
        rows = {name: run.rows(name, writer.arrays[name].dtype, size, start)[drop:]
                for name in spec.layers}
        writer.append({**rows, SAMPLE: ids[drop:]})
        run.outputs.clear()
    if writer is None:
        if state is None:
            raise ValueError("the loader gave no samples")
        raise ValueError(
            f"the loader gave {seen} samples, but the interrupted capture had already "
            f"committed {skip}; resume needs the same loader"
        )
    writer.finish()


def _new_writer(run: _Run, root: zarr.Group, state: dict[str, Any], spec: CaptureSpec,
                ids_dtype: np.dtype, size: int) -> ChunkWriter:
    """Create the arrays of a new capture from the first batch's outputs."""
    shapes = {}
    dtypes = {}
    for name in spec.layers:
        shapes[name] = run.rows(name, None, size).shape
        dtypes[name] = storage_dtype(numpy_dtype(run.outputs[name], None), spec.dtype,
                                     f"layer {name!r}")
    return create_writer(root, state, shapes, dtypes, spec, run.dims, ids_dtype)


def _check_dims(root: zarr.Group, run: _Run, spec: CaptureSpec) -> None:
    """On resume: each layer's dims as this call lays them out must be the stored ones
    (other ``dimension_names`` would take another axis of the output for the samples)."""
    differ = []
    for name in spec.layers:
        stored = tuple(root[name].metadata.dimension_names or ())
        if stored != tuple(run.dims[name]):
            differ.append(f"dims of layer {name!r} {stored} != {tuple(run.dims[name])}")
    if differ:
        raise resume_error(spec, differ)
