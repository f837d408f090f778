"""Scaling benchmark: how the cost of ``dask_repsim.compare`` grows with workers, samples,
features and layers, and a cost formula fitted to the measured points.

On float32 Zarr v3 arrays it writes itself (bench_core.py's generator: ReLU of correlated latent
factors, fixed seed, chunked along samples), each measurement in its own Python process:

1. workers: the same ``compare(x, y)`` (one pair, all eight measures) with a
   ``distributed.Client`` on a ``LocalCluster(n_workers=W, threads_per_worker=1,
   processes=True)``, W = 1 and 2;
2. samples: ``compare`` of one 256 + 256 pair at a growing number of rows n (Dask's local
   threaded scheduler, as in 3 and 4);
3. features: n fixed, p units per side, P = 2p features in the pass;
4. layers: an L x L grid, ``compare(dict_a, dict_b)`` of L layers of 256 units per network:
   one pass over all 2L layers (P = 2L x 256), then L^2 pairs of small decompositions.

Every measuring process runs with one BLAS thread (``--blas-threads``), as distributed gives its
workers: Dask's threads are then not oversubscribed by BLAS's own. Each run's wall time is split
into the pass (the Dask compute: reading, float64 co-moments, tree reduction; timed with a
scheduler callback, or from the task stream on the cluster) and the rest, on the client
(opening the arrays, building the graph, the decompositions and measures of every pair), and
CPU time is taken alongside (other jobs sharing the cores stretch wall time, hardly CPU time).
The two parts are fitted separately over the points of 2-4, for wall time and for CPU time, by
least squares (non-negative, relative residuals):

    pass   ~ a0 + a1 n P + a2 n P^2
    client ~ b0 + b1 sum_layers p^3 + b2 sum_pairs p q min(p, q)

Peak memory is each process's own peak resident set size (``VmHWM``, imports included; not
``wait4``'s ``ru_maxrss``, which counts the driver's resident set at fork); on the cluster the
client's and each worker process's are given apart.

Every point also gets its floor (``_common.py``): the larger of one read pass over its arrays
(in a process of its own, page cache warm, the faster of two) and the arithmetic floor, the
pass's float64 multiply-adds n (sum_layers p^2 / 2 + sum_pairs p q) (each layer's own
co-moment block as a symmetric product, syrk, and the cross blocks of the pairs compared;
n P^2 / 2 for one pair) at the GEMM rate measured at the start of the run (the higher of all
BLAS threads in one product and one BLAS thread in each of the cores' threads).

Examples
--------
::

    python benchmarks/bench_scaling.py                   # ~10 min (+ ~4 min to write the data)
    python benchmarks/bench_scaling.py --quick           # small smoke version, under a minute
    python benchmarks/bench_scaling.py --parts workers --repeat 3

The data (3.5 GB) go to ``benchmarks/data/scaling_*`` (reused by later runs; ``--clean`` deletes
them afterwards); the tables go to stdout and to ``benchmarks/results/scaling.txt`` (``.json``: raw
figures), ``scaling_quick.*`` with ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr
from _common import (
    add_gemm_argument,
    child_env,
    gemm_lines,
    measure_gemm,
    measure_read,
    own_peak_bytes,
)
from bench_core import _gb, _generate, _mixing, _run_lines, _versions
from scipy.optimize import nnls

HERE = Path(__file__).resolve().parent
PARTS = ("workers", "samples", "features", "layers")

# Row counts are multiples of two chunks: both threads (or workers) get equal shares.
FULL = {
    "chunk_rows": 65536,
    "workers": {"rows": 524288, "features": 256, "counts": [1, 2]},
    "samples": {"rows": [131072, 262144, 524288, 1048576], "features": 256},
    "features": {"rows": 131072, "features": [64, 128, 256, 512, 1024]},
    "layers": {"rows": 131072, "width": 256, "counts": [1, 2, 4, 8]},
}
QUICK = {
    "chunk_rows": 8192,
    "workers": {"rows": 32768, "features": 64, "counts": [1, 2]},
    "samples": {"rows": [16384, 32768], "features": 64},
    "features": {"rows": 16384, "features": [16, 64, 128]},
    "layers": {"rows": 16384, "width": 32, "counts": [1, 4]},
}


# --------------------------------------------------------------------------- data


def _meta(rows: int, features: int, seed: int) -> dict:
    return {"rows": rows, "features": features, "seed": seed, "complete": True}


def _complete(path: Path, meta: dict) -> bool:
    try:
        return dict(zarr.open_array(store=str(path), mode="r").attrs) == meta
    except (FileNotFoundError, ValueError, KeyError):
        return False


def _create(path: Path, rows: int, features: int, chunk_rows: int):
    shutil.rmtree(path, ignore_errors=True)
    return zarr.create_array(
        store=str(path),
        shape=(rows, features),
        chunks=(chunk_rows, features),
        dtype="float32",
        dimension_names=("sample", "unit"),
    )


def write_pair(xp: Path, yp: Path, rows: int, features: int, seed: int, chunk_rows: int) -> float:
    """bench_core's X, Y pair (``seed``), written chunk by chunk unless already complete."""
    meta = _meta(rows, features, seed)
    if _complete(xp, meta) and _complete(yp, meta):
        return 0.0
    t0 = time.perf_counter()
    mix = _mixing(seed, features)
    arrays = [_create(p, rows, features, chunk_rows) for p in (xp, yp)]
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        x, y = _generate(start, stop, seed, mix)
        arrays[0][start:stop] = x
        arrays[1][start:stop] = y
    for arr in arrays:  # marked complete last: an interrupted write is not mistaken for data
        arr.attrs.update(meta)
    return time.perf_counter() - t0


