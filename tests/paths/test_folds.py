"""The cross-validated predictivities' jackknife and null (dask_repsim.paths.covariance.folds),
against the k-fold loop in memory (tests/references.py) on the data without each group and on
y's samples permuted within the folds."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import references
import scipy.stats
import xarray as xr
from cluster_utils import on_threads_and_workers

import dask_repsim as dr
from dask_repsim.engine import permuted
from dask_repsim.engine.stream import group_bounds
from dask_repsim.io.inputs import as_layer
from dask_repsim.measures import predictivity
from dask_repsim.paths.covariance.folds import split_null, split_replicates
from dask_repsim.paths.covariance.passes import run_pass


def _data(n: int, p: int = 6, q: int = 4, seed: int = 0, offset: float = 0.0,
          strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * np.linspace(0.5, 2.0, p)
    y = strength * np.tanh(x @ rng.normal(size=(p, q)) / np.sqrt(p)) + rng.normal(size=(n, q))
    return x + offset, y - offset


def _nested(n: int, k: int, groups: int) -> list[int]:
    """Group bounds within the folds, written out: fold f split by np.linspace into
    ``groups // k`` runs, or one more for the first ``groups % k`` folds."""
    folds = references.fold_bounds(n, k)
    out = []
    for f in range(k):
        runs = groups // k + (f < groups % k)
        out += np.rint(np.linspace(folds[f], folds[f + 1], runs + 1)).astype(int)[:-1].tolist()
    return [*out, n]


def _fold_labels(n: int, k: int) -> np.ndarray:
    return np.repeat(np.arange(k), np.diff(references.fold_bounds(n, k)))


MEASURES = {
    "ridge": (lambda pair, split: predictivity.ridge_predictivity(pair, split, ridge=1e-3),
              lambda x, y, labels, k: references.ridge_predictivity(x, y, k, 1e-3, labels)),
    "ridge_gcv": (predictivity.ridge_predictivity,
                  lambda x, y, labels, k: references.ridge_predictivity(x, y, k, None, labels)),
    "pls": (lambda pair, split: predictivity.pls_predictivity(pair, split, components=2),
            lambda x, y, labels, k: references.pls_predictivity(x, y, k, 2, labels)),
}


@pytest.mark.parametrize("name", ["ridge", "ridge_gcv"])
@pytest.mark.parametrize(("n", "k", "groups"), [(97, 4, 8), (120, 5, 15), (90, 3, 6),
                                                (100, 3, 7), (61, 4, 4)])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_each_replicate_is_the_kfold_score_without_its_group(name, n, k, groups, offset):
    """Replicate g: the k-fold score of the samples outside group g, each in its own fold
    (the fold holding g is held out without it); the groups lie within the folds, the first
    ``groups % k`` folds holding one more."""
    ours, reference = MEASURES[name]
    x, y = _data(n, offset=offset)
    bounds, labels = _nested(n, k, groups), _fold_labels(n, k)
    assert (np.diff(bounds) > 0).all() and set(references.fold_bounds(n, k)) <= set(bounds)
    result = run_pass([as_layer(x, name="x"), as_layer(y, name="y")], groups=groups,
                      bounds=bounds)
    reps = [ours(pair, split) for pair, split in split_replicates(result, 0, 1, k)]
    assert len(reps) == groups
    for g, value in enumerate(reps):
        keep = np.ones(n, bool)
        keep[bounds[g]:bounds[g + 1]] = False
        expected = reference(x[keep], y[keep], labels[keep], k)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-10), g


def _pair_permutations(n: int, k: int, seed: int, count: int,
                       keep: np.ndarray) -> np.ndarray:
    """(count, kept samples): with samples left out (``keep`` False), y's kept sample paired
    with each kept sample of x: in each cell of the permutation blocks cut at the fold bounds,
    the i-th kept sample with the i-th kept sample the cell's permutation visits."""
    rank = np.cumsum(keep) - 1  # each kept sample's position among the kept
    out = np.empty((count, int(keep.sum())), int)
    for first, stop, _ in permuted.permutation_cells(0, n, permuted.PERMUTATION_BLOCK,
                                                     group_bounds(n, k)):
        cell = first + permuted.block_permutations(seed, first, stop - first, count)
        mine = keep[first:stop]
        for c in range(count):
            visited = cell[c][keep[cell[c]]]  # the kept samples, in the order visited
            out[c, rank[first:stop][mine]] = rank[visited]
    return out


