"""The ``dask-repsim`` command line: end to end in subprocesses, error paths in process.

Values are checked against :func:`dask_repsim.compare` and against float64 formulas written
here from the papers (Kornblith et al. 2019 for CKA, Procrustes and R^2; Hotelling's canonical
correlations via QR), on the values as stored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import references
import xarray as xr
import zarr
from conftest import write_zarr
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import dask_repsim
from dask_repsim import cli, cli_output

N = 120
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXE = shutil.which("dask-repsim", path=os.path.dirname(sys.executable))


# --- independent references (float64, whole data in memory) --------------------------------


def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x - x.mean(axis=0)


def ref_cka(x, y) -> float:
    x, y = _centred(x), _centred(y)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def ref_procrustes(x, y) -> float:
    x, y = _centred(x), _centred(y)
    return np.linalg.norm(x.T @ y, ord="nuc") / (np.linalg.norm(x) * np.linalg.norm(y))


def ref_mean_cca(x, y) -> float:
    qx, _ = np.linalg.qr(_centred(x))
    qy, _ = np.linalg.qr(_centred(y))
    return float(np.linalg.svd(qx.T @ qy, compute_uv=False).mean())


def ref_linear_regression(x, y) -> float:
    x, y = _centred(x), _centred(y)
    fitted = LinearRegression().fit(x, y).predict(x)
    return r2_score(y, fitted, multioutput="variance_weighted")


REFERENCES = {
    "cka": ref_cka,
    "procrustes": ref_procrustes,
    "mean_cca": ref_mean_cca,
    "linear_regression": ref_linear_regression,
}


# --- data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two networks' activation groups (float32 on disk, several chunks) and a short layer."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, 6))
    data = {
        "a": {
            "dense": x,
            "conv": rng.normal(size=(N, 3, 4, 4)) + x[:, :3, None, None],
        },
        "b": {
            "dense": np.tanh(x @ rng.normal(size=(6, 5))) + 0.3 * rng.normal(size=(N, 5)),
            "conv": rng.normal(size=(N, 2, 4, 4)) + x[:, 3:5, None, None],
        },
    }
    dims = {"dense": None, "conv": ("sample", "channel", "height", "width")}
    stored = {}
    for net, layers in data.items():
        for name, values in layers.items():
            values = values.astype(np.float32)
            write_zarr(root / f"{net}.zarr", name, values, (50,) + values.shape[1:], dims[name])
            stored[net, name] = values.astype(np.float64)  # what is on disk, in float64
    write_zarr(root / "short.zarr", "short", rng.normal(size=(N - 20, 4)), (50, 4))
    return root, stored


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [EXE] if EXE else [sys.executable, "-m", "dask_repsim.cli"]
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --- end to end ----------------------------------------------------------------------------


def test_console_script_is_installed():
    assert EXE is not None and os.access(EXE, os.X_OK)


def test_compare_groups_writes_netcdf_and_png(stores):
    root, stored = stores
    proc = run_cli("compare", "a.zarr", "b.zarr", "--out", "sim.nc", "--plot", "sim.png", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    with xr.open_dataset(root / "sim.nc") as saved:
        saved = saved.load()
    assert set(saved.data_vars) == set(dask_repsim.DEFAULT_METRICS)
    assert list(saved.layer_a.values) == ["conv", "dense"]  # group arrays, sorted by name
    assert list(saved.layer_b.values) == ["conv", "dense"]
    assert saved.attrs["n_samples"] == N

    direct = dask_repsim.compare(str(root / "a.zarr"), str(root / "b.zarr"))
    for metric in dask_repsim.DEFAULT_METRICS:
        np.testing.assert_allclose(saved[metric].values, direct[metric].values, rtol=0, atol=1e-12)
    for metric, reference in REFERENCES.items():
        for a in ("conv", "dense"):
            for b in ("conv", "dense"):
                expected = reference(stored["a", a], stored["b", b])
                got = float(saved[metric].sel(layer_a=a, layer_b=b))
                assert got == pytest.approx(expected, abs=1e-9), (metric, a, b)

    # the table on stdout shows the same numbers, 4 decimals
    lines = proc.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("cka:")))
    assert lines[header + 1].split()[-2:] == ["conv", "dense"]
    row = lines[header + 3].split()
    assert row[0] == "dense"
    expected = saved.cka.sel(layer_a="dense").values
    np.testing.assert_allclose([float(v) for v in row[1:]], expected, atol=5e-5)

    png = (root / "sim.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(root / "sim.png")
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # something is drawn
    # no temporary files are left beside the outputs
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp")]


def test_json_single_arrays_folded_with_progress(stores):
    root, stored = stores
    proc = run_cli(
        "compare", "a.zarr/conv", "b.zarr/conv", "-m", "cka", "--metric", "procrustes,mean_cca",
        "--sample-dims", "sample,height,width", "--json", "--progress", cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"cka", "procrustes", "mean_cca", "n_samples", "n_samples_omitted"}
    assert out["n_samples"] == N * 16  # positions folded into samples
    assert out["n_samples_omitted"] == 0

    def folded(v):  # (sample, channel, h, w) -> (sample * h * w, channel)
        return v.transpose(0, 2, 3, 1).reshape(-1, v.shape[1])

    x, y = folded(stored["a", "conv"]), folded(stored["b", "conv"])
    for metric in ("cka", "procrustes", "mean_cca"):
        assert list(out[metric]) == ["conv"] and list(out[metric]["conv"]) == ["conv"]
        expected = REFERENCES[metric](x, y)
        assert out[metric]["conv"]["conv"] == pytest.approx(expected, abs=1e-9), metric
    assert "100% Completed" in proc.stderr  # dask's progress bar, on stderr only
    assert "Completed" not in proc.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["compare", "missing.zarr", "b.zarr"], 1, "missing.zarr"),
        (["compare", "a.zarr", "b.zarr", "--metric", "cka,nope"], 2, "nope"),
        (["compare", "a.zarr", "short.zarr"], 1, "different numbers of samples"),
    ],
    ids=["missing-path", "bad-metric", "mismatched-samples"],
)
def test_user_errors_are_one_line(stores, args, code, message):
    root, _ = stores
    proc = run_cli(*args, "--out", "failed.nc", cwd=root)
    assert proc.returncode == code
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dask-repsim: error: ")
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not (root / "failed.nc").exists()


def test_debug_shows_traceback(stores):
    root, _ = stores
    proc = run_cli("compare", "a.zarr", "short.zarr", "--debug", cwd=root)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "SampleCountError" in proc.stderr
    assert error_lines(proc.stderr)[-1].startswith("dask-repsim: error: ")


def test_distributed_scheduler(stores):
    distributed = pytest.importorskip("distributed")
    root, stored = stores
    # threads in this process, reachable over TCP on loopback from the command's process; its
    # working directory differs from the command's, so relative input paths must not leak
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
        host="127.0.0.1", dashboard_address=None,
    ) as cluster:
        proc = run_cli(
            "compare", "a.zarr", "b.zarr", "-m", "cka", "--json", "--progress",
            "--scheduler", cluster.scheduler_address, cwd=root,
        )
        prefixes = set(cluster.scheduler.task_prefixes)
    assert proc.returncode == 0, proc.stderr
    assert "repsim-chunk" in prefixes  # the statistics pass ran on the cluster
    out = json.loads(proc.stdout)
    for a in ("conv", "dense"):
        for b in ("conv", "dense"):
            expected = ref_cka(stored["a", a], stored["b", b])
            assert out["cka"][a][b] == pytest.approx(expected, abs=1e-9)
    assert "100% Completed" in proc.stderr  # distributed's progress bar, sent to stderr
    assert "Completed" not in proc.stdout


# --- in process: outputs are atomic, inputs of every kind ------------------------------------


def test_failed_run_keeps_earlier_output(stores, tmp_path, capsys):
    root, _ = stores
    out = tmp_path / "sim.nc"
    out.write_bytes(b"earlier result")
    code = cli.main(["compare", str(root / "a.zarr"), str(root / "short.zarr"), "--out", str(out)])
    assert code == 1
    assert out.read_bytes() == b"earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.nc"]
    err = capsys.readouterr().err
    assert err.startswith("dask-repsim: error: ") and err.count("\n") == 1


def test_failure_while_writing_leaves_no_partial_file(stores, tmp_path, monkeypatch, capsys):
    root, _ = stores

    def broken_to_netcdf(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF half written")
        raise OSError("No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken_to_netcdf)
    out = tmp_path / "sim.nc"
    code = cli.main(["compare", str(root / "a.zarr"), "-m", "cka", "--out", str(out)])
    assert code == 1
    assert list(tmp_path.iterdir()) == []
    assert "No space left on device" in capsys.readouterr().err


def test_failure_in_plot_leaves_neither_output(stores, tmp_path, monkeypatch, capsys):
    root, _ = stores
    import dask_repsim.plot

    def broken_heatmap(*args, **kwargs):
        raise ValueError("cannot draw")

    monkeypatch.setattr(dask_repsim.plot, "heatmap", broken_heatmap)
    code = cli.main([
        "compare", str(root / "a.zarr"), "-m", "cka",
        "--out", str(tmp_path / "sim.nc"), "--plot", str(tmp_path / "sim.png"),
    ])
    assert code == 1
    assert list(tmp_path.iterdir()) == []  # the netCDF written first was not put in place
    assert capsys.readouterr().err == "dask-repsim: error: cannot draw\n"


def test_outputs_checked_before_computing(stores, tmp_path, monkeypatch, capsys):
    root, _ = stores

    def must_not_run(*args, **kwargs):
        raise AssertionError("computed before checking the outputs")

    monkeypatch.setattr(cli, "compare", must_not_run)
    a = str(root / "a.zarr")
    assert cli.main(["compare", a, "--plot", str(tmp_path / "sim.xyz")]) == 1
    assert "cannot save a plot as 'xyz'" in capsys.readouterr().err
    assert cli.main(["compare", a, "--out", str(tmp_path / "no" / "sim.nc")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_output_has_usual_permissions(stores, tmp_path, capsys):
    root, _ = stores
    out = tmp_path / "sim.nc"
    assert cli.main(["compare", str(root / "a.zarr"), "-m", "cka", "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_self_comparison_and_table(stores, capsys):
    root, stored = stores
    assert cli.main(["compare", str(root / "b.zarr"), "-m", "cka", "-m", "procrustes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"n_samples: {N}"
    for metric in ("cka", "procrustes"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{metric}:"))
        assert lines[start + 1].split()[-2:] == ["conv", "dense"]
        for k, a in enumerate(("conv", "dense")):
            row = lines[start + 2 + k].split()
            assert row[0] == a
            reference = REFERENCES[metric]
            expected = [reference(stored["b", a], stored["b", b]) for b in ("conv", "dense")]
            np.testing.assert_allclose([float(v) for v in row[1:]], expected, atol=5e-5)


def test_interval_and_permutations_in_netcdf_and_plot(stores, tmp_path, capsys):
    root, stored = stores
    out, png = tmp_path / "u.nc", tmp_path / "u.png"
    code = cli.main([
        "compare", str(root / "a.zarr"), str(root / "b.zarr"), "-m", "cka",
        "--interval", "jackknife", "--groups", "6", "--permutations", "9", "--seed", "3",
        "--out", str(out), "--plot", str(png),
    ])
    assert code == 0, capsys.readouterr().err
    with xr.open_dataset(out) as saved:
        saved = saved.load()
    direct = dask_repsim.compare(
        str(root / "a.zarr"), str(root / "b.zarr"), metrics=["cka"],
        interval="jackknife", groups=6, permutations=9, seed=3,
    )
    for name in ("cka", "cka_low", "cka_high", "cka_stderr", "cka_centre", "cka_pvalue",
                 "cka_pvalue_fwer", "cka_pvalue_fdr", "cka_null_mean"):
        np.testing.assert_allclose(saved[name].values, direct[name].values, rtol=1e-12)
    assert saved.attrs["permutations"] == 9 and saved.attrs["n_groups"] == 6
    # dense vs dense shares a signal: the smallest p-value 9 permutations allow
    assert float(saved.cka_pvalue.sel(layer_a="dense", layer_b="dense")) == pytest.approx(0.1)
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100
    # the plot hatches the cells whose p-value corrected over the grid exceeds 0.05
    axes = cli_output._plot_figure(saved).axes
    assert "family-wise p > 0.05" in axes[0].get_xlabel()


def test_method_option(stores, capsys):
    root, stored = stores
    code = cli.main(["compare", str(root / "a.zarr"), str(root / "b.zarr"), "-m", "mean_cca",
                     "--method", "qr", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    expected = ref_mean_cca(stored["a", "dense"], stored["b", "conv"])
    assert out["mean_cca"]["dense"]["conv"] == pytest.approx(expected, abs=1e-6)
    assert cli.main(["compare", str(root / "a.zarr"), "-m", "pwcca", "--method", "gram"]) == 1
    assert "--method gram computes cka, cka_debiased" in capsys.readouterr().err


def test_rbf_bandwidths_option(stores, capsys):
    root, stored = stores
    code = cli.main(["compare", str(root / "a.zarr"), str(root / "b.zarr"), "-m", "cka_rbf",
                     "--sigma", "0.5", "1.0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"cka_rbf_0.5", "cka_rbf_1"}
    x, y = stored["a", "dense"], stored["b", "conv"]
    expected = references.rbf_cka(x.reshape(len(x), -1), y.reshape(len(y), -1), 1.0)
    assert out["cka_rbf_1"]["dense"]["conv"] == pytest.approx(expected, abs=1e-6)
    assert cli.main(["compare", str(root / "a.zarr"), "-m", "cka", "--sigma", "0.5"]) == 1
    assert ("sigma= applies to the metric(s) cka_rbf (cka(kernel='rbf')), cka_laplace "
            "(cka(kernel='laplace')) only") in capsys.readouterr().err
    assert cli.main(["compare", str(root / "a.zarr"), "-m", "cka_rbf", "--sigma", "inf"]) == 1
    assert "sigma must be > 0 and finite" in capsys.readouterr().err


def test_sample_measure_options(stores, capsys):
    root, stored = stores
    code = cli.main(["compare", str(root / "a.zarr"), str(root / "b.zarr"), "-m", "rsa",
                     "-m", "mutual_knn", "--k", "7", "--rdm-compare", "corr", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    x, y = stored["a", "dense"], stored["b", "conv"]
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    assert out["rsa"]["dense"]["conv"] == pytest.approx(references.rsa_correlation(x, y),
                                                        abs=1e-6)
    assert out["mutual_knn"]["dense"]["conv"] == pytest.approx(references.mutual_knn(x, y, 7),
                                                               abs=1e-12)
    assert cli.main(["compare", str(root / "a.zarr"), "-m", "cka", "--k", "5"]) == 1
    assert ("k= applies to the metric(s) mutual_knn, jaccard_knn, rank_similarity, "
            "joint_rank_jaccard, second_order_cosine, cknna only" in capsys.readouterr().err)


def test_gulp_ridge_option(stores, capsys):
    root, stored = stores
    code = cli.main(["compare", str(root / "a.zarr"), str(root / "b.zarr"), "-m", "gulp",
                     "-m", "bures_distance", "--ridge", "0.1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    x, y = stored["a", "dense"], stored["b", "conv"]
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    assert out["gulp"]["dense"]["conv"] == pytest.approx(references.gulp(x, y, 0.1), rel=1e-7)
    assert out["bures_distance"]["dense"]["conv"] == pytest.approx(
        references.bures_distance(x, y), rel=1e-7)
    assert cli.main(["compare", str(root / "a.zarr"), "-m", "cka", "--ridge", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "ridge= applies to the metric(s) gulp, ridge_predictivity only" in err


def test_netcdf_input(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(80, 4)), rng.normal(size=(80, 3, 2))
    ds = xr.Dataset(
        {"fc": (("sample", "unit"), x), "pool": (("sample", "channel", "pos"), y)},
        coords={"sample": np.arange(80)},
    )
    ds.to_netcdf(tmp_path / "acts.nc")
    assert cli.main(["compare", str(tmp_path / "acts.nc"), "-m", "cka", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["cka"]) == ["fc", "pool"]  # data variables; the coordinate is not a layer
    assert out["cka"]["fc"]["pool"] == pytest.approx(ref_cka(x, y), abs=1e-12)
    assert out["cka"]["pool"]["pool"] == pytest.approx(1.0, abs=1e-12)


def test_join_option(tmp_path, capsys):
    """Labelled samples are paired by label; --join inner compares those both files hold."""
    rng = np.random.default_rng(4)
    ids = np.array([f"s{i:03d}" for i in range(90)])
    x = rng.normal(size=(90, 4))
    y = x @ rng.normal(size=(4, 3)) + 0.5 * rng.normal(size=(90, 3))
    order = rng.permutation(90)[:80]  # b holds 80 of a's samples, in another order
    xr.Dataset({"fc": (("sample", "unit"), x)}, coords={"sample": ids}).to_netcdf(
        tmp_path / "a.nc")
    xr.Dataset({"fc": (("sample", "unit"), y[order])}, coords={"sample": ids[order]}
               ).to_netcdf(tmp_path / "b.nc")
    args = ["compare", str(tmp_path / "a.nc"), str(tmp_path / "b.nc"), "-m", "cka", "--json"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    # the hint in the command's words: the flag, not the Python keyword
    assert "hold different samples" in err and "--join inner" in err and "join='" not in err
    assert cli.main([*args, "--join", "inner"]) == 0
    out = json.loads(capsys.readouterr().out)
    keep = np.sort(order)  # the samples both hold, in a's order
    assert out["cka"]["fc"]["fc"] == pytest.approx(ref_cka(x[keep], y[keep]), abs=1e-12)
    assert out["n_samples"] == 80
    assert cli.main([*args, "--join", "outer"]) == 2
    assert "invalid choice: 'outer'" in capsys.readouterr().err


def test_zarr_store_written_by_xarray_skips_coordinates(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(60, 3))
    ds = xr.Dataset(
        {"l1": (("sample", "u1"), x), "l2": (("sample", "u2"), y)},
        coords={"sample": np.arange(60), "u1": np.arange(5), "label": ("sample", np.arange(60))},
    )
    ds.to_zarr(tmp_path / "acts.zarr", zarr_format=3, consolidated=False)
    assert cli.main(["compare", str(tmp_path / "acts.zarr"), "-m", "cka", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["cka"]) == ["l1", "l2"]
    assert out["cka"]["l1"]["l2"] == pytest.approx(ref_cka(x, y), abs=1e-12)


def test_zarr_url(stores, capsys):
    root, stored = stores
    url = (root / "a.zarr").as_uri()  # file:// goes through fsspec like s3:// would
    assert cli.main(["compare", url, "-m", "cka", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = ref_cka(stored["a", "conv"], stored["a", "dense"])
    assert out["cka"]["conv"]["dense"] == pytest.approx(expected, abs=1e-9)


def test_group_of_empty_groups_is_a_zoo_and_names_them(tmp_path, capsys):
    """A group of groups and no arrays is read as a zoo; an empty network is named."""
    root = zarr.open_group(tmp_path / "runs.zarr", mode="w")
    root.create_group("net_a")
    root.create_group("net_b")
    assert cli.main(["compare", str(tmp_path / "runs.zarr")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dask-repsim: error: ") and err.count("\n") == 1
    assert "network 'net_a' of the zoo holds no layers" in err


def test_repsim_warning_shown_once_as_one_line(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(100, 4))
    x[:, 2] = 1.0  # a dead unit: CCA-family measures leave it out and say so
    write_zarr(tmp_path / "a.zarr", "dead", x, (50, 4))
    write_zarr(tmp_path / "a.zarr", "live", rng.normal(size=(100, 3)), (50, 3))
    code = cli.main(["compare", str(tmp_path / "a.zarr"), "-m", "mean_cca,pwcca"])
    assert code == 0
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith("dask-repsim: warning: dead: 1 of 4 units are constant")


def test_bad_arguments_exit_2(capsys):
    assert cli.main(["compare"]) == 2
    assert cli.main(["frobnicate", "a.zarr"]) == 2
    assert cli.main(["compare", "a.zarr", "--storage-option", "anon"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 3 and all(line.startswith("dask-repsim: error: ") for line in err)


def test_help_and_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dask-repsim {dask_repsim.__version__}"
    assert cli.main(["compare", "--help"]) == 0
    assert "--sample-dims" in capsys.readouterr().out


# --- model zoos: a store of network groups --------------------------------------------------


def _write_zoo(path: Path, networks: dict[str, dict[str, np.ndarray]]) -> None:
    """A zoo store: its root group, then one group per network, one array per layer."""
    zarr.open_group(path, mode="a")
    for net, layers in networks.items():
        for name, values in layers.items():
            write_zarr(path / net, name, values, (50,) + values.shape[1:])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Three small networks in one store (two of one architecture, one with a third layer),
    and a second store of two networks."""
    root = tmp_path_factory.mktemp("zoo")
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N, 6))

    def network(seed: int, layers: int) -> dict[str, np.ndarray]:
        own = np.random.default_rng(seed)
        h, out = x, {}
        for i in range(1, layers + 1):
            h = out[f"fc{i}"] = np.tanh(h @ own.normal(size=(h.shape[1], 5)) / 2)
        return out

    networks = {"net0": network(0, 2), "net1": network(1, 2), "net2": network(2, 3)}
    other = {"s5": network(5, 2), "s6": network(6, 1)}
    _write_zoo(root / "zoo.zarr", networks)
    _write_zoo(root / "other.zarr", other)
    return root, networks, other


