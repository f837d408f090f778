"""Permutation nulls and jackknife replicates of the distance-matrix measures (distance
correlation, the RSM norm difference, Laplace CKA; the uniformity and concentricity differences'
replicates) from the one pass over the tiles that gives their values: each null value equals the
measure recomputed densely in float64 on y's samples permuted by the documented permutations,
each replicate the measure recomputed on the samples outside its group; the null depends on the
seed and n only; the p-values are calibrated and gain power with n; the intervals cover the
population value."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import references
from scipy import stats

import dask_repsim as dr
from dask_repsim import registry
from dask_repsim.engine.permuted import permutation_series
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks import distances
from dask_repsim.paths.sample_blocks.cells import sample_cells
from dask_repsim.paths.sample_blocks.distances import distance_values
from dask_repsim.results import permutation_pvalue

BLOCK = 32
PAIRED = ("distance_correlation", "rsm_norm_difference", "cka_laplace")
SIGMAS = (0.5, 1.2)
#: the keys of distance_values with the two bandwidths
KEYS = ("distance_correlation", "rsm_norm_difference", "cka_laplace_0.5", "cka_laplace_1.2")


def _pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two related layers with offsets and unequal scales (y: a tanh of x plus noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) * np.linspace(0.5, 2.0, 6) + 3.0
    y = np.tanh(x[:, :4] @ rng.normal(size=(4, 3)) / 3) + 0.5 * rng.normal(size=(n, 3)) - 5.0
    return x, y


def _sq(a: np.ndarray) -> np.ndarray:
    """Squared distances between rows, from the differences."""
    return ((a[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)


def _dense(key: str, x: np.ndarray, y: np.ndarray, medians=None) -> float:
    """The measure ``key`` of distance_values, from the n x n matrices in float64."""
    if key.startswith("cka_laplace"):  # the default bandwidth, or that the key names
        sigma = 0.8 if key == "cka_laplace" else float(key.rsplit("_", 1)[1])
        return references.laplace_cka(x, y, sigma, medians)
    return getattr(references, key)(x, y)


def _without(a: np.ndarray, bounds, g: int) -> np.ndarray:
    return np.delete(a, np.s_[bounds[g]:bounds[g + 1]], axis=0)


def _bounds(n: int, groups: int) -> np.ndarray:
    """Contiguous groups as the documentation gives them: n / G apart, rounded."""
    return np.linspace(0, n, groups + 1).round().astype(int)


@pytest.mark.parametrize("rows", [32, 96, None])
def test_each_null_value_is_the_measure_on_permuted_samples(small_blocks, rows):
    """100 samples in 4 permutation blocks; row blocks of 32 or 96 samples (several tiles) or
    the default; every paired measure, two bandwidths."""
    n, count, seed = 100, 8, 5
    x, y = _pair(n, 1)
    got = distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED, sigma=SIGMAS,
                          null=(count, seed), block_rows=rows)
    perms = list(permutation_series(n, seed, count))
    assert all(sorted(p[a:a + BLOCK]) == list(range(a, min(a + BLOCK, n)))
               for p in perms for a in range(0, n, BLOCK))  # within blocks
    assert len({tuple(p) for p in perms}) == count and not any((p == np.arange(n)).all()
                                                              for p in perms)
    for key in KEYS:
        assert len(got["null"][key]) == count
        for k, perm in enumerate(perms):
            expected = _dense(key, x, y[perm])
            assert got["null"][key][k] == pytest.approx(expected, rel=1e-10, abs=1e-10), (key, k)
        assert got[key] == pytest.approx(_dense(key, x, y), rel=1e-10)
        assert np.ptp(got["null"][key]) > 0


def test_replicates_keep_their_digits_beside_an_outlying_sample():
    """One sample of x scaled 1,000 times: the replicates leaving its group out do not lose
    the remaining samples' sums to the total's rounding (they are added up, not subtracted)."""
    n, groups = 120, 6
    x, y = _pair(n, 4)
    x[7] *= 1000.0
    bounds = _bounds(n, groups)
    got = distance_values(as_layer(x), as_layer(y, name="y"), groups=groups, block_rows=32,
                          measures=("distance_correlation", "rsm_norm_difference"))
    for g in range(groups):
        xr, yr = _without(x, bounds, g), _without(y, bounds, g)
        assert got["replicates"]["rsm_norm_difference"][g] == pytest.approx(
            references.rsm_norm_difference(xr, yr), rel=1e-12), g
        assert got["replicates"]["distance_correlation"][g] == pytest.approx(
            references.distance_correlation(xr, yr), abs=1e-10), g


@pytest.mark.parametrize("rows", [17, 40, 100])
def test_each_replicate_is_the_measure_without_its_group(rows):
    """Seven groups of 14 or 15 of 100 samples, cut across row blocks of 17 or 40 samples or
    within one tile: every measure of the tiles, recomputed on the samples outside the group
    (Laplace CKA at the medians of all samples)."""
    n, groups = 100, 7
    x, y = _pair(n, 2)
    bounds = _bounds(n, groups)
    assert len(set(np.diff(bounds))) == 2
    medians = (np.median(_sq(x)), np.median(_sq(y)))
    got = distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED, sigma=SIGMAS,
                          groups=groups, block_rows=rows)
    unpaired = ("uniformity_difference", "concentricity_difference")
    scaled = (x / 4, y / 2)  # distances near 1, where exp(-2 d^2) is not all diagonal
    stats_ = distance_values(as_layer(scaled[0]), as_layer(scaled[1], name="y"),
                             measures=unpaired, groups=groups, block_rows=rows)
    for g in range(groups):
        xr, yr = _without(x, bounds, g), _without(y, bounds, g)
        for key in KEYS:
            expected = _dense(key, xr, yr, medians)
            assert got["replicates"][key][g] == pytest.approx(expected, rel=1e-10), (key, g)
        for m in unpaired:
            expected = getattr(references, m)(*(_without(a, bounds, g) for a in scaled))
            assert stats_["replicates"][m][g] == pytest.approx(expected, rel=1e-10, abs=1e-12)
    for key in KEYS:
        assert len(got["replicates"][key]) == groups
        assert got[key] == pytest.approx(_dense(key, x, y), rel=1e-10)


def test_null_and_replicates_together(small_blocks):
    """Both from one pass, the same as each alone."""
    x, y = _pair(96, 3)
    both = distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED, null=(6, 1),
                           groups=5, block_rows=BLOCK)
    alone = [distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED, **kw)
             for kw in ({"null": (6, 1)}, {"groups": 5, "block_rows": 40})]
    for m in PAIRED:
        np.testing.assert_allclose(both["null"][m], alone[0]["null"][m], rtol=1e-12)
        np.testing.assert_allclose(both["replicates"][m], alone[1]["replicates"][m], rtol=1e-12)


def test_null_is_the_same_for_any_tiles_chunking_and_grid(small_blocks):
    """The null of a pair depends on the seed and n only: row blocks of 32 or 64 samples, the
    default or one tile, chunks of 37 samples, a 2 x 3 grid with other layers (the cells
    compare runs, Laplace CKA's beside the others), the pairwise functions."""
    n, count, seed = 150, 19, 2
    x, y = _pair(n, 5)
    z = np.random.default_rng(6).normal(size=(n, 3))
    runs = [distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED,
                            null=(count, seed), block_rows=rows) for rows in (None, 32, 64, n)]
    runs.append(distance_values(as_layer(da.from_array(x, chunks=(37, 6))),
                                as_layer(da.from_array(y, chunks=(37, 3)), name="y"),
                                measures=PAIRED, null=(count, seed), block_rows=64))
    for other in runs[1:]:
        for m in PAIRED:
            np.testing.assert_allclose(other["null"][m], runs[0]["null"][m], rtol=1e-12)
    null = runs[0]["null"]
    layers = [as_layer(a, name=name) for a, name in ((x, "x"), (z, "z"), (y, "y"))]
    functions = registry.path_functions("sample_blocks", list(PAIRED[:2]), {})
    cells, _ = sample_cells(functions, layers, [0, 1], [2, 1, 0], list(PAIRED[:2]),
                            permutations=count, seed=seed)
    laplace, _ = distances.distance_cells([("cka_laplace", None)], layers, [0, 1], [2, 1, 0],
                                          seed=seed, permutations=count)
    for m in (0, 1):
        np.testing.assert_allclose(cells[m, 0, 0].null, null[PAIRED[m]], rtol=1e-12)
    np.testing.assert_allclose(laplace[0, 0, 0].null, null["cka_laplace"], rtol=1e-12)
    grid = dr.compare({"x": x, "z": z}, {"y": y, "z2": z, "x2": x}, metrics=list(PAIRED),
                      permutations=count, seed=seed)
    for m in PAIRED:
        one = (dr.cka(x, y, kernel="laplace", permutations=count, seed=seed)
               if m == "cka_laplace" else getattr(dr, m)(x, y, permutations=count, seed=seed))
        np.testing.assert_allclose(one.null, null[m], rtol=1e-12)
        cell = grid.sel(layer_a="x", layer_b="y")
        assert float(cell[f"{m}_null_mean"]) == pytest.approx(np.mean(null[m]), rel=1e-12)
        assert float(cell[f"{m}_pvalue"]) == one.pvalue


