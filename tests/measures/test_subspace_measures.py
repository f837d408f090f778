"""The Bures distance (size-and-shape Procrustes), the permutation metric, the eigenspace
overlap score and GULP, against
float64 references written from the papers (tests/references.py), on the kinds of data layers
give, through the pairwise functions, Zarr input and ``compare``; their invariances as
properties."""

from __future__ import annotations

import contextlib

import dask.array as da
import numpy as np
import pytest
import references as ref
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import activations, orthogonal_matrices, permutations, well_conditioned_matrices

import dask_repsim as dr

MEASURES = {"bures_distance": dr.bures_distance, "eigenspace_overlap": dr.eigenspace_overlap,
            "gulp": dr.gulp, "permutation_distance": dr.permutation_distance}
#: the measures that warn, as CCA does, when a layer has as many units as the samples allow
WIDE_WARNS = ("eigenspace_overlap", "gulp")


def _quiet(kind: str):
    """No warning expected, or the degeneracy warning of a layer as wide as its samples."""
    if kind == "n < p":
        return pytest.warns(dr.RepsimWarning, match="degenerate")
    return contextlib.nullcontext()


def _kinds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs of layers like those networks give: Gaussian, low rank, heavy tailed, far from
    the origin, ReLU-quantised integers (ties), more units than samples."""
    rng = np.random.default_rng(5)
    n = 400
    x = rng.normal(size=(n, 9)) * np.linspace(0.3, 3, 9)
    y = np.tanh(x[:, :6] @ rng.normal(size=(6, 7))) + 0.5 * rng.normal(size=(n, 7))
    low = rng.normal(size=(n, 3)) @ rng.normal(size=(3, 12))  # rank 3 of 12 units
    heavy = rng.standard_t(2.5, size=(n, 8))
    relu = np.maximum(np.round(4 * (x[:, :6] + rng.normal(size=(n, 6)))), 0)
    wide_x, wide_y = rng.normal(size=(40, 90)), rng.normal(size=(40, 60))
    wide_y[:, :30] += wide_x[:, :30]
    return {
        "gaussian": (x, y),
        "low rank": (low, low[:, :5] @ rng.normal(size=(5, 6)) + 0.1 * rng.normal(size=(n, 6))),
        "heavy tailed": (heavy, heavy[:, :4] + rng.standard_t(2.5, size=(n, 4))),
        "offset 1e4": (x + 1e4, y - 1e4),
        "relu integers": (relu, np.maximum(np.round(2 * y), 0)),
        "n < p": (wide_x, wide_y),
    }


KINDS = _kinds()


@pytest.mark.parametrize("kind", list(KINDS))
def test_bures_distance_equals_the_references(kind):
    x, y = KINDS[kind]
    expected = ref.bures_distance(x, y)
    # the kernels' fidelity and the best rotation of one layer onto the other agree
    assert ref.size_and_shape_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert float(dr.bures_distance(x, y)) == pytest.approx(expected, rel=1e-9)
    assert float(dr.bures_distance(y, x)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kind", list(KINDS))
def test_permutation_distance_equals_the_reference(kind):
    x, y = KINDS[kind]
    expected = ref.permutation_distance(x, y)
    assert float(dr.permutation_distance(x, y)) == pytest.approx(expected, abs=1e-9)
    assert float(dr.permutation_distance(y, x)) == pytest.approx(expected, abs=1e-9)
    ds = dr.compare({"x": x}, {"y": y}, metrics=["permutation_distance", "shape_metric"])
    assert float(ds.permutation_distance.item()) == pytest.approx(expected, abs=1e-9)
    # a permutation is one of the rotations: the shape metric (alpha = 1) is never farther
    assert float(ds.shape_metric.item()) <= expected + 1e-12


@pytest.mark.parametrize("kind", list(KINDS))
def test_eigenspace_overlap_equals_the_reference(kind):
    x, y = KINDS[kind]
    expected = ref.eigenspace_overlap(x, y)
    with _quiet(kind):
        assert float(dr.eigenspace_overlap(x, y)) == pytest.approx(expected, abs=1e-9)
    with _quiet(kind):
        assert float(dr.eigenspace_overlap(y, x)) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("ridge", [0.0, 0.01, 1.0])
@pytest.mark.parametrize("kind", list(KINDS))
def test_gulp_equals_the_reference(kind, ridge):
    x, y = KINDS[kind]
    expected = ref.gulp(x, y, ridge)
    quiet = _quiet(kind) if ridge == 0 else contextlib.nullcontext()
    # near 0 (n < p at ridge 0: both layers span every centred direction), the reference's
    # square root of its rounding is of order sqrt(eps)
    with quiet:
        assert float(dr.gulp(x, y, ridge=ridge)) == pytest.approx(expected, rel=1e-7, abs=1e-5)
    if ridge:
        ds = dr.compare({"x": x}, {"y": y}, metrics=["gulp"], ridge=ridge)
        assert float(ds.gulp.item()) == pytest.approx(expected, rel=1e-7, abs=1e-5)
        assert ds.attrs["ridge"] == ridge


def test_through_zarr_and_compare(tmp_path):
    """The same values from Zarr stores in chunks, in a grid with other measures, and by
    ``compare``'s pairs of a layer set with itself."""
    x, y = KINDS["gaussian"]
    low = KINDS["low rank"][0]
    layers = {"x": x, "y": y, "low": low}
    for name, a in layers.items():
        xr.DataArray(da.from_array(a, chunks=(70, -1)), dims=("sample", "unit")).to_dataset(
            name=name).to_zarr(tmp_path / f"{name}.zarr", consolidated=False)
    stores = {name: xr.open_zarr(tmp_path / f"{name}.zarr", consolidated=False)[name]
              for name in layers}
    ds = dr.compare(stores, metrics=["bures_distance", "eigenspace_overlap", "gulp", "cka"],
                    ridge=0.1)
    for a in layers:
        for b in layers:
            cell = ds.sel(layer_a=a, layer_b=b)
            # a layer with itself: 0 here, the references' rounding (sqrt(eps) scale) there
            assert float(cell.bures_distance) == pytest.approx(
                ref.bures_distance(layers[a], layers[b]), rel=1e-9, abs=1e-5), (a, b)
            assert float(cell.eigenspace_overlap) == pytest.approx(
                ref.eigenspace_overlap(layers[a], layers[b]), abs=1e-9), (a, b)
            assert float(cell.gulp) == pytest.approx(
                ref.gulp(layers[a], layers[b], 0.1), rel=1e-7, abs=1e-6), (a, b)
    assert float(ds.bures_distance.sel(layer_a="x", layer_b="x")) == 0.0
    assert float(dr.bures_distance(stores["x"], stores["y"])) == pytest.approx(
        ref.bures_distance(x, y), rel=1e-9)


