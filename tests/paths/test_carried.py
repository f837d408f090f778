"""The sample-space grid when the workers may not share a disk: the cluster carries the row
blocks and the whole Gram matrices (dask_repsim.paths.gram.carried), each stored chunk is
decoded at most twice however many row blocks, and the values are those of the grid that keeps
them on local scratch and of numpy's formulas."""

from __future__ import annotations

import os
import signal
import threading
import time

import dask
import numpy as np
import pytest
import zarr
import zarr.storage
from cluster_utils import LoggedStore
from conftest import CountingStore, write_zarr

import dask_repsim as dr
from dask_repsim.paths.gram import samplespace

METRICS = ["cka", "cka_debiased"]


def _centred_gram(x: np.ndarray) -> np.ndarray:
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    return xc @ xc.T


def _reference(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """Kornblith et al. (2019): linear CKA from centred Gram matrices; debiased with Song et
    al.'s (2012) unbiased HSIC."""
    k, g = _centred_gram(x), _centred_gram(y)
    n = len(k)
    if metric == "cka_debiased":
        def hsic(a, b):
            a, b = a.copy(), b.copy()
            np.fill_diagonal(a, 0)
            np.fill_diagonal(b, 0)
            one = np.ones(n)
            return (np.trace(a @ b) + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2))
                    - 2 / (n - 2) * (one @ a @ b @ one)) / (n * (n - 3))
    else:
        def hsic(a, b):
            h = np.eye(n) - 1 / n
            return np.trace(a @ h @ b @ h)
    return float(hsic(k, g) / np.sqrt(hsic(k, k) * hsic(g, g)))


def _layers(tmp_path, store_of, n=320, widths=(40, 90, 7), chunk=32):
    rng = np.random.default_rng(21)
    path = tmp_path / "net.zarr"
    data = {f"l{k}": rng.normal(size=(n, p)) + (k == 1) * 100.0 for k, p in enumerate(widths)}
    data["l2"] = np.tanh(data["l0"][:, :7]) + 0.1 * data["l2"]  # a related pair
    for name, x in data.items():
        write_zarr(zarr.storage.LocalStore(path), name, x, chunks=(chunk, x.shape[1]))
    store = store_of(zarr.storage.LocalStore(path, read_only=True))
    return zarr.open_group(store, mode="r"), store, data


@pytest.mark.parametrize("budget", [2**31, 2**20], ids=["whole", "tiles"])
def test_carried_equals_scratch_and_numpy(tmp_path, monkeypatch, budget):
    """Threads with the shared-disk check forced off: every chunk decoded at most twice (once,
    and the first chunk of each layer once more when there are row blocks), every value as on
    scratch (<= 1e-12) and as numpy's formulas (<= 1e-9)."""
    group, store, data = _layers(tmp_path, CountingStore)
    config = {"scheduler": "threads", "num_workers": 2, "repsim.memory-budget": budget}
    with dask.config.set(config):
        on_scratch = dr.compare(group, metrics=METRICS, method="gram")
    monkeypatch.setattr(samplespace, "workers_share_this_machine", lambda: False)
    store.reads.clear()
    with dask.config.set(config):
        carried = dr.compare(group, metrics=METRICS, method="gram")
    reads = store.chunk_reads()
    assert len(reads) == 3 * 320 // 32  # every chunk
    if budget == 2**20:
        assert carried.attrs["n_tiles"] >= 6 and max(reads.values()) == 2
        assert sorted(k for k, v in reads.items() if v == 2) == [f"l{k}/c/0/0" for k in range(3)]
    else:  # each chunk read once per column range of its layer (l1 is cut in two)
        plan = samplespace.whole_plan(320, [40, 90, 7], 8, budget, 2, 2)
        units = {f"l{u.layer}": 0 for b in plan for u in b}
        for u in (u for b in plan for u in b):
            units[f"l{u.layer}"] += 1
        assert carried.attrs["n_tiles"] == 1 and units == {"l0": 1, "l1": 2, "l2": 1}
        assert all(v == units[k.split("/")[0]] for k, v in reads.items()), reads
    for metric in METRICS:
        if budget == 2**31:  # the same slabs, held by the cluster or read from scratch
            assert np.array_equal(carried[metric].values, on_scratch[metric].values)
        else:  # carried tiles hold twice the blocks, so they have fewer rows: other sums
            assert np.abs(carried[metric].values - on_scratch[metric].values).max() <= 1e-12
        for a in data:
            for b in data:
                ref = _reference(data[a], data[b], metric)
                got = float(carried[metric].sel(layer_a=a, layer_b=b))
                assert abs(got - ref) <= 1e-9, (metric, a, b, got, ref)


def test_carried_whole_matrices_of_a_layer_cut_by_columns(tmp_path, monkeypatch):
    """A layer wider than a task's share is cut into column ranges whose partial Gram matrices
    the cluster adds slab by slab: the values of the scratch run."""
    group, store, data = _layers(tmp_path, CountingStore, widths=(400, 20, 7))
    config = {"scheduler": "threads", "num_workers": 2, "repsim.memory-budget": 2**30}
    assert sorted(u.width for b in samplespace.whole_plan(320, [400, 20, 7], 8, 2**30, 2, 2)
                  for u in b) == [7, 20, 200, 200]
    with dask.config.set(config):
        on_scratch = dr.compare(group, metrics=METRICS, method="gram")
    monkeypatch.setattr(samplespace, "workers_share_this_machine", lambda: False)
    with dask.config.set(config):
        carried = dr.compare(group, metrics=METRICS, method="gram")
    for metric in METRICS:
        assert np.array_equal(carried[metric].values, on_scratch[metric].values)
    ref = _reference(data["l0"], data["l1"], "cka")
    assert abs(float(carried.cka.sel(layer_a="l0", layer_b="l1")) - ref) <= 1e-9