def _within_fold_permutations(n: int, k: int, seed: int, count: int) -> np.ndarray:
    """(count, n): y's sample paired with each sample of x, permuted within the cells of the
    permutation blocks cut at the fold bounds."""
    out = np.empty((count, n), int)
    for first, stop, _ in permuted.permutation_cells(0, n, permuted.PERMUTATION_BLOCK,
                                                     group_bounds(n, k)):
        out[:, first:stop] = first + permuted.block_permutations(seed, first, stop - first,
                                                                 count)
    return out


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize(("n", "k", "block"), [(100, 4, 16), (83, 3, 2048), (60, 5, 7)])
def test_each_null_value_is_the_kfold_score_of_permuted_y(monkeypatch, name, n, k, block):
    monkeypatch.setattr(permuted, "PERMUTATION_BLOCK", block)
    ours, reference = MEASURES[name]
    x, y = _data(n, seed=1)
    result = run_pass([as_layer(x, name="x"), as_layer(y, name="y")], groups=k,
                      permute=([0], [1], 6, 3), null_groups=k)
    null = [ours(pair, split) for pair, split in split_null(result, 0, 1, k)]
    perms = _within_fold_permutations(n, k, 3, 6)
    labels = _fold_labels(n, k)
    for perm, value in zip(perms, null, strict=True):
        assert (labels[perm] == labels).all()  # every fold keeps its samples
        assert not (perm == np.arange(n)).all()
        expected = reference(x, y[perm], None, k)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize(("n", "k", "block"), [(120, 4, 16), (95, 3, 2048)])
def test_null_with_omitted_samples_is_that_of_each_pairs_finite_samples(monkeypatch, name, n,
                                                                         k, block):
    """nan_policy="omit": NaN in x, in y and in a third layer z. The pair (x, y)'s null values
    are the k-fold score of its samples finite in both (each fold keeping its storage range),
    y's permuted within the cells of the permutation blocks cut at the fold bounds, the i-th
    kept sample paired with the i-th kept sample the cell's permutation visits; z's NaN leave
    the pair's samples alone, and cells with NaN somewhere are computed aside."""
    monkeypatch.setattr(permuted, "PERMUTATION_BLOCK", block)
    ours, reference = MEASURES[name]
    x, y = _data(n, seed=4)
    z = np.cos(x[:, :3])
    rng = np.random.default_rng(n)
    for array, rows in ((x, rng.choice(n, 5, replace=False)), (y, [1, 2, 40]),
                        (z, rng.choice(n, 9, replace=False))):
        array[rows, 0] = np.nan
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    with pytest.warns(dr.RepsimWarning, match="nan_policy='omit'"):
        result = run_pass([as_layer(x, name="x"), as_layer(y, name="y"), as_layer(z, name="z")],
                          groups=k, nan_policy="omit", permute=([0, 2], [1], 6, 3),
                          null_groups=k, pairs=[(0, 1), (2, 1)])
    null = [ours(pair, split) for pair, split in split_null(result, 0, 1, k)]
    labels = _fold_labels(n, k)[keep]
    perms = _pair_permutations(n, k, 3, 6, keep)
    assert result.aside.blocks  # some cells were computed aside
    for perm, value in zip(perms, null, strict=True):
        assert (labels[perm] == labels).all()
        expected = reference(x[keep], y[keep][perm], labels, k)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_omitted_samples_null_does_not_depend_on_the_other_layers():
    """nan_policy="omit" with permutations= through the public functions: the pair's p-value
    and null are the same alone and in a grid beside a layer with NaN at other samples."""
    x, y = _data(150, seed=8)
    x[[3, 77], 1] = np.nan
    z = np.sin(y)
    z[[10, 11, 140], 0] = np.nan
    with pytest.warns(dr.RepsimWarning, match="nan_policy='omit'"):
        alone = dr.ridge_predictivity(x, y, folds=3, permutations=19, seed=2,
                                      nan_policy="omit")
    with pytest.warns(dr.RepsimWarning, match="nan_policy='omit'"):
        grid = dr.compare({"x": x}, {"y": y, "z": z}, metrics=["ridge_predictivity"], folds=3,
                          permutations=19, seed=2, nan_policy="omit")
    cell = grid.sel(layer_a="x", layer_b="y")
    assert float(cell.ridge_predictivity) == pytest.approx(float(alone), rel=1e-12)
    assert float(cell.ridge_predictivity_pvalue) == alone.pvalue
    assert float(cell.ridge_predictivity_null_mean) == pytest.approx(alone.null_mean, rel=1e-12)
    assert len(alone.null) == 19 and np.isfinite(alone.null).all()