def _image(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), path
    assert image[..., :3].std() > 0.05, path  # something is drawn
    return image


def test_zoo_store_writes_netcdf_tables_and_plots(zoo):
    root, networks, _ = zoo
    proc = run_cli("compare", "zoo.zarr", "-m", "cka", "-m", "procrustes", "--out", "zoo.nc",
                   "--plot", "zoo.png", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

    with xr.open_dataset(root / "zoo.nc") as saved:
        saved = saved.load()
    direct = dask_repsim.compare_zoo(str(root / "zoo.zarr"), metrics=["cka", "procrustes"])
    labels = [f"{n}/{layer}" for n, layers in networks.items() for layer in layers]
    assert list(saved.a.values) == labels and list(saved.b.values) == labels
    assert list(saved.network_b.values) == [label.split("/")[0] for label in labels]
    assert saved.attrs["self_comparison"] == 1 and saved.attrs["n_samples"] == N
    for metric in ("cka", "procrustes"):
        assert saved[metric].dims == ("a", "b")
        np.testing.assert_allclose(saved[metric].values, direct[metric].values, rtol=0,
                                   atol=1e-12)
    # independently of compare_zoo: a cell across two networks
    got = float(saved.cka.sel(a="net0/fc2", b="net2/fc3"))
    assert got == pytest.approx(ref_cka(networks["net0"]["fc2"], networks["net2"]["fc3"]),
                                abs=1e-12)

    # the table: every layer, then one number per pair of networks (summary "max")
    lines = proc.stdout.splitlines()
    assert lines[0] == f"n_samples: {N}"
    start = lines.index(next(line for line in lines if line.startswith("cka:")))
    assert lines[start + 1].split()[:3] == ["a", "\\", "b"]
    assert lines[start + 1].split()[3:] == labels
    row = lines[start + 2 + labels.index("net1/fc2")].split()
    assert row[0] == "net1/fc2"
    np.testing.assert_allclose([float(v) for v in row[1:]],
                               saved.cka.sel(a="net1/fc2").values, atol=5e-5)
    summary = dask_repsim.network_similarity(direct, "cka", summary="max")
    start = lines.index("cka between networks, max: the best value over their layer pairs")
    assert lines[start + 1].split()[-3:] == ["net0", "net1", "net2"]
    for k, net in enumerate(("net0", "net1", "net2")):
        row = lines[start + 2 + k].split()
        assert row[0] == net
        np.testing.assert_allclose([float(v) for v in row[1:]],
                                   summary.sel(network_a=net).values, atol=5e-5)

    # the figures: the network summaries (a panel per metric), every layer per metric
    networks_png = _image(root / "zoo_networks.png")
    assert networks_png.shape[1] > networks_png.shape[0] > 200  # two panels side by side
    for metric in ("cka", "procrustes"):
        layers_png = _image(root / f"zoo_zoo_{metric}.png")
        assert min(layers_png.shape[:2]) > 300
    assert not (root / "zoo.png").exists()
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp")]


def test_two_zoos_as_json_matched_summary(zoo, capsys):
    """A zoo against another zoo: rows are the first's layers, columns the other's."""
    root, networks, other = zoo
    a, b = str(root / "zoo.zarr"), str(root / "other.zarr")
    code = cli.main(["compare", a, b, "-m", "cka", "--json", "--summary", "matched"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"cka", "n_samples", "n_samples_omitted", "network_similarity",
                        "summary"}
    assert out["summary"] == "matched" and out["n_samples"] == N
    direct = dask_repsim.compare_zoo(a, b, metrics=["cka"])
    assert list(out["cka"]) == [str(v) for v in direct.a.values]
    assert list(out["cka"]["net2/fc3"]) == ["s5/fc1", "s5/fc2", "s6/fc1"]
    for label_a, row in out["cka"].items():
        for label_b, value in row.items():
            assert value == pytest.approx(float(direct.cka.sel(a=label_a, b=label_b)),
                                          abs=1e-12)
    assert out["cka"]["net1/fc1"]["s6/fc1"] == pytest.approx(
        ref_cka(networks["net1"]["fc1"], other["s6"]["fc1"]), abs=1e-12)
    # matched: the mean over the layers of the same name (s6 has fc1 only)
    matched = out["network_similarity"]["cka"]
    assert list(matched) == ["net0", "net1", "net2"] and list(matched["net0"]) == ["s5", "s6"]
    assert matched["net2"]["s6"] == pytest.approx(out["cka"]["net2/fc1"]["s6/fc1"], abs=1e-12)
    assert matched["net0"]["s5"] == pytest.approx(
        (out["cka"]["net0/fc1"]["s5/fc1"] + out["cka"]["net0/fc2"]["s5/fc2"]) / 2, abs=1e-12)


def test_zoo_passes_the_compare_options(zoo, tmp_path, capsys):
    root, _, _ = zoo
    out = tmp_path / "zoo.nc"
    code = cli.main(["compare", (root / "zoo.zarr").as_uri(), "-m", "cka,mean_cca",
                     "--method", "covariance", "--interval", "jackknife", "--groups", "6",
                     "--permutations", "9", "--seed", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with xr.open_dataset(out) as saved:
        saved = saved.load()
    direct = dask_repsim.compare_zoo(
        str(root / "zoo.zarr"), metrics=["cka", "mean_cca"], method="covariance",
        interval="jackknife", groups=6, permutations=9, seed=3)
    assert saved.attrs["method"] == "covariance" and saved.attrs["permutations"] == 9
    for name in direct.data_vars:
        np.testing.assert_allclose(saved[name].values, direct[name].values, rtol=0,
                                   atol=1e-12, err_msg=str(name))
    assert cli.main(["compare", str(root / "zoo.zarr"), "-m", "cka", "--method", "qr"]) == 1
    assert "--method qr" in capsys.readouterr().err


def test_network_with_groups_stays_a_network(tmp_path, capsys):
    """A group holding arrays is one network, as before, even with groups beside them."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(60, 3))
    write_zarr(tmp_path / "net.zarr", "fc1", x, (30, 4))
    write_zarr(tmp_path / "net.zarr", "fc2", y, (30, 3))
    write_zarr(tmp_path / "net.zarr" / "extra", "other", y, (30, 3))
    assert cli.main(["compare", str(tmp_path / "net.zarr"), "-m", "cka", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["cka"]) == ["fc1", "fc2"] and "network_similarity" not in out
    assert out["cka"]["fc1"]["fc2"] == pytest.approx(ref_cka(x, y), abs=1e-12)


@pytest.fixture(scope="module")
def bad_zoos(zoo):
    root, _, _ = zoo
    zarr.open_group(root / "empty.zarr", mode="w")
    write_zarr(root / "noroot.zarr" / "net0", "fc1", np.zeros((N, 2)), (50, 2))
    _write_zoo(root / "apart.zarr", {"mlp": {"fc1": np.eye(N)[:, :3]},
                                     "vit": {"block": np.eye(N)[:, 3:6]}})
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["empty.zarr"], "is empty: it holds no arrays (the layers of a network) and no groups"),
        (["zoo.zarr", "zoo.zarr/net0"], "'zoo.zarr' is a zoo (a zarr group of the network "
         "groups net0, net1, net2) but 'zoo.zarr/net0' is one network"),
        (["zoo.zarr/net0", "other.zarr"], "'other.zarr' is a zoo"),
        (["noroot.zarr"], "a zoo store needs its root group too"),
        (["zoo.zarr", "missing.zarr"], "no zarr array or group at 'missing.zarr'"),
        (["apart.zarr", "--summary", "matched"], "networks 'mlp' and 'vit' share no layer name"),
    ],
    ids=["empty-store", "zoo-and-network", "network-and-zoo", "no-root-group",
         "zoo-and-missing", "matched-without-shared-names"],
)
def test_zoo_errors_are_one_line(bad_zoos, args, message):
    root = bad_zoos
    proc = run_cli("compare", *args, "-m", "cka", "--out", "failed.nc", "--plot", "failed.png",
                   cwd=root)
    assert proc.returncode == 1, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dask-repsim: error: ")
    assert message in lines[0]
    assert proc.stdout == ""
    assert not [p.name for p in root.iterdir() if p.name.startswith("failed")]


def test_zoo_checked_before_computing(zoo, monkeypatch, capsys):
    root, _, _ = zoo

    def must_not_run(*args, **kwargs):
        raise AssertionError("computed before checking the inputs")

    monkeypatch.setattr(cli, "compare", must_not_run)
    monkeypatch.setattr(cli, "compare_zoo", must_not_run)
    code = cli.main(["compare", str(root / "zoo.zarr"), str(root / "zoo.zarr" / "net0")])
    assert code == 1
    assert "is one network" in capsys.readouterr().err
