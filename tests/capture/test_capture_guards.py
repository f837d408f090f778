"""What a capture refuses: resuming a store with another model's weights (or other dims, or
from another loader) rather than mixing two models' rows; a storage dtype that would truncate
or overflow the activations rather than storing zeros or infinities; a single string of layer
names taken for its characters. Every stored value is checked against the model's own outputs,
recomputed here in float64 from its weights (dense numpy) or its ``hidden_states``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from dask_repsim.capture.activations import STATE_ATTR, capture_activations
from dask_repsim.capture.hugging_face import capture_hidden_states
from dask_repsim.capture.provenance import PROVENANCE_ATTR

torch = pytest.importorskip("torch")

N, BATCH, WIDTH = 60, 10, 6


class _Stop(RuntimeError):
    """The interruption of a capture (a kill between two batches)."""


class _Loader:
    """``data`` in batches of BATCH, interrupted (``_Stop``) before batch ``stop``."""

    def __init__(self, data, stop: int | None = None):
        self.data, self.stop = data, stop

    def __iter__(self):
        for k, start in enumerate(range(0, len(self.data), BATCH)):
            if k == self.stop:
                raise _Stop
            yield self.data[start:start + BATCH]


def _mlp(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(WIDTH, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _data(scale: float = 1.0):
    return torch.randn(N, WIDTH, generator=torch.Generator().manual_seed(7)) * scale


def _reference(mlp, x) -> dict[str, np.ndarray]:
    """The MLP's layers '0' and '2' over ``x`` in float64, from its weights (numpy)."""
    w = {k: v.detach().double().numpy() for k, v in mlp.state_dict().items()}
    h0 = x.double().numpy() @ w["0.weight"].T + w["0.bias"]
    return {"0": h0, "2": np.maximum(h0, 0) @ w["2.weight"].T + w["2.bias"]}


def _files(store: Path) -> dict[str, bytes]:
    """Every file of a local store and its bytes: what a refused call must leave as it is."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


def _interrupted(model, data, store, stop=3, **kwargs):
    with pytest.raises(_Stop):
        capture_activations(model, _Loader(data, stop), layers=["0", "2"], store=store,
                            chunk_samples=BATCH, n_samples=N, **kwargs)
    assert zarr.open_group(store).attrs[STATE_ATTR]["committed"] == stop * BATCH


def _refused_parameters(store) -> str:
    return (rf"cannot resume {re.escape(repr(store))}: .*the model's parameters differ from "
            "those the store was captured with")


def test_resume_with_other_weights_is_refused_and_writes_nothing(tmp_path):
    x, a = _data(), _mlp(0)
    store = tmp_path / "r.zarr"
    _interrupted(a, x, store)
    before = _files(store)
    with pytest.raises(ValueError, match=_refused_parameters(store)):
        capture_activations(_mlp(1), _Loader(x), layers=["0", "2"], store=store, resume=True,
                            chunk_samples=BATCH, n_samples=N)
    assert _files(store) == before
    # the same weights in another object (built from another seed, then loaded) resume
    same = _mlp(2)
    same.load_state_dict(a.state_dict())
    resumed = capture_activations(same, _Loader(x), layers=["0", "2"], store=store,
                                  resume=True, chunk_samples=BATCH, n_samples=N)
    clean = capture_activations(a, _Loader(x), layers=["0", "2"], store=tmp_path / "c.zarr",
                                chunk_samples=BATCH)
    want = _reference(a, x)
    for name in ("0", "2"):
        np.testing.assert_array_equal(resumed[name][...], clean[name][...])
        np.testing.assert_allclose(resumed[name][...], want[name], rtol=1e-5, atol=1e-6)
    assert resumed.attrs[STATE_ATTR]["complete"]


def test_complete_store_is_checked_before_it_is_returned(tmp_path):
    x, a = _data(), _mlp(0)
    store = tmp_path / "done.zarr"
    done = capture_activations(a, _Loader(x), layers=["0", "2"], store=store)
    before = _files(store)
    with pytest.raises(ValueError, match=_refused_parameters(store)):
        capture_activations(_mlp(1), _Loader(x), layers=["0", "2"], store=store, resume=True)
    with pytest.raises(ValueError, match="first batch differs from that of the complete capture"):
        capture_activations(a, _Loader(x[1:]), layers=["0", "2"], store=store, resume=True)
    assert _files(store) == before
    again = capture_activations(a, _Loader(x), layers=["0", "2"], store=store, resume=True)
    np.testing.assert_allclose(again["2"][...], _reference(a, x)["2"], rtol=1e-5, atol=1e-6)
    assert again.attrs[PROVENANCE_ATTR] == done.attrs[PROVENANCE_ATTR]


class _TokensFirst(torch.nn.Module):
    """A module of no known type whose output is (token, sample, unit): 5 tokens of 2."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(WIDTH, 10)

    def forward(self, x):
        return self.proj(x).view(len(x), 5, 2).transpose(0, 1)


