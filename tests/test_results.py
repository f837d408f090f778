"""Every pairwise result is a float carrying what was computed with it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import dask_repsim as dr
from dask_repsim.registry import MEASURES, PATHS

FUNCTIONS = {"cka": dr.cka, "cca": dr.cca, "svcca": dr.svcca, "pwcca": dr.pwcca,
             "linear_regression": dr.linear_regression, "procrustes": dr.procrustes}
#: every public pairwise function on every path that computes one of its measures, with the
#: options that select the measure (``kernel="laplace"`` for ``cka`` on ``sample_blocks``)
CASES = sorted({(m.function, p, tuple(sorted((k, v) for k, v in m.options.items()
                                              if k != "attribute")))
                for m in MEASURES.values() for p in m.paths if m.function in FUNCTIONS})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 5))
    return x, x @ rng.normal(size=(5, 4)) + rng.normal(size=(400, 4))


@pytest.mark.parametrize(("function", "path", "options"), CASES)
def test_result_is_a_float_that_says_how_it_was_computed(data, function, path, options):
    x, y = data
    extra = {"batch_size": 100} if path == "minibatch" else {}
    result = FUNCTIONS[function](x, y, method=path, **extra, **dict(options))
    assert isinstance(result, float) and isinstance(result, dr.Estimate)
    assert round(result, 3) == round(float(result), 3)
    assert 0 <= float(result) <= 1 + 1e-12
    assert result.method == path
    if PATHS[path].exact:
        assert result.approximate is None and result.pvalue is None and result.stderr is None
    else:
        assert "minibatch" in result.approximate
        assert result.ci_low <= float(result) <= result.ci_high
    assert float(pickle.loads(pickle.dumps(result))) == float(result)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_interval_and_pvalue_are_attributes(data, function):
    x, y = data
    result = FUNCTIONS[function](x, y, interval="jackknife", groups=10, level=0.9,
                                 permutations=9, seed=2)
    assert isinstance(result, float)
    assert result.ci_low < float(result) < result.ci_high and result.n_groups == 10
    assert result.level == 0.9 and result.stderr > 0
    assert result.pvalue == pytest.approx(0.1) and len(result.null) == 9
    assert result.null_mean == pytest.approx(np.mean(result.null))


def test_cca_result_is_its_mean_and_summaries_are_floats(data):
    x, y = data
    result = dr.cca(x, y, interval="jackknife", groups=8)
    rho = np.asarray(result.rho)
    assert float(result) == pytest.approx(rho.mean(), abs=1e-15)
    assert float(result.r2) == pytest.approx((rho**2).mean(), abs=1e-15)
    assert result.mean.stderr == pytest.approx(result.stderr)
    truncated = result.truncated_mean(0.5)
    assert isinstance(truncated, dr.Estimate) and truncated.stderr is not None
    share = np.cumsum(rho) / rho.sum()
    assert float(truncated) == pytest.approx(rho[: np.argmax(share >= 0.5) + 1].mean())
    assert float(dr.cca(x, y).truncated_mean(1.0)) == pytest.approx(rho.mean())
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        result.truncated_mean(0)


def test_rbf_cka_is_a_float_with_its_bandwidth(data):
    x, y = data
    result = dr.cka(x, y, kernel="rbf", sigma=0.5)
    assert isinstance(result, float) and round(result, 2) == round(float(result), 2)
    assert result.method == "gram" and result.median_exact is True and result.median is not None
