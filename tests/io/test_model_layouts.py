"""Real PyTorch modules captured and compared: conv layers of different spatial sizes, a
TransformerEncoder, an LSTM, attention and 1-d convs; sample ids from the loader.

Every value is checked against float64 numpy on the modules' outputs computed here by calling
the modules directly, then explicitly transposed, averaged or reshaped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from test_alignment import linear_cka, mean_cca, procrustes

import dask_repsim as dr
from dask_repsim.capture.activations import capture_activations

torch = pytest.importorskip("torch")
nn = torch.nn
ROOT = Path(__file__).resolve().parents[2]
REFERENCES = {"cka": linear_cka, "procrustes": procrustes, "mean_cca": mean_cca}
FOLD = ("sample", "height", "width")


def _capture(model, loader, layers, path, **kwargs) -> xr.Dataset:
    capture_activations(model, loader, layers=layers, store=path, chunk_samples=16, **kwargs)
    return xr.open_zarr(path)


def _assert_grid(grid: xr.Dataset, arrays: dict[str, np.ndarray], metrics=REFERENCES) -> None:
    for metric in metrics:
        for a in grid.layer_a.values:
            for b in grid.layer_b.values:
                want = REFERENCES[metric](arrays[str(a)], arrays[str(b)])
                got = float(grid[metric].sel(layer_a=a, layer_b=b))
                assert got == pytest.approx(want, abs=1e-6), (metric, a, b)


def _upsample(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation on pixel centres along ``axis`` (extrapolated at the edges)."""
    n = a.shape[axis]
    src, dst = (np.arange(n) + 0.5) / n, (np.arange(size) + 0.5) / size
    i = np.clip(np.searchsorted(src, dst) - 1, 0, n - 2)
    w = ((dst - src[i]) / (src[i + 1] - src[i])).reshape([-1 if k == axis else 1
                                                          for k in range(a.ndim)])
    return np.take(a, i, axis) * (1 - w) + np.take(a, i + 1, axis) * w


def _nhwc(a: np.ndarray) -> np.ndarray:
    """Spatial positions folded into samples: (N, C, H, W) -> (N*H*W, C)."""
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),             # 0: (4, 8, 8)
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),   # 2: (6, 4, 4)
        nn.Conv2d(6, 5, 3, padding=1),                        # 4: (5, 4, 4)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    ).double()
    images = torch.randn(48, 2, 8, 8, generator=torch.Generator().manual_seed(1)).double()
    loader = torch.utils.data.DataLoader(images, batch_size=10)
    path = tmp_path_factory.mktemp("cnn") / "acts.zarr"
    ds = _capture(model, loader, ["0", "2", "4", "7"], path)
    with torch.no_grad():
        c0 = model[0](images)
        c2 = model[2](model[1](c0))
        c4 = model[4](model[3](c2))
        fc = model[7](model[6](model[5](c4)))
    arrays = {"0": c0.numpy(), "2": c2.numpy(), "4": c4.numpy(), "7": fc.numpy()}
    return ds, path, arrays


def test_cnn_layers_get_qualified_dims_and_flatten(cnn):
    ds, _, arrays = cnn
    assert ds["0"].dims == ("sample", "0.channel", "0.height", "0.width")
    assert ds["4"].dims == ("sample", "4.channel", "4.height", "4.width")
    assert ds["7"].dims == ("sample", "unit")
    np.testing.assert_array_equal(ds.sample.values, np.arange(48))  # loader positions
    _assert_grid(dr.compare(ds, metrics=["cka", "procrustes"]),
                 {k: v.reshape(48, -1) for k, v in arrays.items()}, ["cka", "procrustes"])


def test_cnn_pooled(cnn):
    ds, _, arrays = cnn
    grid = dr.compare(ds[["0", "2", "4"]], pool="mean", metrics=list(REFERENCES))
    _assert_grid(grid, {k: arrays[k].mean(axis=(2, 3)) for k in ("0", "2", "4")})


def test_cnn_folded_by_role_not_flattened(cnn):
    ds, path, arrays = cnn
    want = {k: _nhwc(arrays[k]) for k in ("2", "4")}
    for source in (ds[["2", "4"]], {"2": ds["2"], "4": ds["4"]}):
        grid = dr.compare(source, sample_dims=FOLD, metrics=list(REFERENCES))
        assert grid.attrs["n_samples"] == 48 * 16
        _assert_grid(grid, want)
    flat = linear_cka(arrays["2"].reshape(48, -1), arrays["4"].reshape(48, -1))
    assert abs(linear_cka(want["2"], want["4"]) - flat) > 1e-2  # folding is not a no-op
    got = dr.cka(ds["2"], str(path / "4"), sample_dims=FOLD)
    assert float(got) == pytest.approx(linear_cka(want["2"], want["4"]), abs=1e-6)