def test_public_functions_report_the_jackknife_and_the_null():
    x, y = _data(150, seed=2)
    k, groups = 5, 10
    e = dr.ridge_predictivity(x, y, folds=k, ridge=1e-3, interval="jackknife", groups=groups,
                              permutations=19, seed=4)
    bounds, labels = _nested(150, k, groups), _fold_labels(150, k)
    reps = []
    for g in range(groups):
        keep = np.ones(150, bool)
        keep[bounds[g]:bounds[g + 1]] = False
        reps.append(references.ridge_predictivity(x[keep], y[keep], k, 1e-3, labels[keep]))
    reps = np.array(reps)
    stderr = np.sqrt((groups - 1) / groups * np.sum((reps - reps.mean()) ** 2))
    assert e.stderr == pytest.approx(stderr, rel=1e-9)
    assert e.ci_centre == pytest.approx(float(e), rel=1e-15)  # centred on the estimate
    t = scipy.stats.t.ppf(0.975, groups - 1)
    assert (e.ci_low, e.ci_high) == pytest.approx((e - t * stderr, e + t * stderr), rel=1e-9)
    assert e.n_groups == groups and len(e.null) == 19
    assert e.pvalue == (1 + sum(v >= e for v in e.null)) / 20
    again = dr.pls_predictivity(x, y, folds=k, permutations=19, seed=4)
    assert len(again.null) == 19 and 0 < again.pvalue <= 1


def test_null_does_not_depend_on_chunks_or_other_measures():
    """The same seed gives the same null whatever the storage chunking and whichever
    measures share the call: the other measures' null is the one they have alone."""
    x, y = _data(300, seed=5)
    arrays = {"x": xr.DataArray(x, dims=("sample", "unit")),
              "y": xr.DataArray(y, dims=("sample", "unit2"))}
    plain = dr.ridge_predictivity(x, y, folds=4, permutations=9, seed=2)
    chunked = dr.ridge_predictivity(da.from_array(x, chunks=(37, -1)),
                                    da.from_array(y, chunks=(50, 2)), folds=4, permutations=9,
                                    seed=2)
    np.testing.assert_array_equal(plain.null, chunked.null)
    grid = dr.compare({"x": arrays["x"]}, {"y": arrays["y"]},
                      metrics=["ridge_predictivity", "cka"], folds=4, permutations=9, seed=2)
    alone = dr.cka(x, y, permutations=9, seed=2)
    for name, e in (("ridge_predictivity", plain), ("cka", alone)):
        cell = grid.squeeze()
        assert float(cell[name]) == pytest.approx(float(e), rel=1e-12)
        assert float(cell[f"{name}_null_mean"]) == pytest.approx(np.mean(e.null), rel=1e-12)
        assert float(cell[f"{name}_null_std"]) == pytest.approx(e.null_std, rel=1e-12)
        assert float(cell[f"{name}_pvalue"]) == e.pvalue


