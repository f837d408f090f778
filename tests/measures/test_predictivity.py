"""Cross-validated ridge and PLS predictivity from the folds' co-moments, against the same
k-fold loop in memory (tests/references.py: np.linalg fits on the training rows, np.corrcoef
on the held-out fold, median over units, mean over folds), Golub's GCV written out with the
hat matrix, and scikit-learn's PLSRegression."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import references
import xarray as xr
import zarr

import dask_repsim as dr
from dask_repsim.io.inputs import as_layer
from dask_repsim.measures.predictivity import (
    PENALTIES,
    gcv_penalty,
    pls_coefficients,
    ridge_coefficients,
)
from dask_repsim.paths.covariance.folds import split
from dask_repsim.paths.covariance.passes import run_pass


def _data(kind: str, n: int, p: int, q: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x (n x p) and y (n x q), y a noisy nonlinear function of x."""
    rng = np.random.default_rng(seed)
    if kind == "lowrank":
        x = rng.normal(size=(n, 3)) @ rng.normal(size=(3, p))
    elif kind == "heavy":
        x = rng.standard_t(df=3, size=(n, p))
    elif kind == "relu_int":
        x = np.maximum(0.0, np.round(3 * rng.normal(size=(n, p)) + 1))
    else:
        x = rng.normal(size=(n, p)) * np.linspace(0.5, 2.0, p)
    y = np.tanh(x @ rng.normal(size=(p, q)) / np.sqrt(p)) + 0.5 * rng.normal(size=(n, q))
    if kind == "offset":
        x, y = x + 1e4, y - 1e4
    if kind == "relu_int":
        y = np.maximum(0.0, np.round(4 * y + 4))
    return x, y


KINDS = ["gaussian", "lowrank", "heavy", "offset", "relu_int"]
#: (n, p, folds): more samples than units, and fewer within each training set (40 < 70)
SHAPES = [(240, 10, 10), (50, 70, 5)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "p", "folds"), SHAPES)
@pytest.mark.parametrize("ridge", [None, 0.0, 1e-3])
def test_ridge_equals_the_kfold_loop_in_memory(kind, n, p, folds, ridge):
    x, y = _data(kind, n, p)
    value = dr.ridge_predictivity(x, y, folds=folds, ridge=ridge)
    expected = references.ridge_predictivity(x, y, folds, ridge)
    assert value == pytest.approx(expected, abs=1e-8)
    assert value.method == "covariance"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "p", "folds"), SHAPES)
@pytest.mark.parametrize("components", [None, 2])
def test_pls_equals_the_kfold_loop_in_memory(kind, n, p, folds, components):
    x, y = _data(kind, n, p)
    value = dr.pls_predictivity(x, y, folds=folds, components=components)
    expected = references.pls_predictivity(x, y, folds, components)
    assert value == pytest.approx(expected, abs=1e-8)


def _folds(x: np.ndarray, y: np.ndarray, folds: int):
    return split(run_pass([as_layer(x, name="x"), as_layer(y, name="y")], groups=folds), 0, 1,
                 folds)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "p", "folds"), SHAPES)
def test_gcv_chooses_golubs_argmin(kind, n, p, folds):
    """Each training set's penalty is the argmin over the same grid of Golub, Heath & Wahba's
    GCV computed from the hat matrix of the training rows, and the coefficients are those of
    the ridge fit with that penalty."""
    x, y = _data(kind, n, p)
    bounds = references.fold_bounds(n, folds)
    chosen = set()
    for g, (train, _) in enumerate(_folds(x, y, folds)):
        rows = np.r_[0:bounds[g], bounds[g + 1]:n]
        expected = references.golub_gcv(x[rows], y[rows], PENALTIES)
        assert gcv_penalty(train) == expected
        b, ridge = ridge_coefficients(train)
        assert ridge == expected
        want = references.ridge_fit(x[rows], y[rows], expected)[0]
        np.testing.assert_allclose(b, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())
        chosen.add(ridge)
    assert chosen < set(PENALTIES[1:-1])  # inside the grid, not at its ends


@pytest.mark.parametrize(("n", "p", "q", "components"),
                         [(240, 8, 4, 5), (240, 12, 1, 12), (50, 70, 5, 10)])
