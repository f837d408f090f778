"""Laplace-kernel CKA over row-block tiles of the distance matrices: equal to the dense n x n
formula on every kind of data, through the pairwise function, a zarr store and ``compare``;
each layer's median exact up to the limit and over the seeded subset beyond; invariant to what
it should be; one pass over the tiles shared with distance correlation; refused options
named."""

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
from dask_repsim.paths.sample_blocks.distances import distance_values, laplace_medians


def _kinds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return data_kinds(11, 150)


def _sq_distances(a: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)


@pytest.mark.parametrize("kind", list(_kinds()))
def test_equals_the_dense_formula(kind):
    x, y = _kinds()[kind]
    for sigma in (0.3, 0.8, 3.0):
        expected = references.laplace_cka(x, y, sigma)
        for rows in (17, 64, len(x)):
            got = distance_values(as_layer(x), as_layer(y, name="y"), block_rows=rows,
                                  measures=("cka_laplace",), sigma=sigma)
            assert got["cka_laplace"] == pytest.approx(expected, rel=1e-10), (sigma, rows)
        for a, b in ((x, y), (y, x)):  # both argument orders, the pairwise function
            value = dr.cka(a, b, kernel="laplace", sigma=sigma)
            assert float(value) == pytest.approx(expected, rel=1e-10), sigma
        assert value.method == "sample_blocks" and value.sigma == sigma
        assert value.median_exact and value.approximate is None
        for got, a in zip(value.median, (y, x), strict=True):  # as numpy's median of n^2
            assert got == pytest.approx(np.median(_sq_distances(a)), rel=1e-12)
    if kind == "quantised":  # integer activations: every squared distance, the median exact
        assert value.median == (np.median(_sq_distances(y)), np.median(_sq_distances(x)))


def test_medians_are_numpys_over_all_pairs_and_the_rbf_medians():
    """The median of all n^2 squared distances with the zero diagonal (odd and even n, one
    block or many), the same as RBF CKA's on the Gram path."""
    rng = np.random.default_rng(3)
    for n in (63, 64, 301):
        x = rng.normal(size=(n, 4)) * [1.0, 3.0, 0.1, 10.0]
        quantised = np.floor(np.maximum(3 * x, 0))
        expected = [np.median(_sq_distances(a)) for a in (x, quantised)]
        for rows in (16, 100, n):
            meds, exact = laplace_medians([as_layer(x), as_layer(quantised, name="q")],
                                          block_rows=rows)
            assert exact
            assert meds[0] == pytest.approx(expected[0], rel=1e-13)
            assert meds[1] == expected[1]  # integers: exact
        rbf = dr.cka(x, quantised, kernel="rbf", method="gram")
        assert dr.cka(x, quantised, kernel="laplace").median == pytest.approx(rbf.median,
                                                                             rel=1e-12)


def test_beyond_the_limit_the_median_is_over_the_seeded_subset(monkeypatch):
    x, y = _kinds()["gaussian"]
    monkeypatch.setattr(distances, "MEDIAN_EXACT_MAX", 100)
    monkeypatch.setattr(distances, "MEDIAN_SAMPLE", 60)
    for seed in (0, 7):
        idx = np.sort(np.random.default_rng(seed).choice(len(x), size=60, replace=False))
        meds = tuple(float(np.median(_sq_distances(a[idx]))) for a in (x, y))
        value = dr.cka(x, y, kernel="laplace", seed=seed)
        assert value.median == pytest.approx(meds, rel=1e-12)
        assert not value.median_exact and "seeded random subset of 60" in value.approximate
        assert float(value) == pytest.approx(references.laplace_cka(x, y, 0.8, meds),
                                             rel=1e-10)
        ds = dr.compare({"x": x}, {"y": y}, metrics=["cka_laplace"], seed=seed)
        assert float(ds.cka_laplace.item()) == pytest.approx(float(value), abs=1e-14)
        assert ds.attrs["median_exact"] == 0 and "subset of 60" in ds.attrs["approximate"]
    assert float(value) != pytest.approx(references.laplace_cka(x, y), rel=1e-6)


