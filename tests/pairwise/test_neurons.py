"""Neuron alignment (Li et al. 2016) from one statistics pass, against in-memory references:
np.corrcoef, scipy's linear_sum_assignment, brute force, scikit-learn's Lasso and
adjusted_rand_score on the full data."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import CountingStore, write_zarr
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import Lasso
from sklearn.metrics import adjusted_rand_score

import dask_repsim
from dask_repsim.engine.moments import Statistics
from dask_repsim.engine.stream import comoments
from dask_repsim.engine.views import pair, sides
from dask_repsim.io.inputs import as_layer
from dask_repsim.pairwise.units import (
    cluster_units,
    match_units,
    matched_correlation,
    sparse_prediction,
    unit_correlation,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "convergent_learning.py"


def _layers(n: int, p: int, q: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two layers driven by shared latent factors, with large means (as ReLU layers have)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    x = latent @ rng.normal(size=(4, p)) + rng.normal(size=(n, p)) + 50.0
    y = latent @ rng.normal(size=(4, q)) + 0.7 * rng.normal(size=(n, q)) - 20.0
    return x, y


def _zarr_pair(path, x: np.ndarray, y: np.ndarray, rows: tuple[int, int]):
    """x and y as chunked Zarr arrays with different row chunks."""
    return (
        write_zarr(path, "x", x, chunks=(rows[0], x.shape[1])),
        write_zarr(path, "y", y, chunks=(rows[1], y.shape[1])),
    )


def _corrcoef(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.corrcoef(x.T, y.T)[: x.shape[1], x.shape[1] :]


def _standardise(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(axis=0)) / a.std(axis=0)  # population standard deviation (ddof=0)


# --- unit_correlation -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "zarr", "zarr_path"])
def test_unit_correlation_equals_corrcoef(tmp_path, kind):
    x, y = _layers(700, 7, 5)
    if kind == "numpy":
        a, b = x, y
    else:
        a, b = _zarr_pair(tmp_path / "acts.zarr", x, y, rows=(64, 100))
        if kind == "zarr_path":
            a, b = str(tmp_path / "acts.zarr" / "x"), str(tmp_path / "acts.zarr" / "y")
    corr = unit_correlation(a, b)
    assert corr.dims == ("unit_a", "unit_b")
    assert corr.shape == (7, 5)
    np.testing.assert_array_equal(corr.unit_a, np.arange(7))
    np.testing.assert_array_equal(corr.unit_b, np.arange(5))
    np.testing.assert_allclose(corr.values, _corrcoef(x, y), rtol=0, atol=1e-10)
    assert corr.attrs["n_samples"] == 700


def test_unit_correlation_float32_store_accumulates_in_float64(tmp_path):
    x, y = _layers(500, 4, 3, seed=3)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    a, b = _zarr_pair(tmp_path / "f32.zarr", x32, y32, rows=(70, 70))
    ref = _corrcoef(x32.astype(np.float64), y32.astype(np.float64))
    np.testing.assert_allclose(unit_correlation(a, b).values, ref, rtol=0, atol=1e-10)


def test_unit_coordinates_from_dataarrays():
    x, y = _layers(300, 3, 4, seed=1)
    xa = xr.DataArray(x, dims=("sample", "neuron"), coords={"neuron": ["n0", "n1", "n2"]})
    ya = xr.DataArray(y, dims=("sample", "channel"), coords={"channel": [10, 20, 30, 40]})
    corr = unit_correlation(xa, ya)
    assert corr.unit_a.values.tolist() == ["n0", "n1", "n2"]
    assert corr.unit_b.values.tolist() == [10, 20, 30, 40]
    np.testing.assert_allclose(
        corr.sel(unit_a="n2", unit_b=30).item(), np.corrcoef(x[:, 2], y[:, 2])[0, 1], atol=1e-10
    )
    # two feature dims, or one without a coordinate: positions
    conv = xr.DataArray(y.reshape(300, 2, 2), dims=("sample", "h", "w"), coords={"h": [5, 6]})
    bare = xr.DataArray(x, dims=("sample", "unit"))
    corr = unit_correlation(bare, conv)
    assert corr.unit_a.values.tolist() == [0, 1, 2]
    assert corr.unit_b.values.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(corr.values, _corrcoef(x, y), atol=1e-10)


def test_conv_positions_folded_into_samples():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3, 3, 5))  # sample, height, width, channel
    y = np.maximum(x[..., ::-1] + 0.5 * rng.normal(size=x.shape), 0)
    dims = ("sample", "height", "width", "channel")
    xa = xr.DataArray(x, dims=dims, coords={"channel": list("abcde")})
    ya = xr.DataArray(y, dims=dims)
    corr = unit_correlation(xa, ya, sample_dims=("sample", "height", "width"))
    assert corr.unit_a.values.tolist() == list("abcde")
    ref = _corrcoef(x.reshape(-1, 5), y.reshape(-1, 5))
    np.testing.assert_allclose(corr.values, ref, rtol=0, atol=1e-10)
    assert corr.attrs["n_samples"] == 40 * 9


def test_constant_units_warn_and_get_zero():
    x, y = _layers(400, 5, 4, seed=4)
    # a dead unit with a non-zero output, constant up to rounding-sized jitter
    x[:, 1] = 3.0 + 1e-12 * np.random.default_rng(0).normal(size=400)
    y[:, 3] = 0.0
    with pytest.warns(dask_repsim.RepsimWarning) as record:
        corr = unit_correlation(x, y).values
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert messages[0].startswith("x: 1 of 5 units are constant")
    assert messages[1].startswith("y: 1 of 4 units are constant")
    assert not np.isnan(corr).any()
    np.testing.assert_array_equal(corr[1], 0.0)
    np.testing.assert_array_equal(corr[:, 3], 0.0)
    live_x, live_y = [0, 2, 3, 4], [0, 1, 2]
    np.testing.assert_allclose(
        corr[np.ix_(live_x, live_y)], _corrcoef(x[:, live_x], y[:, live_y]), atol=1e-10
    )


def test_nan_policy_omit_matches_corrcoef_on_finite_rows():
    x, y = _layers(300, 3, 3, seed=5)
    x[[7, 100], 1] = np.nan
    y[200, 0] = np.inf
    with pytest.raises(ValueError, match="NaN at sample 7"):
        unit_correlation(x, y)
    keep = np.ones(300, dtype=bool)
    keep[[7, 100, 200]] = False
    with pytest.warns(dask_repsim.RepsimWarning, match="left out 3 of 300 samples"):
        corr = unit_correlation(x, y, nan_policy="omit")
    np.testing.assert_allclose(corr.values, _corrcoef(x[keep], y[keep]), atol=1e-10)
    assert corr.attrs["n_samples"] == 297


# --- labelled samples: paired by label, as by every function ----------------------------------


def _labelled_pair(n: int, p: int, q: int, seed: int):
    """x and y as DataArrays over the same labelled samples, y's stored in another order; and
    x and y's rows in x's order (the explicit alignment the references use)."""
    x, y = _layers(n, p, q, seed=seed)
    ids = np.array([f"img{i:04d}" for i in range(n)])
    order = np.random.default_rng(seed).permutation(n)
    xa = xr.DataArray(x, dims=("sample", "unit"), coords={"sample": ids})
    ya = xr.DataArray(y[order], dims=("sample", "unit"), coords={"sample": ids[order]})
    aligned = ya.sel(sample=xa.sample).values  # explicitly, by label
    np.testing.assert_array_equal(aligned, y)
    return xa, ya, x, aligned


def test_unit_functions_pair_labelled_samples_by_label():
    """The same samples in another order gave cka 1.0 and compare's matched_correlation 1.0,
    but match_units correlations near 0: now every unit function equals numpy on the
    explicitly aligned data."""
    xa, ya, x, y = _labelled_pair(500, 5, 5, seed=31)
    shuffled = xa.sel(sample=ya.sample)  # x itself, its samples in y's order
    assert float(dask_repsim.cka(xa, shuffled)) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(match_units(xa, shuffled).correlation.values, 1.0, atol=1e-12)
    ref = _corrcoef(x, y)
    np.testing.assert_allclose(unit_correlation(xa, ya).values, ref, atol=1e-10)
    m = match_units(xa, ya)
    rows, cols = linear_sum_assignment(ref, maximize=True)
    assert set(zip(m.unit_a.values.tolist(), m.unit_b.values.tolist(), strict=True)) == set(
        zip(rows.tolist(), cols.tolist(), strict=True))
    np.testing.assert_allclose(np.sort(m.correlation.values), np.sort(ref[rows, cols]),
                               atol=1e-10)
    grid = dask_repsim.compare({"x": xa}, {"y": ya}, metrics=["matched_correlation"])
    assert m.correlation.mean().item() == pytest.approx(grid.matched_correlation.item(),
                                                        abs=1e-12)
    xs, ys = _standardise(x), _standardise(y)
    least_squares = np.linalg.lstsq(xs, ys, rcond=None)[0]
    table = sparse_prediction(xa, ya, alphas=[0.0])
    np.testing.assert_allclose(table.weights.sel(alpha=0.0).values, least_squares, atol=1e-8)
    assert table.loss.item() == pytest.approx(
        np.sum((ys - xs @ least_squares) ** 2) / ys.size, abs=1e-10)
    clusters, expected = cluster_units(xa, ya, n_clusters=2), cluster_units(x, y, n_clusters=2)
    for name in ("labels_a", "labels_b"):
        np.testing.assert_array_equal(clusters[name].values, expected[name].values)


def test_unit_functions_take_join():
    xa, ya, x, y = _labelled_pair(400, 4, 3, seed=32)
    short = ya.isel(sample=slice(10, None))  # y lacks 10 of x's samples
    keep = np.isin(xa.sample.values, short.sample.values)
    with pytest.raises(ValueError, match="x and y hold different samples.*join='inner'"):
        unit_correlation(xa, short)
    corr = unit_correlation(xa, short, join="inner")
    assert corr.attrs["n_samples"] == 390
    ref = _corrcoef(x[keep], y[keep])
    np.testing.assert_allclose(corr.values, ref, atol=1e-10)
    rows, cols = linear_sum_assignment(ref, maximize=True)
    matched = match_units(xa, short, join="inner").correlation.sum().item()
    assert matched == pytest.approx(ref[rows, cols].sum(), abs=1e-10)
    with pytest.raises(ValueError, match="join must be one of"):
        match_units(xa, ya, join="outer")


# --- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bipartite", "semi"])
def test_planted_permutation_is_recovered(tmp_path, method):
    rng = np.random.default_rng(6)
    n, p = 1500, 12
    x = np.maximum(rng.normal(size=(n, p)) + 0.3 * rng.normal(size=(n, 1)), 0)  # ReLU units
    perm = rng.permutation(p)  # y's unit j is x's unit perm[j], rescaled and noisy
    scale = rng.uniform(0.5, 3.0, size=p)
    y = x[:, perm] * scale + 0.3 * rng.normal(size=(n, p)) + 1.0
    a, b = _zarr_pair(tmp_path / "perm.zarr", x, y, rows=(128, 200))
    m = match_units(a, b, method=method)
    assert m.sizes["pair"] == p
    assert m.attrs["method"] == method
    assert dict(zip(m.unit_a.values.tolist(), m.unit_b.values.tolist(), strict=True)) == {
        int(perm[j]): j for j in range(p)
    }
    ref = _corrcoef(x, y)[m.unit_a.values, m.unit_b.values]
    np.testing.assert_allclose(m.correlation.values, ref, atol=1e-10)
    assert (np.diff(m.correlation.values) <= 0).all()  # strongest first


@pytest.mark.parametrize(("p", "q"), [(6, 9), (9, 4)])
def test_bipartite_equals_scipy_assignment_on_corrcoef(tmp_path, p, q):
    x, y = _layers(800, p, q, seed=p * q)
    a, b = _zarr_pair(tmp_path / "pq.zarr", x, y, rows=(90, 64))
    m = match_units(a, b, method="bipartite")
    ref = _corrcoef(x, y)
    rows, cols = linear_sum_assignment(ref, maximize=True)
    assert m.sizes["pair"] == min(p, q)
    assert set(zip(m.unit_a.values.tolist(), m.unit_b.values.tolist(), strict=True)) == set(
        zip(rows.tolist(), cols.tolist(), strict=True)
    )
    np.testing.assert_allclose(m.correlation.sum(), ref[rows, cols].sum(), atol=1e-10)
    assert len(set(m.unit_a.values.tolist())) == len(set(m.unit_b.values.tolist())) == min(p, q)


def test_bipartite_equals_brute_force_on_tiny_case():
    x, y = _layers(300, 3, 5, seed=11)
    ref = _corrcoef(x, y)
    best = max(
        itertools.permutations(range(5), 3),
        key=lambda cols: sum(ref[i, c] for i, c in enumerate(cols)),
    )
    m = match_units(x, y, method="bipartite")
    got = dict(zip(m.unit_a.values.tolist(), m.unit_b.values.tolist(), strict=True))
    assert got == dict(enumerate(best))


def test_semi_matching_is_rowwise_argmax_and_may_repeat():
    rng = np.random.default_rng(12)
    f = rng.normal(size=(600, 3))
    x = f[:, [0, 0, 1, 2, 2]] + 0.5 * rng.normal(size=(600, 5))
    y = f + 0.2 * rng.normal(size=(600, 3))
    m = match_units(x, y, method="semi")
    ref = _corrcoef(x, y)
    got = dict(zip(m.unit_a.values.tolist(), m.unit_b.values.tolist(), strict=True))
    assert got == {i: int(np.argmax(ref[i])) for i in range(5)}
    assert got[0] == got[1] == 0 and got[3] == got[4] == 2  # shared targets, unlike bipartite
    np.testing.assert_allclose(np.sort(m.correlation.values), np.sort(ref.max(axis=1)), atol=1e-10)


def test_matching_uses_signed_correlation():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(500, 2))
    y = np.column_stack([-x[:, 0], 0.5 * x[:, 0] + rng.normal(size=500)])
    m = match_units(x, y, method="semi")
    # unit 0 of x: -1 with y0, about +0.45 with y1; signed correlation prefers y1
    assert dict(zip(m.unit_a.values.tolist(), m.unit_b.values.tolist(), strict=True))[0] == 1


def test_matching_leaves_constant_units_out():
    x, y = _layers(400, 5, 5, seed=14)
    x[:, 2] = 0.0
    with pytest.warns(dask_repsim.RepsimWarning, match="left out of the matching"):
        m = match_units(x, y, method="bipartite")
    assert 2 not in m.unit_a.values.tolist()
    live = [0, 1, 3, 4]
    ref = _corrcoef(x[:, live], y)
    rows, cols = linear_sum_assignment(ref, maximize=True)
    np.testing.assert_allclose(m.correlation.sum(), ref[rows, cols].sum(), atol=1e-10)


def test_matched_correlation_of_a_pair():
    x, y = _layers(500, 6, 8, seed=15)
    stats = comoments([as_layer(x, name="x"), as_layer(y, name="y")])
    value = matched_correlation(pair(stats, sides(stats, ["x", "y"]), 0, 1))
    ref = _corrcoef(x, y)
    rows, cols = linear_sum_assignment(ref, maximize=True)
    assert isinstance(value, float)
    assert value == pytest.approx(ref[rows, cols].mean(), abs=1e-10)


def test_bad_method():
    x, y = _layers(50, 2, 2)
    with pytest.raises(ValueError, match="'bipartite' or 'semi'"):
        match_units(x, y, method="greedy")


# --- sparse prediction ------------------------------------------------------------------------


def _sklearn_lasso(xs: np.ndarray, ys: np.ndarray, alpha: float) -> np.ndarray:
    """p x q weights of scikit-learn's Lasso fitted on all samples, one target at a time."""
    model = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200_000)
    return np.column_stack([model.fit(xs, ys[:, j]).coef_ for j in range(ys.shape[1])])


