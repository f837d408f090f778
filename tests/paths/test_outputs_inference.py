"""Permutation nulls and jackknife replicates of prediction disagreement and the Jensen-Shannon
divergence: each null value is the measure recomputed in numpy (tests/references.py) on x and
y's rows permuted by the documented permutations, each replicate the measure of the samples
outside its group; neither depends on the chunking or the grid; the p-values are calibrated,
gain power with n, and the intervals cover."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import references
from scipy import special, stats

import dask_repsim as dr
from dask_repsim import registry
from dask_repsim.engine.permuted import sample_permutations
from dask_repsim.engine.stream import group_bounds
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks.cells import sample_cells
from dask_repsim.paths.sample_blocks.outputs import OUTPUT_MEASURES, output_values

BLOCK = 64
REFERENCE = {"disagreement": references.disagreement,
             "jensen_shannon": references.jensen_shannon}


def _logits(n: int, seed: int, classes: int = 5, noise: float = 1.5):
    """Two networks' logits over the same classes, mostly agreeing."""
    rng = np.random.default_rng(seed)
    a = 2.0 * rng.normal(size=(n, classes))
    return a, a + noise * rng.normal(size=(n, classes))


def _outside(z: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.delete(z, np.s_[lo:hi], axis=0)


@pytest.mark.parametrize("chunks", [None, 37, 100], ids=["one_chunk", "chunks_37", "chunks_100"])
def test_null_and_replicates_equal_numpy_on_permuted_and_remaining_samples(small_blocks,
                                                                           chunks):
    """n = 150 over three permutation blocks, stored in one chunk or chunks of 37 or 100 rows:
    the k-th null value is the measure of x and y[perm_k] (disagreement exactly, the
    Jensen-Shannon divergence to 1e-10), replicate g that of the samples outside group g."""
    n, count, seed, groups = 150, 5, 3, 7
    x, y = _logits(n, 1)
    layers = [as_layer(z if chunks is None else da.from_array(z, chunks=(chunks, 5)), name=nm)
              for z, nm in ((x, "x"), (y, "y"))]
    got = output_values(*layers, null=(count, seed), groups=groups)
    perms = sample_permutations(n, seed, count, BLOCK)
    assert sorted(perms[0, 64:128]) == list(range(64, 128))  # within blocks
    bounds = group_bounds(n, groups)
    for m, reference in REFERENCE.items():
        assert got[m] == pytest.approx(reference(x, y), abs=1e-12)
        expected_null = [reference(x, y[perm]) for perm in perms]
        expected_reps = [reference(_outside(x, lo, hi), _outside(y, lo, hi))
                         for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        if m == "disagreement":
            assert got["null"][m] == expected_null
            assert got["replicates"][m] == expected_reps
        else:
            np.testing.assert_allclose(got["null"][m], expected_null, rtol=0, atol=1e-10)
            np.testing.assert_allclose(got["replicates"][m], expected_reps, rtol=0, atol=1e-10)
        assert np.ptp(got["null"][m]) > 1e-3 and np.ptp(got["replicates"][m]) > 1e-6, m
        assert np.mean(got["null"][m]) > got[m] + 0.1, m  # unrelated pairs disagree more


def test_asking_for_one_measure_or_one_kind_of_inference_gives_the_same(small_blocks):
    """One measure alone, the null alone or the replicates alone: the same numbers as both
    measures with both, and the value of the pass without inference."""
    x, y = _logits(200, 2)
    both = output_values(as_layer(x), as_layer(y, name="y"), null=(4, 1), groups=5)
    plain = output_values(as_layer(x), as_layer(y, name="y"))
    for m in OUTPUT_MEASURES:
        alone = output_values(as_layer(x), as_layer(y, name="y"), measures=(m,), null=(4, 1))
        assert alone["null"][m] == both["null"][m] and "replicates" not in alone
        reps = output_values(as_layer(x), as_layer(y, name="y"), measures=(m,), groups=5)
        assert "null" not in reps  # other row blocks without the null: rounding only
        np.testing.assert_allclose(reps["replicates"][m], both["replicates"][m], rtol=1e-14)
        assert both[m] == pytest.approx(plain[m], abs=1e-14)


def test_null_and_replicates_do_not_depend_on_chunking_or_grid(small_blocks):
    """Chunks of 37 or 41 rows against one chunk, the cells of a 2 x 3 grid with other layers
    (what compare runs), and the public functions against compare, cell for cell."""
    n = 230
    x, y = _logits(n, 5)
    z = _logits(n, 6)[0]
    one = output_values(as_layer(x), as_layer(y, name="y"), null=(6, 2), groups=9)
    chunked = output_values(as_layer(da.from_array(x, chunks=(37, 5))),
                            as_layer(da.from_array(y, chunks=(41, 5)), name="y"),
                            null=(6, 2), groups=9)
    for m in OUTPUT_MEASURES:
        for part in ("null", "replicates"):
            np.testing.assert_allclose(chunked[part][m], one[part][m], rtol=0, atol=1e-14)
    layers = [as_layer(a, name=name) for a, name in ((x, "x"), (z, "z"), (y, "y"))]
    metrics = list(OUTPUT_MEASURES)
    functions = registry.path_functions("sample_blocks", metrics)
    cells, _ = sample_cells(functions, layers, [0, 1], [2, 1, 0], metrics, permutations=6,
                            seed=2, groups=9)
    for i, m in enumerate(metrics):
        np.testing.assert_allclose(cells[i, 0, 0].null, one["null"][m], rtol=0, atol=1e-14)
        np.testing.assert_allclose(cells[i, 0, 0].replicates, one["replicates"][m], rtol=0,
                                   atol=1e-14)
    grid = dr.compare({"x": x, "z": z}, {"y": y, "z2": z}, metrics=metrics, permutations=6,
                      seed=2, interval="jackknife", groups=9)
    for m in metrics:
        e = getattr(dr, m)(x, y, permutations=6, seed=2, interval="jackknife", groups=9)
        cell = grid.sel(layer_a="x", layer_b="y")
        assert list(e.null) == pytest.approx(one["null"][m], abs=1e-14)
        for field, suffix in (("pvalue", "pvalue"), ("null_mean", "null_mean"),
                              ("stderr", "stderr"), ("ci_low", "low"), ("ci_high", "high")):
            assert getattr(e, field) == pytest.approx(float(cell[f"{m}_{suffix}"]), abs=1e-12)


def test_public_functions_test_and_interval():
    """A related pair's disagreement and divergence are far below their nulls (p = 1/100, a
    distance counts the null values at or below it); an unrelated pair's are not; the
    jackknife interval of a mean is centred on the estimate itself and its standard error is
    the jackknife formula of the replicates recomputed in numpy."""
    x, y = _logits(300, 7)
    unrelated = _logits(300, 8)[1]
    for m, reference in REFERENCE.items():
        function = getattr(dr, m)
        related = function(x, y, permutations=99, seed=1)
        assert related.pvalue == pytest.approx(0.01) and related.n_permutations == 99
        assert related.null_mean - 3 * related.null_std > float(related), m
        assert function(x, unrelated, permutations=99).pvalue > 0.05, m
        e = function(x, y, interval="jackknife", groups=10)
        assert e.ci_centre == pytest.approx(float(e), abs=1e-12)
        bounds = group_bounds(300, 10)
        reps = np.array([reference(_outside(x, lo, hi), _outside(y, lo, hi))
                         for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])
        stderr = np.sqrt(9 / 10 * np.sum((reps - reps.mean()) ** 2))
        assert e.stderr == pytest.approx(stderr, rel=1e-9)
        assert e.ci_low < float(e) < e.ci_high


def test_errors_and_no_nan():
    """More groups than samples says so; confident logits (near one-hot softmax, zeros in the
    divergence's logarithms) give finite nulls and replicates."""
    x, y = _logits(40, 9)
    for m in OUTPUT_MEASURES:
        with pytest.raises(ValueError, match="groups=41 is more than the 40 samples: a "
                                             "jackknife group needs at least one sample"):
            getattr(dr, m)(x, y, interval="jackknife", groups=41)
    with pytest.raises(ValueError, match="groups must be at least 2"):
        output_values(as_layer(x), as_layer(y, name="y"), groups=1)
    got = output_values(as_layer(200 * x), as_layer(200 * y, name="y"), null=(9, 0), groups=8)
    for m in OUTPUT_MEASURES:
        assert np.isfinite(got["null"][m]).all() and np.isfinite(got["replicates"][m]).all()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # its unused branch
        expected = [references.jensen_shannon(200 * x, 200 * y[p])
                    for p in sample_permutations(40, 0, 9)]
    assert (special.softmax(200 * x, axis=1) == 0).any()  # probabilities of exactly 0
    np.testing.assert_allclose(got["null"]["jensen_shannon"], expected, rtol=0, atol=1e-10)


def _pvalues(got: dict, m: str) -> float:
    return float(dr.results.permutation_pvalue(got[m], np.array(got["null"][m]),
                                               similarity=False))


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_pvalues_of_independent_outputs_are_calibrated():
    """500 pairs of independent output layers (n = 30 samples, 3 classes, 19 permutations):
    for each measure the rate of p <= 0.05 is within its binomial 99% range; the divergence's
    p-values are uniform (disagreement's take few values: ties count against rejecting)."""
    reps, count = 500, 19
    p = {m: np.empty(reps) for m in OUTPUT_MEASURES}
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            rng = np.random.default_rng([31, r])
            x, y = rng.normal(size=(30, 3)), 2 * rng.normal(size=(30, 3))
            got = output_values(as_layer(x), as_layer(y, name="y"), null=(count, r))
            for m in OUTPUT_MEASURES:
                p[m][r] = _pvalues(got, m)
    low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
    for m in OUTPUT_MEASURES:
        assert low <= np.sum(p[m] <= 0.05) <= high, (m, np.sum(p[m] <= 0.05))
    counts = np.histogram(p["jensen_shannon"], bins=[0, 0.26, 0.51, 0.76, 1.01])[0]
    assert stats.chisquare(counts).pvalue > 0.001, counts


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_power_increases_with_the_number_of_samples():
    """Weakly related outputs (3 classes, y = x + noise five times as large): the rejection
    rate at 0.05 over 60 repetitions grows with n, to nearly always at n = 640."""
    rates = {m: [] for m in OUTPUT_MEASURES}
    with dask.config.set(scheduler="sync"):
        for n in (20, 120, 640):
            hits = dict.fromkeys(OUTPUT_MEASURES, 0)
            for r in range(60):
                x, y = _logits(n, 1000 * n + r, classes=3, noise=10.0)
                got = output_values(as_layer(x), as_layer(y, name="y"), null=(39, r))
                for m in OUTPUT_MEASURES:
                    hits[m] += _pvalues(got, m) <= 0.05
            for m in OUTPUT_MEASURES:
                rates[m].append(hits[m] / 60)
    for m, found in rates.items():
        assert found[0] < found[1] < found[2], (m, found)
        assert found[0] < 0.5 and found[2] > 0.9, (m, found)


def _divergence_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's Jensen-Shannon divergence in bits as H(m) - (H(p) + H(q)) / 2 (entropies)."""
    p, q = special.softmax(x, axis=1), special.softmax(y, axis=1)

    def entropy(d):
        return -np.sum(special.xlogy(d, d), axis=1)

    return (entropy((p + q) / 2) - (entropy(p) + entropy(q)) / 2) / np.log(2)


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_intervals_cover_at_their_level():
    """200 samples of n = 200 (5 classes): 95% jackknife intervals (20 groups) cover the
    population value (the measure of 1,000,000 samples, in numpy) within the 99% binomial
    range of 95%."""
    rng = np.random.default_rng(12)
    big = _logits(1_000_000, 13)
    truth = {"disagreement": references.disagreement(*big),
             "jensen_shannon": float(np.mean(_divergence_rows(*big)))}
    sims, covered = 200, dict.fromkeys(OUTPUT_MEASURES, 0)
    with dask.config.set(scheduler="sync"):
        for _ in range(sims):
            x, y = _logits(200, int(rng.integers(2**32)))
            for m in OUTPUT_MEASURES:
                e = getattr(dr, m)(x, y, interval="jackknife")
                covered[m] += e.ci_low <= truth[m] <= e.ci_high
    low, high = stats.binom.ppf(0.005, sims, 0.95), stats.binom.isf(0.005, sims, 0.95)
    for m in OUTPUT_MEASURES:
        assert low <= covered[m] <= high, (m, covered[m], truth[m])
