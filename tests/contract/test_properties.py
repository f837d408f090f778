"""Invariances and symmetries of the pairwise measures (Kornblith et al. 2019, section 2.1 and
Table 1), checked with hypothesis on dask inputs.

Each example computes the measures of the original and the transformed layer in one ``compare``
pass and asserts they agree; nothing here depends on a reference value.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    Activations,
    activations,
    isotropic_scales,
    offsets,
    orthogonal_matrices,
    permutations,
    well_conditioned_matrices,
)
from threadpoolctl import threadpool_limits

import dask_repsim as dr

EXAMPLES = settings(max_examples=30, deadline=None)
RTOL = 1e-8
ATOL = 1e-8
sides = st.sampled_from(["x", "y"])

#: invariant to orthogonal transforms and isotropic scaling of either side
ORTHOGONAL_INVARIANT = [
    "cka",
    "cka_debiased",
    "procrustes",
    "mean_cca",
    "r2_cca",
    "svcca",
    "linear_regression",
]
#: invariant to any invertible linear map of either side
INVERTIBLE_INVARIANT = ["mean_cca", "r2_cca"]
#: the same value with x and y swapped, whatever the widths
SYMMETRIC = ["cka", "cka_debiased", "mean_cca", "r2_cca", "svcca", "procrustes"]


@pytest.fixture(scope="module", autouse=True)
def _serial_blas():
    # The matrices here are small: BLAS threads only contend with dask's and slow both down.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _before_after(
    data: Activations, side: str, transformed: np.ndarray
) -> tuple[xr.Dataset, xr.Dataset]:
    """Every measure of (x, y), and of the pair with ``side`` replaced, from one pass."""
    x, y, new = data.dask(data.x), data.dask(data.y), data.dask(transformed)
    if side == "x":
        ds = dr.compare({"old": x, "new": new}, {"y": y})
        return ds.sel(layer_a="old", layer_b="y"), ds.sel(layer_a="new", layer_b="y")
    ds = dr.compare({"x": x}, {"old": y, "new": new})
    return ds.sel(layer_a="x", layer_b="old"), ds.sel(layer_a="x", layer_b="new")


def _assert_unchanged(before: xr.Dataset, after: xr.Dataset, metrics: list[str]) -> None:
    for metric in metrics:
        np.testing.assert_allclose(
            float(after[metric]), float(before[metric]), rtol=RTOL, atol=ATOL, err_msg=metric
        )


def _side(data: Activations, side: str) -> np.ndarray:
    return data.x if side == "x" else data.y


@EXAMPLES
@given(data=activations(), side=sides, choice=st.data())
def test_orthogonal_transform_and_isotropic_scaling(data, side, choice):
    a = _side(data, side)
    q = choice.draw(orthogonal_matrices(a.shape[1]), label="Q")
    scale = choice.draw(isotropic_scales, label="scale")
    before, after = _before_after(data, side, scale * a @ q)
    _assert_unchanged(before, after, ORTHOGONAL_INVARIANT)


@EXAMPLES
@given(data=activations(), side=sides, choice=st.data())
def test_invertible_linear_map(data, side, choice):
    a = _side(data, side)
    w = choice.draw(well_conditioned_matrices(a.shape[1]), label="W")
    before, after = _before_after(data, side, a @ w)
    # regression from x is invariant to any invertible map of x (not of y)
    _assert_unchanged(
        before, after, INVERTIBLE_INVARIANT + (["linear_regression"] if side == "x" else [])
    )


@EXAMPLES
@given(data=activations(), side=sides, choice=st.data())
def test_permuting_units(data, side, choice):
    a = _side(data, side)
    order = choice.draw(permutations(a.shape[1]), label="permutation")
    before, after = _before_after(data, side, a[:, order])
    _assert_unchanged(before, after, list(dr.DEFAULT_METRICS))


@EXAMPLES
@given(data=activations(), side=sides, choice=st.data())
def test_adding_constants_to_units(data, side, choice):
    a = _side(data, side)
    shift = choice.draw(offsets(a.shape[1]), label="offsets")
    before, after = _before_after(data, side, a + shift)
    _assert_unchanged(before, after, list(dr.DEFAULT_METRICS))


def _both_orders(data: Activations) -> tuple[xr.Dataset, xr.Dataset]:
    ds = dr.compare({"x": data.dask(data.x), "y": data.dask(data.y)})
    return ds.sel(layer_a="x", layer_b="y"), ds.sel(layer_a="y", layer_b="x")


@EXAMPLES
@given(data=activations())
def test_symmetric_measures(data):
    xy, yx = _both_orders(data)
    _assert_unchanged(xy, yx, SYMMETRIC)
    np.testing.assert_allclose(
        dr.cca(data.dask(data.y), data.dask(data.x)).rho,
        dr.cca(data.dask(data.x), data.dask(data.y)).rho,
        rtol=RTOL,
        atol=ATOL,
    )


@EXAMPLES
@given(data=activations(same_width=False))
def test_pwcca_symmetric_when_widths_differ(data):
    """PWCCA weights by the narrower side's variates, whichever argument that is."""
    xy, yx = _both_orders(data)
    _assert_unchanged(xy, yx, ["pwcca"])


@EXAMPLES
@given(data=activations(), choice=st.data())
def test_svcca_int_keep_symmetric(data, choice):
    width = max(data.x.shape[1], data.y.shape[1])
    keep = choice.draw(st.integers(1, width), label="keep")
    x, y = data.dask(data.x), data.dask(data.y)
    np.testing.assert_allclose(
        dr.svcca(y, x, keep=keep), dr.svcca(x, y, keep=keep), rtol=RTOL, atol=ATOL
    )
