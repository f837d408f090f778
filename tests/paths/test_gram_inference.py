"""Permutation tests and jackknife intervals on the sample-space tiles: each null value is the
measure of numpy on the permuted data and each replicate the measure without a group of samples,
neither depends on the plan, the p-values are calibrated and the intervals cover."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import references as ref
from scipy import stats

import dask_repsim as dr
from dask_repsim.engine import permuted as permuted_module
from dask_repsim.engine.stream import group_bounds
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.gram import permuted, samplespace

BLOCK = 64

#: each gram-path spec and its reference, from numpy on the permuted data
SPECS = {
    "cka": ({"debiased": False}, ref.linear_cka),
    "cka_debiased": ({"debiased": True}, ref.debiased_linear_cka),
    "cka_rbf_0.8": ({"kernel": "rbf", "sigma": 0.8, "debiased": False},
                    lambda a, b: ref.rbf_cka(a, b, 0.8)),
    "cka_rbf_0.5": ({"kernel": "rbf", "sigma": 0.5, "debiased": False},
                    lambda a, b: ref.rbf_cka(a, b, 0.5)),
}


def _layers(n: int, seed: int) -> list[np.ndarray]:
    """Three layers, two of them related (tanh of the first plus noise), with offsets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 7)) + 40.0
    y = np.tanh((x - 40.0) @ rng.normal(size=(7, 5))) + 0.8 * rng.normal(size=(n, 5))
    return [x, y, np.exp(rng.normal(size=(n, 3)))]


@pytest.mark.parametrize("block_rows", [None, 128], ids=["whole", "row_blocks"])
def test_null_equals_the_measure_of_numpy_on_permuted_data(small_blocks, block_rows):
    """Every cell of a 2 x 3 grid (a layer with itself among them), every kernel: the k-th
    null value is the measure of x and the column layer's rows permuted by the documented
    block permutations (<= 1e-10), on whole Gram matrices and on row blocks of 128 samples."""
    n, k, seed = 300, 6, 3
    data = _layers(n, 0)
    layers = [as_layer(a, name=f"l{i}") for i, a in enumerate(data)]
    specs = [spec for spec, _ in SPECS.values()]
    rows, cols = [0, 1], [1, 2, 0]
    with dask.config.set(scheduler="threads"):
        cells, attrs = samplespace.gram_cells(specs, layers, rows, cols, seed=seed,
                                              block_rows=block_rows, permutations=k)
    assert attrs["n_tiles"] == (1 if block_rows is None else 6)
    perms = permuted_module.sample_permutations(n, seed, k, small_blocks)
    assert sorted(perms[0, 64:128]) == list(range(64, 128))  # within blocks
    for (m, i, j), cell in cells.items():
        reference = list(SPECS.values())[m][1]
        a, b = data[rows[i]], data[cols[j]]
        expected = [reference(a, b[p]) for p in perms]
        np.testing.assert_allclose(cell.null, expected, rtol=0, atol=1e-10,
                                   err_msg=str((m, i, j)))
        assert cell.value == pytest.approx(reference(a, b), abs=1e-10)


def test_null_is_the_same_for_any_plan_and_the_co_moment_null(small_blocks):
    """Linear CKA's null with one seed: whole Gram matrices, row blocks of 64 or 192 samples,
    another layer in the grid, other storage chunks, a memory budget that forces row
    blocks, and the co-moment path all give the same values (to rounding)."""
    n, k, seed = 320, 8, 5
    x, y, z = _layers(n, 1)
    base = dr.cka(x, y, method="gram", permutations=k, seed=seed)
    co = dr.cka(x, y, method="covariance", permutations=k, seed=seed)
    np.testing.assert_allclose(base.null, co.null, rtol=0, atol=1e-12)
    assert base.pvalue == co.pvalue
    layers = [as_layer(a, name=n_) for a, n_ in ((x, "x"), (y, "y"), (z, "z"))]
    for block_rows in (64, 192):
        cells, _ = samplespace.gram_cells([{"debiased": False}], layers, [0, 2], [1],
                                          seed=seed, block_rows=block_rows, permutations=k)
        np.testing.assert_allclose(cells[0, 0, 0].null, base.null, rtol=0, atol=1e-12)
    chunked = dr.cka(da.from_array(x, chunks=70), da.from_array(y, chunks=(45, 2)),
                     method="gram", permutations=k, seed=seed)
    np.testing.assert_allclose(chunked.null, base.null, rtol=0, atol=1e-12)
    with dask.config.set({"repsim.memory-budget": 600_000}):
        grid = dr.compare({"x": x, "z": z}, {"y": y}, metrics=["cka"], method="gram",
                          permutations=k, seed=seed)
    assert grid.attrs["n_tiles"] > 1  # row blocks of whole permutation blocks
    assert grid.attrs["tile_rows"] % small_blocks == 0
    cell = {"layer_a": "x", "layer_b": "y"}
    assert grid.cka_null_mean.sel(cell).item() == pytest.approx(np.mean(base.null), abs=1e-12)
    assert grid.cka_null_std.sel(cell).item() == pytest.approx(np.std(base.null, ddof=1),
                                                               abs=1e-12)
    assert grid.cka_pvalue.sel(cell).item() == base.pvalue
    other = dr.cka(x, y, method="gram", permutations=k, seed=seed + 1)
    assert not np.allclose(other.null, base.null)


