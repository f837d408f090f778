"""``dask-repsim import``: every format's verb writes the store its function writes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from dask_repsim import cli


def test_import_then_compare(tmp_path, capsys):
    data = np.random.default_rng(10).standard_normal((25, 4))
    np.save(tmp_path / "fc.npy", data)
    store = str(tmp_path / "acts.zarr")
    assert cli.main(["import", "arrays", str(tmp_path), store, "--chunk-samples", "8",
                     "--dtype", "float32", "--preprocessing", "none", "--model", "mlp"]) == 0
    assert "25 samples, 1 layers (fc)" in capsys.readouterr().out
    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["fc"][...], data.astype("float32"))
    assert group.attrs["dask_repsim_provenance"]["model"] == "mlp"
    assert cli.main(["compare", store, "-m", "cka", "--json"]) == 0
    assert '"n_samples": 25' in capsys.readouterr().out
    assert cli.main(["import", "arrays", str(tmp_path), store]) == 1
    assert "pass --resume to continue" in capsys.readouterr().err
    assert cli.main(["import", "arrays", str(tmp_path), store, "--resume"]) == 1
    assert "model mlp != npy" in capsys.readouterr().err  # the stored import named it
    assert cli.main(["import", "arrays", str(tmp_path), store, "--resume", "--model", "mlp"]) == 0


def test_bad_format_and_bad_source(tmp_path, capsys):
    assert cli.main(["import", "caffe", str(tmp_path), str(tmp_path / "x.zarr")]) == 2
    assert "invalid choice: 'caffe'" in capsys.readouterr().err
    assert cli.main(["import", "net2brain", str(tmp_path), str(tmp_path / "x.zarr")]) == 1
    assert "holds no .npz files" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", sorted(cli.IMPORTERS))
def test_every_format_has_a_verb(fmt, tmp_path, capsys):
    assert cli.main(["import", fmt, str(tmp_path / "missing"), str(tmp_path / "x.zarr")]) == 1
    assert "missing" in capsys.readouterr().err
