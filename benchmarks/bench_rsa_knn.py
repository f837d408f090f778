"""Sample-space measures benchmark: RSA and mutual k-NN over row-block tiles against the
in-memory tools, which hold n x n matrices.

Two float32 Zarr v3 arrays X, Y (n x ``--features``, ReLU features of shared latent factors)
are written to ``benchmarks/data/``. At ``--rows`` (10,000) four steps run, each in its own
Python process: our RSA (correlation RDM, Pearson comparison) against rsatoolbox's ``calc_rdm``
+ ``compare`` on the data loaded into memory in float64, and our mutual k-NN (k = 10; CKNNA from
the same pass) against numpy holding the n x n cosine-similarity matrix. At ``--large-rows``
(50,000) ours run alone; the table states what the in-memory tools would need there. Reported:
the wall time of the work (imports excluded) and the process's peak resident set size
(``wait4``'s ``ru_maxrss``, imports included). Our steps run with the dask config
``repsim.memory-budget`` set to ``--budget`` (the package holds BLAS to one thread per task);
rsatoolbox and numpy run with BLAS at its default threads (all cores, their best).

The floor at each n (``_common.py``) is the larger of one read pass over the pair and the
arithmetic floor: the two n x n similarity matrices as symmetric products, n^2 (p+q) / 2
multiply-adds (the RDM comparison and the top-k selection not counted), at the GEMM rate
measured in the same run.

Examples
--------
::

    python benchmarks/bench_rsa_knn.py                       # 10,000 and 50,000 x 512
    python benchmarks/bench_rsa_knn.py --large-rows 0        # the 10,000-sample comparison only
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

HERE = Path(__file__).resolve().parent
LATENT = 32
STEPS = {
    "rsa": "dask_repsim rsa (row-block tiles, streamed moments)",
    "rsatoolbox": "rsatoolbox calc_rdm + compare (corr), data in memory (float64)",
    "knn": "dask_repsim mutual k-NN, k=10 (row-block tiles, running top-k)",
    "numpy_knn": "numpy: n x n cosine similarities in memory, argpartition top-k",
}


def _write_pair(path: Path, rows: int, features: int, chunk_rows: int) -> None:
    if (path / "zarr.json").exists():
        return
    rng = np.random.default_rng(0)
    ax = rng.normal(size=(LATENT, features)).astype(np.float32)
    ay = (ax + rng.normal(size=(LATENT, features)).astype(np.float32)) / 2
    root = zarr.open_group(path, mode="w")
    arrays = [root.create_array(name, shape=(rows, features), chunks=(chunk_rows, features),
                                dtype="float32", dimension_names=("sample", "unit"))
              for name in ("x", "y")]
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        block = np.random.default_rng([1, start])
        z = block.standard_normal((stop - start, LATENT), dtype=np.float32)
        for arr, a in zip(arrays, (ax, ay), strict=True):
            noise = block.standard_normal((stop - start, features), dtype=np.float32)
            arr[start:stop] = np.maximum(z @ a + 2.0 * noise, 0)


def _numpy_knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    def neighbours(z: np.ndarray) -> np.ndarray:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        s = z @ z.T
        np.fill_diagonal(s, -np.inf)
        return np.argpartition(s, -k, axis=1)[:, -k:]

    nx, ny = neighbours(x), neighbours(y)
    both = np.sort(np.concatenate([nx, ny], axis=1), axis=1)
    return float(np.mean((both[:, 1:] == both[:, :-1]).sum(axis=1) / k))


def run_step(step: str, path: str, budget: str) -> dict:
    import dask

    start = time.perf_counter()
    extra: dict = {}
    if step in ("rsatoolbox", "numpy_knn"):
        root = zarr.open_group(path, mode="r")
        x, y = (root[name][...].astype(np.float64) for name in ("x", "y"))
        if step == "numpy_knn":
            value = _numpy_knn(x, y, 10)
        else:
            from rsatoolbox.data import Dataset
            from rsatoolbox.rdm import calc_rdm, compare

            rdms = [calc_rdm(Dataset(z), method="correlation") for z in (x, y)]
            value = float(compare(rdms[0], rdms[1], method="corr")[0, 0])
    else:
        from dask_repsim.io.inputs import as_layer
        from dask_repsim.pairwise.samples import rsa
        from dask_repsim.paths.sample_blocks.neighbours import knn_values

        with dask.config.set({"repsim.memory-budget": budget}):
            if step == "rsa":
                value = float(rsa(f"{path}/x", f"{path}/y"))
            else:
                layers = as_layer(f"{path}/x", name="x"), as_layer(f"{path}/y", name="y")
                values = knn_values(*layers, 10, measures=("mutual_knn", "cknna"))
                value, extra = values["mutual_knn"], {"cknna": values["cknna"]}
    return {"value": value, "seconds": time.perf_counter() - start, **extra}


def _child(step: str, path: Path, budget: str) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--path", str(path), "--budget", budget]
    env = child_env(PYTHONPATH=str(HERE.parent))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {"error": f"exit status {status}"}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gb"] = usage.ru_maxrss / 2**20  # KiB on Linux
    return result


def in_memory_need(n: int, p: int) -> dict[str, float]:
    """GB the in-memory tools need at least: the float64 data of both layers and, at once,
    rsatoolbox's einsum result and ``1 -`` it (two n x n float64); numpy k-NN's similarity
    matrix and its argpartition indices (n x n float64 and int64)."""
    data = 2 * n * p * 8
    return {"rsatoolbox": (data + 2 * 8 * n * n) / 1e9, "numpy_knn": (data + 2 * 8 * n * n) / 1e9}


def _line(step: str, n: int, p: int, r: dict, floor: float) -> str:
    shape = f"{n} x {p} (x2)"
    if "error" in r:
        return f"{step:<11} {shape:<18} {r['error']}"
    note = f"; CKNNA {r['cknna']:.8f}" if "cknna" in r else ""
    return (f"{step:<11} {shape:<18} {r['value']:12.8f} {r['seconds']:9.1f} "
            f"{r['peak_rss_gb']:8.2f} {r['seconds'] / floor:8.2f}  {STEPS[step]}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--large-rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--chunk-rows", type=int, default=2_000)
    parser.add_argument("--budget", default="2GB")
    add_gemm_argument(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_step(args.child, args.path, args.budget)))
        return

    from bench_core import _run_lines

    p = args.features
    start_load = os.getloadavg()
    table = [f"{'step':<11} {'shape':<18} {'value':>12} {'seconds':>9} {'peak GB':>8} "
             f"{'x floor':>8}  what"]
    gemm = measure_gemm(args.gemm_size)
    floor_text = gemm_lines(gemm)
    runs = [(args.rows, list(STEPS))]
    if args.large_rows:
        runs.append((args.large_rows, ["rsa", "knn"]))
    for n, steps in runs:
        path = HERE / "data" / f"rsa_knn_n{n}_p{p}.zarr"
        _write_pair(path, n, p, args.chunk_rows)
        read = measure_read([path])
        floor, lines = floor_lines(n * n * p, f"n^2 (p+q) / 2 with n = {n:,}, p = q = {p} (the "
                                   "two n x n similarity matrices as symmetric products)", gemm,
                                   read["seconds"])
        floor_text += ["", f"{n:,} samples: read pass over {read['bytes'] / 1e9:.2f} GB, "
                       + " and ".join(f"{t:.2f}" for t in read["times"])
                       + " s (the faster counts)", *lines]
        for step in steps:
            table.append(_line(step, n, p, _child(step, path, args.budget), floor))
            print(table[-1], flush=True)
        if n == args.large_rows:
            need = in_memory_need(n, p)
            for step in ("rsatoolbox", "numpy_knn"):
                table.append(f"{step:<11} {f'{n} x {p} (x2)':<18} not run: needs at least "
                             f"{need[step]:.0f} GB (two {n} x {n} 8-byte matrices and the "
                             "data in float64)")
                print(table[-1], flush=True)
    header = [
        "# dask_repsim sample-space measures benchmark: RSA and mutual k-NN against rsatoolbox "
        "and numpy in memory",
        "",
        "command: python benchmarks/bench_rsa_knn.py " + " ".join(sys.argv[1:]),
        *_run_lines(start_load),
        f"dask_repsim steps: dask config repsim.memory-budget {args.budget}, BLAS 1 thread per "
        "task (the package's own); rsatoolbox and numpy: BLAS at its default threads (all "
        "cores); each step in its own process; seconds: the work (imports excluded); peak GB: "
        "the process's peak RSS; x floor: seconds / the floor at that n (below)",
        "",
    ]
    out = HERE / "results" / "rsa_knn.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(header + table + ["", *floor_text]) + "\n")


if __name__ == "__main__":
    main()