def test_zarr_store_and_a_grid_share_one_pass_with_distance_correlation(tmp_path, monkeypatch):
    """Each layer's median found once for the grid; each cell's measures from one pass over
    its tiles, every bandwidth and distance correlation in it; the values the references'."""
    x, y = _kinds()["heavy_tailed"]
    write_zarr(tmp_path / "a.zarr", "x", x, chunks=(50, 10))
    write_zarr(tmp_path / "a.zarr", "y", y, chunks=(33, 4))
    value = dr.cka(str(tmp_path / "a.zarr/x"), str(tmp_path / "a.zarr/y"), kernel="laplace")
    assert float(value) == pytest.approx(references.laplace_cka(x, y), rel=1e-10)
    passes, medians = [], []
    original_pass, original_medians = distances._pass, distances.laplace_medians

    def counted_pass(*args, **kwargs):
        passes.append((args[2], tuple(args[4])))
        return original_pass(*args, **kwargs)

    def counted_medians(layers, *args, **kwargs):
        medians.append([layer.name for layer in layers])
        return original_medians(layers, *args, **kwargs)

    monkeypatch.setattr(distances, "_pass", counted_pass)
    monkeypatch.setattr(distances, "laplace_medians", counted_medians)
    metrics = ["distance_correlation", "cka_laplace", "rsa", "cka"]
    ds = dr.compare(str(tmp_path / "a.zarr"), metrics=metrics, sigma=[0.4, 1.5])
    assert medians == [["x", "y"]]
    assert passes == [(("distance_correlation", "cka_laplace"), (0.4, 1.5))] * 4  # 2 x 2 cells
    layers = {"x": x, "y": y}
    assert ds.attrs["median_exact"] == 1
    given = dict(item.split(": ") for item in ds.attrs["median_sq_distance"].split("; "))
    assert set(given) == set(layers)
    for name, a in layers.items():
        assert float(given[name]) == pytest.approx(np.median(_sq_distances(a)), rel=1e-12)
    for a in layers:
        for b in layers:
            cell = ds.sel(layer_a=a, layer_b=b)
            for sigma in (0.4, 1.5):
                assert float(cell[f"cka_laplace_{sigma:g}"]) == pytest.approx(
                    references.laplace_cka(layers[a], layers[b], sigma), rel=1e-10)
            assert float(cell.distance_correlation) == pytest.approx(
                references.distance_correlation(layers[a], layers[b]), rel=1e-10)
    assert float(ds["cka_laplace_0.4"].sel(layer_a="y", layer_b="y")) == pytest.approx(1.0)


def test_several_bandwidths_beside_rbf_cka():
    x, y = _kinds()["low_rank"]
    ds = dr.compare({"x": x}, {"y": y}, metrics=["cka_rbf", "cka_laplace"], sigma=[0.5, 2.0])
    for sigma in (0.5, 2.0):
        assert float(ds[f"cka_laplace_{sigma:g}"].item()) == pytest.approx(
            references.laplace_cka(x, y, sigma), rel=1e-10)
        assert float(ds[f"cka_rbf_{sigma:g}"].item()) == pytest.approx(
            references.rbf_cka(x, y, sigma), rel=1e-10)
    assert set(ds.attrs["method"].split(" + ")) == {"gram", "sample_blocks"}
    one = dr.compare({"x": x}, {"y": y}, metrics=["cka_laplace"], sigma=2.0)
    assert float(one.cka_laplace.item()) == pytest.approx(float(ds["cka_laplace_2"].item()),
                                                           abs=1e-14)
    with pytest.raises(ValueError, match="sigma= takes one bandwidth in a pairwise call"):
        dr.cka(x, y, kernel="laplace", sigma=[0.5, 2.0])


@settings(max_examples=15, deadline=None)
@given(activations(max_features=6))
def test_invariances(data):
    """Rotations and reflections, isotropic scaling (the bandwidth follows the median),
    translations and permutations of the units of either layer; 1 for a layer with itself;
    symmetric."""
    x, y = data.x, data.y
    rng = np.random.default_rng(int(abs(x[0, 0]) * 1e6) % 2**32)
    q = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))[0]
    value = float(dr.cka(x, y, kernel="laplace"))
    assert 0.0 <= value <= 1.0
    changed = {
        "rotation": x @ q, "scaling": 3.5 * x, "shrinking": 1e-3 * x,
        "translation": x + rng.normal(scale=50.0, size=x.shape[1]),
        "unit permutation": x[:, rng.permutation(x.shape[1])],
    }
    for what, moved in changed.items():
        assert float(dr.cka(moved, y, kernel="laplace")) == pytest.approx(value, rel=1e-9), what
    assert float(dr.cka(y, x, kernel="laplace")) == pytest.approx(value, rel=1e-12)
    assert float(dr.cka(x, 2 * x @ q - 5, kernel="laplace")) == pytest.approx(1.0, rel=1e-12)