def test_limits_and_scale():
    """Bures: 0 on a rotated, shifted copy, the norm of the difference when the copy is
    scaled, a metric; EOS: 1 on an invertible map of a full-rank layer, r / max(p, q) for a
    subspace, below 1 on a rank-deficient layer with itself, changed by a shift."""
    x, y = KINDS["gaussian"]
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(9, 9)))
    assert float(dr.bures_distance(x, x @ q - 7.0)) == 0.0
    xc = x - x.mean(axis=0)
    assert float(dr.bures_distance(x, 3 * x)) == pytest.approx(
        2 * np.linalg.norm(xc) / np.sqrt(len(x)), rel=1e-9)  # the rms of 2 x_c
    # per sample: the same on the samples twice over (n does not enter)
    assert float(dr.bures_distance(np.vstack([x, x]), np.vstack([y, y]))) == pytest.approx(
        float(dr.bures_distance(x, y)), rel=1e-12)
    z = np.cos(x[:, :4])
    dxy, dxz, dzy = (float(dr.bures_distance(a, b)) for a, b in ((x, y), (x, z), (z, y)))
    assert dxy <= dxz + dzy
    mixed = x @ np.random.default_rng(1).normal(size=(9, 9))
    assert float(dr.eigenspace_overlap(x, mixed)) == pytest.approx(1.0, abs=1e-9)
    assert float(dr.eigenspace_overlap(x, x[:, :3])) == pytest.approx(3 / 9, abs=1e-9)
    low = KINDS["low rank"][0]
    assert float(dr.eigenspace_overlap(low, low)) == pytest.approx(3 / 12, abs=1e-9)
    assert float(dr.eigenspace_overlap(x, x + 5.0)) < 1 - 1e-3  # the mean is part of the space
    # the permutation metric: 0 on permuted, scaled, shifted units; not on a rotation
    order = np.random.default_rng(2).permutation(9)
    assert float(dr.permutation_distance(x, 2.5 * x[:, order] - 1.0)) == 0.0
    assert float(dr.permutation_distance(x, x @ q)) > 0.1
    # GULP at ridge 0: rank_x + rank_y - 2 sum rho^2; 0 on an invertible map and a shift
    assert float(dr.gulp(x, x)) == 0.0
    # another basis of the same space: 0 up to rounding amplified by the map's conditioning
    assert float(dr.gulp(x, mixed - 2.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(dr.gulp(x, x[:, :3])) == pytest.approx(np.sqrt(9 + 3 - 2 * 3), rel=1e-9)
    assert float(dr.gulp(x, 4 * x @ q, ridge=0.1)) == 0.0  # rotation and scale
    assert float(dr.gulp(x, mixed, ridge=0.1)) > 0.01  # not any linear map


def test_uncertainty_and_direction():
    """Intervals and permutation tests come from the same pass as every co-moment measure; the
    distance's p-value counts the null from below."""
    x, y = KINDS["gaussian"]
    bures = dr.bures_distance(x, y, permutations=19, seed=2, interval="jackknife")
    assert bures.pvalue == pytest.approx(1 / 20) and float(bures) < min(bures.null)
    assert bures.ci_low < float(bures) < bures.ci_high
    eos = dr.eigenspace_overlap(x, np.random.default_rng(3).normal(size=y.shape),
                                permutations=19, seed=2)
    assert eos.pvalue > 0.05 and eos.method == "covariance"


def test_errors_in_terms_of_the_data():
    x, y = KINDS["gaussian"]
    dead = np.ones_like(y)
    for ridge in (-0.5, float("inf"), "1"):
        with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
            dr.gulp(x, y, ridge=ridge)
    with pytest.raises(ValueError, match="ridge= applies to the metric"):
        dr.compare({"x": x}, {"y": y}, metrics=["cka"], ridge=0.1)
    for name, function in MEASURES.items():
        with pytest.raises(dr.NoVarianceError, match="constant"):
            function(x, dead)
        with pytest.raises(ValueError, match="computes"):
            function(x, y, method="gram")
        with pytest.raises(dr.SampleCountError, match=f"{name} needs at least 3 samples"):
            dr.compare({"x": x[:2]}, {"y": y[:2]}, metrics=[name])


EXAMPLES = settings(max_examples=25, deadline=None)


@EXAMPLES
@given(data=activations(), choice=st.data())
def test_invariances(data, choice):
    """Bures: rotations and shifts of either side; EOS and GULP at ridge 0: any invertible map
    of either side; GULP at ridge > 0: rotations and isotropic scaling; the permutation metric:
    permutations of units, isotropic scaling and shifts."""
    x, y = data.dask(data.x), data.dask(data.y)
    q = choice.draw(orthogonal_matrices(data.x.shape[1]), label="Q")
    w = choice.draw(well_conditioned_matrices(data.y.shape[1]), label="W")
    ds = dr.compare({"x": x, "xq": data.dask(data.x @ q + 3.0)},
                    {"y": y, "yw": data.dask(data.y @ w)},
                    metrics=["bures_distance", "eigenspace_overlap", "gulp"])
    ridged = dr.compare({"x": x, "xq": data.dask(2.5 * data.x @ q)}, {"y": y},
                        metrics=["gulp"], ridge=0.05)
    order = choice.draw(permutations(data.x.shape[1]), label="permutation")
    permuted = dr.compare({"x": x, "xp": data.dask(3.0 * data.x[:, order] - 1.0)}, {"y": y},
                          metrics=["permutation_distance"])
    cells = {(a, b): ds.sel(layer_a=a, layer_b=b) for a in ("x", "xq") for b in ("y", "yw")}
    np.testing.assert_allclose(float(cells["xq", "y"].bures_distance),
                               float(cells["x", "y"].bures_distance), rtol=1e-8)
    np.testing.assert_allclose(float(cells["x", "yw"].eigenspace_overlap),
                               float(cells["x", "y"].eigenspace_overlap), atol=1e-8)
    np.testing.assert_allclose(float(cells["xq", "yw"].gulp), float(cells["x", "y"].gulp),
                               rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(ridged.gulp.sel(layer_a="xq").item(),
                               ridged.gulp.sel(layer_a="x").item(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(permuted.permutation_distance.sel(layer_a="xp").item(),
                               permuted.permutation_distance.sel(layer_a="x").item(),
                               rtol=1e-8, atol=1e-10)