def test_resume_with_other_dimension_names_is_refused(tmp_path):
    torch.manual_seed(0)
    model, x = _TokensFirst(), _data()
    dims = {"t": ("token", "sample", "unit")}
    wrapped = torch.nn.Sequential()
    wrapped.add_module("t", model)
    store = tmp_path / "t.zarr"
    loader = [x[i:i + 5] for i in range(0, N, 5)]  # batches of 5: (5, 5, 2) either way round

    def capture(batches, **kwargs):
        return capture_activations(wrapped, batches, layers="t", store=store, chunk_samples=5,
                                   n_samples=N, **kwargs)

    def interrupted():
        yield from loader[:4]
        raise _Stop

    with pytest.raises(_Stop):
        capture(interrupted(), dimension_names=dims)
    before = _files(store)
    with pytest.raises(ValueError, match=re.escape(
            "layer 't' (_TokensFirst) gives a 3-d output (5, 5, 2) whose layout its type does "
            "not say")):
        capture(loader, resume=True)  # would store each batch transposed
    with pytest.raises(ValueError, match=re.escape(
            "dims of layer 't' ('sample', 'token', 'unit') != ('sample', 'channel', 'length')")):
        capture(loader, resume=True, dimension_names={"t": ("sample", "channel", "length")})
    assert _files(store) == before
    done = capture(loader, resume=True, dimension_names=dims)
    w = {k: v.double().numpy() for k, v in model.proj.state_dict().items()}
    want = (x.double().numpy() @ w["weight"].T + w["bias"]).reshape(N, 5, 2)
    np.testing.assert_allclose(done["t"][...], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64", "bool"])
def test_integer_dtypes_of_float_activations_are_refused(tmp_path, dtype):
    store = tmp_path / "i.zarr"
    with pytest.raises(ValueError, match=re.escape(
            f"cannot store layer '0' (float32) as {dtype}: the values would be truncated")):
        capture_activations(_mlp(0), _Loader(_data()), layers=["0", "2"], store=store,
                            dtype=dtype)
    assert list(zarr.open_group(store).array_keys()) == []  # no array was made


class _Counts(torch.nn.Module):
    """Integer outputs: 1000 times the input, rounded (int64)."""

    def forward(self, x):
        return (x * 1000).round().long()


def test_narrow_dtypes_hold_what_fits_and_refuse_what_overflows(tmp_path):
    a, small = _mlp(0), _data(0.01)
    big = small.clone()
    big[23] *= 1e8  # sample 23's layer '0' leaves float16's range (65504)
    with np.errstate(over="ignore"):
        overflows = np.isinf(_reference(a, big)["0"].astype(np.float16)).any(axis=1)
    assert overflows.nonzero()[0].tolist() == [23]
    with pytest.raises(ValueError, match=re.escape(
            "layer '0': sample 23 holds values too large for float16")):
        capture_activations(a, _Loader(big), layers=["0", "2"], store=tmp_path / "h.zarr",
                            overwrite=True, dtype="float16")
    half = capture_activations(a, _Loader(small), layers=["0", "2"],
                               store=tmp_path / "h.zarr", overwrite=True, dtype="float16")
    wide = capture_activations(a, _Loader(small), layers=["0", "2"],
                               store=tmp_path / "d.zarr", dtype="float64")
    native = capture_activations(a, _Loader(small), layers=["0", "2"],
                                 store=tmp_path / "f.zarr")
    for name, want in _reference(a, small).items():
        assert half[name].dtype == np.float16 and wide[name].dtype == np.float64
        np.testing.assert_allclose(half[name][...], want, rtol=2**-10, atol=2**-24)
        np.testing.assert_array_equal(wide[name][...], native[name][...].astype(np.float64))
        np.testing.assert_allclose(wide[name][...], want, rtol=1e-5, atol=1e-8)
    # integer outputs: into int16 where they fit, refused in int8 (an int64 source is
    # "same kind": only the values tell)
    counts, x = torch.nn.Sequential(_Counts()), _data()
    fits = capture_activations(counts, _Loader(x), layers="0", store=tmp_path / "n.zarr",
                               dtype="int16")
    want = np.round(x.double().numpy() * 1000)
    np.testing.assert_array_equal(fits["0"][...], want)
    first = int(np.nonzero((np.abs(want) > 127).any(axis=1))[0][0])
    with pytest.raises(ValueError, match=re.escape(
            f"layer '0': sample {first} holds values outside the range of int8 (-128 to 127)")):
        capture_activations(counts, _Loader(x), layers="0", store=tmp_path / "m.zarr",
                            dtype="int8")


def test_a_single_string_is_one_layer(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(WIDTH, 4), *[torch.nn.ReLU() for _ in range(10)])
    x = _data()
    # "10" is one module, not modules "1" and "0"
    group = capture_activations(net, _Loader(x), layers="10", store=tmp_path / "a.zarr")
    assert sorted(group.array_keys()) == ["10", "sample"]
    w = {k: v.double().numpy() for k, v in net[0].state_dict().items()}
    want = np.maximum(x.double().numpy() @ w["weight"].T + w["bias"], 0)
    np.testing.assert_allclose(group["10"][...], want, rtol=1e-5, atol=1e-6)
    named = torch.nn.Sequential()
    named.add_module("fc1", net[0])
    group = capture_activations(named, _Loader(x), layers="fc1", store=tmp_path / "b.zarr")
    assert sorted(group.array_keys()) == ["fc1", "sample"]
    np.testing.assert_allclose(group["fc1"][...], x.double().numpy() @ w["weight"].T
                               + w["bias"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=re.escape(
            "dimension_names['fc1'] must name each dim of the layer's output")):
        capture_activations(named, _Loader(x), layers="fc1", store=tmp_path / "c.zarr",
                            dimension_names={"fc1": "sample"})


# --- capture_hidden_states: the same rules -------------------------------------------------

SEQUENCES, LENGTH = 24, 6


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def _bert(transformers, seed: int):
    torch.manual_seed(seed)
    return transformers.BertModel(transformers.BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=LENGTH)).eval()


def _tokens():
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, LENGTH + 1, (SEQUENCES,), generator=g)
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()  # right padding
    return torch.randint(1, 30, (SEQUENCES, LENGTH), generator=g) * mask, mask


