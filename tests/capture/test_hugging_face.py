"""Capturing Hugging Face transformers' hidden states: every pooling of tokens equals a numpy
float64 reference from the model's own ``hidden_states``, padding never shows, resume after a
crash gives the identical store, and two captures compare by CKA as numpy says."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
import zarr

import dask_repsim
from dask_repsim.capture.hugging_face import capture_hidden_states

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

N, LENGTH, VOCAB, WIDTH = 2000, 24, 64, 32
HIDDEN = ["embeddings", "layer_1", "layer_2"]
STATE = "dask_repsim_capture"


def _bert():
    torch.manual_seed(0)  # dropout stays at its default: a capture outside eval mode would show
    return transformers.BertModel(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * WIDTH, max_position_embeddings=LENGTH))


def _gpt2():
    torch.manual_seed(1)
    return transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=WIDTH, n_layer=2, n_head=2, n_positions=LENGTH,
        bos_token_id=0, eos_token_id=0))


def _padded(side: str) -> tuple:
    """The same N random sequences of 1 to LENGTH tokens, padded (with 0) on ``side``."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, LENGTH + 1, (N,), generator=g)
    tokens = torch.randint(1, VOCAB, (N, LENGTH), generator=g)
    where = torch.arange(LENGTH)[None, :]
    if side == "right":
        mask = where < lengths[:, None]
        ids = torch.where(mask, tokens, 0)
    else:  # token k of a sequence sits at LENGTH - length + k
        mask = where >= LENGTH - lengths[:, None]
        shifted = (where - (LENGTH - lengths[:, None])).clamp(min=0)
        ids = torch.where(mask, tokens.gather(1, shifted), 0)
    return ids, mask.long()


def _batches(data, size=64, ids=None, extra=True):
    """Dict batches as a tokenizer and a DataLoader give them; ``extra`` adds keys the model
    does not take (labels) and, for BERT, ``token_type_ids``."""
    input_ids, mask = data
    out = []
    for start in range(0, N, size):
        batch = {"input_ids": input_ids[start:start + size],
                 "attention_mask": mask[start:start + size]}
        if extra:
            batch["labels"] = torch.zeros(len(batch["input_ids"]), dtype=torch.long)
        if ids is not None:
            batch["id"] = ids[start:start + size]
        out.append(batch)
    return out


def _hidden_states(model, data, size=500) -> list[np.ndarray]:
    """Each of ``model(...).hidden_states`` over all sequences, (N, LENGTH, WIDTH) float64."""
    input_ids, mask = data
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, N, size):
            out = model(input_ids=input_ids[start:start + size],
                        attention_mask=mask[start:start + size], output_hidden_states=True)
            parts.append([h.double().numpy() for h in out.hidden_states])
    return [np.concatenate(layer) for layer in zip(*parts, strict=True)]


def _pooled(h: np.ndarray, mask, tokens: str) -> np.ndarray:
    """The reference: each sequence's kept tokens by boolean indexing, pooled in float64."""
    keep = mask.numpy().astype(bool)
    if tokens == "every":
        return h[keep]
    rows = [h[i][keep[i]] for i in range(len(h))]
    pick = {"mean": lambda r: r.mean(axis=0), "first": lambda r: r[0], "last": lambda r: r[-1]}
    return np.stack([pick[tokens](r) for r in rows])


def _token_ids(mask, names) -> list[str]:
    lengths = mask.sum(1).tolist()
    return [f"{names[i]}:{k}" for i in range(N) for k in range(lengths[i])]


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. (5): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.fixture(scope="module")
def bert():
    return _bert()


@pytest.fixture(scope="module")
def gpt2():
    return _gpt2()


@pytest.fixture(scope="module")
def right():
    return _padded("right")


@pytest.fixture(scope="module")
def left():
    return _padded("left")


@pytest.fixture(scope="module")
def bert_states(bert, right):
    return _hidden_states(bert, right)


@pytest.fixture(scope="module")
def gpt2_states(gpt2, left):
    return _hidden_states(gpt2, left)