def link_prefix(big: Path, small: Path, rows: int, chunk_rows: int) -> None:
    """The first ``rows`` rows of the array at ``big`` as an array of its own at ``small``.

    The generator gives the first n rows of a larger data set as the n-row data set, so the
    smaller arrays are made of the larger one's stored chunk files (hard links: no extra disk
    or writing time), with their own metadata. Checked on the last chunk.
    """
    src = zarr.open_array(store=str(big), mode="r")
    meta = dict(src.attrs) | {"rows": rows}
    if _complete(small, meta):
        return
    if rows % chunk_rows or src.chunks[0] != chunk_rows:
        raise ValueError(f"{rows} rows are not whole chunks of {chunk_rows}")
    arr = _create(small, rows, src.shape[1], chunk_rows)
    for i in range(rows // chunk_rows):
        dst = small / "c" / str(i) / "0"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(big / "c" / str(i) / "0", dst)
    last = slice(rows - chunk_rows, rows)
    if not np.array_equal(zarr.open_array(store=str(small), mode="r")[last], src[last]):
        raise RuntimeError(f"{small}: linked chunks do not read back as {big}'s")
    arr.attrs.update(meta)


def ensure_data(cfg: dict, parts: list[str], root: Path, seed: int) -> tuple[dict, float]:
    """Write what ``parts`` need; return their paths and the seconds spent writing."""
    c = cfg["chunk_rows"]
    paths: dict = {}
    spent = 0.0
    if "workers" in parts or "samples" in parts:
        p = cfg["samples"]["features"]
        if "workers" in parts and cfg["workers"]["features"] != p:
            raise ValueError("workers and samples use the same pair: give them the same width")
        wanted = set(cfg["samples"]["rows"]) if "samples" in parts else set()
        wanted |= {cfg["workers"]["rows"]} if "workers" in parts else set()
        top = max(wanted)
        d = root / f"scaling_pair_p{p}_c{c}"
        big = (d / f"x_n{top}.zarr", d / f"y_n{top}.zarr")
        spent += write_pair(*big, top, p, seed, c)
        paths["pair"] = {}
        for n in sorted(wanted):
            pair = (d / f"x_n{n}.zarr", d / f"y_n{n}.zarr")
            if n != top:
                for b, s in zip(big, pair, strict=True):
                    link_prefix(b, s, n, c)
            paths["pair"][n] = tuple(str(q) for q in pair)
    if "features" in parts:
        n = cfg["features"]["rows"]
        d = root / f"scaling_features_n{n}_c{c}"
        paths["features"] = {}
        for p in cfg["features"]["features"]:
            pair = (d / f"x_p{p}.zarr", d / f"y_p{p}.zarr")
            spent += write_pair(*pair, n, p, seed, c)
            paths["features"][p] = tuple(str(q) for q in pair)
    if "layers" in parts:
        n, w = cfg["layers"]["rows"], cfg["layers"]["width"]
        d = root / f"scaling_layers_n{n}_w{w}_c{c}"
        paths["layers"] = []
        for i in range(max(cfg["layers"]["counts"])):
            # Layer i of networks a and b: the X and Y of the generator with seed + 1 + i.
            pair = (d / f"a_layer{i}.zarr", d / f"b_layer{i}.zarr")
            spent += write_pair(*pair, n, w, seed + 1 + i, c)
            paths["layers"].append(tuple(str(q) for q in pair))
    return paths, spent


def _files(paths) -> list[Path]:
    if isinstance(paths, str | Path):
        return [f for f in Path(paths).rglob("*") if f.is_file()]
    if isinstance(paths, dict):
        paths = list(paths.values())
    return [f for p in paths for f in _files(p)]


def warm_cache(paths) -> None:
    """Read every file once (untimed), so that every run reads from the same page cache."""
    for f in _files(paths):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def disk_bytes(paths) -> int:
    seen, total = set(), 0
    for f in _files(paths):
        st = f.stat()
        if (st.st_dev, st.st_ino) not in seen:  # hard-linked chunks counted once
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


# --------------------------------------------------------------------------- child


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _warm_up(compare) -> None:
    """A tiny untimed compare: lazy imports, and on a cluster the package on every worker."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    compare(x, x[:, ::-1] + rng.normal(size=x.shape))


def _warm_worker(paths: list[str]) -> None:
    """Run in every worker process: imports, zarr's first reads and a tiny local compare."""
    import dask

    import dask_repsim

    for path in paths:
        zarr.open_array(store=path, mode="r")[:1]
    with dask.config.set({"scheduler": "sync", "repsim.memory-budget": 2**30}):
        _warm_up(dask_repsim.compare)


def _spec_paths(spec: dict) -> list[str]:
    return [p for k in ("a", "b") for p in _flat(spec[k])]


def _summary(ds) -> dict:
    return {
        "n_samples": int(ds.attrs["n_samples"]),
        "n_passes": int(ds.attrs.get("n_passes", 1)),
        "cka": np.round(ds["cka"].values, 6).tolist(),
    }


def child_threads(spec: dict) -> dict:
    import dask
    from dask.callbacks import Callback

    import dask_repsim

    # Wall and CPU time (this process, all threads) at each compute's start and finish.
    spans: list[list[float]] = []
    callback = Callback(
        start=lambda dsk: spans.append([time.perf_counter(), time.process_time()]),
        finish=lambda dsk, state, errored: spans[-1].extend(
            [time.perf_counter(), time.process_time()]
        ),
    )
    with dask.config.set(scheduler="threads"):
        _warm_worker(_spec_paths(spec))
        _warm_up(dask_repsim.compare)
        baseline = _rss_bytes()
        t0, c0 = time.perf_counter(), time.process_time()
        with callback:
            ds = dask_repsim.compare(spec["a"], spec["b"])
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    pass_seconds = sum(s[2] - s[0] for s in spans)
    pass_cpu = sum(s[3] - s[1] for s in spans)
    return {
        "seconds": seconds,
        "pass_seconds": pass_seconds,
        "client_seconds": seconds - pass_seconds,
        "cpu": cpu,
        "pass_cpu": pass_cpu,
        "client_cpu": cpu - pass_cpu,
        "computes": len(spans),
        "baseline_bytes": baseline,
        **_summary(ds),
    }


def _worker_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_cluster(spec: dict) -> dict:
    from distributed import Client, LocalCluster, get_task_stream

    import dask_repsim

    w = spec["workers"]
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=w,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(w, timeout=120)
        startup = time.perf_counter() - t0
        client.run(_warm_worker, _spec_paths(spec))
        _warm_up(dask_repsim.compare)
        baseline = _rss_bytes()
        before = client.run(time.process_time)
        with get_task_stream(client) as stream:
            t0, c0 = time.perf_counter(), time.process_time()
            ds = dask_repsim.compare(spec["a"], spec["b"])
            seconds, client_cpu = time.perf_counter() - t0, time.process_time() - c0
        after = client.run(time.process_time)
        worker_cpu = [after[k] - before[k] for k in sorted(before)]
        records = [(t["worker"], s) for t in stream.data for s in t["startstops"]]
        first = min(s["start"] for _, s in records)
        last = max(s["stop"] for _, s in records)
        busy: dict[str, float] = {}
        for worker, s in records:
            if s["action"] == "compute":
                busy[worker] = busy.get(worker, 0.0) + s["stop"] - s["start"]
        worker_peaks = list(client.run(_worker_peak).values())
    return {
        "seconds": seconds,
        "pass_seconds": last - first,
        "client_seconds": seconds - (last - first),
        "cpu": client_cpu + sum(worker_cpu),
        "pass_cpu": sum(worker_cpu),
        "client_cpu": client_cpu,
        "worker_cpu": worker_cpu,
        "startup_seconds": startup,
        "worker_busy_seconds": sorted(busy.values(), reverse=True),
        "worker_peak_bytes": worker_peaks,
        "tasks": len(stream.data),
        "baseline_bytes": baseline,
        **_summary(ds),
    }


def run_child(spec: dict) -> None:
    out = child_cluster(spec) if spec.get("workers") else child_threads(spec)
    out["peak_self_bytes"] = own_peak_bytes()
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------- driver


def spawn(spec: dict, blas_threads: int) -> dict:
    """Run one measurement in a fresh interpreter: CPU time from ``wait4`` (the process and
    the descendants it waited for: a cluster's worker processes), peak RSS the child's own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = child_env()
    if blas_threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(blas_threads)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec} failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    # the child's own peak (a cluster's workers report theirs): wait4's ru_maxrss would count
    # this driver's resident set at fork, the data it wrote included
    result["peak_bytes"] = result["peak_self_bytes"]
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def _point(part: str, label: str, n: int, widths: list[int], pairs: list, spec: dict) -> dict:
    return {
        "part": part,
        "label": label,
        "n": n,
        "widths": widths,
        "P": sum(widths),
        "pairs": pairs,
        "spec": spec,
        "runs": [],
    }


def plan(cfg: dict, parts: list[str], paths: dict) -> list[dict]:
    points = []
    if "workers" in parts:
        n, p = cfg["workers"]["rows"], cfg["workers"]["features"]
        x, y = paths["pair"][n]
        for w in cfg["workers"]["counts"]:
            spec = {"a": x, "b": y, "workers": w}
            points.append(_point("workers", f"{w}", n, [p, p], [[p, p]], spec))
    if "samples" in parts:
        p = cfg["samples"]["features"]
        for n in cfg["samples"]["rows"]:
            x, y = paths["pair"][n]
            points.append(_point("samples", f"{n:,}", n, [p, p], [[p, p]], {"a": x, "b": y}))
    if "features" in parts:
        n = cfg["features"]["rows"]
        for p in cfg["features"]["features"]:
            x, y = paths["features"][p]
            points.append(_point("features", f"{p}", n, [p, p], [[p, p]], {"a": x, "b": y}))
    if "layers" in parts:
        n, w = cfg["layers"]["rows"], cfg["layers"]["width"]
        for count in cfg["layers"]["counts"]:
            chosen = paths["layers"][:count]
            spec = {
                "a": {f"a{i}": a for i, (a, _) in enumerate(chosen)},
                "b": {f"b{i}": b for i, (_, b) in enumerate(chosen)},
            }
            pairs = [[w, w]] * count**2
            points.append(_point("layers", f"{count}", n, [w] * 2 * count, pairs, spec))
    return points


def best(point: dict) -> dict:
    """The fastest run's figures, the highest peak memory over runs."""
    runs = point["runs"]
    out = dict(min(runs, key=lambda r: r["seconds"]))
    out["peak_bytes"] = max(r["peak_bytes"] for r in runs)
    out["all_seconds"] = [r["seconds"] for r in runs]
    return out


# --------------------------------------------------------------------------- fit


def pass_terms(pt: dict) -> list[float]:
    n, big_p = pt["n"], pt["P"]
    return [1.0, n * big_p, n * big_p**2]


def client_terms(pt: dict) -> list[float]:
    return [
        1.0,
        float(sum(p**3 for p in pt["widths"])),
        float(sum(p * q * min(p, q) for p, q in pt["pairs"])),
    ]


def floor_of(pt: dict, gemm: dict) -> tuple[float, float]:
    """The point's arithmetic floor, n (sum_layers p^2 / 2 + sum_pairs p q) multiply-adds at
    the GEMM rate, and its floor, the larger of that and its read pass."""
    madds = pt["n"] * (sum(p * p for p in pt["widths"]) / 2 + sum(p * q for p, q in pt["pairs"]))
    arithmetic = madds / gemm["madds_per_second"]
    return arithmetic, max(arithmetic, pt["read"])


def _nnls(rows: list[list[float]], t: np.ndarray) -> np.ndarray:
    """Non-negative least squares of relative residuals (t - A c) / t."""
    a = np.array(rows) / t[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(a / scale, np.ones(len(t)))
    return coef / scale


def fit(points: list[dict], kind: str) -> dict | None:
    """Coefficients of the pass and client terms for wall time (``kind="seconds"``) or CPU
    time (``"cpu"``), over the threaded points (parts 2-4)."""
    pts = [p for p in points if p["part"] != "workers"]
    if len(pts) < 4:
        return None
    b = [best(p) for p in pts]
    tp = np.array([max(r[f"pass_{kind}"], 1e-3) for r in b])
    tc = np.array([max(r[f"client_{kind}"], 1e-3) for r in b])
    a = _nnls([pass_terms(p) for p in pts], tp)
    c = _nnls([client_terms(p) for p in pts], tc)
    return {"pass": a.tolist(), "client": c.tolist()}


def predict(coef: dict, pt: dict) -> tuple[float, float]:
    return (
        float(np.dot(coef["pass"], pass_terms(pt))),
        float(np.dot(coef["client"], client_terms(pt))),
    )


# --------------------------------------------------------------------------- report


def _workers_table(points: list[dict], gemm: dict) -> list[str]:
    pts = [p for p in points if p["part"] == "workers"]
    if not pts:
        return []
    ref = best(pts[0])
    n, p = pts[0]["n"], pts[0]["widths"][0]
    lines = [
        f"## 1. Workers: compare of one {n:,} x ({p} + {p}) pair, distributed.LocalCluster "
        "(processes, 1 thread each)",
        "",
        "| workers | seconds | speed-up | pass s | pass speed-up | client s | worker CPU s "
        "| cores used | busy s per worker | client peak GB | worker peak GB | cluster start s "
        "| read s | arithmetic s | x floor |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for pt in pts:
        r = best(pt)
        arithmetic, floor = floor_of(pt, gemm)
        lines.append(
            f"| {pt['label']} | {r['seconds']:.2f} | {ref['seconds'] / r['seconds']:.2f} "
            f"| {r['pass_seconds']:.2f} | {ref['pass_seconds'] / r['pass_seconds']:.2f} "
            f"| {r['client_seconds']:.2f} "
            f"| {' + '.join(f'{s:.1f}' for s in r['worker_cpu'])} "
            f"| {r['pass_cpu'] / r['pass_seconds']:.2f} "
            f"| {', '.join(f'{s:.1f}' for s in r['worker_busy_seconds'])} "
            f"| {_gb(r['peak_self_bytes'])} | {_gb(max(r['worker_peak_bytes']))} "
            f"| {r['startup_seconds']:.1f} | {pt['read']:.2f} | {arithmetic:.2f} "
            f"| {r['seconds'] / floor:.2f} |"
        )
    lines += [
        "",
        "seconds: the compare call (cluster start-up and an untimed warm-up excluded); pass: "
        "first task start to last task end (task stream); client: the rest (graph, "
        "scheduling, decompositions); worker CPU: each worker process's CPU time during the "
        "call; cores used: worker CPU / pass (below the worker count when other jobs hold "
        "cores); busy: each worker's summed task time; read s, arithmetic s: the floors "
        "(below); x floor: seconds / the larger of the two.",
    ]
    return lines


def _part_table(points: list[dict], part: str, coefs: dict, gemm: dict) -> list[str]:
    pts = [p for p in points if p["part"] == part]
    if not pts:
        return []
    first = pts[0]
    if part == "samples":
        w = first["widths"][0]
        head = f"## 2. Samples: compare of one ({w} + {w}) pair, threaded scheduler"
        key = "n"
    elif part == "features":
        head = f"## 3. Features: n = {first['n']:,}, p units per side, threaded scheduler"
        key = "p per side"
    else:
        head = (
            f"## 4. Layers: L x L grid, L layers of {first['widths'][0]} units per network, "
            f"n = {first['n']:,}, one compare(dict_a, dict_b), threaded scheduler"
        )
        key = "L"
    lines = [
        head,
        "",
        f"| {key} | P | pairs | seconds | pass s | client s | predicted s | measured / "
        "predicted | CPU s | predicted CPU s | cores used | s per 1M rows | peak GB | read s "
        "| arithmetic s | x floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pt in pts:
        r = best(pt)
        arithmetic, floor = floor_of(pt, gemm)
        cells = []
        for kind, measured in (("seconds", r["seconds"]), ("cpu", r["cpu"])):
            if coefs.get(kind):
                pred = sum(predict(coefs[kind], pt))
                cells.append((f"{pred:.2f}", f"{measured / pred:.2f}"))
            else:
                cells.append(("", ""))
        lines.append(
            f"| {pt['label']} | {pt['P']} | {len(pt['pairs'])} | {r['seconds']:.2f} "
            f"| {r['pass_seconds']:.2f} | {r['client_seconds']:.2f} | {cells[0][0]} "
            f"| {cells[0][1]} | {r['cpu']:.2f} | {cells[1][0]} "
            f"| {r['pass_cpu'] / r['pass_seconds']:.2f} "
            f"| {r['seconds'] / pt['n'] * 1e6:.2f} | {_gb(r['peak_bytes'])} | {pt['read']:.2f} "
            f"| {arithmetic:.2f} | {r['seconds'] / floor:.2f} |"
        )
    return lines


def _fit_lines(coefs: dict, points: list[dict], gemm: dict) -> list[str]:
    if not coefs.get("seconds"):
        return ["(no fit: it needs at least four points from samples, features and layers)"]
    pts = [p for p in points if p["part"] != "workers"]
    lines = [
        "## Fitted cost formulas (this machine)",
        "",
        f"non-negative least squares of relative residuals over the {len(pts)} points of "
        "2-4 (threaded scheduler), pass and client fitted separately; n: samples, P: features "
        "of all layers in the pass, p, q: one layer's units.",
    ]
    for kind, title in (("seconds", "wall time"), ("cpu", "CPU time (all threads)")):
        a0, a1, a2 = coefs[kind]["pass"]
        b0, b1, b2 = coefs[kind]["client"]
        measured = "seconds" if kind == "seconds" else "cpu"
        errs = [best(pt)[measured] / sum(predict(coefs[kind], pt)) - 1 for pt in pts]
        rate = f"{1 / a2 / 1e9:.1f}e9 n*P^2 per second" if a2 > 0 else "n/a"
        if a2 > 0 and kind == "seconds":  # n P^2 / 2 multiply-adds at the GEMM rate
            rate += f", {a2 * 2 * gemm['madds_per_second']:.2f} x the arithmetic floor's"
        lines += [
            "",
            f"{title}:",
            "",
            f"    pass   = {a0:.3f} s + {a1:.3e} s * n*P + {a2:.3e} s * n*P^2   "
            f"(n*P^2 term: {rate})",
            f"    client = {b0:.3f} s + {b1:.3e} s * sum_layers p^3 "
            f"+ {b2:.3e} s * sum_pairs p*q*min(p,q)",
            "",
            f"measured / predicted: {min(errs) + 1:.2f} to {max(errs) + 1:.2f} "
            f"(mean |error| {np.mean(np.abs(errs)):.0%})",
        ]
    return lines


def report(args, cfg, points, coefs, paths, write_seconds, load_start, gemm) -> str:
    disk = disk_bytes([p for pp in paths.values() for p in _flat(pp)])
    cmd = " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
    lines = [
        "# dask_repsim scaling benchmark" + (" (--quick)" if args.quick else ""),
        "",
        f"command: {cmd}",
        *_run_lines(load_start),
        f"data: float32 Zarr v3, chunks of {cfg['chunk_rows']:,} rows, zarr default codecs, "
        f"{_gb(disk)} GB on disk (written in {write_seconds:.0f} s this run); seed {args.seed}",
        f"schedulers: 2-4 Dask's local threaded scheduler ({os.cpu_count()} threads), BLAS "
        f"threads per process: {args.blas_threads or 'library default'}; 1 distributed "
        "LocalCluster, BLAS 1 thread per worker (distributed's default)",
        f"repeats: {args.repeat}, interleaved (seconds: fastest run; peak memory: highest); "
        "page cache warmed by reading the data once before each part",
        "",
    ]
    lines += _workers_table(points, gemm)
    for part in ("samples", "features", "layers"):
        table = _part_table(points, part, coefs, gemm)
        if table:
            lines += ["", *table]
    lines += [
        "",
        "seconds: the compare call in its own process (imports and an untimed warm-up "
        "excluded); pass: the Dask compute (read, float64 co-moments, tree reduction); client: "
        "the rest (graph, decompositions and measures of every pair); predicted: the fitted "
        "formulas below; CPU s: the process's CPU time during the call; cores used: CPU time "
        "/ wall time of the pass (2 at most here; less when other jobs hold the cores); peak "
        "GB: the process's own peak RSS (VmHWM), imports included; read s: one read pass over the "
        "point's arrays (column sums, threaded scheduler, own process, page cache warm, the "
        "faster of two); "
        "arithmetic s: n (sum_layers p^2 / 2 + sum_pairs p q) float64 multiply-adds (own "
        "co-moment blocks as symmetric products, syrk; cross blocks of the pairs compared) at "
        "the GEMM rate below; x floor: seconds / the larger of read s and arithmetic s.",
        "",
        *gemm_lines(gemm),
        "",
        *_fit_lines(coefs, points, gemm),
    ]
    if args.repeat > 1:
        lines += ["", "all repeats (seconds):"]
        for pt in points:
            lines.append(
                f"  {pt['part']} {pt['label']}: "
                + ", ".join(f"{s:.2f}" for s in best(pt)["all_seconds"])
            )
    checks = {(pt["part"], pt["label"]): best(pt) for pt in points}
    passes = {r["n_passes"] for r in checks.values()}
    lines += ["", f"passes over the data per compare: {sorted(passes)}"]
    if ("workers", "1") in checks and ("samples", f"{cfg['workers']['rows']:,}") in checks:
        c1 = np.array(checks[("workers", "1")]["cka"])
        c0 = np.array(checks[("samples", f"{cfg['workers']['rows']:,}")]["cka"])
        diff = np.abs(c1 - c0).max()
        lines.append(f"CKA, 1-worker cluster vs threaded, same pair: max difference {diff:.1e}")
    return "\n".join(lines) + "\n"


def _flat(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for v in value for s in _flat(v)]


def drive(args: argparse.Namespace) -> None:
    cfg = QUICK if args.quick else FULL
    parts = list(PARTS) if args.parts == "all" else args.parts.split(",")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    load_start = os.getloadavg()
    started = time.perf_counter()
    paths, write_seconds = ensure_data(cfg, parts, Path(args.data_dir), args.seed)
    print(f"data ready ({write_seconds:.0f} s writing)", flush=True)
    gemm = measure_gemm(args.gemm_size)
    print(f"GEMM rate {gemm['madds_per_second']:.3g} multiply-adds/s", flush=True)
    points = plan(cfg, parts, paths)
    for part in parts:
        pts = [p for p in points if p["part"] == part]
        warm_cache([p["spec"][k] for p in pts for k in ("a", "b")])
        for pt in pts:  # the read floor, the faster of two passes (compare is timed warm too)
            pt["read"] = measure_read(_spec_paths(pt["spec"]))["seconds"]
        for _ in range(args.repeat):
            for pt in pts:  # interleaved: drift in the machine's load hits every point
                pt["runs"].append(spawn(pt["spec"], args.blas_threads))
                r = pt["runs"][-1]
                print(
                    f"{part} {pt['label']}: {r['seconds']:.2f} s (pass {r['pass_seconds']:.2f},"
                    f" client {r['client_seconds']:.2f}); load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    coefs = {kind: fit(points, kind) for kind in ("seconds", "cpu")}
    text = report(args, cfg, points, coefs, paths, write_seconds, load_start, gemm)
    text += f"total run time: {time.perf_counter() - started:.0f} s\n"
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stem = "scaling" + ("_quick" if args.quick else "")
    if parts != list(PARTS):
        stem += "_" + "-".join(parts)
    if args.blas_threads != 1:
        stem += f"_blas{args.blas_threads or 'default'}"
    record = {
        "command": sys.argv,
        "config": cfg,
        "repeat": args.repeat,
        "blas_threads": args.blas_threads,
        "load_average_start": load_start,
        "versions": _versions(),
        "fit": coefs,
        "gemm": gemm,
        "points": [{k: v for k, v in p.items() if k != "spec"} | {"best": best(p)} for p in points],
    }
    (results / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    (results / f"{stem}.txt").write_text(text)
    print()
    print(text)
    print(f"written to {results / stem}.txt")
    if args.clean:  # this run's data sets only
        for d in sorted({Path(f).parent for pp in paths.values() for f in _flat(pp)}):
            shutil.rmtree(d)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke version (< 1 min)")
    parser.add_argument("--parts", default="all", help="comma-separated, from " + ",".join(PARTS))
    parser.add_argument("--repeat", type=int, default=None, help="runs per point (2; quick: 1)")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads of the measuring processes (0: library default; default 1, as "
        "distributed gives its workers: no oversubscription of Dask's threads)",
    )
    add_gemm_argument(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(HERE / "data"))
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    parser.add_argument("--clean", action="store_true", help="delete the scaling data afterwards")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return
    if args.repeat is None:
        args.repeat = 1 if args.quick else 2
    drive(args)


if __name__ == "__main__":
    main()
