"""What the benchmark scripts share: the baselines' BLAS settings and the floor.

The floor of a step is the larger of two times measured in the same run: one read pass over
the data (reading and decompressing every chunk, nothing else) and the float64 multiply-adds
the computation cannot do without, at this machine's GEMM rate. The rate is measured here, in a
process of its own, two ways:

- all BLAS threads in one product (how numpy with the data in memory runs);
- one BLAS thread in each of ``os.cpu_count()`` threads, products at once (how Dask's threaded
  scheduler runs plain dask with one BLAS thread per task, and the package's passes).

The floor uses the higher rate: no implementation's arithmetic runs faster than the machine's
best measured rate, so the time it gives is a lower bound for all of them.

Child processes of the scripts get :func:`child_env`: the environment without the variables
that set BLAS threads, so numpy keeps every BLAS thread (its best configuration); plain-dask
baselines hold BLAS to one thread per task themselves (:func:`one_blas_thread`), and the
package does so in its own passes.

Run as a script, it prints the rates as one JSON line::

    python benchmarks/_common.py --gemm-size 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

GEMM_SIZE = 4096
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without the BLAS thread settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARIABLES}
    return env | extra


def one_blas_thread():
    """A context in which BLAS runs one thread per call: wrap a plain-dask compute with it,
    so that each of Dask's threads runs a single-threaded BLAS (not a team per task)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def blas_info() -> str:
    """The BLAS libraries loaded in this process and their current thread counts."""
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
                     for i in threadpool_info() if i.get("user_api") == "blas")


def add_gemm_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gemm-size", type=int, default=GEMM_SIZE,
                        help=f"side of the float64 products that time the GEMM rate "
                        f"(default {GEMM_SIZE})")


def _best_of(run, repeat: int) -> list[float]:
    run()  # warm-up: thread start, first touch of the pages
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def gemm_rates(size: int = GEMM_SIZE, repeat: int = 3) -> dict:
    """float64 GEMM rates (multiply-adds per second) of ``size``-cubed products, best of
    ``repeat``: with all BLAS threads in one product, and with one BLAS thread in each of
    ``os.cpu_count()`` threads running a product each at once."""
    from threadpoolctl import threadpool_limits

    threads = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    start = time.perf_counter()
    blas = blas_info()
    all_times = _best_of(lambda: x @ y, repeat)
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        def together() -> None:  # the inputs are shared (read only), each thread its product
            list(pool.map(lambda _: x @ y, range(threads)))

        one_times = _best_of(together, repeat)
    madds = float(size) ** 3
    all_rate, one_rate = madds / min(all_times), threads * madds / min(one_times)
    return {
        "size": size, "threads": threads, "blas": blas,
        "all_threads": {"times": all_times, "madds_per_second": all_rate},
        "one_per_thread": {"times": one_times, "madds_per_second": one_rate},
        "madds_per_second": max(all_rate, one_rate),
        "used": "all BLAS threads in one product" if all_rate >= one_rate
        else f"one BLAS thread in each of {threads} threads",
        "seconds": time.perf_counter() - start,
    }


