"""The TSQR path: R factors from a Dask tree, and the CCA family from R, against SVD references
on the data in memory written here (Bjorck & Golub 1973), including an ill-conditioned pair
where the co-moment route loses accuracy."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import write_zarr

import dask_repsim
from dask_repsim import RepsimWarning, qr
from dask_repsim.inputs import as_layer

# ------------------------------------------------------------------------ references (numpy)


def _centre(a):
    a = np.asarray(a, dtype=np.float64)
    return a - a.mean(axis=0)


def _basis(a, rtol=1e-13):
    """Orthonormal basis of the centred columns (standardised first), by SVD."""
    ac = _centre(a)
    ac = ac[:, np.ptp(ac, axis=0) > 0]
    ac = ac / np.linalg.norm(ac, axis=0)
    u, s, _ = np.linalg.svd(ac, full_matrices=False)
    return u[:, s > rtol * s[0]]


def ref_decomposition(x, y):
    u, s, vt = np.linalg.svd(_basis(x).T @ _basis(y), full_matrices=False)
    return np.clip(s, 0, 1), _basis(x) @ u, _basis(y) @ vt.T


def ref_svcca(x, y, keep):
    def reduce(a):
        ac = _centre(a)
        u, s, vt = np.linalg.svd(ac, full_matrices=False)
        s = s[s > 1e-13 * s[0]]
        k = keep if isinstance(keep, int) else int(np.sum(np.cumsum(s**2) / np.sum(s**2) < keep))
        k = min(k + (0 if isinstance(keep, int) else 1), len(s))
        return ac @ vt[:k].T

    return float(np.mean(ref_decomposition(reduce(x), reduce(y))[0]))


def ref_pwcca(x, y):
    rho, hx, hy = ref_decomposition(x, y)
    h, units = (hx, _centre(x)) if x.shape[1] <= y.shape[1] else (hy, _centre(y))
    alpha = np.abs(h.T @ units).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


def ref_regression(x, y):
    """R^2 of y from x with intercept: the projection of centred y on the SVD basis of centred
    x (an lstsq on [1 | x] loses digits when x is ill-conditioned and has a large mean)."""
    yc = _centre(y)
    return float(np.sum((_basis(x).T @ yc) ** 2) / np.sum(yc**2))


# ------------------------------------------------------------------------------------ data


def _layers(x, y, rows=None):
    if rows is not None:
        x, y = da.from_array(x, chunks=(rows, -1)), da.from_array(y, chunks=(rows, -1))
    return as_layer(x, name="x"), as_layer(y, name="y")


def _correlated(seed=0, n=3000, p=12, q=9, offset=0.0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    x = latent @ rng.normal(size=(6, p)) + 0.5 * rng.normal(size=(n, p)) + offset
    y = np.maximum(latent @ rng.normal(size=(6, q)) + rng.normal(size=(n, q)), 0) + offset
    return x, y


def _ill_conditioned(seed=0, n=4000, p=6, q=5):
    """x with singular values from 1 to 1e-9 (condition number ~1e9) and a large mean; y
    correlates strongly with x's weakest directions."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, p + q)))
    u -= u.mean(axis=0)
    v, _ = np.linalg.qr(rng.normal(size=(p, p)))
    x = (u[:, :p] * np.logspace(0, -9, p)) @ v.T + 3.0
    y = np.column_stack(
        [
            u[:, p - 1] + 0.5 * u[:, p],
            u[:, p - 2] + 0.1 * u[:, p + 1],
            u[:, p + 2],
            u[:, 0] + u[:, p + 3],
            u[:, p + 4],
        ]
    )
    return x, y @ rng.normal(size=(q, q))


# ----------------------------------------------------------------------------------- tests


