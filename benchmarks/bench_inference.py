"""Inference benchmark: permutation tests and jackknife intervals on the ResNet-18 grid.

The grid of ``bench_conv.py`` (two ResNet-18s, 7 x 7 layers, ``--n`` images, float32 Zarr
stores in ``benchmarks/data/conv_n<n>``, captured first when missing) on the Gram tiles
(``method="auto"`` chooses them: the layers are up to 65,536 wide). Each step in a fresh Python
process, on Dask's threaded scheduler:

bandwidth  this machine's memory bandwidth: ``numpy.copyto`` between two 1 GiB float64 arrays,
           best of 5, (bytes read + bytes written) / seconds
plain      ``compare(a, b, metrics=M, sigma=S)``
perm       the same with ``permutations=K`` (default 100)
interval   the same with ``interval="jackknife"`` (20 groups)
g_plain    ``compare`` of the metrics with a Gamma approximation (cka, cka_rbf; not
           cka_debiased), alone
gamma      the same with ``null="gamma"`` (the Gamma approximation of HSIC's null)

The floor of the permutations is their memory traffic: per permutation and kernel (linear,
shared by cka and cka_debiased, and one RBF kernel per bandwidth), each permuted column layer's
n x n matrix gathered once and each of the 49 pairs' products read once, n^2 x 8 bytes x
(7 gathers + 49 pairs), at the measured bandwidth. The report goes to
``benchmarks/results/inference_n<n>.txt`` (raw figures in ``.json``).

Examples
--------
::

    python benchmarks/bench_inference.py                 # n = 2048, 100 permutations
    python benchmarks/bench_inference.py --n 256 --permutations 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import machine_lines, plain, run_measured

HERE = Path(__file__).resolve().parent
LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
STEPS = {
    "plain": "compare(a, b), the grid alone",
    "perm": "compare(a, b, permutations=K)",
    "interval": "compare(a, b, interval='jackknife'), 20 groups",
    "g_plain": "compare(a, b) of the Gamma approximation's metrics",
    "gamma": "compare(a, b, null='gamma') of them",
}
#: the metrics with a Gamma approximation of their null
GAMMA_METRICS = ("cka", "cka_rbf")


def bandwidth_step() -> dict:
    size = 2**27  # 1 GiB of float64
    src, dst = np.ones(size), np.empty(size)
    np.copyto(dst, src)  # map every page first
    times = []
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return {"bytes_per_second": 2 * src.nbytes / min(times), "times": times}


def compare_step(a: str, b: str, metrics: list[str], sigmas: list[float], step: str,
                 permutations: int) -> dict:
    import dask

    import dask_repsim

    if step in ("g_plain", "gamma"):
        metrics = [m for m in metrics if m in GAMMA_METRICS]
    kwargs = {"sigma": sigmas} if "cka_rbf" in metrics else {}
    if step == "gamma":
        kwargs["null"] = "gamma"
    if step == "perm":
        kwargs["permutations"] = permutations
    elif step == "interval":
        kwargs["interval"] = "jackknife"
    with dask.config.set(scheduler="threads"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        ds = dask_repsim.compare(a, b, metrics=metrics, **kwargs)
        seconds = time.perf_counter() - start
    values = {str(v): ds[v].sel(layer_a=list(LAYERS), layer_b=list(LAYERS)).values.tolist()
              for v in ds.data_vars if ds[v].dims == ("layer_a", "layer_b")}
    return {"seconds": seconds, "values": values, "attrs": plain(dict(ds.attrs)),
            "warnings": sorted({str(w.message) for w in caught})}


def run_child(args: argparse.Namespace) -> dict:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.step == "capture":
        sys.path.insert(0, str(HERE))
        from bench_conv import capture_step

        result = capture_step(args.workdir, args.n, keep=True)
    elif args.step == "bandwidth":
        result = bandwidth_step()
    else:
        result = compare_step(str(args.workdir / "a.zarr"), str(args.workdir / "b.zarr"),
                              args.metrics.split(","), [float(s) for s in args.sigma.split(",")],
                              args.step, args.permutations)
    return {**result, "baseline_bytes": base}


def spawn(args: argparse.Namespace, step: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--n", str(args.n),
           "--metrics", args.metrics, "--sigma", args.sigma, "--workdir", str(args.workdir),
           "--permutations", str(args.permutations)]
    return run_measured(cmd, step)


def kernels_of(metrics: list[str], sigmas: list[float]) -> int:
    """The kernels a null sums: the linear one (cka, cka_debiased) and one per bandwidth."""
    linear = any(m in ("cka", "cka_debiased") for m in metrics)
    return int(linear) + (len(sigmas) if "cka_rbf" in metrics else 0)


def report(args: argparse.Namespace, results: dict, start_load: tuple[float, ...]) -> list[str]:
    n, k = args.n, args.permutations
    metrics, sigmas = args.metrics.split(","), [float(s) for s in args.sigma.split(",")]
    rate = results["bandwidth"]["bytes_per_second"]
    kernels = kernels_of(metrics, sigmas)
    traffic = n * n * 8.0 * (len(LAYERS) + len(LAYERS) ** 2) * kernels * k
    floor = traffic / rate
    plain_s = results["plain"]["seconds"]
    lines = [
        f"# dask_repsim inference benchmark: the ResNet-18 grid of bench_conv (7 x 7 layers), "
        f"n = {n:,} images",
        "",
        "command: python benchmarks/bench_inference.py " + " ".join(sys.argv[1:]),
        *machine_lines(start_load, ("numpy", "dask", "zarr", "xarray")),
        f"metrics: {', '.join(metrics)}; sigma {args.sigma} for cka_rbf; {k} permutations",
        "",
        f"{'step':<9} {'seconds':>9} {'CPU s':>9} {'peak GB':>8} {'x plain':>8}  what",
    ]
    for step in STEPS:
        r = results[step]
        if "error" in r:
            lines.append(f"{step:<9} failed: {r['error']}")
            continue
        lines.append(f"{step:<9} {r['seconds']:9.2f} {r['cpu_seconds']:9.1f} "
                     f"{r['peak_bytes'] / 1e9:8.2f} {r['seconds'] / plain_s:8.2f}  {STEPS[step]}")
    lines += [
        "",
        f"memory bandwidth: {rate / 1e9:.2f} GB/s (numpy.copyto of 1 GiB, read + write, best "
        "of 5)",
        f"permutation floor: n^2 x 8 B x (7 gathers + 49 pairs) x {kernels} kernel(s) x {k} = "
        f"{traffic / 1e9:.1f} GB of memory traffic, {floor:.2f} s at that bandwidth",
    ]
    perm, interval = results["perm"], results["interval"]
    if "error" not in perm:
        extra = perm["seconds"] - plain_s
        lines += [
            f"permutations: {extra:.2f} s beyond the grid = {extra / floor:.2f} x their floor "
            "(target <= 2)",
            f"grid with {k} permutations / grid alone = {perm['seconds'] / plain_s:.2f} "
            "(target <= 3 for 100)",
            _agreement(results["plain"], perm, metrics),
            _significance(perm, metrics),
        ]
    if "error" not in interval:
        lines += [f"grid with intervals / grid alone = {interval['seconds'] / plain_s:.2f} "
                  "(target <= 1.3)", _agreement(results["plain"], interval, metrics)]
    gamma, alone = results["gamma"], results["g_plain"]
    if "error" not in gamma and "error" not in alone:
        lines += [f"grid with the Gamma approximation / the same grid alone = "
                  f"{gamma['seconds'] / alone['seconds']:.2f} (target <= 1.3)",
                  _agreement(alone, gamma, metrics), _significance(gamma, metrics)]
    return lines


def _agreement(plain_run: dict, other: dict, metrics: list[str]) -> str:
    diff = max(float(np.max(np.abs(np.array(other["values"][m])
                                   - np.array(plain_run["values"][m]))))
               for m in plain_run["values"] if m in other["values"])
    return f"  values equal to the grid alone's within {diff:.1e}"


def _significance(perm: dict, metrics: list[str]) -> str:
    parts = []
    for m in perm["values"]:
        if f"{m}_pvalue_fwer" in perm["values"]:
            fwer = np.array(perm["values"][f"{m}_pvalue_fwer"])
            parts.append(f"{m} {int((fwer <= 0.05).sum())}/49")
    return "  cells with family-wise corrected p <= 0.05: " + ", ".join(parts) + (
        " (Holm, Gamma approximation)" if "null" in perm["attrs"] else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="images (default 2048)")
    parser.add_argument("--metrics", default="cka,cka_debiased,cka_rbf")
    parser.add_argument("--sigma", default="0.4,0.8", help="cka_rbf bandwidths (default 0.4,0.8)")
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--workdir", type=Path, help="bench_conv's stores (default "
                        "benchmarks/data/conv_n<n>)")
    parser.add_argument("--step", choices=("capture", "bandwidth", *STEPS),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir = (args.workdir or HERE / "data" / f"conv_n{args.n}").resolve()
    if args.step:
        print(json.dumps(run_child(args)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    start_load = os.getloadavg()
    results = {"capture": spawn(args, "capture")}
    if "error" in results["capture"]:
        raise SystemExit("capture failed")
    for step in ("bandwidth", *STEPS):
        results[step] = spawn(args, step)
    text = "\n".join(report(args, results, start_load)) + "\n"
    print(text)
    out = HERE / "results" / f"inference_n{args.n}.txt"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(plain(results), indent=1))


if __name__ == "__main__":
    main()
