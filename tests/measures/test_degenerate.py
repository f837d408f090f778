"""Data the other tests never saw: rank-deficient and very wide layers, two or three samples,
quantised activations with ties, a tiny memory budget. Each against a numpy reference written
here, independent of the package's code."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import dask_repsim as dr
from dask_repsim.exceptions import RepsimWarning, SampleCountError
from dask_repsim.registry import MEASURES

SCALES = (1.0, 100.0, 1e4)


def whitened(a: np.ndarray, alpha: float) -> np.ndarray:
    """``X_c Z`` for ``Z = alpha I + (1 - alpha) (X_c^T X_c)^(+1/2)`` from the SVD of the
    centred data: ``alpha X_c + (1 - alpha) U_r V_r^T``, r the numerical rank (singular values
    above 1e-6 of the largest; the pseudo-inverse leaves zero directions out)."""
    xc = a - a.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    r = int((s > 1e-6 * s[0]).sum())
    return alpha * xc + (1 - alpha) * (u[:, :r] @ vt[:r])


def shape_reference(x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    a, b = whitened(x, alpha), whitened(y, alpha)
    nuclear = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    return float(np.arccos(min(1.0, nuclear / (np.linalg.norm(a) * np.linalg.norm(b)))))


@pytest.fixture(scope="module")
def low_rank():
    """n = 100 samples; x 300 units of exact rank 10 (so x^T x has 290 zero eigenvalues, which
    eigh returns as rounding noise of either sign), y 5 units; and x with a duplicated unit."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 10)) @ rng.normal(size=(10, 300))
    y = rng.normal(size=(100, 5))
    narrow = rng.normal(size=(100, 6))
    duplicated = np.column_stack([narrow, narrow[:, 2]])
    return x, y, duplicated


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_shape_metric_of_rank_deficient_layers_at_any_scale(low_rank, alpha):
    """Before: alpha=0 was 1.3644049 at scale 1 (reference 1.3644044), 1.3577343 at scale 100
    and NaN at 1e4, the noise eigenvalues weighted up to 1e7 or negative."""
    x, y, duplicated = low_rank
    if alpha == 0:
        assert shape_reference(x, y, 0.0) == pytest.approx(1.3644044201, abs=1e-9)
    for scale in SCALES:
        for a in (x, duplicated):
            expected = shape_reference(scale * a, y, alpha)
            value = float(dr.shape_metric(scale * a, y, alpha=alpha))
            assert value == pytest.approx(expected, abs=1e-9), scale
            grid = dr.compare({"x": scale * a}, {"y": y}, metrics=["shape_metric"], alpha=alpha)
            assert float(grid.shape_metric.item()) == pytest.approx(expected, abs=1e-9)
            if alpha == 0:  # invariant to any invertible map: to scaling too
                assert value == pytest.approx(shape_reference(a, y, 0.0), abs=1e-9)


def test_shape_metric_of_a_full_rank_wide_layer_is_degenerate_and_warns():
    """x of rank 10 plus 1e-3 noise has full sample rank 99 at n = 100: fully whitened it spans
    every centred direction, so each canonical correlation with y is 1 and the distance is
    arccos(sqrt(5 / 99)) = 1.3441270 whatever the data (netrep's value at scale 1); before, 6.1e-4
    off at scale 100 and NaN at 1e4, with no warning."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 10)) @ rng.normal(size=(10, 300))
    x = x + 1e-3 * rng.normal(size=(100, 300))
    y = rng.normal(size=(100, 5))
    degenerate = float(np.arccos(np.sqrt(5 / 99)))
    assert degenerate == pytest.approx(1.3441270, abs=1e-7)
    for scale in SCALES:
        assert shape_reference(scale * x, y, 0.0) == pytest.approx(degenerate, abs=1e-9)
        with pytest.warns(RepsimWarning, match=r"x has 300 varying units for 100 samples: "
                          r"centred data has rank at most 99, so shape_metric with alpha=0 is "
                          r"degenerate"):
            value = float(dr.shape_metric(scale * x, y, alpha=0.0))
        assert value == pytest.approx(degenerate, abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # alpha > 0 is not degenerate: no warning
        dr.shape_metric(x, y, alpha=0.5)


def test_linear_regression_from_a_full_rank_layer_warns():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 19)), rng.normal(size=(20, 3))
    with pytest.warns(RepsimWarning, match="so linear_regression is degenerate"):
        assert float(dr.linear_regression(x, y)) == pytest.approx(1.0, abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # y predicting x is not degenerate
        dr.linear_regression(y, x)


def test_angular_distances_of_a_layer_with_itself_are_zero():
    """arccos near 1 turned CKA's last bit into 1.49e-8."""
    x = np.random.default_rng(2).normal(size=(2000, 37))
    grid = dr.compare({"x": x}, metrics=["cka_angular", "shape_metric"])
    assert float(grid.cka_angular.item()) == 0.0
    assert float(grid.shape_metric.item()) == 0.0
    for alpha in (0.0, 0.5, 1.0):
        assert float(dr.shape_metric(x, x, alpha=alpha)) == 0.0


def few_samples(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    return rng.normal(size=(n, 5)), rng.normal(size=(n, 4))


@pytest.mark.parametrize("metric", list(MEASURES))
def test_every_measure_below_its_minimum_is_an_error_or_a_warning(metric):
    """n = 2 (every layer one centred direction), and n = 3 where the minimum is 4: a
    SampleCountError naming the measure, or a value with a RepsimWarning, never a silent
    value."""
    minimum = MEASURES[metric].min_samples
    assert minimum >= 3
    for n in sorted({2, minimum - 1}):
        x, y = few_samples(n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                dr.compare({"a": x}, {"b": y}, metrics=[metric])
            except SampleCountError as error:
                assert str(error) == f"{metric} needs at least {minimum} samples, got {n}"
                continue
        assert n >= minimum and any(issubclass(w.category, RepsimWarning) for w in caught)


def test_the_minimum_is_checked_before_the_other_rules():
    x, y = few_samples(3)
    with pytest.raises(SampleCountError, match="cknna needs at least 4 samples, got 3"):
        dr.compare({"a": x}, {"b": y}, metrics=["mutual_knn", "cknna"], k=2)
    assert dr.compare({"a": x}, {"b": y}, metrics=["cka"]).cka.shape == (1, 1)