def test_cnn_resized_to_the_largest_grid(cnn):
    ds, path, arrays = cnn
    want = {"0": _nhwc(arrays["0"])}
    for k in ("2", "4"):
        want[k] = _nhwc(_upsample(_upsample(arrays[k], 2, 8), 3, 8))
    paths = {k: str(path / k) for k in ("0", "2", "4")}  # zarr arrays of the capture
    for source in (ds[["0", "2", "4"]], paths):
        grid = dr.compare(source, sample_dims=FOLD, resize=True, metrics=list(REFERENCES))
        assert grid.attrs["n_samples"] == 48 * 64
        _assert_grid(grid, want)
    # the dense layer has only `sample`: it keeps 48 samples, which is the documented error
    with pytest.raises(ValueError, match=r"7 has 48; with spatial positions folded into "
                       r"samples, give the folded layers one grid \(resize=True\)"):
        dr.compare(ds, sample_dims=FOLD, resize=True)
    with pytest.raises(ValueError, match=r"sample_dims \('token',\): no layer has this dim; "
                       r"the layers' dims are: 0 \('sample', '0.channel', '0.height'"):
        dr.compare(path, sample_dims=("sample", "token"))


class Encoder(nn.Module):
    """A batch-first TransformerEncoder on a linear projection of the inputs."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(6, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(self.proj(x))


def _sequences(n: int = 36, tokens: int = 5, seed: int = 2):
    return torch.randn(n, tokens, 6, generator=torch.Generator().manual_seed(seed)).double()


def test_transformer_encoder_tokens_folded_pooled_flattened(tmp_path):
    model = Encoder(0).double()
    x = _sequences()
    layers = ["proj", "encoder.layers.0", "encoder"]
    ds = _capture(model, torch.utils.data.DataLoader(x, batch_size=8), layers,
                  tmp_path / "enc.zarr")
    model.eval()
    with torch.no_grad():
        proj = model.proj(x)
        l0 = model.encoder.layers[0](proj)
        out = model.encoder.layers[1](l0)
    arrays = {"proj": proj.numpy(), "encoder.layers.0": l0.numpy(), "encoder": out.numpy()}
    for name in layers:
        assert ds[name].dims == ("sample", "token", "unit")
        np.testing.assert_allclose(ds[name].values, arrays[name], rtol=0, atol=1e-12)
    folded = dr.compare(ds, sample_dims=("sample", "token"), metrics=list(REFERENCES))
    assert folded.attrs["n_samples"] == 36 * 5
    _assert_grid(folded, {k: v.reshape(-1, 8) for k, v in arrays.items()})
    pooled = dr.compare(ds, pool="mean", spatial_dims=("token",), metrics=["cka", "procrustes"])
    _assert_grid(pooled, {k: v.mean(axis=1) for k, v in arrays.items()}, ["cka", "procrustes"])
    flat = dr.compare(ds, metrics=["cka", "procrustes"])
    _assert_grid(flat, {k: v.reshape(36, -1) for k, v in arrays.items()}, ["cka", "procrustes"])


class Recurrent(nn.Module):
    """A batch-first LSTM, then sequence-first attention and GRU, then a 1-d conv."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.attn = nn.MultiheadAttention(5, 1)  # sequence first
        self.gru = nn.GRU(5, 4)                  # sequence first
        self.conv = nn.Conv1d(4, 3, 2)

    def forward(self, x):
        h, _ = self.lstm(x)                      # (N, T, 5); (h, c) not recorded
        s = h.transpose(0, 1)
        a, _ = self.attn(s, s, s)                # (T, N, 5); weights not recorded
        g, _ = self.gru(a)                       # (T, N, 4)
        return self.conv(g.permute(1, 2, 0))     # (N, 3, T - 1)


