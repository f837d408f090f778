"""Representation Topology Divergence (Barannikov et al. 2022) against independent computations
of the same barcode: ripser's (a second library, on the ranks of the entries so that its float32
arithmetic loses nothing; ``references.rtd``), a Z/2 reduction of the boundary matrix written
here for a few samples, and a configuration whose bars are worked out by hand; then its
invariances, the memory refusal and the errors."""

from __future__ import annotations

import itertools
import sys

import dask
import dask.array as da
import numpy as np
import pytest
import references
import zarr
from conftest import write_zarr
from dask.utils import format_bytes

import dask_repsim as dr
from dask_repsim.paths.sample_blocks import topology


def _pair(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = np.tanh(x @ rng.normal(size=(6, 5))) + 0.3 * rng.normal(size=(n, 5))
    return x, y


def _blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=4.0, size=(5, 3))
    x = centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 3))
    return x, np.maximum(x @ rng.normal(size=(3, 8)), 0.0) + 0.1 * rng.normal(size=(n, 8))


def _ties(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Small integer activations: many equal distances, repeated samples."""
    rng = np.random.default_rng(5)
    return rng.integers(0, 3, size=(n, 3)).astype(float), rng.integers(0, 4, size=(n, 2)) * 1.0


@pytest.mark.parametrize("data", [_pair, _blobs, _ties])
def test_equals_ripser_on_the_authors_matrices(data):
    x, y = data(120)
    assert float(dr.rtd(x, y)) == pytest.approx(references.rtd(x, y), abs=1e-10)


def _h1_by_reduction(m: np.ndarray) -> float:
    """The summed lengths of the one-dimensional bars of the Rips filtration of ``m``, by the
    standard reduction over Z/2 of the boundary matrix of its whole 2-skeleton, simplices in
    the order of their values (faces first)."""
    v = len(m)
    simplices = [(0.0, 0, (i,)) for i in range(v)]
    simplices += [(m[i, j], 1, (i, j)) for i, j in itertools.combinations(range(v), 2)]
    simplices += [(max(m[i, j], m[i, k], m[j, k]), 2, (i, j, k))
                  for i, j, k in itertools.combinations(range(v), 3)]
    simplices.sort(key=lambda s: (s[0], s[1]))
    position = {s[2]: p for p, s in enumerate(simplices)}
    reduced, column_of_low, total = {}, {}, 0.0
    for p, (value, dim, vertices) in enumerate(simplices):
        column = {position[f] for f in itertools.combinations(vertices, dim)} if dim else set()
        while column and max(column) in column_of_low:
            column ^= reduced[column_of_low[max(column)]]
        reduced[p] = column
        if column:
            column_of_low[max(column)] = p
            if dim == 2:  # kills the cycle its lowest edge gave birth to
                total += value - simplices[max(column)][0]
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_barcode_equals_a_boundary_matrix_reduction(seed):
    x, y = _pair(6, seed)
    assert float(dr.rtd(x, y)) == pytest.approx(
        references.rtd(x, y, h1_length=_h1_by_reduction), abs=1e-12)
    r = [topology.normalised_distances(a, "a") for a in (x, y)]
    m = references.rtd_matrix(r[1], r[0])
    assert topology.h1_length(m, topology.rips_persistence()) == pytest.approx(
        _h1_by_reduction(m), abs=1e-12)


def test_a_configuration_worked_out_by_hand():
    """x: an equilateral triangle, every normalised distance 1 (the 0.9 quantile of the nine
    entries is the side); y: base 0.5, legs 1, normalised by the leg to (0.5, 1, 1). In m(x, y)
    the edge of the close pair is born at 0.5 and its cycle dies at x's distance 1: one bar of
    length 0.5. In m(y, x) every bar has length 0 (y's distances are the minima). RTD is 0.25."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    h = np.sqrt(1 - 0.25**2)
    y = np.array([[-0.25, 0.0], [0.25, 0.0], [0.0, h]])
    assert float(dr.rtd(x, y)) == pytest.approx(0.25, abs=1e-12)


def test_invariances_and_symmetry():
    x, y = _pair(80, 3)
    value = float(dr.rtd(x, y))
    assert value > 1
    assert float(dr.rtd(y, x)) == value
    assert float(dr.rtd(x, x)) == 0.0
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert float(dr.rtd(x, 7 * y @ q - 3)) == pytest.approx(value, abs=1e-9)
    assert float(dr.rtd(x[:, ::-1], y[:, [2, 0, 4, 1, 3]])) == pytest.approx(value, abs=1e-9)
    order = rng.permutation(80)  # the same samples in another order, in both layers
    assert float(dr.rtd(x[order], y[order])) == pytest.approx(value, abs=1e-9)
    # a map that stretches one direction changes the distances' shape: not invariant
    assert float(dr.rtd(x, x * np.array([1, 1, 1, 1, 1, 10.0]))) > 0.5


def _unreadable(block: np.ndarray) -> np.ndarray:
    raise AssertionError("the activations were read")


def test_refuses_beyond_the_memory_budget_before_reading():
    x = da.zeros((200, 4), chunks=(50, 4)).map_blocks(_unreadable, dtype=float)
    y = da.zeros((200, 3), chunks=(50, 3)).map_blocks(_unreadable, dtype=float)
    need = format_bytes(8 * 200 * 7 + topology.BYTES_PER_SQUARE * 200**2)
    message = (rf"rtd holds all 200 samples in memory, .*400-point Rips filtration: about "
               rf"{need}, over the memory budget \(10.00 MiB.*compare a subset of the samples")
    with dask.config.set({"repsim.memory-budget": "10 MiB"}):
        with pytest.raises(ValueError, match=message):
            dr.rtd(x, y)
        with pytest.raises(ValueError, match=message):
            dr.compare({"a": x}, {"b": y}, metrics=["rtd"])


def test_missing_gudhi_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gudhi.sklearn.rips_persistence", None)
    x, y = _pair(20)
    with pytest.raises(ImportError, match=r"pip install 'dask-repsim\[topology\]'"):
        dr.rtd(x, y)


def test_mostly_equal_samples_are_an_error_naming_the_layer():
    x, y = _pair(40)
    x[2:] = x[0]  # 38 equal samples: over 90% of the distances are 0
    with pytest.raises(dr.InputError, match=r"conv: at least 90% of its distances .* are 0"):
        dr.compare({"conv": x}, {"fc": y}, metrics=["rtd"])


def test_reads_each_chunk_at_most_twice(counting_store):
    x, y = _pair(150)
    write_zarr(counting_store, "x", x, chunks=(40, 6))
    write_zarr(counting_store, "y", y, chunks=(64, 3))
    counting_store.reads.clear()
    group = zarr.open_group(counting_store, mode="r")
    with dask.config.set(scheduler="threads"):
        value = float(dr.rtd(group["x"], group["y"]))
    assert value == pytest.approx(references.rtd(x, y), abs=1e-10)
    reads = counting_store.chunk_reads()
    assert reads and max(reads.values()) <= 2  # the input checks' pass, then the read


def test_each_permuted_value_is_rtd_of_the_permuted_layer():
    """The null: rtd (ripser's, ``references.rtd``) of x and y with its samples permuted by
    the other paths' permutations for the seed; its p-value counts the null values at or
    below the observed divergence."""
    from dask_repsim.engine.permuted import permutation_series

    x, y = _pair(60, seed=3)
    e = dr.rtd(x, y, permutations=9, seed=5)
    perms = permutation_series(60, 5, 9)
    expected = [references.rtd(x, y[perm]) for perm in perms]
    np.testing.assert_allclose(e.null, expected, rtol=0, atol=1e-10)
    assert e.pvalue == pytest.approx((1 + np.sum(np.array(expected) <= float(e) + 1e-12)) / 10)
    # a related pair diverges less than its permutations: the smallest p-value 9 can give
    assert float(e) < min(expected) and e.pvalue == pytest.approx(0.1)


def test_permutations_in_a_grid_and_their_limits():
    x, y = _pair(40, seed=8)
    z = np.random.default_rng(9).normal(size=(40, 3))
    ds = dr.compare({"x": x}, {"y": y, "z": z}, metrics=["rtd"], permutations=19, seed=2)
    one = dr.rtd(x, z, permutations=19, seed=2)
    assert float(ds.rtd_null_mean.sel(layer_a="x", layer_b="z")) == pytest.approx(
        np.mean(one.null), abs=1e-12)
    assert float(ds.rtd_pvalue.sel(layer_a="x", layer_b="z")) == pytest.approx(one.pvalue)
    # an interval too, centred on the value (tests/paths/test_topology_inference.py)
    assert dr.rtd(x, y, interval="jackknife").ci_centre == float(dr.rtd(x, y))
    # the permuted distances are held beside y's own: 8 more bytes per squared sample count
    assert topology.rtd_bytes(100, 3, 3, permuted=True) - topology.rtd_bytes(100, 3, 3) == 80_000


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_pvalues_of_independent_layers_are_calibrated_and_power_grows():
    """500 pairs of independent layers (n = 20, 19 permutations): the rate of p <= 0.05 is
    within its binomial 99% range and the p-values are uniform; a weak relation is rejected
    more often as n grows."""
    from scipy import stats

    from dask_repsim.io.inputs import as_layer

    def pvalue(x, y, seed):
        got = topology.rtd_value(as_layer(x), as_layer(y, name="y"), null=(19, seed))
        return dr.results.permutation_pvalue(got["rtd"], np.array(got["null"]["rtd"]),
                                             similarity=False)

    reps = 500
    with dask.config.set(scheduler="sync"):
        p = np.array([pvalue(*(np.random.default_rng([7, r]).normal(size=(2, 20, 3))), r)
                      for r in range(reps)])
        low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
        assert low <= np.sum(p <= 0.05) <= high, np.sum(p <= 0.05)
        counts = np.histogram(p, bins=[0, 0.26, 0.51, 0.76, 1.01])[0]
        assert stats.chisquare(counts).pvalue > 0.001, counts
        rates = []
        for n in (10, 25, 60):
            hits = 0
            for r in range(40):
                rng = np.random.default_rng([n, r])
                x = rng.normal(size=(n, 3))
                hits += pvalue(x, np.tanh(x) + 0.6 * rng.normal(size=(n, 3)), r) <= 0.05
            rates.append(hits / 40)
    print(f"rtd: {np.sum(p <= 0.05)} of {reps} p <= 0.05 under independence; power {rates}")
    assert rates[0] < rates[1] < rates[2] and rates[2] >= 0.8, rates
