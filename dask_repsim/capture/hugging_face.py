"""Recording a Hugging Face transformer's hidden states into a Zarr store, resumably.

:func:`capture_hidden_states` runs tokenised batches (dicts of ``input_ids``,
``attention_mask``, ... as a tokenizer and a ``DataLoader`` give them) through a
``transformers`` model with ``output_hidden_states=True`` and writes the hidden states it
returns (``embeddings``, ``layer_1``, ..., ``layer_L``), and the outputs of named sub-modules,
into one Zarr v3 group, one ``(sample, unit)`` array per layer, pooled over tokens as asked:

``"mean"``
    one sample per sequence: the mean over its tokens, weighted by the attention mask
    (computed in float64, then cast to the storage dtype);
``"first"``, ``"last"``
    one sample per sequence: its first or last token that the attention mask keeps (the
    ``[CLS]`` token of a BERT-style encoder, the final token of a decoder), for left and
    right padding alike;
``"every"``
    one sample per token that the attention mask keeps. Sample ids are strings
    ``"<sequence id>:<position>"``, the position counted among the sequence's kept tokens (0
    is its first real token, whichever side it is padded on), so two captures pair only on
    the same tokens; 1-d arrays ``sequence`` and ``position`` along ``sample`` hold both
    parts and are listed in each layer's ``coordinates`` attribute, so ``xarray.open_zarr``
    reads them as coordinates and :func:`dask_repsim.compare` does not take them for layers.

Padded positions are never samples and never enter a mean. The store, its chunk-by-chunk
writer and the resume protocol are those of :func:`~dask_repsim.capture_activations`
(:mod:`dask_repsim.capture.store`): whole chunks are written before the committed count,
which in ``"every"`` mode counts tokens.

Neither PyTorch nor ``transformers`` is imported before :func:`capture_hidden_states` is
called; ``transformers`` is never imported here at all (the caller's model is used as given).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from . import provenance
from .activations import (
    check_ids,
    expected_samples,
    fingerprint,
    keep_output,
    numpy_dtype,
    to_numpy,
)
from .rules import SAMPLE, batch_ids, check_order, describe_ids
from .store import (
    CaptureSpec,
    ChunkWriter,
    check_resumable,
    consolidate,
    create_writer,
    dimension_names,
    prepare_store,
    reopen_writer,
    storage_dtype,
)

__all__ = ["TOKENS", "capture_hidden_states"]

#: the ways tokens become samples
TOKENS = ("mean", "first", "last", "every")
#: the coordinate arrays of an ``"every"`` capture: each token's sequence id and position
SEQUENCE, POSITION = "sequence", "position"
EMBEDDINGS = "embeddings"
# forward arguments set here, never taken from a batch
_OWN_ARGUMENTS = {"output_hidden_states", "return_dict", "output_attentions"}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:  # torch is an optional dependency
        raise ImportError(
            "capture_hidden_states needs PyTorch and transformers; install them with "
            "`pip install dask-repsim[transformers]`"
        ) from err
    return torch


def capture_hidden_states(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    store: Any,
    tokens: str = "mean",
    layers: str | int | Sequence[str | int] | None = None,
    modules: str | Sequence[str] | None = None,
    sample_ids: str | None = None,
    dtype: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_samples: int | None = None,
    n_sequences: int | None = None,
    preprocessing: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> zarr.Group:
    """Record a Hugging Face transformer's hidden states over tokenised batches into Zarr.

    Parameters
    ----------
    model
        A ``transformers.PreTrainedModel`` (``BertModel``, ``GPT2Model``, a model with a
        head, ...). It runs in eval mode under ``torch.no_grad()`` with
        ``output_hidden_states=True``; its training mode is restored afterwards. Inputs are
        moved to ``model.device``.
    batches
        An iterable of dict batches as a tokenizer and a ``DataLoader`` (or a collator) give
        them: ``input_ids`` (or ``inputs_embeds``), ``attention_mask``, maybe
        ``token_type_ids``. The keys the model's ``forward`` takes by name are passed to it;
        the others (ids, labels, ...) are not. **Without an ``attention_mask`` every token
        counts.** It must give the same sequences in the same order every time for
        ``resume=True``; the first batch's hash and the committed samples' ids are checked.
    store
        Where the Zarr v3 group goes: a local path, an fsspec URL (with ``storage_options``)
        or a zarr store object.
    tokens
        How tokens become samples: ``"mean"`` (default; mean of the kept tokens, in float64),
        ``"first"`` (first kept token: BERT's ``[CLS]``), ``"last"`` (last kept token, for
        left or right padding) or ``"every"`` (each kept token is a sample, with ids
        ``"<sequence id>:<position>"`` and ``sequence``/``position`` coordinates). Kept
        tokens are those the attention mask marks; a sequence with none is an error.
    layers
        Hidden states to record: names ``"embeddings"`` (``hidden_states[0]``, the embedding
        output), ``"layer_1"`` ... ``"layer_L"``, or their indices into ``hidden_states``
        (negative ones count from the end); a single name or index is one layer. Default: all
        of them; ``[]`` for none (only ``modules``).
    modules
        Names of sub-modules as ``model.named_modules()`` gives them
        (``"encoder.layer.0.attention.output"``, ``"h.0.mlp"``; a single string is one
        name), recorded by forward hooks and pooled over tokens the same way. A tuple output
        is recorded by its first element; it must be ``(batch, token, unit)``, and the
        module must run once per forward pass.
    sample_ids
        Where dict batches hold each sequence's id (a key, e.g. ``"id"``; ints or strings,
        unique). Default: the sequence's position in ``batches``. :func:`dask_repsim.compare`
        pairs two captures' samples by id.
    dtype
        Storage dtype. Default: the hidden states' own (bfloat16 is stored as float32). A
        cast that would truncate or overflow is an error, as for
        :func:`~dask_repsim.capture_activations`.
    resume, overwrite
        As for :func:`~dask_repsim.capture_activations`: ``resume`` continues an interrupted
        capture (committed samples are skipped, without a forward pass where a whole batch
        is committed), refused as it is there (other parameters, layers, dtype, ...) and
        where ``tokens`` differs; ``overwrite`` replaces what is at ``store``.
    chunk_samples
        Samples (sequences, or tokens with ``"every"``) per Zarr chunk. Default: about
        32 MiB of the widest layer.
    n_sequences
        The number of sequences ``batches`` gives, if ``len(batches.dataset)`` does not say
        it, so that the arrays are created at their final size. Not with ``"every"``: the
        number of tokens is known only at the end (the arrays grow chunk by chunk).
    preprocessing
        What was done to the texts (the tokenizer's name and settings), recorded in the
        store's provenance (:mod:`dask_repsim.capture.provenance`). Default: nothing.
    storage_options
        fsspec options for a URL ``store``.

    Returns
    -------
    zarr.Group
        One ``(sample, unit)`` array per layer (hidden states first, then modules), a 1-d
        ``sample`` array of ids (with ``"every"`` also ``sequence`` and ``position``), the
        capture's state (attribute ``dask_repsim_capture``, with ``tokens``) and its
        provenance (model class and parameter hash, preprocessing, versions).

    Examples
    --------
    >>> import pytest, xarray as xr, zarr
    >>> torch = pytest.importorskip("torch")
    >>> transformers = pytest.importorskip("transformers")
    >>> _ = torch.manual_seed(0)
    >>> config = transformers.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2,
    ...                                  num_attention_heads=2, intermediate_size=16)
    >>> model = transformers.BertModel(config)
    >>> mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    >>> batches = [{"input_ids": torch.randint(1, 50, (2, 4)), "attention_mask": mask}]
    >>> group = capture_hidden_states(model, batches, store=zarr.storage.MemoryStore(),
    ...                               tokens="every")
    >>> sorted(group.array_keys())
    ['embeddings', 'layer_1', 'layer_2', 'position', 'sample', 'sequence']
    >>> group["layer_2"].shape, group["sample"][...].tolist()
    ((5, 8), ['0:0', '0:1', '0:2', '1:0', '1:1'])
    >>> ds = xr.open_zarr(group.store)
    >>> list(ds.data_vars), ds.position.values.tolist()
    (['embeddings', 'layer_1', 'layer_2'], [0, 1, 2, 0, 1])
    """
    torch = _import_torch()
    if tokens not in TOKENS:
        raise ValueError(f"tokens must be one of {TOKENS}, not {tokens!r}")
    hidden = _hidden_layers(model, layers)
    hooked = _named_modules(model, modules, hidden)
    names = [*hidden, *hooked]
    _check_options(names, chunk_samples, tokens, n_sequences)
    check_order(batches, sample_ids)
    described = _describe_ids(sample_ids, tokens)  # before anything is written
    storage = None if dtype is None else storage_dtype(None, dtype, "the hidden states")
    root, state = prepare_store(store, storage_options, resume, overwrite)
    spec = CaptureSpec(
        layers=names, model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        module_classes={**{n: f"hidden_states[{i}]" for n, i in hidden.items()},
                        **{n: type(m).__name__ for n, m in hooked.items()}},
        dtype=storage, chunk_samples=chunk_samples, expected=None,
        dimension_names=None, sample_ids=described, where=repr(store),
    )
    run = _Run(torch, model, hidden, hooked, tokens, sample_ids)
    if state is not None and _resumed_complete(run, batches, root, state, spec):
        return root
    spec.expected = None if tokens == "every" else expected_samples(batches, n_sequences)
    if state is None:
        provenance.record(root, provenance.describe(
            model=model, preprocessing=preprocessing, dtype=storage))
    handles = [m.register_forward_hook(keep_output(torch, n, run.outputs))
               for n, m in hooked.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _record(run, batches, root, state, spec)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return root


def _resumed_complete(run: _Run, batches: Iterable[Any], root: zarr.Group,
                      state: Mapping[str, Any], spec: CaptureSpec) -> bool:
    """Whether the capture to resume is complete, once checked to be this call's (same
    ``tokens``, parameters, options: :func:`~dask_repsim.capture.store.check_resumable`);
    a complete one is checked to come from the same first batch too (the other batches
    are not read)."""
    if state.get("tokens") != run.tokens:
        raise ValueError(f"cannot resume {spec.where}: the stored capture has tokens="
                         f"{state.get('tokens')!r}, this call tokens={run.tokens!r}")
    spec.parameters_sha256 = provenance.parameters_hash(run.model)
    check_resumable(state, spec, root)
    if not state.get("complete"):
        return False
    stored = state.get("first_batch")
    for raw in batches:
        if stored is not None and run.read(raw, 0).hash != stored:
            raise ValueError(
                f"the first batch differs from that of the complete capture at {spec.where}; "
                "resume needs batches that give the same sequences in the same order (no "
                "unseeded shuffle)")
        break
    consolidate(root)
    return True


def _describe_ids(sample_ids: str | None, tokens: str) -> str:
    """How ids are made (checked on resume): a sequence's, and a token's within it."""
    if sample_ids is not None and not isinstance(sample_ids, str):
        raise TypeError(f"sample_ids must be None or the key of the ids in dict batches, "
                        f"not {sample_ids!r}")
    described = describe_ids(sample_ids)
    return f"{described}:token" if tokens == "every" else described


def _forward_parameters(model: Any) -> tuple[set[str], bool]:
    """The names ``model.forward`` takes, and whether it takes ``**kwargs`` too."""
    parameters = inspect.signature(model.forward).parameters.values()
    named = {p.name for p in parameters
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind == p.VAR_KEYWORD for p in parameters)


def _hidden_layers(model: Any, layers: str | int | Sequence[str | int] | None,
                   ) -> dict[str, int]:
    """The hidden states asked for: name -> index into ``hidden_states``, in network order."""
    if isinstance(layers, str | int | np.integer):
        layers = [layers]  # one name or index: one layer
    if layers is not None and not layers:
        return {}
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None)
    named, kwargs = _forward_parameters(model)
    if not isinstance(count, int) or not ("output_hidden_states" in named or kwargs):
        raise ValueError(
            f"{type(model).__name__} has no hidden states to capture (it needs a transformers "
            "config with num_hidden_layers and a forward taking output_hidden_states); record "
            "its sub-modules with modules=... and layers=[]")
    available = [EMBEDDINGS, *(f"layer_{i}" for i in range(1, count + 1))]
    chosen: dict[str, int] = {}
    for layer in available if layers is None else layers:
        if isinstance(layer, int | np.integer) and not isinstance(layer, bool) \
                and -len(available) <= layer < len(available):
            layer = available[layer]
        if layer not in available:
            raise ValueError(f"no hidden state {layer!r} in {type(model).__name__}; it has "
                             f"{', '.join(available)} (or their indices 0 to {count})")
        if layer in chosen:
            raise ValueError(f"hidden state {layer!r} named more than once in layers")
        chosen[layer] = available.index(layer)
    return dict(sorted(chosen.items(), key=lambda item: item[1]))


def _named_modules(model: Any, modules: str | Sequence[str] | None,
                   hidden: Mapping[str, int]) -> dict[str, Any]:
    """The sub-modules asked for, by name, once checked to exist and not to clash."""
    if modules is None:
        return {}
    modules = [modules] if isinstance(modules, str) else list(modules)
    found = dict(model.named_modules())
    missing = [name for name in modules if name not in found or name == ""]
    if missing:
        known = ", ".join(repr(n) for n in found if n)
        raise ValueError(f"no module(s) {missing} in {type(model).__name__}; it has {known}")
    if len(set(modules)) != len(modules):
        raise ValueError(f"modules named more than once: {list(modules)}")
    clash = [n for n in modules if n in hidden or n in (SAMPLE, SEQUENCE, POSITION)]
    if clash:
        raise ValueError(f"module(s) {clash} have the name of a hidden state or of a "
                         "coordinate of the store; leave that hidden state out of layers")
    return {name: found[name] for name in modules}


def _check_options(names: list[str], chunk_samples: int | None, tokens: str,
                   n_sequences: int | None) -> None:
    if not names:
        raise ValueError("nothing to capture: no hidden states (layers=[]) and no modules")
    if chunk_samples is not None and chunk_samples < 1:
        raise ValueError(f"chunk_samples must be at least 1, not {chunk_samples}")
    if tokens == "every" and n_sequences is not None:
        raise ValueError("n_sequences does not apply with tokens='every': samples are tokens, "
                         "whose number is known only at the end; leave it out")


@dataclass
class _Batch:
    """One batch as read: the model's inputs, the mask of kept tokens, the sequences' ids."""

    inputs: dict[str, Any]
    mask: Any  # (sequences, tokens) bool tensor
    ids: np.ndarray
    hash: str


def _fingerprint(inputs: Mapping[str, Any]) -> str:
    """A hash of a batch's model inputs, to tell on resume whether the batches are the same."""
    parts = "|".join(f"{k}={fingerprint(v)}" for k, v in sorted(inputs.items())
                     if hasattr(v, "shape"))
    return hashlib.sha256(parts.encode()).hexdigest()


