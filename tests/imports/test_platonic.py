"""import_platonic: a platonic-rep feature file, written as extract_features.py writes it."""

from __future__ import annotations

import numpy as np
import pytest

import dask_repsim
from dask_repsim.capture.provenance import PROVENANCE_ATTR
from dask_repsim.imports.platonic import import_platonic

torch = pytest.importorskip("torch")


def _llm_file(tmp_path, dtype=torch.float32):
    # extract_llm_features: torch.stack(hidden_states).permute(1, 0, 2, 3) pooled -> [N, L, D]
    torch.manual_seed(0)
    feats = torch.randn(19, 4, 6).to(dtype)
    path = tmp_path / "minhuh" / "prh" / "wit_1024" / "bigscience_bloomz-560m_pool-avg.pt"
    path.parent.mkdir(parents=True)
    torch.save({"feats": feats.cpu(), "num_params": 559214592,
                "mask": torch.ones(19, 7, dtype=torch.long), "loss": torch.tensor(2.5),
                "bpb": torch.tensor(0.75)}, path)
    return path, feats


def test_layers_values_and_provenance(tmp_path):
    path, feats = _llm_file(tmp_path)
    group = import_platonic(path, tmp_path / "acts.zarr", chunk_samples=5)
    assert group.attrs["dask_repsim_capture"]["layers"] == [f"layer_{i}" for i in range(4)]
    for i in range(4):
        np.testing.assert_array_equal(group[f"layer_{i}"][...], feats[:, i].numpy())
    np.testing.assert_array_equal(group["sample"][...], np.arange(19))
    prov = group.attrs[PROVENANCE_ATTR]
    assert prov["model"] == "bigscience_bloomz-560m_pool-avg"
    assert prov["source"]["num_params"] == 559214592 and prov["source"]["bpb"] == 0.75
    grid = dask_repsim.compare(str(tmp_path / "acts.zarr"), str(tmp_path / "acts.zarr"),
                               metrics=["cka"])
    assert float(grid.cka.sel(layer_a="layer_3", layer_b="layer_3")) == pytest.approx(1.0)


def test_bfloat16_is_stored_exactly_as_float32(tmp_path):
    path, feats = _llm_file(tmp_path, torch.bfloat16)
    group = import_platonic(path, tmp_path / "acts.zarr", layers=["layer_1"])
    assert group["layer_1"].dtype == np.float32
    np.testing.assert_array_equal(group["layer_1"][...], feats[:, 1].float().numpy())


def test_errors(tmp_path):
    torch.save({"features": torch.zeros(3, 4)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds no 'feats' .it holds \\['features'\\]"):
        import_platonic(tmp_path / "other.pt", tmp_path / "x.zarr")
    torch.save({"feats": torch.zeros(3, 4)}, tmp_path / "flat.pt")
    with pytest.raises(ValueError, match=r"has shape \(3, 4\), not \[samples, layers"):
        import_platonic(tmp_path / "flat.pt", tmp_path / "x.zarr")
    with pytest.raises(FileNotFoundError):
        import_platonic(tmp_path / "missing.pt", tmp_path / "x.zarr")
