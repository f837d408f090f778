"""method= on the public functions: every exact path gives the same numbers, "auto" picks by
the memory budget and says what it picked, and the QR path is reachable from the API."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr

import dask_repsim as dr
from dask_repsim import planning as methods

RNG = np.random.default_rng(11)
X = RNG.normal(size=(600, 30)) + 5.0
Y = X[:, :20] @ RNG.normal(size=(20, 25)) + RNG.normal(size=(600, 25))
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "svcca_tutorial"


def _cka(x, y):  # Kornblith et al. (2019), linear CKA of centred features
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.mark.parametrize("method", ["covariance", "gram", "tiled"])
@pytest.mark.parametrize("debiased", [False, True])
def test_exact_cka_paths_agree(method, debiased):
    expected = dr.cka(X, Y, debiased=debiased, method="covariance")
    if not debiased:
        np.testing.assert_allclose(expected, _cka(X, Y), atol=1e-12)
    np.testing.assert_allclose(dr.cka(X, Y, debiased=debiased, method=method), expected, atol=1e-9)


def test_auto_falls_back_to_an_exact_path_within_the_budget(caplog):
    caplog.set_level(logging.INFO, logger="dask_repsim")
    assert dr.cka(X, Y) == pytest.approx(_cka(X, Y), abs=1e-12)
    assert "cka: method=covariance" in caplog.text
    caplog.clear()
    with dask.config.set({"repsim.memory-budget": "10 kB"}):  # (30 + 25)^2 co-moments do not fit
        value = dr.cka(X, Y)
    assert value == pytest.approx(_cka(X, Y), abs=1e-9)
    assert "cka: method=tiled" in caplog.text or "cka: method=gram" in caplog.text
    assert methods.choose("cka", "auto", n=100, p=20_000, q=20_000) == "gram"  # n << width


@pytest.mark.skipif(not DATA.exists(), reason="shared/data not beside the checkout")
def test_rbf_cka_from_the_api_matches_expected(tmp_path):
    expected = json.loads((DATA / "expected.json").read_text())["svhn"]["rbf_cka_0.5"]
    x = np.load(DATA / "svhn_model0_fc.npy")
    y = np.load(DATA / "svhn_model1_fc.npy")
    z = zarr.create_array(tmp_path / "y.zarr", shape=y.shape, chunks=(128, 200), dtype=y.dtype)
    z[...] = y
    result = dr.cka(x, str(tmp_path / "y.zarr"), kernel="rbf", sigma=0.5)
    assert float(result) == pytest.approx(expected, abs=1e-6)
    assert result.median_exact


def test_minibatch_is_approximate_and_says_so():
    x = RNG.normal(size=(6000, 8))
    y = x @ RNG.normal(size=(8, 6)) + RNG.normal(size=(6000, 6))
    est = dr.cka(x, y, method="minibatch", batch_size=500, seed=3)
    assert est.approximate and est.n_batches == 12
    assert est.ci_low <= float(est) <= est.ci_high
    assert abs(float(est) - dr.cka(x, y, debiased=True)) < 0.03


def test_qr_path_from_the_api():
    for func in (lambda **k: dr.cca(X, Y, **k).rho, lambda **k: dr.svcca(X, Y, **k),
                 lambda **k: dr.pwcca(X, Y, **k), lambda **k: dr.linear_regression(X, Y, **k)):
        np.testing.assert_allclose(func(method="qr"), func(method="covariance"), atol=1e-9)


def test_options_that_need_the_covariance_path():
    with pytest.raises(ValueError, match="method"):
        dr.cka(X, Y, method="nope")
    with pytest.raises(ValueError, match="not available"):
        dr.cca(X, Y, method="gram")
    with pytest.raises(ValueError, match="not available on the"):
        dr.cka(X, Y, method="gram", nan_policy="omit")
    with pytest.raises(ValueError, match="kernel"):
        dr.cka(X, Y, kernel="poly")
    with pytest.raises(ValueError, match="not available"):
        dr.cka(X, Y, kernel="rbf", method="tiled")


LAYERS_A = {"x": X, "x2": np.tanh(X[:, :12])}
LAYERS_B = {"y": Y, "x": X}


@pytest.mark.parametrize("method", ["gram", "tiled"])
def test_compare_exact_cka_paths_equal_the_formula_for_every_cell(method):
    ds = dr.compare(LAYERS_A, LAYERS_B, metrics=["cka", "cka_debiased"], method=method)
    assert ds.attrs["method"] == method
    plain = dr.compare(LAYERS_A, LAYERS_B, metrics=["cka", "cka_debiased"])
    assert plain.attrs["method"] == "covariance"
    for a, xa in LAYERS_A.items():
        for b, yb in LAYERS_B.items():
            cell = ds.sel(layer_a=a, layer_b=b)
            assert float(cell.cka) == pytest.approx(_cka(xa, yb), abs=1e-9)
            assert float(cell.cka_debiased) == pytest.approx(
                float(plain.cka_debiased.sel(layer_a=a, layer_b=b)), abs=1e-9
            )


def test_compare_auto_uses_wide_paths_for_cka_when_pairs_do_not_fit(caplog):
    caplog.set_level(logging.INFO, logger="dask_repsim")
    with dask.config.set({"repsim.memory-budget": "10 kB"}):
        ds = dr.compare(LAYERS_A, LAYERS_B, metrics=["cka"])
        with pytest.raises(ValueError, match="more than the .* fit the memory budget"):
            dr.compare(LAYERS_A, LAYERS_B, metrics=["cka", "mean_cca"])
    assert set(ds.attrs["method"].split(", ")) <= {"gram", "tiled", "covariance"}
    assert "gram" in ds.attrs["method"] or "tiled" in ds.attrs["method"]
    for a, xa in LAYERS_A.items():
        for b, yb in LAYERS_B.items():
            assert float(ds.cka.sel(layer_a=a, layer_b=b)) == pytest.approx(
                _cka(xa, yb), abs=1e-9
            )


def test_compare_minibatch_is_labelled_approximate_with_intervals():
    x = RNG.normal(size=(4000, 8))
    y = x @ RNG.normal(size=(8, 6)) + RNG.normal(size=(4000, 6))
    ds = dr.compare({"x": x}, {"y": y}, metrics=["cka"], method="minibatch", batch_size=400)
    assert "approximate" in ds.attrs and ds.attrs["method"] == "minibatch"
    value = ds.cka.item()
    assert ds.cka_low.item() <= value <= ds.cka_high.item()
    assert value == pytest.approx(float(dr.cka(x, y, method="minibatch", batch_size=400)))
    assert abs(value - dr.cka(x, y, debiased=True)) < 0.03


def test_compare_method_errors():
    with pytest.raises(ValueError, match="method must be one of"):
        dr.compare(X, Y, method="fast")
    with pytest.raises(ValueError,
                       match="method=.gram. computes cka, cka_debiased, cka_rbf, not pwcca"):
        dr.compare(X, Y, metrics=["cka", "pwcca"], method="gram")
    with pytest.raises(ValueError, match="not available on the"):
        dr.compare(X, Y, metrics=["mean_cca"], method="qr", nan_policy="omit")
