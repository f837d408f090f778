"""BLAS threads while the package's graphs compute (dask_repsim.engine.parallel)."""

import contextlib

import dask
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from dask_repsim import cka, pwcca
from dask_repsim.engine.parallel import blas_threads, compute
from dask_repsim.paths.covariance import cells


def _blas_threads_now() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_threaded_scheduler_limits_blas_to_one_thread_inside_tasks_only():
    before = _blas_threads_now()
    if not before:
        pytest.skip("numpy is linked to no BLAS that threadpoolctl can see")
    with dask.config.set(scheduler="threads", num_workers=2):
        assert blas_threads() == 1
        seen = compute(*(dask.delayed(_blas_threads_now)() for _ in range(4)))
    assert all(threads == [1] * len(before) for threads in seen)
    assert _blas_threads_now() == before  # restored for the client's own linear algebra


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_other_local_schedulers_leave_blas_alone(scheduler):
    with dask.config.set(scheduler=scheduler, num_workers=2):
        assert blas_threads() is None


def test_one_worker_thread_leaves_blas_alone():
    with dask.config.set(scheduler="threads", num_workers=1):
        assert blas_threads() is None


def test_config_overrides_and_validates():
    with dask.config.set({"repsim.blas-threads": 2}):
        assert blas_threads() == 2
        seen = compute(dask.delayed(_blas_threads_now)())[0]
        assert set(seen) <= {2}
    with dask.config.set({"repsim.blas-threads": None}):
        assert blas_threads() is None
    with dask.config.set({"repsim.blas-threads": 0}), pytest.raises(ValueError, match=">= 1"):
        compute(dask.delayed(abs)(1))


def test_measures_agree_across_blas_settings():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 40))
    y = x @ rng.normal(size=(40, 30)) + rng.normal(size=(3000, 30))
    xd, yd = (dask.array.from_array(a, chunks=(500, -1)) for a in (x, y))
    with dask.config.set({"repsim.blas-threads": None}):
        free = cka(xd, yd)
    with dask.config.set(scheduler="threads", num_workers=2):
        limited = cka(xd, yd)
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref = np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert float(free) == pytest.approx(ref, abs=1e-12)
    assert float(limited) == pytest.approx(ref, abs=1e-12)


def test_co_moment_client_work_of_small_pairs_runs_on_one_blas_thread(monkeypatch):
    """Each pair's values, replicates and null values are small matrix work on the client:
    one BLAS thread there (a team of them cost up to 3 times the time on a busy 2-core
    machine: ``benchmarks/ab_release.py --case client``), the threads restored after, and
    the same value, p-value and interval either way."""
    before = _blas_threads_now()
    if not before or max(before) < 2:
        pytest.skip("BLAS runs one thread here anyway")
    seen = []
    real = cells.quietly

    def recording(function, items):
        seen.append(_blas_threads_now())
        return real(function, items)

    monkeypatch.setattr(cells, "quietly", recording)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6))
    y = x @ rng.normal(size=(6, 5)) + rng.normal(size=(400, 5))
    e = pwcca(x, y, permutations=19, interval="jackknife", seed=3)
    assert len(seen) == 2 and all(threads == [1] * len(before) for threads in seen)
    assert _blas_threads_now() == before
    monkeypatch.setattr(cells, "client_blas", lambda columns: contextlib.nullcontext())
    free = pwcca(x, y, permutations=19, interval="jackknife", seed=3)
    assert (float(e), e.pvalue, e.ci_low, e.ci_high) == pytest.approx(
        (float(free), free.pvalue, free.ci_low, free.ci_high), rel=1e-12)