def measure_gemm(size: int = GEMM_SIZE) -> dict:
    """:func:`gemm_rates` in a fresh process (BLAS at its default threads there)."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--gemm-size",
                           str(size)], capture_output=True, text=True, env=child_env(),
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_pass(paths: list[str], passes: int = 2) -> dict:
    """One read pass over Zarr arrays (a group stands for all its arrays): column sums in one
    ``dask.compute`` on the threaded scheduler, ``passes`` times; the fastest is the read
    floor (the first may fill the page cache)."""
    import dask
    import dask.array as da
    import zarr

    arrays = []
    for path in paths:
        node = zarr.open(path, mode="r")
        found = [a for _, a in node.arrays()] if isinstance(node, zarr.Group) else [node]
        arrays += [da.from_zarr(a) for a in found]
    times = []
    with dask.config.set(scheduler="threads"):
        for _ in range(passes):
            start = time.perf_counter()
            dask.compute(*[x.sum(axis=0, dtype="float64") for x in arrays])
            times.append(time.perf_counter() - start)
    return {"seconds": min(times), "times": times, "bytes": int(sum(x.nbytes for x in arrays))}


def measure_read(paths: list[str | Path], passes: int = 2) -> dict:
    """:func:`read_pass` in a fresh process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--passes", str(passes), "--read",
           *map(str, paths)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def gemm_lines(gemm: dict) -> list[str]:
    """The report's account of the two GEMM rates and which one the floor uses."""
    def rate(key: str) -> str:
        r = gemm[key]
        return (f"{r['madds_per_second']:.3g} multiply-adds/s "
                f"({2 * r['madds_per_second'] / 1e9:.1f} GFLOP/s; "
                + ", ".join(f"{t:.2f}" for t in r["times"]) + " s)")

    n, t = gemm["size"], gemm["threads"]
    return [
        f"GEMM rate (float64 {n} x {n} @ {n} x {n}, best of {len(gemm['all_threads']['times'])},"
        f" own process; {gemm['blas']}): all BLAS threads in one product "
        f"{rate('all_threads')}; one BLAS thread in each of {t} threads at once "
        f"{rate('one_per_thread')}",
        f"the floor uses the higher, {gemm['madds_per_second']:.3g} multiply-adds/s "
        f"({gemm['used']}): no implementation's arithmetic runs faster than "
        "the machine's best measured rate, so the time it gives bounds every step from below",
    ]


def floor_lines(madds: float, counted: str, gemm: dict, read: float) -> tuple[float, list[str]]:
    """The floor, max(read pass, arithmetic floor), and the lines that say how it was found.

    ``counted``: the formula of ``madds`` in words (which products, syrk or gemm)."""
    rate = gemm["madds_per_second"]
    arithmetic = madds / rate
    floor = max(arithmetic, read)
    return floor, [
        f"arithmetic floor = {counted} = {madds:.4g} multiply-adds / {rate:.3g} per s "
        f"= {arithmetic:.2f} s",
        f"floor = max(read pass {read:.2f} s, arithmetic floor {arithmetic:.2f} s) = "
        f"{floor:.2f} s (reading and arithmetic overlapped perfectly; one after the other on "
        f"the same cores: {read + arithmetic:.2f} s)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_gemm_argument(parser)
    parser.add_argument("--read", nargs="+", help="time a read pass over these Zarr paths")
    parser.add_argument("--passes", type=int, default=2, help="read passes (the fastest counts)")
    args = parser.parse_args()
    print(json.dumps(read_pass(args.read, args.passes) if args.read
                     else gemm_rates(args.gemm_size)))


if __name__ == "__main__":
    main()


def plain(value):
    """JSON-friendly: numpy scalars to Python, anything else unknown to its str."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))


def run_measured(cmd: list[str], step: str) -> dict:
    """Run a step's command in a fresh interpreter (:func:`child_env`) and read the JSON of its
    last line; its peak RSS and CPU time come from the kernel via ``wait4``. A step that fails
    gives ``{"error": ...}``."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] step {step} ...", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return {"error": f"exit status {code}"}
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_bytes"] = usage.ru_maxrss * 1024
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def own_peak_bytes() -> int:
    """This process's own peak resident set size (``VmHWM``): ``ru_maxrss`` of a child counts
    the parent's resident set at fork, which for a driver that wrote the data is large."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def machine_lines(start_load: tuple[float, ...],
                  packages: tuple[str, ...] = ("numpy", "dask", "zarr", "xarray")) -> list[str]:
    """Date, machine, BLAS, load and versions (of ``packages``), as every report gives them."""
    from importlib.metadata import version

    import dask_repsim

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                cwd=Path(__file__).resolve().parent, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return [
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: {platform.platform()}; CPU: {cpu}; {os.cpu_count()} cores; "
        f"{memory:.1f} GiB memory",
        f"BLAS: {blas_info()}",
        "load average (1, 5, 15 min) at start: " + ", ".join(f"{x:.2f}" for x in start_load)
        + "; at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"versions: python {platform.python_version()}, dask-repsim {dask_repsim.__version__} "
        f"(commit {commit}), " + ", ".join(f"{m} {version(m)}" for m in packages),
    ]
