"""Samples paired by label, never silently by position; dims addressed by role; unknown dims
named. References are float64 numpy on explicitly reordered, transposed and reshaped arrays."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import references
import xarray as xr
import zarr

import dask_repsim as dr
from dask_repsim import cli
from dask_repsim.io.labels import align_samples

N = 120
RNG = np.random.default_rng(11)
LATENT = RNG.normal(size=(N, 3))
X = LATENT @ RNG.normal(size=(3, 6)) + 0.3 * RNG.normal(size=(N, 6))
Y = LATENT @ RNG.normal(size=(3, 4)) + 0.3 * RNG.normal(size=(N, 4)) + 5.0
IDS = np.array([f"img{i:04d}" for i in RNG.permutation(10 * N)[:N]])


def _centre(a: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    return a - a.mean(axis=0)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = _centre(x), _centre(y)
    return float(np.linalg.norm(y.T @ x) ** 2
                 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def procrustes(x: np.ndarray, y: np.ndarray) -> float:
    x, y = _centre(x), _centre(y)
    return float(np.linalg.norm(x.T @ y, "nuc") / (np.linalg.norm(x) * np.linalg.norm(y)))


def mean_cca(x: np.ndarray, y: np.ndarray) -> float:
    """Mean canonical correlation from orthonormal bases that drop collinear directions."""
    return references.mean_cca(x.reshape(len(x), -1), y.reshape(len(y), -1))


REFERENCES = {"cka": linear_cka, "procrustes": procrustes, "mean_cca": mean_cca}
PAIRWISE = {"cka": dr.cka, "procrustes": dr.procrustes,
            "mean_cca": lambda x, y, **kw: dr.cca(x, y, **kw).mean}


def labelled(values: np.ndarray, ids, unit: str = "unit", chunks: int | None = None):
    data = values if chunks is None else da.from_array(values, chunks=(chunks, -1))
    return xr.DataArray(data, dims=("sample", unit), coords={"sample": ids})


@pytest.mark.parametrize("chunks", [None, 25])
@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_reordered_labels_give_the_aligned_value(chunks, order):
    perm = np.arange(N)[::-1] if order == "reversed" else RNG.permutation(N)
    x = labelled(X, IDS, chunks=chunks)
    y = labelled(Y[perm], IDS[perm], "u", chunks=chunks)  # the same samples, stored reordered
    for name, reference in REFERENCES.items():
        want = reference(X, Y)
        misaligned = reference(X, Y[perm])
        assert abs(want - misaligned) > 0.05  # the test can tell the two apart
        got = PAIRWISE[name](x, y)
        assert float(got) == pytest.approx(want, abs=1e-9), name
        grid = dr.compare({"x": x}, {"y": y}, metrics=[name])
        assert float(grid[name].item()) == pytest.approx(want, abs=1e-9), name


def test_identical_labels_cost_nothing():
    x = labelled(X, IDS, chunks=30)
    y = labelled(Y, IDS, "u", chunks=30)
    ax, ay = align_samples([("x", x), ("y", y)], None)
    assert ax is x and ay is y  # used as they are: no gather in the graph
    z = y.isel(sample=np.arange(N)[::-1])
    _, az = align_samples([("x", x), ("z", z)], None)
    np.testing.assert_array_equal(az.sample.values, IDS)
    np.testing.assert_array_equal(az.values, Y)


def test_different_label_sets_are_an_error_naming_count_and_first_missing():
    x = labelled(X, IDS)
    keep = np.r_[0:50, 53:N]  # y lacks samples 50, 51 and 52
    y = labelled(Y[keep], IDS[keep], "u")
    message = (rf"x and y hold different samples: 3 of the {N} sample labels of x are not in y "
               rf"\(first: '{IDS[50]}'\).*join='inner' to compare the {N - 3} samples")
    with pytest.raises(ValueError, match=message):
        dr.cka(x, y)
    with pytest.raises(ValueError, match=rf"3 of the {N} sample labels of fc of a are not in "
                       rf"fc of b \(first: '{IDS[50]}'\)"):
        dr.compare({"fc": x}, {"fc": y}, metrics=["cka"])
    # labels of another kind altogether: nothing in common
    other = labelled(Y, np.arange(N), "u")
    with pytest.raises(ValueError, match=rf"{N} of the {N} sample labels of x are not in y"):
        dr.procrustes(x, other)


def test_inner_join_equals_the_reference_on_common_samples():
    perm = RNG.permutation(N)
    kx = np.sort(RNG.choice(N, size=100, replace=False))
    ky = perm[np.isin(perm, RNG.choice(N, size=90, replace=False))]
    x = labelled(X[kx], IDS[kx], chunks=40)
    y = labelled(Y[ky], IDS[ky], "u", chunks=40)
    common = [i for i in kx if i in set(ky)]  # x's order
    for name, reference in REFERENCES.items():
        want = reference(X[common], Y[common])
        assert float(PAIRWISE[name](x, y, join="inner")) == pytest.approx(want, abs=1e-9)
        grid = dr.compare({"x": x}, {"y": y}, metrics=[name], join="inner")
        assert float(grid[name].item()) == pytest.approx(want, abs=1e-9)
        assert grid.attrs["n_samples"] == len(common)
    with pytest.raises(ValueError, match="different samples"):
        dr.cka(x, y)  # the default join is exact


def test_join_values_and_unlabelled_inputs():
    x, y = labelled(X, IDS), labelled(Y, IDS, "u")
    for bad in ("outer", "left", None, 1):
        with pytest.raises(ValueError, match=r"join must be one of \('exact', 'inner'\)"):
            dr.cka(x, y, join=bad)
        with pytest.raises(ValueError, match=r"join must be one of \('exact', 'inner'\)"):
            dr.compare({"x": x}, {"y": y}, join=bad)
    with pytest.raises(ValueError, match="join='inner' pairs samples by label, but no input"):
        dr.cka(X, Y, join="inner")
    # a labelled and an unlabelled input are paired by position (documented)
    perm = RNG.permutation(N)
    mixed = labelled(Y[perm], IDS[perm], "u")
    assert float(dr.cka(X, mixed)) == pytest.approx(linear_cka(X, Y[perm]), abs=1e-9)
    assert float(dr.cka(X, mixed, join="inner")) == pytest.approx(linear_cka(X, Y[perm]),
                                                                  abs=1e-9)
    # ... but join='inner' cannot drop samples of an input it cannot select by label
    grid = {"x": labelled(X[:100], IDS[:100]), "y": labelled(Y, IDS, "u"), "plain": Y}
    with pytest.raises(ValueError, match="plain has no sample labels"):
        dr.compare(grid, metrics=["cka"], join="inner")


def test_repeated_labels_cannot_be_paired():
    ids = IDS.copy()
    ids[7] = ids[3]
    x = labelled(X, ids)
    y = labelled(Y[::-1], ids[::-1], "u")
    with pytest.raises(ValueError, match=rf"sample labels of x repeat \('{ids[3]}' more than once"):
        dr.cka(x, y)


# xarray stores the string labels as fixed-width strings, which zarr calls unstable
@pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")
def test_datasets_and_zarr_groups_are_paired_by_label(tmp_path):
    perm = RNG.permutation(N)
    a = xr.Dataset({"fc1": (("sample", "u1"), X), "fc2": (("sample", "u2"), X[:, :2] ** 2)},
                   coords={"sample": IDS})
    b = xr.Dataset({"fc1": (("sample", "v1"), Y[perm])}, coords={"sample": IDS[perm]})
    b.to_zarr(tmp_path / "b.zarr", zarr_format=3, consolidated=False)
    for other in (b, str(tmp_path / "b.zarr"), str(tmp_path / "b.zarr" / "fc1")):
        grid = dr.compare(a, other, metrics=["cka"])
        assert float(grid.cka.sel(layer_a="fc1", layer_b="fc1")) == pytest.approx(
            linear_cka(X, Y), abs=1e-9)
        assert float(grid.cka.sel(layer_a="fc2", layer_b="fc1")) == pytest.approx(
            linear_cka(X[:, :2] ** 2, Y), abs=1e-9)
    # a zarr array path given to a pairwise function carries its group's labels too
    path = str(tmp_path / "b.zarr" / "fc1")
    assert float(dr.cka(a.fc1, path)) == pytest.approx(linear_cka(X, Y), abs=1e-9)
    group = zarr.open_group(tmp_path / "b.zarr", mode="r")
    assert float(dr.cka(a.fc1, group["fc1"])) == pytest.approx(linear_cka(X, Y), abs=1e-9)


def _qualified_dataset() -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """A Dataset as a capture names it: spatial dims qualified where layers differ."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(40, 3, 4, 4))
    conv1 = np.concatenate([base, base[:, :1] ** 2], axis=1)                  # (40, 4, 4, 4)
    conv2 = base[:, :, ::2, ::2] + 0.1 * rng.normal(size=(40, 3, 2, 2))      # (40, 3, 2, 2)
    fc = base.mean(axis=(2, 3)) @ rng.normal(size=(3, 5))                       # (40, 5)
    ds = xr.Dataset({
        "conv1": (("sample", "conv1.channel", "conv1.height", "conv1.width"), conv1),
        "conv2": (("sample", "conv2.channel", "conv2.height", "conv2.width"), conv2),
        "fc": (("sample", "unit"), fc),
    }, coords={"sample": np.arange(40)})
    return ds, {"conv1": conv1, "conv2": conv2, "fc": fc}


