"""import_hf_dataset: activation columns of a datasets.Dataset saved by the real library."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import dask_repsim
from dask_repsim.capture import store as capture_store
from dask_repsim.imports.hf_datasets import import_hf_dataset

datasets = pytest.importorskip("datasets")
N = 53


@pytest.fixture
def saved(tmp_path):
    """A dataset with text ids, a label, a fixed-length list layer and an Array3D layer,
    saved with save_to_disk and loaded back memory-mapped, as researchers keep them."""
    rng = np.random.default_rng(3)
    fc = rng.standard_normal((N, 6)).astype(np.float32)
    conv = rng.standard_normal((N, 2, 3, 3)).astype(np.float32)
    features = datasets.Features({
        "image": datasets.Value("string"), "label": datasets.Value("int64"),
        "fc": datasets.Sequence(datasets.Value("float32"), length=6),
        "conv": datasets.Array3D((2, 3, 3), "float32"),
        "tokens": datasets.Sequence(datasets.Value("int32")),  # variable length: not a layer
    })
    ds = datasets.Dataset.from_dict(
        {"image": [f"img{i:03d}.png" for i in range(N)], "label": list(range(N)),
         "fc": fc.tolist(), "conv": conv.tolist(), "tokens": [[1] * (i % 4) for i in range(N)]},
        features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved", {"fc": fc, "conv": conv}


def test_values_ids_and_layers_from_disk(saved, tmp_path):
    path, want = saved
    loaded = datasets.load_from_disk(str(path))
    assert loaded.cache_files  # memory-mapped Arrow files, read in slices
    group = import_hf_dataset(loaded, tmp_path / "acts.zarr", id_column="image",
                              chunk_samples=8)
    assert group.attrs["dask_repsim_capture"]["layers"] == ["fc", "conv"]  # not label, tokens
    for name, values in want.items():
        np.testing.assert_array_equal(group[name][...], values)
    assert group["sample"][...].tolist() == [f"img{i:03d}.png" for i in range(N)]
    provenance = group.attrs["dask_repsim_provenance"]
    assert provenance["source"]["tool"] == "datasets" and provenance["samples"] == N
    # the saved folder itself, a layer named explicitly, a scalar column as a layer
    again = import_hf_dataset(str(path), tmp_path / "label.zarr", layers=["label", "fc"])
    np.testing.assert_array_equal(again["label"][...], np.arange(N)[:, None])
    assert again["sample"][...].tolist() == list(range(N))
    cka = dask_repsim.compare(str(tmp_path / "acts.zarr"), {"fc": want["fc"]},
                              metrics=["cka"], join="inner")
    assert float(cka.cka.sel(layer_a="fc", layer_b="fc")) == pytest.approx(1.0)


def test_crash_then_resume_equals_uninterrupted(saved, tmp_path, monkeypatch):
    path, _ = saved
    clean = import_hf_dataset(str(path), tmp_path / "clean.zarr", id_column="image",
                              chunk_samples=5)
    original, calls = capture_store.ChunkWriter._commit, {"n": 0}

    def failing(self, **changes):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, **changes)

    with monkeypatch.context() as patch:
        patch.setattr(capture_store.ChunkWriter, "_commit", failing)
        with pytest.raises(KeyboardInterrupt):
            import_hf_dataset(str(path), tmp_path / "killed.zarr", id_column="image",
                              chunk_samples=5)
    state = zarr.open_group(tmp_path / "killed.zarr").attrs["dask_repsim_capture"]
    assert 0 < state["committed"] < N and not state["complete"]
    resumed = import_hf_dataset(str(path), tmp_path / "killed.zarr", id_column="image",
                                resume=True)
    for name in clean.array_keys():
        np.testing.assert_array_equal(resumed[name][...], clean[name][...])


def test_errors(saved, tmp_path):
    path, _ = saved
    loaded = datasets.load_from_disk(str(path))
    with pytest.raises(ValueError, match=r"no column\(s\) \['logits'\]"):
        import_hf_dataset(loaded, tmp_path / "a.zarr", layers=["logits"])
    with pytest.raises(ValueError, match=r"column\(s\) \['tokens'\] do not hold numbers of one"):
        import_hf_dataset(loaded, tmp_path / "a.zarr", layers=["tokens"])
    with pytest.raises(ValueError, match="no column 'name'"):
        import_hf_dataset(loaded, tmp_path / "a.zarr", id_column="name")
    with pytest.raises(TypeError, match="IterableDataset is not a datasets.Dataset of rows"):
        import_hf_dataset(loaded.to_iterable_dataset(), tmp_path / "a.zarr")
    with pytest.raises(TypeError, match=r"pick a split \(dataset\['train'\]\)"):
        import_hf_dataset(datasets.DatasetDict({"train": loaded}), tmp_path / "a.zarr")
    repeated = loaded.map(lambda row: {"image": "same"})
    with pytest.raises(ValueError, match="sample id 'same' .* repeats"):
        import_hf_dataset(repeated, tmp_path / "a.zarr", id_column="image")


def test_command_line(saved, tmp_path, capsys):
    from dask_repsim import cli

    path, want = saved
    store = tmp_path / "cli.zarr"
    assert cli.main(["import", "hf_dataset", str(path), str(store), "--id-column", "image",
                     "--layer", "conv"]) == 0
    assert f"{store}: {N} samples, 1 layers (conv)" in capsys.readouterr().out
    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["conv"][...], want["conv"])
    assert group["sample"][0] == "img000.png"
    assert cli.main(["import", "arrays", str(path), str(tmp_path / "x.zarr"),
                     "--id-column", "image"]) == 2
    assert "--id-column applies to the hf_dataset format only" in capsys.readouterr().err
