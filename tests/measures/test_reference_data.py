"""Every figure of shared/data/svcca_tutorial/expected.json (real activations of trained networks),
from numpy, dask, zarr (object and path) and xarray inputs."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import dask_repsim as dr

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "svcca_tutorial"
if not DATA.exists():  # a checkout beside shared/, as CI and developers have it
    DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "svcca_tutorial"
PAIRS = {
    "svhn": ("svhn_model0_fc", "svhn_model1_fc"),
    "mnist": ("mnist_model0_logits", "mnist_model1_logits"),
}
KINDS = ["numpy", "dask", "zarr", "zarr_path", "xarray"]

pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared/data not beside the checkout")


def _expected() -> dict:
    return json.loads((DATA / "expected.json").read_text())


def _as_kind(kind: str, arr: np.ndarray, name: str, tmp: Path):
    if kind == "numpy":
        return arr
    if kind == "dask":  # uneven row chunks
        n = arr.shape[0]
        return da.from_array(arr, chunks=((n // 3, n // 5, n - n // 3 - n // 5), arr.shape[1]))
    if kind in ("zarr", "zarr_path"):
        z = zarr.create_array(
            tmp / f"{name}.zarr",
            shape=arr.shape,
            chunks=(max(1, arr.shape[0] // 7), arr.shape[1]),
            dtype=arr.dtype,
            dimension_names=("sample", "unit"),
        )
        z[...] = arr
        return z if kind == "zarr" else str(tmp / f"{name}.zarr")
    if kind == "xarray":
        return xr.DataArray(
            da.from_array(arr, chunks=(arr.shape[0] // 4, -1)), dims=("sample", "unit"), name=name
        )
    raise AssertionError(kind)


@pytest.fixture(scope="module", params=list(PAIRS))
def dataset(request):
    x_name, y_name = PAIRS[request.param]
    return request.param, np.load(DATA / f"{x_name}.npy"), np.load(DATA / f"{y_name}.npy")


@pytest.mark.parametrize("kind", KINDS)
def test_every_expected_figure(dataset, kind, tmp_path):
    key, x_arr, y_arr = dataset
    expected = _expected()[key]
    x = _as_kind(kind, x_arr, "x", tmp_path)
    y = _as_kind(kind, y_arr, "y", tmp_path)
    result = dr.cca(x, y)
    got = {
        "cca_rho_first5": result.rho[:5],
        "mean_cca": result.mean,
        "r2_cca": result.r2,
        "svcca_keep_0.99": dr.svcca(x, y, keep=0.99),
        "pwcca": dr.pwcca(x, y),
        "linear_cka": dr.cka(x, y),
        "linear_cka_debiased": dr.cka(x, y, debiased=True),
        "linear_regression_r2_y_from_x": dr.linear_regression(x, y),
        "reference_code_threshold_mean_0.98": result.truncated_mean(0.98),
        "reference_code_compute_pwcca": dr.pwcca(x, y, definition="reference"),
    }
    checked = 0
    for name, value in expected.items():
        if name == "rbf_cka_0.5":  # a kernel measure, not from the co-moments
            continue
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6, err_msg=name)
        checked += 1
    assert checked == len(got)


@pytest.mark.parametrize("kind", KINDS)
def test_compare_matches_expected(dataset, kind, tmp_path):
    key, x_arr, y_arr = dataset
    expected = _expected()[key]
    ds = dr.compare(_as_kind(kind, x_arr, "x", tmp_path), _as_kind(kind, y_arr, "y", tmp_path))
    assert ds.sizes == {"layer_a": 1, "layer_b": 1}
    assert ds.attrs["n_samples"] == x_arr.shape[0]
    pairs = {
        "cka": "linear_cka",
        "cka_debiased": "linear_cka_debiased",
        "mean_cca": "mean_cca",
        "r2_cca": "r2_cca",
        "svcca": "svcca_keep_0.99",
        "pwcca": "pwcca",
        "linear_regression": "linear_regression_r2_y_from_x",
    }
    for metric, name in pairs.items():
        np.testing.assert_allclose(ds[metric].item(), expected[name], atol=1e-6, err_msg=metric)
    # Procrustes is not in expected.json: check it against its definition on the same data.
    xc = x_arr - x_arr.mean(0, dtype=np.float64)
    yc = y_arr - y_arr.mean(0, dtype=np.float64)
    nuclear = np.linalg.svd(xc.T @ yc, compute_uv=False).sum()
    reference = nuclear / (np.linalg.norm(xc) * np.linalg.norm(yc))
    np.testing.assert_allclose(ds["procrustes"].item(), reference, atol=1e-9)


def _reference_compute_pwcca(acts1: np.ndarray, acts2: np.ndarray) -> float:
    """The SVCCA reference code's get_cca_similarity + compute_pwcca, transcribed (neurons x
    datapoints, epsilon=0), with its second branch reading acts2 instead of crashing on acts1."""
    numx = acts1.shape[0]
    cov = np.cov(acts1, acts2)
    sxx, sxy, syy = cov[:numx, :numx], cov[:numx, numx:], cov[numx:, numx:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)

    def invsqrt(m):
        w, v = np.linalg.eigh(np.linalg.pinv(m))
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    u, s, v = np.linalg.svd(invsqrt(sxx) @ sxy @ invsqrt(syy))
    if acts1.shape[0] <= acts2.shape[0]:
        acts, coef = acts1, u.T
    else:
        acts, coef = acts2, v
    means = acts.mean(axis=1, keepdims=True)
    dirns = coef @ (acts - means) + means
    q, _ = np.linalg.qr(dirns.T)
    weights = np.sum(np.abs(q.T @ acts.T), axis=1)
    return float(np.sum(weights / weights.sum() * s))


def test_reference_pwcca_with_wider_first_input(dataset):
    """The reference code crashes when x has more units than y; the package gives what that
    code gives once its second branch reads the right input."""
    key, x_arr, y_arr = dataset
    x64, narrower = x_arr.astype(np.float64), y_arr[:, : y_arr.shape[1] // 2].astype(np.float64)
    value = dr.pwcca(x64, narrower, definition="reference")
    np.testing.assert_allclose(value, _reference_compute_pwcca(x64.T, narrower.T), atol=1e-6)
    np.testing.assert_allclose(
        dr.pwcca(narrower, x64, definition="reference"),
        _reference_compute_pwcca(narrower.T, x64.T),
        atol=1e-6,
    )