@pytest.mark.parametrize("tokens", ["mean", "first", "last", "every"])
def test_encoder_capture_equals_the_forward_pass(bert, right, bert_states, tokens, tmp_path):
    mask = right[1]
    bert.train()
    store = tmp_path / f"{tokens}.zarr"
    group = capture_hidden_states(bert, _batches(right), store=store, tokens=tokens,
                                  chunk_samples=700, preprocessing="random ids, right padding")
    assert bert.training  # training mode restored
    for k, name in enumerate(HIDDEN):
        want = _pooled(bert_states[k], mask, tokens)
        assert group[name].shape == want.shape and group[name].dtype == np.float32
        np.testing.assert_allclose(group[name][...], want, rtol=1e-5, atol=1e-5, err_msg=name)
    if tokens == "first":  # with right padding, position 0: BERT's [CLS]
        np.testing.assert_allclose(group["layer_2"][...], bert_states[2][:, 0], atol=1e-5)
    state = group.attrs[STATE]
    assert state["layers"] == HIDDEN and state["tokens"] == tokens and state["complete"]
    prov = group.attrs["dask_repsim_provenance"]
    assert prov["model"] == "transformers.models.bert.modeling_bert.BertModel"
    assert re.fullmatch("[0-9a-f]{64}", prov["parameters_sha256"])
    assert prov["preprocessing"] == "random ids, right padding"
    ds = xr.open_zarr(store)
    assert list(ds.data_vars) == HIDDEN
    assert ds["layer_1"].dims == ("sample", "unit")
    if tokens != "every":
        np.testing.assert_array_equal(ds.sample.values, np.arange(N))
        assert prov["samples"] == N
        return
    # every token: exactly the unmasked positions, none of the padding
    assert ds.sizes["sample"] == int(mask.sum()) == prov["samples"]
    assert ds.sample.values.tolist() == _token_ids(mask, list(range(N)))
    rows, cols = np.nonzero(mask.numpy())
    np.testing.assert_array_equal(ds.sequence.values, rows)
    np.testing.assert_array_equal(ds.position.values, cols)  # right padding: the column
    assert set(ds.coords) == {"sample", "sequence", "position"}
    assert group["layer_2"].attrs["coordinates"] == "sequence position"


@pytest.mark.parametrize("tokens", ["mean", "first", "last", "every"])
def test_decoder_with_left_padding_and_string_ids(gpt2, left, gpt2_states, tokens, tmp_path):
    mask = left[1]
    names = np.array([f"text{i:04d}" for i in range(N)])
    group = capture_hidden_states(
        gpt2, _batches(left, size=96, ids=names, extra=False), store=tmp_path / "g.zarr",
        tokens=tokens, sample_ids="id", layers=[0, "layer_1", -1], chunk_samples=500)
    for k, name in enumerate(HIDDEN):
        want = _pooled(gpt2_states[k], mask, tokens)
        assert group[name].shape == want.shape
        np.testing.assert_allclose(group[name][...], want, rtol=1e-5, atol=1e-5, err_msg=name)
    if tokens == "last":  # with left padding the last token sits in the last column
        np.testing.assert_allclose(group["layer_2"][...], gpt2_states[2][:, -1], atol=1e-5)
    ids = group["sample"][...].tolist()
    if tokens != "every":
        assert ids == names.tolist()
        return
    assert len(ids) == int(mask.sum()) and ids == _token_ids(mask, names)
    # positions count the kept tokens, not the padded columns
    np.testing.assert_array_equal(group["position"][...],
                                  np.concatenate([np.arange(n) for n in mask.sum(1).tolist()]))
    assert group["sequence"][...].tolist() == [ids_.split(":")[0] for ids_ in ids]