def test_dims_by_role_fold_pool_and_name_unknown_dims():
    ds, raw = _qualified_dataset()
    fold = ("sample", "height", "width")
    folded = dr.compare(ds[["conv1"]], ds[["conv1"]].rename(conv1="again"), sample_dims=fold,
                        metrics=["cka"])
    assert folded.attrs["n_samples"] == 40 * 16
    pooled = dr.compare(ds, pool="mean", metrics=["cka"])
    want = linear_cka(raw["conv1"].mean(axis=(2, 3)), raw["conv2"].mean(axis=(2, 3)))
    assert float(pooled.cka.sel(layer_a="conv1", layer_b="conv2")) == pytest.approx(want,
                                                                                  abs=1e-9)
    # a layer with only some of the sample dims uses those it has: the dense layer has 40
    # samples where a folded conv layer has 640, which is the documented error
    with pytest.raises(ValueError, match="fc has 40.*folded layers one grid .resize=True."):
        dr.compare(ds, sample_dims=fold, metrics=["cka"])
    message = (r"sample_dims \('token',\): no layer has this dim; the layers' dims are: conv1 "
               r"\('sample', 'conv1.channel', 'conv1.height', 'conv1.width'\); conv2 .*; fc "
               r"\('sample', 'unit'\)")
    with pytest.raises(ValueError, match=message):
        dr.compare(ds, sample_dims=("sample", "token"))
    with pytest.raises(ValueError, match=r"spatial_dims \('depth',\): no layer has this dim"):
        dr.compare(ds, pool="mean", spatial_dims=("height", "depth"))
    with pytest.raises(ValueError, match=r"sample_dims \('token',\) not in x; its dims are"):
        dr.cka(ds.conv1, ds.conv2, sample_dims=("sample", "token"))
    with pytest.raises(ValueError, match=r"no layer has these dims.*x \(a plain array of shape"):
        dr.cka(X, Y, sample_dims=("sample", "token"))


def test_cli_names_an_unknown_sample_dim_in_one_line(tmp_path, capsys):
    ds, _ = _qualified_dataset()
    ds.to_zarr(tmp_path / "acts.zarr", zarr_format=3, consolidated=False)
    code = cli.main(["compare", str(tmp_path / "acts.zarr"), "-m", "cka",
                     "--sample-dims", "sample,token"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("dask-repsim: error: sample_dims ('token',): no layer has this dim; "
                          "the layers' dims are: conv1 ('sample', 'conv1.channel', ")
    assert err.count("\n") == 1 and "fc ('sample', 'unit')" in err