def _batches(data, stop: int | None = None):
    ids, mask = data
    for k, start in enumerate(range(0, SEQUENCES, 6)):
        if k == stop:
            raise _Stop
        yield {"input_ids": ids[start:start + 6], "attention_mask": mask[start:start + 6]}


def _mean_states(model, data) -> list[np.ndarray]:
    """Each hidden state's mean over each sequence's kept tokens, float64 (numpy)."""
    ids, mask = data
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    keep = mask.numpy().astype(np.float64)[..., None]
    return [(h.double().numpy() * keep).sum(1) / keep.sum(1) for h in states.hidden_states]


def test_hidden_states_resume_refuses_other_weights(transformers, tmp_path):
    data, a = _tokens(), _bert(transformers, 0)
    store = tmp_path / "bert.zarr"
    with pytest.raises(_Stop):
        capture_hidden_states(a, _batches(data, stop=2), store=store, chunk_samples=6)
    assert zarr.open_group(store).attrs[STATE_ATTR]["committed"] == 12
    before = _files(store)
    with pytest.raises(ValueError, match=_refused_parameters(store)):
        capture_hidden_states(_bert(transformers, 1), _batches(data), store=store, resume=True)
    assert _files(store) == before
    resumed = capture_hidden_states(a, _batches(data), store=store, resume=True)
    clean = capture_hidden_states(a, _batches(data), store=tmp_path / "clean.zarr",
                                  chunk_samples=6)
    for name, want in zip(["embeddings", "layer_1", "layer_2"], _mean_states(a, data),
                          strict=True):
        np.testing.assert_array_equal(resumed[name][...], clean[name][...])
        np.testing.assert_allclose(resumed[name][...], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=_refused_parameters(store)):  # complete: checked too
        capture_hidden_states(_bert(transformers, 1), _batches(data), store=store, resume=True)


