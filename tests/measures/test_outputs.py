"""Functional measures of output layers (prediction disagreement, Jensen-Shannon divergence of
the softmax outputs): equal to ReSi's definitions (argmax; scipy's jensenshannon squared, base
2) through the pairwise functions, zarr and compare; what they are invariant to; errors."""

from __future__ import annotations

import numpy as np
import pytest
import references
from conftest import write_zarr

import dask_repsim as dr


def _logits(n=300, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    a = 2.0 * rng.normal(size=(n, classes))
    b = a + 1.5 * rng.normal(size=(n, classes))  # a second network, mostly agreeing
    return a, b


@pytest.mark.parametrize("kind", ["gaussian", "offset", "float32", "confident"])
def test_equal_the_definitions(kind, tmp_path):
    a, b = _logits()
    if kind == "offset":
        a, b = a + 1e4, b - 50.0  # the softmax ignores a per-sample constant
    if kind == "float32":
        a, b = a.astype(np.float32), b.astype(np.float32)
    if kind == "confident":
        a, b = 40 * a, 40 * b  # near one-hot distributions: rel_entr of zeros
    for m in ("disagreement", "jensen_shannon"):
        expected = getattr(references, m)(a, b)
        assert float(getattr(dr, m)(a, b)) == pytest.approx(expected, rel=1e-10, abs=1e-14)
        assert float(getattr(dr, m)(b, a)) == pytest.approx(expected, rel=1e-10, abs=1e-14)
    write_zarr(tmp_path / "o.zarr", "a", a, chunks=(70, 10))
    write_zarr(tmp_path / "o.zarr", "b", b, chunks=(45, 10))
    ds = dr.compare(str(tmp_path / "o.zarr"), metrics=["disagreement", "jensen_shannon"])
    for m in ("disagreement", "jensen_shannon"):
        assert float(ds[m].sel(layer_a="a", layer_b="b")) == pytest.approx(
            getattr(references, m)(a, b), rel=1e-10, abs=1e-14)
        assert float(ds[m].sel(layer_a="b", layer_b="b")) == 0.0


def test_scipy_agrees_where_it_is_defined():
    """scipy's jensenshannon (a distance: its square is the divergence) on ordinary outputs;
    on near one-hot outputs it returns NaN (the square root of a rounding-negative number),
    which ReSi's nanmean would leave out; here every sample counts."""
    from scipy.spatial.distance import jensenshannon
    from scipy.special import softmax

    a, b = _logits()
    p, q = softmax(a, axis=1), softmax(b, axis=1)
    expected = np.mean([jensenshannon(u, v, base=2) ** 2 for u, v in zip(p, q, strict=True)])
    assert float(dr.jensen_shannon(a, b)) == pytest.approx(expected, rel=1e-10)
    assert np.isfinite(float(dr.jensen_shannon(40 * a, 40 * b)))


def test_invariances_and_range():
    a, b = _logits()
    shift = np.random.default_rng(3).normal(size=(len(a), 1)) * 10  # per-sample constants
    assert float(dr.jensen_shannon(a + shift, b)) == pytest.approx(
        float(dr.jensen_shannon(a, b)), rel=1e-9)
    assert float(dr.disagreement(np.exp(a), b)) == float(dr.disagreement(a, b))
    assert float(dr.jensen_shannon(2 * a, b)) != pytest.approx(float(dr.jensen_shannon(a, b)))
    one_hot = np.eye(10)[np.arange(300) % 10] * 100
    other = np.eye(10)[(np.arange(300) + 1) % 10] * 100
    assert float(dr.disagreement(one_hot, other)) == 1.0
    assert float(dr.jensen_shannon(one_hot, other)) == pytest.approx(1.0, abs=1e-12)


def test_errors():
    a, b = _logits()
    with pytest.raises(ValueError, match="over the same classes: x has 10 units, y 9"):
        dr.disagreement(a, b[:, :9])
    for option in ({"nan_policy": "omit"},):  # intervals and permutations: tests/paths
        with pytest.raises(ValueError, match="not available for jensen_shannon"):
            dr.jensen_shannon(a, b, **option)
    b[7, 2] = np.nan
    with pytest.raises(dr.NonFiniteError, match="y has NaN at sample 7"):
        dr.disagreement(a, b)