def _samples(batch: _Batch, tokens: str) -> dict[str, np.ndarray]:
    """The ids of the samples a batch gives (and, for ``"every"``, their coordinates),
    computed from the batch alone, without a forward pass."""
    if tokens != "every":
        return {SAMPLE: batch.ids}
    mask = batch.mask.to("cpu").numpy()
    rows, _ = np.nonzero(mask)
    position = (np.cumsum(mask, axis=1) - 1)[mask].astype(np.int64)
    sequence = batch.ids[rows]
    ids = np.char.add(np.char.add(sequence.astype(str), ":"), position.astype(str))
    return {SAMPLE: ids, SEQUENCE: sequence, POSITION: position}


class _Run:
    """The model, what it takes from a batch, its hooked outputs, and how tokens are pooled."""

    def __init__(self, torch: Any, model: Any, hidden: Mapping[str, int],
                 hooked: Mapping[str, Any], tokens: str, sample_ids: str | None):
        self.torch, self.model, self.hidden, self.hooked = torch, model, hidden, hooked
        self.tokens, self.sample_ids = tokens, sample_ids
        named, _ = _forward_parameters(model)
        self.accepted = named - _OWN_ARGUMENTS
        self.outputs: dict[str, Any] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.device = getattr(model, "device", None)

    def read(self, batch: Any, start: int) -> _Batch:
        """Batch ``batch``, its first sequence sequence ``start`` of ``batches``."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"batches must be dicts of tensors (input_ids, attention_mask, "
                            f"...), as a tokenizer gives them, not {type(batch).__name__}")
        inputs = {k: v for k, v in batch.items() if k in self.accepted}
        first = inputs.get("input_ids", inputs.get("inputs_embeds"))
        if first is None:
            raise ValueError(f"a batch has neither input_ids nor inputs_embeds (keys "
                             f"{sorted(map(str, batch))})")
        shape = tuple(first.shape[:2])
        mask = batch.get("attention_mask")
        mask = self.torch.ones(shape, dtype=self.torch.bool) if mask is None \
            else self.torch.as_tensor(mask).to("cpu").bool()
        if tuple(mask.shape) != shape:
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, the inputs "
                             f"{shape}")
        ids = batch_ids(batch, self.sample_ids, start, shape[0])
        empty = np.flatnonzero(~mask.any(dim=1).numpy())
        if len(empty):
            raise ValueError(f"sequence(s) {ids[empty].tolist()} have no tokens that the "
                             "attention mask keeps; drop them before the capture")
        return _Batch(inputs, mask, ids, _fingerprint(inputs))

    def rows(self, batch: _Batch) -> dict[str, Any]:
        """Every layer's pooled output for one batch (a forward pass): name -> (samples,
        units) tensor; records each layer's own dtype on the first call."""
        self.outputs.clear()
        inputs = {k: v.to(self.device) if hasattr(v, "to") and self.device is not None
                  else v for k, v in batch.inputs.items()}
        extra = {"output_hidden_states": True, "return_dict": True} if self.hidden else {}
        output = self.model(**inputs, **extra)
        states = dict(self.outputs)
        silent = [name for name in self.hooked if name not in states]
        if silent:
            raise ValueError(f"module(s) {silent} did not run in the forward pass")
        if self.hidden:
            found = getattr(output, "hidden_states", None)
            if found is None or len(found) != self.model.config.num_hidden_layers + 1:
                raise ValueError(
                    f"{type(self.model).__name__} returned "
                    f"{'no' if found is None else len(found)} hidden_states for "
                    f"num_hidden_layers={self.model.config.num_hidden_layers} (an "
                    "encoder-decoder model: capture model.get_encoder()); record its "
                    "sub-modules with modules=... and layers=[]")
            states.update({name: found[i] for name, i in self.hidden.items()})
        self.outputs.clear()
        pooled = {}
        for name in [*self.hidden, *self.hooked]:
            pooled[name] = self._pool(name, states[name], batch.mask)
            self.dtypes.setdefault(name, numpy_dtype(states[name], None))
        return pooled

    def _pool(self, name: str, h: Any, mask: Any) -> Any:
        if h.ndim != 3 or tuple(h.shape[:2]) != tuple(mask.shape):
            raise ValueError(f"{name!r} gives an output of shape {tuple(h.shape)}, not "
                             f"(batch, token, unit) for inputs of shape {tuple(mask.shape)}")
        mask = mask.to(h.device)
        if self.tokens == "every":
            return h[mask]
        if self.tokens == "mean":
            kept = self.torch.where(mask[..., None], h.double(), 0.0)  # padding may be NaN
            return kept.sum(dim=1) / mask.sum(dim=1, keepdim=True)
        order = mask.int() if self.tokens == "first" else mask.int().flip(1)
        index = order.argmax(dim=1)  # the first kept token from that side
        index = index if self.tokens == "first" else mask.shape[1] - 1 - index
        return h[self.torch.arange(len(h), device=h.device), index]


