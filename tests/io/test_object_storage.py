"""Activations on S3-compatible object storage: moto's S3 server on 127.0.0.1, read through
zarr + fsspec/s3fs with ``storage_options`` (endpoint, key, secret). Reading them on cluster
workers is in test_cluster.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
import references
import zarr.storage
from cluster_utils import moto_s3
from conftest import write_zarr

import dask_repsim

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "activations"
N_SAMPLES = 1500
FUNCTIONS = {
    "cka": dask_repsim.cka,
    "cka_debiased": lambda x, y, **kw: dask_repsim.cka(x, y, debiased=True, **kw),
    "mean_cca": lambda x, y, **kw: dask_repsim.cca(x, y, **kw).mean,
    "svcca": dask_repsim.svcca,
    "pwcca": dask_repsim.pwcca,
    "linear_regression": dask_repsim.linear_regression,
    "procrustes": dask_repsim.procrustes,
}


@pytest.fixture(scope="module")
def s3_options():
    """storage_options for a fresh moto S3 server on 127.0.0.1 at a free port, with a bucket."""
    with moto_s3(BUCKET) as options:
        yield options


@pytest.fixture(scope="module")
def s3_layers(s3_options):
    """Three layers written to s3://activations/net.zarr, and the in-memory arrays."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(N_SAMPLES, 4))
    layers = {
        "conv": (np.maximum(base @ rng.normal(size=(4, 6)), 0) + 20.0).astype(np.float32),
        "fc": base @ rng.normal(size=(4, 5)) + 0.5 * rng.normal(size=(N_SAMPLES, 5)),
        "out": (base[:, :2] @ rng.normal(size=(2, 3)) + rng.normal(size=(N_SAMPLES, 3))).astype(
            np.float32
        ),
    }
    store = zarr.storage.FsspecStore.from_url(
        f"s3://{BUCKET}/net.zarr", storage_options=s3_options
    )
    for name, data in layers.items():
        write_zarr(store, name, data, (250, data.shape[1]))
    return layers


def test_layers_are_in_the_bucket(s3_options, s3_layers):
    """The fixture really wrote objects to the server: a second client lists them."""
    fs = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    listed = fs.ls(f"{BUCKET}/net.zarr", detail=False)
    assert {f"{BUCKET}/net.zarr/{name}" for name in s3_layers} <= set(listed)
    chunks = fs.find(f"{BUCKET}/net.zarr/conv/c")
    assert len(chunks) == N_SAMPLES // 250


@pytest.mark.parametrize("metric", list(FUNCTIONS))
def test_measures_on_s3_urls(s3_options, s3_layers, metric):
    """Each measure on s3:// URLs equals the same measure on the arrays in memory."""
    function = FUNCTIONS[metric]
    url = f"s3://{BUCKET}/net.zarr"
    got = function(f"{url}/conv", f"{url}/fc", storage_options=s3_options)
    expected = function(s3_layers["conv"], s3_layers["fc"])
    assert got == pytest.approx(expected, abs=1e-6)


def test_cka_on_s3_matches_the_formula(s3_options, s3_layers):
    """The S3 value is also the paper's: linear CKA from Gram matrices of the arrays."""
    url = f"s3://{BUCKET}/net.zarr"
    got = dask_repsim.cka(f"{url}/conv", f"{url}/out", storage_options=s3_options)
    expected = references.linear_cka(s3_layers["conv"], s3_layers["out"])
    assert got == pytest.approx(expected, abs=1e-6)


def test_compare_on_s3_group(s3_options, s3_layers):
    """compare() on the group's URL gives the in-memory values for every metric and pair."""
    result = dask_repsim.compare(f"s3://{BUCKET}/net.zarr", storage_options=s3_options)
    expected = dask_repsim.compare(s3_layers)
    assert list(result.layer_a.values) == sorted(s3_layers)
    assert result.attrs["n_samples"] == N_SAMPLES
    assert list(result.data_vars) == list(expected.data_vars)
    for metric in expected.data_vars:
        np.testing.assert_allclose(
            result[metric].values,
            expected[metric].sel(layer_a=result.layer_a, layer_b=result.layer_b).values,
            rtol=0,
            atol=1e-6,
        )


@pytest.mark.parametrize(
    "url",
    [
        f"s3://{BUCKET}/net.zarr/missing",  # no such array in an existing group
        f"s3://{BUCKET}/nothing-here.zarr/conv",  # no such group
        "s3://no-such-bucket/net.zarr/conv",  # no such bucket
    ],
)
def test_missing_s3_path(s3_options, s3_layers, url):
    """A path that is not there: FileNotFoundError naming it, for one array and for a group."""
    with pytest.raises(FileNotFoundError, match=re.escape(url)):
        dask_repsim.cka(url, f"s3://{BUCKET}/net.zarr/fc", storage_options=s3_options)
    group = url.rsplit("/", 1)[0]
    if group != f"s3://{BUCKET}/net.zarr":
        with pytest.raises(FileNotFoundError, match=re.escape(group)):
            dask_repsim.compare(group, storage_options=s3_options)
