"""Running the deploy/ command lines on this machine: real ``dask scheduler`` / ``dask worker``
processes on 127.0.0.1, started from deploy/compose*.yaml with their ``${VAR:-default}``
variables pointed at local values, and a zarr store that makes chunk reads slow.

Worker processes unpickle :class:`SlowStore` from the graph, so this module must be importable
by them: :func:`dask_env` puts this directory on their ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
import zarr.storage

TESTS = Path(__file__).resolve().parent
DEPLOY = TESTS.parent / "deploy"

#: seconds for a process to come up on a loaded two-core machine
START_TIMEOUT = 60

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\})"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose-file interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``."""

    def substitute(match: re.Match) -> str:
        name = match.group("name")
        if name is None:
            return "$"
        op, default = match.group("op"), match.group("default")
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        if name not in env:
            raise KeyError(f"compose variable {name} has no value and no default")
        return env[name]

    return _VARIABLE.sub(substitute, value)


def compose_services(files: Sequence[str] = ("compose.yaml",)) -> dict:
    """The services of deploy/ compose files merged in order (later files override keys)."""
    services: dict = {}
    for name in files:
        loaded = yaml.safe_load((DEPLOY / name).read_text())
        for service, spec in loaded.get("services", {}).items():
            services.setdefault(service, {}).update(spec)
    return services


def compose_command(
    service: str, env: Mapping[str, str], files: Sequence[str] = ("compose.yaml",)
) -> list[str]:
    """The ``command`` of a compose service, with its variables taken from ``env``."""
    command = compose_services(files)[service]["command"]
    return [interpolate(str(arg), env) for arg in command]


def dask_env(**variables: str) -> dict[str, str]:
    """The processes' environment: the venv's ``dask`` first on PATH, this directory importable,
    plus ``variables``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    # One BLAS thread per dask thread: two workers share this machine's cores.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(variables)
    return env


class DaskProcesses:
    """``dask scheduler`` and ``dask worker`` processes, each in its own process group.

    A process group holds a ``dask worker`` (the nanny) and the worker process it spawns, so that
    :meth:`kill` takes down both at once, as when a node or container dies.
    """

    def __init__(self, log_dir: Path, env: Mapping[str, str]):
        self.log_dir = Path(log_dir)
        self.env = dict(env)
        self.procs: list[subprocess.Popen] = []
        self._names: dict[int, str] = {}

    def start(self, command: Sequence[str], name: str) -> subprocess.Popen:
        """Start ``command`` in a new session (its own process group), output to NAME.log."""
        with open(self.log_dir / f"{name}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                list(command),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._names[proc.pid] = name
        self.procs.append(proc)
        return proc

    def wait_for_scheduler_file(self, path: Path, proc: subprocess.Popen, timeout: float) -> dict:
        """The scheduler's identity from its scheduler file, once it has written one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {proc.returncode}:\n{self.logs()}")
            try:
                info = json.loads(Path(path).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.1)
                continue
            return info
        raise TimeoutError(f"no scheduler file after {timeout} s:\n{self.logs()}")

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the process group: no clean shutdown, no goodbye to the scheduler."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM every group, then SIGKILL what is left after a grace period."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group too: a worker whose nanny exited first may linger
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    def logs(self) -> str:
        """The tail of every process's log, for failure messages."""
        parts = []
        for proc in self.procs:
            name = self._names[proc.pid]
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} (exit {proc.poll()}) ---\n{text[-3000:]}")
        return "\n".join(parts)