def _record(run: _Run, batches: Iterable[Any], root: zarr.Group,
            state: dict[str, Any] | None, spec: CaptureSpec) -> None:
    """Run the batches through the model and write the samples after the ``committed`` ones
    of ``state`` (all of them for a new capture, ``state`` None)."""
    skip = 0 if state is None else int(state["committed"])
    writer: ChunkWriter | None = None
    seen = sequences = 0  # samples (tokens with "every") and sequences so far
    for raw in batches:
        batch = run.read(raw, sequences)
        if sequences == 0 and state is not None and state.get("first_batch") != batch.hash:
            raise ValueError(
                "the first batch differs from the interrupted capture's; resume needs batches "
                "that give the same sequences in the same order (no unseeded shuffle)")
        sequences += len(batch.ids)
        samples = _samples(batch, run.tokens)
        size = len(samples[SAMPLE])
        if seen < skip:
            check_ids(root, samples[SAMPLE][: skip - seen], seen)
        if seen + size <= skip:  # committed already: no forward pass needed
            seen += size
            continue
        rows = run.rows(batch)
        start, drop, seen = seen, max(0, skip - seen), seen + size
        if writer is None:
            writer = _writer(run, root, state, spec, rows, samples, batch.hash)
        writer.append({**{n: to_numpy(rows[n], writer.arrays[n].dtype, 0, f"layer {n!r}",
                                      start)[drop:] for n in spec.layers},
                       **{k: v[drop:] for k, v in samples.items()}})
    if writer is None:
        if state is None:
            raise ValueError("the batches gave no sequences")
        raise ValueError(f"the batches gave {seen} samples, but the interrupted capture had "
                         f"already committed {skip}; resume needs the same batches")
    writer.finish()


