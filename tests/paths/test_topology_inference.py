"""RTD's jackknife interval (Barannikov et al. 2022; ``topology.rtd_value(groups=)``): each
replicate against RTD recomputed from the definition on the samples outside its group (each
layer's distances normalised again by their 0.9 quantile over the kept samples, the barcode by
gudhi's simplex tree, not the sklearn Ripser fork the measure uses), the interval through
``rtd`` and ``compare`` (centred on the estimate), its errors and memory model, and the
coverage of the expected RTD at the same number of samples."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import references
from dask.utils import format_bytes
from scipy import stats

import dask_repsim as dr
from dask_repsim.engine.stream import group_bounds
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks import topology
from dask_repsim.registry import MEASURES
from dask_repsim.results import jackknife_interval

gudhi = pytest.importorskip("gudhi")


def _pair(n: int, seed: int = 0, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    return x, np.tanh(x @ rng.normal(size=(6, 5))) + noise * rng.normal(size=(n, 5))


def _ties(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Small integer activations: many equal distances, some repeated samples."""
    rng = np.random.default_rng(5)
    return rng.integers(0, 3, size=(n, 3)).astype(float), rng.integers(0, 4, size=(n, 2)) * 1.0


def _h1_simplex_tree(m: np.ndarray) -> float:
    """Summed lengths of the one-dimensional bars (Z/2) of the Rips filtration of ``m``, from
    gudhi's simplex tree of its 2-skeleton."""
    tree = gudhi.RipsComplex(distance_matrix=m).create_simplex_tree(max_dimension=2)
    tree.compute_persistence(homology_coeff_field=2, min_persistence=-1)
    bars = np.asarray(tree.persistence_intervals_in_dimension(1), dtype=np.float64)
    assert np.all(np.isfinite(bars))  # the full complex kills every cycle
    return float(np.sum(bars[:, 1] - bars[:, 0])) if len(bars) else 0.0


def _rtd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """RTD from its definition: Euclidean distances from the differences, each layer's divided
    by its 0.9 quantile over all n^2 entries, the 2n x 2n matrices [[0, r], [r, min(r1, r2)]],
    ``(H1(m(x, y)) + H1(m(y, x))) / 2``."""
    r = []
    for a in (x, y):
        d = np.sqrt(np.sum((a[:, None, :] - a[None, :, :]) ** 2, axis=-1))
        r.append(d / np.quantile(d, 0.9))
    n, total = len(x), 0.0
    for first in r:
        m = np.zeros((2 * n, 2 * n))
        m[n:, :n], m[:n, n:], m[n:, n:] = first, first.T, np.minimum(r[0], r[1])
        total += _h1_simplex_tree(m)
    return total / 2


def _replicates(x: np.ndarray, y: np.ndarray, groups: int, rtd=_rtd_reference) -> np.ndarray:
    bounds = group_bounds(len(x), groups)
    return np.array([rtd(np.delete(x, np.s_[lo:hi], 0), np.delete(y, np.s_[lo:hi], 0))
                     for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])


@pytest.mark.parametrize(("data", "n", "groups"), [
    (_pair, 17, 4), (_pair, 24, 5), (_pair, 31, 7), (_pair, 9, 9), (_ties, 30, 6)])
def test_each_replicate_is_rtd_without_its_group(data, n, groups):
    x, y = data(n)
    got = topology.rtd_value(as_layer(x), as_layer(y, name="y"), groups=groups)
    assert got["rtd"] == pytest.approx(_rtd_reference(x, y), rel=1e-10)
    expected = _replicates(x, y, groups)
    assert len(got["replicates"]["rtd"]) == groups and np.all(expected > 0)
    np.testing.assert_allclose(got["replicates"]["rtd"], expected, rtol=1e-10, atol=0)
    # the replicates are not the full samples' value (the normalisation is recomputed)
    assert np.all(np.abs(expected - got["rtd"]) > 1e-6)


def test_null_and_replicates_together_are_each_alone():
    x, y = _pair(30, seed=2)
    a, b = as_layer(x), as_layer(y, name="y")
    both = topology.rtd_value(a, b, null=(6, 3), groups=5)
    assert both["null"] == topology.rtd_value(a, b, null=(6, 3))["null"]
    assert both["replicates"] == topology.rtd_value(a, b, groups=5)["replicates"]
    assert both["rtd"] == topology.rtd_value(a, b)


