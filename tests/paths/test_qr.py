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
from dask_repsim import RepsimWarning
from dask_repsim.engine.moments import column_slices
from dask_repsim.exceptions import NonFiniteError, NoVarianceError, SampleCountError
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths import qr
from dask_repsim.results import CCAResult, Estimate

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


# ------------------------------------------------------- input rules (validation, every path)

#: every QR measure, as a float of two layers; and its reference on arrays in memory
MEASURES = {
    "cca": (lambda lx, ly: qr.cca(lx, ly), lambda x, y: float(np.mean(ref_decomposition(x, y)[0]))),
    "svcca": (lambda lx, ly: qr.svcca(lx, ly, keep=0.99), lambda x, y: ref_svcca(x, y, 0.99)),
    "svcca_k": (lambda lx, ly: qr.svcca(lx, ly, keep=3), lambda x, y: ref_svcca(x, y, 3)),
    "pwcca": (lambda lx, ly: qr.pwcca(lx, ly), ref_pwcca),
    "linear_regression": (lambda lx, ly: qr.linear_regression(lx, ly), ref_regression),
}
measures = pytest.mark.parametrize("measure", sorted(MEASURES))


def _named(x, y, names=("x", "y"), rows=7):
    """Layers of x and y under ``names``, in chunks of ``rows`` (several tree levels)."""
    return (
        as_layer(da.from_array(x, chunks=(rows, -1)), name=names[0]),
        as_layer(da.from_array(y, chunks=(rows, -1)), name=names[1]),
    )


@measures
@pytest.mark.parametrize("names", [("x", "y"), ("conv1", "fc2")])
def test_nan_raises_naming_the_layer_and_its_first_bad_sample(measure, names):
    x, y = _correlated(seed=5, n=200, p=4, q=3)
    x[150, 2] = np.nan
    x[23, 0] = np.nan  # the first in x; chunks of 7 rows: a chunk in the middle of the tree
    with pytest.raises(NonFiniteError, match=rf"^{names[0]} has NaN at sample 23 \("):
        MEASURES[measure][0](*_named(x, y, names))
    y[9:14] = np.inf  # y's first bad sample comes earlier: the error names y
    with pytest.raises(NonFiniteError, match=rf"^{names[1]} has Inf at sample 9 \("):
        MEASURES[measure][0](*_named(x, y, names))


@measures
def test_inf_raises_naming_the_layer_even_in_a_chunk_without_finite_rows(measure):
    x, y = _correlated(seed=6, n=100, p=3, q=3)
    y[60, 1] = np.nan
    y[35:42] = -np.inf  # rows 35..41: one whole chunk of 7 rows has no finite sample
    with pytest.raises(NonFiniteError, match=r"^y has Inf at sample 35 \("):
        MEASURES[measure][0](*_named(x, y))
    with pytest.raises(NonFiniteError, match=r"^y has Inf at sample 35 \("):
        MEASURES[measure][0](*_named(y, x, ("y", "x")))


@measures
@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("level", [0.0, 2.5, 1e9])
def test_constant_layer_raises_no_variance_naming_it(measure, side, level):
    x, y = _correlated(seed=7, n=120, p=4, q=3)
    data = [x, y]
    data[side] = np.full_like(data[side], level)
    names = ("conv1", "fc2")
    width = data[side].shape[1]
    message = rf"^{names[side]} has no variance: all {width} units are constant over the 120 "
    with pytest.raises(NoVarianceError, match=message):
        MEASURES[measure][0](*_named(*data, names))


@measures
def test_different_sample_counts_raise_naming_both_inputs(measure):
    x, y = _correlated(seed=8, n=60, p=3, q=3)
    lx, ly = _named(x[:50], y, ("conv1", "fc2"))
    message = "^inputs have different numbers of samples: fc2 has 60, conv1 has 50$"
    with pytest.raises(SampleCountError, match=message):
        MEASURES[measure][0](lx, ly)
    with pytest.raises(SampleCountError, match=message):
        qr.tsqr([ly, lx])