def test_sparse_prediction_equals_sklearn_lasso_on_full_data(tmp_path):
    x, y = _layers(2000, 8, 3, seed=16)
    a, b = _zarr_pair(tmp_path / "lasso.zarr", x, y, rows=(300, 256))
    alphas = [1e-3, 1e-2, 0.1]
    table = sparse_prediction(a, b, alphas=alphas, tol=1e-12, max_iter=200_000)
    assert table.weights.dims == ("alpha", "unit_a", "unit_b")
    assert table.weights.shape == (3, 8, 3)
    np.testing.assert_array_equal(table.alpha, alphas)
    xs, ys = _standardise(x), _standardise(y)
    for k, alpha in enumerate(alphas):
        w = _sklearn_lasso(xs, ys, alpha)
        np.testing.assert_allclose(table.weights.values[k], w, rtol=0, atol=1e-4)
        loss = np.mean((ys - xs @ w) ** 2)
        assert table.loss.values[k] == pytest.approx(loss, abs=1e-4)
        # the loss reported is exact for the weights reported, to rounding
        w_ours = table.weights.values[k]
        assert table.loss.values[k] == pytest.approx(np.mean((ys - xs @ w_ours) ** 2), abs=1e-10)
        np.testing.assert_array_equal(table.nonzero.values[k], (w != 0).sum(axis=0))
    assert (np.diff(table.nonzero.sum("unit_b").values) <= 0).all()  # sparser as alpha grows
    assert table.loss.values[2] > table.loss.values[0]


