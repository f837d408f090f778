"""Data the other tests never saw: rank-deficient and very wide layers, two or three samples,
quantised activations with ties, a tiny memory budget. Each against a numpy reference written
here, independent of the package's code."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
from scipy.stats import pearsonr, rankdata

import dask_repsim as dr
from dask_repsim.exceptions import RepsimWarning, SampleCountError
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks.neighbours import nearest_neighbours
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


def exact_spearman(dx: np.ndarray, dy: np.ndarray, decimals: int = 10) -> float:
    """Spearman with exact ties: values equal to ``decimals`` decimals share their average
    rank."""
    return float(pearsonr(rankdata(np.round(dx, decimals)), rankdata(np.round(dy, decimals)))[0])


def rdm(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "correlation":
        d = 1 - np.corrcoef(a)
    else:
        d = ((a[:, None] - a[None]) ** 2).sum(axis=-1) / a.shape[1]
    return d[np.triu_indices(len(a), 1)]


def test_rsa_ties_are_those_of_the_computed_dissimilarities():
    """Integer ReLU activations: many correlations are equal mathematically but not as floats,
    and Spearman ranks the floats (3.1e-4 from the exact ranking where this was written; the
    docs' figure). The euclidean RDM of integers is exact, so its ties are too; Pearson
    ('corr') does not rank and does not see the rounding."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 3))
    x = np.maximum(np.round(z @ rng.normal(size=(3, 6)) * 1.5), 0)
    y = np.maximum(np.round(z @ rng.normal(size=(3, 5)) * 1.5 + rng.normal(size=(300, 5))), 0)
    keep = (x.std(axis=1) > 0) & (y.std(axis=1) > 0)  # the correlation RDM needs these
    x, y = x[keep], y[keep]
    dx, dy = rdm(x, "correlation"), rdm(y, "correlation")
    assert len(np.unique(np.round(dx, 10))) < len(dx) / 3  # heavily tied
    spearman = float(dr.rsa(x, y, compare="spearman"))
    assert spearman == pytest.approx(exact_spearman(dx, dy), abs=1e-3)
    assert float(dr.rsa(x, y)) == pytest.approx(pearsonr(dx, dy)[0], abs=1e-10)
    ex, ey = rdm(x, "euclidean"), rdm(y, "euclidean")
    euclidean = float(dr.rsa(x, y, rdm="euclidean", compare="spearman"))
    assert euclidean == pytest.approx(exact_spearman(ex, ey), abs=1e-12)


def test_knn_ties_are_those_of_the_computed_similarities():
    """Samples that are multiples of others (ReLU rows scaled by 3) have mathematically equal
    cosine similarities with every sample; as floats about half come out a rounding unit apart
    and are ordered by that, not by index. Rounding the l2-normalised rows makes them equal
    rows, whose similarities are equal floats, and the index rule holds."""
    rng = np.random.default_rng(5)
    base = np.maximum(rng.integers(-2, 5, size=(60, 8)), 0).astype(float)
    base = base[base.sum(axis=1) > 0][:50]
    m = len(base)

    def twins(data: np.ndarray) -> tuple[int, int]:
        sim, idx, _, _ = nearest_neighbours(as_layer(data), as_layer(data, name="y"), 6,
                                            block_rows=32)
        exact = split = 0
        for i in range(len(data)):
            for a in range(5):
                assert sim[i, a] >= sim[i, a + 1]
                if sim[i, a] == sim[i, a + 1]:
                    assert idx[i, a] < idx[i, a + 1]  # the documented rule, on floats
                if idx[i, a] % m == idx[i, a + 1] % m:  # a sample and its scaled twin
                    assert sim[i, a] - sim[i, a + 1] < 1e-15
                    exact += int(sim[i, a] == sim[i, a + 1])
                    split += int(sim[i, a] != sim[i, a + 1])
        return exact, split

    x = np.vstack([base, 3 * base])
    assert sum(twins(x)) > 100  # twins do sit next to each other
    unit = np.round(x / np.linalg.norm(x, axis=1, keepdims=True), 12)
    assert (unit[:m] == unit[m:]).all()
    exact, split = twins(unit)
    assert exact > 100 and split == 0


def test_the_spearman_size_error_never_prints_zero():
    x = np.random.default_rng(0).normal(size=(300, 3))
    with dask.config.set({"repsim.memory-budget": "1 MB"}), pytest.raises(
        ValueError, match=r"RDM at once: about 2\.05 MiB, .*memory budget \(0\.95 MiB, dask"
    ) as error:
        dr.rsa(x, x + 1, compare="spearman")
    assert "0.0 GiB" not in str(error.value)