def test_lstm_attention_gru_and_conv1d_layouts(tmp_path):
    model = Recurrent().double()
    x = _sequences()
    layers = ["lstm", "attn", "gru", "conv"]
    ds = _capture(model, torch.utils.data.DataLoader(x, batch_size=7), layers,
                  tmp_path / "rnn.zarr")
    with torch.no_grad():
        h = model.lstm(x)[0]
        s = h.transpose(0, 1)
        a = model.attn(s, s, s)[0]
        g = model.gru(a)[0]
        c = model.conv(g.permute(1, 2, 0))
    arrays = {"lstm": h.numpy(), "attn": a.numpy().transpose(1, 0, 2),
              "gru": g.numpy().transpose(1, 0, 2), "conv": c.numpy()}
    assert ds["lstm"].dims == ("sample", "token", "lstm.unit")
    assert ds["attn"].dims == ("sample", "token", "attn.unit")
    assert ds["gru"].dims == ("sample", "token", "gru.unit")
    assert ds["conv"].dims == ("sample", "channel", "length")
    for name in layers:
        np.testing.assert_allclose(ds[name].values, arrays[name], rtol=0, atol=1e-12)
    seq = ["lstm", "attn", "gru"]
    folded = dr.compare(ds[seq], sample_dims=("sample", "token"), metrics=list(REFERENCES))
    _assert_grid(folded, {k: arrays[k].reshape(-1, arrays[k].shape[2]) for k in seq})
    pooled = dr.compare(ds[seq], pool="mean", spatial_dims=("token",), metrics=list(REFERENCES))
    _assert_grid(pooled, {k: arrays[k].mean(axis=1) for k in seq})
    flat = dr.compare(ds, metrics=["cka", "procrustes"])
    _assert_grid(flat, {k: v.reshape(36, -1) for k, v in arrays.items()}, ["cka", "procrustes"])
    conv = dr.compare(ds[["conv"]], ds[["lstm"]].isel(token=slice(0, 4)),
                      sample_dims=("sample", "length", "token"), metrics=["cka"])
    want = linear_cka(arrays["conv"].transpose(0, 2, 1).reshape(-1, 3),
                      arrays["lstm"][:, :4].reshape(-1, 5))
    assert float(conv.cka.item()) == pytest.approx(want, abs=1e-6)


class SequenceFirst(nn.Module):
    """Batch-first inputs turned sequence first, as models written that way do inside."""

    def forward(self, x):
        return x.transpose(0, 1)


def test_declared_layouts(tmp_path):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)).double()
    x = _sequences(n=20)
    ds = _capture(model, [x[:12], x[12:]], ["1", "2"], tmp_path / "gelu.zarr",
                  dimension_names={"1": ("sample", "token", "hidden")})
    assert ds["1"].dims == ("sample", "token", "hidden")   # declared
    assert ds["2"].dims == ("sample", "token", "unit")     # Linear on a sequence
    # a layout naming its sample dim second is stored samples first
    group = capture_activations(
        nn.Sequential(SequenceFirst(), model), [x[:12], x[12:]], layers=["1.0"],
        store=zarr.storage.MemoryStore(), dimension_names={"1.0": ("token", "sample", "unit")},
    )
    with torch.no_grad():
        np.testing.assert_allclose(group["1.0"][...], model[0](x).numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="do not name its sample dim 'sample'"):
        capture_activations(model, [x], layers=["1"], store=zarr.storage.MemoryStore(),
                            dimension_names={"1": ("batch", "token", "unit")})
    with pytest.raises(ValueError, match="gives 5 samples for a batch of 20"):
        capture_activations(nn.Sequential(SequenceFirst(), model), [x], layers=["1.0"],
                            store=zarr.storage.MemoryStore())  # taken as batch first


def _id_loader(x: torch.Tensor, ids: np.ndarray, order: np.ndarray, kind: str = "tuple"):
    """Batches of 8 in ``order``: (inputs, ids) tuples or {"x": ..., "id": ...} dicts."""
    batches = []
    for i in range(0, len(order), 8):
        take = order[i:i + 8]
        batch_ids = [str(v) for v in ids[take]]
        batches.append((x[take], batch_ids) if kind == "tuple"
                       else {"x": x[take], "id": batch_ids})
    return batches