def test_pls_coefficients_equal_sklearn(n, p, q, components):
    """The co-moment NIPALS against scikit-learn's PLSRegression(scale=False) on the same
    training rows: coefficients and held-out predictions. Its power iteration stops when the
    weights' squared change is below ``tol``: 1e-14 leaves them about 1e-7 from the singular
    vector, so it is run to 1e-26."""
    from sklearn.cross_decomposition import PLSRegression

    x, y = _data("gaussian", n, p, q)
    bounds = references.fold_bounds(n, 5)
    for g, (train, _) in enumerate(_folds(x, y, 5)):
        test = np.zeros(n, bool)
        test[bounds[g]:bounds[g + 1]] = True
        b = pls_coefficients(train, components)
        model = PLSRegression(n_components=components, scale=False, tol=1e-26, max_iter=100000)
        model.fit(x[~test], y[~test] if q > 1 else y[~test, 0])
        coef = model.coef_.T.reshape(b.shape)
        assert np.abs(b - coef).max() <= 1e-8 * np.abs(coef).max()
        predicted = (x[test] - x[~test].mean(axis=0)) @ b + y[~test].mean(axis=0)
        theirs = model.predict(x[test]).reshape(predicted.shape)
        assert np.abs(predicted - theirs).max() <= 1e-8 * np.abs(theirs).max()


def test_a_zarr_store_and_compare_give_the_pairwise_values(tmp_path):
    """Chunks that do not line up with the folds, through compare (both directions: the
    measures are not symmetric) and compare_zoo."""
    x, y = _data("gaussian", 230, 9, 6, seed=3)
    root = zarr.open_group(str(tmp_path / "acts.zarr"), mode="w")
    for name, a in (("x", x), ("y", y)):
        root.create_array(name, shape=a.shape, chunks=(37, a.shape[1]), dtype="f8")[:] = a
    metrics = ["ridge_predictivity", "pls_predictivity"]
    ds = dr.compare(str(tmp_path / "acts.zarr"), metrics=metrics, folds=7, components=3)
    for a, b, xa, yb in (("x", "y", x, y), ("y", "x", y, x)):
        cell = ds.sel(layer_a=a, layer_b=b)
        assert float(cell.ridge_predictivity) == pytest.approx(
            references.ridge_predictivity(xa, yb, 7), abs=1e-8)
        assert float(cell.pls_predictivity) == pytest.approx(
            references.pls_predictivity(xa, yb, 7, 3), abs=1e-8)
    assert float(ds.ridge_predictivity.sel(layer_a="x", layer_b="y")) == float(
        dr.ridge_predictivity(root["x"], root["y"], folds=7))
    zoo = dr.compare_zoo({"net": {"x": x, "y": y}}, metrics=metrics, folds=7, components=3)
    np.testing.assert_allclose(zoo.pls_predictivity.values, ds.pls_predictivity.values,
                               rtol=0, atol=1e-12)


