"""Permutation tests on the QR path: every null value equals the CCA family recomputed on the
permuted samples (by a numpy reference written from the definitions: QR of the centred data,
principal angles from the SVD of ``Q_x^T Q_y``; Bjorck & Golub 1973), ill-conditioned data
included, where the co-moment path's null is not the reference's; the null is the co-moment
path's on well-conditioned data (the same permutations), whatever the chunking, the grid and
the scheduler; p-values are calibrated under independence and gain power with n."""

from __future__ import annotations

import numpy as np
import pytest
from cluster_utils import on_threads_and_workers
from scipy import stats
from test_qr_jackknife import METRICS, _functions, _layer, correlated, ill_conditioned, reference

import dask_repsim as dr
from dask_repsim import registry
from dask_repsim.engine import permuted
from dask_repsim.paths import qr

#: permutation blocks of the tests (the small_blocks fixture), so that data spans several
BLOCK = 64


def _null(cells: dict, m: int, i: int = 0, j: int = 0) -> np.ndarray:
    return np.array([float(v) for v in cells[m, i, j].null])


def _relative(got: float, want: float) -> float:
    return abs(got - want) / max(abs(want), 1e-300)


@pytest.mark.parametrize(("n", "rows"), [(200, (37, 64)), (131, (131, (100, 31)))])
def test_each_null_value_is_the_measure_of_the_permuted_samples(small_blocks, n, rows):
    """Null value k of every measure equals the numpy reference on ``(x, y[perm_k])``, with
    ``perm_k`` the engine's permutation within blocks of 64 samples (1e-10 relative); each
    permutation moves samples; the value is that without permutations."""
    x, y = correlated(n, n, offset=30.0)
    layers = [_layer(x, "x", rows[0]), _layer(y, "y", rows[1])]
    cells, attrs = qr.qr_cells(_functions(), layers, [0], [1], permutations=7, seed=4)
    plain, _ = qr.qr_cells(_functions(), layers, [0], [1])
    perms = permuted.sample_permutations(n, 4, 7, block=BLOCK)
    assert attrs["n_passes"] == 2
    worst = 0.0
    for k, perm in enumerate(perms):
        assert not (perm == np.arange(n)).all()
        assert (perm // BLOCK == np.arange(n) // BLOCK).all()  # within the blocks
        want = reference(x, y[perm])
        for m, metric in enumerate(METRICS):
            worst = max(worst, _relative(_null(cells, m)[k], want[metric]))
    assert worst <= 1e-10
    for m in range(len(METRICS)):
        assert float(cells[m, 0, 0].value) == float(plain[m, 0, 0].value)


def test_ill_conditioned_null_is_the_reference_where_the_covariance_one_is_not():
    """Condition number 1e9, y carried by x's weakest directions: the QR path's null values
    equal the reference on the permuted data (1e-7 relative, the factor's eps * cond), while
    the co-moment path's null, which loses those directions, is off by far more."""
    x, y = ill_conditioned(3, n=2500)
    ours = dr.compare({"x": x}, {"y": y}, metrics=list(METRICS), method="qr", permutations=5,
                      seed=9)
    layers = [_layer(x, "x"), _layer(y, "y")]
    cells, _ = qr.qr_cells(_functions(), layers, [0], [1], permutations=5, seed=9)
    perms = permuted.sample_permutations(2500, 9, 5)
    worst, covariance_worst = 0.0, 0.0
    other = dr.cca(x, y, method="covariance", permutations=5, seed=9)  # null: mean rho
    for k, perm in enumerate(perms):
        want = reference(x, y[perm])
        for m, metric in enumerate(METRICS):
            worst = max(worst, _relative(_null(cells, m)[k], want[metric]))
        covariance_worst = max(covariance_worst,
                               _relative(float(other.null[k]), want["mean_cca"]))
    assert worst <= 1e-7
    assert covariance_worst > 1e-3
    assert float(ours["mean_cca_null_mean"].item()) == pytest.approx(_null(cells, 0).mean(),
                                                                      rel=1e-12)


def test_well_conditioned_null_is_the_covariance_paths(small_blocks):
    """The same permutations as the co-moment path: on well-conditioned data both paths' null
    values agree to 1e-10, measure by measure, through the public functions."""
    x, y = correlated(21, 300)
    for name, options in (("cca", {}), ("svcca", {}), ("svcca", {"summary": "r2"}),
                          ("pwcca", {}), ("linear_regression", {})):
        kwargs = {"permutations": 19, "seed": 2, **options}
        ours = getattr(dr, name)(x, y, method="qr", **kwargs)
        theirs = getattr(dr, name)(x, y, method="covariance", **kwargs)
        assert np.allclose(np.asarray(ours.null), np.asarray(theirs.null), rtol=1e-10,
                           atol=1e-12), name
        assert ours.pvalue == theirs.pvalue


def test_null_does_not_depend_on_chunking_grid_or_scheduler(small_blocks):
    """A pair's null is the same (1e-12) from other chunkings, inside a grid of three layers
    (whose joint factor differs), and on two worker processes."""
    x, y = correlated(5, 257)
    z = np.cos(x[:, :3])
    alone, _ = qr.qr_cells(_functions(), [_layer(x, "x"), _layer(y, "y")], [0], [1],
                           permutations=9, seed=1)
    chunked, _ = qr.qr_cells(_functions(), [_layer(x, "x", 50), _layer(y, "y", (100, 157))],
                             [0], [1], permutations=9, seed=1)
    grid, _ = qr.qr_cells(_functions(), [_layer(z, "z"), _layer(x, "x", 77), _layer(y, "y")],
                          [0, 1], [2, 0], permutations=9, seed=1)

    def run():
        return qr.qr_cells(_functions(), [_layer(x, "x", 64), _layer(y, "y", 64)], [0], [1],
                           permutations=9, seed=1)[0]

    here, there = on_threads_and_workers(run)
    for m in range(len(METRICS)):
        want = _null(alone, m)
        for got in (_null(chunked, m), _null(grid, m, 1, 0), _null(here, m), _null(there, m)):
            assert np.allclose(got, want, rtol=1e-12, atol=1e-14)


def test_the_grid_reports_pvalues_and_the_path_supports_them():
    x, y = correlated(8, 120)
    grid = dr.compare({"x": x}, {"y": y}, metrics=list(METRICS), method="qr",
                      permutations=19, interval="jackknife", groups=5)
    for metric in METRICS:
        assert float(grid[f"{metric}_pvalue"].item()) == pytest.approx(1 / 20)  # strongly related
        assert registry.supports(metric, "qr", "permutations")
    assert grid.attrs["permutations"] == 19
    assert grid.attrs["n_passes"] == 2


def test_memory_budget_refuses_a_null_that_does_not_fit():
    import dask

    x, y = correlated(1, 80, p=40, q=40)
    with dask.config.set({"repsim.memory-budget": "40 MiB"}), \
            pytest.raises(ValueError, match="permutations=5000 keeps 5000 cross matrices"):
        dr.cca(x, y, method="qr", permutations=5000)


# ------------------------------------------------------------------ calibration and power


def _rejections(pairs, permutations: int = 19) -> np.ndarray:
    """Per measure, how many of ``pairs`` have a p-value at most 0.05."""
    out = np.zeros(len(METRICS), dtype=int)
    for seed, (x, y) in enumerate(pairs):
        grid = dr.compare({"x": x}, {"y": y}, metrics=list(METRICS), method="qr",
                          permutations=permutations, seed=seed)
        out += [float(grid[f"{m}_pvalue"].item()) <= 0.05 for m in METRICS]
    return out


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_pvalues_are_calibrated_under_independence():
    """500 independent Gaussian pairs (n = 40, 4 and 3 units) and 500 related pairs whose
    samples are shuffled against each other: with 19 permutations a p-value is at most 0.05
    with probability exactly 0.05; the rejection counts are within the binomial 99% range."""
    rng = np.random.default_rng(2026)
    low, high = stats.binom.ppf([0.005, 0.995], 500, 0.05)
    independent = [(rng.normal(size=(40, 4)), rng.normal(size=(40, 3))) for _ in range(500)]
    shuffled = []
    for _ in range(500):
        x, y = correlated(int(rng.integers(2**31)), 40, p=4, q=3)
        shuffled.append((x, y[rng.permutation(40)]))
    for pairs in (independent, shuffled):
        counts = _rejections(pairs)
        assert ((counts >= low) & (counts <= high)).all(), (counts, low, high)


@pytest.mark.large
def test_power_grows_with_the_number_of_samples():
    """y = 0.4 tanh(x W) + noise: the share of rejections at 0.05 grows with n (30, 90, 270;
    100 pairs each) for every measure, and nearly every pair is rejected at n = 270."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 3))
    rates = []
    for n in (30, 90, 270):
        pairs = []
        for _ in range(100):
            x = rng.normal(size=(n, 4))
            pairs.append((x, 0.4 * np.tanh(x @ w) + rng.normal(size=(n, 3))))
        rates.append(_rejections(pairs) / 100)
    rates = np.array(rates)
    assert (np.diff(rates, axis=0) >= 0).all() and (rates[0] < rates[1]).all(), rates
    assert (rates[-1] >= 0.9).all(), rates
