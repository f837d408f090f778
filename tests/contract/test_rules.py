"""One set of input rules on every path, generated from the measure registry and the path table.

For every measure and every path that computes it (``dask_repsim.registry``), through ``compare``
(inputs named as layers) and through the measure's pairwise function (inputs ``x`` and ``y``),
each bad input gets the same kind of error naming the input, and valid inputs that other tools
mishandle (an all-zero unit, activations offset by 1e9) get the correct value. A new measure or
path adds its cases here without editing this file; a new measure needs a float64 reference in
``tests/references.py``.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import references

import dask_repsim as dr
from dask_repsim.registry import MEASURES, PATHS

N, P, Q = 240, 6, 5
#: options a path needs on data this small
PATH_OPTIONS = {"minibatch": {"batch_size": 60}}
CASES = [(m, p) for m in MEASURES for p in MEASURES[m].paths]


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, P))
    y = np.tanh(x @ rng.normal(size=(P, Q))) + 0.3 * rng.normal(size=(N, Q))
    return x, y


def _grid_value(metric: str, path: str, x, y) -> float:
    ds = dr.compare({"conv1": x}, {"fc": y}, metrics=[metric], method=path,
                    **PATH_OPTIONS.get(path, {}))
    return float(ds[metric].item())


def _pairwise_value(metric: str, path: str, x, y) -> float:
    measure = MEASURES[metric]
    function = getattr(dr, measure.function)
    options = dict(measure.options)
    attribute = options.pop("attribute", None)
    result = function(x, y, method=path, **options, **PATH_OPTIONS.get(path, {}))
    return float(getattr(result, attribute) if attribute else result)


def _entries(metric: str, path: str):
    """(call, name of the first input, name of the second) for each entry point."""
    out = [(_grid_value, "conv1", "fc")]
    if MEASURES[metric].function is None:
        return out
    method = inspect.signature(getattr(dr, MEASURES[metric].function)).parameters.get("method")
    if method is not None and method.default == "auto":  # the function chooses among paths
        out.append((_pairwise_value, "x", "y"))
    return out


def _quiet_call(call, *args, names=()):
    """``call(*args)``; the package's warnings are allowed only when they name an input."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", dr.RepsimWarning)
        value = call(*args)
    for w in caught:
        if issubclass(w.category, dr.RepsimWarning):
            assert any(name in str(w.message) for name in names), str(w.message)
    return value


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the package's error, not numpy's noise
@pytest.mark.parametrize(("metric", "path"), CASES)
def test_nan_and_inf_name_the_input_and_sample(metric, path):
    for call, name_x, name_y in _entries(metric, path):
        x, y = _data()
        x[37, 2] = np.nan
        with pytest.raises(dr.NonFiniteError, match=f"{name_x} has NaN at sample 37"):
            call(metric, path, x, y)
        x, y = _data()
        y[11, 0] = np.inf
        y[90, 1] = np.nan
        with pytest.raises(dr.NonFiniteError, match=f"{name_y} has Inf at sample 11"):
            call(metric, path, x, y)


@pytest.mark.parametrize(("metric", "path"), CASES)
def test_constant_layer_has_no_variance(metric, path):
    for call, name_x, name_y in _entries(metric, path):
        x, y = _data()
        with pytest.raises(dr.NoVarianceError, match=f"{name_y} has no variance"):
            call(metric, path, x, np.full_like(y, 3.0))
        with pytest.raises(dr.NoVarianceError, match=f"{name_x} has no variance"):
            call(metric, path, np.full_like(x, -1e9), y)


@pytest.mark.parametrize(("metric", "path"), CASES)
def test_mismatched_sample_counts_name_both(metric, path):
    for call, name_x, name_y in _entries(metric, path):
        x, y = _data()
        with pytest.raises(dr.SampleCountError, match=f"{name_x} has {N}, {name_y} has {N - 1}"):
            call(metric, path, x, y[:-1])