def test_sparse_prediction_alpha_zero_is_least_squares():
    x, y = _layers(1000, 6, 4, seed=17)
    table = sparse_prediction(x, y, alphas=[0.0])
    xs, ys = _standardise(x), _standardise(y)
    w, *_ = np.linalg.lstsq(xs, ys, rcond=None)
    np.testing.assert_allclose(table.weights.values[0], w, atol=1e-8)
    # loss = 1 - R^2 of each standardised unit, averaged
    assert table.loss.item() == pytest.approx(np.mean((ys - xs @ w) ** 2), abs=1e-10)
    assert table.nonzero.values[0].tolist() == [6, 6, 6, 6]


def test_sparse_prediction_rank_deficient_x():
    rng = np.random.default_rng(18)
    n = 1500
    base = rng.normal(size=(n, 4))
    # unit 1 duplicates unit 0 (rescaled: identical once standardised), unit 4 is dead
    x = np.column_stack([base[:, 0], 2 * base[:, 0] + 1, base[:, 1:], np.full(n, 0.5)])
    y = base @ rng.normal(size=(4, 3)) + 0.5 * rng.normal(size=(n, 3))
    y = np.column_stack([y, np.full(n, 7.0)])  # a dead target
    alphas = [1e-3, 1e-2, 0.1]
    with pytest.warns(dask_repsim.RepsimWarning, match="constant") as record:
        table = sparse_prediction(x, y, alphas=alphas, tol=1e-12, max_iter=200_000)
    messages = " ".join(str(w.message) for w in record)
    assert "weight 0 as predictors" in messages and "left out as targets" in messages
    assert table.unit_b.values.tolist() == [0, 1, 2]  # the dead target is left out
    np.testing.assert_array_equal(table.weights.sel(unit_a=5), 0.0)
    # Reference: scikit-learn on the full standardised data without the dead units. Weights on
    # the duplicated pair are not unique (only their sum is), so compare objective and sums.
    xs, ys = _standardise(x[:, :5]), _standardise(y[:, :3])
    for k, alpha in enumerate(alphas):
        w = _sklearn_lasso(xs, ys, alpha)
        ours = table.weights.values[k][:5]

        def objective(weights, alpha=alpha):
            residual = 0.5 * np.mean((ys - xs @ weights) ** 2, axis=0)
            return residual + alpha * np.abs(weights).sum(axis=0)

        np.testing.assert_allclose(objective(ours), objective(w), rtol=0, atol=1e-8)
        np.testing.assert_allclose(ours[0] + ours[1], w[0] + w[1], atol=1e-4)
        np.testing.assert_allclose(ours[2:], w[2:], atol=1e-4)
        assert table.loss.values[k] == pytest.approx(np.mean((ys - xs @ w) ** 2), abs=1e-4)