@measures
@pytest.mark.parametrize("side", [0, 1])
def test_all_zero_unit_is_left_out_with_a_warning(measure, side):
    x, y = _correlated(seed=9, n=400, p=6, q=6)  # one unit fewer: PWCCA's side stays the same
    data = [x, y]
    data[side] = np.insert(data[side], 2, 0.0, axis=1)
    expected = MEASURES[measure][1](x, y)  # the data without that unit
    name = ("x", "y")[side]
    if measure == "linear_regression" and side == 1:
        # y's constant units add nothing to its variance: no warning, as on the co-moment path
        with warnings.catch_warnings():
            warnings.simplefilter("error", RepsimWarning)
            value = MEASURES[measure][0](*_named(*data, rows=64))
    else:
        message = (
            f"^{name}: 1 of 7 units are constant over the samples and are left out of "
            "CCA-family measures$"
        )
        with pytest.warns(RepsimWarning, match=message):
            value = MEASURES[measure][0](*_named(*data, rows=64))
    assert value == pytest.approx(expected, abs=1e-9)


def test_constant_unit_far_from_zero_is_left_out():
    """A unit constant at 1e9 is constant by its centred spread relative to its mean."""
    x, y = _correlated(seed=10, n=300, p=4, q=5)
    x_dead = np.column_stack([x, np.full(len(x), 1e9)])
    with pytest.warns(RepsimWarning, match="^x: 1 of 5 units are constant"):
        rho = qr.cca(*_named(x_dead, y, rows=50)).rho
    np.testing.assert_allclose(rho, ref_decomposition(x, y)[0], atol=1e-9)


@measures
def test_offset_1e9_gives_the_values_of_the_data_without_it(measure):
    x, y = _correlated(seed=11, n=2000, p=6, q=5)
    expected = MEASURES[measure][1](x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepsimWarning)  # no unit is taken for constant
        value = MEASURES[measure][0](*_named(x + 1e9, y + 1e9, rows=300))
    assert value == pytest.approx(expected, abs=1e-6)


def test_results_are_estimates_of_the_qr_method():
    x, y = _correlated(seed=12, n=500, p=4, q=3)
    lx, ly = _named(x, y, rows=100)
    result = qr.cca(lx, ly)
    assert isinstance(result, CCAResult) and result.method == "qr"
    rho = ref_decomposition(x, y)[0]
    np.testing.assert_allclose(result.rho, rho, atol=1e-10)
    assert float(result) == pytest.approx(np.mean(rho), abs=1e-10)
    assert result.r2 == pytest.approx(np.mean(rho**2), abs=1e-10)
    assert result.r2.method == "qr"
    for value in (qr.svcca(lx, ly), qr.pwcca(lx, ly), qr.linear_regression(lx, ly)):
        assert isinstance(value, Estimate) and value.method == "qr"
        assert value.approximate is None


def test_singular_rtol_sets_what_counts_as_collinear():
    """A direction at 1e-9 of the largest singular value (after standardising) is kept by
    the default cut-off on singular values and dropped by a larger one."""
    rng = np.random.default_rng(13)
    x = rng.normal(size=(3000, 3))
    x = np.column_stack([x, x[:, 0] + x[:, 1] + 1e-9 * rng.normal(size=3000)])
    lx, ly = _named(x, x[:, [3]], rows=500)  # y is x's nearly collinear unit
    assert qr.SINGULAR_RTOL == 1e-12
    rho_all = qr.cca(lx, lx).rho
    assert len(rho_all) == 4
    assert len(qr.cca(lx, lx, singular_rtol=1e-6).rho) == 3
    assert qr.linear_regression(lx, ly) == pytest.approx(1.0, abs=1e-12)


def test_column_slices_place_layers_side_by_side():
    """One column layout for the QR factor and the co-moments (engine.moments)."""
    assert qr.column_slices is column_slices
    assert column_slices([2, 0, 3]) == [slice(0, 2), slice(2, 2), slice(2, 5)]


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
