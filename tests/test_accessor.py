"""The ``.repsim`` accessor gives exactly what the functions give, with every option passed on."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import dask_repsim
import dask_repsim.accessor  # noqa: F401  (registers the accessor)

N = 160


@pytest.fixture(scope="module")
def nets():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(N, 6))
    conv = rng.normal(size=(N, 3, 2, 2)) + x[:, :3, None, None]
    net_a = xr.Dataset(
        {
            "fc1": (("sample", "u1"), x),
            "conv": (("sample", "channel", "height", "width"), conv),
        }
    )
    net_b = xr.Dataset(
        {
            "fc1": (("sample", "v1"), np.tanh(x @ rng.normal(size=(6, 5)))),
            "fc2": (("sample", "v2"), x[:, :4] + 0.5 * rng.normal(size=(N, 4))),
        }
    ).chunk({"sample": 50})  # dask-backed, several chunks
    return net_a, net_b


def assert_same_dataset(got: xr.Dataset, expected: xr.Dataset) -> None:
    assert set(got.data_vars) == set(expected.data_vars)
    assert list(got.layer_a.values) == list(expected.layer_a.values)
    assert list(got.layer_b.values) == list(expected.layer_b.values)
    for name in expected.data_vars:
        np.testing.assert_allclose(got[name].values, expected[name].values, rtol=0, atol=1e-12)
    assert got.attrs["n_samples"] == expected.attrs["n_samples"]


def test_accessor_registered():
    assert isinstance(xr.Dataset().repsim, dask_repsim.accessor.DatasetRepsimAccessor)
    assert isinstance(xr.DataArray(0).repsim, dask_repsim.accessor.DataArrayRepsimAccessor)


def test_dataset_compare_equals_function(nets):
    net_a, net_b = nets
    assert_same_dataset(net_a.repsim.compare(net_b), dask_repsim.compare(net_a, net_b))
    assert_same_dataset(net_a.repsim.compare(), dask_repsim.compare(net_a))
    kw = {"metrics": ["cka", "svcca"], "sample_dims": "sample"}
    got = net_b.repsim.compare(net_a, **kw)
    assert_same_dataset(got, dask_repsim.compare(net_b, net_a, **kw))
    assert list(got.data_vars) == ["cka", "svcca"]


def test_dataset_compare_against_formula(nets):
    net_a, net_b = nets

    def centred(v):
        v = np.asarray(v, dtype=np.float64).reshape(N, -1)
        return v - v.mean(axis=0)

    x, y = centred(net_a.conv), centred(net_b.fc2)
    expected = np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    got = net_a.repsim.compare(net_b, metrics=["cka"]).cka.sel(layer_a="conv", layer_b="fc2")
    assert float(got) == pytest.approx(expected, abs=1e-12)


METHODS = [
    ("cka", {}),
    ("cka", {"debiased": True}),
    ("cca", {}),
    ("svcca", {}),
    ("svcca", {"keep": 2}),
    ("pwcca", {}),
    ("pwcca", {"definition": "reference"}),
    ("linear_regression", {}),
    ("procrustes", {}),
]


@pytest.mark.parametrize(("method", "kwargs"), METHODS)
def test_dataarray_methods_equal_functions(nets, method, kwargs):
    net_a, net_b = nets
    x, y = net_a.fc1, net_b.fc2
    got = getattr(x.repsim, method)(y, **kwargs)
    expected = getattr(dask_repsim, method)(x, y, **kwargs)
    if method == "cca":
        np.testing.assert_allclose(got.rho, expected.rho, rtol=0, atol=1e-12)
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_options_reach_the_function(nets):
    net_a, net_b = nets
    x, y = net_a.fc1, net_b.fc2
    # each option changes the answer, so an accessor that dropped it would fail above
    assert x.repsim.svcca(y, keep=2) != pytest.approx(x.repsim.svcca(y), abs=1e-6)
    assert x.repsim.cka(y, debiased=True) != pytest.approx(x.repsim.cka(y), abs=1e-6)


def test_dataarray_sample_dims_and_other_inputs(nets):
    net_a, _ = nets
    conv = net_a.conv
    folded = conv.transpose("sample", "height", "width", "channel").values.reshape(-1, 3)
    other = np.cos(folded) @ np.arange(6.0).reshape(3, 2)  # a plain numpy array, folded layout
    dims = ("sample", "height", "width")
    got = conv.repsim.cka(other, sample_dims=dims)
    assert got == pytest.approx(dask_repsim.cka(conv, other, sample_dims=dims), abs=1e-12)
    assert got == pytest.approx(dask_repsim.cka(folded, other), abs=1e-12)
    lazy = da.from_array(other, chunks=(100, 2))
    assert conv.repsim.procrustes(lazy, sample_dims=dims) == pytest.approx(
        dask_repsim.procrustes(folded, other), abs=1e-12
    )


def test_dataarray_compare(nets):
    net_a, net_b = nets
    got = net_a.fc1.repsim.compare(net_b, metrics=["cka", "mean_cca"])
    assert_same_dataset(got, dask_repsim.compare(net_a.fc1, net_b, metrics=["cka", "mean_cca"]))
    assert list(got.layer_a.values) == ["fc1"]
    assert list(got.layer_b.values) == ["fc1", "fc2"]
    alone = net_a.fc1.repsim.compare(metrics=["cka"])
    assert float(alone.cka.squeeze()) == pytest.approx(1.0, abs=1e-12)


def test_unit_functions_are_forwarded(nets):
    """The accessor forwards every public function that takes two layers, the unit ones too."""
    net_a, net_b = nets
    x, y = net_a.fc1, net_b.fc2
    got = x.repsim.unit_correlation(y)
    xc = x.values - x.values.mean(axis=0)
    yc = y.values - y.values.mean(axis=0)
    expected = (xc / np.linalg.norm(xc, axis=0)).T @ (yc / np.linalg.norm(yc, axis=0))
    np.testing.assert_allclose(got.values, expected, atol=1e-12)
    matched = x.repsim.match_units(y, method="semi")
    xr.testing.assert_identical(matched, dask_repsim.match_units(x, y, method="semi"))
    np.testing.assert_allclose(matched.correlation.values,
                               np.sort(expected.max(axis=1))[::-1], atol=1e-12)
    sparse = x.repsim.sparse_prediction(y, alphas=[0.05])
    xr.testing.assert_identical(sparse, dask_repsim.sparse_prediction(x, y, alphas=[0.05]))
    clusters = x.repsim.cluster_units(y, n_clusters=2)
    xr.testing.assert_identical(clusters, dask_repsim.cluster_units(x, y, n_clusters=2))


def test_every_measure_function_is_a_dataarray_method_giving_its_value():
    """Each measure with a public function (the registry's) is a DataArray method, and the
    forwarded ones give the function's value and options (``k=``, ``folds=``) on a labelled
    pair, dask-backed on one side."""
    from dask_repsim.registry import MEASURES

    accessor = dask_repsim.accessor.DataArrayRepsimAccessor
    public = [m for m in MEASURES if hasattr(dask_repsim, m)]
    assert len(public) >= 30 and [m for m in public if not hasattr(accessor, m)] == []
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 4))
    a = xr.DataArray(x, dims=("sample", "u"))
    b = xr.DataArray(np.tanh(x @ rng.normal(size=(4, 3))) + 0.3 * rng.normal(size=(60, 3)),
                     dims=("sample", "v")).chunk({"sample": 25})
    options = {"jaccard_knn": {"k": 4}, "rank_similarity": {"k": 4},
               "joint_rank_jaccard": {"k": 4}, "second_order_cosine": {"k": 4},
               "ridge_predictivity": {"folds": 3}, "pls_predictivity": {"folds": 3}}
    outputs = {"disagreement", "jensen_shannon"}  # output layers over the same classes
    logits = xr.DataArray(rng.normal(size=(60, 5)), dims=("sample", "class"))
    for names in dask_repsim.accessor.FORWARDED.values():
        for name in names:
            left, right = (logits, logits + rng.normal(size=(60, 5))) if name in outputs \
                else (a, b)
            kw = options.get(name, {})
            got = getattr(left.repsim, name)(right, **kw)
            want = getattr(dask_repsim, name)(left, right, **kw)
            assert float(got) == pytest.approx(float(want), rel=1e-12, abs=1e-15), name
            assert getattr(accessor, name).__doc__.endswith(
                f":func:`dask_repsim.{name}` with this DataArray as ``x``."), name
