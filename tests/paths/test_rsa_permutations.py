"""Permutation tests of RSA from the same pass over the row-block tiles: each null value equals
RSA recomputed (rsatoolbox's calc_rdm and compare, and numpy from the definitions) on y's rows
permuted by the documented permutations, for every RDM and comparison; the null does not depend
on the tiles, the chunking or the grid; the p-values are calibrated and gain power with n."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import references
import xarray as xr
from conftest import write_zarr
from scipy import stats

import dask_repsim as dr
from dask_repsim import cli, registry
from dask_repsim.engine.permuted import sample_permutations
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks.cells import sample_cells
from dask_repsim.paths.sample_blocks.rsa import ALL_COMPARES, rsa_values

rsatoolbox = pytest.importorskip("rsatoolbox")

BLOCK = 64


def _pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two related layers with offsets (y: a tanh of x plus noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 7)) * np.linspace(0.5, 2.0, 7) + 3.0
    y = np.tanh(x[:, :5] @ rng.normal(size=(5, 4))) + 0.7 * rng.normal(size=(n, 4)) + 10.0
    return x, y


def _noise(rng: np.random.Generator, p: int) -> np.ndarray:
    """A noise precision matrix (symmetric positive definite)."""
    a = rng.normal(size=(p, p))
    return a @ a.T / p + np.eye(p)


def _toolbox(x: np.ndarray, y: np.ndarray, rdm: str, compare: str, noise=None) -> float:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm
    from rsatoolbox.rdm import compare as rdm_compare

    given = [{} if noise is None else {"noise": p} for p in (noise or (None, None))]
    r1 = calc_rdm(Dataset(x), method=rdm, **given[0])
    r2 = calc_rdm(Dataset(y), method=rdm, **given[1])
    return float(rdm_compare(r1, r2, method=compare)[0, 0])


def _toolbox_permuted(x: np.ndarray, y: np.ndarray, rdm: str, compare: str, noise,
                      perm: np.ndarray) -> float:
    """rsatoolbox's comparison of x's RDM with y's RDM permuted by ``permute_rdms`` (rows and
    columns ``perm``), the toolbox's own permutation of conditions."""
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm
    from rsatoolbox.rdm import compare as rdm_compare
    from rsatoolbox.rdm.rdms import permute_rdms

    given = [{} if noise is None else {"noise": p} for p in (noise or (None, None))]
    r1 = calc_rdm(Dataset(x), method=rdm, **given[0])
    r2 = calc_rdm(Dataset(y), method=rdm, **given[1])
    r2.pattern_descriptors["index"] = list(range(len(y)))  # permute_rdms moves them too
    r2 = permute_rdms(r2, p=perm.astype(int))
    return float(rdm_compare(r1, r2, method=compare)[0, 0])


@pytest.mark.parametrize("block_rows", [None, 64, 128], ids=["one_tile", "tiles_64", "tiles_128"])
@pytest.mark.parametrize("rdm", ["correlation", "euclidean", "mahalanobis"])
def test_null_equals_rsatoolbox_on_permuted_samples(small_blocks, rdm, block_rows):
    """n = 150 over three permutation blocks, tiles of one block, two and all samples: the
    k-th null value of every comparison is rsatoolbox's on x and y's rows permuted by the k-th
    documented permutation (<= 1e-10); corr is also numpy's (tests/references.py)."""
    n, count, seed = 150, 4, 3
    x, y = _pair(n, 1)
    rng = np.random.default_rng(2)
    noise = (_noise(rng, 7), _noise(rng, 4)) if rdm == "mahalanobis" else None
    got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm=rdm, compares=ALL_COMPARES,
                     noise=noise, block_rows=block_rows, null=(count, seed))
    perms = sample_permutations(n, seed, count, BLOCK)
    assert sorted(perms[0, 64:128]) == list(range(64, 128))  # within blocks
    assert set(got["null"]) == set(ALL_COMPARES)
    for k, perm in enumerate(perms):
        for compare in ALL_COMPARES:
            expected = _toolbox(x, y[perm], rdm, compare, noise)
            assert got["null"][compare][k] == pytest.approx(expected, abs=1e-10), (compare, k)
            assert got["null"][compare][k] == pytest.approx(
                _toolbox_permuted(x, y, rdm, compare, noise, perm), abs=1e-10), (compare, k)
        if rdm == "correlation":
            assert got["null"]["corr"][k] == pytest.approx(
                references.rsa_correlation(x, y[perm]), abs=1e-10)
    for compare in ALL_COMPARES:  # the null is not the value repeated
        assert np.ptp(got["null"][compare]) > 1e-6, compare
        assert got[compare] == pytest.approx(_toolbox(x, y, rdm, compare, noise), abs=1e-10)


