"""import_torchlens: files written by TorchLens itself (extract_dataset, torchlens.save)."""

from __future__ import annotations

import numpy as np
import pytest

import dask_repsim
from dask_repsim.imports.torchlens import import_torchlens

torch = pytest.importorskip("torch")
tl = pytest.importorskip("torchlens")
extraction = pytest.importorskip("torchlens.dataset_extraction")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(18, 3)).eval()


def test_extract_dataset_folder(tmp_path):
    model, x = _model(), torch.randn(23, 1, 5, 5)
    ids = [f"img{i}" for i in range(23)]
    extraction.extract_dataset(model, x, layers=["relu_1_2", "linear_1_4"], batch_size=8,
                               output_dir=tmp_path / "run", progress=False, stimulus_ids=ids)
    group = import_torchlens(tmp_path / "run", tmp_path / "acts.zarr", chunk_samples=5)
    with torch.no_grad():  # in extract_dataset's batches: a product's rounding depends on them
        relu = torch.cat([model[1](model[0](x[i:i + 8])) for i in range(0, 23, 8)])
        linear = torch.cat([model(x[i:i + 8]) for i in range(0, 23, 8)])
    np.testing.assert_array_equal(group["relu_1_2"][...], relu.numpy())
    np.testing.assert_array_equal(group["linear_1_4"][...], linear.numpy())
    assert group["sample"][...].tolist() == ids
    assert group.attrs["dask_repsim_capture"]["layers"] == ["relu_1_2", "linear_1_4"]
    grid = dask_repsim.compare(str(tmp_path / "acts.zarr"), {"linear_1_4": linear.numpy()},
                               metrics=["cka"])
    assert float(grid.cka.sel(layer_a="linear_1_4", layer_b="linear_1_4")) == pytest.approx(1.0)


def test_trace_bundles_one_per_batch(tmp_path):
    model, x = _model(), torch.randn(11, 1, 5, 5)
    bundles = []
    for k, batch in enumerate((x[:6], x[6:])):
        trace = tl.trace(model, batch)
        bundles.append(tmp_path / f"batch{k}.tlspec")
        tl.save(trace, bundles[-1], include_custom_attributes=False)
    group = import_torchlens(bundles, tmp_path / "acts.zarr", layers=["input_1", "linear_1_4"])
    np.testing.assert_array_equal(group["input_1"][...], x.numpy())
    with torch.no_grad():  # batch by batch, as traced
        expected = torch.cat([model(x[:6]), model(x[6:])])
    np.testing.assert_array_equal(group["linear_1_4"][...], expected.numpy())
    np.testing.assert_array_equal(group["sample"][...], np.arange(11))


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a TorchLens folder"):
        import_torchlens(tmp_path, tmp_path / "x.zarr")
    (tmp_path / "manifest.json").write_text('{"schema": "tl_extract_manifest_v2", '
                                            '"status": "in_progress"}')
    with pytest.raises(ValueError, match="is 'in_progress', not complete"):
        import_torchlens(tmp_path, tmp_path / "x.zarr")