#: measures not invariant to what a case changes: RSA's correlation RDM correlates each sample's
#: features, the eigenspace overlap divides by the wider layer's width, and a zero unit may take
#: a match of negative covariance in the permutation metric (as zero-padding does), so an added
#: all-zero unit changes them (their references then take the unit); cosine neighbours and the
#: activations span (the eigenspace overlap: not centred, as May et al. define it) change when
#: every activation is offset, so the offset case does not apply
ZERO_UNIT_COUNTS = {"rsa", "eigenspace_overlap", "permutation_distance"}
#: functional measures of two output layers over the same classes (``Measure.same_units``): the
#: rules' layers have 6 and 5 units, and a unit added or all units offset are other logits
#: (other predictions), so their value cases are in tests/measures/test_outputs.py
SAME_CLASSES = {m for m in MEASURES if MEASURES[m].same_units}
NOT_SHIFT_INVARIANT = {"mutual_knn", "jaccard_knn", "rank_similarity", "joint_rank_jaccard",
                       "second_order_cosine", "cknna", "eigenspace_overlap",
                       "magnitude_difference", "concentricity_difference", "aligned_cosine"}


def _expected(metric: str, path: str, x, y, call) -> float:
    """The reference value: the float64 formula for exact paths; for an approximation, the
    same path on the clean data (the case must not change it)."""
    if PATHS[path].exact:
        return references.ALL_METRICS[metric](x, y)
    return call(metric, path, x, y)


@pytest.mark.parametrize(("metric", "path"), CASES)
def test_all_zero_unit_gives_the_value_without_it(metric, path):
    if metric in SAME_CLASSES:
        pytest.skip(f"{metric} compares output layers over the same classes")
    for call, name_x, _ in _entries(metric, path):
        x, y = _data()
        with_zero = x.copy()
        with_zero[:, 1] = 0.0
        without = with_zero if metric in ZERO_UNIT_COUNTS else np.delete(x, 1, axis=1)
        expected = _expected(metric, path, without, y, call)
        value = _quiet_call(call, metric, path, with_zero, y, names=(name_x,))
        assert value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("metric", "path"), CASES)
def test_activations_offset_by_1e9_give_the_correct_value(metric, path):
    if metric in NOT_SHIFT_INVARIANT:
        pytest.skip(f"{metric} depends on the offset by definition")
    if metric in SAME_CLASSES:
        pytest.skip(f"{metric} compares output layers over the same classes")
    for call, _, _ in _entries(metric, path):
        x, y = _data()
        expected = _expected(metric, path, x, y, call)
        value = call(metric, path, x + 1e9, y - 3e9)
        # x + 1e9 itself rounds each activation by up to 6e-8: a measure in the data's units
        # (the RSM norm difference, about 250 here) moves by a relative 1e-8 or so
        assert value == pytest.approx(expected, abs=1e-6, rel=1e-8)


def test_wide_fallback_names_a_constant_layer():
    """compare(method="auto") falls back to Gram blocks or tiles for CKA when a pair is too wide
    for the co-moments; a constant layer there is named like on every other path."""
    import dask

    x, y = _data()
    with dask.config.set({"repsim.memory-budget": 32 * 8**2}):
        ds = dr.compare({"conv1": x}, {"fc": y}, metrics=["cka"])
        assert ds.attrs["method"] in ("gram", "tiled")
        assert float(ds.cka.item()) == pytest.approx(references.linear_cka(x, y), abs=1e-9)
        with pytest.raises(dr.NoVarianceError, match="fc has no variance"):
            dr.compare({"conv1": x}, {"fc": np.ones_like(y)}, metrics=["cka"])


def test_reference_pwcca_follows_the_same_rules():
    """The SVCCA reference code's PWCCA: a dead unit is left out (with the warning naming the
    layer) instead of a raw LinAlgError; a constant layer is the no-variance error."""
    x, y = _data()
    with_zero = x.copy()
    with_zero[:, 1] = 0.0
    with pytest.warns(dr.RepsimWarning, match="x: 1 of 6 units are constant"):
        value = dr.pwcca(with_zero, y, definition="reference")
    assert float(value) == pytest.approx(
        float(dr.pwcca(np.delete(x, 1, axis=1), y, definition="reference")), abs=1e-9)
    with pytest.raises(dr.NoVarianceError, match="y has no variance"):
        dr.pwcca(x, np.full_like(y, 2.0), definition="reference")
    # the reference definition adds the means of the narrower side (y) back to its directions,
    # so it depends on them; the wider side's offset changes nothing, a huge offset of the
    # narrower side leaves numerically collinear directions: an error that says so
    assert float(dr.pwcca(x + 1e9, y, definition="reference")) == pytest.approx(
        float(dr.pwcca(x, y, definition="reference")), abs=1e-6)
    with pytest.raises(ValueError, match="means far larger than the spread"):
        dr.pwcca(x, y + 1e9, definition="reference")
