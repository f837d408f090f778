"""What :func:`~dask_repsim.capture_activations` takes from each batch and each module's output.

Nothing here imports PyTorch: modules and tensors are recognised by their class names and
attributes.

**Batches.** A tensor is the model input. A tuple or list is ``(input, ...)``: its first element
is the model input (``(images, labels)`` from a ``DataLoader``). A dict (any mapping) gives the
model input under ``input_key``. Samples are counted along the input's first axis.

**Sample ids.** ``sample_ids=None`` (default): each sample's position in the loader, 0, 1, 2, ...
An int ``k``: element ``k`` of each tuple or list batch holds one id per sample; a str ``key``:
``batch[key]`` of each dict batch does. Ids are integers or strings (a tensor, numpy array or
list of them), unique across the loader. They become the ``sample`` coordinate of the group.

**Outputs.** A tensor is recorded as it is. A tuple or list is recorded by its first element
(recursively): an ``LSTM``/``GRU``/``RNN``'s output sequence, not its hidden state ``(h, c)``;
a ``MultiheadAttention``'s attention output, not its weights. A mapping or an object with a
``last_hidden_state`` (a Hugging Face model output) is recorded by that; anything else is an
error naming the module.

**Layouts.** The dims of a module's output, in the order the module produces them, are chosen by
what the module is (its class or a base class):

- ``TransformerEncoderLayer``, ``TransformerEncoder``, ``TransformerDecoderLayer``,
  ``TransformerDecoder``, ``Transformer``, ``MultiheadAttention``, ``LSTM``, ``GRU``, ``RNN``:
  ``("sample", "token", "unit")`` when the module (or the attention inside it) is
  ``batch_first``, else ``("token", "sample", "unit")``;
- ``Linear``, ``Embedding``, ``LayerNorm``, ``RMSNorm`` with a 3-d output (applied to a
  sequence): ``("sample", "token", "unit")`` (batch first);
- ``Conv1d`` and other 1-d conv, pooling and norm layers: ``("sample", "channel", "length")``;
- anything else by its number of dims: ``("sample", "unit")``, ``("sample", "channel",
  "height", "width")``, ``("sample", "channel", "depth", "height", "width")``; a 3-d output
  is an error asking for ``dimension_names`` (a transformer block of another library gives
  ``(sample, token, unit)``, a 1-d conv ``(sample, channel, length)``: the type must say which).

``dimension_names`` declares a layer's layout instead (it must name ``"sample"``). Outputs are
stored samples first: an output whose ``sample`` dim is not first is transposed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SAMPLE = "sample"

_SEQUENCE = {"TransformerEncoderLayer", "TransformerEncoder", "TransformerDecoderLayer",
             "TransformerDecoder", "Transformer", "MultiheadAttention", "RNNBase", "LSTM",
             "GRU", "RNN"}
_TOKENWISE = {"Linear", "Embedding", "LayerNorm", "RMSNorm"}
_ONE_D = {"Conv1d", "ConvTranspose1d", "BatchNorm1d", "InstanceNorm1d", "MaxPool1d",
          "AvgPool1d", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d", "LazyConv1d"}
_BY_NDIM = {
    2: ("unit",),
    3: ("channel", "length"),
    4: ("channel", "height", "width"),
    5: ("channel", "depth", "height", "width"),
}


def default_dims(ndim: int) -> tuple[str, ...]:
    """The feature dims of an output with ``ndim`` dims (samples first) of an unknown module."""
    return _BY_NDIM.get(ndim, tuple(f"dim_{i}" for i in range(1, ndim)))


def _kinds(module: Any) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def _batch_first(module: Any) -> bool:
    """The module's ``batch_first``, else that of the first submodule that has one."""
    for part in [module, *getattr(module, "modules", lambda: [])()]:
        value = getattr(part, "batch_first", None)
        if isinstance(value, bool):
            return value
    return False


def module_layout(module: Any, ndim: int) -> tuple[str, ...] | None:
    """The dims of ``module``'s ``ndim``-dim output as it produces them (``"sample"`` among
    them), or None when its type does not say (then :func:`default_dims` apply).

    Examples
    --------
    >>> class LSTM:
    ...     batch_first = True
    >>> module_layout(LSTM(), 3)
    ('sample', 'token', 'unit')
    """
    if ndim != 3:
        return None
    kinds = _kinds(module)
    if kinds & _SEQUENCE:
        return (SAMPLE, "token", "unit") if _batch_first(module) else ("token", SAMPLE, "unit")
    if kinds & _TOKENWISE:
        return (SAMPLE, "token", "unit")
    if kinds & _ONE_D:
        return (SAMPLE, "channel", "length")
    return None


