"""import_brainscore: a model-tools activations assembly written by brainio's write_netcdf."""

from __future__ import annotations

import numpy as np
import pytest
import tool_layouts as tl
import xarray as xr

import dask_repsim
from dask_repsim.imports.brainscore import import_brainscore

N = 17


@pytest.fixture
def assembly_file(tmp_path):
    rng = np.random.default_rng(4)
    layers = {"conv1": rng.standard_normal((N, 2, 2, 3)).astype("float32"),
              "fc": rng.standard_normal((N, 5)).astype("float32")}
    paths = [f"/stimuli/img{i:02d}.png" for i in range(N)]
    assembly = tl.model_tools_assembly(layers, paths, "alexnet")
    path = tmp_path / "activations.nc"
    tl.brainio_write_netcdf(assembly, str(path))
    return path, {k: v.reshape(N, -1) for k, v in layers.items()}


def test_layers_coordinates_and_ids(assembly_file, tmp_path):
    path, want = assembly_file
    store = tmp_path / "acts.zarr"
    group = import_brainscore(path, store, chunk_samples=5)
    assert group.attrs["dask_repsim_capture"]["layers"] == ["conv1", "fc"]
    for name, acts in want.items():
        np.testing.assert_array_equal(group[name][...], acts)
    assert group["sample"][...].tolist() == [f"img{i:02d}" for i in range(N)]
    assert group["fc.neuroid_id"][...].tolist() == [f"alexnet.fc.{k}" for k in range(5)]
    np.testing.assert_array_equal(group["conv1.channel_y"][...], np.tile([0, 1, 2], 4))
    assert group["conv1"].metadata.dimension_names == ("sample", "conv1.neuroid")
    assert group.attrs["dask_repsim_provenance"]["model"] == "alexnet"
    # the presentation coordinates besides the ids: along the samples, as coordinates
    assert group["stimulus_path"][...].tolist() == [f"/stimuli/img{i:02d}.png" for i in range(N)]
    assert group["stimulus_path"].metadata.dimension_names == ("sample",)
    ds = xr.open_zarr(store)
    assert set(ds.data_vars) == {"conv1", "fc"}
    assert ds["fc"].coords["stimulus_path"].values[3] == "/stimuli/img03.png"
    assert ds["fc"].coords["fc.neuroid_num"].values.tolist() == [0, 1, 2, 3, 4]
    grid = dask_repsim.compare(str(store), want, metrics=["cka"])
    assert float(grid.cka.sel(layer_a="conv1", layer_b="conv1")) == pytest.approx(1.0)
    assert list(grid.layer_a.values) == ["conv1", "fc"]  # coordinates are not layers


def test_uncompressed_dataarray_file(assembly_file, tmp_path):
    _, want = assembly_file
    assembly = tl.model_tools_assembly({"fc": want["fc"]}, [f"s{i}" for i in range(N)], "m")
    path = tmp_path / "plain.nc"
    tl.brainio_write_netcdf(assembly, str(path), compress=False)
    group = import_brainscore(path, tmp_path / "plain.zarr")
    np.testing.assert_array_equal(group["fc"][...], want["fc"])


def test_errors(tmp_path):
    path = tmp_path / "two.nc"
    xr.Dataset({"a": (("p", "neuroid"), np.zeros((2, 2))),
                "b": (("p", "neuroid"), np.zeros((2, 2)))}).to_netcdf(path)
    with pytest.raises(ValueError, match="holds 2 variables with a 'neuroid' dimension"):
        import_brainscore(path, tmp_path / "x.zarr")
    path.write_text("not netcdf")
    with pytest.raises(ValueError, match="cannot open .* as netCDF"):
        import_brainscore(path, tmp_path / "x.zarr")
