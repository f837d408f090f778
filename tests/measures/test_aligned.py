"""Aligned cosine similarity: equal to ReSi's aligned_cossim written with scipy's orthogonal
Procrustes in tests/references.py, on every kind of data and both widths' orders; through zarr
and compare; its invariances; samples without a direction left out with a warning."""

from __future__ import annotations

import numpy as np
import pytest
import references
from conftest import write_zarr

import dask_repsim as dr


def _kinds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(4)
    n = 180
    z = rng.normal(size=(n, 8))
    related = np.tanh(z @ rng.normal(size=(8, 6))) + 0.4 * rng.normal(size=(n, 6))
    return {
        "gaussian": (z, related),
        "low_rank": (rng.normal(size=(n, 2)) @ rng.normal(size=(2, 12)), related),
        "heavy_tailed": (rng.standard_t(2.5, size=(n, 5)), related),
        "offset": (z + 1e4, related - 1e4),
        "relu_integer": (np.floor(np.maximum(3 * z, 0)) + 1, np.floor(np.maximum(3 * related,
                                                                                 0)) + 1),
        "n_below_p": (rng.normal(size=(30, 60)), rng.normal(size=(30, 40))),
    }


@pytest.mark.parametrize("kind", list(_kinds()))
def test_equals_resis_definition(kind, tmp_path):
    x, y = _kinds()[kind]
    expected = references.aligned_cosine(x, y)
    assert float(dr.aligned_cosine(x, y)) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert float(dr.aligned_cosine(y, x)) == pytest.approx(references.aligned_cosine(y, x),
                                                           rel=1e-9, abs=1e-12)
    if kind == "gaussian":
        write_zarr(tmp_path / "a.zarr", "x", x, chunks=(50, 8))
        write_zarr(tmp_path / "a.zarr", "y", y, chunks=(70, 6))
        ds = dr.compare(str(tmp_path / "a.zarr"), metrics=["aligned_cosine", "cka"])
        assert float(ds.aligned_cosine.sel(layer_a="x", layer_b="y")) == pytest.approx(
            expected, rel=1e-9)
        assert float(ds.aligned_cosine.sel(layer_a="y", layer_b="y")) == pytest.approx(1.0)


def test_invariances():
    x, y = _kinds()["gaussian"]
    rng = np.random.default_rng(8)
    qx = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    qy = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    value = float(dr.aligned_cosine(x, y))
    assert float(dr.aligned_cosine(3 * x @ qx, 0.2 * y @ qy)) == pytest.approx(value, rel=1e-9)
    assert float(dr.aligned_cosine(x + 2.0, y)) != pytest.approx(value, rel=1e-3)


def test_samples_without_a_direction_and_refused_options():
    x, y = _kinds()["relu_integer"]
    x = x.copy()
    x[[4, 40]] = 0.0
    with pytest.warns(dr.RepsimWarning, match="leaves out 2 of 180 samples whose activations "
                                              "are all zero in x or y"):
        value = float(dr.aligned_cosine(x, y))
    assert value == pytest.approx(references.aligned_cosine(x, y), rel=1e-9)
    for option in ({"nan_policy": "omit"},):  # intervals and permutations: tests/paths
        with pytest.raises(ValueError, match="not available for aligned_cosine"):
            dr.aligned_cosine(x, y, **option)