def test_hidden_states_dtypes_and_single_names(transformers, tmp_path):
    data, a = _tokens(), _bert(transformers, 0)
    with pytest.raises(ValueError, match=re.escape(
            "cannot store layer 'embeddings' (float32) as int8: the values would be truncated")):
        capture_hidden_states(a, _batches(data), store=tmp_path / "i.zarr", dtype="int8")
    half = capture_hidden_states(a, _batches(data), store=tmp_path / "h.zarr", dtype="float16",
                                 layers="layer_1")  # one name: one layer
    assert sorted(half.array_keys()) == ["layer_1", "sample"]
    assert half["layer_1"].dtype == np.float16
    np.testing.assert_allclose(half["layer_1"][...], _mean_states(a, data)[1], rtol=2**-10,
                               atol=2**-24)
    one = capture_hidden_states(a, _batches(data), store=tmp_path / "o.zarr", layers=2,
                                modules="encoder.layer.0.output")
    assert sorted(one.array_keys()) == ["encoder.layer.0.output", "layer_2", "sample"]
    np.testing.assert_allclose(one["encoder.layer.0.output"][...], _mean_states(a, data)[1],
                               rtol=1e-5, atol=1e-6)  # the first layer's output is layer_1
    loud = _bert(transformers, 0)
    with torch.no_grad():
        loud.embeddings.LayerNorm.weight.mul_(1e5)
    with np.errstate(over="ignore"):
        first = np.isinf(_mean_states(loud, data)[0].astype(np.float16)).any(axis=1).nonzero()[0]
    with pytest.raises(ValueError, match=re.escape(
            f"layer 'embeddings': sample {first[0]} holds values too large for float16")):
        capture_hidden_states(loud, _batches(data), store=tmp_path / "l.zarr", dtype="float16",
                              layers=["embeddings"])


class _Block(torch.nn.Module):
    """A module of a type the layout rules do not know, with a (sample, token, unit) output."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.proj(x)


@pytest.mark.parametrize("again", [{}, {"resume": True}])
def test_a_capture_that_failed_at_its_first_batch_is_run_again(tmp_path, again):
    """An unknown module's 3-d output is an error asking for its layout, raised after the store
    was opened; the group it leaves (provenance, no state, no arrays) is no obstacle to the
    corrected call, with or without resume=True, which gives the module's outputs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("b", _Block())
    x = torch.randn(20, 6, 4)
    loader = [x[i:i + 5] for i in range(0, 20, 5)]
    store = tmp_path / "b.zarr"
    with pytest.raises(ValueError, match=re.escape(
            "layer 'b' (_Block) gives a 3-d output (5, 6, 3) whose layout its type does not "
            "say")):
        capture_activations(model, loader, layers="b", store=store)
    assert PROVENANCE_ATTR in zarr.open_group(store, mode="r").attrs  # what the failure left
    done = capture_activations(model, loader, layers="b", store=store,
                               dimension_names={"b": ("sample", "token", "unit")}, **again)
    w = {k: v.double().numpy() for k, v in model.b.proj.state_dict().items()}
    want = x.double().numpy() @ w["weight"].T + w["bias"]
    np.testing.assert_allclose(done["b"][...], want, rtol=1e-5, atol=1e-6)
    assert tuple(done["b"].metadata.dimension_names) == ("sample", "token", "unit")