def test_omitted_samples_leave_the_folds_in_storage_order():
    """nan_policy="omit": each fold keeps its storage range and loses its samples with NaN."""
    x, y = _data("gaussian", 200, 6)
    x[[3, 4, 77, 150], 1] = np.nan
    y[[5, 120], 0] = np.inf
    bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
    bounds = references.fold_bounds(200, 8)
    fold = np.searchsorted(bounds, np.arange(200), side="right") - 1
    medians = []
    for g in range(8):
        train, test = (fold != g) & ~bad, (fold == g) & ~bad
        b, intercept = references.ridge_fit(x[train], y[train], 0.01)
        predicted = x[test] @ b + intercept
        medians.append(np.median([np.corrcoef(predicted[:, u], y[test, u])[0, 1]
                                  for u in range(y.shape[1])]))
    with pytest.warns(dr.RepsimWarning, match="left out 6 of 200 samples"):
        value = dr.ridge_predictivity(x, y, folds=8, ridge=0.01, nan_policy="omit")
    assert value == pytest.approx(np.mean(medians), abs=1e-10)
    # beside a third layer with NaN elsewhere, the pair keeps its samples (carried aside)
    z = np.random.default_rng(1).normal(size=(200, 3))
    z[[0, 60, 61, 199], 2] = np.nan
    with pytest.warns(dr.RepsimWarning, match="left out"):
        ds = dr.compare({"x": x, "z": z}, {"y": y}, metrics=["ridge_predictivity"], folds=8,
                        ridge=0.01, nan_policy="omit")
    assert float(ds.ridge_predictivity.sel(layer_a="x", layer_b="y")) == pytest.approx(
        np.mean(medians), abs=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_invariances(seed):
    """Rotating x, scaling it, or permuting and scaling y's units changes neither score (the
    ridge penalty is relative to x's total variance, so scale-free); rescaling one unit of x
    changes ridge's (it is not invariant to every linear map)."""
    x, y = _data("gaussian", 120, 6, 4, seed=seed)
    rotation = np.linalg.qr(np.random.default_rng(seed).normal(size=(6, 6)))[0]
    unit_scale = np.diag([1.0, 1.0, 1.0, 1.0, 1.0, 40.0])
    for function, option in ((dr.ridge_predictivity, {}), (dr.ridge_predictivity,
                              {"ridge": 0.05}), (dr.pls_predictivity, {"components": 3})):
        value = function(x, y, folds=6, **option)
        for xt, yt in ((x @ rotation, y), (7.5 * x - 2.0, y), (x, 3.0 * y[:, ::-1])):
            assert function(xt, yt, folds=6, **option) == pytest.approx(value, abs=1e-9)
    ridge = dr.ridge_predictivity(x, y, folds=6, ridge=0.05)
    assert abs(dr.ridge_predictivity(x @ unit_scale, y, folds=6, ridge=0.05) - ridge) > 1e-4


def test_exact_predictions_score_one_and_the_direction_matters():
    x, _ = _data("gaussian", 150, 6)
    assert dr.ridge_predictivity(x, x[:, :3] @ np.ones((3, 2)), ridge=0.0) == pytest.approx(1.0)
    narrow = x[:, :2]
    assert dr.pls_predictivity(x, narrow) == pytest.approx(1.0)
    assert dr.pls_predictivity(narrow, x) < 0.9


@pytest.mark.parametrize(("options", "message"), [
    ({"folds": 1}, "folds must be an int >= 2"),
    ({"folds": 2.0}, "folds must be an int >= 2"),
    ({"folds": 61}, "folds=61 is more than the 60 samples"),
    ({"folds": 25}, "folds=25 leaves 2 of the 60 samples in a held-out fold"),
    ({"ridge": -0.1}, "ridge must be a finite number >= 0"),
    ({"folds": 20, "interval": "jackknife", "groups": 40},
     "a held-out fold of 60 samples then keeps 1"),
    ({"method": "qr"}, "not available on that path"),
])
def test_errors(options, message):
    x, y = _data("gaussian", 60, 4)
    with pytest.raises(ValueError, match=message):
        dr.compare({"x": x}, {"y": y}, metrics=["ridge_predictivity"], **options)


def test_pls_component_errors():
    x, y = _data("lowrank", 80, 6)
    with pytest.raises(ValueError, match="components=7 is more than the 6 units"):
        dr.pls_predictivity(x, y, components=7)
    with pytest.raises(ValueError, match=r"components=4: after 3 PLS components of x's "
                       "training activations no direction with variance is left"):
        dr.pls_predictivity(x, y, components=4)
    with pytest.raises(ValueError, match="components= applies to the metric"):
        dr.compare({"x": x}, {"y": y}, metrics=["ridge_predictivity"], components=2)


def test_a_fold_left_with_too_few_samples_is_an_error():
    x, y = _data("gaussian", 60, 4)
    x[:5, 0] = np.nan  # the first of 10 folds keeps 1 sample
    with pytest.raises(ValueError, match="held-out fold 1 of 10 has 1 samples with finite"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", dr.RepsimWarning)
        dr.ridge_predictivity(x, y, nan_policy="omit")


def test_a_unit_constant_over_a_fold_is_left_out_with_a_warning():
    x, y = _data("gaussian", 100, 4)
    y[:10, 2] = 0.5  # constant over the first fold
    bounds = references.fold_bounds(100, 10)
    medians = []
    for g in range(10):
        test = np.zeros(100, bool)
        test[bounds[g]:bounds[g + 1]] = True
        b, intercept = references.ridge_fit(x[~test], y[~test], 0.01)
        predicted = x[test] @ b + intercept
        units = [u for u in range(5) if g or u != 2]
        medians.append(np.median([np.corrcoef(predicted[:, u], y[test, u])[0, 1]
                                  for u in units]))
    with pytest.warns(dr.RepsimWarning, match="1 .unit, fold. pairs of y have no correlation"):
        value = dr.ridge_predictivity(x, y, ridge=0.01)
    assert value == pytest.approx(np.mean(medians), abs=1e-10)


def test_the_command_line_takes_folds_ridge_and_components(tmp_path):
    from dask_repsim import cli

    x, y = _data("gaussian", 90, 5, seed=4)
    store = tmp_path / "acts.zarr"
    layers = {"x": (("sample", "u"), x), "y": (("sample", "v"), y)}
    xr.Dataset(layers).to_zarr(store, consolidated=False)
    out = tmp_path / "scores.nc"
    assert cli.main(["compare", str(store), "-m", "ridge_predictivity", "-m",
                     "pls_predictivity", "--folds", "6", "--ridge", "0.01", "--components",
                     "2", "--out", str(out)]) == 0
    ds = xr.load_dataset(out)
    assert float(ds.ridge_predictivity.sel(layer_a="x", layer_b="y")) == pytest.approx(
        references.ridge_predictivity(x, y, 6, 0.01), abs=1e-8)
    assert float(ds.pls_predictivity.sel(layer_a="y", layer_b="x")) == pytest.approx(
        references.pls_predictivity(y, x, 6, 2), abs=1e-8)
