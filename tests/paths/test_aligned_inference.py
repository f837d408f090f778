"""Permutation null and jackknife replicates of aligned cosine similarity: each null value is
the measure recomputed with scipy's orthogonal Procrustes (tests/references.py) on x and y's
rows permuted by the documented permutations, each replicate that of the samples outside its
group; neither depends on the chunking, the permutations per pass or the grid; the p-values
are calibrated, gain power with n, and the intervals cover."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import references
from scipy import stats

import dask_repsim as dr
from dask_repsim import registry
from dask_repsim.engine.permuted import sample_permutations
from dask_repsim.engine.stream import group_bounds
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks.aligned import aligned_cosine
from dask_repsim.paths.sample_blocks.aligned_inference import aligned_values, permutation_batch
from dask_repsim.paths.sample_blocks.cells import sample_cells

BLOCK = 64
W = np.random.default_rng(11).normal(size=(5, 3))


def _pair(n: int, seed: int, noise: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """5 units off the origin and 3 that are a tanh of a mix of them plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)) + 0.5
    return x, np.tanh(x @ W) + noise * rng.normal(size=(n, 3))


def _outside(z: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.delete(z, np.s_[lo:hi], axis=0)


def _replicates(x: np.ndarray, y: np.ndarray, groups: int) -> list[float]:
    bounds = group_bounds(len(x), groups)
    return [references.aligned_cosine(_outside(x, lo, hi), _outside(y, lo, hi))
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize("chunks", [None, 37, 100], ids=["one_chunk", "chunks_37", "chunks_100"])
@pytest.mark.parametrize("wide", ["x", "y"], ids=["x_wider", "y_wider"])
def test_null_and_replicates_equal_scipy_on_permuted_and_remaining_samples(small_blocks, chunks,
                                                                           wide):
    """n = 150 over three permutation blocks, stored in one chunk or chunks of 37 or 100 rows,
    either layer the wider: the k-th null value is scipy's Procrustes on x and y[perm_k],
    replicate g that of the samples outside group g, to 1e-10."""
    n, count, seed, groups = 150, 5, 3, 7
    x, y = _pair(n, 1) if wide == "x" else _pair(n, 1)[::-1]
    layers = [as_layer(z if chunks is None else da.from_array(z, chunks=(chunks, -1)), name=nm)
              for z, nm in ((x, "x"), (y, "y"))]
    got = aligned_values(*layers, null=(count, seed), groups=groups)
    perms = sample_permutations(n, seed, count, BLOCK)
    assert sorted(perms[0, 64:128]) == list(range(64, 128))  # within blocks
    assert got["aligned_cosine"] == pytest.approx(references.aligned_cosine(x, y), abs=1e-12)
    null = got["null"]["aligned_cosine"]
    np.testing.assert_allclose(null, [references.aligned_cosine(x, y[p]) for p in perms],
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["replicates"]["aligned_cosine"],
                               _replicates(x, y, groups), rtol=0, atol=1e-10)
    assert np.ptp(null) > 1e-3 and max(null) < got["aligned_cosine"] - 0.05
    assert np.ptp(got["replicates"]["aligned_cosine"]) > 1e-6


def test_samples_without_a_direction(small_blocks):
    """Samples all zero in x or y are left out of the value (one warning), of each permutation
    (where their partner moved) and of each replicate, as scipy's recomputation leaves them."""
    x, y = _pair(140, 2)
    x[[3, 70, 71]] = 0.0
    y[[5, 90]] = 0.0
    with pytest.warns(dr.RepsimWarning, match="leaves out 5 of 140 samples"):
        got = aligned_values(as_layer(x), as_layer(y, name="y"), null=(4, 6), groups=6)
    np.testing.assert_allclose(got["null"]["aligned_cosine"],
                               [references.aligned_cosine(x, y[p])
                                for p in sample_permutations(140, 6, 4, BLOCK)],
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(got["replicates"]["aligned_cosine"], _replicates(x, y, 6),
                               rtol=0, atol=1e-10)


def test_the_same_for_any_chunking_batch_of_permutations_or_grid(small_blocks):
    """Chunks of 37 or 41 rows against one chunk; a memory budget that takes the permutations
    two at a time (four passes); the cells of a 2 x 3 grid with other layers (what compare
    runs); the public function against compare, field by field."""
    n = 230
    x, y = _pair(n, 5)
    z = np.random.default_rng(6).normal(size=(n, 4))
    one = aligned_values(as_layer(x), as_layer(y, name="y"), null=(7, 2), groups=9)
    chunked = aligned_values(as_layer(da.from_array(x, chunks=(37, 5))),
                             as_layer(da.from_array(y, chunks=(41, 3)), name="y"),
                             null=(7, 2), groups=9)
    # 9 groups' and 2 permutations' sums (16 p q + 8 bytes each) in 7 copies of a result
    budget = {"repsim.memory-budget": (9 + 2) * 7 * (16 * 5 * 3 + 8), "scheduler": "sync"}
    with dask.config.set(budget):
        assert permutation_batch(5, 3, 9, 7) == 2
        batched = aligned_values(as_layer(x), as_layer(y, name="y"), null=(7, 2), groups=9)
    plain = aligned_values(as_layer(x), as_layer(y, name="y"))  # two passes, no inference
    assert set(plain) == {"aligned_cosine"}
    assert plain["aligned_cosine"] == aligned_cosine(as_layer(x), as_layer(y, name="y"))
    assert one["aligned_cosine"] == pytest.approx(plain["aligned_cosine"], abs=1e-14)
    for part in ("null", "replicates"):
        for other in (chunked, batched):
            np.testing.assert_allclose(other[part]["aligned_cosine"],
                                       one[part]["aligned_cosine"], rtol=0, atol=1e-13)
    layers = [as_layer(a, name=name) for a, name in ((x, "x"), (z, "z"), (y, "y"))]
    functions = registry.path_functions("sample_blocks", ["aligned_cosine"])
    cells, _ = sample_cells(functions, layers, [0, 1], [2, 1, 0], ["aligned_cosine"],
                            permutations=7, seed=2, groups=9)
    np.testing.assert_allclose(cells[0, 0, 0].null, one["null"]["aligned_cosine"], rtol=0,
                               atol=1e-13)
    np.testing.assert_allclose(cells[0, 0, 0].replicates, one["replicates"]["aligned_cosine"],
                               rtol=0, atol=1e-13)
    grid = dr.compare({"x": x, "z": z}, {"y": y, "z2": z}, metrics=["aligned_cosine"],
                      permutations=7, seed=2, interval="jackknife", groups=9)
    e = dr.aligned_cosine(x, y, permutations=7, seed=2, interval="jackknife", groups=9)
    cell = grid.sel(layer_a="x", layer_b="y")
    assert list(e.null) == pytest.approx(one["null"]["aligned_cosine"], abs=1e-13)
    for field, suffix in (("pvalue", "pvalue"), ("null_mean", "null_mean"), ("stderr", "stderr"),
                          ("ci_centre", "centre"), ("ci_low", "low"), ("ci_high", "high")):
        assert getattr(e, field) == pytest.approx(float(cell[f"aligned_cosine_{suffix}"]),
                                                  abs=1e-12)


def test_public_function_test_and_interval():
    """A related pair is significant (p = 1/100), an unrelated one not; the interval is centred
    on the bias-corrected estimate of the replicates recomputed with scipy."""
    x, y = _pair(300, 7)
    unrelated = np.random.default_rng(8).normal(size=(300, 3))
    related = dr.aligned_cosine(x, y, permutations=99, seed=1)
    assert related.pvalue == pytest.approx(0.01) and related.n_permutations == 99
    assert related.null_mean + 3 * related.null_std < float(related)
    assert dr.aligned_cosine(x, unrelated, permutations=99).pvalue > 0.05
    e = dr.aligned_cosine(x, y, interval="jackknife", groups=10)
    reps = np.array(_replicates(x, y, 10))
    assert e.ci_centre == pytest.approx(10 * float(e) - 9 * reps.mean(), abs=1e-10)
    assert e.stderr == pytest.approx(np.sqrt(0.9 * np.sum((reps - reps.mean()) ** 2)), rel=1e-8)
    assert e.ci_low < e.ci_centre < e.ci_high


def test_errors_and_no_nan():
    """More groups than samples says so; a group holding every sample with a direction leaves
    a replicate without one, an error naming the group; nulls and replicates are finite."""
    x, y = _pair(40, 9)
    with pytest.raises(ValueError, match="groups=41 is more than the 40 samples: a jackknife "
                                         "group needs at least one sample"):
        dr.aligned_cosine(x, y, interval="jackknife", groups=41)
    got = aligned_values(as_layer(x), as_layer(y, name="y"), null=(9, 0), groups=8)
    assert np.isfinite(got["null"]["aligned_cosine"]).all()
    assert np.isfinite(got["replicates"]["aligned_cosine"]).all()
    x[10:] = 0.0
    with pytest.warns(dr.RepsimWarning, match="leaves out 30 of 40"), pytest.raises(
            dr.InputError, match=r"undefined without samples 0 to 9 \(jackknife group 0\): "
                                 r"every sample there is all zeros in one of the layers"):
        aligned_values(as_layer(x), as_layer(y, name="y"), groups=4)


def _pvalue(got: dict) -> float:
    return float(dr.results.permutation_pvalue(got["aligned_cosine"],
                                               np.array(got["null"]["aligned_cosine"])))


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_pvalues_of_independent_layers_are_calibrated():
    """500 pairs of independent layers (n = 30 samples, 4 and 3 units off the origin, 19
    permutations): the rate of p <= 0.05 is within its binomial 99% range, the p-values
    uniform."""
    reps, count = 500, 19
    p = np.empty(reps)
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            rng = np.random.default_rng([41, r])
            x, y = rng.normal(size=(30, 4)) + 1.0, np.exp(rng.normal(size=(30, 3)))
            p[r] = _pvalue(aligned_values(as_layer(x), as_layer(y, name="y"), null=(count, r)))
    low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
    assert low <= np.sum(p <= 0.05) <= high, np.sum(p <= 0.05)
    counts = np.histogram(p, bins=[0, 0.26, 0.51, 0.76, 1.01])[0]
    assert stats.chisquare(counts).pvalue > 0.001, counts


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_power_increases_with_the_number_of_samples():
    """A weak relation (noise of sd 3 on the tanh): the rejection rate at 0.05 over 60
    repetitions grows with n, to nearly always at n = 640."""
    rates = []
    with dask.config.set(scheduler="sync"):
        for n in (20, 120, 640):
            hits = 0
            for r in range(60):
                x, y = _pair(n, 1000 * n + r, noise=3.0)
                hits += _pvalue(aligned_values(as_layer(x), as_layer(y, name="y"),
                                               null=(39, r))) <= 0.05
            rates.append(hits / 60)
    assert rates[0] < rates[1] < rates[2], rates
    assert rates[0] < 0.5 and rates[2] > 0.9, rates


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_intervals_cover_at_their_level():
    """200 samples of n = 200: 95% jackknife intervals (20 groups, bias-corrected centre)
    cover the population value (scipy's Procrustes on 400,000 samples) within the 99%
    binomial range of 95%."""
    rng = np.random.default_rng(12)
    truth = references.aligned_cosine(*_pair(400_000, 13))
    sims, covered = 200, 0
    with dask.config.set(scheduler="sync"):
        for _ in range(sims):
            e = dr.aligned_cosine(*_pair(200, int(rng.integers(2**32))), interval="jackknife")
            covered += e.ci_low <= truth <= e.ci_high
    low, high = stats.binom.ppf(0.005, sims, 0.95), stats.binom.isf(0.005, sims, 0.95)
    assert low <= covered <= high, (covered, truth)