def test_sub_modules_equal_a_forward_hook(bert, right, bert_states, tmp_path):
    names = ["encoder.layer.0.attention.output", "encoder.layer.1.intermediate"]
    mask = right[1]
    seen: dict[str, list] = {name: [] for name in names}
    found = dict(bert.named_modules())

    def keep(name):
        def hook(module, args, output):
            output = output[0] if isinstance(output, tuple) else output
            seen[name].append(output.double().numpy())
        return hook

    handles = [found[name].register_forward_hook(keep(name)) for name in names]
    bert.eval()
    with torch.no_grad():
        for start in range(0, N, 250):
            bert(input_ids=right[0][start:start + 250], attention_mask=mask[start:start + 250])
    for handle in handles:
        handle.remove()
    for tokens in ("mean", "every"):
        group = capture_hidden_states(bert, _batches(right), store=tmp_path / f"{tokens}.zarr",
                                      tokens=tokens, layers=["layer_2"], modules=names)
        assert group.attrs[STATE]["layers"] == ["layer_2", *names]
        for name in names:
            want = _pooled(np.concatenate(seen[name]), mask, tokens)
            assert group[name].shape == want.shape
            np.testing.assert_allclose(group[name][...], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(group["layer_2"][...], _pooled(bert_states[2], mask, tokens),
                                   rtol=1e-5, atol=1e-5)
    assert group["encoder.layer.1.intermediate"].shape == (int(mask.sum()), 2 * WIDTH)


class _Killed(RuntimeError):
    pass


def _killed_after(batches, count):
    yield from batches[:count]
    raise _Killed


@pytest.mark.parametrize(("tokens", "chunk"), [("every", 2000), ("mean", 300)])
def test_resume_after_a_kill_gives_the_identical_store(bert, right, tokens, chunk, tmp_path):
    batches = _batches(right)
    clean = capture_hidden_states(bert, batches, store=tmp_path / "clean.zarr", tokens=tokens,
                                  chunk_samples=chunk, modules=["encoder.layer.0.output"])
    store = tmp_path / "killed.zarr"
    with pytest.raises(_Killed):
        capture_hidden_states(bert, _killed_after(batches, 13), store=store, tokens=tokens,
                              chunk_samples=chunk, modules=["encoder.layer.0.output"])
    state = zarr.open_group(store).attrs[STATE]
    sizes = [int(b["attention_mask"].sum()) if tokens == "every" else len(b["input_ids"])
             for b in batches]
    assert not state["complete"] and state["committed"] == sum(sizes[:13]) // chunk * chunk
    forwarded = []
    handle = bert.register_forward_hook(lambda m, a, k, o: forwarded.append(len(k["input_ids"])),
                                        with_kwargs=True)
    try:
        resumed = capture_hidden_states(bert, batches, store=store, tokens=tokens,
                                        resume=True, modules=["encoder.layer.0.output"])
    finally:
        handle.remove()
    # whole batches below the committed count were skipped without a forward pass
    ends = np.cumsum(sizes)
    assert sum(forwarded) == sum(len(b["input_ids"]) for b, end in zip(batches, ends,
                                                                       strict=True)
                                 if end > state["committed"])
    assert sorted(resumed.array_keys()) == sorted(clean.array_keys())
    for name in clean.array_keys():
        np.testing.assert_array_equal(resumed[name][...], clean[name][...], err_msg=name)
        assert resumed[name].attrs.asdict() == clean[name].attrs.asdict()
    for key in ("samples", "sample_ids_sha256", "parameters_sha256"):
        assert (resumed.attrs["dask_repsim_provenance"][key]
                == clean.attrs["dask_repsim_provenance"][key])
    assert resumed.attrs[STATE] == clean.attrs[STATE]


def test_encoder_against_decoder_with_compare(bert, gpt2, right, left, bert_states,
                                               gpt2_states, tmp_path):
    """Left- and right-padded captures of the same sequences pair token by token."""
    for tokens in ("mean", "every"):
        a, b = tmp_path / f"bert_{tokens}.zarr", tmp_path / f"gpt2_{tokens}.zarr"
        capture_hidden_states(bert, _batches(right), store=a, tokens=tokens)
        capture_hidden_states(gpt2, _batches(left, size=50, extra=False), store=b,
                              tokens=tokens)
        result = dask_repsim.compare(str(a), str(b), metrics=["cka"])
        assert list(result.layer_a.values) == HIDDEN == list(result.layer_b.values)
        assert result.attrs["n_samples"] == (N if tokens == "mean" else int(right[1].sum()))
        for i, la in enumerate(HIDDEN):
            x = _pooled(bert_states[i], right[1], tokens)
            for j, lb in enumerate(HIDDEN):
                want = _linear_cka(x, _pooled(gpt2_states[j], left[1], tokens))
                got = float(result.cka.sel(layer_a=la, layer_b=lb))
                assert got == pytest.approx(want, abs=1e-5), (tokens, la, lb)
        opened = dask_repsim.compare(xr.open_zarr(a), xr.open_zarr(b), metrics=["cka"])
        np.testing.assert_allclose(opened.cka.values, result.cka.values, atol=1e-12)


def _small(data, n=24, size=8, **kwargs):
    input_ids, mask = data
    return [{"input_ids": input_ids[s:s + size], "attention_mask": mask[s:s + size], **{
        k: v[s:s + size] for k, v in kwargs.items()}} for s in range(0, n, size)]


def test_errors_name_what_is_wrong(bert, right, tmp_path):
    batches = _small(right)
    memory = zarr.storage.MemoryStore

    def capture(model=bert, data=batches, **kwargs):
        return capture_hidden_states(model, data, store=kwargs.pop("store", memory()), **kwargs)

    with pytest.raises(ValueError, match=r"tokens must be one of \('mean', 'first', 'last'"):
        capture(tokens="all")
    with pytest.raises(ValueError, match="no hidden state 'layer_3'.*embeddings, layer_1, "
                                         "layer_2"):
        capture(layers=["layer_3"])
    with pytest.raises(ValueError, match="no hidden state 3 "):
        capture(layers=[3])
    with pytest.raises(ValueError, match=r"no module\(s\) \['encoder.layer.7'\].*'pooler'"):
        capture(modules=["encoder.layer.7"])
    with pytest.raises(ValueError, match=r"'pooler' gives an output of shape \(8, 32\)"):
        capture(modules=["pooler"])
    with pytest.raises(ValueError, match="name of a hidden state"):
        capture(modules=["embeddings"])  # BertModel's embeddings module vs hidden_states[0]
    with pytest.raises(ValueError, match="n_sequences does not apply with tokens='every'"):
        capture(tokens="every", n_sequences=24)
    with pytest.raises(ValueError, match="nothing to capture"):
        capture(layers=[])
    with pytest.raises(TypeError, match="dicts of tensors"):
        capture(data=[right[0][:8]])
    with pytest.raises(ValueError, match="Linear has no hidden states"):
        capture(model=torch.nn.Linear(3, 3))
    # an encoder-decoder model returns encoder_ and decoder_hidden_states only
    t5 = transformers.T5Model(transformers.T5Config(vocab_size=VOCAB, d_model=16, d_kv=8,
                                                    d_ff=32, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match="T5Model returned no hidden_states.*get_encoder"):
        capture(model=t5, data=_small(right, decoder_input_ids=right[0]))
    # a module that runs twice per forward pass (shared by two layers)
    shared = _bert()
    shared.encoder.layer[1].output.LayerNorm = shared.encoder.layer[0].output.LayerNorm
    with pytest.raises(ValueError, match="'encoder.layer.0.output.LayerNorm' ran twice"):
        capture(model=shared, modules=["encoder.layer.0.output.LayerNorm"])
    # a sequence without any kept token, named by its id
    empty = right[1].clone()
    empty[13] = 0
    with pytest.raises(ValueError, match=r"sequence\(s\) \['s13'\] have no tokens"):
        capture(data=_small((right[0], empty), id=np.array([f"s{i}" for i in range(N)])),
                sample_ids="id")
    repeated = np.arange(N) % 20
    with pytest.raises(ValueError, match=r"sample ids repeat \(0 more than once\)"):
        capture(data=_small(right, id=torch.from_numpy(repeated)), sample_ids="id")


def test_resume_refuses_other_batches_or_tokens(bert, right, tmp_path):
    store = tmp_path / "partial.zarr"
    batches = _small(right, n=64)
    with pytest.raises(_Killed):
        capture_hidden_states(bert, _killed_after(batches, 5), store=store, tokens="every",
                              chunk_samples=20)
    committed = zarr.open_group(store).attrs[STATE]["committed"]
    assert committed >= 40
    with pytest.raises(ValueError, match="tokens='every', this call tokens='mean'"):
        capture_hidden_states(bert, batches, store=store, tokens="mean", resume=True)
    with pytest.raises(ValueError, match="first batch differs"):
        capture_hidden_states(bert, batches[1:], store=store, tokens="every", resume=True)
    # the same first batch, then another mask: the committed tokens' ids differ
    other = [batches[0], *_small((right[0], right[1].flip(0)), n=64)[1:]]
    with pytest.raises(ValueError, match="sample ids differ from the interrupted capture"):
        capture_hidden_states(bert, other, store=store, tokens="every", resume=True)
    with pytest.raises(FileExistsError, match="resume=True"):
        capture_hidden_states(bert, batches, store=store, tokens="every")
    done = capture_hidden_states(bert, batches, store=store, tokens="every", resume=True)
    assert done["sample"].shape == (int(right[1][:64].sum()),)


def test_importing_the_module_imports_neither_torch_nor_transformers():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, dask_repsim.capture.hugging_face\n"
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