def test_grid_pvalues_and_their_corrections_equal_numpy(small_blocks):
    """``compare(method="gram", permutations=K)``: each cell's p-value, null mean and standard
    deviation, and the family-wise (max-statistic) and Benjamini-Hochberg corrections over the
    grid, from the nulls recomputed in numpy."""
    n, k, seed = 200, 19, 2
    x, y, z = _layers(n, 2)
    a, b = {"x": x, "z": z}, {"y": y, "x": x}
    ds = dr.compare(a, b, metrics=["cka", "cka_rbf"], method="gram", permutations=k,
                    seed=seed)
    assert ds.attrs["method"] == "gram" and ds.attrs["permutations"] == k
    perms = permuted_module.sample_permutations(n, seed, k, small_blocks)
    for metric, reference in (("cka", ref.linear_cka), ("cka_rbf", ref.rbf_cka)):
        nulls = np.zeros((k, 2, 2))
        for i, xa in enumerate(a.values()):
            for j, yb in enumerate(b.values()):
                nulls[:, i, j] = [reference(xa, yb[p]) for p in perms]
        observed = ds[metric].values
        np.testing.assert_allclose(ds[f"{metric}_null_mean"].values, nulls.mean(axis=0),
                                   atol=1e-10)
        np.testing.assert_allclose(ds[f"{metric}_null_std"].values,
                                   nulls.std(axis=0, ddof=1), atol=1e-10)
        raw = (1 + (nulls >= observed - 1e-9).sum(axis=0)) / (k + 1)
        np.testing.assert_allclose(ds[f"{metric}_pvalue"].values, raw, rtol=1e-12)
        np.testing.assert_allclose(ds[f"{metric}_pvalue_fwer"].values,
                                   ref.max_statistic_pvalues(observed, nulls), rtol=1e-12)
        np.testing.assert_allclose(ds[f"{metric}_pvalue_fdr"].values,
                                   ref.benjamini_hochberg(raw), rtol=1e-12)
    # x against itself: the smallest p-value there is
    assert ds.cka_pvalue.sel(layer_a="x", layer_b="x").item() == pytest.approx(1 / (k + 1))


def test_zoo_cells_mirror_their_null(small_blocks):
    """A zoo of layers with itself on the tiles: the lower cell's null is the upper one's,
    and both are the pairwise call's."""
    n, k = 256, 9
    x, y, z = _layers(n, 3)
    ds = dr.compare_zoo({"a": {"x": x, "y": y}, "b": {"z": z}}, metrics=["cka"],
                        method="gram", permutations=k, seed=4)
    pair = dr.cka(x, z, method="gram", permutations=k, seed=4)
    for cell in ({"a": "a/x", "b": "b/z"}, {"a": "b/z", "b": "a/x"}):
        assert ds.cka_pvalue.sel(cell).item() == pair.pvalue
        assert ds.cka_null_mean.sel(cell).item() == pytest.approx(np.mean(pair.null),
                                                                  abs=1e-12)
        assert ds.cka_null_std.sel(cell).item() == pytest.approx(np.std(pair.null, ddof=1),
                                                                 abs=1e-12)


