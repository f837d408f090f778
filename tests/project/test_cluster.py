"""dask_repsim on real Dask clusters: the deploy/ command lines, a worker lost mid-run, TLS.

Every cluster here runs on 127.0.0.1 and is torn down by its fixture or test. The scheduler and
worker processes run the command lines of deploy/compose.yaml (and compose.tls.yaml) verbatim,
with the compose variables pointed at local values.
"""

from __future__ import annotations

import asyncio
import importlib.util
import pickle
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import dask
import numpy as np
import pytest
import references
import zarr
import zarr.storage
from cluster_utils import (
    DEPLOY,
    START_TIMEOUT,
    DaskProcesses,
    SlowStore,
    dask_env,
    moto_s3,
    start_cluster,
)
from conftest import write_zarr
from distributed import Client, LocalCluster, get_task_stream
from distributed.comm import connect
from distributed.system import MEMORY_LIMIT

import dask_repsim
from dask_repsim.engine.moments import Statistics

N_SAMPLES = 2400
LAYER_CHUNKS = {"conv": 200, "fc": 300, "out": 240}  # unequal row chunks: a common refinement


def _layers(n: int, seed: int) -> dict[str, np.ndarray]:
    """Three related layers: a ReLU-like float32 layer with a large mean, a float64 one, and a
    narrow float32 output layer."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 5))
    return {
        "conv": (np.maximum(base @ rng.normal(size=(5, 8)), 0) + 50.0).astype(np.float32),
        "fc": np.tanh(base @ rng.normal(size=(5, 6))) + 0.3 * rng.normal(size=(n, 6)),
        "out": (base[:, :2] @ rng.normal(size=(2, 4)) + rng.normal(size=(n, 4))).astype(
            np.float32
        ),
    }


@pytest.fixture(scope="module")
def activations(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A Zarr group with three layers of N_SAMPLES samples, and the arrays themselves."""
    layers = _layers(N_SAMPLES, seed=7)
    path = tmp_path_factory.mktemp("cluster") / "activations.zarr"
    for name, data in layers.items():
        write_zarr(path, name, data, (LAYER_CHUNKS[name], data.shape[1]))
    return path, layers


@pytest.fixture(scope="module")
def threaded_result(activations):
    """compare() on the local threaded scheduler: the values every cluster must reproduce."""
    path, _ = activations
    with dask.config.set(scheduler="threads"):
        return dask_repsim.compare(str(path))


def _assert_same(result, expected, atol=1e-6):
    assert list(result.data_vars) == list(expected.data_vars)
    assert result.attrs["n_samples"] == expected.attrs["n_samples"]
    for name in expected.data_vars:
        np.testing.assert_allclose(result[name].values, expected[name].values, rtol=0, atol=atol)


def test_threaded_result_matches_the_formulas(activations, threaded_result):
    """The values the clusters are held to are right: the papers' formulas on the whole arrays."""
    _, layers = activations
    formulas = {
        "cka": references.linear_cka,
        "mean_cca": references.mean_cca,
        "r2_cca": references.r2_cca,
        "linear_regression": references.linear_regression,
        "procrustes": references.procrustes,
    }
    symmetric = {"cka", "mean_cca", "r2_cca", "procrustes"}
    names = list(layers)
    for metric, formula in formulas.items():
        for i, a in enumerate(names):
            for b in names[i + 1 :] if metric in symmetric else names[:i] + names[i + 1 :]:
                expected = formula(layers[a], layers[b])
                got = float(threaded_result[metric].sel(layer_a=a, layer_b=b))
                assert got == pytest.approx(expected, abs=1e-6), (metric, a, b)


