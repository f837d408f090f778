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

NULL_MEASURES = ("mutual_knn", "jaccard_knn", "rank_similarity", "joint_rank_jaccard", "cknna")


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


def test_sample_space_measures_without_a_null_are_named(pair):
    x, y = pair
    for function in (dr.distance_correlation, dr.rsm_norm_difference, dr.second_order_cosine):
        with pytest.raises(ValueError, match=f"not available for {function.__name__}"):
            function(x, y, permutations=19)
    with pytest.raises(ValueError, match="permutations= is not available for "
                                         "distance_correlation, computed on the 'sample_blocks'"):
        dr.compare({"x": x}, {"y": y}, metrics=["distance_correlation", "mutual_knn"],
                   permutations=19, method="sample_blocks")
    for option in ({"interval": "jackknife"}, {"nan_policy": "omit"}):
        with pytest.raises(ValueError, match="not available for mutual_knn"):
            dr.mutual_knn(x, y, **option)


def test_pvalues_of_independent_layers_are_not_too_small():
    """150 pairs of independent layers (n = 40, 19 permutations): the share of p <= 0.05 stays
    within the binomial range of a test at level 0.05 (at most 16 of 150 at 99%; the discrete
    statistics' ties with the observed value only make the test conservative), and the
    p-values average about 0.5."""
    rng = np.random.default_rng(31)
    pvalues = {m: [] for m in ("mutual_knn", "rank_similarity", "cknna")}
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