def test_captures_in_different_orders_are_paired_by_id(tmp_path):
    x = _sequences(n=40)
    ids = np.array([f"seq{i:03d}" for i in np.random.default_rng(0).permutation(500)[:40]])
    order_a = np.random.default_rng(1).permutation(40)
    order_b = np.random.default_rng(2).permutation(40)
    layers = ["proj", "encoder"]
    ds_a = _capture(Encoder(0).double(), _id_loader(x, ids, order_a), layers,
                    tmp_path / "a.zarr", sample_ids=1)
    ds_b = _capture(Encoder(1).double(), _id_loader(x, ids, order_b, "dict"), layers,
                    tmp_path / "b.zarr", sample_ids="id", input_key="x")
    assert ds_a.sample.values.tolist() == ids[order_a].tolist()
    assert ds_b.sample.values.tolist() == ids[order_b].tolist()
    # references: each model on the samples in their natural order, tokens folded
    refs = {}
    for tag, seed in (("a", 0), ("b", 1)):
        model = Encoder(seed).double().eval()
        with torch.no_grad():
            refs[tag] = {"proj": model.proj(x).numpy().reshape(-1, 8),
                         "encoder": model(x).numpy().reshape(-1, 8)}
    fold = ("sample", "token")
    for a, b in ((ds_a, ds_b), (str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"))):
        grid = dr.compare(a, b, sample_dims=fold, metrics=["cka"])
        for la in layers:
            for lb in layers:
                want = linear_cka(refs["a"][la], refs["b"][lb])
                got = float(grid.cka.sel(layer_a=la, layer_b=lb))
                assert got == pytest.approx(want, abs=1e-6)
    misaligned = linear_cka(ds_a["encoder"].values.reshape(-1, 8),
                            ds_b["encoder"].values.reshape(-1, 8))
    assert abs(misaligned - linear_cka(refs["a"]["encoder"], refs["b"]["encoder"])) > 0.05
    # b captured on fewer samples: an error, or the common samples with join="inner"
    part = order_b[:33]
    _capture(Encoder(1).double(), _id_loader(x, ids, part), layers, tmp_path / "c.zarr",
             sample_ids=1)
    with pytest.raises(ValueError, match=r"7 of the 40 sample labels of proj of a are not in "
                       rf"proj of b \(first: '{ids[order_a][~np.isin(order_a, part)][0]}'\)"):
        dr.compare(ds_a, str(tmp_path / "c.zarr"), sample_dims=fold, metrics=["cka"])
    grid = dr.compare(ds_a, str(tmp_path / "c.zarr"), sample_dims=fold, metrics=["cka"],
                      join="inner")
    common = np.sort(part)
    keep = np.concatenate([np.arange(i * 5, i * 5 + 5) for i in common])
    want = linear_cka(refs["a"]["encoder"][keep], refs["b"]["encoder"][keep])
    assert float(grid.cka.sel(layer_a="encoder", layer_b="encoder")) == pytest.approx(
        want, abs=1e-6)


def test_shuffled_loader_without_ids_and_repeated_ids_are_refused(tmp_path):
    x = _sequences(n=16)
    shuffled = torch.utils.data.DataLoader(x, batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="shuffles its samples.*give sample_ids="):
        capture_activations(Encoder(0).double(), shuffled, layers=["proj"],
                            store=zarr.storage.MemoryStore())
    ids = np.array(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o",
                    "c"])
    with pytest.raises(ValueError, match="sample ids repeat \\('c' more than once\\)"):
        capture_activations(Encoder(0).double(), _id_loader(x, ids, np.arange(16)),
                            layers=["proj"], store=zarr.storage.MemoryStore(), sample_ids=1)


def test_padding_mask_recipe_drops_padded_positions(tmp_path):
    """The guide's recipe (docs/guide/layers.rst): stack (sample, token), keep the real tokens,
    compare by position."""
    x = _sequences(n=24)
    lengths = np.random.default_rng(5).integers(2, 6, size=24)
    mask = np.arange(5)[None, :] < lengths[:, None]            # True at real tokens
    ds = _capture(Encoder(0).double(), torch.utils.data.DataLoader(x, batch_size=8),
                  ["proj", "encoder"], tmp_path / "mask.zarr")
    real = ds.stack(position=("sample", "token")).isel(position=np.flatnonzero(mask.ravel()))
    grid = dr.compare(real, sample_dims="position", metrics=["cka"])
    model = Encoder(0).double().eval()
    with torch.no_grad():
        want = linear_cka(model.proj(x).numpy()[mask], model(x).numpy()[mask])
    assert grid.attrs["n_samples"] == mask.sum()
    assert float(grid.cka.sel(layer_a="proj", layer_b="encoder")) == pytest.approx(want,
                                                                                 abs=1e-6)


@pytest.mark.large  # the default run's docs build runs the script (its gallery)
def test_transformer_example_runs_quick(tmp_path):
    pytest.importorskip("matplotlib")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "transformer_layers.py"), "--quick", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "transformer_layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid = xr.open_dataset(tmp_path / "transformer_layers.nc")
    assert grid.attrs["n_samples"] > 0 and grid.cka.shape[0] == grid.cka.shape[1] > 1
    values = grid.cka.values
    assert np.all((values > 0) & (values <= 1 + 1e-9))
    assert "tokens folded into samples" in result.stdout
