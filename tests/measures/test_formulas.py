"""Every pairwise measure, through the public functions and ``compare``, against the in-memory
float64 reference formulas of ``tests/references.py``, with dask inputs in uneven chunks."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import dask.array as da
import numpy as np
import pytest
import references as ref
import scipy.linalg
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

import dask_repsim as dr
from dask_repsim import RepsimWarning

N = 1000
ATOL = 1e-6
# Different, uneven row chunkings for x and y: the engine has to refine them to common blocks.
ROWS_X = (100, 37, 250, 613)
ROWS_Y = (1, 499, 300, 200)


def _dask(a: np.ndarray, rows: tuple[int, ...]) -> da.Array:
    p = a.shape[1]
    cols = (p // 3, p - p // 3) if p > 2 else (p,)  # uneven column chunks too
    return da.from_array(a, chunks=(rows, cols))


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _gaussian(seed: int, p: int = 12, q: int = 12, latent: int = 5):
    """Two layers sharing a few latent factors, plus independent noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(N, latent))
    x = z @ rng.normal(size=(latent, p)) + rng.normal(size=(N, p))
    y = z @ rng.normal(size=(latent, q)) + rng.normal(size=(N, q))
    return x, y


def _relu_large_mean(seed: int, p: int = 12, q: int = 12):
    """ReLU units riding on offsets of 1e4..2e4: mean/std of every unit is in the thousands."""
    rng = np.random.default_rng(seed)
    x, y = _gaussian(seed, p, q)
    x = 1e4 * (1 + rng.uniform(size=p)) + _relu(x)
    y = 1e4 * (1 + rng.uniform(size=q)) + _relu(y)
    for a in (x, y):
        assert (a.mean(axis=0) / a.std(axis=0)).min() >= 1000  # the regime this case is for
    return x, y


def _duplicated(seed: int):
    """x: a unit copied and a unit that is the sum of two others (rank 10 of 12 units);
    y: one unit copied (rank 11 of 12)."""
    x, y = _gaussian(seed)
    x[:, 10] = x[:, 2]
    x[:, 11] = x[:, 0] + x[:, 5]
    y[:, 11] = y[:, 4]
    return x, y


