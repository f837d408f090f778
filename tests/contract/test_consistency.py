"""A cell's value, its NaN omission and its permutation null depend only on its two layers:
not on the memory budget (how many passes a grid takes) nor on the other layers in the grid."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import references as ref

import dask_repsim as dr
from dask_repsim.engine import memory

N = 600
METRICS = ["cka", "cka_debiased", "mean_cca", "svcca", "linear_regression"]


def _layers():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N, 6))
    y = x[:, :4] @ rng.normal(size=(4, 5)) + rng.normal(size=(N, 5))
    z = rng.normal(size=(N, 20))
    return x, y, z


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dr.RepsimWarning)
        return call()


def test_omitted_samples_of_a_cell_depend_on_its_layers_only():
    x, y, z = _layers()
    x[[5, 17, 300], 1] = np.nan
    y[[17, 420], 0] = np.inf
    z[[40, 41, 42, 500], 3] = np.nan  # unrelated to the (x, y) cell
    w = np.sin(z) + 0.1 * y[:, :1]
    w[[7, 8], 0] = np.inf
    dx, dy, dz = da.from_array(x, chunks=70), da.from_array(y, chunks=130), da.from_array(z, 90)
    dw = da.from_array(w, chunks=110)
    alone = _quiet(lambda: dr.compare({"x": dx}, {"y": dy}, metrics=METRICS,
                                      nan_policy="omit"))
    grid = _quiet(lambda: dr.compare({"x": dx, "z": dz}, {"y": dy, "w": dw}, metrics=METRICS,
                                     nan_policy="omit"))
    # room for 45 of the 51 features (engine.memory's model of a pass), not all at once
    with dask.config.set({"repsim.memory-budget": memory.least_budget(45, aside=True)}):
        split = _quiet(lambda: dr.compare({"x": dx, "z": dz}, {"y": dy, "w": dw},
                                          metrics=METRICS, nan_policy="omit"))
    assert split.attrs["n_passes"] > 1
    finite = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    for metric in METRICS:
        expected = ref.METRICS[metric](x[finite], y[finite])
        for ds in (alone, grid, split):
            assert float(ds[metric].sel(layer_a="x", layer_b="y")) == pytest.approx(
                expected, abs=1e-10)
    assert int(grid.n_samples_used.sel(layer_a="x", layer_b="y")) == finite.sum() == N - 4
    both = np.isfinite(z).all(axis=1) & np.isfinite(w).all(axis=1)
    assert int(split.n_samples_used.sel(layer_a="z", layer_b="w")) == both.sum() == N - 8
    assert float(split.cka.sel(layer_a="z", layer_b="w")) == pytest.approx(
        ref.linear_cka(z[both], w[both]), abs=1e-10)
    pairwise = _quiet(lambda: dr.cka(dx, dy, nan_policy="omit"))
    assert float(pairwise) == pytest.approx(ref.linear_cka(x[finite], y[finite]), abs=1e-12)


def test_permutation_null_of_a_cell_depends_on_its_layers_and_seed_only():
    x, y, z = _layers()
    x, y, z = x[:, :3], y[:, :2], z[:, :12]
    dx, dy, dz = da.from_array(x, chunks=64), da.from_array(y, chunks=256), da.from_array(z, 97)
    alone = dr.cka(dx, dy, permutations=3, seed=1)
    rechunked = dr.cka(da.from_array(x, chunks=150), da.from_array(y, chunks=33),
                       permutations=3, seed=1)
    np.testing.assert_allclose(rechunked.null, alone.null, atol=1e-12)
    kw = {"metrics": ["cka"], "permutations": 3, "seed": 1}
    grid = dr.compare({"x": dx, "z": dz}, {"y": dy}, **kw)
    # 17 features; the widest pair (z, y) has 14: room for 15 with the permutation blocks of
    # a null splits the grid in two passes
    room = {"repsim.memory-budget": memory.least_budget(15, permutations=3)}
    with dask.config.set(room), pytest.warns(dr.RepsimWarning, match="passes over the data"):
        split = dr.compare({"x": dx, "z": dz}, {"y": dy}, **kw)
    assert split.attrs["n_passes"] > 1 and grid.attrs["n_passes"] == 1
    for ds in (grid, split):
        cell = ds.sel(layer_a="x", layer_b="y")
        assert float(cell.cka_null_mean) == pytest.approx(alone.null_mean, abs=1e-12)
        assert float(cell.cka_null_std) == pytest.approx(alone.null_std, abs=1e-12)
        assert float(cell.cka_pvalue) == alone.pvalue
    assert dr.cka(dx, dy, permutations=3, seed=2).null_mean != pytest.approx(alone.null_mean)
