"""Permutation tests from the same pass: the null equals the measure on permuted data."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import references as ref
import zarr
from conftest import write_zarr
from scipy import stats

import dask_repsim as dr
from dask_repsim.engine import memory
from dask_repsim.engine.moments import Centred, Statistics
from dask_repsim.engine.permuted import Permuted, block_permutations
from dask_repsim.engine.stream import one_pass
from dask_repsim.io.inputs import as_layer


def _chunk_keys(group: zarr.Group) -> set[str]:
    """Every chunk key of every array in ``group`` (Zarr v3 default keys)."""
    keys = set()
    for name, arr in group.arrays():
        grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks, strict=True)]
        for idx in np.ndindex(*(len(g) for g in grid)):
            keys.add(f"{name}/c/" + "/".join(map(str, idx)))
    return keys


REFERENCES = {
    "cka": ref.linear_cka,
    "cka_debiased": ref.debiased_linear_cka,
    "mean_cca": ref.mean_cca,
    "r2_cca": ref.r2_cca,
    "svcca": ref.svcca,
    "pwcca": ref.pwcca,
    "linear_regression": ref.linear_regression,
    "procrustes": ref.procrustes,
}


def _permuted_rows(chunks: tuple[int, ...], seed: int, k: int) -> np.ndarray:
    """(k, n) sample indices of permutations within the given blocks, rebuilt block by block."""
    offsets = np.cumsum((0,) + chunks)
    return np.concatenate(
        [off + block_permutations(seed, int(off), size, k)
         for off, size in zip(offsets[:-1], chunks, strict=True)],
        axis=1,
    )


def _block_rows(n: int, block: int, seed: int, k: int) -> np.ndarray:
    """(k, n) sample indices of the documented null: each block of ``block`` consecutive
    samples permuted by ``default_rng([seed, first sample]).permutation``, k times."""
    out = np.empty((k, n), dtype=np.int64)
    for first in range(0, n, block):
        size = min(block, n - first)
        rng = np.random.default_rng([seed, first])
        for i in range(k):
            out[i, first : first + size] = first + rng.permutation(size)
    return out




def _related(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like layers with large means sharing a 3-d signal, plus a dead unit in x."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    x = np.maximum(latent @ rng.normal(size=(3, 6)) + 0.7 * rng.normal(size=(n, 6)), 0) + 300.0
    x[:, 2] = 7.0  # a dead unit
    y = latent @ rng.normal(size=(3, 4)) + 1.5 * rng.normal(size=(n, 4)) - 80.0
    return x, y


def test_block_permutations_are_permutations_fixed_by_seed_and_offset():
    a = block_permutations(3, 100, 50, 4)
    assert a.shape == (4, 50)
    assert all(sorted(p) == list(range(50)) for p in a)
    np.testing.assert_array_equal(a, block_permutations(3, 100, 50, 4))
    assert not np.array_equal(a, block_permutations(3, 150, 50, 4))
    assert not np.array_equal(a, block_permutations(4, 100, 50, 4))


def test_merged_permuted_statistics_equal_the_statistics_of_permuted_data():
    """The merge of chunk-level permuted cross statistics is the cross block of [A | P_k B]."""
    rng = np.random.default_rng(0)
    x, y = _related(500, 1)
    w = rng.normal(size=(500, 2)) * 5 + 40
    chunks, k = (120, 64, 200, 116), 3
    perms = _permuted_rows(chunks, 9, k)
    offsets = np.cumsum((0,) + chunks)
    parts = [
        Permuted.from_centred(
            Centred.of([x[a:b], w[a:b], y[a:b]], a), [0, 1], [2, 1],
            block_permutations(9, int(a), int(b - a), k),
        )
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    merged = parts[0]
    for part in parts[1:]:
        merged = Permuted.merge(merged, part)
    for i in range(k):
        # the joint array [x | w | y[perm] | w[perm]]: its statistics hold the permuted cross
        direct = Statistics.from_chunk([x, w, y[perms[i]], w[perms[i]]])
        cross = direct.comoment[:8, 8:]
        np.testing.assert_allclose(merged.cross[i], cross, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(
            merged.norm_cross[i], direct.norm_product[:2, 2:], rtol=1e-9
        )
        np.testing.assert_allclose(
            merged.norm_ab[i], direct.norm_comoment[:2, 8:], rtol=1e-9, atol=1e-4
        )
        np.testing.assert_allclose(
            merged.norm_ba[i], direct.norm_comoment[2:, :8], rtol=1e-9, atol=1e-4
        )
    np.testing.assert_allclose(merged.mean_a, np.r_[x.mean(0), w.mean(0)], rtol=1e-12)
    assert merged.count == 500


@pytest.mark.parametrize("metric", list(REFERENCES))
def test_null_values_equal_the_measure_recomputed_on_permuted_data(metric, small_blocks):
    x, y = _related(400, 2)
    chunks = (90, 150, 60, 100)
    k, seed = 6, 11
    function = dr.cka if metric.startswith("cka") else None
    xd, yd = da.from_array(x, chunks=(chunks, 6)), da.from_array(y, chunks=(chunks, 4))
    with warnings.catch_warnings():  # the dead unit: CCA-family measures warn
        warnings.simplefilter("ignore", dr.RepsimWarning)
        if function is not None:
            est = function(xd, yd, debiased=metric == "cka_debiased", permutations=k, seed=seed)
        elif metric in ("mean_cca", "r2_cca"):
            result = dr.cca(xd, yd, permutations=k, seed=seed)
            est = result.mean if metric == "mean_cca" else result.r2
        else:
            est = getattr(dr, metric)(xd, yd, permutations=k, seed=seed)
    perms = _block_rows(400, small_blocks, seed, k)  # blocks of 64 samples, not the chunks
    reference = REFERENCES[metric]
    expected = np.array([reference(x, y[p]) for p in perms])
    assert float(est) == pytest.approx(reference(x, y), abs=1e-8)
    np.testing.assert_allclose(est.null, expected, atol=1e-8)
    assert est.n_permutations == k
    assert est.null_mean == pytest.approx(expected.mean(), abs=1e-8)
    assert est.null_std == pytest.approx(expected.std(ddof=1), abs=1e-8)
    assert est.pvalue == pytest.approx((1 + np.sum(expected >= float(est))) / (k + 1))


def test_compare_null_equals_pairwise_nulls_for_every_cell(small_blocks):
    rng = np.random.default_rng(3)
    x, y = _related(300, 3)
    z = rng.normal(size=(300, 5)) + x[:, :1]
    chunks = (100, 80, 120)
    a = {"x": da.from_array(x[:, [0, 1, 3, 4, 5]], chunks=(chunks, 5)),
         "z": da.from_array(z, chunks=(chunks, 2))}
    b = {"y": da.from_array(y, chunks=(chunks, 4)), "x": a["x"]}
    metrics = ["cka", "cka_debiased", "mean_cca", "pwcca", "procrustes"]
    k, seed = 5, 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dr.RepsimWarning)
        ds = dr.compare(a, b, metrics=metrics, permutations=k, seed=seed)
    assert ds.attrs["permutations"] == k
    perms = _block_rows(300, small_blocks, seed, k)
    nulls = {m: np.zeros((k, 2, 2)) for m in metrics}
    for i, (name_a, xa) in enumerate(a.items()):
        for j, (name_b, yb) in enumerate(b.items()):
            xa_, yb_ = np.asarray(xa), np.asarray(yb)
            for m in metrics:
                expected = np.array([REFERENCES[m](xa_, yb_[p]) for p in perms])
                nulls[m][:, i, j] = expected
                cell = {"layer_a": name_a, "layer_b": name_b}
                got_mean = float(ds[f"{m}_null_mean"].sel(cell))
                assert got_mean == pytest.approx(expected.mean(), abs=1e-8), (m, cell)
                assert float(ds[f"{m}_null_std"].sel(cell)) == pytest.approx(
                    expected.std(ddof=1), abs=1e-8
                )
                observed = float(ds[m].sel(cell))
                assert float(ds[f"{m}_pvalue"].sel(cell)) == pytest.approx(
                    (1 + np.sum(expected >= observed - 1e-9)) / (k + 1)
                )
    for m in metrics:  # corrected over the 4 cells, from the nulls recomputed here
        fwer, fdr = ref.max_statistic_pvalues(ds[m].values, nulls[m]), ref.benjamini_hochberg(
            ds[f"{m}_pvalue"].values)
        np.testing.assert_allclose(ds[f"{m}_pvalue_fwer"].values, fwer, rtol=1e-12, err_msg=m)
        np.testing.assert_allclose(ds[f"{m}_pvalue_fdr"].values, fdr, rtol=1e-12, err_msg=m)
        assert (ds[f"{m}_pvalue_fwer"] >= ds[f"{m}_pvalue"]).all()


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_family_wise_rate_of_a_grid_of_unrelated_layers():
    """A 5 x 5 grid of independent layers, 500 times: the chance that any of the 25 cells'
    family-wise p-values is <= 0.05 is within the 99% binomial range of 0.05 (uncorrected,
    some cell falls below 0.05 most of the time: 352 of 500 when written)."""
    reps, k, alpha = 500, 99, 0.05
    any_fwer, any_raw = np.zeros(reps, bool), np.zeros(reps, bool)
    with dask.config.set(scheduler="synchronous"):
        for r in range(reps):
            rng = np.random.default_rng(5000 + r)
            a = {f"a{i}": rng.normal(size=(60, 2 + i % 2)) for i in range(5)}
            b = {f"b{i}": np.exp(rng.normal(size=(60, 2))) for i in range(5)}
            ds = dr.compare(a, b, metrics=["cka"], permutations=k, seed=r)
            any_fwer[r] = (ds.cka_pvalue_fwer <= alpha).any()
            any_raw[r] = (ds.cka_pvalue <= alpha).any()
    low, high = stats.binom.ppf(0.005, reps, alpha), stats.binom.isf(0.005, reps, alpha)
    assert low <= any_fwer.sum() <= high, any_fwer.sum()
    assert any_raw.mean() > 0.5, any_raw.mean()


def test_pvalues_are_uniform_for_independent_layers():
    """Under the null the p-value of every measure is uniform on {1/20, ..., 20/20}."""
    k, n_seeds = 19, 150
    metrics = ["cka", "mean_cca", "pwcca", "procrustes"]
    pvalues = {m: [] for m in metrics}
    for seed in range(n_seeds):
        rng = np.random.default_rng(1000 + seed)
        x = np.exp(rng.normal(size=(90, 3)))  # skewed, non-Gaussian units
        y = rng.normal(size=(90, 2)) + 10
        ds = dr.compare(
            da.from_array(x, chunks=30), da.from_array(y, chunks=30), metrics=metrics,
            permutations=k, seed=seed,
        )
        for m in metrics:
            pvalues[m].append(ds[f"{m}_pvalue"].item())
    for m in metrics:
        p = np.array(pvalues[m])
        # quarters of the support: P(p <= 5/20) = 5/20 exactly for an exact test
        counts = np.histogram(p, bins=[0, 0.26, 0.51, 0.76, 1.01])[0]
        assert stats.chisquare(counts).pvalue > 0.001, (m, counts)
        assert 0.01 <= np.mean(p <= 0.1) <= 0.2, m


def test_pvalues_are_smallest_possible_for_related_layers():
    x, y = _related(2000, 4)
    with pytest.warns(dr.RepsimWarning, match="constant"):
        ds = dr.compare(x, y, permutations=49, seed=1)
    for m in dr.DEFAULT_METRICS:
        assert ds[f"{m}_pvalue"].item() == pytest.approx(1 / 50), m
        assert ds[m].item() > ds[f"{m}_null_mean"].item() + 5 * ds[f"{m}_null_std"].item(), m


def test_permutations_with_interval_and_zarr_read_each_chunk_once(counting_store):
    rng = np.random.default_rng(5)
    write_zarr(counting_store, "x", rng.normal(size=(600, 5)), chunks=(128, 5))
    write_zarr(counting_store, "y", rng.normal(size=(600, 3)), chunks=(100, 2))
    counting_store.reads.clear()
    group = zarr.open_group(counting_store, mode="r")
    with dask.config.set(scheduler="threads"):
        ds = dr.compare(
            group["x"], group["y"], metrics=["cka", "pwcca"], interval="jackknife",
            groups=5, permutations=7,
        )
    reads = counting_store.chunk_reads()
    assert set(reads) == _chunk_keys(group)
    assert max(reads.values()) == 1
    assert {"cka_pvalue", "cka_low", "pwcca_null_std"} <= set(ds.data_vars)
    plain = dr.compare(np.asarray(group["x"]), np.asarray(group["y"]), metrics=["cka"])
    assert ds.cka.item() == pytest.approx(plain.cka.item(), abs=1e-12)


def test_one_pass_null_layers_are_indices_of_both_sides():
    x, y = _related(200, 6)
    layers = [as_layer(x, name="x"), as_layer(y, name="y")]
    parts, permuted = one_pass(layers, null=([0], [1], 3, 0))
    assert len(parts) == 1 and permuted.cross.shape == (3, 6, 4)
    assert one_pass(layers)[1] is None


def test_bad_permutation_arguments():
    x, y = _related(100, 7)
    with pytest.raises(ValueError, match="permutations must be >= 0"):
        dr.cka(x, y, permutations=-1)
    with pytest.raises(TypeError, match="permutations must be an int"):
        dr.cka(x, y, permutations=2.5)
    with pytest.raises(ValueError, match="not available on the"):
        dr.cka(x, y, method="minibatch", permutations=5)
    # the co-moments of the 5 + 5 features fit, the 100 permuted cross blocks do not
    with dask.config.set({"repsim.memory-budget": memory.least_budget(10, permutations=100)}):
        with pytest.raises(ValueError, match="over the memory budget"):
            dr.compare(x, y, permutations=100)
