"""Linear HSIC, SVCCA summarised by R^2_CCA, the generalized shape metric and angular CKA,
against float64 references written from the papers (tests/references.py)."""

from __future__ import annotations

import numpy as np
import pytest
import references as ref

import dask_repsim as dr


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(700, 7)) * np.linspace(0.3, 3, 7)
    y = np.tanh(x[:, :5] @ rng.normal(size=(5, 6))) + 0.4 * rng.normal(size=(700, 6)) + 2.0
    return x, y


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_shape_metric_equals_the_reference(data, alpha):
    x, y = data
    expected = ref.shape_metric(x, y, alpha)
    assert float(dr.shape_metric(x, y, alpha=alpha)) == pytest.approx(expected, abs=1e-9)
    ds = dr.compare({"x": x}, {"y": y}, metrics=["shape_metric"], alpha=alpha)
    assert float(ds.shape_metric.item()) == pytest.approx(expected, abs=1e-9)
    assert ds.attrs["alpha"] == alpha


def test_shape_metric_limits(data):
    """alpha=1 is the angular Procrustes distance; alpha=0 invariant to invertible maps; a
    metric: symmetric, zero on itself, triangle inequality."""
    x, y = data
    z = np.cos(x[:, :4]) + 0.1
    assert float(dr.shape_metric(x, y)) == pytest.approx(np.arccos(float(dr.procrustes(x, y))))
    mixed = x @ np.random.default_rng(0).normal(size=(7, 7))
    assert float(dr.shape_metric(x, mixed, alpha=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(dr.shape_metric(x, mixed, alpha=1.0)) > 0.1
    for alpha in (0.0, 0.5, 1.0):
        dxy = float(dr.shape_metric(x, y, alpha=alpha))
        assert dxy == pytest.approx(float(dr.shape_metric(y, x, alpha=alpha)), abs=1e-12)
        dxz = float(dr.shape_metric(x, z, alpha=alpha))
        dzy = float(dr.shape_metric(z, y, alpha=alpha))
        assert dxy <= dxz + dzy + 1e-12


def test_hsic_svcca_r2_and_angular_cka_equal_the_references(data):
    x, y = data
    assert float(dr.hsic(x, y)) == pytest.approx(ref.linear_hsic(x, y), rel=1e-10)
    assert float(dr.svcca(x, y, summary="r2")) == pytest.approx(ref.svcca_r2(x, y), abs=1e-9)
    assert float(dr.svcca(x, y, summary="r2", method="qr")) == pytest.approx(
        ref.svcca_r2(x, y), abs=1e-9)
    ds = dr.compare({"x": x}, {"y": y}, metrics=["hsic", "svcca_r2", "cka_angular"])
    assert float(ds.hsic.item()) == pytest.approx(ref.linear_hsic(x, y), rel=1e-10)
    assert float(ds.svcca_r2.item()) == pytest.approx(ref.svcca_r2(x, y), abs=1e-9)
    assert float(ds.cka_angular.item()) == pytest.approx(ref.cka_angular(x, y), abs=1e-9)
    qr = dr.compare({"x": x}, {"y": y}, metrics=["svcca_r2"], method="qr")
    assert float(qr.svcca_r2.item()) == pytest.approx(ref.svcca_r2(x, y), abs=1e-9)


def test_distances_count_permutations_from_below(data):
    """For a distance, a related pair is far *below* its null: p = 1/(K+1)."""
    x, y = data
    result = dr.shape_metric(x, y, permutations=19, seed=4)
    assert result.pvalue == pytest.approx(1 / 20)
    assert float(result) < min(result.null)
    ds = dr.compare({"x": x}, {"y": y}, metrics=["cka", "cka_angular"], permutations=19, seed=4)
    assert float(ds.cka_pvalue.item()) == float(ds.cka_angular_pvalue.item()) == 1 / 20


def test_alpha_without_the_shape_metric_is_an_error(data):
    x, y = data
    with pytest.raises(ValueError, match="alpha= applies to the metric"):
        dr.compare({"x": x}, {"y": y}, metrics=["cka"], alpha=0.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        dr.shape_metric(x, y, alpha=1.5)


def test_ensd_is_the_authors_formula_and_counts_shared_dimensions():
    """ENSD equals the authors' PR(X) PR(Y) TR(X, Y) on the n x n Gram matrices (numpy,
    ``ref.ensd``), is a layer's participation ratio with itself, does not change under
    rotation and scaling, and counts the dimensions two layers share: two layers sharing 3 of
    their equal-variance directions have an ENSD near 3."""
    rng = np.random.default_rng(31)
    x = rng.normal(size=(400, 12)) + 50.0
    y = np.tanh(x[:, :6] - 50.0) @ rng.normal(size=(6, 9)) + 0.3 * rng.normal(size=(400, 9))
    assert float(dr.ensd(x, y)) == pytest.approx(ref.ensd(x, y), rel=1e-10)
    xc = x - x.mean(axis=0)
    pr = np.trace(xc.T @ xc) ** 2 / np.linalg.norm(xc.T @ xc) ** 2
    assert float(dr.ensd(x, x)) == pytest.approx(pr, rel=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    assert float(dr.ensd(x, 7 * y @ q)) == pytest.approx(float(dr.ensd(x, y)), rel=1e-10)
    shared = rng.normal(size=(20000, 3))
    a = np.hstack([shared, rng.normal(size=(20000, 3))])
    b = np.hstack([shared, rng.normal(size=(20000, 5))])
    assert float(dr.ensd(a, b)) == pytest.approx(3.0, abs=0.05)
