"""Permutation tests of the k-nearest-neighbour measures from their neighbour lists: each null
value equals the measure recomputed on y's samples permuted; p-values and their corrections in
grids; the sample-space measures without a null refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import references

import dask_repsim as dr
from dask_repsim.engine.permuted import sample_permutations
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks.neighbours import knn_values

NULL_MEASURES = ("mutual_knn", "jaccard_knn", "rank_similarity", "joint_rank_jaccard", "cknna",
                 "second_order_cosine")


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(160, 10))
    y = np.tanh(x @ rng.normal(size=(10, 8))) + 0.6 * rng.normal(size=(160, 8))
    return x, y


def test_null_equals_recomputing_on_permuted_samples(pair):
    """Relabelling the neighbour lists gives, for continuous data (no ties), exactly the
    measures of x against y's rows permuted, the permutations of the other paths."""
    x, y = pair
    got = knn_values(as_layer(x), as_layer(y, name="y"), 7, measures=NULL_MEASURES,
                     null=(6, 3), block_rows=48)
    perms = sample_permutations(len(x), seed=3, count=6)
    for k, perm in enumerate(perms):
        again = knn_values(as_layer(x), as_layer(y[perm], name="y"), 7, measures=NULL_MEASURES)
        for m in NULL_MEASURES:
            assert got["null"][m][k] == pytest.approx(again[m], rel=1e-12, abs=1e-15), (m, k)
        assert got["null"]["mutual_knn"][k] == pytest.approx(
            references.mutual_knn(x, y[perm], 7), abs=1e-15)
        assert got["null"]["second_order_cosine"][k] == pytest.approx(
            references.second_order_cosine(x, y[perm], 7), rel=1e-12)


def test_second_order_lookups_in_several_passes(pair, monkeypatch):
    """Second-order cosine's null looks up the similarities each permuted pairing's lists
    lack; with room for fewer lookups than one pairing needs, each pairing takes a pass of
    its own, and the values do not change."""
    from dask_repsim.paths.sample_blocks import second_order

    x, y = pair
    passes = []
    original = second_order.lookup
    monkeypatch.setattr(second_order, "lookup",
                        lambda *a, **kw: passes.append(len(a[2][0][0])) or original(*a, **kw))
    args = (as_layer(x), as_layer(y, name="y"), 7)
    once = knn_values(*args, measures=("second_order_cosine",), null=(4, 2), block_rows=64)
    assert len(passes) == 1
    monkeypatch.setattr(second_order, "LOOKUPS", 10)
    apart = knn_values(*args, measures=("second_order_cosine",), null=(4, 2), block_rows=64)
    assert len(passes) == 1 + 5 and sum(passes[1:]) == passes[0]
    assert apart["null"] == once["null"] and apart["second_order_cosine"] == pytest.approx(
        once["second_order_cosine"], abs=0)


def test_pvalues_in_pairwise_calls_and_grids(pair):
    x, y = pair
    related = dr.jaccard_knn(x, y, k=7, permutations=199, seed=1)
    assert related.pvalue == pytest.approx(1 / 200) and related.n_permutations == 199
    assert related.null_mean < float(related)  # chance: about k / (2 (n - 1) - k)
    assert related.null_mean == pytest.approx(7 / (2 * 159 - 7), rel=0.3)
    unrelated = np.random.default_rng(5).normal(size=y.shape)
    p = dr.mutual_knn(x, unrelated, k=7, permutations=199, seed=1).pvalue
    assert 0.05 < p <= 1.0
    ds = dr.compare({"x": x}, {"y": y, "noise": unrelated}, k=7, permutations=99,
                    metrics=["mutual_knn", "rank_similarity", "cknna", "cka"])
    for m in ("mutual_knn", "rank_similarity", "cknna", "cka"):
        assert float(ds[f"{m}_pvalue"].sel(layer_a="x", layer_b="y")) == pytest.approx(0.01)
        assert float(ds[f"{m}_pvalue"].sel(layer_a="x", layer_b="noise")) > 0.05
        assert f"{m}_pvalue_fwer" in ds
    # a pairwise call and a grid cell: the same null, the same p-value
    assert float(ds.mutual_knn_pvalue.sel(layer_a="x", layer_b="y")) == pytest.approx(
        dr.mutual_knn(x, y, k=7, permutations=99).pvalue)


