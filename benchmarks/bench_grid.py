"""Grid benchmark: a 6-layer x 6-layer compare against 36 pairwise calls and one read pass.

    python benchmarks/bench_grid.py [--rows 200000] [--width 256] [--layers 6]

Writes two networks' activations (``--layers`` float32 arrays of ``--rows`` x ``--width`` each,
ReLU of shared latent factors, chunks of 25,000 rows) to Zarr groups under benchmarks/data/,
then times, each step in its own process (peak RSS from the kernel):

(a) one read pass over all arrays of both groups (column sums, one dask.compute): the I/O floor;
(b) ``dask_repsim.compare(group_a, group_b)``: every layer pair, all eight measures, one pass;
(c) a loop of ``layers^2`` pairwise calls, each computing the same eight measures from its own
    pass (``compare`` on one pair).

The package holds BLAS to one thread per task in its passes. The floor (``_common.py``) is the
larger of (a) and the arithmetic floor: the float64 multiply-adds of the grid's pass, each of
the 2L layers' own co-moment block as a symmetric product (n w^2 / 2) and the L^2 cross blocks
(n w^2 each), n w^2 (L + L^2) in all, at the GEMM rate measured in the same run (the higher of
all BLAS threads in one product and one BLAS thread in each of the cores' threads).

The table goes to benchmarks/results/grid_<rows>.txt with the command, machine and versions.
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
from _common import add_gemm_argument, child_env, floor_lines, gemm_lines, measure_gemm
from bench_core import _run_lines

HERE = Path(__file__).resolve().parent
CHUNK = 25_000


def write(root: Path, rows: int, width: int, layers: int) -> None:
    import zarr

    if (root / "done").exists():
        return
    rng = np.random.default_rng(0)
    mixes = {
        (net, i): rng.normal(size=(32, width)).astype(np.float32) / 4
        for net in ("a", "b") for i in range(layers)
    }
    groups = {net: zarr.open_group(root / f"net_{net}.zarr", mode="w") for net in ("a", "b")}
    arrays = {
        (net, i): groups[net].create_array(
            f"layer{i}", shape=(rows, width), chunks=(CHUNK, width), dtype="float32",
            dimension_names=("sample", f"unit{i}"),
        )
        for net in ("a", "b") for i in range(layers)
    }
    for start in range(0, rows, CHUNK):
        latent = rng.normal(size=(min(CHUNK, rows - start), 32)).astype(np.float32)
        for key, arr in arrays.items():
            noise = rng.normal(size=(len(latent), width)).astype(np.float32)
            arr[start : start + len(latent)] = np.maximum(latent @ mixes[key] + noise, 0)
    (root / "done").write_text("")


def step(name: str, root: Path, layers: int) -> dict:
    import dask
    import dask.array as da

    import dask_repsim

    a, b = str(root / "net_a.zarr"), str(root / "net_b.zarr")
    start = time.perf_counter()
    if name == "read":
        sums = [
            da.from_zarr(f"{g}/layer{i}").sum(axis=0) for g in (a, b) for i in range(layers)
        ]
        dask.compute(*sums)
    elif name == "compare":
        result = dask_repsim.compare(a, b)
    elif name == "loop":
        for i in range(layers):
            for j in range(layers):
                dask_repsim.compare(f"{a}/layer{i}", f"{b}/layer{j}")
    seconds = time.perf_counter() - start
    out = {"seconds": seconds}
    if name == "compare":
        out["cka_diagonal"] = [float(result.cka[i, i]) for i in range(layers)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    add_gemm_argument(parser)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = HERE / "data" / f"grid_n{args.rows}_w{args.width}_l{args.layers}"
    if args.step:
        print(json.dumps(step(args.step, root, args.layers)))
        return
    root.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    write(root, args.rows, args.width, args.layers)
    gemm = measure_gemm(args.gemm_size)
    results = {}
    for name in ("read", "compare", "loop"):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--rows", str(args.rows), "--width", str(args.width),
             "--layers", str(args.layers), "--step", name],
            stdout=subprocess.PIPE, text=True, env=child_env(),
        )
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (KiB)
        if status != 0:
            raise SystemExit(f"step {name} failed")
        results[name] = json.loads(stdout.strip().splitlines()[-1])
        results[name]["peak_gb"] = usage.ru_maxrss * 1024 / 1e9
    read = results["read"]["seconds"]
    n, w, layers = args.rows, args.width, args.layers
    floor, floor_text = floor_lines(
        n * w * w * (layers + layers**2), f"n w^2 (L + L^2) with n = {n:,}, w = {w}, L = {layers}"
        " (each layer's own block of the co-moment as a symmetric product, syrk, n w^2 / 2; "
        "the L^2 cross blocks, n w^2 each)", gemm, read)
    lines = [
        f"# dask_repsim grid benchmark: {args.layers} x {args.layers} layers, "
        f"{args.rows:,} samples x {args.width} units, float32 Zarr",
        "",
        "command: python benchmarks/bench_grid.py " + " ".join(sys.argv[1:]),
        *_run_lines(load_start),
        "BLAS: compare holds it to one thread per task in its passes (threaded scheduler)",
        "",
        "| step | seconds | x read pass | x floor | peak RSS (GB) |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "read": "(a) one read pass of all arrays",
        "compare": f"(b) compare, {args.layers}x{args.layers} grid, 8 measures",
        "loop": f"(c) {args.layers ** 2} pairwise compare calls",
    }
    for name, label in labels.items():
        r = results[name]
        lines.append(f"| {label} | {r['seconds']:.1f} | {r['seconds'] / read:.2f} | "
                     f"{r['seconds'] / floor:.2f} | {r['peak_gb']:.2f} |")
    lines.append(f"| floor: max((a), arithmetic floor) | {floor:.1f} | {floor / read:.2f} | 1.00 "
                 "| |")
    speedup = results["loop"]["seconds"] / results["compare"]["seconds"]
    lines += ["", f"compare is {speedup:.1f}x faster than the loop and "
              f"{results['compare']['seconds'] / read:.2f}x the read pass, "
              f"{results['compare']['seconds'] / floor:.2f}x the floor",
              f"CKA diagonal: {np.round(results['compare']['cka_diagonal'], 4).tolist()}",
              "", *gemm_lines(gemm), *floor_text]
    text = "\n".join(lines)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"grid_{args.rows}.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