def test_sparse_prediction_bad_alphas():
    x, y = _layers(50, 2, 2)
    with pytest.raises(ValueError, match="alphas"):
        sparse_prediction(x, y, alphas=[0.1, -1.0])
    with pytest.raises(ValueError, match="alphas"):
        sparse_prediction(x, y, alphas=[])


def test_sparse_prediction_without_sklearn_says_what_to_install(monkeypatch):
    x, y = _layers(50, 2, 2)
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)  # import now fails
    with pytest.raises(ImportError, match="needs scikit-learn"):
        sparse_prediction(x, y)


# --- clustering -------------------------------------------------------------------------------


def test_cluster_units_recovers_planted_groups(tmp_path):
    rng = np.random.default_rng(19)
    n, k = 2000, 4
    features = rng.normal(size=(n, k))
    groups_a = rng.integers(0, k, size=14)
    groups_b = rng.integers(0, k, size=11)
    groups_a[:k] = groups_b[:k] = np.arange(k)  # every feature in both nets
    x = features[:, groups_a] * rng.choice([-1, 1], size=14) + 0.6 * rng.normal(size=(n, 14))
    y = np.maximum(features[:, groups_b] + 0.6 * rng.normal(size=(n, 11)), 0) + 2.0
    a, b = _zarr_pair(tmp_path / "clusters.zarr", x, y, rows=(256, 300))
    ds = cluster_units(a, b, n_clusters=k, seed=0)
    assert ds.labels_a.dims == ("unit_a",) and ds.labels_b.dims == ("unit_b",)
    labels = np.concatenate([ds.labels_a.values, ds.labels_b.values])
    planted = np.concatenate([groups_a, groups_b])
    assert adjusted_rand_score(planted, labels) >= 0.9
    assert set(labels.tolist()) == set(range(k))


