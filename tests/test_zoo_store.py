"""Gram stores and growing zoos: compare_zoo(gram_store=) keeps each layer's centred Gram
matrix, and grow_zoo adds networks by computing only the cells that involve them, from the old
networks' stored Gram matrices and never their activations.

The references are written here: each layer's centred Gram matrix K = Xc Xc^T in numpy, linear
CKA = <K, L> / (||K|| ||L||) (Kornblith et al. 2019).
"""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.storage
from conftest import CountingStore

import dask_repsim as dr
from dask_repsim.paths.gram import store as kept

N = 300
#: four old networks and a fifth, the growth: wide layers (p > n) and a narrow one, in name
#: order (a zarr group's layers come in name order)
WIDTHS = {"block": 640, "conv": 1_200, "fc": 24}
NETWORKS = [f"seed{s}" for s in range(5)]
METRICS = ["cka", "cka_debiased"]
INPUTS = np.random.default_rng(0).normal(size=(N, 12))


def _network(seed: int) -> dict[str, np.ndarray]:
    """Related layers: a shared signal through each seed's weights, ReLU, offsets."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for layer, width in WIDTHS.items():
        x = INPUTS @ rng.normal(size=(12, width)) + 0.8 * rng.normal(size=(N, width))
        out[layer] = (np.maximum(x, 0) + 2.0).astype(np.float32)
    return out


DATA = {net: _network(s) for s, net in enumerate(NETWORKS)}
LABELS = [f"{net}/{layer}" for net in NETWORKS for layer in WIDTHS]


def _write(path, layers: dict[str, np.ndarray]) -> None:
    """A network as a capture writes it: a group, one array per layer, the sample ids."""
    root = zarr.open_group(path, mode="w")
    root.create_array("sample", data=np.arange(N), dimension_names=("sample",))
    for layer, x in layers.items():
        arr = root.create_array(layer, shape=x.shape, chunks=(64, x.shape[1]), dtype=x.dtype,
                                dimension_names=("sample", f"{layer}_unit"))
        arr[...] = x


@pytest.fixture
def stores(tmp_path) -> dict[str, str]:
    paths = {net: str(tmp_path / f"{net}.zarr") for net in NETWORKS}
    for net, path in paths.items():
        _write(path, DATA[net])
    return paths


def _counted(paths: dict[str, str], nets) -> tuple[dict, dict]:
    """Each network's group through a CountingStore, and the stores."""
    counting = {n: CountingStore(zarr.storage.LocalStore(paths[n])) for n in nets}
    return counting, {n: zarr.open_group(s, mode="r") for n, s in counting.items()}


def _chunk_reads(counting: dict) -> dict[str, int]:
    return {n: sum(s.chunk_reads().values()) for n, s in counting.items()}


def _centred_gram(x: np.ndarray) -> np.ndarray:
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    return xc @ xc.T


GRAMS = {f"{net}/{layer}": _centred_gram(x) for net in NETWORKS
         for layer, x in DATA[net].items()}


def _reference_cka(labels: list[str]) -> np.ndarray:
    norms = {k: np.sqrt(np.vdot(GRAMS[k], GRAMS[k])) for k in labels}
    return np.array([[np.vdot(GRAMS[a], GRAMS[b]) / (norms[a] * norms[b]) for b in labels]
                     for a in labels])


