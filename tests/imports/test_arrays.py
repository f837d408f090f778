"""import_arrays: .npy and HDF5 files into a capture store, values and ids as in the files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr
import zarr

import dask_repsim
from dask_repsim.capture.provenance import PROVENANCE_ATTR
from dask_repsim.capture.store import STATE_ATTR
from dask_repsim.imports.arrays import import_arrays

N = 37


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    data = {"fc1": rng.standard_normal((N, 6)), "conv": rng.standard_normal((N, 2, 3, 3))
            .astype("float32"), "logit": rng.standard_normal(N)}
    for name in ("fc1", "logit"):
        np.save(tmp_path / f"{name}.npy", data[name])
    with h5py.File(tmp_path / "more.h5", "w") as f:
        f.create_dataset("block1/conv", data=data["conv"])
        f.create_dataset("sample", data=np.array([f"img{i:03d}.png" for i in range(N)],
                                                 dtype="S"))
    return tmp_path, data


def test_values_ids_and_compare(folder, tmp_path):
    path, data = folder
    store = tmp_path / "acts.zarr"
    group = import_arrays(path, store, chunk_samples=8, preprocessing="224 px")
    np.testing.assert_array_equal(group["fc1"][...], data["fc1"])
    np.testing.assert_array_equal(group["block1.conv"][...], data["conv"])
    np.testing.assert_array_equal(group["logit"][...], data["logit"][:, None])
    assert group["sample"][...].tolist() == [f"img{i:03d}.png" for i in range(N)]
    assert group["block1.conv"].metadata.dimension_names == ("sample", "channel", "height",
                                                             "width")
    state, prov = group.attrs[STATE_ATTR], group.attrs[PROVENANCE_ATTR]
    assert state["complete"] and state["committed"] == N and state["chunk_samples"] == 8
    assert state["layers"] == ["fc1", "logit", "block1.conv"]
    assert prov["source"]["tool"] == "hdf5+npy" and prov["preprocessing"] == "224 px"
    assert prov["samples"] == N and len(prov["source"]["files"]) == 3
    ds = xr.open_zarr(store)
    assert ds.sample.values[0] == "img000.png"
    grid = dask_repsim.compare(str(store), {"fc1": data["fc1"]}, metrics=["cka"])
    assert float(grid.cka.sel(layer_a="fc1", layer_b="fc1")) == pytest.approx(1.0, abs=1e-9)


def test_layers_dtype_and_positions(folder, tmp_path):
    path, data = folder
    group = import_arrays([path / "fc1.npy"], tmp_path / "a.zarr", dtype="float16")
    assert group["fc1"].dtype == np.float16
    np.testing.assert_array_equal(group["fc1"][...], data["fc1"].astype("float16"))
    np.testing.assert_array_equal(group["sample"][...], np.arange(N))
    group = import_arrays(path, tmp_path / "b.zarr", layers=["block1.conv"])
    assert sorted(group.array_keys()) == ["block1.conv", "sample"]


def test_errors_name_the_files(folder, tmp_path):
    path, _ = folder
    with pytest.raises(ValueError, match="holds no .npy, .h5 or .hdf5 files"):
        import_arrays(_empty(tmp_path), tmp_path / "x.zarr")
    with pytest.raises(ValueError, match=r"no layer\(s\) \['fc9'\]"):
        import_arrays(path, tmp_path / "x.zarr", layers=["fc9"])
    np.save(path / "short.npy", np.zeros((5, 2)))
    with pytest.raises(ValueError, match="different numbers of samples.*short.npy: 5"):
        import_arrays(path, tmp_path / "x.zarr")
    (path / "short.npy").unlink()
    np.save(path / "words.npy", np.array([["a"]] * N))
    with pytest.raises(TypeError, match="words.npy holds <U1 data"):
        import_arrays(path, tmp_path / "x.zarr")
    np.save(path / "words.npy", np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match="words.npy holds Python objects"):
        import_arrays(path, tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="values too large for float16"):
        np.save(path / "big.npy", np.full((N, 2), 1e6))
        import_arrays([path / "big.npy"], tmp_path / "y.zarr", dtype="float16")
    with pytest.raises(ValueError, match="would be truncated"):
        import_arrays([path / "big.npy"], tmp_path / "z.zarr", dtype="int32")
    with pytest.raises(ValueError, match="chunk_samples must be at least 1"):
        import_arrays([path / "big.npy"], tmp_path / "z.zarr", chunk_samples=0)
    np.save(path / "ids.npy", np.zeros(3))
    with h5py.File(tmp_path / "dup.h5", "w") as f:
        f.create_dataset("fc1", data=np.zeros((N, 2)))
    with pytest.raises(ValueError, match="two arrays are called 'fc1'"):
        import_arrays([path / "fc1.npy", tmp_path / "dup.h5"], tmp_path / "w.zarr")
    np.save(tmp_path / "sample.npy", np.zeros(N, dtype=int))
    with pytest.raises(ValueError, match="sample id 0 .sample 0. repeats"):
        import_arrays([path / "fc1.npy", tmp_path / "sample.npy"], tmp_path / "v.zarr")
    assert not (tmp_path / "v.zarr").exists()  # refused before anything was written


def _empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_existing_store_needs_resume_or_overwrite(folder, tmp_path):
    path, data = folder
    store = tmp_path / "acts.zarr"
    import_arrays(path, store)
    with pytest.raises(FileExistsError, match="already holds a zarr group"):
        import_arrays(path, store)
    again = import_arrays(path, store, resume=True)  # complete: returned as it is
    np.testing.assert_array_equal(again["fc1"][...], data["fc1"])
    np.save(path / "fc1.npy", data["fc1"][:, :5])
    with pytest.raises(ValueError, match="the files or their sizes.*layers' shapes"):
        import_arrays(path, store, resume=True)
    group = import_arrays(path, store, overwrite=True)
    assert group["fc1"].shape == (N, 5)
    assert zarr.open_group(store).attrs[STATE_ATTR]["complete"]
