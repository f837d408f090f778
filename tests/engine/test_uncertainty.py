"""Jackknife intervals from group statistics of the same pass."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

import dask_repsim as dr
from dask_repsim.engine.moments import Statistics
from dask_repsim.engine.stream import grouped_comoments
from dask_repsim.engine.uncertainty import leave_one_out
from dask_repsim.io.inputs import as_layer

METRICS = ["cka", "mean_cca", "pwcca"]


def _population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two 4-unit layers sharing a 4-d latent signal (no canonical correlation near 0, where
    the measures are not smooth), with unit means far from 0."""
    latent = rng.normal(size=(n, 4))
    x = latent @ MIX_X + 0.8 * rng.normal(size=(n, 4)) + 50.0
    y = latent @ MIX_Y + 1.2 * rng.normal(size=(n, 4)) - 20.0
    return x, y


MIX_X = np.random.default_rng(100).normal(size=(4, 4))
MIX_Y = np.random.default_rng(101).normal(size=(4, 4))


def test_leave_one_out_equals_recomputing_without_the_group():
    rng = np.random.default_rng(0)
    x, y = _population(1003, rng)
    parts = grouped_comoments(
        [as_layer(da.from_array(x, chunks=170)), as_layer(da.from_array(y, chunks=333))], groups=7
    )
    bounds = np.linspace(0, 1003, 8).round().astype(int)
    assert [p.count for p in parts] == list(np.diff(bounds))
    for g, loo in enumerate(leave_one_out(parts)):
        keep = np.r_[0 : bounds[g], bounds[g + 1] : 1003]
        direct = Statistics.from_chunk([x[keep], y[keep]])
        assert loo.count == len(keep)
        np.testing.assert_allclose(loo.mean, direct.mean, rtol=1e-12)
        np.testing.assert_allclose(loo.comoment, direct.comoment, rtol=1e-10, atol=1e-8)
        np.testing.assert_allclose(loo.norm_product, direct.norm_product, rtol=1e-10)


@pytest.mark.parametrize(("function", "corrected"), [(dr.linear_regression, True),
                                                      (dr.pwcca, False)])
