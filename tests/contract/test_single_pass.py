"""Every chunk of every input is read once per call, whatever the metrics and the grid."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import zarr
from conftest import write_zarr

import dask_repsim as dr
from dask_repsim import METRICS
from dask_repsim.registry import MEASURES


def _chunk_keys(group: zarr.Group) -> set[str]:
    keys = set()
    for name, arr in group.arrays():
        grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks, strict=True)]
        for idx in np.ndindex(*(len(g) for g in grid)):
            keys.add(f"{name}/c/" + "/".join(map(str, idx)))
    return keys


@pytest.fixture
def two_layers(counting_store):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6)).astype("float32")
    y = (x[:, :4] @ rng.normal(size=(4, 5)) + rng.normal(size=(1000, 5))).astype("float32")
    write_zarr(counting_store, "x", x, chunks=(128, 6))
    write_zarr(counting_store, "y", y, chunks=(100, 3))  # other row chunks, split features
    counting_store.reads.clear()
    return counting_store


#: the metrics of the co-moment pass, which reads every chunk once whatever the metrics
COMOMENT = [m for m in METRICS if "covariance" in METRICS[m].paths]


def test_compare_all_comoment_metrics_reads_each_chunk_once(two_layers):
    group = zarr.open_group(two_layers, mode="r")
    with dask.config.set(scheduler="threads"):
        ds = dr.compare(group["x"], group["y"], metrics=COMOMENT)
    reads = two_layers.chunk_reads()
    assert set(reads) == _chunk_keys(group)
    assert max(reads.values()) == 1, {k: v for k, v in reads.items() if v > 1}
    assert set(ds.data_vars) == set(COMOMENT) and len(COMOMENT) >= 10


def test_compare_every_metric_reads_each_chunk_once_per_path_pass(two_layers):
    """Every metric at once: the co-moment pass once, the Gram tiles once (their first chunk
    once more, for the shift), RSA once per row block of its pass, the k-nearest-neighbour
    measures from one shared pass (and second-order cosine's one more), the distance-matrix
    measures and Laplace CKA from one shared pass over the tiles (after the passes that narrow
    down each layer's median, counted with them), aligned cosine's passes: a bound that does not
    grow with the number of metrics."""
    group = zarr.open_group(two_layers, mode="r")
    # the output-layer measures need layers over the same classes, which these are not; rtd
    # holds every sample in memory at a cost of about n^3 (a minute at these 1,000 samples):
    # tests/paths/test_topology.py counts its reads (the input checks' pass, then one read)
    metrics = [m for m in METRICS if not MEASURES[m].same_units and m != "rtd"]
    with dask.config.set(scheduler="threads"):
        ds = dr.compare(group["x"], group["y"], metrics=metrics)
    assert set(ds.data_vars) == set(metrics)
    assert set(ds.attrs["method"].split(" + ")) == {"covariance", "gram", "sample_blocks"}
    everything = two_layers.chunk_reads()
    alone = {}
    for metric in ("rsa", "second_order_cosine", "distance_correlation", "aligned_cosine"):
        # Laplace CKA shares distance correlation's tiles: measured with them, not on its own
        together = ["cka_laplace"] if metric == "distance_correlation" else []
        two_layers.reads.clear()
        with dask.config.set(scheduler="threads"):
            dr.compare(group["x"], group["y"], metrics=[metric, *together])
        alone[metric] = two_layers.chunk_reads()
    for key, count in everything.items():
        passes = {m: reads[key] for m, reads in alone.items()}
        assert count <= 1 + 2 + sum(passes.values()), (key, count, passes)


def test_grid_reads_each_chunk_once(counting_store):
    rng = np.random.default_rng(1)
    for i in range(3):
        write_zarr(counting_store, f"a{i}", rng.normal(size=(600, 4 + i)), chunks=(70 + 20 * i, 3))
    counting_store.reads.clear()
    group = zarr.open_group(counting_store, mode="r")
    ds = dr.compare(group, metrics=["cka", "mean_cca", "pwcca"])  # 3 x 3 grid with itself
    reads = counting_store.chunk_reads()
    assert set(reads) == _chunk_keys(group)
    assert max(reads.values()) == 1
    assert ds.cka.shape == (3, 3)
    np.testing.assert_allclose(np.diag(ds.cka.values), 1.0, atol=1e-12)


def test_pairwise_function_reads_each_chunk_once(two_layers):
    group = zarr.open_group(two_layers, mode="r")
    dr.pwcca(group["x"], group["y"])
    assert max(two_layers.chunk_reads().values()) == 1
    two_layers.reads.clear()
    dr.cka(group["x"], group["x"])  # the same array twice is read once
    reads = two_layers.chunk_reads()
    assert reads and all(k.startswith("x/") for k in reads) and max(reads.values()) == 1
