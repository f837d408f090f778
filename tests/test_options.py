"""A silent no-op is a bug: an option the chosen path or measure does not use is an error."""

from __future__ import annotations

import numpy as np
import pytest

import dask_repsim as dr


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4))
    return x, x + rng.normal(size=(300, 4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, y: dr.cka(x, y, method="minibatch", debiased=True, batch_size=50),
         "method='minibatch' computes cka, cka_rbf, not cka_debiased"),
        (lambda x, y: dr.cka(x, y, sigma=0.5),
         r"sigma= applies to the metric\(s\) cka_rbf \(cka\(kernel='rbf'\)\), "
         r"cka_laplace \(cka\(kernel='laplace'\)\) only"),
        (lambda x, y: dr.cka(x, y, batch_size=50), "method='minibatch' only"),
        (lambda x, y: dr.cka(x, y, method="gram", batch_size=50), "method='minibatch' only"),
        (lambda x, y: dr.cka(x, y, groups=5), "interval"),
        (lambda x, y: dr.cka(x, y, level=0.9), "interval"),
        (lambda x, y: dr.cca(x, y, seed=3), "nothing here is random"),
        (lambda x, y: dr.svcca(x, y, groups=4), "interval"),
        (lambda x, y: dr.pwcca(x, y, epsilon=1e-10), "definition='reference' only"),
        (lambda x, y: dr.procrustes(x, y, method="qr"),
         "method='qr' computes .* not procrustes, which is not available on that path"),
        (lambda x, y: dr.cka(x, y, method="minibatch", interval="jackknife"),
         "interval= is not available on the 'minibatch' path; paths that support it: "
         "covariance, gram, tiled"),
        (lambda x, y: dr.cka(x, y, method="tiled", nan_policy="omit", permutations=5),
         "nan_policy='omit' is not available on the 'tiled' path"),
        (lambda x, y: dr.cka(x, y, method="gram", nan_policy="omit"),
         "nan_policy='omit' is not available on the 'gram' path"),
        (lambda x, y: dr.linear_regression(x, y, method="qr", nan_policy="omit"),
         "nan_policy='omit' is not available on the 'qr' path; paths that support it: "
         "covariance"),
        (lambda x, y: dr.compare({"a": x}, {"b": y}, metrics=["cka"], batch_size=50),
         "method='minibatch' only"),
        (lambda x, y: dr.compare({"a": x}, {"b": y}, metrics=["cka"], level=0.8),
         "interval"),
        (lambda x, y: dr.compare({"a": x}, {"b": y}, metrics=["cka"], seed=1),
         "nothing here is random"),
        (lambda x, y: dr.compare({"a": x}, {"b": y}, metrics=["svcca"], method="gram"),
         "method='gram' computes cka, cka_debiased, cka_rbf, not svcca"),
    ],
)
def test_unused_options_are_errors(data, call, message):
    x, y = data
    with pytest.raises(ValueError, match=message):
        call(x, y)


def test_options_that_apply_are_accepted(data):
    x, y = data
    assert dr.cka(x, y, kernel="rbf", sigma=0.5, seed=1).method == "gram"
    assert dr.cka(x, y, method="minibatch", batch_size=50, level=0.9).level == 0.9
    assert dr.cka(x, y, permutations=3, seed=1).n_permutations == 3
    assert dr.cka(x, y, interval="jackknife", level=0.8, groups=6).n_groups == 6


def test_procrustes_takes_method(data):
    x, y = data
    assert float(dr.procrustes(x, y, method="covariance")) == float(dr.procrustes(x, y))
    assert dr.procrustes(x, y, method="auto").method == "covariance"


def test_reference_pwcca_epsilon_drops_dead_units_as_the_reference_code(data):
    """The SVCCA reference code's epsilon crops units whose scaled variance is below it; a
    near-dead unit (variance 1e-14 of the largest) is dropped at epsilon=1e-10, not at 0."""
    x, y = data
    tiny = x.copy()
    tiny[:, 0] = 1e-7 * np.random.default_rng(1).normal(size=len(x))
    cropped = dr.pwcca(tiny, y, definition="reference", epsilon=1e-10)
    assert float(cropped) == pytest.approx(float(dr.pwcca(tiny[:, 1:], y,
                                                           definition="reference")), abs=1e-6)
    with pytest.raises(dr.NoVarianceError, match="x has no variance"):
        dr.pwcca(np.zeros_like(x), y, definition="reference")


def test_an_empty_sigma_is_an_error_naming_sigma(data):
    """compare(metrics=["cka", "cka_rbf"], sigma=[]) returned cka alone, silently."""
    x, y = data
    with pytest.raises(ValueError, match=r"sigma= needs at least one bandwidth .* not \[\]"):
        dr.compare(x, y, metrics=["cka", "cka_rbf"], sigma=[])
    with pytest.raises(ValueError, match=r"sigma= needs at least one bandwidth"):
        dr.cka(x, y, kernel="rbf", sigma=np.array([]))


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan"), 0.0, -0.5, "0.5"])
def test_sigma_must_be_finite_and_positive_with_the_same_words_everywhere(data, bad):
    """sigma=inf failed with "HSIC of x with itself is 0" instead of naming sigma."""
    x, y = data
    calls = (lambda: dr.cka(x, y, kernel="rbf", sigma=bad),
             lambda: dr.compare(x, y, metrics=["cka_rbf"], sigma=bad),
             lambda: dr.compare(x, y, metrics=["cka", "cka_rbf"], sigma=[0.5, bad]))
    messages = set()
    for call in calls:
        with pytest.raises(ValueError, match=r"^sigma must be > 0 and finite \(a fraction of "
                                             r"the median distance\), not ") as error:
            call()
        messages.add(str(error.value))
    assert messages == {"sigma must be > 0 and finite (a fraction of the median distance), "
                        f"not {bad!r}"}


def test_default_groups_follow_the_measures():
    """Without groups=, 20 groups, RTD's 5; a grid takes the fewest of its measures', at least
    its folds; a given groups= is kept, and the options' warnings are not repeated."""
    from dask_repsim.options import Options

    asked = Options(interval="jackknife")
    assert asked.for_measures(["cka", "mutual_knn"]).groups == 20
    assert asked.for_measures(["cka", "rtd"]).groups == 5
    assert asked.for_measures(["rtd", "ridge_predictivity"], least=10).groups == 10
    assert asked.groups is None  # a copy
    assert Options(interval="jackknife", groups=7).for_measures(["rtd"]).groups == 7
    assert Options().for_measures(["rtd"]).groups is None
    with pytest.warns(dr.RepsimWarning) as record:
        Options(interval="jackknife", permutations=5).for_measures(["rtd"])
    assert len(record) == 1
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.tanh(x) + np.random.default_rng(1).normal(size=(40, 3))
    grid = dr.compare({"x": x}, {"y": y}, metrics=["cka", "rtd"], interval="jackknife")
    assert grid.attrs["n_groups"] == 5
    assert dr.cka(x, y, interval="jackknife").n_groups == 20
