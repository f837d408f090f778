"""Zoo on worker processes: bench_zoo's zoo on a LocalCluster of 2 worker processes with a
memory limit of 1.5 GB each, a killed worker, and no shared disk.

The zoo of ``bench_zoo.py`` (``--networks`` ResNet-18s, default 8, on the same ``--n`` random
64 x 64 images, default 2,048; captured by it into ``<workdir>/zoo.zarr``, reused when
complete) is compared with itself by ``dask_repsim.compare_zoo`` four times, each on a fresh
``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
memory_limit="1.5GB")`` except the first:

threads   the threaded scheduler of this process (its own budget and threads, so its own
          tiles): the values every other step is compared with
cluster   on the cluster (the default budget: a quarter of the workers' limit, per process):
          seconds, whether any worker was restarted (the workers' addresses before and after)
killed    as ``cluster``, one worker process killed (SIGKILL) once the first Gram task has
          finished: dask recomputes what was lost, and the values must be ``cluster``'s, bit
          for bit
linear    as ``cluster``, linear and debiased CKA only (RBF CKA needs a shared scratch
          directory, so the next step cannot have it)
carried   as ``linear``, with the shared-disk check forced off (as for workers on other hosts:
          the cluster carries the row blocks and Gram matrices instead of the scratch
          directory); every chunk read is logged by the store in whichever process reads it
          (the tests' ``cluster_utils.LoggedStore``), and each must be decoded at most twice;
          the values must be ``linear``'s, bit for bit

Output: ``benchmarks/results/zoo_cluster_n<n>_<N>.txt``.

Examples
--------
::

    python benchmarks/bench_zoo_cluster.py --keep           # reuse bench_zoo's capture
    python benchmarks/bench_zoo_cluster.py --n 64 --networks 3
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import machine_lines

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' logging store; workers inherit it
from cluster_utils import LoggedStore  # noqa: E402

METRICS = ["cka", "cka_debiased", "cka_rbf"]
SIGMA = [0.4, 0.8]
LIMIT = "1.5GB"


def _say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def _values(ds) -> dict[str, np.ndarray]:
    return {str(v): ds[v].values for v in ds.data_vars if ds[v].dims == ("a", "b")}


def on_cluster(group, metrics: list[str], kill: bool = False) -> dict:
    """compare_zoo on a fresh LocalCluster; with ``kill``, one worker process is killed once
    a Gram task has finished."""
    import distributed

    import dask_repsim

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit=LIMIT, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        before = set(client.scheduler_info()["workers"])
        killed: dict = {}
        if kill:
            pids = client.run(os.getpid)
            victim = pids[sorted(pids)[1]]
            client.get_task_stream()  # installs the scheduler's task-stream plugin
            start = time.perf_counter()

            def watch() -> None:
                while time.perf_counter() - start < 600 and not killed:
                    done = [str(t["key"]) for t in client.get_task_stream()]
                    if any(k.startswith(("gram_tile", "_unit_grams", "_block")) for k in done):
                        os.kill(victim, signal.SIGKILL)
                        killed.update(after=time.perf_counter() - start, tasks=len(done))
                    time.sleep(0.05)

            threading.Thread(target=watch, daemon=True).start()
        start = time.perf_counter()
        ds = dask_repsim.compare_zoo(group, metrics=metrics,
                                     **({"sigma": SIGMA} if "cka_rbf" in metrics else {}))
        seconds = time.perf_counter() - start
        after = set(client.scheduler_info()["workers"])
    return {"seconds": seconds, "values": _values(ds), "restarted": len(before - after),
            "killed": killed, "attrs": {k: ds.attrs[k] for k in ("method", "n_tiles",
                                                                "tile_rows")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="images (default 2048)")
    parser.add_argument("--networks", type=int, default=8, help="ResNet-18s (default 8)")
    parser.add_argument("--workdir", type=Path, help="bench_zoo's work dir (default "
                        "benchmarks/data/zoo_n<n>_<networks>)")
    parser.add_argument("--keep", action="store_true",
                        help="reuse the complete captured networks of this n in the work dir")
    args = parser.parse_args()
    args.workdir = (args.workdir or HERE / "data" / f"zoo_n{args.n}_{args.networks}").resolve()
    start_load = os.getloadavg()
    _say("capture (bench_zoo.py's step) ...")
    subprocess.run([sys.executable, str(HERE / "bench_zoo.py"), "--step", "capture",
                    "--n", str(args.n), "--networks", str(args.networks), "--workdir",
                    str(args.workdir)] + ["--keep"] * args.keep, check=True,
                   stdout=subprocess.DEVNULL)
    import dask
    import zarr
    import zarr.storage

    import dask_repsim
    from dask_repsim.paths.gram import samplespace

    store = args.workdir / "zoo.zarr"
    _say("threads ...")
    with dask.config.set(scheduler="threads"):
        start = time.perf_counter()
        reference = _values(dask_repsim.compare_zoo(str(store), metrics=METRICS, sigma=SIGMA))
        threads = time.perf_counter() - start
    runs = {}
    for step in ("cluster", "killed", "linear"):
        _say(f"{step} ...")
        runs[step] = on_cluster(str(store), METRICS[:2] if step == "linear" else METRICS,
                                kill=step == "killed")
    _say("carried ...")
    log = args.workdir / "reads.log"
    log.unlink(missing_ok=True)
    logged = LoggedStore(zarr.storage.LocalStore(store, read_only=True), str(log))
    shared = samplespace.workers_share_this_machine
    samplespace.workers_share_this_machine = lambda: False  # as for workers on other hosts
    try:
        runs["carried"] = on_cluster(zarr.open_group(logged, mode="r"), METRICS[:2])
    finally:
        samplespace.workers_share_this_machine = shared
    reads = logged.reads()
    root = zarr.open_group(store, mode="r")
    chunks = sum(a.nchunks for net in root.group_keys() for _, a in root[net].arrays())
    lines = report(args, threads, reference, runs, reads, chunks, start_load)
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results" / f"zoo_cluster_n{args.n}_{args.networks}.txt"
    out.write_text(text)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(args, threads: float, reference: dict, runs: dict, reads: dict, chunks: int,
           start_load) -> list[str]:
    lines = [f"# dask_repsim zoo on worker processes: {args.networks} ResNet-18s, n = "
             f"{args.n:,}, LocalCluster of 2 worker processes x 1 thread, memory_limit "
             f"{LIMIT} each", "",
             f"command: python benchmarks/bench_zoo_cluster.py {' '.join(sys.argv[1:])}",
             *machine_lines(start_load, ("numpy", "dask", "distributed", "zarr")),
             f"metrics: {', '.join(METRICS)} (sigma {SIGMA}); the carried step linear and "
             "debiased CKA only", "",
             "| step | seconds | workers restarted | method | tiles | max abs difference "
             "from threads | identical to |", "|---|---:|---:|---|---:|---:|---|",
             f"| threads | {threads:.1f} | - | - | - | - | - |"]
    same = {"killed": "cluster", "carried": "linear"}
    for step, run in runs.items():
        diff = max(float(np.max(np.abs(run["values"][m] - reference[m])))
                   for m in run["values"])
        run["diff"] = diff
        twin = runs.get(same.get(step, ""))
        run["identical"] = twin is None or all(
            np.array_equal(run["values"][m], twin["values"][m]) for m in run["values"])
        lines.append(f"| {step} | {run['seconds']:.1f} | {run['restarted']} | "
                     f"{run['attrs']['method']} | {run['attrs']['n_tiles']} | {diff:.2e} | "
                     + (f"{same[step]}: {'yes' if run['identical'] else 'NO'}"
                        if step in same else "-") + " |")
    killed = runs["killed"]["killed"]
    per_count: dict[int, int] = {}
    for count in reads.values():
        per_count[count] = per_count.get(count, 0) + 1
    restarted = sum(runs[k]["restarted"] for k in ("cluster", "linear", "carried"))
    lines += [
        "",
        "killed: " + (f"one worker process SIGKILLed {killed['after']:.1f} s into the call, "
                      f"after {killed['tasks']} tasks had finished" if killed
                      else "NOT KILLED (the run ended first)"),
        f"carried: {len(reads):,} of {chunks:,} stored chunks read; "
        + ", ".join(f"{v:,} chunks {k} time(s)" for k, v in sorted(per_count.items())),
        "each chunk at most twice: " + _verdict(bool(reads) and max(reads.values()) <= 2)
        + "; no worker restarted (cluster, linear, carried): " + _verdict(restarted == 0)
        + "; a worker killed: " + _verdict(bool(killed))
        + "; killed = cluster and carried = linear, bit for bit: "
        + _verdict(runs["killed"]["identical"] and runs["carried"]["identical"]),
        "every step against the threaded run (its own tiles: the same sums, added in another "
        "order): largest difference "
        + f"{max(r['diff'] for r in runs.values()):.2e} (within 1e-11: "
        + _verdict(all(r["diff"] <= 1e-11 for r in runs.values())) + ")",
    ]
    return lines


if __name__ == "__main__":
    main()
