"""The field's measures added on the sample-space tiles, against in-memory implementations.

Two float32 Zarr v3 arrays X, Y (``--rows`` x ``--features``, 10,000 x 512 by default; ReLU
features of shared latent factors, as ``bench_rsa_knn.py``) in ``benchmarks/data/``. Each step
runs in its own Python process (wall time of the work, imports excluded; the process's peak
RSS, ``wait4``'s ``ru_maxrss``):

- ``knn``: dask_repsim's k-NN Jaccard, rank and joint rank-Jaccard similarity and second-order
  cosine similarity (k = 10), from one neighbour pass over row-block tiles and one more pass
  for second-order cosine, within ``repsim.memory-budget`` ``--budget``;
- ``numpy_knn``: the same four in memory as ReSi computes them (its code, not on PyPI, does not
  install here; written after it): the n x n cosine similarities, each sample's k nearest
  others, the per-sample loops of its ``rank_similarity``, and second-order vectors from the
  n x n matrices;
- ``distances``: dask_repsim's distance correlation, RSM norm difference, uniformity and
  concentricity differences, from one pass over the distance tiles;
- ``numpy_distances``: the four in memory: the n x n distance matrices in numpy, distance
  correlation by double centring them;
- ``dcor``: ``dcor.distance_correlation`` (the ``dcor`` package, the well-kept reference for
  distance correlation; skipped if not installed). Its multivariate distances broadcast to
  an n x n x p array, so it runs only where that fits in half the memory (1,000 x 512: 4 GB;
  10,000 x 512 would need 410 GB): ``--rows 1000`` shows its value beside ours.

numpy and dcor run with BLAS at its default threads (all cores, their best); ours with one
BLAS thread per task (the package's own). The floor (``_common.py``): the larger of one read
pass over the pair and the two n x n Gram matrices as symmetric products, ``n^2 (p+q) / 2``
multiply-adds, at the GEMM rate measured in the same run. Values of both sides are printed
side by side. Output: ``results/field_n<rows>.txt``.

Examples
--------
::

    python benchmarks/bench_field.py                       # 10,000 x 512
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
from bench_rsa_knn import _write_pair

HERE = Path(__file__).resolve().parent
K = 10
KNN = ("jaccard_knn", "rank_similarity", "joint_rank_jaccard", "second_order_cosine")
DIST = ("distance_correlation", "rsm_norm_difference", "uniformity_difference",
        "concentricity_difference")
STEPS = {
    "knn": "dask_repsim: k-NN Jaccard, rank, joint rank-Jaccard, second-order cosine (tiles)",
    "numpy_knn": "numpy in memory after ReSi: n x n similarities, per-sample loops",
    "distances": "dask_repsim: dCor, RSM norm, uniformity, concentricity (one tile pass)",
    "numpy_distances": "numpy in memory: n x n distances, double centring for dCor",
    "dcor": "dcor.distance_correlation (its n x n x p broadcast), distance correlation only",
}


def _numpy_knn(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    def cosine(z: np.ndarray) -> np.ndarray:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        return z @ z.T

    sims, lists = [], []
    for z in (x, y):
        s = cosine(z)
        t = s.copy()
        np.fill_diagonal(t, -np.inf)
        top = np.argpartition(t, -K, axis=1)[:, -K:]
        order = np.argsort(-np.take_along_axis(t, top, axis=1), axis=1, kind="stable")
        sims.append(s)
        lists.append(np.take_along_axis(top, order, axis=1).tolist())
    jac, rank, joint, second = [], [], [], []
    for i, (a, b) in enumerate(zip(*lists, strict=True)):
        shared = set(a) & set(b)
        j = len(shared) / len(set(a) | set(b))
        r = 0.0
        if shared:
            r = sum(2 / ((1 + abs(a.index(v) - b.index(v))) * (a.index(v) + b.index(v) + 2))
                    for v in shared) / sum(1 / m for m in range(1, len(shared) + 1))
        union = sorted(set(a) | set(b))
        u, w = sims[0][i, union], sims[1][i, union]
        jac.append(j)
        rank.append(r)
        joint.append(j * r)
        second.append(u @ w / np.sqrt((u @ u) * (w @ w)))
    return dict(zip(KNN, map(float, map(np.mean, (jac, rank, joint, second))), strict=True))


def _in_memory_distances(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    out = {}
    d2 = []
    for z in (x, y):
        sq = (z * z).sum(axis=1)
        d = sq[:, None] + sq[None, :] - 2 * z @ z.T
        np.maximum(d, 0, out=d)
        np.fill_diagonal(d, 0)
        d2.append(d)
    d = [np.sqrt(v) for v in d2]

    def centred(m: np.ndarray) -> np.ndarray:
        return m - m.mean(axis=0) - m.mean(axis=1)[:, None] + m.mean()

    a, b = centred(d[0]), centred(d[1])
    out["distance_correlation"] = float(np.sqrt(np.mean(a * b) / np.sqrt(
        np.mean(a * a) * np.mean(b * b))))
    del a, b
    out["rsm_norm_difference"] = float(np.linalg.norm(d[0] - d[1]))
    uniformity = [np.log(np.exp(-2 * d).sum() / len(x) ** 2) for d in d2]
    out["uniformity_difference"] = float(abs(uniformity[0] - uniformity[1]))
    level = []
    for z in (x, y):
        m = z.mean(axis=0)
        level.append(np.mean(z @ m / (np.linalg.norm(z, axis=1) * np.linalg.norm(m))))
    out["concentricity_difference"] = float(abs(level[0] - level[1]))
    return out


def run_step(step: str, path: str, budget: str) -> dict:
    import dask

    if step in ("numpy_knn", "numpy_distances", "dcor"):
        root = zarr.open_group(path, mode="r")
        n, p = root["x"].shape
        if step == "dcor":
            need = 8 * n * n * p
            if need > os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2:
                return {"error": f"not run: dcor's n x n x p broadcast needs {need / 1e9:.0f} GB"}
            try:
                import dcor
            except ImportError:
                return {"error": "not run: dcor is not installed (pip install dcor)"}
        start = time.perf_counter()
        x, y = (root[name][...].astype(np.float64) for name in ("x", "y"))
        if step == "dcor":
            values = {"distance_correlation": float(dcor.distance_correlation(x, y))}
        else:
            values = _numpy_knn(x, y) if step == "numpy_knn" else _in_memory_distances(x, y)
        return {"values": values, "seconds": time.perf_counter() - start}
    from dask_repsim.io.inputs import as_layer
    from dask_repsim.paths.sample_blocks.distances import distance_values
    from dask_repsim.paths.sample_blocks.neighbours import knn_values

    layers = as_layer(f"{path}/x", name="x"), as_layer(f"{path}/y", name="y")
    start = time.perf_counter()
    with dask.config.set({"repsim.memory-budget": budget}):
        if step == "knn":
            values = knn_values(*layers, K, measures=KNN)
        else:
            values = distance_values(*layers, measures=DIST)
    return {"values": {k: float(v) for k, v in values.items()},
            "seconds": time.perf_counter() - start}


def _child(step: str, path: Path, budget: str) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--path", str(path), "--budget", budget]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env=child_env(PYTHONPATH=str(HERE.parent)))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {"error": f"exit status {status}"}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gb"] = usage.ru_maxrss / 2**20  # KiB on Linux
    return result


def _lines(step: str, r: dict, floor: float) -> list[str]:
    if "error" in r:
        return [f"{step:<10} {r['error']}"]
    head = (f"{step:<10} {r['seconds']:9.1f} {r['peak_rss_gb']:8.2f} "
            f"{r['seconds'] / floor:8.2f}  {STEPS[step]}")
    return [head, *(f"{'':<10}   {name:<26} {value:.12f}" for name, value in r["values"].items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
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

    n, p = args.rows, args.features
    start_load = os.getloadavg()
    path = HERE / "data" / f"rsa_knn_n{n}_p{p}.zarr"
    _write_pair(path, n, p, args.chunk_rows)
    gemm = measure_gemm(args.gemm_size)
    read = measure_read([path])
    floor, floor_text = floor_lines(n * n * p, f"n^2 (p+q) / 2 with n = {n:,}, p = q = {p} "
                                    "(the two n x n Gram matrices as symmetric products)", gemm,
                                    read["seconds"])
    table = [f"{'step':<10} {'seconds':>9} {'peak GB':>8} {'x floor':>8}  what (values below)"]
    for step in STEPS:
        lines = _lines(step, _child(step, path, args.budget), floor)
        table += lines
        print("\n".join(lines), flush=True)
    header = [
        "# dask_repsim: the field's sample-space measures against in-memory implementations",
        "",
        "command: python benchmarks/bench_field.py " + " ".join(sys.argv[1:]),
        *_run_lines(start_load),
        f"data: {n:,} x {p} float32 (x2), Zarr chunks of {args.chunk_rows} rows; dask_repsim "
        f"steps: repsim.memory-budget {args.budget}, BLAS 1 thread per task; numpy and dcor: "
        "BLAS at its default threads, data in memory in float64; each step in its own "
        "process; seconds: the work (imports excluded); peak GB: the process's peak RSS; "
        "x floor: seconds / the floor (below)",
        "",
    ]
    floor_text = [*gemm_lines(gemm), "", f"read pass over {read['bytes'] / 1e9:.2f} GB: "
                  + " and ".join(f"{t:.2f}" for t in read["times"]) + " s (the faster counts)",
                  *floor_text]
    out = HERE / "results" / f"field_n{n}.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(header + table + ["", *floor_text]) + "\n")


if __name__ == "__main__":
    main()