def test_rank_nulls_with_tied_dissimilarities(small_blocks):
    """Integer activations (many equal distances): the rank comparisons' nulls are
    rsatoolbox's on the permuted samples, ties and all."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(140, 4)).astype(float)
    y = (x[:, :3] + rng.integers(0, 2, size=(140, 3))).astype(float)
    compares = ("spearman", "rho-a", "tau-b", "tau-a")
    got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean", compares=compares,
                     block_rows=64, null=(3, 8))
    for k, perm in enumerate(sample_permutations(140, 8, 3, BLOCK)):
        for compare in compares:
            expected = _toolbox(x, y[perm], "euclidean", compare)
            assert got["null"][compare][k] == pytest.approx(expected, abs=1e-10), compare


def test_null_is_the_same_for_any_tiles_chunking_and_grid(small_blocks):
    """The null of a pair depends on the seed and n only: row blocks of 64 or 128 samples or
    one tile, chunks of 37 samples, a 2 x 3 grid with other layers (the cells compare runs),
    and the public rsa's p-value and null mean."""
    n = 200
    x, y = _pair(n, 5)
    z = np.random.default_rng(6).normal(size=(n, 3))
    compares = ("corr", "cosine_cov", "spearman")
    runs = [rsa_values(as_layer(x), as_layer(y, name="y"), compares=compares, null=(5, 2),
                       block_rows=rows) for rows in (None, 64, 128)]
    chunked = rsa_values(as_layer(da.from_array(x, chunks=(37, 7))),
                         as_layer(da.from_array(y, chunks=(37, 4)), name="y"),
                         compares=compares, null=(5, 2), block_rows=64)
    for other in [*runs[1:], chunked]:
        for c in compares:
            np.testing.assert_allclose(other["null"][c], runs[0]["null"][c], rtol=0, atol=1e-12)
    layers = [as_layer(a, name=name) for a, name in ((x, "x"), (z, "z"), (y, "y"))]
    functions = registry.path_functions("sample_blocks", ["rsa", "rsa"],
                                        {"rdm_compare": "corr"})
    cells, _ = sample_cells(functions[:1], layers, [0, 1], [2, 1, 0], ["rsa"],
                            permutations=5, seed=2)
    np.testing.assert_allclose(cells[0, 0, 0].null, runs[0]["null"]["corr"], rtol=0, atol=1e-12)
    assert cells[0, 0, 0].value == pytest.approx(runs[0]["corr"], abs=1e-12)
    one = dr.rsa(x, y, permutations=5, seed=2)
    assert one.null_mean == pytest.approx(np.mean(runs[0]["null"]["corr"]), abs=1e-12)
    grid = dr.compare({"x": x, "z": z}, {"y": y, "z2": z, "x2": x}, metrics=["rsa"],
                      permutations=5, seed=2)
    assert float(grid.rsa_null_mean.sel(layer_a="x", layer_b="y")) == pytest.approx(
        one.null_mean, abs=1e-12)
    assert float(grid.rsa_pvalue.sel(layer_a="x", layer_b="y")) == one.pvalue