def start_cluster(tmp_path: Path, n_workers: int, files=("compose.yaml",), **variables):
    """A scheduler and workers from the compose command lines.

    Returns the :class:`DaskProcesses` and the contents of the scheduler file.

    ``variables`` are compose interpolation variables (as in a shell or ``.env`` file), not the
    processes' environment.
    """
    scheduler_file = tmp_path / "scheduler.json"
    variables = {
        "DASK_SCHEDULER_HOST": "127.0.0.1",
        "DASK_SCHEDULER_PORT": "0",
        "DASK_DASHBOARD_ADDRESS": "127.0.0.1:0",
        "DASK_SCHEDULER_FILE": str(scheduler_file),
        "DASK_WORKER_HOST": "127.0.0.1",
        "DASK_WORKER_NTHREADS": "1",
        "DASK_WORKER_MEMORY": "2GiB",
        **variables,
    }
    procs = DaskProcesses(tmp_path, dask_env())
    try:
        scheduler = procs.start(compose_command("scheduler", variables, files), "scheduler")
        info = procs.wait_for_scheduler_file(scheduler_file, scheduler, START_TIMEOUT)
        # The workers find the scheduler at the address its scheduler file gives.
        variables["DASK_SCHEDULER_ADDRESS"] = info["address"]
        for i in range(n_workers):
            procs.start(compose_command("worker", variables, files), f"worker-{i}")
    except BaseException:
        procs.stop()
        raise
    return procs, info


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 at a free port, in a thread, with ``bucket`` created.

    Yields the ``storage_options`` (endpoint, key, secret) that s3fs needs to reach it. moto
    keeps its buckets per process, not per server: they are emptied on entry and on exit.
    """
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=10).close()
        options = {"endpoint_url": endpoint, "key": "repsim-key", "secret": "repsim-secret"}
        s3fs.S3FileSystem(**options, skip_instance_cache=True).mkdir(bucket)
        yield options
        urllib.request.urlopen(reset, timeout=10).close()
    finally:
        server.stop()


class SlowStore(zarr.storage.WrapperStore):
    """A zarr store whose chunk reads each take at least ``delay`` seconds longer.

    It stands in for a slow disk or network so that a computation lasts long enough to be
    interrupted; metadata reads are not delayed.
    """

    def __init__(self, store, delay: float = 0.01):
        super().__init__(store)
        self.delay = delay

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in f"/{key}":
            await asyncio.sleep(self.delay)  # latency, as of object storage
        return await super().get(key, prototype, byte_range)

    def _with_store(self, store):
        return type(self)(store, self.delay)

    def __getstate__(self):
        return {"store": self._store, "delay": self.delay}

    def __setstate__(self, state):
        self.__init__(state["store"], state["delay"])


class LoggedStore(zarr.storage.WrapperStore):
    """A zarr store that appends the key of every chunk read to the file ``log``, one line
    each, from whichever process reads it: chunk reads counted across worker processes.
    ``delay``: seconds added to each chunk read (as :class:`SlowStore`)."""

    def __init__(self, store, log: str, delay: float = 0.0):
        super().__init__(store)
        self.log, self.delay = str(log), delay

    def _note(self, key: str) -> None:
        if "/c/" in f"/{key}":
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{key}\n".encode())  # one write: lines do not interleave
            finally:
                os.close(fd)

    async def get(self, key, prototype, byte_range=None):
        self._note(key)
        if self.delay and "/c/" in f"/{key}":
            await asyncio.sleep(self.delay)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            self._note(key)
        return await super().get_partial_values(prototype, key_ranges)

    def reads(self) -> dict[str, int]:
        """Reads of each chunk key so far, by every process."""
        out: dict[str, int] = {}
        if os.path.exists(self.log):
            for line in Path(self.log).read_text().splitlines():
                out[line] = out.get(line, 0) + 1
        return out

    def _with_store(self, store):
        return type(self)(store, self.log, self.delay)

    def __getstate__(self):
        return {"store": self._store, "log": self.log, "delay": self.delay}

    def __setstate__(self, state):
        self.__init__(state["store"], state["log"], state["delay"])


def on_threads_and_workers(run: Callable[[], Any]) -> tuple[Any, Any]:
    """``run()`` on the threaded scheduler, then on a ``distributed.LocalCluster`` of two worker
    processes with one thread each on 127.0.0.1: (threaded result, workers' result)."""
    import dask
    import distributed

    with dask.config.set(scheduler="threads"):
        here = run()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        there = run()
    return here, there