def test_estimate_is_the_plain_value_and_replicates_are_the_measure_without_each_group(
        function, corrected):
    """The value is the plain estimate t; the interval is centred on Quenouille's
    bias-corrected estimate 6 t - 5 x the mean of the leave-a-group-out values, recomputed
    here from the data without each group (on t itself for PWCCA, whose jackknife bias
    estimate overshoots)."""
    rng = np.random.default_rng(1)
    x, y = _population(600, rng)
    est = function(x, y, interval="jackknife", groups=6, level=0.9)
    assert float(est) == pytest.approx(function(x, y), abs=1e-12)
    bounds = np.linspace(0, 600, 7).round().astype(int)
    reps = np.array(
        [function(np.delete(x, np.s_[a:b], 0), np.delete(y, np.s_[a:b], 0))
         for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    )
    stderr = np.sqrt(5 / 6 * np.sum((reps - reps.mean()) ** 2))
    centre = 6 * float(est) - 5 * reps.mean() if corrected else float(est)
    assert abs(6 * float(est) - 5 * reps.mean() - float(est)) > 1e-4  # a correction to make
    from scipy import stats

    q = stats.t.ppf(0.95, 5)
    assert est.stderr == pytest.approx(stderr, rel=1e-8)
    assert est.ci_centre == pytest.approx(centre, abs=1e-10)
    assert (est.ci_low, est.ci_high) == pytest.approx((centre - q * stderr, centre + q * stderr),
                                                      abs=1e-10)
    assert est.n_groups == 6 and est.level == 0.9


def test_compare_interval_variables_match_pairwise():
    rng = np.random.default_rng(2)
    x, y = _population(800, rng)
    ds = dr.compare(x, y, metrics=METRICS, interval="jackknife", groups=10)
    assert ds.attrs["n_groups"] == 10
    pairwise = {
        "cka": dr.cka(x, y, interval="jackknife", groups=10),
        "mean_cca": dr.cca(x, y, interval="jackknife", groups=10).mean,
        "pwcca": dr.pwcca(x, y, interval="jackknife", groups=10),
    }
    for m, est in pairwise.items():
        assert ds[m].item() == pytest.approx(float(est), abs=1e-12)
        assert ds[f"{m}_stderr"].item() == pytest.approx(est.stderr, rel=1e-9)
        assert ds[f"{m}_centre"].item() == pytest.approx(est.ci_centre, abs=1e-12)
        assert ds[f"{m}_low"].item() == pytest.approx(est.ci_low, abs=1e-12)
        assert ds[f"{m}_high"].item() == pytest.approx(est.ci_high, abs=1e-12)


def test_bad_interval_arguments():
    x, y = _population(100, np.random.default_rng(3))
    with pytest.raises(ValueError, match="interval"):
        dr.cka(x, y, interval="bootstrap")
    with pytest.raises(ValueError, match="groups"):
        dr.cka(x, y, interval="jackknife", groups=0)
    with pytest.raises(ValueError, match="level"):
        dr.cka(x, y, interval="jackknife", level=1.5)


def test_jackknife_stderr_matches_sampling_spread_and_intervals_cover():
    """200 independent samples of a synthetic population: the jackknife standard error agrees
    with the measure's actual spread, and 95% intervals cover the population value."""
    rng = np.random.default_rng(4)
    truth = dr.compare(*_population(400_000, rng), metrics=METRICS)
    sims, n = 200, 500
    values = np.empty((sims, len(METRICS)))
    stderrs = np.empty_like(values)
    covered = np.zeros_like(values, dtype=bool)
    with dask.config.set(scheduler="synchronous"):
        for s in range(sims):
            ds = dr.compare(
                *_population(n, rng), metrics=METRICS, interval="jackknife", groups=20
            )
            for k, m in enumerate(METRICS):
                values[s, k] = ds[m].item()
                stderrs[s, k] = ds[f"{m}_stderr"].item()
                covered[s, k] = ds[f"{m}_low"].item() <= truth[m].item() <= ds[f"{m}_high"].item()
    spread = values.std(axis=0, ddof=1)
    ratio = stderrs.mean(axis=0) / spread
    coverage = covered.mean(axis=0)
    low, high = _binomial_range(sims, 0.95)
    for k, m in enumerate(METRICS):
        assert 0.7 <= ratio[k] <= 1.3, (m, ratio[k], coverage[k])
        assert low <= coverage[k] <= high, (m, coverage[k], low, high)


def _binomial_range(trials: int, level: float) -> tuple[float, float]:
    """The range holding the share of ``trials`` intervals that cover the truth with
    probability 99%, if each covers it with probability ``level``."""
    from scipy import stats

    return (stats.binom.ppf(0.005, trials, level) / trials,
            stats.binom.isf(0.005, trials, level) / trials)


NONLINEAR = ["cka", "linear_regression", "procrustes", "mean_cca", "r2_cca"]
W_TANH = np.random.default_rng(102).normal(size=(8, 6)) / np.sqrt(8)


def _nonlinear(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """8 Gaussian units, and 6 units that are a tanh of a mix of them plus noise."""
    x = rng.normal(size=(n, 8))
    return x, np.tanh(2.0 * x @ W_TANH) + 0.5 * rng.normal(size=(n, 6))


def test_intervals_of_biased_estimates_cover_at_their_level():
    """n = 600, y = tanh(x W) + noise: the plug-in estimates are biased by about as much as
    their spread (centred on them, 95% intervals covered 82-90% of 200 samples); centred on
    the jackknife's bias-corrected estimate, the coverage of every measure is within the 99%
    binomial range of 95% over 200 independent samples (for the linear regression's R^2 it
    is not around the plain estimate)."""
    rng = np.random.default_rng(5)
    truth = dr.compare(*_nonlinear(400_000, rng), metrics=NONLINEAR)
    sims = 200
    covered = np.zeros((sims, len(NONLINEAR)), dtype=bool)
    plain = np.zeros_like(covered)  # the interval's width around the plug-in estimate
    with dask.config.set(scheduler="synchronous"):
        for s in range(sims):
            ds = dr.compare(*_nonlinear(600, rng), metrics=NONLINEAR, interval="jackknife")
            for k, m in enumerate(NONLINEAR):
                t, centre = truth[m].item(), ds[f"{m}_centre"].item()
                low, high = ds[f"{m}_low"].item(), ds[f"{m}_high"].item()
                covered[s, k] = low <= t <= high
                half = (high - low) / 2
                plain[s, k] = abs(ds[m].item() - t) <= half
                assert low < centre < high
    low, high = _binomial_range(sims, 0.95)
    coverage, before = covered.mean(axis=0), plain.mean(axis=0)
    for k, m in enumerate(NONLINEAR):
        assert low <= coverage[k] <= high, (m, coverage[k], before[k], low, high)
    assert (before < low).any(), before  # the case the correction is for
