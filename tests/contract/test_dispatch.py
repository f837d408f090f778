"""A pairwise call is a grid of one cell: generated over every measure of the registry, every
option, and both entry points.

For each measure ``m`` of :data:`dask_repsim.registry.MEASURES`, the pairwise function named in
``MEASURES[m].function`` (called with ``MEASURES[m].options``) and ``dr.compare(..., metrics=[m])``
are given the same option, one at a time (and a few combinations that belong together): every
shared option (``interval=``, ``level=``, ``groups=``, ``permutations=``, ``seed=``,
``nan_policy="omit"``, ``batch_size=``), every measure parameter (``sigma=``, ``alpha=``,
``k=``, ``rdm=``, ``rdm_compare=``, ``ridge=``), valid and invalid values, and every
``method=``. Both
entry points go through the one dispatcher (:mod:`dask_repsim.runners`), so for each case
either both raise the same exception type with the same message, or both give the same value
(to 1e-12), with the same interval and permutation summaries.

A case is generated for each option the pairwise function takes (its signature); options it
does not take (``method=`` of RSA, ``interval=`` of ``match_units``) are for ``compare`` only.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pytest
import xarray as xr

import dask_repsim as dr
from dask_repsim.registry import MEASURES, PATHS

N = 48
_RNG = np.random.default_rng(21)
_IDS = np.array([f"s{i:02d}" for i in range(N)])
_ORDER = _RNG.permutation(N)
_x = _RNG.normal(size=(N, 4))
_y = _x[:, :3] @ _RNG.normal(size=(3, 3)) + 0.8 * _RNG.normal(size=(N, 3))
#: labelled samples, y's stored in another order: both entry points pair them by label
X = xr.DataArray(_x, dims=("sample", "unit"), coords={"sample": _IDS})
Y = xr.DataArray(_y[_ORDER], dims=("sample", "unit"), coords={"sample": _IDS[_ORDER]})

#: one option at a time: valid values and values each entry point must refuse the same way
SINGLE: list[tuple[str, Any]] = [
    ("interval", "jackknife"), ("level", 0.9), ("groups", 5), ("permutations", 3), ("seed", 1),
    ("nan_policy", "omit"), ("batch_size", 12),
    ("sigma", 0.5), ("sigma", float("inf")), ("sigma", []), ("sigma", -1.0),
    ("alpha", 0.5), ("alpha", 2.0), ("k", 5), ("k", 0), ("ridge", 0.1), ("ridge", -1.0),
    ("rdm", "euclidean"), ("rdm", "nope"), ("rdm_compare", "cosine"),
    ("join", "inner"), ("join", "outer"),
    *(("method", path) for path in PATHS), ("method", "nope"),
]
#: options that belong together
COMBINED: list[dict[str, Any]] = [
    {"interval": "jackknife", "level": 0.8, "groups": 6},
    {"permutations": 4, "seed": 2},
    {"method": "minibatch", "batch_size": 12, "level": 0.9, "seed": 1},
    {"method": "gram", "seed": 3},
]
#: a compare option's name in a pairwise function, where it differs
ALIASES = {"rdm_compare": "compare"}
#: measures that no pairwise function computes (compare only)
COMPARE_ONLY = {"cka_angular"}


def _function(measure: str):
    return getattr(dr, MEASURES[measure].function)


def _primary(measure: str) -> str:
    """The measure a pairwise function call computes: itself, or for a measure read off another
    one's result (``r2_cca`` is ``dr.cca(...).r2``) the first measure of that call."""
    def call(m: str) -> tuple:
        options = {k: v for k, v in MEASURES[m].options.items() if k != "attribute"}
        return MEASURES[m].function, sorted(options.items())

    return next(m for m in MEASURES if call(m) == call(measure))


def _pairwise_name(measure: str, option: str) -> str | None:
    """The name ``option`` has in ``measure``'s pairwise function, or None if it takes none.
    ``method`` counts only where it is the path (``match_units``' method is the matching)."""
    parameters = inspect.signature(_function(measure)).parameters
    name = option if option in parameters else ALIASES.get(option)
    if name not in parameters:
        return None
    if name == "method" and parameters[name].default != "auto":
        return None
    return name


def _cases() -> list:
    cases = []
    for measure in MEASURES:
        if MEASURES[measure].function is None:
            continue
        for options in [dict([single]) for single in SINGLE] + COMBINED:
            if all(_pairwise_name(measure, o) for o in options):
                label = ",".join(f"{k}={v!r}" for k, v in options.items())
                cases.append(pytest.param(measure, options, id=f"{measure}-{label}"))
    return cases


