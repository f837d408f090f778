"""Distance correlation and the RSM norm difference over row-block tiles of the Euclidean
distance matrices: equal to the n x n formulas of the papers on every kind of data, invariant
to what they should be, one pass for both in a grid, refused options named."""

from __future__ import annotations

import numpy as np
import pytest
import references
from conftest import write_zarr
from hypothesis import given, settings
from strategies import activations, data_kinds

import dask_repsim as dr
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks import distances
from dask_repsim.paths.sample_blocks.distances import distance_values

MEASURES = ("distance_correlation", "rsm_norm_difference")


def _kinds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return data_kinds(5, 160)


@pytest.mark.parametrize("kind", list(_kinds()))
def test_equal_the_dense_formulas(kind):
    x, y = _kinds()[kind]
    expected = {m: getattr(references, m)(x, y) for m in MEASURES}
    for rows in (17, 64, len(x)):
        got = distance_values(as_layer(x), as_layer(y, name="y"), block_rows=rows)
        assert got["distance_correlation"] == pytest.approx(
            expected["distance_correlation"], rel=1e-10), (kind, rows)
        assert got["rsm_norm_difference"] == pytest.approx(
            expected["rsm_norm_difference"], rel=1e-10), (kind, rows)
    for m in MEASURES:  # both argument orders, the pairwise function
        assert float(getattr(dr, m)(y, x)) == pytest.approx(expected[m], rel=1e-10)
    if kind == "quantised":  # integer activations: every distance exact, the norm too
        assert float(dr.rsm_norm_difference(x, y)) == pytest.approx(
            expected["rsm_norm_difference"], rel=1e-14)


def test_zarr_inputs_and_one_pass_in_a_grid(tmp_path, monkeypatch):
    x, y = _kinds()["gaussian"]
    write_zarr(tmp_path / "a.zarr", "x", x, chunks=(50, 12))
    write_zarr(tmp_path / "a.zarr", "y", y, chunks=(33, 9))
    for m in MEASURES:
        value = getattr(dr, m)(str(tmp_path / "a.zarr/x"), str(tmp_path / "a.zarr/y"))
        assert float(value) == pytest.approx(getattr(references, m)(x, y), rel=1e-10)
        assert value.method == "sample_blocks"
    calls = []
    original = distances.distance_values

    def counted(*args, **kwargs):
        calls.append(kwargs.get("measures"))
        return original(*args, **kwargs)

    monkeypatch.setattr(distances, "distance_values", counted)
    ds = dr.compare(str(tmp_path / "a.zarr"), metrics=[*MEASURES, "cka"])
    assert len(calls) == 4 and all(tuple(c) == MEASURES for c in calls)  # 2 x 2 cells
    layers = {"x": x, "y": y}
    for a in layers:
        for b in layers:
            cell = ds.sel(layer_a=a, layer_b=b)
            for m in MEASURES:
                assert float(cell[m]) == pytest.approx(
                    getattr(references, m)(layers[a], layers[b]), rel=1e-10, abs=1e-12)
    assert float(ds.distance_correlation.sel(layer_a="x", layer_b="x")) == pytest.approx(1.0)


@settings(max_examples=15, deadline=None)
@given(activations(max_features=6))
def test_invariances(data):
    """Both: rotations, reflections and translations of either layer. Distance correlation:
    the scale of either layer too; the norm difference scales with them."""
    x, y = data.x, data.y
    rng = np.random.default_rng(int(abs(x[0, 0]) * 1e6) % 2**32)
    q = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))[0]
    moved = x @ q + rng.normal(scale=50.0, size=x.shape[1])
    d = float(dr.distance_correlation(x, y))
    assert float(dr.distance_correlation(3.5 * moved, y)) == pytest.approx(d, rel=1e-9)
    r = float(dr.rsm_norm_difference(x, y))
    assert float(dr.rsm_norm_difference(moved, y)) == pytest.approx(r, rel=1e-9)
    assert float(dr.rsm_norm_difference(2 * x, 2 * y)) == pytest.approx(2 * r, rel=1e-9)


def test_independent_layers_and_errors():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    # independent samples: the V-statistic is small but positive (a biased estimate)
    assert 0.0 < float(dr.distance_correlation(x, y)) < 0.2
    assert float(dr.distance_correlation(x, x ** 3)) > 0.8  # non-linear, monotone dependence
    for m in MEASURES:
        function = getattr(dr, m)
        # intervals and permutation tests: tests/paths/test_distances_inference.py
        with pytest.raises(ValueError, match=f"not available for {m}"):
            function(x, y, nan_policy="omit")
        with pytest.raises(dr.NoVarianceError, match="y has no variance"):
            function(x, np.ones_like(y))
    with pytest.raises(ValueError, match="measures must be among"):
        distance_values(as_layer(x), as_layer(y, name="y"), measures=("dcor",))