def test_cluster_units_labels_constant_units_minus_one():
    rng = np.random.default_rng(20)
    f = rng.normal(size=(800, 2))
    x = np.column_stack([f[:, 0], f[:, 0], np.zeros(800), f[:, 1]]) + 0.3 * rng.normal(
        size=(800, 4)
    ) * [1, 1, 0, 1]
    y = f[:, [1, 0]] + 0.3 * rng.normal(size=(800, 2))
    with pytest.warns(dask_repsim.RepsimWarning, match="labelled -1"):
        ds = cluster_units(x, y, n_clusters=2)
    a, b = ds.labels_a.values, ds.labels_b.values
    assert a[2] == -1
    assert a[0] == a[1] == b[1] != a[3] == b[0]
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_units(x[:, [0, 1, 3]], y, n_clusters=6)


# --- one pass, nothing of size n on the client ------------------------------------------------

CALLS = {
    "unit_correlation": lambda a, b: unit_correlation(a, b),
    "match_units": lambda a, b: match_units(a, b),
    "sparse_prediction": lambda a, b: sparse_prediction(a, b, alphas=[0.0, 0.01]),
    "cluster_units": lambda a, b: cluster_units(a, b, n_clusters=2),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_every_chunk_read_exactly_once(counting_store: CountingStore, name):
    x, y = _layers(1000, 5, 4, seed=21)
    _zarr_pair(counting_store, x, y, rows=(128, 200))
    root = zarr.open_group(counting_store, mode="r")
    counting_store.reads.clear()
    CALLS[name](root["x"], root["y"])
    expected = {f"x/c/{i}/0" for i in range(8)} | {f"y/c/{i}/0" for i in range(5)}
    reads = counting_store.chunk_reads()
    assert set(reads) == expected
    assert set(reads.values()) == {1}


@pytest.mark.parametrize("name", list(CALLS))
def test_client_receives_only_statistics(tmp_path, name):
    """One compute per call; what comes back to the client is the same size for 10x the samples."""

    def received_bytes(n: int) -> list[int]:
        x, y = _layers(n, 5, 4, seed=22)
        a, b = _zarr_pair(tmp_path / f"n{n}.zarr", x, y, rows=(100, 100))
        computes: list = []

        def recording_scheduler(dsk, keys, **kwargs):
            out = dask.get(dsk, keys, **kwargs)
            computes.append(out)
            return out

        with dask.config.set(scheduler=recording_scheduler):
            CALLS[name](a, b)
        assert len(computes) == 1
        results = list(_flatten(computes[0]))
        assert all(isinstance(r, Statistics) for r in results)
        return [
            sum(v.nbytes for v in vars(r).values() if isinstance(v, np.ndarray))
            for r in results
        ]

    small, large = received_bytes(300), received_bytes(3000)
    assert small == large
    assert sum(large) < 8 * 200  # (5 + 4)^2 co-moments and a few vectors, not 3000 rows


def _flatten(obj):
    if isinstance(obj, dict):  # the pass returns statistics per group of samples
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        for item in obj:
            yield from _flatten(item)
    else:
        yield obj


# --- docs and example -------------------------------------------------------------------------


@pytest.mark.slow
def test_example_runs_and_writes_png(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--hidden", "16", "--epochs", "30", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "bipartite mean" in run.stdout and "nonzero weights per unit" in run.stdout
    png = out / "convergent_learning.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    stored = zarr.open_group(out / "convergent_learning.zarr", mode="r")
    assert stored["net_a"].shape == (1797, 16) and stored["net_b"].shape == (1797, 16)