CASES = _cases()


def _pairwise_value(measure: str, result: Any) -> Any:
    """The number of ``measure`` in a pairwise result (an attribute of it, or the mean matched
    correlation of ``match_units``)."""
    attribute = MEASURES[measure].options.get("attribute")
    if attribute is not None:
        return getattr(result, attribute)
    if isinstance(result, xr.Dataset):
        return float(result.correlation.mean())
    return result


def _outcome(call) -> tuple:
    """("value", result) or ("error", exception type, message) of ``call()``."""
    try:
        return ("value", call())
    except Exception as error:  # noqa: BLE001 - the point is to compare any error
        return ("error", type(error), str(error))


def _pairwise(measure: str, options: dict[str, Any]) -> tuple:
    selected = {k: v for k, v in MEASURES[measure].options.items() if k != "attribute"}
    given = {_pairwise_name(measure, k): v for k, v in options.items()}
    return _outcome(lambda: _pairwise_value(
        measure, _function(measure)(X, Y, **selected, **given)))


def _compare(measure: str, options: dict[str, Any]) -> tuple:
    return _outcome(lambda: dr.compare({"x": X}, {"y": Y}, metrics=[measure], **options))


def _close(a: Any, b: Any) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None
        and (math.isnan(a) and math.isnan(b) or abs(float(a) - float(b)) <= 1e-12))


@pytest.mark.parametrize(("measure", "options"), CASES)
def test_pairwise_is_a_grid_of_one_cell(measure, options):
    pairwise, grid = _pairwise(measure, options), _compare(measure, options)
    if pairwise[0] == "error" or grid[0] == "error":
        # dr.cca(...).r2 is refused as dr.cca is: as its first measure, mean_cca
        grid = grid[:2] + (grid[2].replace(measure, _primary(measure)),) if len(grid) == 3 \
            else grid
        assert pairwise == grid
        return
    value, ds = pairwise[1], grid[1]
    assert _close(float(value), ds[measure].item()), (float(value), ds[measure].item())
    if not isinstance(value, dr.Estimate):  # match_units: a table, its mean checked above
        return
    assert ds.attrs["method"] == value.method
    summaries = {"stderr": "stderr", "low": "ci_low", "high": "ci_high", "pvalue": "pvalue",
                 "null_mean": "null_mean", "null_std": "null_std"}
    for suffix, field in summaries.items():
        if value.method == "minibatch" and suffix in ("low", "high"):
            continue  # its own bootstrap interval, below
        name, given = f"{measure}_{suffix}", getattr(value, field, None)
        assert (given is not None) == (name in ds), name
        if given is not None:
            assert _close(given, ds[name].item()), (name, given, ds[name].item())
    if value.method == "minibatch":
        assert _close(value.ci_low, ds.cka_low.item())
        assert _close(value.ci_high, ds.cka_high.item())


def test_the_cases_cover_every_measure_and_option():
    """The generated cases are not empty, take in every measure a pairwise function computes,
    each with every option of SINGLE its function takes, and every option of SINGLE."""
    assert len(CASES) > 200
    assert COMPARE_ONLY == {m for m in MEASURES if MEASURES[m].function is None}
    covered = {case.values[0] for case in CASES}
    assert covered == set(MEASURES) - COMPARE_ONLY
    given = {(case.values[0], k) for case in CASES for k in case.values[1]}
    for measure in covered:
        takes = {o for o, _ in SINGLE if _pairwise_name(measure, o)}
        assert {"nan_policy", "join"} <= takes, measure
        assert {o for m, o in given if m == measure} == takes, measure
        if "interval" in inspect.signature(_function(measure)).parameters:
            assert {"interval", "level", "groups", "permutations", "seed"} <= takes, measure
    assert {o for _, o in given} == {o for o, _ in SINGLE}
    assert {_primary(m) for m in covered} == covered - {"r2_cca"}


def test_the_comparison_can_fail():
    """Different errors, or an error against a value, are told apart."""
    assert _outcome(lambda: int("x")) != _outcome(lambda: int("y"))
    assert _outcome(lambda: 1 / 0)[1] is ZeroDivisionError
    assert _outcome(lambda: 1.0)[0] == "value"
    assert not _close(0.5, 0.5 + 1e-9) and _close(None, None) and not _close(None, 0.0)