def test_pvalues_in_pairwise_calls_grids_and_the_cli(tmp_path):
    """A related pair is significant, an unrelated one not; a grid has the p-value variables
    and their corrections, and the command line's --permutations works for rsa."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(200, 6))
    y = x[:, :4] + 0.8 * rng.normal(size=(200, 4))
    unrelated = rng.normal(size=(200, 4))
    for compare in ("corr", "spearman", "tau-a", "corr_cov"):
        related = dr.rsa(x, y, rdm="euclidean", compare=compare, permutations=99, seed=1)
        assert related.pvalue == pytest.approx(0.01) and related.n_permutations == 99
        assert related.null_mean + 3 * related.null_std < float(related), compare
        assert dr.rsa(x, unrelated, compare=compare, permutations=99).pvalue > 0.01
    ds = dr.compare({"x": x}, {"y": y, "noise": unrelated}, metrics=["rsa", "mutual_knn"],
                    rdm_compare="spearman", permutations=99)
    for suffix in ("pvalue", "pvalue_fwer", "pvalue_fdr", "null_mean", "null_std"):
        assert f"rsa_{suffix}" in ds
    assert float(ds.rsa_pvalue.sel(layer_b="y").squeeze()) == pytest.approx(0.01)
    assert float(ds.rsa_pvalue.sel(layer_b="noise").squeeze()) > 0.01
    write_zarr(tmp_path / "a.zarr", "x", x, (50, 7))
    write_zarr(tmp_path / "b.zarr", "y", y, (50, 4))
    out = tmp_path / "grid.nc"
    assert cli.main(["compare", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "-m", "rsa",
                     "--permutations", "19", "--seed", "3", "--out", str(out)]) == 0
    with xr.open_dataset(out) as saved:
        assert float(saved.rsa_pvalue.squeeze()) == pytest.approx(0.05)
        assert float(saved.rsa_null_mean.squeeze()) == pytest.approx(
            dr.rsa(x, y, permutations=19, seed=3).null_mean, abs=1e-12)


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_pvalues_of_independent_layers_are_calibrated():
    """500 pairs of independent layers (n = 20 samples, one permutation block, 19
    permutations), through the registry's function that compare runs: for every comparison
    the rate of p <= 0.05 is within its binomial 99% range, and the p-values are uniform."""
    reps, count = 500, 19
    compares = ("corr", "cosine", "spearman", "tau-a", "corr_cov")
    pvalues = {c: np.empty(reps) for c in compares}
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            rng = np.random.default_rng(4000 + r)
            x, y = np.exp(rng.normal(size=(20, 4))), rng.normal(size=(20, 3)) ** 2
            got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean",
                             compares=compares, null=(count, r))
            for c in compares:
                pvalues[c][r] = dr.results.permutation_pvalue(got[c], np.array(got["null"][c]))
    low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
    for c, p in pvalues.items():
        assert low <= np.sum(p <= 0.05) <= high, (c, np.sum(p <= 0.05))
        counts = np.histogram(p, bins=[0, 0.26, 0.51, 0.76, 1.01])[0]
        assert stats.chisquare(counts).pvalue > 0.001, (c, counts)


def test_the_registry_function_is_what_compare_runs():
    """The calibration test's function: compare's sample_blocks cell is rsa_values' null."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 3))
    found = registry.path_functions("sample_blocks", ["rsa"], {"rdm": "euclidean"})[0](
        as_layer(x), as_layer(y, name="y"), null=(19, 4))
    value, null = found["rsa"], found["null"]["rsa"]
    got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean", null=(19, 4))
    assert (value, null) == (got["corr"], got["null"]["corr"])
    e = dr.rsa(x, y, rdm="euclidean", permutations=19, seed=4)
    assert list(e.null) == null


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_power_increases_with_the_number_of_samples():
    """A weak relation (y = 0.5 x + noise): the rejection rate at 0.05 over 60 repetitions
    grows with n, to nearly always at n = 320."""
    rates = []
    with dask.config.set(scheduler="sync"):
        for n in (20, 80, 320):
            hits = 0
            for r in range(60):
                rng = np.random.default_rng([n, r])
                x = rng.normal(size=(n, 4))
                y = 0.5 * x[:, :2] + rng.normal(size=(n, 2))
                got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean",
                                 null=(39, r))
                hits += dr.results.permutation_pvalue(got["corr"],
                                                      np.array(got["null"]["corr"])) <= 0.05
            rates.append(hits / 60)
    assert rates[0] < rates[1] < rates[2], rates
    assert rates[0] < 0.4 and rates[2] > 0.9, rates


def test_errors_of_rsa_permutations(small_blocks):
    """Row blocks that split permutation blocks, a budget too small for whole ones, and too
    few permutations say so."""
    x, y = _pair(200, 4)
    with pytest.raises(ValueError, match="row blocks of 100 samples split the permutation "
                                         "blocks of 64 samples; give a multiple of 64"):
        rsa_values(as_layer(x), as_layer(y, name="y"), block_rows=100, null=(3, 0))
    with dask.config.set({"repsim.memory-budget": "200kB"}), pytest.raises(
            ValueError, match=r"a permutation test of RSA needs whole permutation blocks in "
                              r"each row block of the tiles \(row blocks of 64 samples\), and "
                              r"the memory budget \(195.31 kiB, shared by \d+ tasks? at once\) "
                              r"allows \d+ samples per row block: raise dask config "
                              r"'repsim.memory-budget'"):
        dr.rsa(x, y, permutations=19)
    with pytest.warns(dr.RepsimWarning, match=r"permutations=9: the smallest p-value 9 "
                                              r"permutations can give is 1/10 = 0.1"):
        e = dr.rsa(x, y, permutations=9)
    assert e.pvalue == pytest.approx(0.1)


def test_a_budget_too_small_for_all_samples_in_one_block():
    """Fewer samples than a permutation block: one tile of all of them, or an error."""
    x, y = _pair(300, 4)
    with dask.config.set({"repsim.memory-budget": "1MB"}), pytest.raises(
            ValueError, match=r"\(all 300 samples in one row block\), and the memory budget "
                              r"\(0.95 MiB, shared by 1 task at once\) allows 87 samples"):
        dr.rsa(x, y, permutations=19)
    with dask.config.set({"repsim.memory-budget": "1MB"}):
        assert dr.rsa(x, y) == pytest.approx(references.rsa_correlation(x, y), abs=1e-10)