def _jackknife(value: float, replicates: np.ndarray, corrected: bool) -> tuple:
    """Quenouille-Tukey: the standard error and the 95% interval's centre and ends."""
    g = len(replicates)
    stderr = np.sqrt((g - 1) / g * np.sum((replicates - replicates.mean()) ** 2))
    centre = g * value - (g - 1) * replicates.mean() if corrected else value
    q = stats.t.ppf(0.975, g - 1)
    return stderr, centre, centre - q * stderr, centre + q * stderr


def test_intervals_and_pvalues_of_the_public_functions_and_grids():
    """Intervals from the dense replicates, centred on the bias-corrected estimate (on the
    estimate for the norm difference, which scales with the number of samples); a related pair
    significant, an unrelated one not (the norm difference counting null values at or below
    it); the grid's p-value, corrected p-value and interval variables."""
    n, groups = 120, 8
    x, y = _pair(n, 7)
    near = x + 0.3 * np.random.default_rng(8).normal(size=x.shape)
    unrelated = np.random.default_rng(9).normal(size=(n, 3))
    bounds = _bounds(n, groups)
    for m, b in (("distance_correlation", y), ("rsm_norm_difference", near),
                 ("cka_laplace", y)):
        e = (dr.cka(x, b, kernel="laplace", interval="jackknife", groups=groups,
                    permutations=99, seed=1) if m == "cka_laplace" else
             getattr(dr, m)(x, b, interval="jackknife", groups=groups, permutations=99, seed=1))
        meds = (np.median(_sq(x)), np.median(_sq(b))) if m == "cka_laplace" else None
        reps = np.array([_dense(m, _without(x, bounds, g), _without(b, bounds, g), meds)
                         for g in range(groups)])
        stderr, centre, low, high = _jackknife(_dense(m, x, b), reps,
                                               registry.MEASURES[m].bias_corrected)
        assert e.stderr == pytest.approx(stderr, rel=1e-8), m
        assert (e.ci_centre, e.ci_low, e.ci_high) == pytest.approx((centre, low, high),
                                                                   rel=1e-8), m
        assert e.n_groups == groups and e.pvalue == pytest.approx(0.01), m
        assert e.method == "sample_blocks"
    assert not registry.MEASURES["rsm_norm_difference"].bias_corrected
    assert dr.distance_correlation(x, unrelated, permutations=99).pvalue > 0.05
    assert dr.rsm_norm_difference(x, unrelated / 10, permutations=99).pvalue > 0.05
    grid = dr.compare({"x": x}, {"y": y, "noise": unrelated},
                      metrics=["distance_correlation", "cka_laplace", "rsm_norm_difference"],
                      interval="jackknife", permutations=99, seed=1)
    for m in ("distance_correlation", "cka_laplace"):
        for suffix in ("pvalue", "pvalue_fwer", "pvalue_fdr", "null_mean", "stderr", "low",
                       "high", "centre"):
            assert f"{m}_{suffix}" in grid, (m, suffix)
        assert float(grid[f"{m}_pvalue"].sel(layer_b="y").squeeze()) == pytest.approx(0.01)
        assert float(grid[f"{m}_pvalue_fwer"].sel(layer_b="y").squeeze()) <= 0.05
        assert float(grid[f"{m}_pvalue"].sel(layer_b="noise").squeeze()) > 0.05
    e = dr.distance_correlation(x, y, interval="jackknife", permutations=99, seed=1)
    cell = grid.sel(layer_a="x", layer_b="y")
    assert (float(cell.distance_correlation_low), float(cell.distance_correlation_pvalue)) == \
        pytest.approx((e.ci_low, e.pvalue), rel=1e-12)