@pytest.mark.parametrize("spec", ["cka", "cka_debiased", "cka_rbf"])
def test_pvalues_are_uniform_for_independent_layers(spec):
    """Independent skewed layers, 500 times (n = 40, 19 permutations): the rate of p <= 0.05
    is within its binomial 99% range, and the p-values are uniform on {1/20, ..., 1}."""
    reps, k = 500, 19
    options = {"cka_debiased": {"debiased": True}, "cka_rbf": {"kernel": "rbf"}}.get(spec, {})
    p = np.empty(reps)
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            rng = np.random.default_rng(7000 + r)
            x, y = np.exp(rng.normal(size=(40, 3))), rng.normal(size=(40, 2)) ** 2
            p[r] = dr.cka(x, y, method="gram", permutations=k, seed=r, **options).pvalue
    low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
    assert low <= np.sum(p <= 0.05) <= high, np.sum(p <= 0.05)
    counts = np.histogram(p, bins=[0, 0.26, 0.51, 0.76, 1.01])[0]
    assert stats.chisquare(counts).pvalue > 0.001, counts


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_family_wise_rate_of_a_grid_of_unrelated_layers_on_the_tiles():
    """A 5 x 5 grid of independent layers on the gram path, 300 times: the chance that any
    family-wise p-value is <= 0.05 is within the 99% binomial range of 0.05."""
    reps, k = 300, 49
    any_fwer, any_raw = np.zeros(reps, bool), np.zeros(reps, bool)
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            rng = np.random.default_rng(9000 + r)
            a = {f"a{i}": rng.normal(size=(40, 2 + i % 2)) for i in range(5)}
            b = {f"b{i}": np.exp(rng.normal(size=(40, 2))) for i in range(5)}
            ds = dr.compare(a, b, metrics=["cka"], method="gram", permutations=k, seed=r)
            any_fwer[r] = (ds.cka_pvalue_fwer <= 0.05).any()
            any_raw[r] = (ds.cka_pvalue <= 0.05).any()
    low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
    assert low <= any_fwer.sum() <= high, any_fwer.sum()
    assert any_raw.mean() > 0.5, any_raw.mean()


@pytest.mark.parametrize("method", ["covariance", "gram"])
def test_power_increases_with_the_number_of_samples(method):
    """A weak linear relation (y = 0.25 x + noise): the rejection rate at 0.05 over 60
    repetitions grows with n, from near the level to nearly always."""
    rates = []
    for n in (20, 80, 320):
        hits = 0
        with dask.config.set(scheduler="sync"):
            for r in range(60):
                rng = np.random.default_rng([n, r])
                x = rng.normal(size=(n, 4))
                y = 0.25 * x[:, :2] + rng.normal(size=(n, 2))
                hits += dr.cka(x, y, method=method, permutations=39, seed=r).pvalue <= 0.05
        rates.append(hits / 60)
    assert rates[0] < rates[1] < rates[2], rates
    assert rates[0] < 0.3 and rates[2] > 0.9, rates


def test_errors_of_a_null_on_the_tiles(small_blocks, monkeypatch):
    """Row blocks that split permutation blocks, a budget too small for whole permutation
    blocks, and workers that may not share a scratch directory are errors that say so."""
    x, y, _ = _layers(200, 4)
    layers = [as_layer(x, name="x"), as_layer(y, name="y")]
    with pytest.raises(ValueError, match="split the permutation blocks of 64 samples"):
        samplespace.gram_cells([{"debiased": False}], layers, [0], [1], seed=0,
                               block_rows=100, permutations=3)
    with pytest.raises(ValueError, match="needs row blocks of at least 64 samples"):
        permuted.aligned_rows(40, 200, BLOCK)
    monkeypatch.setattr(samplespace, "workers_share_this_machine", lambda: False)
    with pytest.raises(ValueError, match="a permutation null or an interval on the "
                                         "sample-space tiles keeps files in a scratch"):
        dr.cka(x, y, method="gram", permutations=3)
    with pytest.raises(ValueError, match="an interval on the sample-space tiles keeps"):
        dr.cka(x, y, method="gram", interval="jackknife")