@pytest.mark.slow
def test_null_and_interval_do_not_depend_on_the_workers():
    """Two worker processes give the threaded scheduler's null and replicates."""
    pytest.importorskip("distributed")
    x, y = _data(400, seed=7)

    def run():
        grid = dr.compare({"x": x}, {"y": y, "z": _data(400, seed=8)[1]},
                          metrics=["ridge_predictivity", "pls_predictivity"], folds=4,
                          permutations=19, seed=3)
        ridge = dr.compare({"x": x}, {"y": y}, metrics=["ridge_predictivity"], folds=4,
                           interval="jackknife", groups=8)
        return {f"{v} {i}": g[v].values for i, g in enumerate((grid, ridge))
                for v in g.data_vars}

    here, there = on_threads_and_workers(run)
    assert there.keys() == here.keys()
    assert "ridge_predictivity_stderr 1" in here and "pls_predictivity_null_mean 0" in here
    for key, value in here.items():
        np.testing.assert_allclose(there[key], value, rtol=0, atol=1e-12, err_msg=key)
    for m in ("ridge_predictivity", "pls_predictivity"):  # related pair first
        assert float(here[f"{m}_pvalue 0"][0, 0]) == pytest.approx(0.05), m


def test_errors():
    x, y = _data(30)
    with pytest.raises(ValueError, match="fewer than 3"):
        dr.ridge_predictivity(x, y, folds=10, interval="jackknife", groups=20)
    with pytest.raises(ValueError, match=r"groups=4 is fewer than the folds=5; ask for at "
                                         r"least 5 groups"):
        dr.ridge_predictivity(x, y, folds=5, interval="jackknife", groups=4)
    grid = dr.compare({"x": x}, {"y": y}, metrics=["cka", "ridge_predictivity"], folds=3,
                      interval="jackknife", groups=7)  # 7 groups within 3 folds, as CKA's
    assert grid.attrs["n_groups"] == 7
    assert np.isfinite(grid.ridge_predictivity_stderr).all()
    wide = np.random.default_rng(0).normal(size=(200, 512))
    with pytest.raises(ValueError, match=r"permutations=1000 keeps 1000 cross matrices of "
                       r"2621440 entries \(262144 for each of the 10 folds\)"):
        dr.ridge_predictivity(wide, wide[:, ::-1], permutations=1000)
    with pytest.raises(ValueError, match=r"pls_predictivity: no path of this metric supports "
                       r"intervals \(interval=\)"):
        dr.pls_predictivity(x, y, folds=3, interval="jackknife")


@pytest.mark.large
def test_permutation_pvalues_are_uniform_and_find_a_relation():
    """Calibration: 500 independent pairs (n = 60, 3 folds, 19 permutations within folds):
    p <= 0.05 as often as the binomial 99% range allows, for ridge and PLS. Power grows with
    n."""
    rejected = np.zeros(2, int)
    for rep in range(500):
        x, y = _data(60, seed=1000 + rep, strength=0.0)
        rejected += [dr.ridge_predictivity(x, y, folds=3, ridge=1e-2, permutations=19,
                                           seed=rep).pvalue <= 0.05,
                     dr.pls_predictivity(x, y, folds=3, components=2, permutations=19,
                                         seed=rep).pvalue <= 0.05]
    low, high = scipy.stats.binom.ppf([0.005, 0.995], 500, 0.05)
    assert ((low <= rejected) & (rejected <= high)).all(), rejected
    power = []
    for n in (30, 90, 270):
        found = [dr.ridge_predictivity(*_data(n, seed=5000 + rep, strength=0.6), folds=3,
                                       ridge=1e-2, permutations=19, seed=rep).pvalue <= 0.05
                 for rep in range(40)]
        power.append(np.mean(found))
    assert power[0] < power[1] < power[2] or power[2] == 1.0 > power[0], power
    assert power[2] >= 0.9, power


@pytest.mark.large
def test_interval_covers_the_expected_score():
    """Coverage: 200 samples of n = 300 (y = tanh(x W) + noise, 5 folds, 20 groups): the 95%
    interval covers the expected 5-fold score at n = 300 (the mean over 4,000 independent
    samples of the same size, Monte-Carlo error 5e-4) within the binomial 99% range (181 to
    197; 184 when written)."""
    truth = np.mean([references.ridge_predictivity(*_data(300, seed=20000 + s), 5, 1e-3)
                     for s in range(4000)])
    covered = 0
    for rep in range(200):
        e = dr.ridge_predictivity(*_data(300, seed=rep), folds=5, ridge=1e-3,
                                  interval="jackknife")
        covered += e.ci_low <= truth <= e.ci_high
    low, high = scipy.stats.binom.ppf([0.005, 0.995], 200, 0.95)
    assert low <= covered <= high, covered
