"""Core benchmark: dask_repsim's one-pass statistics against dask's own Z^T Z and numpy in memory.

For a float32 pair X, Y (n x 256 each, ReLU-like, correlated) stored as Zarr v3 arrays, one run
measures, each step in its own subprocess so that its peak memory is its own:

(a) a read-only pass: column sums of both arrays, one ``dask.compute`` (the I/O floor);
(b) plain dask's float64 ``Z.T @ Z`` for ``Z = [X | Y]`` read from the same files (one
    compute), in its best configuration: BLAS held to one thread per call
    (``threadpoolctl``), so each of Dask's threads runs a single-threaded BLAS;
(c) ``dask_repsim.compare(x_path, y_path)`` with all eight measures (the package holds BLAS to
    one thread per task in its passes itself);
(d) the eight measures from the data in memory with plain numpy/scipy, BLAS at its default
    threads (all cores: its best; skipped when the data would not fit in ``--numpy-limit-gb``);
(b') with ``--oversubscribed-dask`` only: (b) with BLAS at its default, a team of threads
    inside each of Dask's threads; a labelled footnote row, not a baseline.

(a)-(c) use Dask's default local threaded scheduler. Wall time is timed inside the child around
the work only (opening the arrays and building the graph included, interpreter start-up and
imports not); peak memory is the child's peak resident set size (``ru_maxrss`` from ``wait4``),
imports included, so the "baseline" column (RSS after imports) is also reported. The values of
(c) are checked against (d), so the benchmark doubles as a sanity check.

The floor (``_common.py``) is the larger of the read pass (a) and the arithmetic floor: the
n (p+q)^2 / 2 float64 multiply-adds of the co-moment matrix Z^T Z done as a symmetric product
(syrk, which the package's pass uses; a general product needs twice as many) at this machine's
GEMM rate, measured in the same run in a process of its own, both with all BLAS threads in one
product and with one BLAS thread in each of the cores' threads; the floor takes the higher rate.

Examples
--------
::

    python benchmarks/bench_core.py                    # 1,000,000 rows
    python benchmarks/bench_core.py --rows 4000000     # 8 GB on disk; (d) skipped
    python benchmarks/bench_core.py --rows 200000 --chunk-rows 16384 --repeat 3
    python benchmarks/bench_core.py --oversubscribed-dask    # adds (b') as a footnote row

The data go to ``benchmarks/data/`` (reused by later runs with the same rows and chunking;
``--clean`` deletes them afterwards); the table goes to stdout and to
``benchmarks/results/core_<rows>.txt`` (with ``_chunk<c>`` when the chunking is not the
default) together with the command line, the machine and package versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import scipy.linalg
import zarr
from _common import (
    add_gemm_argument,
    child_env,
    floor_lines,
    gemm_lines,
    measure_gemm,
    one_blas_thread,
)

import dask_repsim

HERE = Path(__file__).resolve().parent
FEATURES = 256
DEFAULT_CHUNK_ROWS = 65536
# Rows generated per random-number stream: the data do not depend on the storage chunking, and
# the first n rows of a larger data set are the n-row data set.
GEN_ROWS = 16384
LATENT = 64
# What compare computes by default: the eight similarity measures.
METRIC_NAMES = tuple(dask_repsim.DEFAULT_METRICS)
STEPS = {
    "a": "read both arrays: column sums (I/O floor)",
    "b": "plain dask float64 Z.T @ Z, Z = [X | Y]",
    "c": "dask_repsim.compare, 8 measures",
    "d": "numpy/scipy in memory, 8 measures",
    "e": "(c) with jackknife intervals (20 groups)",
    "f": "(c) with a permutation test, K = 100",
    "b'": "footnote, not a baseline: (b) with BLAS oversubscribed",
}
# How each step runs BLAS (the table's column): every baseline in its best configuration.
BLAS = {
    "a": "none",
    "b": "1 per dask thread",
    "c": "1 per task (package)",
    "d": "default (all cores)",
    "e": "1 per task (package)",
    "f": "1 per task (package)",
    "b'": "default in each dask thread",
}
PERMUTATIONS = 100


# --------------------------------------------------------------------------- data


def _mixing(seed: int, features: int) -> dict[str, np.ndarray]:
    """Fixed loadings and biases: X and Y read the same latent factors through different maps."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(LATENT, features)) / np.sqrt(LATENT)
    return {
        "ax": shared + 0.5 * rng.normal(size=(LATENT, features)) / np.sqrt(LATENT),
        "ay": shared + 0.5 * rng.normal(size=(LATENT, features)) / np.sqrt(LATENT),
        # Biases in [-0.5, 0.5] keep every unit active on 30-70% of samples: no dead units,
        # so CCA has full rank and the numpy reference needs no special cases.
        "bx": rng.uniform(-0.5, 0.5, size=features),
        "by": rng.uniform(-0.5, 0.5, size=features),
        # A unit-specific scale gives the layers anisotropic spectra (SVCCA keeps a subset).
        "sx": np.exp(rng.normal(scale=0.5, size=features)),
        "sy": np.exp(rng.normal(scale=0.5, size=features)),
    }