def test_per_layer_differences_have_intervals_not_permutations():
    x, y = _pair(80, 10)
    e = dr.uniformity_difference(x / 4, y / 2, interval="jackknife", groups=5)
    bounds = _bounds(80, 5)
    reps = np.array([references.uniformity_difference(_without(x / 4, bounds, g),
                                                      _without(y / 2, bounds, g))
                     for g in range(5)])
    assert e.stderr == pytest.approx(_jackknife(float(e), reps, True)[0], rel=1e-8)
    c = dr.concentricity_difference(x, y, interval="jackknife", groups=5)
    reps = np.array([references.concentricity_difference(_without(x, bounds, g),
                                                         _without(y, bounds, g))
                     for g in range(5)])
    assert c.ci_centre == pytest.approx(_jackknife(float(c), reps, True)[1], rel=1e-8)
    with pytest.raises(ValueError, match="uniformity_difference: a difference of per-layer "
                                         "statistics .* has no permutation null"):
        distance_values(as_layer(x), as_layer(y, name="y"),
                        measures=("distance_correlation", "uniformity_difference"), null=(19, 0))


def test_errors_never_nans(small_blocks):
    """Too many groups, groups that leave too few samples, a replicate whose remaining samples
    coincide, and row blocks that split permutation blocks are errors that say so."""
    x, y = _pair(100, 4)
    with pytest.raises(ValueError, match="groups=101 is more than the 100 samples"):
        dr.distance_correlation(x, y, interval="jackknife", groups=101)
    with pytest.raises(ValueError, match="groups=2 of 5 samples leaves 2 samples when a group "
                                         "is left out; .* need at least 3: give groups=3 or "
                                         "more"):
        dr.cka(x[:5], y[:5], kernel="laplace", interval="jackknife", groups=2)
    lumpy = np.zeros((100, 2))
    lumpy[:10] = np.arange(20).reshape(10, 2)  # the first group's samples apart, the rest at 0
    with pytest.raises(dr.InputError, match="x: leaving out jackknife group 0, the remaining "
                                            "samples all coincide"):
        dr.distance_correlation(lumpy, y, interval="jackknife", groups=10)
    with pytest.raises(ValueError, match="row blocks of 48 samples split the permutation "
                                         "blocks of 32 samples; give a multiple of 32"):
        distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED, block_rows=48,
                        null=(3, 0))
    with dask.config.set({"repsim.memory-budget": "40kB"}), pytest.raises(
            ValueError, match=r"a permutation test of distance correlation needs whole "
                              r"permutation blocks in each row block"):
        dr.distance_correlation(x, y, permutations=19)