@pytest.mark.parametrize("budget", [2**31, 2**20], ids=["whole", "tiles"])
def test_what_needs_a_shared_scratch_says_so(tmp_path, monkeypatch, budget):
    """RBF CKA's distances (and a Gram store's row-block tiles) live in the scratch directory:
    without one every worker sees, the grid stops before reading anything, naming the
    setting."""
    group, store, _ = _layers(tmp_path, CountingStore)
    monkeypatch.setattr(samplespace, "workers_share_this_machine", lambda: False)
    store.reads.clear()
    with dask.config.set({"scheduler": "threads", "repsim.memory-budget": budget}):
        with pytest.raises(ValueError, match=r"RBF CKA keeps files in a scratch directory that "
                                             r"every worker must see.*'repsim.scratch'"):
            dr.compare(group, metrics=["cka", "cka_rbf"], method="gram")
        with pytest.raises(ValueError, match="RBF CKA keeps files"):
            dr.cka(group["l0"], group["l1"], kernel="rbf")
    assert not store.chunk_reads()
    with dask.config.set({"scheduler": "threads", "repsim.memory-budget": 2**20}):
        with pytest.raises(ValueError, match="a Gram store of row-block tiles keeps files"):
            dr.compare_zoo({"a": group, "b": group}, metrics=["cka"], method="gram",
                           gram_store=str(tmp_path / "grams.zarr"))


def _cluster_compare(group, metrics, kill_after=None):
    """compare on a LocalCluster of 2 worker processes with 1.5 GB each; with
    ``kill_after`` (a task-name prefix), one worker process is killed once a task of that
    name has finished. Returns the result, whether the workers are the ones that started,
    and whether a worker was killed."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1.5GB", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        before = set(client.scheduler_info()["workers"])
        killed = threading.Event()
        if kill_after is not None:
            pids = client.run(os.getpid)
            victim = pids[sorted(pids)[1]]
            client.get_task_stream()  # installs the scheduler's task-stream plugin

            def kill():
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not killed.is_set():
                    if any(str(t["key"]).startswith(kill_after)
                           for t in client.get_task_stream()):
                        os.kill(victim, signal.SIGKILL)
                        killed.set()
                    time.sleep(0.02)

            threading.Thread(target=kill, daemon=True).start()
        ds = dr.compare(group, metrics=metrics, method="gram",
                        **({"sigma": 0.5} if "cka_rbf" in metrics else {}))
        after = set(client.scheduler_info()["workers"])
    return ds, before == after, killed.is_set()


@pytest.mark.slow
@pytest.mark.parametrize("budget", [None, "6MB"], ids=["whole", "tiles"])
def test_on_worker_processes_without_a_shared_disk(tmp_path, monkeypatch, budget):
    """Worker processes (LocalCluster, 1.5 GB each), the shared-disk check forced off: each
    chunk decoded at most twice, counted in every process; no worker restarted; the values of
    the threaded run."""
    metrics = ["cka", "cka_debiased"]
    log = tmp_path / "reads.log"
    group, store, data = _layers(tmp_path, lambda s: LoggedStore(s, log), n=600,
                                 widths=(300, 900, 7), chunk=50)
    with dask.config.set(scheduler="threads", num_workers=2):
        local = dr.compare(group, metrics=metrics, method="gram")
    os.remove(log)
    monkeypatch.setattr(samplespace, "workers_share_this_machine", lambda: False)
    with dask.config.set({"repsim.memory-budget": budget}):
        ds, same_workers, _ = _cluster_compare(group, metrics)
    assert same_workers
    reads = store.reads()
    assert len(reads) == 3 * 600 // 50 and max(reads.values()) <= 2, reads
    assert (ds.attrs["n_tiles"] > 1) == (budget is not None)
    for metric in metrics:  # other tiles than the threaded run's: the same sums, rounded apart
        assert np.abs(ds[metric].values - local[metric].values).max() <= 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("carried", [False, True], ids=["scratch_whole", "carried_tiles"])
def test_worker_killed_mid_grid(tmp_path, monkeypatch, carried):
    """SIGKILL of one of two worker processes once a Gram task has finished, with the whole
    Gram matrices on scratch or with the row blocks carried by the cluster: dask recomputes
    what was lost, and the values are those of the same cluster without the kill, bit for
    bit (the grid shares its rows among the task slots it counted at the start)."""
    metrics = ["cka", "cka_debiased"] + ["cka_rbf"] * (not carried)
    group, _, _ = _layers(tmp_path, lambda s: LoggedStore(s, tmp_path / "reads.log",
                                                          delay=0.02),
                          n=600, widths=(300, 900, 7), chunk=20)
    if carried:
        monkeypatch.setattr(samplespace, "workers_share_this_machine", lambda: False)
    with dask.config.set({"repsim.memory-budget": "6MB" if carried else None}):
        local, _, _ = _cluster_compare(group, metrics)
        ds, _, killed = _cluster_compare(group, metrics,
                                         kill_after="_block" if carried else "_unit_grams")
    assert killed
    assert (ds.attrs["n_tiles"] > 1) == carried
    for metric in local.data_vars:
        assert np.array_equal(ds[metric].values, local[metric].values), metric