def output_tensor(output: Any, name: str, is_tensor: Any) -> Any:
    """The tensor recorded for module ``name``'s ``output`` (see the module documentation)."""
    while not is_tensor(output):
        if isinstance(output, tuple | list) and output:
            output = output[0]
        elif isinstance(output, Mapping) and "last_hidden_state" in output:
            output = output["last_hidden_state"]
        elif getattr(output, "last_hidden_state", None) is not None:
            output = output.last_hidden_state
        else:
            raise TypeError(
                f"module {name!r} returned {type(output).__name__}, not a tensor, a tuple or list "
                "whose first element is one, or an object with last_hidden_state"
            )
    return output


def batch_input(batch: Any, input_key: str | None) -> Any:
    """The model input of one batch."""
    if isinstance(batch, Mapping):
        if input_key is None or input_key not in batch:
            raise ValueError(
                f"the loader gives dict batches (keys {sorted(map(str, batch))}); name the "
                "model input with input_key="
            )
        return batch[input_key]
    if input_key is not None:
        raise ValueError(f"input_key={input_key!r} applies to dict batches; the loader gives "
                         f"{type(batch).__name__}")
    return batch[0] if isinstance(batch, tuple | list) else batch


def describe_ids(sample_ids: int | str | None) -> str:
    """How a capture's sample ids are made, as stored in its state and checked on resume."""
    if sample_ids is None:
        return "position"
    if isinstance(sample_ids, bool) or not isinstance(sample_ids, int | str):
        raise TypeError(f"sample_ids must be None, an int or a str, not {sample_ids!r}")
    return f"batch[{sample_ids!r}]"


def batch_ids(batch: Any, sample_ids: int | str | None, start: int, size: int) -> np.ndarray:
    """The ids of the ``size`` samples of ``batch``, the first of them sample ``start`` of the
    loader: int64 positions, or the loader's ids as int64 or str."""
    if sample_ids is None:
        return np.arange(start, start + size, dtype=np.int64)
    if isinstance(sample_ids, str) != isinstance(batch, Mapping):
        kind = "dict" if isinstance(sample_ids, str) else "tuple or list"
        raise ValueError(f"sample_ids={sample_ids!r} reads {kind} batches; the loader gives "
                         f"{type(batch).__name__}")
    try:
        ids = batch[sample_ids]
    except (IndexError, KeyError):
        raise ValueError(f"the loader's batches have no element {sample_ids!r} for "
                         "sample_ids") from None
    if hasattr(ids, "detach"):
        ids = ids.detach().to("cpu").numpy()
    ids = np.asarray(ids)
    if ids.shape != (size,):
        raise ValueError(f"batch[{sample_ids!r}] holds {ids.shape} ids for a batch of {size} "
                         "samples; give one id per sample")
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "UST" or (ids.dtype.kind == "O" and all(isinstance(i, str) for i in ids)):
        return ids.astype(str)
    raise TypeError(f"sample ids must be integers or strings, not {ids.dtype}")


def sample_first(dims: Sequence[str], name: str) -> tuple[int, tuple[str, ...]]:
    """The axis of ``"sample"`` in a layer's declared ``dims``, and the dims samples first."""
    dims = tuple(dims)
    if SAMPLE not in dims:
        raise ValueError(f"the dims of layer {name!r}, {dims}, do not name its sample dim "
                         f"{SAMPLE!r}")
    axis = dims.index(SAMPLE)
    return axis, (SAMPLE,) + dims[:axis] + dims[axis + 1:]


_RANDOM_SAMPLERS = {"RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler"}


def check_order(loader: Any, sample_ids: int | str | None) -> None:
    """Positions identify samples only in a fixed order: a shuffling loader needs ids."""
    if sample_ids is not None:
        return
    sampler = getattr(loader, "sampler", None)
    if _kinds(sampler) & _RANDOM_SAMPLERS or getattr(sampler, "shuffle", False) is True:
        raise ValueError(
            f"the loader shuffles its samples ({type(sampler).__name__}), so positions in it "
            "do not identify them and the capture could not be paired with another or resumed; "
            "give sample_ids= (where the batches hold each sample's id) or use a loader with a "
            "fixed order"
        )