def _independent(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.exp(rng.normal(size=(n, 4))), rng.normal(size=(n, 3)) ** 2


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_pvalues_of_independent_layers_are_calibrated():
    """500 pairs of independent layers (n = 24 samples, one permutation block, 19
    permutations): for each measure the rate of p <= 0.05 is within its binomial 99% range,
    and the p-values are uniform."""
    reps, count = 500, 19
    pvalues = {m: np.empty(reps) for m in PAIRED}
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            x, y = _independent(np.random.default_rng([11, r]), 24)
            got = distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED,
                                  null=(count, r))
            for m in PAIRED:
                pvalues[m][r] = permutation_pvalue(got[m], np.array(got["null"][m]),
                                                   registry.MEASURES[m].similarity)
    low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
    for m, p in pvalues.items():
        assert low <= np.sum(p <= 0.05) <= high, (m, np.sum(p <= 0.05))
        counts = np.histogram(p, bins=[0, 0.26, 0.51, 0.76, 1.01])[0]
        assert stats.chisquare(counts).pvalue > 0.001, (m, counts)


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_power_increases_with_the_number_of_samples():
    """A weak relation (y = 0.3 x + noise): the rejection rate at 0.05 over 60 repetitions
    grows with n, to nearly always at n = 320 for distance correlation and Laplace CKA (the
    norm difference, which also sees y's smaller scale, less often)."""
    rates = {m: [] for m in PAIRED}
    with dask.config.set(scheduler="sync"):
        for n in (20, 80, 320):
            hits = dict.fromkeys(PAIRED, 0)
            for r in range(60):
                rng = np.random.default_rng([n, r])
                x = rng.normal(size=(n, 4))
                y = 0.3 * x[:, :2] + rng.normal(size=(n, 2))
                got = distance_values(as_layer(x), as_layer(y, name="y"), measures=PAIRED,
                                      null=(39, r))
                for m in PAIRED:
                    hits[m] += permutation_pvalue(got[m], np.array(got["null"][m]),
                                                  registry.MEASURES[m].similarity) <= 0.05
            for m in PAIRED:
                rates[m].append(hits[m] / 60)
    for m, found in rates.items():
        assert found[0] < found[1] < found[2], (m, found)
        assert found[0] < 0.3 and found[2] > (0.5 if m == "rsm_norm_difference" else 0.9), \
            (m, found)


