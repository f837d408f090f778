"""The layout options of ``compare`` and ``compare_zoo``: what ``resize``, ``pool`` and
``spatial_dims`` act on, the errors where they would not act, and the attrs that record them.

``resize=True`` interpolates spatial grids folded into samples; ``pool="mean"`` averages spatial
dims that are features; ``spatial_dims`` names the dims of either and nothing else. Values are
checked against float64 numpy written here: linear CKA
``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` (Kornblith et al. 2019) of the activations
folded, flattened or mean-pooled in numpy, and linear interpolation on pixel centres written
from its definition.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import write_zarr

import dask_repsim as dr
from dask_repsim import cli

N = 60
DIMS = ("sample", "channel", "height", "width")
FOLD = ("sample", "height", "width")
LAYOUT = ("sample_dims", "pool", "resize", "spatial_dims")
RNG = np.random.default_rng(11)
SIGNAL = RNG.normal(size=(N, 4))
#: a 4 x 4 conv layer and a 2 x 2 one that shares part of its signal; a third 4 x 4 layer
BIG = RNG.normal(size=(N, 3, 4, 4)) + SIGNAL[:, :3, None, None]
SMALL = RNG.normal(size=(N, 2, 2, 2)) + SIGNAL[:, 1:3, None, None] ** 2
OTHER = np.tanh(BIG[:, ::-1] + 0.5 * RNG.normal(size=BIG.shape))


def conv(values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(values, dims=DIMS)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(axis=0)
    y = y.reshape(len(y), -1) - y.reshape(len(y), -1).mean(axis=0)
    return float(np.linalg.norm(x.T @ y) ** 2
                 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def upsample(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``a`` along ``axis`` at ``size`` pixel centres ``(j + 0.5) / size``: the straight line
    through the two nearest of its own centres ``(i + 0.5) / n`` (beyond the outer ones, the
    line through the outer two)."""
    n = a.shape[axis]
    out = []
    for j in range(size):
        t = (j + 0.5) / size
        i = min(max(int(np.floor(t * n - 0.5)), 0), n - 2)
        w = t * n - 0.5 - i  # (t - centre_i) / spacing
        out.append((1 - w) * np.take(a, i, axis) + w * np.take(a, i + 1, axis))
    return np.stack(out, axis=axis)