def test_not_invariant_to_other_linear_maps_and_its_large_bandwidth_limit():
    """An anisotropic scaling changes it; as sigma grows the kernel tends to 1 - d / (sigma m),
    and the value to the squared distance correlation (the correlation of the double-centred
    distance matrices), as RBF CKA's tends to linear CKA."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5))
    y = np.tanh(x @ rng.normal(size=(5, 5))) + 0.3 * rng.normal(size=(300, 5))
    stretched = x * [10.0, 1.0, 1.0, 1.0, 0.1]
    assert abs(float(dr.cka(stretched, y, kernel="laplace"))
               - float(dr.cka(x, y, kernel="laplace"))) > 1e-3
    limit = references.distance_correlation(x, y) ** 2
    gaps = []
    for sigma in (10.0, 100.0, 1e4):
        value = float(dr.cka(x, y, kernel="laplace", sigma=sigma))
        assert value == pytest.approx(references.laplace_cka(x, y, sigma), rel=1e-10)
        gaps.append(abs(value - limit))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4


def test_refused_options_and_bad_input():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(80, 3)), rng.normal(size=(80, 3))
    with pytest.raises(ValueError, match="debiased=True is not available with kernel='laplace'"):
        dr.cka(x, y, kernel="laplace", debiased=True)
    with pytest.raises(ValueError, match="kernel must be 'linear', 'rbf' or 'laplace'"):
        dr.cka(x, y, kernel="poly")
    for method in ("minibatch", "gram", "covariance"):
        with pytest.raises(ValueError, match=f"method={method!r} computes .* not cka_laplace.*"
                                             "method='sample_blocks'"):
            dr.cka(x, y, kernel="laplace", method=method)
    # intervals and permutation tests: tests/paths/test_distances_inference.py
    with pytest.raises(ValueError, match="not available"):
        dr.cka(x, y, kernel="laplace", nan_policy="omit")
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="sigma must be > 0 and finite"):
            dr.cka(x, y, kernel="laplace", sigma=bad)
    with pytest.raises(dr.NoVarianceError, match="y has no variance"):
        dr.cka(x, np.ones_like(y), kernel="laplace")
    crowded = x.copy()
    crowded[:60] = crowded[0]  # 60 of 80 samples coincide: over half the pairs at distance 0
    with pytest.raises(dr.InputError, match="x: the median squared distance between samples "
                                            "is 0.0; at least half of the pairs"):
        dr.cka(crowded, y, kernel="laplace")
    with pytest.raises(ValueError, match="measures must be among"):
        distance_values(as_layer(x), as_layer(y, name="y"), measures=("laplace",))


def test_the_default_bandwidth_is_rbf_ckas():
    from dask_repsim.options import DEFAULTS

    assert distances.DEFAULT_SIGMA == DEFAULTS["sigma"]
    x, y = _kinds()["gaussian"]
    assert distance_values(as_layer(x), as_layer(y, name="y"), measures=("cka_laplace",)) == {
        "cka_laplace": pytest.approx(references.laplace_cka(x, y, DEFAULTS["sigma"]), rel=1e-10)}


def test_command_line_bandwidths(tmp_path, capsys):
    import json

    from dask_repsim import cli

    x, y = _kinds()["offset"]
    write_zarr(tmp_path / "a.zarr", "x", x, chunks=(40, 12))
    write_zarr(tmp_path / "b.zarr", "y", y, chunks=(64, 9))
    code = cli.main(["compare", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"),
                     "--metric", "cka_laplace", "-m", "distance_correlation",
                     "--sigma", "0.5", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for sigma in (0.5, 2.0):
        assert out[f"cka_laplace_{sigma:g}"]["x"]["y"] == pytest.approx(
            references.laplace_cka(x, y, sigma), rel=1e-10)
    assert out["distance_correlation"]["x"]["y"] == pytest.approx(
        references.distance_correlation(x, y), rel=1e-10)