def test_tsqr_factor_matches_in_memory_qr():
    x, y = _correlated(offset=1e4)  # large means: the merge must not cancel
    f = qr.tsqr(list(_layers(x, y, rows=170)))  # 18 chunks: two tree levels
    z = np.hstack([x, y])
    assert f.count == 3000
    np.testing.assert_allclose(f.mean, z.mean(axis=0), rtol=1e-14)
    # R is unique up to the signs of its rows
    r_ref = np.linalg.qr(_centre(z), mode="r")
    scale = np.abs(r_ref).max()
    np.testing.assert_allclose(np.abs(f.r), np.abs(r_ref), rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(f.r.T @ f.r, _centre(z).T @ _centre(z), rtol=1e-9, atol=1e-6)


def test_tsqr_with_chunks_shorter_than_wide():
    # chunks of 5 rows for 21 columns: chunk R factors are 5 x 21, stacked before merging
    x, y = _correlated(n=200, p=12, q=9)
    f = qr.tsqr(list(_layers(x, y, rows=5)))
    zc = _centre(np.hstack([x, y]))
    np.testing.assert_allclose(f.r.T @ f.r, zc.T @ zc, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("rows", [None, 250])
def test_measures_match_svd_references(rows):
    x, y = _correlated(seed=1)
    lx, ly = _layers(x, y, rows)
    rho, _, _ = ref_decomposition(x, y)
    np.testing.assert_allclose(qr.cca(lx, ly).rho, rho, atol=1e-10)
    assert qr.svcca(lx, ly, keep=0.99) == pytest.approx(ref_svcca(x, y, 0.99), abs=1e-10)
    assert qr.svcca(lx, ly, keep=4) == pytest.approx(ref_svcca(x, y, 4), abs=1e-10)
    assert qr.pwcca(lx, ly) == pytest.approx(ref_pwcca(x, y), abs=1e-10)
    assert qr.pwcca(ly, lx) == pytest.approx(ref_pwcca(y, x), abs=1e-10)
    assert qr.linear_regression(lx, ly) == pytest.approx(ref_regression(x, y), abs=1e-10)
    assert qr.linear_regression(ly, lx) == pytest.approx(ref_regression(y, x), abs=1e-10)


def test_one_factor_serves_every_measure():
    x, y = _correlated(seed=2)
    f = qr.tsqr(list(_layers(x, y)))
    assert qr.pwcca_from_r(f) == pytest.approx(ref_pwcca(x, y), abs=1e-10)
    assert qr.linear_regression_from_r(f) == pytest.approx(ref_regression(x, y), abs=1e-10)
    assert qr.svcca_from_r(f, keep=3) == pytest.approx(ref_svcca(x, y, 3), abs=1e-10)


def test_ill_conditioned_pair_qr_accurate_where_covariance_is_not():
    x, y = _ill_conditioned()
    assert np.linalg.cond(_centre(x)) > 5e8
    rho_ref = ref_decomposition(x, y)[0]
    lx, ly = _layers(x, y, rows=500)
    rho_qr = qr.cca(lx, ly).rho
    np.testing.assert_allclose(rho_qr, rho_ref, atol=1e-6)
    assert qr.linear_regression(lx, ly) == pytest.approx(ref_regression(x, y), abs=1e-6)
    assert qr.pwcca(lx, ly) == pytest.approx(ref_pwcca(x, y), abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        cov = dask_repsim.cca(x, y)
        cov_regression = dask_repsim.linear_regression(x, y)
    # the co-moment route squares the condition number (1e18): it loses x's weak directions
    assert abs(cov.mean - float(np.mean(rho_ref))) > 1e-4
    assert abs(cov_regression - ref_regression(x, y)) > 1e-4


def test_exactly_collinear_and_constant_units():
    x, y = _correlated(seed=3, n=1000)
    x = np.column_stack([x, x[:, 0] + x[:, 1], np.full(len(x), 2.5)])  # a sum and a dead unit
    with pytest.warns(RepsimWarning, match="1 of 14 units are constant"):
        rho = qr.cca(*_layers(x, y)).rho
    np.testing.assert_allclose(rho, ref_decomposition(x, y)[0], atol=1e-10)
    assert len(rho) == 9


def test_different_sample_counts_raise():
    with pytest.raises(ValueError, match="different numbers of samples"):
        qr.tsqr([as_layer(np.zeros((5, 2))), as_layer(np.zeros((6, 2)), name="y")])


def test_non_finite_raises():
    x = np.random.default_rng(0).normal(size=(20, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        qr.cca(*_layers(x, x.copy()))


def test_compare_qr_grid_from_one_factor_matches_svd_references(counting_store):
    """compare(method="qr"): one TSQR pass over every layer; each pair from the joint R."""
    x, y = _ill_conditioned(seed=3)
    z, w = _correlated(seed=4, n=4000, p=5, q=4, offset=100.0)
    for name, data, chunks in (("x", x, 700), ("y", y, 512), ("z", z, 1000), ("w", w, 650)):
        write_zarr(counting_store, name, data, chunks=(chunks, data.shape[1]))
    counting_store.reads.clear()
    group = zarr.open_group(counting_store, mode="r")
    metrics = ["mean_cca", "r2_cca", "pwcca", "svcca", "linear_regression"]
    with dask.config.set(scheduler="threads"):
        ds = dask_repsim.compare(
            {"x": group["x"], "z": group["z"]}, {"y": group["y"], "w": group["w"]},
            metrics=metrics, method="qr",
        )
    assert max(counting_store.chunk_reads().values()) == 1
    assert ds.attrs["method"] == "qr"
    data = {"x": x, "z": z, "y": y, "w": w}
    for a in ("x", "z"):
        for b in ("y", "w"):
            rho = ref_decomposition(data[a], data[b])[0]
            cell = ds.sel(layer_a=a, layer_b=b)
            assert float(cell.mean_cca) == pytest.approx(np.mean(rho), abs=1e-6), (a, b)
            assert float(cell.r2_cca) == pytest.approx(np.mean(rho**2), abs=1e-6), (a, b)
            assert float(cell.pwcca) == pytest.approx(ref_pwcca(data[a], data[b]), abs=1e-6)
            assert float(cell.svcca) == pytest.approx(
                ref_svcca(data[a], data[b], 0.99), abs=1e-6
            )
            assert float(cell.linear_regression) == pytest.approx(
                ref_regression(data[a], data[b]), abs=1e-6
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        cov = dask_repsim.compare({"x": x}, {"y": y}, metrics=["mean_cca"])
    # the co-moment grid loses the ill-conditioned pair's weak directions; the QR grid does not
    assert abs(cov.mean_cca.item() - ds.mean_cca.sel(layer_a="x", layer_b="y").item()) > 1e-4