@pytest.mark.parametrize("budget", [None, "6MB"], ids=["whole Gram matrices", "row-block tiles"])
def test_growth_equals_the_full_recomputation_and_reads_no_old_network(stores, tmp_path,
                                                                       budget, monkeypatch):
    grams = str(tmp_path / "grams.zarr")
    if budget is not None:  # stored matrices of several row chunks, formed from tiles
        monkeypatch.setattr(kept, "CHUNK_BYTES", 8 * N * 50)
    with dask.config.set({"repsim.memory-budget": budget}):
        old_counting, old = _counted(stores, NETWORKS[:4])
        ds = dr.compare_zoo(old, metrics=METRICS, gram_store=grams)
        assert ds.attrs["gram_formed"] == 12 and ds.attrs["gram_read"] == 0
        assert (ds.attrs["n_tiles"] > 1) == (budget is not None)
        before = _chunk_reads(old_counting)
        # the old networks' data moved away: any read of them would fail, by any route
        for net in NETWORKS[:4]:
            os.rename(stores[net], stores[net] + ".away")
        new_counting, new = _counted(stores, NETWORKS[4:])
        gram_counting = CountingStore(zarr.storage.LocalStore(grams))
        grown = dr.grow_zoo(ds, new, gram_store=gram_counting)
        for net in NETWORKS[:4]:
            os.rename(stores[net] + ".away", stores[net])
        assert _chunk_reads(old_counting) == before  # no chunk of the 4 old stores read
        # the new network's chunks once each (twice for a layer cut into column ranges),
        # its sample ids once per time they are opened
        reads = new_counting["seed4"].chunk_reads()
        assert all(v <= 2 for k, v in reads.items() if not k.startswith("sample/"))
        # the old Gram matrices read in row blocks, each stored chunk once
        stored = gram_counting.chunk_reads()
        assert stored and max(stored.values()) == 1
        assert len(stored) == 15 * -(-N // kept.chunk_rows(N))
        assert {k.split("/c/")[0] for k in stored} == set(LABELS)
        _, every = _counted(stores, NETWORKS)
        full = dr.compare_zoo(every, metrics=METRICS, method="gram")
    assert [str(v) for v in grown.a.values] == LABELS == [str(v) for v in full.b.values]
    assert list(grown.network_a.values) == [n for n in NETWORKS for _ in WIDTHS]
    assert grown.attrs["networks_b"] == ", ".join(NETWORKS)
    assert grown.attrs["grown_by"] == "seed4" and grown.attrs["self_comparison"] == 1
    assert grown.attrs["gram_formed"] == 3 and grown.attrs["gram_read"] == 12
    for metric in METRICS:
        assert float(abs(grown[metric] - full[metric]).max()) <= 1e-12
        old_cells = grown[metric].values[:12, :12]
        assert (old_cells == ds[metric].values).all()  # copied, not recomputed
    assert np.abs(grown.cka.values - _reference_cka(LABELS)).max() <= 1e-8
    assert (grown.cka.values == grown.cka.values.T).all()


def test_the_store_holds_each_layers_centred_gram_matrix(stores, tmp_path):
    grams = str(tmp_path / "grams.zarr")
    dr.compare_zoo({net: stores[net] for net in NETWORKS[:2]}, metrics=["cka"],
                   gram_store=grams)
    group = zarr.open_group(grams, mode="r")
    for label in LABELS[:6]:
        array = group[label]
        assert array.shape == (N, N) and array.dtype == np.float64
        assert array.chunks == (kept.chunk_rows(N), N)
        k = array[...]
        assert np.abs(k - GRAMS[label]).max() <= 1e-9 * np.abs(GRAMS[label]).max()
        info = array.attrs[kept.GRAM_ATTR]
        net, layer = label.split("/")
        assert info["complete"] and info["n"] == N and info["width"] == WIDTHS[layer]
        assert info["dtype"] == "float32" and info["samples"] == [str(i) for i in range(N)]
        assert info["fingerprint"] == kept.digest(info)


def test_a_later_comparison_reads_the_stored_grams_not_the_activations(stores, tmp_path):
    grams = str(tmp_path / "grams.zarr")
    first = dr.compare_zoo({n: stores[n] for n in NETWORKS[:3]}, metrics=METRICS,
                           gram_store=grams)
    counting, nets = _counted(stores, NETWORKS[:3])
    again = dr.compare_zoo(nets, metrics=METRICS, gram_store=grams)
    assert again.attrs["gram_formed"] == 0 and again.attrs["gram_read"] == 9
    for net in NETWORKS[:3]:
        reads = counting[net].chunk_reads()  # the first and last row chunks: the fingerprint
        assert {k.rsplit("/c/", 1)[0] for k in reads} <= {"sample", *WIDTHS}
        assert all(k.endswith(("/c/0/0", f"/c/{-(-N // 64) - 1}/0", "/c/0")) for k in reads)
    for metric in METRICS:
        assert float(abs(again[metric] - first[metric]).max()) <= 1e-12
    assert again.attrs["gram_digests"] == first.attrs["gram_digests"]


def test_a_stale_gram_matrix_is_detected(stores, tmp_path):
    grams = str(tmp_path / "grams.zarr")
    old = {n: stores[n] for n in NETWORKS[:2]}
    ds = dr.compare_zoo(old, metrics=METRICS, gram_store=grams)
    changed = {**DATA["seed1"], "conv": DATA["seed1"]["conv"][:, ::-1].copy()}
    _write(stores["seed1"], changed)  # seed1 captured again: other activations
    with pytest.warns(dr.RepsimWarning, match=r"seed1/conv formed from other data"):
        again = dr.compare_zoo(old, metrics=METRICS, gram_store=grams)
    assert again.attrs["gram_formed"] == 1 and again.attrs["gram_read"] == 5
    fresh = dr.compare_zoo({"seed0": DATA["seed0"], "seed1": changed}, metrics=METRICS)
    for metric in METRICS:
        assert float(abs(again[metric] - fresh[metric]).max()) <= 1e-12
    # the first result's Gram matrix of seed1/conv is gone from the store: it cannot grow
    with pytest.raises(ValueError, match=r"seed1/conv.*formed from other data than this "
                                         r"result's"):
        dr.grow_zoo(ds, {"seed4": stores["seed4"]}, gram_store=grams)
    grown = dr.grow_zoo(again, {"seed4": stores["seed4"]})  # the store's own path
    assert float(grown.cka.sel(a="seed1/conv", b="seed4/block")) == pytest.approx(
        dr.cka(changed["conv"], DATA["seed4"]["block"]), abs=1e-12)


def test_samples_pair_by_label_with_the_stored_ones(stores, tmp_path):
    grams = str(tmp_path / "grams.zarr")
    ds = dr.compare_zoo({n: stores[n] for n in NETWORKS[:2]}, metrics=["cka"],
                        gram_store=grams)
    order = np.random.default_rng(3).permutation(N)
    shuffled = xr.Dataset({layer: (("sample", f"{layer}_unit"), x[order])
                           for layer, x in DATA["seed4"].items()}, coords={"sample": order})
    grown = dr.grow_zoo(ds, {"seed4": shuffled})
    labels = LABELS[:6] + LABELS[-3:]
    assert np.abs(grown.cka.values - _reference_cka(labels)).max() <= 1e-8
    with pytest.raises(ValueError, match="holds other samples than the zoo's Gram matrices"):
        dr.grow_zoo(ds, {"seed5": shuffled.isel(sample=slice(1, None))})
    bigger = xr.concat([shuffled, shuffled.isel(sample=[0]).assign_coords(sample=[N])],
                       "sample")
    with pytest.raises(ValueError, match="join='inner' drops the others"):
        dr.grow_zoo(ds, {"seed5": bigger})
    inner = dr.grow_zoo(ds, {"seed5": bigger}, join="inner")
    assert np.abs(inner.cka.values - _reference_cka(labels)).max() <= 1e-8


def test_the_grown_result_round_trips_through_netcdf(stores, tmp_path):
    ds = dr.compare_zoo({n: stores[n] for n in NETWORKS[:2]}, metrics=METRICS,
                        gram_store=str(tmp_path / "grams.zarr"))
    grown = dr.grow_zoo(ds, {"seed2": stores["seed2"]})
    twice = dr.grow_zoo(grown, {"seed3": DATA["seed3"]})
    assert twice.attrs["grown_by"] == "seed2, seed3"
    for result in (grown, twice):
        path = tmp_path / "grown.nc"
        result.to_netcdf(path)
        with xr.open_dataset(path) as back:
            assert back.identical(result)
    assert np.abs(twice.cka.values - _reference_cka(LABELS[:12])).max() <= 1e-8
    assert dr.network_similarity(twice, "cka").shape == (4, 4)


def test_what_a_gram_store_cannot_do_is_an_error(stores, tmp_path):
    grams = str(tmp_path / "grams.zarr")
    zoo = {n: DATA[n] for n in NETWORKS[:2]}
    for metrics in (["cka_rbf"], ["cka", "mean_cca"]):
        with pytest.raises(ValueError, match="gram_store= keeps each layer's linear Gram"):
            dr.compare_zoo(zoo, metrics=metrics, gram_store=grams)
    with pytest.raises(ValueError, match="not method='covariance'"):
        dr.compare_zoo(zoo, metrics=["cka"], method="covariance", gram_store=grams)
    with pytest.raises(ValueError, match="interval= is not available with gram_store="):
        dr.compare_zoo(zoo, metrics=["cka"], interval="jackknife", gram_store=grams)
    with pytest.raises(ValueError, match="permutations= is not available with gram_store="):
        dr.compare_zoo(zoo, metrics=["cka"], permutations=5, gram_store=grams)
    plain = dr.compare_zoo(zoo, metrics=["cka"])
    with pytest.raises(ValueError, match="computed without gram_store="):
        dr.grow_zoo(plain, {"seed4": DATA["seed4"]}, gram_store=grams)
    ds = dr.compare_zoo(zoo, metrics=["cka"], gram_store=grams)
    with pytest.raises(ValueError, match="not a selection of it"):
        dr.grow_zoo(dr.select_zoo(ds, network_a="seed0"), {"seed4": DATA["seed4"]})
    with pytest.raises(ValueError, match="already holds the networks seed1"):
        dr.grow_zoo(ds, {"seed1": DATA["seed4"]})
    with pytest.raises(dr.SampleCountError, match="same samples"):
        dr.grow_zoo(ds, {"seed4": {k: x[:-1] for k, x in DATA["seed4"].items()}})
    two = dr.compare_zoo(zoo, {"seed4": DATA["seed4"]}, metrics=["cka"], gram_store=grams)
    with pytest.raises(ValueError, match="compares two zoos"):
        dr.grow_zoo(two, {"seed3": DATA["seed3"]})
    with pytest.raises(ValueError, match="both called 'seed0/block'"):
        dr.compare_zoo(zoo, {"seed0": DATA["seed4"]}, metrics=["cka"], gram_store=grams)


def test_reading_stays_within_the_memory_budget():
    with dask.config.set({"repsim.memory-budget": 2**30, "scheduler": "threads",
                          "num_workers": 2}):
        assert kept.read_rows(2000, 15, 524) == 524
        # a budget that holds few rows: blocks of under a chunk
        with dask.config.set({"repsim.memory-budget": 2 * (8 * 2000 * 524 + 8 * 2000 * 15 * 7)}):
            assert kept.read_rows(2000, 15, 524) == 7
        with dask.config.set({"repsim.memory-budget": 2**20}), pytest.raises(
                ValueError, match="raise dask config 'repsim.memory-budget'"):
            kept.read_rows(2000, 15, 524)