def test_interval_through_rtd_and_compare_is_centred_on_the_estimate():
    """The Estimate's and the grid's interval from the replicates of ripser's RTD
    (``references.rtd``) on the kept samples: jackknife standard error, centre the estimate
    (the registry's ``bias_corrected=False``), Student t quantile on G - 1 degrees of freedom."""
    x, y = _pair(45, seed=6)
    reps = _replicates(x, y, 8, rtd=references.rtd)
    se = np.sqrt(7 / 8 * np.sum((reps - reps.mean()) ** 2))
    e = dr.rtd(x, y, interval="jackknife", groups=8, level=0.9)
    value = references.rtd(x, y)
    assert float(e) == pytest.approx(value, rel=1e-10) and e.n_groups == 8
    assert e.ci_centre == float(e)  # not 8 t - 7 mean(replicates), about twice t here
    assert abs(8 * value - 7 * reps.mean() - value) > 3 * se
    assert e.stderr == pytest.approx(se, rel=1e-9)
    half = stats.t.ppf(0.95, 7) * se
    assert (e.ci_low, e.ci_high) == pytest.approx((value - half, value + half), rel=1e-9)
    default = dr.rtd(x, y, interval="jackknife")
    # RTD's default: 5 groups (the registry's jackknife_groups; its coverage below)
    assert default.n_groups == 5 and default.ci_centre == float(default)
    z = np.random.default_rng(3).normal(size=(45, 4))
    ds = dr.compare({"x": x}, {"y": y, "z": z}, metrics=["rtd"], interval="jackknife",
                    groups=8, level=0.9, permutations=19, seed=1)
    cell = ds.sel(layer_a="x", layer_b="y")
    for name, expected in (("rtd", float(e)), ("rtd_centre", float(e)),
                           ("rtd_stderr", e.stderr), ("rtd_low", e.ci_low),
                           ("rtd_high", e.ci_high)):
        assert float(cell[name]) == pytest.approx(expected, rel=1e-12), name
    assert ds.attrs["interval_centre"].endswith("the estimate for rtd")
    assert float(cell.rtd_pvalue) == pytest.approx(0.05)  # related: below all 19 permutations
    other = dr.rtd(x, z, interval="jackknife", groups=8, level=0.9)
    assert float(ds.rtd_stderr.sel(layer_a="x", layer_b="z")) == pytest.approx(other.stderr,
                                                                               rel=1e-12)


def _unreadable(block: np.ndarray) -> np.ndarray:
    raise AssertionError("the activations were read")


def test_more_groups_than_samples_is_an_error_before_reading():
    x = da.zeros((30, 4), chunks=(10, 4)).map_blocks(_unreadable, dtype=float)
    y = da.zeros((30, 3), chunks=(10, 3)).map_blocks(_unreadable, dtype=float)
    message = r"groups=31 is more than the 30 samples: a jackknife group needs at least one"
    with pytest.raises(ValueError, match=message):
        dr.rtd(x, y, interval="jackknife", groups=31)
    with pytest.raises(ValueError, match=message):
        dr.compare({"a": x}, {"b": y}, metrics=["rtd"], interval="jackknife", groups=31)
    with pytest.raises(ValueError, match=message):  # the measure's function alone
        topology.rtd_value(as_layer(x), as_layer(y, name="y"), groups=31)


def test_a_replicate_of_mostly_equal_samples_is_an_error_naming_it():
    """16 equal samples and 4 others: 73% of the 400 distances are 0, so the value is
    defined, but without the last group (samples 16 to 19) every distance is 0."""
    x, y = _pair(20, seed=4)
    x[:16] = x[0]
    assert dr.rtd(x, y) > 0
    with pytest.raises(dr.InputError, match=r"conv: without samples 16 to 19 \(jackknife group "
                       r"5 of 5\), at least 90% of its distances between the 16 samples left "
                       r"are 0.*ask for fewer groups"):
        dr.compare({"conv": x}, {"fc": y}, metrics=["rtd"], interval="jackknife", groups=5)