def _case(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "gaussian":
        return _gaussian(0)
    if name == "relu_large_mean":
        return _relu_large_mean(1)
    if name == "relu_large_mean_float32":
        # the reference sees the same float32 values, cast to float64
        x, y = _relu_large_mean(2)
        return x.astype(np.float32), y.astype(np.float32)
    if name == "duplicated_units":
        return _duplicated(3)
    if name == "unequal_widths":  # p = 30 > q = 20: PWCCA weights by y's variates
        return _gaussian(4, p=30, q=20, latent=8)
    raise AssertionError(name)


CASES = [
    "gaussian",
    "relu_large_mean",
    "relu_large_mean_float32",
    "duplicated_units",
    "unequal_widths",
]

Measure = Callable[[object, object], float]
#: name -> (the package's public function, the reference), both of (x, y)
MEASURES: dict[str, tuple[Measure, Measure]] = {
    "cka": (dr.cka, ref.linear_cka),
    "cka_debiased": (lambda x, y: dr.cka(x, y, debiased=True), ref.debiased_linear_cka),
    "cca_mean": (lambda x, y: dr.cca(x, y).mean, ref.mean_cca),
    "cca_r2": (lambda x, y: dr.cca(x, y).r2, ref.r2_cca),
    "svcca_0.99": (lambda x, y: dr.svcca(x, y, keep=0.99), lambda x, y: ref.svcca(x, y, 0.99)),
    "svcca_0.5": (lambda x, y: dr.svcca(x, y, keep=0.5), lambda x, y: ref.svcca(x, y, 0.5)),
    "svcca_int_5": (lambda x, y: dr.svcca(x, y, keep=5), lambda x, y: ref.svcca(x, y, 5)),
    "svcca_int_all": (
        lambda x, y: dr.svcca(x, y, keep=max(x.shape[1], y.shape[1])),
        lambda x, y: ref.svcca(x, y, max(x.shape[1], y.shape[1])),
    ),
    "pwcca": (dr.pwcca, ref.pwcca),
    "linear_regression": (dr.linear_regression, ref.linear_regression),
    "linear_regression_y_to_x": (
        lambda x, y: dr.linear_regression(y, x),
        lambda x, y: ref.linear_regression(y, x),
    ),
    "procrustes": (dr.procrustes, ref.procrustes),
}


@pytest.fixture(scope="module", autouse=True)
def _serial_blas():
    # The matrices here are small: BLAS threads only contend with dask's and slow both down.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module", params=CASES)
def case(request):
    x, y = _case(request.param)
    return request.param, x, y


# ---------------------------------------------------------------------------------------------
# The references themselves, against independent implementations
# ---------------------------------------------------------------------------------------------


def test_references_agree_with_other_implementations():
    x, y = _gaussian(10)
    xc, yc = ref.centre(x), ref.centre(y)
    # canonical correlations are the cosines of the principal angles between the centred spans
    cosines = np.sort(np.cos(scipy.linalg.subspace_angles(xc, yc)))[::-1]
    np.testing.assert_allclose(ref.canonical_correlations(x, y), cosines, rtol=0, atol=1e-10)
    # linear CKA in feature space (Kornblith et al. 2019, eq. 6)
    feature_cka = np.linalg.norm(xc.T @ yc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert ref.linear_cka(x, y) == pytest.approx(feature_cka, abs=1e-12)
    # scikit-learn's R^2 weighted by each output's variance is 1 - sum SS_res / sum SS_tot
    fitted = LinearRegression().fit(x, y).predict(x)
    sk = r2_score(y, fitted, multioutput="variance_weighted")
    assert ref.linear_regression(x, y) == pytest.approx(sk, abs=1e-12)
    # debiased CKA approaches plain CKA as n grows but is not equal to it at finite n
    assert abs(ref.debiased_linear_cka(x, y) - ref.linear_cka(x, y)) < 0.01
    assert ref.debiased_linear_cka(x, y) != pytest.approx(ref.linear_cka(x, y), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Public functions and compare against the references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", list(MEASURES))
def test_public_function_matches_reference(case, measure):
    name, x, y = case
    package, reference = MEASURES[measure]
    got = package(_dask(x, ROWS_X), _dask(y, ROWS_Y))
    assert isinstance(got, float)
    assert got == pytest.approx(reference(x, y), abs=ATOL), (name, measure)


def test_canonical_correlations_match_reference(case):
    _, x, y = case
    rho = dr.cca(_dask(x, ROWS_X), _dask(y, ROWS_Y)).rho
    expected = ref.canonical_correlations(x, y)
    assert rho.shape == expected.shape
    np.testing.assert_allclose(rho, expected, atol=ATOL)


def test_compare_matches_references(case):
    _, x, y = case
    ds = dr.compare({"x": _dask(x, ROWS_X)}, {"y": _dask(y, ROWS_Y)})
    assert set(ds.data_vars) == set(ref.METRICS)
    for metric, reference in ref.METRICS.items():
        got = float(ds[metric].sel(layer_a="x", layer_b="y"))
        assert got == pytest.approx(reference(x, y), abs=ATOL), metric


def test_compare_grid_matches_references():
    """A 2 x 2 grid of one input with itself: every cell, both orders, the diagonal."""
    x, y = _gaussian(5, p=12, q=9)
    arrays = {"x": x, "y": y}
    ds = dr.compare({"x": _dask(x, ROWS_X), "y": _dask(y, ROWS_Y)})
    for metric, reference in ref.METRICS.items():
        for a in arrays:
            for b in arrays:
                got = float(ds[metric].sel(layer_a=a, layer_b=b))
                want = reference(arrays[a], arrays[b])
                assert got == pytest.approx(want, abs=ATOL), (metric, a, b)


# ---------------------------------------------------------------------------------------------
# Dead (constant) units
# ---------------------------------------------------------------------------------------------

X_DEAD = [3, 7]  # an all-zero unit and a constant 0.1
Y_DEAD = [5]  # a constant on a large offset


def _dead_units() -> tuple[np.ndarray, np.ndarray]:
    x, y = _gaussian(6)
    x[:, 3] = 0.0
    x[:, 7] = 0.1
    y[:, 5] = 12345.678
    return x, y


def _without_dead(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.delete(x, X_DEAD, axis=1), np.delete(y, Y_DEAD, axis=1)


def _dead_unit_messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RepsimWarning)]


#: the CCA family: which sides' constant units each one must report
CCA_FAMILY: dict[str, tuple[Measure, Measure, tuple[str, ...]]] = {
    "cca_mean": (*MEASURES["cca_mean"], ("x", "y")),
    "cca_r2": (*MEASURES["cca_r2"], ("x", "y")),
    "svcca_0.99": (*MEASURES["svcca_0.99"], ("x", "y")),
    "svcca_int_5": (*MEASURES["svcca_int_5"], ("x", "y")),
    "pwcca": (*MEASURES["pwcca"], ("x", "y")),
    # y's constant units only lower nothing: they have no variance to explain
    "linear_regression": (*MEASURES["linear_regression"], ("x",)),
}
DEAD_COUNTS = {"x": "x: 2 of 12 units", "y": "y: 1 of 12 units"}


@pytest.mark.parametrize("measure", list(CCA_FAMILY))
def test_dead_units_cca_family_value(measure):
    """The result is the reference computed with the constant units removed."""
    x, y = _dead_units()
    package, reference, _ = CCA_FAMILY[measure]
    with warnings.catch_warnings():  # whether they warn is the next test's business
        warnings.simplefilter("ignore", RepsimWarning)
        got = package(_dask(x, ROWS_X), _dask(y, ROWS_Y))
    assert got == pytest.approx(reference(*_without_dead(x, y)), abs=ATOL)


@pytest.mark.parametrize("measure", list(CCA_FAMILY))
def test_dead_units_cca_family_warns_with_counts(measure):
    x, y = _dead_units()
    package, _, sides = CCA_FAMILY[measure]
    with pytest.warns(RepsimWarning) as record:
        package(_dask(x, ROWS_X), _dask(y, ROWS_Y))
    messages = _dead_unit_messages(record)
    for side in sides:
        assert any(DEAD_COUNTS[side] in m for m in messages), (side, messages)


def test_dead_units_rho_count():
    """10 varying units in x, 11 in y: 10 canonical correlations, as the reference gives."""
    x, y = _dead_units()
    with pytest.warns(RepsimWarning):
        rho = dr.cca(_dask(x, ROWS_X), _dask(y, ROWS_Y)).rho
    expected = ref.canonical_correlations(*_without_dead(x, y))
    assert rho.shape == expected.shape == (10,)
    np.testing.assert_allclose(rho, expected, atol=ATOL)


@pytest.mark.parametrize("measure", ["cka", "cka_debiased", "procrustes"])
def test_dead_units_cka_does_not_warn(measure):
    x, y = _dead_units()
    package, reference = MEASURES[measure]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepsimWarning)
        got = package(_dask(x, ROWS_X), _dask(y, ROWS_Y))
    # constant units are zero once centred: with or without them, the same value
    assert got == pytest.approx(reference(x, y), abs=ATOL)
    assert got == pytest.approx(reference(*_without_dead(x, y)), abs=ATOL)


def test_dead_units_compare():
    x, y = _dead_units()
    with pytest.warns(RepsimWarning) as record:
        ds = dr.compare({"x": _dask(x, ROWS_X)}, {"y": _dask(y, ROWS_Y)})
    messages = _dead_unit_messages(record)
    assert any(DEAD_COUNTS["x"] in m for m in messages), messages
    assert any(DEAD_COUNTS["y"] in m for m in messages), messages
    xr_, yr_ = _without_dead(x, y)
    for metric, reference in ref.METRICS.items():
        got = float(ds[metric].sel(layer_a="x", layer_b="y"))
        assert got == pytest.approx(reference(xr_, yr_), abs=ATOL), metric


# ---------------------------------------------------------------------------------------------
# Duplicated units and PWCCA's choice of side
# ---------------------------------------------------------------------------------------------


def test_duplicated_units_drop_collinear_directions():
    """rank X = 10, rank Y = 11: min of the ranks, 10 correlations, none of them spurious."""
    x, y = _duplicated(3)
    assert np.linalg.matrix_rank(ref.centre(x)) == 10
    assert np.linalg.matrix_rank(ref.centre(y)) == 11
    rho = dr.cca(_dask(x, ROWS_X), _dask(y, ROWS_Y)).rho
    expected = ref.canonical_correlations(x, y)
    assert rho.shape == expected.shape == (10,)
    np.testing.assert_allclose(rho, expected, atol=ATOL)
    # the duplicated units add no information: the same as without them
    np.testing.assert_allclose(rho, ref.canonical_correlations(x[:, :10], y[:, :11]), atol=ATOL)


def _pwcca_with_side(x: np.ndarray, y: np.ndarray, side: str) -> float:
    rho, hx, hy = ref.canonical_decomposition(x, y)
    h, units = (hx, ref.centre(x)) if side == "x" else (hy, ref.centre(y))
    alpha = np.abs(h.T @ units).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


@pytest.mark.parametrize(("p", "q", "side"), [(30, 20, "y"), (20, 30, "x"), (12, 12, "x")])
def test_pwcca_weights_the_narrower_side(p, q, side):
    x, y = _gaussian(12, p=p, q=q, latent=3)
    other = "x" if side == "y" else "y"
    want, alternative = _pwcca_with_side(x, y, side), _pwcca_with_side(x, y, other)
    assert abs(want - alternative) > 1e-3  # the choice of side matters for this data
    assert dr.pwcca(_dask(x, ROWS_X), _dask(y, ROWS_Y)) == pytest.approx(want, abs=ATOL)