def _generate(start: int, stop: int, seed: int, mix: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start:stop`` of X and Y (float32), the same whatever blocks they are asked in."""
    xs, ys = [], []
    for block in range(start // GEN_ROWS, (stop - 1) // GEN_ROWS + 1):
        rng = np.random.default_rng([seed, block])
        latent = rng.standard_normal((GEN_ROWS, LATENT), dtype=np.float32)
        p = mix["ax"].shape[1]
        for out, a, b, s in ((xs, "ax", "bx", "sx"), (ys, "ay", "by", "sy")):
            z = latent @ mix[a].astype(np.float32)
            z += 0.7 * rng.standard_normal((GEN_ROWS, p), dtype=np.float32)
            z += mix[b].astype(np.float32)
            np.maximum(z, 0, out=z)
            z *= mix[s].astype(np.float32)
            out.append(z)
    first = (start // GEN_ROWS) * GEN_ROWS
    x = np.concatenate(xs)[start - first : stop - first]
    y = np.concatenate(ys)[start - first : stop - first]
    return x, y


def data_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    root = Path(args.data_dir) / f"core_n{args.rows}_p{args.features}_c{args.chunk_rows}"
    return root / "x.zarr", root / "y.zarr"


def ensure_data(args: argparse.Namespace) -> tuple[Path, Path, float]:
    """Write X and Y chunk by chunk (never the whole array in memory) unless already there."""
    xp, yp = data_paths(args)
    meta = {"rows": args.rows, "features": args.features, "seed": args.seed, "complete": True}
    try:
        if all(dict(zarr.open_array(store=str(p), mode="r").attrs) == meta for p in (xp, yp)):
            return xp, yp, 0.0
    except (FileNotFoundError, ValueError, KeyError):
        pass
    shutil.rmtree(xp.parent, ignore_errors=True)
    xp.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    mix = _mixing(args.seed, args.features)
    arrays = [
        zarr.create_array(
            store=str(p),
            shape=(args.rows, args.features),
            chunks=(args.chunk_rows, args.features),
            dtype="float32",
            dimension_names=("sample", "unit"),
        )
        for p in (xp, yp)
    ]
    for start in range(0, args.rows, args.chunk_rows):
        stop = min(start + args.chunk_rows, args.rows)
        x, y = _generate(start, stop, args.seed, mix)
        arrays[0][start:stop] = x
        arrays[1][start:stop] = y
    # Marked complete last, so an interrupted write is not mistaken for data.
    for arr in arrays:
        arr.attrs.update(meta)
    return xp, yp, time.perf_counter() - t0


# --------------------------------------------------------------------------- steps


def step_read(xp: Path, yp: Path) -> dict:
    x, y = da.from_zarr(str(xp)), da.from_zarr(str(yp))
    sx, sy = dask.compute(x.sum(axis=0), y.sum(axis=0))
    return {"check": float(sx.sum() + sy.sum())}


def step_gram(xp: Path, yp: Path) -> dict:
    """Plain dask at its best: one BLAS thread per call, so one per Dask thread."""
    with one_blas_thread():
        return step_gram_oversubscribed(xp, yp)


def step_gram_oversubscribed(xp: Path, yp: Path) -> dict:
    """Plain dask with BLAS at its default: a team of BLAS threads inside each Dask thread."""
    z = da.concatenate([da.from_zarr(str(xp)), da.from_zarr(str(yp))], axis=1).astype("float64")
    (gram,) = dask.compute(z.T @ z)
    return {"check": float(np.trace(gram))}


def step_compare(xp: Path, yp: Path) -> dict:
    ds = dask_repsim.compare(str(xp), str(yp))
    if set(ds.data_vars) != set(METRIC_NAMES):
        raise RuntimeError(f"compare gave {sorted(ds.data_vars)}, expected {METRIC_NAMES}")
    return {"values": {m: float(ds[m].values[0, 0]) for m in METRIC_NAMES}}


def step_interval(xp: Path, yp: Path) -> dict:
    ds = dask_repsim.compare(str(xp), str(yp), interval="jackknife")
    return {"values": {m: float(ds[m].values[0, 0]) for m in METRIC_NAMES}}


def step_permutations(xp: Path, yp: Path) -> dict:
    ds = dask_repsim.compare(str(xp), str(yp), permutations=PERMUTATIONS, seed=0)
    return {
        "values": {m: float(ds[m].values[0, 0]) for m in METRIC_NAMES},
        "pvalues": {m: float(ds[f"{m}_pvalue"].values[0, 0]) for m in METRIC_NAMES},
    }


def _load_fortran(path: Path) -> np.ndarray:
    """A zarr array as a float64 Fortran-order array, filled one stored chunk at a time."""
    arr = zarr.open_array(store=str(path), mode="r")
    out = np.empty(arr.shape, dtype=np.float64, order="F")
    step = arr.chunks[0]
    for start in range(0, arr.shape[0], step):
        out[start : start + step] = arr[start : start + step]
    return out


def numpy_measures(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The eight measures from the data themselves, with plain numpy/scipy, in float64.

    ``x`` and ``y`` are float64, Fortran order, and are overwritten (centred, then replaced by
    their QR factors' Q) to keep the peak at about the size of the data.

    CCA family from the data, not from covariances (Bjorck & Golub 1973): with thin QR
    ``X_c = Qx Rx`` and ``Y_c = Qy Ry``, the canonical correlations are the singular values of
    ``Qx^T Qy = U S V^T``; the canonical variates of X are ``H = Qx U``.
    """
    n = x.shape[0]
    x -= x.mean(axis=0)
    y -= y.mean(axis=0)

    # Kornblith et al. 2019, feature_space_linear_cka (their reference code), plain and debiased.
    xty = np.linalg.norm(x.T @ y) ** 2
    xtx = np.linalg.norm(x.T @ x)
    yty = np.linalg.norm(y.T @ y)
    rows_x = np.einsum("ij,ij->i", x, x)
    rows_y = np.einsum("ij,ij->i", y, y)
    tr_x, tr_y = rows_x.sum(), rows_y.sum()

    def hsic(dot: float, ra: np.ndarray, rb: np.ndarray, ta: float, tb: float) -> float:
        return dot - n / (n - 2.0) * ra.dot(rb) + ta * tb / ((n - 1) * (n - 2))

    cka = xty / (xtx * yty)
    cka_debiased = hsic(xty, rows_x, rows_y, tr_x, tr_y) / np.sqrt(
        hsic(xtx**2, rows_x, rows_x, tr_x, tr_x) * hsic(yty**2, rows_y, rows_y, tr_y, tr_y)
    )
    # Procrustes similarity ||X_c^T Y_c||_* / (||X_c||_F ||Y_c||_F) (Kornblith et al., Table 1).
    procrustes = np.linalg.svd(x.T @ y, compute_uv=False).sum() / np.sqrt(tr_x * tr_y)

    # In-place Householder QR: Q overwrites the centred data.
    qx, rx = scipy.linalg.qr(x, mode="economic", overwrite_a=True, check_finite=False)
    del x
    qy, ry = scipy.linalg.qr(y, mode="economic", overwrite_a=True, check_finite=False)
    del y
    qxy = qx.T @ qy
    u, rho, _ = np.linalg.svd(qxy)
    # R^2 of the least-squares fit of Y_c from X_c: ||Qx^T Y_c||_F^2 / ||Y_c||_F^2, where
    # Qx^T Y_c = Qx^T Qy Ry.
    linear_regression = np.linalg.norm(qxy @ ry) ** 2 / tr_y

    # SVCCA (Raghu et al. 2017): X_c = Qx (Ux S Vx^T), so the top-k singular directions of X_c
    # span Qx Ux[:, :k]; keep the smallest k holding 99% of the variance, then CCA between spans.
    def top(r: np.ndarray) -> np.ndarray:
        ur, s, _ = np.linalg.svd(r)
        share = np.cumsum(s**2) / np.sum(s**2)
        return ur[:, : int(np.searchsorted(share, 0.99)) + 1]

    svcca = np.linalg.svd(top(rx).T @ qxy @ top(ry), compute_uv=False).mean()

    # PWCCA (Morcos et al. 2018), X has no more units than Y: alpha_i = sum_j |<h_i, x_j>| with
    # H^T X_c = U^T Qx^T Qx Rx = U^T Rx.
    alpha = np.abs(u.T @ rx).sum(axis=1)
    pwcca = alpha @ rho / alpha.sum()
    return {
        "cka": float(cka),
        "cka_debiased": float(cka_debiased),
        "mean_cca": float(rho.mean()),
        "r2_cca": float(np.mean(rho**2)),
        "svcca": float(svcca),
        "pwcca": float(pwcca),
        "linear_regression": float(linear_regression),
        "procrustes": float(procrustes),
    }


def step_numpy(xp: Path, yp: Path) -> dict:
    t0 = time.perf_counter()
    x, y = _load_fortran(xp), _load_fortran(yp)
    load = time.perf_counter() - t0
    return {"values": numpy_measures(x, y), "load_seconds": load}


STEP_FUNCS = {
    "a": step_read,
    "b": step_gram,
    "c": step_compare,
    "d": step_numpy,
    "e": step_interval,
    "f": step_permutations,
    "b'": step_gram_oversubscribed,
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(args: argparse.Namespace) -> None:
    """Run one step in this process and print its result as one JSON line."""
    xp, yp = data_paths(args)
    baseline = _rss_bytes()
    t0 = time.perf_counter()
    out = STEP_FUNCS[args.step](xp, yp)
    out["seconds"] = time.perf_counter() - t0
    out["baseline_bytes"] = baseline
    out["peak_self_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------- driver


def spawn(args: argparse.Namespace, step: str) -> dict:
    """Run ``step`` in a fresh interpreter; its peak RSS comes from the kernel via ``wait4``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step]
    cmd += ["--rows", str(args.rows), "--features", str(args.features)]
    cmd += ["--chunk-rows", str(args.chunk_rows), "--seed", str(args.seed)]
    cmd += ["--data-dir", str(args.data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=child_env(), text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_bytes"] = usage.ru_maxrss * 1024
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def _versions() -> dict[str, str]:
    names = ["dask-repsim", "dask", "numpy", "scipy", "zarr", "numcodecs", "xarray"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = ", ".join(
            f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:
        out["blas"] = "unknown (threadpoolctl not installed)"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f}"


def _run_lines(load_start: tuple[float, ...]) -> list[str]:
    """Date, machine, load average at start and now, and package versions: a report's header."""
    return [
        f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"machine: {platform.platform()}; CPU: {_cpu_model()}; {os.cpu_count()} cores; "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB memory",
        "load average (1, 5, 15 min) at start: "
        + ", ".join(f"{x:.2f}" for x in load_start)
        + "; at end: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions: " + ", ".join(f"{k} {val}" for k, val in _versions().items()),
    ]


def arithmetic(args: argparse.Namespace) -> tuple[float, str]:
    """The multiply-adds of the co-moment pass, and how they are counted."""
    p = 2 * args.features
    return args.rows * p * p / 2, (f"n (p+q)^2 / 2 with n = {args.rows:,}, p + q = {p} (Z^T Z "
                                   "as a symmetric product, syrk; a general product: twice)")


def _table(results: dict[str, dict], floor: float, arithmetic_seconds: float) -> list[str]:
    ref = results.get("b")
    lines = [
        "| step | what | BLAS threads | seconds | CPU seconds | peak memory (GB) "
        "| baseline RSS (GB) | time / (b) | time / floor | peak memory / (b) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floors = {"arithmetic floor": ("n (p+q)^2 / 2 float64 multiply-adds (syrk of Z^T Z) at the "
                                   "GEMM rate", arithmetic_seconds),
              "floor": ("max((a), arithmetic floor)", floor)}
    # the floor after the measured steps, the footnote row (b') last
    for step in [*(s for s in STEPS if s != "b'"), *floors, "b'"]:
        if step in floors:
            what, seconds = floors[step]
            ratio_t = f"{seconds / ref['seconds']:.2f}" if ref else ""
            lines.append(f"| {step} | {what} | | {seconds:.2f} | | | | {ratio_t} "
                         f"| {seconds / floor:.2f} | |")
            continue
        r = results.get(step)
        if r is None:
            continue
        label = f"| ({step}) | {STEPS[step]} | {BLAS[step]}"
        if r.get("skipped"):
            lines.append(f"{label} | skipped | | | | | | |")
            continue
        ratio_t = f"{r['seconds'] / ref['seconds']:.2f}" if ref else ""
        ratio_m = f"{r['peak_bytes'] / ref['peak_bytes']:.2f}" if ref else ""
        lines.append(
            f"{label} | {r['seconds']:.2f} | {r['cpu_seconds']:.1f} | {_gb(r['peak_bytes'])} "
            f"| {_gb(r['baseline_bytes'])} | {ratio_t} | {r['seconds'] / floor:.2f} | {ratio_m} |"
        )
    return lines


def _value_check(results: dict[str, dict]) -> list[str]:
    if "values" not in results.get("d", {}):
        return ["(c) not checked against (d): the numpy step was skipped."]
    vc, vd = results["c"]["values"], results["d"]["values"]
    lines = ["| measure | (c) compare | (d) numpy | abs difference |", "|---|---:|---:|---:|"]
    for m in METRIC_NAMES:
        lines.append(f"| {m} | {vc[m]:.12f} | {vd[m]:.12f} | {abs(vc[m] - vd[m]):.2e} |")
    worst = max(abs(vc[m] - vd[m]) for m in METRIC_NAMES)
    lines.append("")
    lines.append(f"max abs difference (c) vs (d): {worst:.2e}")
    return lines


def _best(runs: list[dict]) -> dict:
    """Fastest repeat's time, highest peak memory over repeats."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["peak_bytes"] = max(r["peak_bytes"] for r in runs)
    best["all_seconds"] = [r["seconds"] for r in runs]
    return best


def _flatness(args: argparse.Namespace, results_dir: Path) -> list[str]:
    """(c)'s peak memory across the runs recorded so far with this chunking and width."""
    rows = []
    for path in sorted(results_dir.glob("core_*.json")):
        rec = json.loads(path.read_text())
        same = rec["chunk_rows"] == args.chunk_rows and rec["features"] == args.features
        same = same and not rec.get("uncertainty")
        if same and "c" in rec["results"]:
            rows.append((rec["rows"], rec["results"]["c"]["peak_bytes"]))
    if len(rows) < 2:
        return []
    rows.sort()
    low = min(b for _, b in rows)
    lines = ["(c) peak memory by number of rows (runs recorded in benchmarks/results/):", ""]
    lines += ["| rows | (c) peak memory (GB) | / smallest |", "|---:|---:|---:|"]
    lines += [f"| {n:,} | {_gb(b)} | {b / low:.3f} |" for n, b in rows]
    return lines


def _uncertainty_lines(results: dict[str, dict]) -> list[str]:
    """What intervals and permutations cost on top of (c), and the values they agree on."""
    a, c, e, f = (results[s] for s in "acef")
    same = max(
        abs(r["values"][m] - c["values"][m]) for r in (e, f) for m in METRIC_NAMES
    )
    added = f["seconds"] - c["seconds"]
    met = "met" if e["seconds"] <= 1.1 * c["seconds"] else "MISSED"
    return [
        f"(e) / (c): {e['seconds'] / c['seconds']:.2f} x -> target intervals add <= 10%: {met}",
        f"(f) - (c): {added:.1f} s for {PERMUTATIONS} permutations; "
        f"re-reading the data {PERMUTATIONS} times would take {PERMUTATIONS} x (a) = "
        f"{PERMUTATIONS * a['seconds']:.0f} s, and recomputing (c) {PERMUTATIONS} times "
        f"{PERMUTATIONS * c['seconds']:.0f} s",
        f"ratio (f) - (c) to {PERMUTATIONS} x (a): {added / (PERMUTATIONS * a['seconds']):.3f}; "
        f"to {PERMUTATIONS} x (c): {added / (PERMUTATIONS * c['seconds']):.3f} "
        f"-> target < 1: {'met' if added < PERMUTATIONS * a['seconds'] else 'MISSED'}",
        f"estimates of (e) and (f) equal (c)'s to {same:.1e}; p-values of (f): "
        + ", ".join(f"{m} {p:.3f}" for m, p in f["pvalues"].items()),
    ]


def drive(args: argparse.Namespace) -> None:
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    xp, yp, write_seconds = ensure_data(args)
    disk = sum(f.stat().st_size for p in (xp, yp) for f in p.rglob("*") if f.is_file())
    print(f"data: {xp.parent} ({_gb(disk)} GB on disk; written in {write_seconds:.1f} s)")

    steps = ["a", "b", "c"] + (["e", "f"] if args.uncertainty else [])
    numpy_gb = args.rows * 2 * args.features * 8 * 3 / 1e9
    skip_d = numpy_gb > args.numpy_limit_gb
    if not skip_d:
        steps.append("d")
    steps += ["b'"] if args.oversubscribed_dask else []
    if args.warmup:
        spawn(args, "a")  # untimed: every step then reads from the same (warm) page cache
    runs: dict[str, list[dict]] = {s: [] for s in steps}
    gemms = []
    for _ in range(args.repeat):
        for step in steps:  # interleaved, so that drift in machine load hits every step
            runs[step].append(spawn(args, step))
            print(f"({step}) {runs[step][-1]['seconds']:.2f} s", flush=True)
        gemms.append(measure_gemm(args.gemm_size))
        print(f"GEMM rate {gemms[-1]['madds_per_second']:.3g} multiply-adds/s", flush=True)
    results = {s: _best(r) for s, r in runs.items()}
    if skip_d:
        results["d"] = {"skipped": True}
    gemm = max(gemms, key=lambda g: g["madds_per_second"])
    madds, counted = arithmetic(args)
    floor, floor_text = floor_lines(madds, counted, gemm, results["a"]["seconds"])
    arithmetic_seconds = madds / gemm["madds_per_second"]

    lines = [
        f"# dask_repsim core benchmark: {args.rows:,} rows x ({args.features} + "
        f"{args.features}) float32",
        "",
        "command: " + " ".join(["python"] + [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        *_run_lines(load_start),
        f"dask scheduler: threaded (default), {os.cpu_count()} threads",
        "BLAS: every baseline in its best configuration: plain dask (b) with one BLAS thread "
        "per dask thread (threadpoolctl around its compute; a BLAS team inside each dask thread "
        f"oversubscribes the cores), numpy (d) with BLAS at its default, all {os.cpu_count()} "
        "cores; compare (c, e, f) holds BLAS to one thread per task in its passes itself; the "
        "step processes start without OMP/OPENBLAS/MKL thread variables"
        + ("; (b') at the bottom of the table is plain dask with BLAS oversubscribed, a "
           "footnote for comparison with earlier reports, not a baseline"
           if args.oversubscribed_dask else ""),
        f"data: {args.rows:,} x {args.features} float32 per array, chunks of {args.chunk_rows:,}"
        f" rows, zarr default codecs, {_gb(disk)} GB on disk for both; seed {args.seed}",
        f"repeats: {args.repeat} (seconds: fastest; peak memory: highest)"
        + ("; page cache warmed by an untimed (a)" if args.warmup else ""),
        "",
        *_table(results, floor, arithmetic_seconds),
        "",
        "seconds: wall time of the work inside the step's own process (imports excluded);",
        "CPU seconds: user + system time of that process, imports included;",
        "peak memory: that process's peak resident set size (imports included);",
        "baseline RSS: its resident set size after imports, before the work.",
    ]
    if skip_d:
        lines.append(
            f"(d) skipped: estimated {numpy_gb:.1f} GB (rows x {2 * args.features} x 8 bytes"
            f" x 3) exceeds --numpy-limit-gb {args.numpy_limit_gb:g}."
        )
    else:
        lines.append(f"(d) includes {results['d']['load_seconds']:.2f} s to load the arrays.")
    lines += ["", f"read pass (a): {results['a']['seconds']:.2f} s", *gemm_lines(gemm)]
    if len(gemms) > 1:
        lines.append(f"GEMM rates of the {len(gemms)} repeats (the highest is used): "
                     + ", ".join(f"{g['madds_per_second']:.3g}" for g in gemms))
    lines += floor_text
    if args.repeat > 1:
        lines.append("")
        for s in steps:
            lines.append(
                f"({s}) all repeats: " + ", ".join(f"{t:.2f}" for t in results[s]["all_seconds"])
            )
    lines += ["", *_value_check(results)]
    if "b" in results and "c" in results:
        c, b = results["c"], results["b"]
        lines += [
            "",
            f"target (c) time <= 1.0 x (b): {c['seconds'] / b['seconds']:.2f} x "
            f"-> {'met' if c['seconds'] <= b['seconds'] else 'MISSED'}",
            f"(c) / floor: {c['seconds'] / floor:.2f} x; (b) / floor: "
            f"{b['seconds'] / floor:.2f} x",
            f"target (c) peak memory <= 2.5 GB: {_gb(c['peak_bytes'])} GB "
            f"-> {'met' if c['peak_bytes'] <= 2.5e9 else 'MISSED'}",
        ]

    if args.uncertainty:
        lines += ["", *_uncertainty_lines(results)]

    suffix = "" if args.chunk_rows == DEFAULT_CHUNK_ROWS else f"_chunk{args.chunk_rows}"
    suffix += "_uncertainty" if args.uncertainty else ""
    stem = results_dir / f"core_{args.rows}{suffix}"
    record = {
        "rows": args.rows,
        "features": args.features,
        "chunk_rows": args.chunk_rows,
        "blas": {s: BLAS[s] for s in steps},
        "gemm": gemm,
        "arithmetic_madds": madds,
        "arithmetic_seconds": arithmetic_seconds,
        "floor_seconds": floor,
        "uncertainty": args.uncertainty,
        "results": {k: r for k, r in results.items() if not r.get("skipped")},
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    flat = _flatness(args, results_dir)
    if flat:
        lines += ["", *flat]
    text = "\n".join(lines) + "\n"
    stem.with_suffix(".txt").write_text(text)
    print()
    print(text)
    print(f"written to {stem.with_suffix('.txt')}")
    if args.clean:
        shutil.rmtree(xp.parent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=FEATURES, help="units per array")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each step")
    parser.add_argument("--numpy-limit-gb", type=float, default=16.0)
    parser.add_argument("--data-dir", default=str(HERE / "data"))
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    parser.add_argument(
        "--oversubscribed-dask", action="store_true",
        help="also (b'): plain dask with BLAS at its default inside each dask thread, a "
        "labelled footnote row (not a baseline)",
    )
    add_gemm_argument(parser)
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--clean", action="store_true", help="delete the data afterwards")
    parser.add_argument(
        "--uncertainty", action="store_true",
        help="also (e) compare with jackknife intervals and (f) with 100 permutations",
    )
    parser.add_argument("--step", choices=sorted(STEP_FUNCS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        run_child(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
