"""Per-layer statistics compared (magnitude, uniformity, concentricity differences): equal to
ReSi's definitions written densely in tests/references.py on every kind of data, through the
pairwise functions, zarr input and compare; invariances; what they refuse."""

from __future__ import annotations

import numpy as np
import pytest
import references
from conftest import write_zarr
from hypothesis import given, settings
from strategies import activations

import dask_repsim as dr
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks.distances import distance_values

MEASURES = ("magnitude_difference", "uniformity_difference", "concentricity_difference")


def _kinds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(9)
    n = 140
    z = 0.3 * rng.normal(size=(n, 10)) + 0.2
    related = np.tanh(z @ rng.normal(size=(10, 7))) + 0.1 * rng.normal(size=(n, 7))
    return {
        "gaussian": (z, related),
        "low_rank": (rng.normal(size=(n, 2)) @ rng.normal(size=(2, 20)) * 0.2 + 1, related),
        "heavy_tailed": (0.2 * rng.standard_t(2.5, size=(n, 6)) + 0.5, related),
        "offset": (z + 1e4, related - 1e4),
        "relu_integer": (np.floor(np.maximum(4 * z, 0)), np.floor(np.maximum(3 * related, 0))),
        "n_below_p": (0.1 * rng.normal(size=(30, 200)) + 0.3, 0.1 * rng.normal(size=(30, 40))),
    }


@pytest.mark.parametrize("kind", list(_kinds()))
def test_equal_resis_definitions(kind):
    x, y = _kinds()[kind]
    for m in MEASURES:
        expected = getattr(references, m)(x, y)
        got = float(getattr(dr, m)(x, y))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (kind, m)
        assert float(getattr(dr, m)(y, x)) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    for rows in (16, 57):
        got = distance_values(as_layer(x), as_layer(y, name="y"), block_rows=rows,
                              measures=MEASURES[1:])
        for m in MEASURES[1:]:
            assert got[m] == pytest.approx(getattr(references, m)(x, y), rel=1e-9, abs=1e-12)


def test_zarr_compare_and_the_all_zero_sample(tmp_path):
    x, y = _kinds()["relu_integer"]
    x[[3, 50]] = 0.0  # dead samples, as ReLU layers have: no direction, they count 0
    write_zarr(tmp_path / "a.zarr", "x", x, chunks=(40, 10))
    write_zarr(tmp_path / "a.zarr", "y", y, chunks=(33, 7))
    ds = dr.compare(str(tmp_path / "a.zarr"), metrics=[*MEASURES, "cka"])
    layers = {"x": x, "y": y}
    for a in layers:
        for b in layers:
            for m in MEASURES:
                assert float(ds[m].sel(layer_a=a, layer_b=b)) == pytest.approx(
                    getattr(references, m)(layers[a], layers[b]), rel=1e-9, abs=1e-12)
    assert float(ds.magnitude_difference.sel(layer_a="x", layer_b="x")) == 0.0
    assert set(ds.attrs["method"].split(" + ")) == {"covariance", "sample_blocks"}


@settings(max_examples=15, deadline=None)
@given(activations(max_features=5))
def test_invariances(data):
    """Magnitude: rotations (not translations); uniformity: rotations and translations;
    concentricity: rotations and the scale of either layer."""
    x, y = data.x, data.y
    rng = np.random.default_rng(int(abs(x[0, 0]) * 1e6) % 2**32)
    q = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))[0]
    m = float(dr.magnitude_difference(x, y))
    assert float(dr.magnitude_difference(x @ q, y)) == pytest.approx(m, rel=1e-9, abs=1e-9)
    small = x / np.abs(x).max() * 0.5  # squared distances where exp(-2 d^2) does not vanish
    u = float(dr.uniformity_difference(small, y / np.abs(y).max()))
    moved = small @ q + rng.normal(size=x.shape[1])
    assert float(dr.uniformity_difference(moved, y / np.abs(y).max())) == pytest.approx(
        u, rel=1e-9, abs=1e-12)
    c = float(dr.concentricity_difference(x, y))
    assert float(dr.concentricity_difference(2.5 * x @ q, 0.1 * y)) == pytest.approx(
        c, rel=1e-9, abs=1e-12)


def test_what_they_refuse():
    x, y = _kinds()["gaussian"]
    for m in MEASURES:
        with pytest.raises(ValueError, match="does not depend on how the two layers' samples "
                                             "are paired"):
            getattr(dr, m)(x, y, permutations=99)
    with pytest.raises(ValueError, match="does not depend on how"):
        dr.compare({"x": x}, {"y": y}, metrics=["cka", "magnitude_difference"],
                   permutations=99)
    # the magnitude comes with a jackknife interval from the co-moment pass
    e = dr.magnitude_difference(x, y, interval="jackknife", groups=10)
    bounds = np.linspace(0, len(x), 11).astype(int)
    replicates = np.array([references.magnitude_difference(
        np.delete(x, np.s_[a:b], axis=0), np.delete(y, np.s_[a:b], axis=0))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    stderr = np.sqrt(9 / 10 * ((replicates - replicates.mean()) ** 2).sum())
    assert e.stderr == pytest.approx(stderr, rel=1e-6) and e.method == "covariance"
    assert e.ci_low < e.ci_high
    # the uniformity's and concentricity's from the tiles: tests/paths/test_distances_inference.py
    centred = x - x.mean(axis=0)
    with pytest.raises(dr.InputError, match="the mean of its activations is the zero vector"):
        dr.concentricity_difference(centred, y)
