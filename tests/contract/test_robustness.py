"""Property tests over shapes, dtypes, chunkings and scales: every result finite, bounded where
the measure is, symmetric where it is, and the same from every input kind."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
import zarr.storage
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dask_repsim as dr

BOUNDED = ["cka", "mean_cca", "r2_cca", "svcca", "pwcca", "linear_regression", "procrustes"]
SYMMETRIC = ["cka", "cka_debiased", "mean_cca", "r2_cca", "procrustes"]


@st.composite
def activations(draw):
    p = draw(st.integers(1, 6))
    q = draw(st.integers(1, 6))
    n = draw(st.integers(p + q + 6, 90))
    dtype = draw(st.sampled_from(["float64", "float32", "float16", "int16"]))
    # integers of a scale well above 1: rounding N(0, 0.01) to int16 gives spikes, not activations
    low = 1 if dtype == "int16" else -2
    scale = 10.0 ** draw(st.integers(low, 3 if dtype in ("float16", "int16") else 5))
    offset = draw(st.sampled_from([0.0, 1.0, 100.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 2))
    x = (shared @ rng.normal(size=(2, p)) + rng.normal(size=(n, p))) * scale + offset
    y = (shared @ rng.normal(size=(2, q)) + rng.normal(size=(n, q))) * scale + offset
    if dtype == "int16":
        assume(np.abs(np.vstack([x.T, y.T])).max() < 30000)
    x, y = x.astype(dtype), y.astype(dtype)
    # every unit must vary once stored in this dtype (constant units are tested elsewhere)
    assume(all(np.ptp(a.astype(np.float64), axis=0).min() > 0 for a in (x, y)))
    chunk = draw(st.integers(5, n))
    return x, y, chunk


def _run(x, y):
    return dr.compare(x, y)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(activations())
def test_finite_bounded_symmetric_and_equal_across_input_kinds(data):
    x, y, chunk = data
    ref = _run(x, y)
    for metric in ref.data_vars:
        assert np.isfinite(ref[metric].item()), metric
    for metric in BOUNDED:
        assert -1e-9 <= ref[metric].item() <= 1 + 1e-9, (metric, ref[metric].item())
    assert ref.cka_debiased.item() <= 1 + 1e-9
    swapped = _run(y, x)
    for metric in SYMMETRIC:
        np.testing.assert_allclose(swapped[metric].item(), ref[metric].item(), rtol=1e-7, atol=1e-9)
    store = zarr.storage.MemoryStore()
    zx = zarr.create_array(store, name="x", shape=x.shape, chunks=(chunk, 9), dtype=x.dtype)
    zy = zarr.create_array(store, name="y", shape=y.shape, chunks=(chunk + 3, 1), dtype=y.dtype)
    zx[...] = x
    zy[...] = y
    for other in (
        _run(da.from_array(x, chunks=(chunk, -1)), da.from_array(y, chunks=(chunk // 2 + 1, 1))),
        _run(zx, zy),
    ):
        for metric in ref.data_vars:
            # debiased CKA subtracts terms of similar size: compare it on an absolute scale
            atol = 1e-7 if metric == "cka_debiased" else 1e-9
            np.testing.assert_allclose(
                other[metric].item(), ref[metric].item(), rtol=1e-7, atol=atol, err_msg=metric
            )


def test_svd_that_does_not_converge_is_retried_with_gesvd(monkeypatch):
    """LAPACK's gesdd sometimes fails on valid, nearly rank-deficient matrices (a layer almost
    as wide as there are samples); every measure falls back to gesvd instead of raising."""
    import references as ref

    from dask_repsim.measures import linalg

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8))
    y = np.hstack([x[:, :3], rng.normal(size=(120, 27))]) + 0.1 * rng.normal(size=(120, 30))
    expected = (ref.mean_cca(x, y), ref.procrustes(x, y), ref.pwcca(x, y))
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(linalg.np.linalg, "svd", failing)  # numpy's driver always fails
    assert dr.cca(x, y).mean == pytest.approx(expected[0], abs=1e-8)
    assert dr.procrustes(x, y) == pytest.approx(expected[1], abs=1e-10)
    assert dr.pwcca(x, y, method="qr") == pytest.approx(expected[2], abs=1e-8)
    assert calls  # the default driver was tried first
