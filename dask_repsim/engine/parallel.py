"""Computing the package's Dask graphs without oversubscribing the cores.

Most of the work in a pass is BLAS (``Z^T Z`` of a chunk, Gram blocks, chunk QRs). Under
Dask's local threaded scheduler several tasks run at once, one per core, and each BLAS call
would start its own team of one thread per core: on a 2-core machine that made the core
benchmark's pass 1.7 times slower than with one BLAS thread per task. So while a graph runs
under the threaded scheduler, BLAS is limited to one thread per call (``threadpoolctl``); the
limit is lifted when the computation returns, so the matrix work on the client (whitening,
SVDs) uses every core again, except on matrices of at most :data:`SMALL_CLIENT_COLUMNS` columns
(:func:`client_blas`): there a team of BLAS threads costs more than it gives (the QR path's 20
leave-one-group-out merges of 128-column factors took 0.036 s on one thread and 0.12 s on two,
and 17.9 s on two while other processes kept the cores busy; at 1,024 columns 6.1 s and 5.8 s).
The co-moment path's pairs whiten or refit on the client once per null value and replicate: mean
CCA, PWCCA and ridge predictivity of 20,000 x (64 + 64) with 100 permutations and 20 groups took
2.7 s with one thread and 2.6 to 18.3 s (median 8.8) with two while another process kept the
machine busy (``benchmarks/ab_release.py --case client``).

Distributed workers need nothing here: their nannies start them with ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to 1 (``distributed`` config
``nanny.pre-spawn-environ``). The dask config value ``repsim.blas-threads`` overrides the choice:
an integer sets the BLAS threads while any graph of this package computes, ``"auto"`` (default)
does as described, ``None`` leaves BLAS alone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
from threadpoolctl import threadpool_limits

__all__ = ["blas_threads", "client_blas", "compute", "memory_budget", "task_slots",
           "threads_per_process", "workers_share_this_machine"]

#: client-side matrix work on at most this many columns runs on one BLAS thread
SMALL_CLIENT_COLUMNS = 1024


@contextmanager
def client_blas(columns: int) -> Iterator[None]:
    """One BLAS thread for the client's work on matrices of ``columns`` columns when that is at
    most :data:`SMALL_CLIENT_COLUMNS` (the module notes say why); BLAS as it is otherwise.

    Examples
    --------
    >>> from threadpoolctl import threadpool_info
    >>> with client_blas(128):
    ...     {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} <= {1}
    True
    """
    if columns > SMALL_CLIENT_COLUMNS:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _threaded_scheduler() -> bool:
    """Whether ``dask.compute`` would now run on the local threaded scheduler."""
    scheduler = dask.config.get("scheduler", None)
    if scheduler is None:
        try:
            from distributed import default_client

            default_client()
        except ValueError:  # no client: arrays and delayed default to threads
            return True
        return False
    return scheduler in ("threads", "threading")


def blas_threads() -> int | None:
    """BLAS threads per call while this package's graphs compute now (``None``: not limited).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set(scheduler="threads", num_workers=4):
    ...     blas_threads()
    1
    >>> with dask.config.set(scheduler="sync"):
    ...     blas_threads() is None
    True
    """
    setting = dask.config.get("repsim.blas-threads", "auto")
    if setting is None:
        return None
    if setting != "auto":
        threads = int(setting)
        if threads < 1:
            raise ValueError(f"dask config 'repsim.blas-threads' must be >= 1, got {setting!r}")
        return threads
    workers = dask.config.get("num_workers", None) or os.cpu_count() or 1
    return 1 if workers > 1 and _threaded_scheduler() else None


def compute(*graphs: Any) -> tuple:
    """``dask.compute(*graphs)`` with BLAS threads limited as :func:`blas_threads` says.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.ones((4, 3), chunks=2)
    >>> compute(x.T @ x)[0].tolist()
    [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    """
    threads = blas_threads()
    if threads is None:
        return dask.compute(*graphs)
    with threadpool_limits(limits=threads, user_api="blas"):
        return dask.compute(*graphs)


def _client_workers() -> dict[str, dict] | None:
    """The workers of the active ``distributed.Client`` by address (each with its
    ``nthreads``, ``memory_limit`` and ``host``), or ``None`` when there is no client."""
    try:
        from distributed import get_client

        return dict(get_client().scheduler_info().get("workers", {}))
    except (ImportError, ValueError):  # no active client
        return None


def memory_budget() -> int:
    """The memory budget in bytes: dask config ``repsim.memory-budget`` if set, else a quarter
    of the smallest worker's memory limit under a ``distributed.Client``, else a quarter of
    this machine's memory.

    The co-moment path (:mod:`dask_repsim.engine.memory`), the feature tiles
    (:func:`dask_repsim.paths.tiled.layout`) and the sample-space paths (``gram``,
    ``sample_blocks``) divide it among the tasks that run at once in one process
    (:func:`threads_per_process`), so that it bounds what the process holds for them.
    """
    configured = dask.config.get("repsim.memory-budget", None)
    if configured is not None:
        try:
            budget = int(dask.utils.parse_bytes(configured) if isinstance(configured, str)
                         else configured)
        except (TypeError, ValueError):
            budget = 0
        if budget <= 0 or (isinstance(configured, str) and not configured.strip()):
            raise ValueError(f"dask config 'repsim.memory-budget' must be a positive size such "
                             f"as '2 GiB' or 2147483648, not {configured!r}")
        return budget
    limits = [w["memory_limit"] for w in (_client_workers() or {}).values()
              if w.get("memory_limit")]
    if limits:
        return min(limits) // 4
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def threads_per_process() -> int:
    """How many tasks run at once in one process: the threaded scheduler's workers, or the
    most threads of any worker of the active ``distributed.Client``.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set(scheduler="threads", num_workers=3):
    ...     threads_per_process()
    3
    """
    if _threaded_scheduler():
        return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    workers = _client_workers()  # None: synchronous or processes
    return max([int(w.get("nthreads", 1)) for w in (workers or {}).values()] or [1])


def task_slots() -> int:
    """How many tasks run at once in all: the threaded scheduler's workers, or the threads of
    every worker of the active ``distributed.Client`` together.

    Examples
    --------
    >>> import dask
    >>> with dask.config.set(scheduler="threads", num_workers=3):
    ...     task_slots()
    3
    """
    if _threaded_scheduler():
        return threads_per_process()
    workers = _client_workers()  # None: synchronous or processes
    return max(1, sum(int(w.get("nthreads", 1)) for w in (workers or {}).values()))


_LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded",
                     "processes", "multiprocessing")


def workers_share_this_machine() -> bool:
    """Whether every process that runs tasks is on this machine (and so sees its local disk):
    true for Dask's local schedulers and for a ``distributed.Client`` whose workers all run on
    this host (a ``LocalCluster``).

    Examples
    --------
    >>> import dask
    >>> with dask.config.set(scheduler="threads"):
    ...     workers_share_this_machine()
    True
    """
    if dask.config.get("scheduler", None) in _LOCAL_SCHEDULERS or _threaded_scheduler():
        return True
    workers = _client_workers()
    if workers is None:  # no client: a local scheduler
        return True
    here = {"127.0.0.1", "localhost", "::1", socket.gethostname(), socket.getfqdn()}
    try:
        here.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    hosts = {str(w.get("host", "")) for w in workers.values()}
    addresses = {str(a) for a in workers}
    return hosts <= here or all(a.startswith("inproc://") for a in addresses)
