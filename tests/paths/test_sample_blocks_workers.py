"""The sample-space path's permutation nulls and jackknife replicates on worker processes: the
same as on the threaded scheduler, every family of measures (the permutations and groups depend
on the seed and the sample count only, not on where the tasks run)."""

from __future__ import annotations

import numpy as np
import pytest
from cluster_utils import on_threads_and_workers

import dask_repsim as dr

NULLS = ["rsa", "distance_correlation", "cka_laplace", "mutual_knn", "second_order_cosine",
         "aligned_cosine", "jensen_shannon"]
INTERVALS = ["rsa", "distance_correlation", "cka_laplace", "mutual_knn", "second_order_cosine",
             "aligned_cosine", "jensen_shannon"]


@pytest.mark.slow
def test_nulls_and_intervals_do_not_depend_on_the_workers():
    pytest.importorskip("distributed")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(240, 6))
    y = np.tanh(x) + 0.5 * rng.normal(size=(240, 6))  # unit by unit: output measures too
    z = np.random.default_rng(9).normal(size=(240, 6))

    def run():
        grids = [dr.compare({"x": x}, {"y": y, "z": z}, metrics=NULLS, k=5, permutations=19,
                            seed=3),
                 dr.compare({"x": x}, {"y": y, "z": z}, metrics=INTERVALS, k=5,
                            interval="jackknife", groups=8)]
        return {f"{v} {i}": g[v].values for i, g in enumerate(grids) for v in g.data_vars}

    here, there = on_threads_and_workers(run)
    assert there.keys() == here.keys()
    assert any(k.endswith("_null_mean 0") for k in here)
    assert any(k.endswith("_stderr 1") for k in here)
    for key, value in here.items():
        np.testing.assert_allclose(there[key], value, rtol=0, atol=1e-12, err_msg=key)
    # the related pair is told apart from the unrelated one by every test
    for m in NULLS:
        assert float(here[f"{m}_pvalue 0"][0, 0]) == pytest.approx(0.05), m
        assert float(here[f"{m}_pvalue 0"][0, 1]) > 0.05, m