def _rbf_fixed(sigma: float):
    """RBF CKA of the rows ``keep`` with the bandwidths of all samples (what a replicate keeps),
    in numpy: (x, y, keep) -> value."""

    def sq(a: np.ndarray) -> np.ndarray:
        g = ref.centre(a) @ ref.centre(a).T
        d = np.maximum(np.diag(g)[:, None] + np.diag(g)[None, :] - 2 * g, 0)
        np.fill_diagonal(d, 0)
        return d

    def value(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> float:
        dx, dy = sq(x), sq(y)
        k = np.exp(-dx[np.ix_(keep, keep)] / (2 * sigma**2 * np.median(dx)))
        g = np.exp(-dy[np.ix_(keep, keep)] / (2 * sigma**2 * np.median(dy)))
        h = np.eye(len(keep)) - 1 / len(keep)

        def hsic(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.trace(a @ h @ b @ h))

        return hsic(k, g) / np.sqrt(hsic(k, k) * hsic(g, g))

    return value


@pytest.mark.parametrize("block_rows", [None, 96], ids=["whole", "row_blocks"])
def test_replicates_equal_the_measure_without_each_group(block_rows):
    """Every cell and kernel of a 2 x 3 grid: replicate g is the measure of numpy on the
    samples outside group g (7 contiguous groups, not aligned with the row blocks) (<= 1e-10);
    RBF CKA keeps the bandwidths of all samples."""
    n, groups = 300, 7
    data = _layers(n, 5)
    layers = [as_layer(a, name=f"l{i}") for i, a in enumerate(data)]
    specs = [spec for spec, _ in SPECS.values()]
    rows, cols = [0, 1], [1, 2, 0]
    with dask.config.set(scheduler="threads"):
        cells, _ = samplespace.gram_cells(specs, layers, rows, cols, seed=0,
                                          block_rows=block_rows, groups=groups)
    bounds = group_bounds(n, groups)
    outside = [np.r_[0:bounds[g], bounds[g + 1]:n] for g in range(groups)]
    for (m, i, j), cell in cells.items():
        name, (spec, reference) = list(SPECS.items())[m]
        a, b = data[rows[i]], data[cols[j]]
        if spec.get("kernel") == "rbf":
            fixed = _rbf_fixed(spec["sigma"])
            expected = [fixed(a, b, keep) for keep in outside]
        else:
            expected = [reference(a[keep], b[keep]) for keep in outside]
        np.testing.assert_allclose(cell.replicates, expected, rtol=0, atol=1e-10,
                                   err_msg=str((name, i, j)))


def test_interval_is_the_co_moment_interval_for_linear_cka():
    """Linear and debiased CKA: the same replicates, so the same interval, on both paths, in
    a pairwise call and in a grid, with a permutation test beside it."""
    x, y, z = _layers(400, 6)
    for debiased in (False, True):
        tiles = dr.cka(x, y, method="gram", debiased=debiased, interval="jackknife", groups=9,
                       level=0.9)
        co = dr.cka(x, y, method="covariance", debiased=debiased, interval="jackknife",
                    groups=9, level=0.9)
        for field in ("stderr", "ci_centre", "ci_low", "ci_high"):
            assert getattr(tiles, field) == pytest.approx(getattr(co, field), abs=1e-12), field
        assert tiles.n_groups == 9 and tiles.level == 0.9
    grid = dr.compare({"x": x}, {"y": y, "z": z}, metrics=["cka", "cka_rbf"], method="gram",
                      interval="jackknife", permutations=9)
    co = dr.compare({"x": x}, {"y": y, "z": z}, metrics=["cka"], interval="jackknife",
                    permutations=9)
    for var in ("cka_low", "cka_high", "cka_centre", "cka_stderr", "cka_pvalue"):
        np.testing.assert_allclose(grid[var].values, co[var].values, rtol=0, atol=1e-12)
    assert {"cka_rbf_low", "cka_rbf_pvalue_fwer"} <= set(grid.data_vars)


def _rbf_population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """5 Gaussian units and 4 that are a tanh of a mix of them plus noise."""
    x = rng.normal(size=(n, 5))
    return x, np.tanh(1.5 * x @ W_RBF) + 0.6 * rng.normal(size=(n, 4))


W_RBF = np.random.default_rng(11).normal(size=(5, 4)) / np.sqrt(5)


def test_rbf_intervals_cover_at_their_level():
    """RBF CKA on the tiles, n = 200, 200 independent samples: 95% jackknife intervals (20
    groups, bias-corrected centre) cover the population value (RBF CKA of 6,000 samples, in
    numpy) within the 99% binomial range of 95%."""
    rng = np.random.default_rng(12)
    truth = ref.rbf_cka(*_rbf_population(6000, rng))
    sims, covered = 200, 0
    with dask.config.set(scheduler="sync"):
        for _ in range(sims):
            e = dr.cka(*_rbf_population(200, rng), kernel="rbf", interval="jackknife")
            covered += e.ci_low <= truth <= e.ci_high
    low, high = stats.binom.ppf(0.005, sims, 0.95), stats.binom.isf(0.005, sims, 0.95)
    assert low <= covered <= high, (covered, truth)


def test_several_bandwidths_each_with_its_test_and_interval(small_blocks):
    """``sigma=[0.4, 0.8]`` with permutations and intervals: each bandwidth's variables are
    those of a call with that bandwidth alone."""
    x, y, _ = _layers(150, 8)
    ds = dr.compare({"x": x}, {"y": y}, metrics=["cka_rbf"], sigma=[0.4, 0.8],
                    permutations=9, interval="jackknife", groups=6)
    for sigma in (0.4, 0.8):
        one = dr.cka(x, y, kernel="rbf", sigma=sigma, permutations=9, interval="jackknife",
                     groups=6)
        name = f"cka_rbf_{sigma:g}"
        assert ds[f"{name}_pvalue"].item() == one.pvalue
        assert ds[f"{name}_null_mean"].item() == pytest.approx(one.null_mean, abs=1e-12)
        assert ds[f"{name}_low"].item() == pytest.approx(one.ci_low, abs=1e-12)
        assert ds[f"{name}_high"].item() == pytest.approx(one.ci_high, abs=1e-12)


@pytest.mark.parametrize("method", ["covariance", "gram"])
def test_too_few_permutations_or_groups_say_so(method):
    """Fewer than 19 permutations cannot reach p <= 0.05: a warning says so (never a NaN
    p-value); one jackknife group, more groups than samples, or a replicate with fewer samples
    than the measure needs, is an error."""
    x, y, _ = _layers(40, 9)
    with pytest.warns(dr.RepsimWarning, match=r"permutations=9: the smallest p-value 9 "
                                              r"permutations can give is 1/10 = 0.1"):
        e = dr.cka(x, y, method=method, permutations=9)
    assert e.pvalue >= 0.1 and np.isfinite(e.pvalue)
    with pytest.raises(ValueError, match="groups must be an int >= 2"):
        dr.cka(x, y, method=method, interval="jackknife", groups=1)
    with pytest.raises(ValueError, match="groups=41 is more than the 40 samples"):
        dr.cka(x, y, method=method, interval="jackknife", groups=41)
    with pytest.raises(dr.SampleCountError, match=r"groups=2 of 6 samples leaves 3 samples "
                       r".*replicates of cka_debiased need at least 4: give groups=3 or more"):
        dr.cka(x[:6], y[:6], method=method, debiased=True, interval="jackknife", groups=2)
    with pytest.raises(dr.SampleCountError, match=r"groups=3 of 3 samples leaves 2 samples .*"
                       r"replicates of cka need at least 3: a jackknife of it needs at least 4"):
        dr.cka(x[:3], y[:3], method=method, interval="jackknife", groups=3)


def test_null_and_replicates_are_the_same_on_worker_processes():
    """Two worker processes of a local cluster give the threaded scheduler's null and
    interval (the permutations and groups do not depend on where the tasks run)."""
    distributed = pytest.importorskip("distributed")
    x, y, _ = _layers(300, 10)
    here = dr.cka(x, y, kernel="rbf", permutations=19, interval="jackknife", seed=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        there = dr.cka(x, y, kernel="rbf", permutations=19, interval="jackknife", seed=2)
    np.testing.assert_allclose(there.null, here.null, rtol=0, atol=1e-12)
    for field in ("ci_low", "ci_high", "stderr"):
        assert getattr(there, field) == pytest.approx(getattr(here, field), abs=1e-12)
