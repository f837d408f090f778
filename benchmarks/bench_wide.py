"""Wide-layer benchmark: exact linear CKA by Gram blocks and by feature tiles, RBF CKA by Gram
blocks, against the same formulas in memory with numpy.

Two float32 Zarr v3 arrays X, Y (``--rows`` x ``--features``, flattened-conv-like ReLU features
of shared latent factors) are written to ``benchmarks/data/``; a second pair (``--rbf-rows`` x
``--rbf-features``) serves RBF CKA. Each step runs in its own Python process; reported are the
wall time of the work (imports excluded) and the process's peak resident set size (``wait4``'s
``ru_maxrss``, imports included). numpy steps are skipped when their arrays (data in float64
and the two n x n Gram matrices) would exceed ``--numpy-limit-gb``. numpy runs with BLAS at its
default threads (all cores, its best); the package holds BLAS to one thread per task itself.

The floor of each pair (``_common.py``) is the larger of one read pass over it and the
arithmetic floor at the GEMM rate measured in the same run: for linear CKA the fewer of the
multiply-adds of the two n x n Grams, n^2 (p+q) / 2, and of the co-moment of [X | Y],
n (p+q)^2 / 2, both as symmetric products (syrk); for RBF CKA the two Grams' (the exponentials
and the median not counted). Figures kept from earlier runs get no ratio to this run's floor.

Examples
--------
::

    python benchmarks/bench_wide.py                               # 20,000 x 16,384; 50,000 x 64
    python benchmarks/bench_wide.py --rows 4000 --features 4096 --rbf-rows 10000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr
from _common import (
    add_gemm_argument,
    child_env,
    floor_lines,
    gemm_lines,
    measure_gemm,
    measure_read,
)
from bench_core import _run_lines

HERE = Path(__file__).resolve().parent
LATENT = 64
STEPS = {
    "gram": "dask_repsim.paths.gram.samplespace.gram_cells (Gram tiles)",
    "tiled": "dask_repsim.paths.tiled.cka_values (feature tiles)",
    "numpy_linear": "numpy in memory: Gram matrices of centred data, HSIC; BLAS all threads",
    "rbf": "dask_repsim.paths.gram.samplespace.gram_cells (Gram tiles, RBF)",
    "numpy_rbf": "numpy in memory: gram_rbf + HSIC; BLAS all threads",
}


def _write_pair(path: Path, rows: int, features: int, seed: int, chunk_rows: int) -> None:
    if (path / "zarr.json").exists():
        return
    rng = np.random.default_rng(seed)
    ax = rng.normal(size=(LATENT, features)).astype(np.float32) / np.sqrt(LATENT)
    ay = (ax + rng.normal(size=(LATENT, features)).astype(np.float32) / np.sqrt(LATENT)) / 2
    root = zarr.open_group(path, mode="w")
    arrays = [
        root.create_array(
            name,
            shape=(rows, features),
            chunks=(chunk_rows, features),
            dtype="float32",
            dimension_names=("sample", "unit"),
        )
        for name in ("x", "y")
    ]
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        block = np.random.default_rng([seed, start])
        z = block.standard_normal((stop - start, LATENT), dtype=np.float32)
        for arr, a in zip(arrays, (ax, ay), strict=True):
            noise = block.standard_normal((stop - start, features), dtype=np.float32)
            arr[start:stop] = np.maximum(z @ a + 0.5 * noise, 0)


def _numpy_cka(x: np.ndarray, y: np.ndarray, sigma: float | None) -> float:
    def gram(a: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=0)
        k = a @ a.T
        if sigma is None:
            return k
        sq = np.diag(k).copy()
        k *= -2
        k += sq[:, None]
        k += sq[None, :]
        k /= -2 * sigma**2 * np.median(k)
        return np.exp(k, out=k)

    def centre(k: np.ndarray) -> np.ndarray:
        m = k.mean(axis=0)
        k -= m[None, :]
        k -= m[:, None]
        k += m.mean()
        return k

    k = centre(gram(x))
    g = centre(gram(y))
    xy, xx, yy = (float(np.einsum("ij,ij->", a, b)) for a, b in ((k, g), (k, k), (g, g)))
    return xy / np.sqrt(xx * yy)


def run_step(step: str, path: str, sigma: float) -> dict:
    from dask_repsim.io.inputs import as_layer
    from dask_repsim.paths import tiled as tiles
    from dask_repsim.paths.gram import samplespace

    start = time.perf_counter()
    extra = {}
    if step.startswith("numpy"):
        root = zarr.open_group(path, mode="r")
        x = root["x"][...].astype(np.float64)
        y = root["y"][...].astype(np.float64)
        value = _numpy_cka(x, y, sigma if step == "numpy_rbf" else None)
    else:
        lx, ly = as_layer(f"{path}/x", name="x"), as_layer(f"{path}/y", name="y")
        if step == "tiled":
            (value,) = tiles.cka_values(lx, ly, (False,))
        else:  # what dr.cka(method="gram") and dr.cka(kernel="rbf") run: a grid of one cell
            spec = {"debiased": False} if step == "gram" else {"kernel": "rbf", "sigma": sigma}
            cells, _ = samplespace.gram_cells([spec], [lx, ly], [0], [1], seed=0)
            value = cells[0, 0, 0].value
            if step == "rbf":
                extra = {"median_exact": cells[0, 0, 0].fields["median_exact"]}
    return {"value": float(value), "seconds": time.perf_counter() - start, **extra}


def _child(step: str, path: Path, sigma: float) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--path", str(path), "--sigma", str(sigma)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {"error": f"exit status {status}"}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gb"] = usage.ru_maxrss / 2**20  # KiB on Linux
    return result


def _set(step: str) -> str:
    return "rbf" if "rbf" in step else "linear"


def _floors(args: argparse.Namespace, steps: list[str], wide: Path, narrow: Path):
    """Each needed pair's floor, max(read pass, arithmetic floor), and the report's lines."""
    gemm = measure_gemm(args.gemm_size)
    floors, text = {}, gemm_lines(gemm)
    sets = {"linear": (args.rows, args.features, wide),
            "rbf": (args.rbf_rows, args.rbf_features, narrow)}
    for name in sorted({_set(step) for step in steps}):
        n, p, path = sets[name]
        read = measure_read([path])
        grams = n * n * p  # n^2 (p + q) / 2, p = q
        if name == "linear":
            madds = min(grams, 2 * n * p * p)  # or n (p + q)^2 / 2
            counted = (f"min(n^2 (p+q) / 2, n (p+q)^2 / 2) with n = {n:,}, p = q = {p:,} (the "
                       "two n x n Grams, or the co-moment of [X | Y], as symmetric products)")
        else:
            madds = grams
            counted = (f"n^2 (p+q) / 2 with n = {n:,}, p = q = {p:,} (the two n x n Grams as "
                       "symmetric products; exponentials and median not counted)")
        floors[name], lines = floor_lines(madds, counted, gemm, read["seconds"])
        text += ["", f"{name} pair: read pass over {read['bytes'] / 1e9:.2f} GB, "
                 + " and ".join(f"{t:.2f}" for t in read["times"]) + " s (the faster counts)",
                 *lines]
    return floors, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--rbf-rows", type=int, default=50_000)
    parser.add_argument("--rbf-features", type=int, default=64)
    parser.add_argument("--sigma", type=float, default=0.8)
    parser.add_argument("--chunk-rows", type=int, default=1024)
    parser.add_argument("--numpy-limit-gb", type=float, default=16.0)
    parser.add_argument("--steps", default=",".join(STEPS))
    add_gemm_argument(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_step(args.child, args.path, args.sigma)))
        return

    wide = HERE / "data" / f"wide_n{args.rows}_p{args.features}.zarr"
    narrow = HERE / "data" / f"wide_rbf_n{args.rbf_rows}_p{args.rbf_features}.zarr"
    steps = args.steps.split(",")
    load_start = os.getloadavg()
    if {"gram", "tiled", "numpy_linear"} & set(steps):
        _write_pair(wide, args.rows, args.features, 0, args.chunk_rows)
    if {"rbf", "numpy_rbf"} & set(steps):
        _write_pair(narrow, args.rbf_rows, args.rbf_features, 1, args.chunk_rows * 8)
    floors, floor_text = _floors(args, steps, wide, narrow)

    def numpy_gb(n: int, p: int) -> float:
        return (2 * n * p * 8 + 2 * n * n * 8) / 1e9

    lines = [
        f"# bench_wide: {' '.join(sys.argv[1:]) or '(defaults)'}",
        "command: python benchmarks/bench_wide.py " + " ".join(sys.argv[1:]),
        *_run_lines(load_start),
        f"{'step':<13} {'shape':<18} {'value':>12} {'seconds':>9} {'peak GB':>8} "
        f"{'x floor':>8}  what",
    ]
    out = HERE / "results" / f"wide_{args.rows}x{args.features}_rbf{args.rbf_rows}.txt"
    # steps not run this time keep their figures from the last run at these sizes
    saved = out.with_suffix(".json")
    earlier = json.loads(saved.read_text()) if saved.exists() else {}
    results = {}
    for step in steps:
        n, p, path = (
            (args.rbf_rows, args.rbf_features, narrow)
            if "rbf" in step
            else (args.rows, args.features, wide)
        )
        shape = f"{n} x {p} (x2)"
        if step.startswith("numpy") and numpy_gb(n, p) > args.numpy_limit_gb:
            lines.append(f"{step:<13} {shape:<18} skipped: needs {numpy_gb(n, p):.1f} GB")
            print(lines[-1], flush=True)
            continue
        r = _child(step, path, args.sigma)
        r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results[step] = r
        if "error" in r:
            lines.append(f"{step:<13} {shape:<18} {r['error']}")
        else:
            lines.append(
                f"{step:<13} {shape:<18} {r['value']:12.8f} {r['seconds']:9.1f} "
                f"{r['peak_rss_gb']:8.2f} {r['seconds'] / floors[_set(step)]:8.2f}  "
                f"{STEPS[step]}" + ("" if r.get("median_exact", True) else " [sampled median]")
            )
        print(lines[-1], flush=True)
    kept = {k: v for k, v in earlier.items() if k not in results and "error" not in v}
    for step, r in kept.items():
        n, p = (args.rbf_rows, args.rbf_features) if "rbf" in step else (args.rows, args.features)
        lines.append(
            f"{step:<13} {f'{n} x {p} (x2)':<18} {r['value']:12.8f} {r['seconds']:9.1f} "
            f"{r['peak_rss_gb']:8.2f} {'-':>8}  {STEPS[step]} (earlier run, "
            f"{r.get('date', 'undated')})"
        )
    lines += ["", *floor_text]
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({**kept, **results}, indent=1))


if __name__ == "__main__":
    main()
