"""Bad input gets a clear error in terms of the user's data, never a silent NaN."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import dask_repsim as dr
from dask_repsim import RepsimWarning

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 5))
Y = X @ RNG.normal(size=(5, 4)) + RNG.normal(size=(200, 4))
FUNCTIONS = [dr.cka, dr.cca, dr.svcca, dr.pwcca, dr.linear_regression, dr.procrustes]


@pytest.mark.parametrize("value,kind", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
@pytest.mark.parametrize("side", ["x", "y"])
def test_nonfinite_names_kind_input_and_first_sample(value, kind, side):
    x, y = X.copy(), Y.copy()
    bad = x if side == "x" else y
    bad[137, 2] = value
    bad[151, 0] = value
    with pytest.raises(ValueError, match=rf"^{side} has {kind} at sample 137\b"):
        dr.cka(da.from_array(x, chunks=50), da.from_array(y, chunks=70))


def test_nonfinite_first_sample_across_inputs_and_chunks():
    x, y = X.copy(), Y.copy()
    x[120, 0] = np.nan
    y[30, 1] = np.inf
    with pytest.raises(ValueError, match="y has Inf at sample 30"):
        dr.compare(da.from_array(x, chunks=25), da.from_array(y, chunks=60))


def test_nan_policy_omit_drops_samples_jointly_and_says_how_many():
    x, y = X.copy(), Y.copy()
    x[[3, 50], 1] = np.nan
    y[[50, 199], 0] = np.inf
    keep = np.setdiff1d(np.arange(200), [3, 50, 199])
    with pytest.warns(RepsimWarning, match="left out 3 of 200 samples"):
        got = dr.cka(da.from_array(x, chunks=40), y, nan_policy="omit")
    with pytest.warns(RepsimWarning):
        ds = dr.compare(x, y, metrics=["cka"], nan_policy="omit")
    expected = dr.cka(x[keep], y[keep])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(ds.cka.item(), expected, rtol=1e-12)
    assert ds.attrs["n_samples"] == 197 and ds.attrs["n_samples_omitted"] == 3


def test_nan_policy_checked():
    with pytest.raises(ValueError, match="nan_policy"):
        dr.cka(X, Y, nan_policy="ignore")


def test_different_sample_counts_name_both():
    with pytest.raises(ValueError, match=r"x has 200.*y has 150"):
        dr.cca(X, Y[:150])
    with pytest.raises(ValueError, match=r"conv1 has 200.*fc has 150"):
        dr.compare({"conv1": X}, {"fc": Y[:150]})


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros(200), "at least 2 dims"),
        (np.zeros((0, 3)), "0 samples"),
        (np.zeros((200, 0)), "no features"),
        (xr.DataArray(np.zeros(200), dims=["sample"]), "at least one feature dim"),
    ],
)
def test_shapes_that_cannot_be_activations(bad, message):
    with pytest.raises(ValueError, match=message):
        dr.cka(bad, bad)


def test_debiased_cka_needs_four_samples():
    with pytest.raises(ValueError, match="at least 4 samples"):
        dr.cka(X[:3], Y[:3], debiased=True)


@pytest.mark.parametrize("func", FUNCTIONS)
def test_side_without_variance_is_an_error(func):
    constant = np.full((200, 3), 2.5)
    with pytest.raises(ValueError, match=r"y has no variance: all 3 units are constant"):
        func(X, constant)


def test_some_constant_units_warn_in_cca_family_not_cka():
    x = np.hstack([X, np.zeros((200, 1)), np.full((200, 1), 0.1)])
    with pytest.warns(RepsimWarning, match="2 of 7 units are constant"):
        rho = dr.cca(x, Y).rho
    np.testing.assert_allclose(rho, dr.cca(X, Y).rho, atol=1e-10)
    assert np.isfinite(dr.cka(x, Y))  # no warning: RepsimWarning is an error in tests


def test_cca_degenerate_when_features_reach_samples():
    x = RNG.normal(size=(30, 40))
    y = RNG.normal(size=(30, 5))
    with pytest.warns(RepsimWarning, match="CCA is degenerate"):
        rho = dr.cca(x, y).rho
    np.testing.assert_allclose(rho, 1.0, atol=1e-6)  # the degeneracy the warning describes


def test_svcca_degenerate_warning_does_not_recommend_svcca_as_it_stands():
    """SVCCA keeping as many directions as the samples allow is degenerate as CCA is: the
    warning says so and points to CKA or fewer kept directions, not to SVCCA itself."""
    x = RNG.normal(size=(10, 20))
    y = x[:, :15] + RNG.normal(size=(10, 15))
    with pytest.warns(RepsimWarning, match=r"SVCCA's CCA of the kept directions is degenerate "
                      r".*use CKA, or SVCCA keeping fewer directions \(keep=\)"):
        value = float(dr.svcca(x, y))
    assert value == pytest.approx(1.0, abs=1e-6)  # the degeneracy the warning describes


@pytest.mark.parametrize("dtype", ["complex128", "U3", "object", "datetime64[ns]"])
def test_non_numeric_dtypes_are_type_errors(dtype):
    with pytest.raises(TypeError, match="dtype"):
        dr.cka(np.zeros((10, 2), dtype=dtype), X[:10])


@pytest.mark.parametrize("dtype", ["int16", "uint8", "int64", "float16", "bool"])
def test_integer_and_half_dtypes_accumulate_in_float64(dtype):
    x = RNG.normal(size=(300, 4)) * 20
    x = (x > 0) if dtype == "bool" else x.astype(dtype)
    y = X[:100].repeat(3, axis=0)[:, :3]
    ref = dr.cka(x.astype(np.float64), y)
    np.testing.assert_allclose(dr.cka(x, y), ref, rtol=1e-12)
    np.testing.assert_allclose(dr.cka(da.from_array(x, chunks=70), y), ref, rtol=1e-12)


def test_missing_zarr_path(tmp_path):
    missing = tmp_path / "nowhere.zarr"
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        dr.cka(str(missing), X)
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        dr.compare(str(missing))


def test_corrupt_chunk_names_array_and_chunk(tmp_path):
    path = tmp_path / "acts.zarr"
    z = zarr.create_array(path, shape=X.shape, chunks=(40, 5), dtype="f8")
    z[...] = X
    (path / "c" / "3" / "0").write_bytes(b"not a chunk" * 8)
    with pytest.raises(OSError, match=r"x: cannot read chunk \(3, 0\) of the zarr array at .*acts"):
        dr.cka(str(path), Y)


def test_missing_sample_dims_lists_the_dims():
    arr = xr.DataArray(RNG.normal(size=(10, 3, 2)), dims=("image", "c", "h"))
    expected = r"\('sample',\) not in x; its dims are \('image', 'c', 'h'\)"
    with pytest.raises(ValueError, match=expected):
        dr.cka(arr, arr, sample_dims=("sample",))


def test_unknown_inputs_and_metrics():
    with pytest.raises(TypeError, match="cannot use list"):
        dr.cka([[1.0, 2.0]], X)
    with pytest.raises(ValueError, match="unknown metric"):
        dr.compare(X, Y, metrics=["cka", "nope"])


def test_one_metric_name_is_that_metric_not_its_letters():
    one = dr.compare(X, Y, metrics="cka")
    assert list(one.data_vars) == ["cka"]
    xc, yc = X - X.mean(0), Y - Y.mean(0)
    ref = np.sum((xc.T @ yc) ** 2) / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert float(one.cka.squeeze()) == pytest.approx(ref, rel=1e-12)
    zoo = {"n0": {"l": X}, "n1": {"l": Y}}
    assert list(dr.compare_zoo(zoo, metrics="cka").data_vars) == ["cka"]
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['ckaa'\]"):
        dr.compare(X, Y, metrics="ckaa")


def test_bfloat16_accumulates_in_float64():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (RNG.normal(size=(300, 4)) * 3).astype(ml_dtypes.bfloat16)
    y = X[:100].repeat(3, axis=0)[:, :3]
    ref = dr.cka(x.astype(np.float64), y)
    np.testing.assert_allclose(dr.cka(x, y), ref, rtol=1e-12)
    np.testing.assert_allclose(dr.cca(da.from_array(x, chunks=70), y).rho, dr.cca(
        x.astype(np.float64), y).rho, rtol=1e-10)