def _related(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A non-linear relation: y a tanh of a mix of two of x's units, plus noise."""
    x = rng.normal(size=(n, 4)) * [1.0, 0.8, 0.6, 0.4]
    y = np.tanh(x[:, :2] @ np.array([[1.0, 0.5], [-0.5, 1.0]])) + 0.6 * rng.normal(size=(n, 2))
    return 0.5 * x, 0.5 * y


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_intervals_cover_the_population_value():
    """200 samples of n = 500, 20 groups: the 95% intervals cover the population value (from
    16,000 samples through the tiles; the norm difference's scaled to n samples, as it grows
    with them) within the binomial 99% range, for each measure with its registry centre."""
    reps, n, big = 200, 500, 16_000
    measures = (*PAIRED, "uniformity_difference")
    population = distance_values(*(as_layer(a, name=k) for a, k in zip(
        _related(np.random.default_rng(123), big), "xy", strict=True)), measures=measures)
    population["rsm_norm_difference"] *= np.sqrt(n * (n - 1) / (big * (big - 1)))
    covered = dict.fromkeys(measures, 0)
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            x, y = _related(np.random.default_rng([9, r]), n)
            got = distance_values(as_layer(x), as_layer(y, name="y"), measures=measures,
                                  groups=20)
            for m in measures:
                _, _, low, high = _jackknife(got[m], np.array(got["replicates"][m]),
                                             registry.MEASURES[m].bias_corrected)
                covered[m] += low <= population[m] <= high
    low, high = stats.binom.ppf(0.005, reps, 0.95), stats.binom.isf(0.005, reps, 0.95)
    assert (low, high) == (181, 197)
    for m in measures:
        assert low <= covered[m] <= high, (m, covered[m])