def test_memory_model_counts_the_kept_distances():
    """Replicates hold both layers' distances between the kept samples beside their own: 16
    bytes per squared sample count, more than a null's 8, and the two are not held at once."""
    base = topology.rtd_bytes(100, 3, 3)
    assert topology.rtd_bytes(100, 3, 3, grouped=True) - base == 160_000
    assert topology.rtd_bytes(100, 3, 3, permuted=True, grouped=True) - base == 160_000
    x, y = _pair(200, seed=1)
    plain, grouped = topology.rtd_bytes(200, 6, 5), topology.rtd_bytes(200, 6, 5, grouped=True)
    with dask.config.set({"repsim.memory-budget": (plain + grouped) // 2}):
        assert float(dr.rtd(x, y)) == pytest.approx(references.rtd(x, y), rel=1e-10)
        with pytest.raises(ValueError, match=rf"about {format_bytes(grouped)}, over the memory"):
            dr.rtd(x, y, interval="jackknife")


@pytest.mark.large  # 200 intervals of 5 replicates and 2,000 values: about 30 s
def test_intervals_cover_the_expected_rtd_at_this_number_of_samples():
    """200 samples of n = 40 from x ~ N(0, I_6), y = tanh(x W) + 0.3 noise (W fixed), 95%
    intervals over RTD's default 5 groups, against the mean RTD of 2,000 independent samples of
    the same n (Monte-Carlo error under 5% of the standard error). Centred on the estimate (the
    registry's choice) they cover it within the binomial 99% range (with 20 groups of 2
    samples they over-cover: 199 of 200, the standard error about 1.5 times the spread of the
    estimates); centred on the bias-corrected estimate, which extrapolates the growth of RTD
    with n to about twice the value, they almost never do."""
    n, reps, draws = 40, 200, 2000
    groups = MEASURES["rtd"].jackknife_groups
    w = np.random.default_rng(1).normal(size=(6, 5))

    def rtd(seed, **kwargs):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 6))
        y = np.tanh(x @ w) + 0.3 * rng.normal(size=(n, 5))
        return topology.rtd_value(as_layer(x), as_layer(y, name="y"), **kwargs)

    with dask.config.set(scheduler="sync"):
        values = np.array([rtd([2, i]) for i in range(draws)])
        target, mc = values.mean(), values.std(ddof=1) / np.sqrt(draws)
        found = [rtd([3, r], groups=groups) for r in range(reps)]
    corrected = MEASURES["rtd"].bias_corrected
    ends = {centre: np.array([jackknife_interval(f["rtd"], np.array(f["replicates"]["rtd"]),
                                                 0.95, centre) for f in found])
            for centre in (corrected, True)}  # rows: standard error, centre, low, high
    covered = {c: int(np.sum((e[:, 2] <= target) & (target <= e[:, 3]))) for c, e in ends.items()}
    errors = ends[corrected][:, 0]
    estimates = np.array([f["rtd"] for f in found])
    low, high = stats.binom.ppf(0.005, reps, 0.95), stats.binom.ppf(0.995, reps, 0.95)
    ratio = np.mean(errors) / estimates.std(ddof=1)
    print(f"rtd at n={n}: target {target:.4f} +- {mc:.4f}; centred on the estimate "
          f"{covered[False]}/{reps}, on the corrected estimate {covered[True]}/{reps} (binomial "
          f"99% range {low:.0f}-{high:.0f}); mean standard error / sd of estimates {ratio:.2f}")
    assert not corrected and groups == 5
    assert mc < 0.05 * np.mean(errors)
    assert low <= covered[False] <= high, covered
    assert covered[True] < low, covered
    assert 0.8 <= ratio < 1.3, ratio


@pytest.mark.large  # 200 intervals of 5 replicates and 2,000 values at n = 100: about 2 min
def test_default_groups_cover_the_expected_rtd_at_100_samples():
    """The same process at n = 100, RTD's default 5 groups of 20 samples: the 95% intervals
    centred on the estimate cover the mean RTD of 2,000 independent samples within the
    binomial 99% range, and the jackknife standard error is near the spread of the estimates
    (with 20 groups of 5 samples: 199 of 200, 1.39 times the spread)."""
    n, reps, draws = 100, 200, 2000
    groups = MEASURES["rtd"].jackknife_groups
    w = np.random.default_rng(1).normal(size=(6, 5))

    def sample(seed) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 6))
        return x, np.tanh(x @ w) + 0.3 * rng.normal(size=(n, 5))

    def rtd(seed, **kwargs):
        x, y = sample(seed)
        return topology.rtd_value(as_layer(x), as_layer(y, name="y"), **kwargs)

    assert rtd([2, 0]) == pytest.approx(references.rtd(*sample([2, 0])), rel=1e-10)
    with dask.config.set(scheduler="sync"):
        values = np.array([rtd([2, i]) for i in range(draws)])
        found = [rtd([3, r], groups=groups) for r in range(reps)]
    target, spread = values.mean(), values.std(ddof=1)
    ends = np.array([jackknife_interval(f["rtd"], np.array(f["replicates"]["rtd"]), 0.95, False)
                     for f in found])  # rows: standard error, centre, low, high
    covered = int(np.sum((ends[:, 2] <= target) & (target <= ends[:, 3])))
    ratio = ends[:, 0].mean() / spread
    low, high = stats.binom.ppf(0.005, reps, 0.95), stats.binom.ppf(0.995, reps, 0.95)
    assert groups == 5
    assert spread / np.sqrt(draws) < 0.05 * ends[:, 0].mean()  # Monte-Carlo error
    assert low <= covered <= high, (covered, ratio)
    assert 0.8 <= ratio < 1.3, ratio