@pytest.fixture(scope="module")
def deployed_cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes, as deploy/compose.yaml runs them:
    yields the processes and the scheduler file's contents."""
    procs, info = start_cluster(tmp_path_factory.mktemp("deployed"), n_workers=2)
    try:
        with Client(info["address"], timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield procs, info
    finally:
        procs.stop()


class _GatherSpy:
    """Records every key the client fetches from the cluster, and its pickled size."""

    def __init__(self, monkeypatch):
        self.fetched: dict[str, int] = {}
        original = Client._gather_remote

        async def spy(client, direct, local_worker):
            response = await original(client, direct, local_worker)
            for key, value in response.get("data", {}).items():
                self.fetched[str(key)] = len(pickle.dumps(value, protocol=5))
            return response

        monkeypatch.setattr(Client, "_gather_remote", spy)


def test_deployed_cluster_same_numbers_work_on_workers(
    deployed_cluster, activations, threaded_result, monkeypatch
):
    """The deploy/ scheduler and workers give the threaded numbers; every chunk is read and
    reduced on the workers, and the client receives only the final small statistics."""
    procs, info = deployed_cluster
    path, layers = activations
    calls_here = []
    original = Statistics.from_chunk.__func__
    monkeypatch.setattr(
        Statistics,
        "from_chunk",
        classmethod(lambda cls, *a, **k: calls_here.append(1) or original(cls, *a, **k)),
    )
    spy = _GatherSpy(monkeypatch)
    with Client(info["address"], timeout=START_TIMEOUT) as client:
        workers = set(client.scheduler_info()["workers"])
        with get_task_stream(client) as stream:
            result = dask_repsim.compare(str(path))
    _assert_same(result, threaded_result)

    chunk_tasks = [t for t in stream.data if str(t["key"]).startswith("repsim-chunk")]
    boundaries = set()
    for rows in LAYER_CHUNKS.values():
        boundaries.update(range(0, N_SAMPLES, rows))
    assert len(chunk_tasks) == len(boundaries)  # one task per block of the common refinement
    assert {t["worker"] for t in chunk_tasks} <= workers
    assert len({t["worker"] for t in chunk_tasks}) == 2  # both workers took part
    assert calls_here == []  # no chunk statistics computed in the client process

    # What came back to the client: one key, the root of the tree reduction, smaller than a
    # single float64 column of the data (the statistics' size does not depend on n).
    assert len(spy.fetched) == 1, spy.fetched
    (key, size), = spy.fetched.items()
    assert key.startswith("repsim-")
    assert size < 8 * N_SAMPLES
    data_bytes = sum(a.astype(np.float64).nbytes for a in layers.values())
    print(f"client received {size} bytes for {data_bytes} bytes of float64 activations")


def test_deployed_scheduler_serves_health(deployed_cluster):
    """The HTTP endpoint the Kubernetes probes and the compose healthcheck use answers."""
    _, info = deployed_cluster
    url = f"http://127.0.0.1:{info['services']['dashboard']}/health"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read().decode() == "ok"


@pytest.mark.slow
def test_deployed_cluster_reads_object_storage(deployed_cluster, activations, threaded_result):
    """The same activations in S3-compatible storage (moto on 127.0.0.1): the deploy/ workers
    fetch the chunks themselves, with the storage options that travel in the graph, and give
    the threaded numbers of the local copy."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    _, info = deployed_cluster
    _, layers = activations
    with moto_s3("activations") as options:
        store = zarr.storage.FsspecStore.from_url(
            "s3://activations/net.zarr", storage_options=options
        )
        for name, data in layers.items():
            write_zarr(store, name, data, (LAYER_CHUNKS[name], data.shape[1]))
        with Client(info["address"], timeout=START_TIMEOUT) as client:
            workers = set(client.scheduler_info()["workers"])
            with get_task_stream(client) as stream:
                result = dask_repsim.compare("s3://activations/net.zarr", storage_options=options)
    _assert_same(result, threaded_result)
    ran_on = {t["worker"] for t in stream.data if str(t["key"]).startswith("repsim-chunk")}
    assert ran_on and ran_on <= workers


@pytest.mark.slow
def test_local_cluster_processes(activations, threaded_result):
    """An in-process LocalCluster with two worker processes gives the threaded numbers."""
    path, _ = activations
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as stream,
    ):
        result = dask_repsim.compare(str(path))
        workers = set(client.scheduler_info()["workers"])
    _assert_same(result, threaded_result)
    ran_on = {t["worker"] for t in stream.data if str(t["key"]).startswith("repsim-chunk")}
    assert ran_on and ran_on <= workers


@pytest.mark.slow
def test_worker_killed_mid_compare(tmp_path):
    """SIGKILL of one of two `dask worker` process groups while compare() runs: Dask recomputes
    what was lost and the numbers equal the threaded scheduler's."""
    n, rows = 8000, 40  # 200 chunks, each read with 5 ms of latency: seconds of work
    layers = _layers(n, seed=11)
    local = zarr.storage.LocalStore(tmp_path / "big.zarr")
    for name, data in layers.items():
        write_zarr(local, name, data, (rows, data.shape[1]))
    with dask.config.set(scheduler="threads"):
        expected = dask_repsim.compare(str(tmp_path / "big.zarr"))
    assert expected.attrs["n_samples"] == n
    group = zarr.open_group(SlowStore(local.with_read_only(True), delay=0.005), mode="r")

    procs, info = start_cluster(tmp_path, n_workers=2)
    try:
        with Client(info["address"], timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
            victim = procs.procs[1]
            client.get_task_stream()  # installs the scheduler's task-stream plugin
            killed = {}

            def kill_when_started():
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    done = sum(
                        str(t["key"]).startswith("repsim-chunk")
                        for t in client.get_task_stream()
                    )
                    if done >= 20:
                        procs.kill(victim)
                        killed["chunks_done"] = done
                        return
                    time.sleep(0.05)

            killer = threading.Thread(target=kill_when_started, daemon=True)
            killer.start()
            result = dask_repsim.compare(group)
            killer.join(timeout=30)
            stream = client.get_task_stream()
            survivors = set(client.scheduler_info()["workers"])
    finally:
        procs.stop()

    assert "chunks_done" in killed, "compare() finished before 20 chunks were seen; no kill"
    assert killed["chunks_done"] < n // rows, "the kill landed after every chunk was done"
    assert victim.returncode is not None
    assert len(survivors) == 1
    _assert_same(result, expected)
    chunk_runs = sum(str(t["key"]).startswith("repsim-chunk") for t in stream)
    print(
        f"killed after {killed['chunks_done']} of {n // rows} chunks; "
        f"{chunk_runs} chunk task runs in all ({chunk_runs - n // rows} recomputed)"
    )


def _client_snippet():
    """deploy/tls/client.py, the client-side TLS example, as a module."""
    spec = importlib.util.spec_from_file_location("tls_client", DEPLOY / "tls" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_certs(directory: Path, ca) -> None:
    """The files deploy/tls/make-certs.sh writes, from a trustme CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(directory / "ca.pem")
    for role, names in (("node", ["127.0.0.1", "localhost"]), ("client", ["repsim-client"])):
        cert = ca.issue_cert(*names)
        cert.cert_chain_pems[0].write_to_path(directory / f"{role}.pem")
        cert.private_key_pem.write_to_path(directory / f"{role}-key.pem")


def _tls_context(ca_file: Path, cert_dir: Path | None = None) -> ssl.SSLContext:
    """A client TLS context as distributed builds one, with or without a client certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.check_hostname = False  # distributed checks the CA signature, not host names
    if cert_dir is not None:
        ctx.load_cert_chain(cert_dir / "client.pem", cert_dir / "client-key.pem")
    return ctx


def _identity(address: str, ctx: ssl.SSLContext) -> dict:
    """Ask the scheduler at ``address`` who it is, over a TLS connection made with ``ctx``."""

    async def ask():
        comm = await connect(address, timeout=3, ssl_context=ctx)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    return asyncio.run(ask())


@pytest.mark.slow
def test_tls_cluster(tmp_path, activations, threaded_result):
    """Mutual TLS with deploy/compose.tls.yaml's command lines: a client holding a certificate
    of the cluster's CA computes the threaded numbers; clients without one are refused."""
    trustme = pytest.importorskip("trustme")
    certs = tmp_path / "certs"
    _write_certs(certs, trustme.CA())
    procs, info = start_cluster(
        tmp_path,
        n_workers=1,
        files=("compose.yaml", "compose.tls.yaml"),
        DASK_TLS_CA_FILE=str(certs / "ca.pem"),
        DASK_TLS_CERT=str(certs / "node.pem"),
        DASK_TLS_KEY=str(certs / "node-key.pem"),
    )
    path, _ = activations
    try:
        address = info["address"]
        assert address.startswith("tls://127.0.0.1:")
        security = _client_snippet().tls_security(certs)
        with Client(address, security=security, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(1, timeout=START_TIMEOUT)
            assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
            result = dask_repsim.compare(str(path))
        _assert_same(result, threaded_result)

        # The scheduler itself turns away a TLS client that trusts the CA but shows no
        # certificate; the same handshake with the client certificate is let in.
        bare = _tls_context(certs / "ca.pem")
        with pytest.raises(OSError) as refused_bare:
            _identity(address, bare)
        print(f"no client certificate: {type(refused_bare.value).__name__}")
        assert _identity(address, _tls_context(certs / "ca.pem", certs))["type"] == "Scheduler"

        impostor = tmp_path / "impostor"
        _write_certs(impostor, trustme.CA())  # a certificate, but from another CA
        refused = {
            "certificate of another CA": (address, _client_snippet().tls_security(impostor)),
            "plain TCP": (address.replace("tls://", "tcp://"), None),
        }
        for why, (target, sec) in refused.items():
            start = time.monotonic()
            with pytest.raises(OSError):
                Client(target, security=sec, timeout=3)
            elapsed = time.monotonic() - start
            print(f"{why}: refused after {elapsed:.1f} s")
            assert elapsed < 15, f"{why}: refused only after {elapsed:.1f} s"
    finally:
        procs.stop()


def test_jobqueue_worker_command_joins(tmp_path, activations, threaded_result):
    """The worker command line dask-jobqueue renders from deploy/hpc/jobqueue.yaml, run as the
    SLURM job would run it, starts a worker that joins and computes."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    spec = importlib.util.spec_from_file_location(
        "slurm_cluster", DEPLOY / "hpc" / "slurm_cluster.py"
    )
    slurm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slurm)
    path, _ = activations
    procs = DaskProcesses(tmp_path, dask_env(TMPDIR=str(tmp_path)))  # the job's $TMPDIR
    try:
        with (
            slurm.jobqueue_config(),
            dask_jobqueue.SLURMCluster(
                scheduler_options={"host": "127.0.0.1", "dashboard_address": None}
            ) as cluster,
        ):
            command = cluster.job_script().strip().splitlines()[-1]
            cores = dask.config.get("jobqueue.slurm.cores")
            memory = dask.config.get("jobqueue.slurm.memory")
            procs.start(["bash", "-c", command], "slurm-job")
            with Client(cluster, timeout=START_TIMEOUT) as client:
                client.wait_for_workers(1, timeout=START_TIMEOUT)
                (worker,) = client.scheduler_info()["workers"].values()
                result = dask_repsim.compare(str(path))
    finally:
        procs.stop()
    assert worker["nthreads"] == cores
    # distributed caps a worker's memory limit at what the machine has
    assert worker["memory_limit"] == min(dask.utils.parse_bytes(memory), MEMORY_LIMIT)
    _assert_same(result, threaded_result)