def folded(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N H W, C): every position a sample of C channel features."""
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


def layout(ds: xr.Dataset) -> dict:
    return {k: ds.attrs[k] for k in LAYOUT}


def test_resize_grows_folded_grids_and_is_recorded(tmp_path):
    grid = dr.compare({"big": conv(BIG)}, {"small": conv(SMALL)}, metrics=["cka"],
                      sample_dims=FOLD, resize=True)
    want = linear_cka(folded(BIG), folded(upsample(upsample(SMALL, 2, 4), 3, 4)))
    assert grid.attrs["n_samples"] == N * 16
    assert grid.cka.item() == pytest.approx(want, rel=1e-10)
    assert layout(grid) == {"sample_dims": "sample, height, width", "pool": "none",
                            "resize": 1, "spatial_dims": "height, width"}
    grid.to_netcdf(tmp_path / "grid.nc")
    with xr.open_dataset(tmp_path / "grid.nc") as back:
        assert layout(back) == layout(grid)
    # height alone folded and resized: width stays a feature, at each layer's own size
    rows = dr.compare({"big": conv(BIG)}, {"small": conv(SMALL)}, metrics=["cka"],
                      sample_dims=("sample", "height"), resize=True, spatial_dims="height")

    def by_row(a: np.ndarray) -> np.ndarray:  # (N, C, H, W) -> (N H, C W)
        return a.transpose(0, 2, 1, 3).reshape(-1, a.shape[1] * a.shape[3])

    assert rows.cka.item() == pytest.approx(
        linear_cka(by_row(BIG), by_row(upsample(SMALL, 2, 4))), rel=1e-10)
    assert layout(rows) == {"sample_dims": "sample, height", "pool": "none", "resize": 1,
                            "spatial_dims": "height"}


def test_resize_of_flattened_layers_is_an_error():
    a, b = {"big": conv(BIG)}, {"small": conv(SMALL)}
    with pytest.raises(ValueError, match=r"resize=True interpolates spatial grids folded into "
                       r"samples .*; big of a has \('height', 'width'\) as features"):
        dr.compare(a, b, metrics=["cka"], resize=True)
    # a grid folded by height alone would still resize its flattened width
    with pytest.raises(ValueError, match=r"big of a has \('width',\) as features"):
        dr.compare(a, b, metrics=["cka"], sample_dims=("sample", "height"), resize=True)
    with pytest.raises(ValueError, match="pool='mean' and resize=True do not go together"):
        dr.compare(a, b, metrics=["cka"], pool="mean", resize=True)
    with pytest.raises(ValueError, match="resize=True interpolates spatial grids folded"):
        dr.compare_zoo({"n1": a, "n2": b}, metrics=["cka"], resize=True)
    flat = dr.compare(a, b, metrics=["cka"])  # what comparing them flattened gives
    assert flat.cka.item() == pytest.approx(
        linear_cka(BIG.reshape(N, -1), SMALL.reshape(N, -1)), rel=1e-10)
    assert layout(flat) == {"sample_dims": "none", "pool": "none", "resize": 0,
                            "spatial_dims": "none"}


def test_spatial_dims_needs_pool_or_resize():
    a, b = {"big": conv(BIG)}, {"other": conv(OTHER)}
    message = (r"spatial_dims \('height',\) applies only with pool='mean' .* or resize=True "
               r".*neither is given")
    with pytest.raises(ValueError, match=message):
        dr.compare(a, b, metrics=["cka"], spatial_dims=("height",))
    with pytest.raises(ValueError, match=message):
        dr.compare_zoo({"n1": a, "n2": b}, metrics=["cka"], spatial_dims="height")
    # with pool, the same spatial_dims averages the height away and keeps the width
    pooled = dr.compare(a, b, metrics=["cka"], pool="mean", spatial_dims=("height",))
    assert pooled.cka.item() == pytest.approx(
        linear_cka(BIG.mean(axis=2), OTHER.mean(axis=2)), rel=1e-10)
    assert layout(pooled) == {"sample_dims": "none", "pool": "mean", "resize": 0,
                              "spatial_dims": "height"}


def test_pool_records_its_dims_and_refuses_folded_ones():
    a, b = {"big": conv(BIG)}, {"small": conv(SMALL)}
    # folded positions are samples: pooling would leave them as they are
    with pytest.raises(ValueError, match=r"pool='mean' averages the spatial_dims that are "
                       r"features away; big of a has \('height', 'width'\) folded into samples"):
        dr.compare(a, {"again": conv(OTHER)}, metrics=["cka"], sample_dims=FOLD, pool="mean")
    pooled = dr.compare(a, b, metrics=["cka"], pool="mean", sample_dims="sample")
    assert pooled.cka.item() == pytest.approx(
        linear_cka(BIG.mean(axis=(2, 3)), SMALL.mean(axis=(2, 3))), rel=1e-10)
    assert layout(pooled) == {"sample_dims": "sample", "pool": "mean", "resize": 0,
                              "spatial_dims": "height, width"}


def test_compare_zoo_records_the_layout():
    zoo = {"n1": {"conv": conv(BIG)}, "n2": {"conv": conv(SMALL)}}
    ds = dr.compare_zoo(zoo, metrics=["cka"], sample_dims=FOLD, resize=True)
    want = linear_cka(folded(BIG), folded(upsample(upsample(SMALL, 2, 4), 3, 4)))
    assert float(ds.cka.sel(a="n1/conv", b="n2/conv")) == pytest.approx(want, rel=1e-10)
    assert layout(ds) == {"sample_dims": "sample, height, width", "pool": "none",
                          "resize": 1, "spatial_dims": "height, width"}
    pooled = dr.compare_zoo(zoo, {"n3": {"conv": conv(OTHER)}}, metrics=["cka"], pool="mean")
    assert float(pooled.cka.sel(a="n2/conv", b="n3/conv")) == pytest.approx(
        linear_cka(SMALL.mean(axis=(2, 3)), OTHER.mean(axis=(2, 3))), rel=1e-10)
    assert layout(pooled) == {"sample_dims": "none", "pool": "mean", "resize": 0,
                              "spatial_dims": "height, width"}


def test_grow_zoo_keeps_the_zoos_layout(tmp_path):
    zoo = {"n1": {"conv": conv(BIG)}, "n2": {"conv": conv(SMALL)}}
    ds = dr.compare_zoo(zoo, metrics=["cka"], pool="mean", gram_store=tmp_path / "grams.zarr")
    new = {"n3": {"conv": conv(OTHER)}}
    with pytest.raises(ValueError, match=r"compared with the layout sample_dims='none', "
                       r"pool='mean', resize=0, spatial_dims='height, width' and is grown "
                       r"with sample_dims='none', pool='none'"):
        dr.grow_zoo(ds, new)
    grown = dr.grow_zoo(ds, new, pool="mean")
    assert float(grown.cka.sel(a="n1/conv", b="n3/conv")) == pytest.approx(
        linear_cka(BIG.mean(axis=(2, 3)), OTHER.mean(axis=(2, 3))), rel=1e-10)
    assert layout(grown) == layout(ds)


def test_cli_writes_the_layout_to_netcdf(tmp_path, capsys):
    for net, values in (("a", BIG), ("b", OTHER)):
        write_zarr(tmp_path / f"{net}.zarr", "conv", values, (20, 3, 4, 4), DIMS)
    a, b, out = str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), tmp_path / "sim.nc"
    code = cli.main(["compare", a, b, "-m", "cka", "--pool", "mean", "--spatial-dims", "width",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with xr.open_dataset(out) as ds:
        assert float(ds.cka.sel(layer_a="conv", layer_b="conv")) == pytest.approx(
            linear_cka(BIG.mean(axis=3), OTHER.mean(axis=3)), rel=1e-10)
        assert layout(ds) == {"sample_dims": "none", "pool": "mean", "resize": 0,
                              "spatial_dims": "width"}
    capsys.readouterr()
    assert cli.main(["compare", a, b, "-m", "cka", "--spatial-dims", "width"]) == 1
    assert "spatial_dims ('width',) applies only with --pool mean" in capsys.readouterr().err