def test_what_the_neighbour_measures_lack_is_named(pair):
    x, y = pair
    with pytest.raises(ValueError, match="uniformity_difference: a difference of per-layer "
                                         "statistics does not depend on how the two layers' "
                                         "samples are paired"):
        dr.compare({"x": x}, {"y": y}, metrics=["uniformity_difference", "mutual_knn"],
                   permutations=19, method="sample_blocks")
    for function in (dr.mutual_knn, dr.cknna, dr.second_order_cosine):  # intervals: theirs
        e = function(x, y, interval="jackknife", groups=5)  # (tests/paths/test_knn_jackknife.py)
        assert e.ci_low < e.ci_centre == float(e) < e.ci_high
    with pytest.raises(ValueError, match="not available for mutual_knn"):
        dr.mutual_knn(x, y, nan_policy="omit")


def test_pvalues_of_independent_layers_are_not_too_small():
    """150 pairs of independent layers (n = 40, 19 permutations): the share of p <= 0.05 stays
    within the binomial range of a test at level 0.05 (at most 16 of 150 at 99%; the discrete
    statistics' ties with the observed value only make the test conservative), and the
    p-values average about 0.5."""
    rng = np.random.default_rng(31)
    pvalues = {m: [] for m in ("mutual_knn", "rank_similarity", "cknna", "second_order_cosine")}
    for trial in range(150):
        x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 4))
        got = knn_values(as_layer(x), as_layer(y, name="y"), 5, measures=tuple(pvalues),
                         null=(19, trial))
        for m in pvalues:
            null = np.array(got["null"][m])
            pvalues[m].append((1 + np.sum(null >= got[m] - 1e-12)) / 20)
    for m, values in pvalues.items():
        values = np.array(values)
        assert np.sum(values <= 0.05) <= 16, (m, np.sum(values <= 0.05))
        assert 0.4 < values.mean() < 0.65, (m, values.mean())


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
def test_pvalues_are_calibrated_and_power_grows_with_n():
    """500 pairs of independent layers (n = 40, k = 5, 19 permutations): for every k-NN
    measure the rate of p <= 0.05 is within its binomial 99% range; a relation y = tanh(x) +
    noise is found more often as n grows."""
    import dask
    from scipy import stats

    measures = NULL_MEASURES
    reps = 500

    def pvalues(x, y, seed, k=5):
        got = knn_values(as_layer(x), as_layer(y, name="y"), k, measures=measures,
                         null=(19, seed))
        return {m: dr.results.permutation_pvalue(got[m], np.array(got["null"][m]))
                for m in measures}

    with dask.config.set(scheduler="sync"):
        found = [pvalues(*np.random.default_rng([41, r]).normal(size=(2, 40, 5)), r)
                 for r in range(reps)]
        rates = {m: [] for m in measures}
        for n in (20, 80, 320):
            hits = dict.fromkeys(measures, 0)
            for r in range(40):
                rng = np.random.default_rng([n, r])
                x = rng.normal(size=(n, 5))
                for m, p in pvalues(x, np.tanh(x) + 1.2 * rng.normal(size=(n, 5)), r).items():
                    hits[m] += p <= 0.05
            for m in measures:
                rates[m].append(hits[m] / 40)
    low, high = stats.binom.ppf(0.005, reps, 0.05), stats.binom.isf(0.005, reps, 0.05)
    counts = {m: int(sum(f[m] <= 0.05 for f in found)) for m in measures}
    print(f"k-NN measures: p <= 0.05 of {reps} independent pairs {counts}; power {rates}")
    for m in measures:
        assert low <= counts[m] <= high, (m, counts[m])
        assert rates[m][0] < rates[m][1] <= rates[m][2] and rates[m][2] >= 0.6, (m, rates[m])
