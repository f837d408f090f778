"""import_thingsvision: every save_features format and the extract_features folders, in the
files thingsvision's own code writes (tool_layouts.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tool_layouts as tv

import dask_repsim
from dask_repsim.imports.thingsvision import import_thingsvision

N = 21
NAMES = [f"cat_{i:02d}.jpg" for i in range(N)]


@pytest.fixture
def features():
    return np.random.default_rng(1).standard_normal((N, 5)).astype("float32")


@pytest.mark.parametrize("file_format", ["npy", "pt", "hdf5", "mat", "txt"])
@pytest.mark.parametrize("with_names", [True, False])
def test_save_features_formats(tmp_path, features, file_format, with_names):
    out = tmp_path / "out"
    out.mkdir()
    if with_names:
        tv.thingsvision_file_names(str(out), NAMES)
    data = features
    if file_format == "pt":
        import torch

        data = torch.from_numpy(features)  # save_features converts to a tensor for pt
    tv.thingsvision_store_features(str(out), data, file_format)
    group = import_thingsvision(out, tmp_path / "acts.zarr", layer="penultimate",
                                chunk_samples=4)
    want = features.astype("float64") if file_format == "txt" else features
    np.testing.assert_array_equal(group["penultimate"][...], want)
    ids = group["sample"][...].tolist()
    assert ids == (NAMES if with_names else list(range(N)))
    grid = dask_repsim.compare(str(tmp_path / "acts.zarr"), str(tmp_path / "acts.zarr"),
                               metrics=["cka"])
    assert float(grid.cka.squeeze()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("file_format", ["npy", "pt", "hdf5"])
def test_split_features(tmp_path, features, file_format):
    import torch

    data = torch.from_numpy(features) if file_format == "pt" else features
    tv.thingsvision_split_features(str(tmp_path), data, file_format, n_splits=4)
    group = import_thingsvision(tmp_path, tmp_path / "acts.zarr", chunk_samples=5)
    np.testing.assert_array_equal(group["features"][...], features)


def test_module_folders_of_extract_features(tmp_path):
    rng = np.random.default_rng(2)
    per_module = {"features.3": rng.standard_normal((N, 2, 2, 2)),
                  "classifier.1": rng.standard_normal((N, 4))}
    tv.thingsvision_extract_to_dir(per_module, str(tmp_path / "run"), batch_size=4,
                                   step_size=2, suffix="_train")
    tv.thingsvision_extract_to_dir(per_module, str(tmp_path / "run"), batch_size=8,
                                   step_size=1, suffix="_val", save_in_one_file=True)
    tv.thingsvision_file_names(str(tmp_path / "run"), NAMES)
    with pytest.raises(ValueError, match=r"several runs \(suffixes \['_train', '_val'\]\)"):
        import_thingsvision(tmp_path / "run", tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="layer= names the one matrix"):
        import_thingsvision(tmp_path / "run", tmp_path / "x.zarr", layer="fc", suffix="_val")
    for suffix in ("_train", "_val"):
        group = import_thingsvision(tmp_path / "run", tmp_path / f"{suffix}.zarr",
                                    suffix=suffix, chunk_samples=3)
        assert group.attrs["dask_repsim_capture"]["layers"] == ["classifier.1", "features.3"]
        for name, acts in per_module.items():
            np.testing.assert_array_equal(group[name][...], acts)
        assert group["sample"][...].tolist() == NAMES


def test_errors(tmp_path, features):
    with pytest.raises(FileNotFoundError, match="no file or folder"):
        import_thingsvision(tmp_path / "missing", tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="holds no thingsvision features"):
        import_thingsvision(tmp_path, tmp_path / "x.zarr")
    tv.thingsvision_file_names(str(tmp_path), NAMES[:-1])
    tv.thingsvision_store_features(str(tmp_path), features, "npy")
    with pytest.raises(ValueError, match="file_names.txt gives 20 sample ids for 21 samples"):
        import_thingsvision(tmp_path, tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="suffix= applies to the per-module folders"):
        import_thingsvision(tmp_path, tmp_path / "x.zarr", suffix="_val")
    np.savetxt(tmp_path / "bad.txt", features)
    with open(tmp_path / "bad.txt", "a") as f:
        f.write("1 2 x 4 5\n")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"s{i}\n" for i in range(N + 1)))
    with pytest.raises(ValueError, match="bad.txt, rows 20:22: not a table of numbers"):
        import_thingsvision(tmp_path / "bad.txt", tmp_path / "y.zarr", chunk_samples=10,
                            file_names=names)


def test_whole_mat_file_over_the_limit_is_refused(tmp_path, features, monkeypatch):
    from dask_repsim.imports import common, thingsvision

    tv.thingsvision_store_features(str(tmp_path), features, "mat")  # one variable 'features'
    group = import_thingsvision(tmp_path, tmp_path / "ok.zarr")
    np.testing.assert_array_equal(group["features"][...], features)
    monkeypatch.setattr(thingsvision, "file_size", lambda path: common.file_size(path, 100))
    with pytest.raises(ValueError, match="cannot be read in parts; the limit is 0.0 GiB"):
        import_thingsvision(tmp_path, tmp_path / "x.zarr")
