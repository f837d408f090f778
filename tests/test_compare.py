"""compare(): grids of every metric from one pass equal the pairwise functions and formulas."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import dask_repsim as dr
from dask_repsim import DEFAULT_METRICS
from dask_repsim.engine import memory

RNG = np.random.default_rng(7)
N = 400


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019) eq. for linear CKA with centred features, in float64."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _network(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = RNG.normal(size=(N, 6))  # shared inputs: the layers of both nets are related
    h1 = np.maximum(inputs @ rng.normal(size=(6, 9)), 0)
    h2 = np.tanh(h1 @ rng.normal(size=(9, 7)))
    conv = np.tanh(np.einsum("ni,ichw->nchw", inputs, rng.normal(size=(6, 3, 2, 2))))
    return {"fc1": h1, "fc2": h2, "conv": conv}


NET_A, NET_B = _network(1), _network(2)
PAIRWISE = {
    "cka": dr.cka,
    "cka_debiased": lambda x, y: dr.cka(x, y, debiased=True),
    "mean_cca": lambda x, y: dr.cca(x, y).mean,
    "r2_cca": lambda x, y: dr.cca(x, y).r2,
    "svcca": dr.svcca,
    "pwcca": dr.pwcca,
    "linear_regression": dr.linear_regression,
    "procrustes": dr.procrustes,
}


def _dataset(net: dict[str, np.ndarray], prefix: str) -> xr.Dataset:
    return xr.Dataset(
        {
            "fc1": (("sample", f"{prefix}u1"), da.from_array(net["fc1"], chunks=(90, -1))),
            "fc2": (("sample", f"{prefix}u2"), net["fc2"]),
            "conv": (("sample", f"{prefix}c", "height", "width"), net["conv"]),
        }
    )


def _group(net: dict[str, np.ndarray], path) -> str:
    root = zarr.open_group(path, mode="w")
    for name, arr in net.items():
        dims = ("sample", "channel", "height", "width") if arr.ndim == 4 else ("sample", "unit")
        z = root.create_array(
            name, shape=arr.shape, chunks=(75,) + arr.shape[1:], dtype="f8", dimension_names=dims
        )
        z[...] = arr
    return str(path)


@pytest.mark.parametrize("kind", ["dataset", "mapping", "zarr_group"])
def test_grid_equals_pairwise_functions(kind, tmp_path):
    if kind == "dataset":
        a, b = _dataset(NET_A, "a"), _dataset(NET_B, "b")
    elif kind == "mapping":
        a, b = dict(NET_A), {k: da.from_array(v, chunks=110) for k, v in NET_B.items()}
    else:
        a, b = _group(NET_A, tmp_path / "a.zarr"), _group(NET_B, tmp_path / "b.zarr")
    ds = dr.compare(a, b)
    assert set(ds.data_vars) == set(DEFAULT_METRICS)
    assert sorted(ds.layer_a.values) == sorted(NET_A) and sorted(ds.layer_b.values) == sorted(NET_B)
    assert ds.attrs["n_samples"] == N
    for la in NET_A:
        for lb in NET_B:
            x, y = NET_A[la].reshape(N, -1), NET_B[lb].reshape(N, -1)
            np.testing.assert_allclose(
                ds.cka.sel(layer_a=la, layer_b=lb), _linear_cka(x, y), atol=1e-9
            )
            for metric, func in PAIRWISE.items():
                np.testing.assert_allclose(
                    ds[metric].sel(layer_a=la, layer_b=lb), func(x, y), atol=1e-9,
                    err_msg=f"{metric} {la} {lb}",
                )


def test_grid_with_itself_is_symmetric_with_unit_diagonal():
    ds = dr.compare(_dataset(NET_A, "a"), metrics=["cka", "mean_cca", "procrustes"])
    for metric in ("cka", "mean_cca", "procrustes"):
        values = ds[metric].values
        np.testing.assert_allclose(values, values.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-9)


def test_conv_layer_folded_flattened_and_pooled():
    conv_a = xr.DataArray(NET_A["conv"], dims=("sample", "channel", "height", "width"))
    conv_b = xr.DataArray(NET_B["conv"], dims=("sample", "channel", "height", "width"))
    folded = dr.compare({"a": conv_a}, {"b": conv_b}, sample_dims=("sample", "height", "width"))
    # folded: every spatial position is a sample, channels are features (NHW x C)
    fx = NET_A["conv"].transpose(0, 2, 3, 1).reshape(-1, 3)
    fy = NET_B["conv"].transpose(0, 2, 3, 1).reshape(-1, 3)
    assert folded.attrs["n_samples"] == N * 4
    np.testing.assert_allclose(folded.cka.item(), _linear_cka(fx, fy), atol=1e-9)
    np.testing.assert_allclose(folded.mean_cca.item(), dr.cca(fx, fy).mean, atol=1e-9)
    flat = dr.compare({"a": conv_a}, {"b": conv_b})
    np.testing.assert_allclose(
        flat.cka.item(), _linear_cka(NET_A["conv"].reshape(N, -1), NET_B["conv"].reshape(N, -1)),
        atol=1e-9,
    )
    pooled = dr.compare({"a": conv_a}, {"b": NET_B["conv"]}, pool="mean", metrics=["cka"])
    np.testing.assert_allclose(
        pooled.cka.item(),
        _linear_cka(NET_A["conv"].mean(axis=(2, 3)), NET_B["conv"].mean(axis=(2, 3))),
        atol=1e-9,
    )


def test_folded_grids_of_different_size_need_pool_or_resize():
    dims = ("sample", "channel", "height", "width")
    small = xr.DataArray(RNG.normal(size=(N, 3, 2, 2)), dims=dims)
    big = xr.DataArray(RNG.normal(size=(N, 2, 4, 4)), dims=dims)
    folded = ("sample", "height", "width")
    with pytest.raises(ValueError, match="big has 6400, small has 1600; with spatial positions "
                                         "folded into samples, give the folded layers one grid"):
        dr.compare({"small": small}, {"big": big}, sample_dims=folded)
    grown = dr.compare({"small": small}, {"big": big}, sample_dims=folded, resize=True)
    assert grown.attrs["n_samples"] == N * 16
    # resize=True is linear interpolation on pixel centres, as xarray's interp gives it
    centres = (np.arange(2) + 0.5) / 2
    target = (np.arange(4) + 0.5) / 4
    up = small.assign_coords(height=centres, width=centres).interp(
        height=target, width=target, kwargs={"fill_value": "extrapolate"}
    )
    fx = up.values.transpose(0, 2, 3, 1).reshape(-1, 3)
    fy = big.values.transpose(0, 2, 3, 1).reshape(-1, 2)
    np.testing.assert_allclose(grown.cka.item(), _linear_cka(fx, fy), atol=1e-9)


def test_result_saves_to_netcdf_and_zarr(tmp_path):
    ds = dr.compare(NET_A, NET_B, metrics=["cka", "svcca"])
    ds.to_netcdf(tmp_path / "grid.nc")
    ds.to_zarr(tmp_path / "grid.zarr")
    back = xr.open_dataset(tmp_path / "grid.nc")
    xr.testing.assert_allclose(back.load(), ds)
    assert back.cka.attrs["description"].startswith("linear CKA")
    xr.testing.assert_allclose(xr.open_zarr(tmp_path / "grid.zarr").load(), ds)


def test_grid_too_wide_for_the_budget_is_split_into_passes(counting_store):
    """Within a small memory budget the grid takes several passes, says so, and gives the
    same numbers (intervals included); each pass reads each of its chunks once."""
    from conftest import write_zarr

    rng = np.random.default_rng(3)
    for i in range(4):
        write_zarr(counting_store, f"l{i}", rng.normal(size=(300, 20 + 5 * i)), chunks=(64, 7))
    group = zarr.open_group(counting_store, mode="r")
    full = dr.compare(group, metrics=["cka", "pwcca"], interval="jackknife", groups=5)
    assert full.attrs["n_passes"] == 1
    counting_store.reads.clear()
    # room for 80 of the 110 features (engine.memory's model of a pass with 5 groups)
    with dask.config.set({"repsim.memory-budget": memory.least_budget(80, groups=5)}):
        with pytest.warns(dr.RepsimWarning, match=r"110 features .* in \d+ passes"):
            split = dr.compare(group, metrics=["cka", "pwcca"], interval="jackknife", groups=5)
    assert split.attrs["n_passes"] > 1
    xr.testing.assert_allclose(split, full.assign_attrs(n_passes=split.attrs["n_passes"]))
    assert max(counting_store.chunk_reads().values()) <= split.attrs["n_passes"]
    with dask.config.set({"repsim.memory-budget": memory.least_budget(50)}):  # no pair fits
        with pytest.raises(ValueError, match="two layers together have"):
            dr.compare(group, metrics=["cka", "pwcca"])
        # CKA alone has exact paths that do not hold the co-moments: each pair takes one
        wide = dr.compare(group, metrics=["cka"])
    assert wide.attrs["method"] != "covariance"
    xr.testing.assert_allclose(wide.cka, full.cka)