def _writer(run: _Run, root: zarr.Group, state: dict[str, Any] | None, spec: CaptureSpec,
            rows: Mapping[str, Any], samples: Mapping[str, np.ndarray],
            first_batch: str) -> ChunkWriter:
    """The writer of a new capture (arrays made from the first batch's rows) or of the
    interrupted one, with the ``sequence`` and ``position`` arrays of an ``"every"`` one."""
    if state is not None:
        writer = reopen_writer(root, state, spec)
        extra = {name: root[name] for name in samples if name != SAMPLE}
        for array in extra.values():
            array.resize((writer.arrays[SAMPLE].shape[0],))
        return ChunkWriter(root, writer.state, {**writer.arrays, **extra})
    shapes = {name: tuple(rows[name].shape) for name in spec.layers}
    dtypes = {name: storage_dtype(run.dtypes[name], spec.dtype, f"layer {name!r}")
              for name in spec.layers}
    state = {"first_batch": first_batch, "tokens": run.tokens}
    writer = create_writer(root, state, shapes, dtypes, spec, dimension_names(shapes, None),
                           samples[SAMPLE].dtype)
    if run.tokens != "every":
        return writer
    extra = {name: _coordinate(root, name, values.dtype, writer.chunk)
             for name, values in samples.items() if name != SAMPLE}
    for name in spec.layers:  # on the writer's array objects, which write their metadata
        writer.arrays[name].attrs["coordinates"] = " ".join(extra)
    return ChunkWriter(root, writer.state, {**writer.arrays, **extra})


def _coordinate(root: zarr.Group, name: str, dtype: np.dtype, chunk: int) -> zarr.Array:
    """A 1-d array along ``sample`` labelling each token (its sequence id or position)."""
    text = dtype.kind not in "iu"
    return root.create_array(
        name, shape=(0,), chunks=(chunk,), dtype=str if text else np.int64,
        fill_value="" if text else -1, dimension_names=(SAMPLE,),
        attributes={"description": {SEQUENCE: "the id of the token's sequence",
                                    POSITION: "the token's position among its sequence's "
                                              "unmasked tokens"}[name]},
    )
