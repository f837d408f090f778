"""Zoo benchmark: N ResNet-18s, every layer of every network against every other, as one grid.

``--networks`` ResNet-18s (default 8; the layout of ``bench_conv.py``, imported from it:
``torch.manual_seed(0)`` to ``(N - 1)``, eval mode, 100 classes) see the same ``--n`` seeded
random 64 x 64 RGB images (default 2,048); ``dask_repsim.capture_activations`` records conv1,
layer1..layer4, avgpool and fc of each into ONE Zarr store, ``zoo.zarr``, one group per network
(``seed0``, ``seed1``, ...; float32, flattened widths 65,536 ... 100). Then, each step in a
fresh Python process (wall time of the work, CPU time and peak RSS from ``wait4``):

read    one read pass over every stored chunk of the zoo (``_common.read_pass``), twice; the
        faster is the I/O floor
gemm    this machine's float64 GEMM rate (``_common.py``), the higher of all BLAS threads in one
        product and one BLAS thread in each of the cores' threads
(a)     ``dask_repsim.compare_zoo(store, metrics=M, sigma=[0.4, 0.8])``: the zoo against
        itself, N x 7 layers as one grid (each unordered pair of layers once, mirrored), on
        Dask's threaded scheduler, dask config ``repsim.memory-budget`` from ``--budget``
(b)     numpy in memory, its best configuration (BLAS at its default threads, all cores): each
        layer loaded as float64, columns centred, its n x n Gram formed once into one stacked
        (N L, n, n) array; every pair's <K, L> as ONE product of the stacked Grams with
        themselves; linear CKA, debiased CKA (unbiased HSIC, zero diagonals) and, for RBF, the
        stacked centred RBF Grams (Kornblith et al.'s gram_rbf, bandwidth 2 sigma^2 x median of
        the squared distances) and their product; the formulas are bench_conv's numpy step's
(c)     today's way: ``dask_repsim.compare(net_i, net_j)`` for each of the N (N - 1) / 2
        unordered pairs of networks, one after the other in one process

Checks: every cell of (a) against (b) (the largest absolute difference), and every cell of
(a) off the diagonal blocks against the pair's two-network compare of (c) (both orientations
of the pair: row network i, column j and the mirror). The arithmetic floor is the
half-product floor n^2 x sum(p) / 2 multiply-adds: every layer's n x n Gram as a symmetric
product (syrk), the widths summed over all N x 7 layers, at the GEMM rate measured in the run;
the pair products (an inner product of two n x n Grams per pair of layers) are stated but not
counted. The floor is the larger of it and the read pass. Targets: (a) <= 1.0 x (b); (a)'s
peak <= 2.5 GB, or with ``--budget`` <= the budget + 600 MiB (the documented fixed overhead);
(c) >= 4 x (a); (a) <= 1.5 x the half-product floor. Output:
``benchmarks/results/zoo_n<n>_<N>.txt`` (+ ``.json`` with the raw figures and (a)'s values).

Examples
--------
::

    python benchmarks/bench_zoo.py                              # n = 2,048, 8 networks
    python benchmarks/bench_zoo.py --n 64 --networks 3          # a smoke run
    python benchmarks/bench_zoo.py --n 10000 --networks 4 --budget 4GB --skip-numpy \\
        --skip-pairs --keep
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import (
    add_gemm_argument,
    blas_info,
    floor_lines,
    gemm_lines,
    measure_gemm,
    plain,
    read_pass,
    run_measured,
)
from bench_conv import (
    LAYERS,
    NUMPY_METRICS,
    WIDTHS,
    Images,
    _complete,
    _debiased,
    _gram_of,
    _median_sq_distance,
    _rbf_centred,
    machine_lines,
    resnet18,
)

HERE = Path(__file__).resolve().parent
FIXED_OVERHEAD = 600 * 2**20  # the fixed overhead above repsim.memory-budget (docs/guide/memory)
TARGETS = {"numpy": 1.0, "peak": 2.5e9, "pairs": 4.0, "floor": 1.5}
STEPS = {
    "read": "one read pass over every chunk of the zoo (column sums), the I/O floor",
    "zoo": "dask_repsim.compare_zoo(zoo): one grid, threaded scheduler",
    "numpy": "numpy in memory: each Gram once, all pairs as one product, BLAS all threads",
    "pairs": "two-network dask_repsim.compare for every pair of networks, one by one",
}
LABELS = {"read": "read", "zoo": "(a)", "numpy": "(b)", "pairs": "(c)"}


def network_names(count: int) -> list[str]:
    return [f"seed{i}" for i in range(count)]


def layer_labels(nets: list[str]) -> list[str]:
    """The zoo's "network/layer" labels, network by network."""
    return [f"{net}/{p}" for net in nets for p in LAYERS]


# --------------------------------------------------------------------------- the steps


def capture_step(store: Path, nets: list[str], n: int, keep: bool) -> dict:
    """Record every network into its group of ``store`` (or, with ``keep``, reuse complete
    groups); groups of other networks are removed, so that the store is exactly the zoo."""
    import zarr

    import dask_repsim

    root = zarr.open_group(store, mode="a")  # the zoo's root group, before its networks
    for name in sorted(set(root.group_keys()) - set(nets)):
        del root[name]
    out = {}
    for seed, net in enumerate(nets):
        if keep and _complete(store / net, n):
            out[net] = None
            continue
        model = resnet18(seed)
        start = time.perf_counter()
        dask_repsim.capture_activations(model, Images(n), layers=list(LAYERS),
                                        store=str(store / net), overwrite=True, n_samples=n)
        out[net] = time.perf_counter() - start
    return {"networks": out}


def _config(budget: str | None) -> dict:
    config = {"scheduler": "threads"}
    if budget is not None:
        config["repsim.memory-budget"] = budget
    return config


def _kwargs(metrics: list[str], sigmas: list[float], method: str | None) -> dict:
    kwargs = {"sigma": sigmas} if "cka_rbf" in metrics else {}
    return kwargs | ({"method": method} if method is not None else {})


def zoo_step(store: Path, nets: list[str], metrics: list[str], sigmas: list[float],
             budget: str | None, method: str | None) -> dict:
    import dask

    import dask_repsim

    with dask.config.set(_config(budget)), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        ds = dask_repsim.compare_zoo(str(store), metrics=metrics,
                                     **_kwargs(metrics, sigmas, method))
        seconds = time.perf_counter() - start
    labels = layer_labels(nets)
    values = {str(var): ds[var].sel(a=labels, b=labels).values.tolist()
              for var in ds.data_vars if ds[var].dims == ("a", "b")}
    return {"seconds": seconds, "values": values, "attrs": plain(dict(ds.attrs)),
            "warnings": sorted({str(w.message) for w in caught})}


def pairs_step(store: Path, nets: list[str], metrics: list[str], sigmas: list[float],
               budget: str | None, method: str | None) -> dict:
    import dask

    import dask_repsim

    values, seconds = {}, {}
    with dask.config.set(_config(budget)), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, a in enumerate(nets):
            for b in nets[i + 1:]:
                start = time.perf_counter()
                ds = dask_repsim.compare(str(store / a), str(store / b), metrics=metrics,
                                         **_kwargs(metrics, sigmas, method))
                seconds[f"{a},{b}"] = time.perf_counter() - start
                values[f"{a},{b}"] = {
                    str(var): ds[var].sel(layer_a=list(LAYERS), layer_b=list(LAYERS))
                    .values.tolist()
                    for var in ds.data_vars if ds[var].dims == ("layer_a", "layer_b")}
    return {"seconds": sum(seconds.values()), "pair_seconds": seconds, "values": values,
            "method": str(ds.attrs.get("method")),
            "warnings": sorted({str(w.message) for w in caught})}


def numpy_step(store: Path, nets: list[str], metrics: list[str], sigmas: list[float]) -> dict:
    import zarr

    start = time.perf_counter()
    rbf = "cka_rbf" in metrics
    layers = [(net, p) for net in nets for p in LAYERS]
    n = zarr.open_group(store / nets[0], mode="r")[LAYERS[0]].shape[0]
    grams = np.empty((len(layers), n, n))  # every layer's Gram, stacked: one product below
    stats = []
    for k, (net, p) in enumerate(layers):
        grams[k] = _gram_of(zarr.open_group(store / net, mode="r"), p)
        stats.append({"diag": np.diag(grams[k]).copy(), "rows": grams[k].sum(axis=1),
                      "total": float(grams[k].sum()),
                      "median": _median_sq_distance(grams[k]) if rbf else None})
    loaded = time.perf_counter() - start
    flat = grams.reshape(len(layers), -1)
    inner = flat @ flat.T  # <K_i, K_j> of every pair of layers, one BLAS product
    values = {}
    if "cka" in metrics:  # the Grams of centred data are centred already
        norms = np.sqrt(np.diag(inner))
        values["cka"] = inner / np.outer(norms, norms)
    if "cka_debiased" in metrics:
        own = np.array([_debiased(inner[i, i], s, s, n) for i, s in enumerate(stats)])
        values["cka_debiased"] = np.array(
            [[_debiased(inner[i, j], si, sj, n) / np.sqrt(own[i] * own[j])
              for j, sj in enumerate(stats)] for i, si in enumerate(stats)])
    products = time.perf_counter() - start - loaded
    rbfs = np.empty_like(grams) if rbf else None  # one stack, reused for each bandwidth
    for sigma in sigmas if rbf else ():
        for k, s in enumerate(stats):
            rbfs[k] = _rbf_centred(grams[k], s["median"], sigma)
        flat = rbfs.reshape(len(layers), -1)
        inner = flat @ flat.T
        norms = np.sqrt(np.diag(inner))
        values[f"cka_rbf_{sigma}"] = inner / np.outer(norms, norms)
    return {"seconds": time.perf_counter() - start, "grams_seconds": loaded,
            "products_seconds": products,
            "values": {m: v.tolist() for m, v in values.items()}, "blas": blas_info()}


def numpy_bytes(n: int, count: int, metrics: list[str]) -> int:
    """Estimated peak of the numpy step's arrays (imports not included): the stacked Grams of
    the N x 7 layers, while the widest layer loads its float32 and float64 copies and its own
    Gram; with RBF a second stack of the centred RBF Grams and one Gram being made."""
    square, stacked = 8 * n * n, 8 * n * n * count * len(LAYERS)
    loading = stacked + square + 12 * n * max(WIDTHS)
    return max(loading, 2 * stacked + 2 * square if "cka_rbf" in metrics else 0)


# --------------------------------------------------------------------------- the driver


def run_child(args: argparse.Namespace) -> dict:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    store, nets = args.workdir / "zoo.zarr", network_names(args.networks)
    metrics, sigmas = args.metrics.split(","), [float(s) for s in args.sigma.split(",")]
    if args.step == "capture":
        result = capture_step(store, nets, args.n, args.keep)
    elif args.step == "read":
        result = read_pass([str(store / net) for net in nets])
    elif args.step == "zoo":
        result = zoo_step(store, nets, metrics, sigmas, args.budget, args.method)
    elif args.step == "pairs":
        result = pairs_step(store, nets, metrics, sigmas, args.budget, args.method)
    else:
        result = numpy_step(store, nets, [m for m in metrics if m in NUMPY_METRICS], sigmas)
    return {**result, "baseline_bytes": base}


def spawn(args: argparse.Namespace, step: str) -> dict:
    """Run ``step`` in a fresh interpreter; its peak RSS and CPU time from ``wait4``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--n", str(args.n),
           "--networks", str(args.networks), "--metrics", args.metrics, "--sigma", args.sigma,
           "--workdir", str(args.workdir)]
    cmd += ["--keep"] if args.keep else []
    cmd += ["--budget", args.budget] if args.budget is not None else []
    cmd += ["--method", args.method] if args.method is not None else []
    return run_measured(cmd, step)


def _symmetric(metric: str) -> bool:
    from dask_repsim.registry import MEASURES

    return MEASURES["cka_rbf" if metric.startswith("cka_rbf_") else metric].symmetric


def check_values(results: dict, nets: list[str]) -> dict:
    """(a) against (b): the largest |difference| of every metric over every cell; (a) against
    (c): the same over the cells of each pair of networks, both orientations for a symmetric
    measure (row network j, column i is the mirror of the pair), and how many cells are
    identical."""
    zoo, out = results["zoo"], {}
    if "error" in zoo:
        return out
    ours = {m: np.array(v) for m, v in zoo["values"].items()}
    ref = results.get("numpy")
    if ref and "error" not in ref:
        common = [m for m in ref["values"] if m in ours]
        out["numpy"] = {m: float(np.max(np.abs(ours[m] - np.array(ref["values"][m]))))
                        for m in common}
    pairs = results.get("pairs")
    if pairs and "error" not in pairs:
        size, diffs, same, cells = len(LAYERS), {}, 0, 0
        for key, by_metric in pairs["values"].items():
            i, j = (nets.index(net) for net in key.split(","))
            rows, cols = slice(i * size, (i + 1) * size), slice(j * size, (j + 1) * size)
            for m, value in by_metric.items():
                if m not in ours:
                    continue
                pair = np.array(value)
                blocks = [ours[m][rows, cols]]  # and the mirror, for a symmetric measure
                blocks += [ours[m][cols, rows].T] if _symmetric(m) else []
                for block in blocks:
                    diffs[m] = max(diffs.get(m, 0.0), float(np.max(np.abs(block - pair))))
                    same += int(np.sum(block == pair))
                    cells += block.size
        out["pairs"] = {"max": diffs, "identical": same, "cells": cells}
    return out


def _ratio(value: float, target: float, at_most: bool = True, unit: str = "") -> str:
    met = value <= target if at_most else value >= target
    return f"{'PASS' if met else 'MISS'} (target {'<=' if at_most else '>='} {target:.3g}{unit})"


def _step_lines(results: dict, floor: float) -> list[str]:
    ref = results.get("numpy", {}).get("seconds")
    lines = ["| step | what | seconds | CPU s | peak GB | base GB | x (b) | x floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for step in ("read", "zoo", "numpy", "pairs"):
        r = results.get(step)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {LABELS[step]} | {STEPS[step]} | failed: {r['error']} |"
                         + " |" * 5)
            continue
        s = r["seconds"]
        lines.append(f"| {LABELS[step]} | {STEPS[step]} | {s:.2f} | {r['cpu_seconds']:.1f} | "
                     f"{r['peak_bytes'] / 1e9:.2f} | {r['baseline_bytes'] / 1e9:.2f} | "
                     f"{f'{s / ref:.2f}' if ref else '-'} | {s / floor:.2f} |")
    return lines


def report(args: argparse.Namespace, results: dict, start_load: tuple[float, ...]) -> list[str]:
    n, count, metrics = args.n, args.networks, args.metrics.split(",")
    nets, layers = network_names(count), count * len(LAYERS)
    total = count * sum(WIDTHS)
    read, gemm = results["read"], results["gemm"]
    arithmetic = n * n * total / 2
    floor, floor_text = floor_lines(
        arithmetic, f"n^2 x sum(p) / 2 = {n}^2 x {total:,} / 2 (every layer's n x n Gram as a "
        f"symmetric product, syrk, the widths of all {layers} layers summed; pair products "
        "not counted)", gemm, read["seconds"])
    pair_madds = n * n * layers * (layers + 1) / 2
    rate = gemm["madds_per_second"]
    cap = results["capture"]
    captured = ", ".join(f"{k} {v:.1f} s" if v is not None else f"{k} reused"
                         for k, v in cap["networks"].items())
    budget = args.budget or "unset (the package default)"
    lines = [
        f"# dask_repsim zoo benchmark: {count} ResNet-18s (seeds 0-{count - 1}), {layers} x "
        f"{layers} layers, n = {n:,} random 64 x 64 RGB images",
        "",
        "command: python benchmarks/bench_zoo.py " + " ".join(sys.argv[1:]),
        *machine_lines(start_load, ("numpy", "dask", "zarr", "xarray", "torch")),
        "layers (per network, flattened widths): "
        + ", ".join(f"{p} {w:,}" for p, w in zip(LAYERS, WIDTHS, strict=True))
        + f"; all {count} networks together sum(p) = {total:,}",
        f"data: one float32 Zarr v3 store from capture_activations, a group per network "
        f"({', '.join(nets)}), {read['bytes'] / 1e9:.2f} GB, in {args.workdir / 'zoo.zarr'}",
        f"capture (not part of the comparison): {captured}; peak "
        f"{cap['peak_bytes'] / 1e9:.2f} GB",
        f"metrics: {', '.join(metrics)}; sigma {args.sigma} for cka_rbf; dask config "
        f"repsim.memory-budget: {budget}; method: {args.method or 'not passed (auto)'}",
        "",
        *_step_lines(results, floor),
        "",
        "seconds: wall time of the work in the step's own process (imports excluded); CPU s: "
        "user + system time of that process;",
        "peak GB: its peak resident set size (imports included); base GB: its RSS after imports.",
        "",
        f"read pass: {read['bytes'] / 1e9:.2f} GB, passes of "
        + " and ".join(f"{t:.2f}" for t in read["times"]) + " s (the faster is the floor)",
        *gemm_lines(gemm),
        *floor_text,
        f"not counted: the pair products, an inner product of two n x n Grams for each of the "
        f"{layers} x {layers + 1} / 2 = {layers * (layers + 1) // 2:,} unordered pairs of "
        f"layers, n^2 x {layers * (layers + 1) // 2:,} = {pair_madds:.4g} multiply-adds per "
        f"kind of Gram (linear; each RBF bandwidth another), {pair_madds / rate:.2f} s at the "
        "GEMM rate (memory-bound in practice)",
    ]
    return lines + _comparison_lines(args, results, arithmetic / rate, floor)


def _comparison_lines(args: argparse.Namespace, results: dict, arithmetic: float,
                      floor: float) -> list[str]:
    zoo, ref, pairs = results["zoo"], results.get("numpy"), results.get("pairs")
    count, metrics = args.networks, args.metrics.split(",")
    layers, n_pairs = count * len(LAYERS), count * (count - 1) // 2
    lines = [""]
    if "error" in zoo:
        return lines + [f"(a) failed ({zoo['error']}): no values, no ratios"]
    s, peak = zoo["seconds"], zoo["peak_bytes"]
    if ref is None:
        need = numpy_bytes(args.n, count, metrics)
        lines.append(f"(b): skipped (--skip-numpy); it would need about {need / 1e9:.1f} GB "
                     f"(estimate: {layers} stacked n x n float64 Grams of "
                     f"{8 * args.n**2 / 1e6:,.1f} MB = {layers * 8 * args.n**2 / 1e9:.1f} GB"
                     + (", twice that with the stacked RBF Grams" if "cka_rbf" in metrics
                        else "") + ")")
    elif "error" not in ref:
        lines.append(f"(a) / (b) = {s / ref['seconds']:.2f}: "
                     f"{_ratio(s / ref['seconds'], TARGETS['numpy'])}; (b) formed its "
                     f"{layers} Grams in {ref['grams_seconds']:.2f} s and the linear measures of "
                     f"every pair in {ref['products_seconds']:.2f} s; its peak "
                     f"{ref['peak_bytes'] / 1e9:.2f} GB against an estimate of "
                     f"{numpy_bytes(args.n, count, metrics) / 1e9:.2f} GB + imports")
    if args.budget is None:
        lines.append(f"(a) peak memory = {peak / 1e9:.2f} GB: "
                     f"{_ratio(peak / 1e9, TARGETS['peak'] / 1e9, unit=' GB')}")
    else:
        from dask.utils import parse_bytes

        limit = parse_bytes(args.budget) + FIXED_OVERHEAD
        lines.append(f"(a) peak memory = {peak / 1e9:.2f} GB: "
                     f"{_ratio(peak / 1e9, limit / 1e9, unit=' GB')}: the budget "
                     f"{args.budget} + the documented fixed overhead 600 MiB")
    if pairs is None:
        lines.append(f"(c): skipped (--skip-pairs); its {n_pairs} calls form each network's 7 "
                     f"Grams {count - 1} times, (a) once: {count - 1} x (a)'s Gram arithmetic")
    elif "error" not in pairs:
        lines.append(f"(c) / (a) = {pairs['seconds'] / s:.2f}: "
                     f"{_ratio(pairs['seconds'] / s, TARGETS['pairs'], at_most=False)}; (c) "
                     f"{n_pairs} calls, path {pairs['method']}, each "
                     + ", ".join(f"{t:.1f}" for t in pairs["pair_seconds"].values()) + " s")
    lines += [
        f"(a) / half-product floor = {s:.2f} / {arithmetic:.2f} = {s / arithmetic:.2f}: "
        f"{_ratio(s / arithmetic, TARGETS['floor'])}; (a) / floor (the larger of it and the "
        f"read pass) = {s / floor:.2f}",
        "",
        *_check_lines(results, layers, n_pairs),
        "",
        "(a): Dataset attrs " + json.dumps(zoo["attrs"]),
        *[f"(a): warning: {w}" for w in zoo["warnings"]],
        *[f"(c): warning: {w}" for w in (pairs or {}).get("warnings", [])],
    ]
    return lines + _matched_lines(zoo["values"], network_names(count))


def _check_lines(results: dict, layers: int, n_pairs: int) -> list[str]:
    checks, lines = results["checks"], []
    if "numpy" in checks:
        worst = max(checks["numpy"].values(), default=float("nan"))
        lines.append(f"max |(a) - (b)| over every cell of {', '.join(checks['numpy'])} "
                     f"({len(checks['numpy'])} x {layers} x {layers} cells): {worst:.2e}")
    if "pairs" in checks:
        c = checks["pairs"]
        worst = max(c["max"].values(), default=float("nan"))
        lines.append(f"max |(a) - (c)| over the {n_pairs} pairs of networks, both orientations "
                     f"of each for a symmetric measure (every cell of (a) off its diagonal "
                     "blocks, "
                     f"{', '.join(c['max'])}; {c['cells']:,} cells): {worst:.2e}; "
                     f"{c['identical']:,} of the {c['cells']:,} cells identical")
    return lines


def _matched_lines(values: dict, nets: list[str]) -> list[str]:
    """Each metric's values between the same layer of two different networks: mean, min and
    max over the pairs of networks (the whole grid is in the .json)."""
    lines, size = [], len(LAYERS)
    for m, grid in values.items():
        grid = np.array(grid)
        lines += ["", f"{m}: the same layer in two networks, over the "
                  f"{len(nets) * (len(nets) - 1) // 2} pairs of networks",
                  f"  {'layer':<9}{'mean':>10}{'min':>10}{'max':>10}"]
        for k, p in enumerate(LAYERS):
            cells = [grid[i * size + k, j * size + k] for i in range(len(nets))
                     for j in range(i + 1, len(nets))]
            lines.append(f"  {p:<9}{np.mean(cells):10.6f}{np.min(cells):10.6f}"
                         f"{np.max(cells):10.6f}")
    return lines


def _dump(results: dict) -> str:
    """The results as JSON, each row of a matrix on one line."""
    text = json.dumps(plain(results), indent=1)
    return re.sub(r"\[\s+([-+\d.eE, \n]+?)\s+\]",
                  lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="images (default 2048)")
    parser.add_argument("--networks", type=int, default=8, help="ResNet-18s (default 8)")
    parser.add_argument("--metrics", default="cka,cka_debiased,cka_rbf",
                        help="comma-separated metrics (default cka,cka_debiased,cka_rbf)")
    parser.add_argument("--sigma", default="0.4,0.8", help="cka_rbf bandwidths (default 0.4,0.8)")
    parser.add_argument("--budget", help="dask config repsim.memory-budget of (a) and (c), e.g. "
                        "4GB (default: unset)")
    parser.add_argument("--method", help="method= of (a) and (c) (default: not passed, 'auto')")
    parser.add_argument("--skip-numpy", action="store_true", help="do not run (b)")
    parser.add_argument("--skip-pairs", action="store_true", help="do not run (c)")
    parser.add_argument("--workdir", type=Path, help="where zoo.zarr goes (default "
                        "benchmarks/data/zoo_n<n>_<networks>)")
    parser.add_argument("--keep", action="store_true",
                        help="reuse the complete captured networks of this n in the work dir")
    add_gemm_argument(parser)
    parser.add_argument("--step", choices=("capture", *STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.networks < 2:
        parser.error("--networks must be at least 2")
    args.workdir = (args.workdir or HERE / "data" / f"zoo_n{args.n}_{args.networks}").resolve()
    if args.step:
        print(json.dumps(run_child(args)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    start_load = os.getloadavg()
    results = {"capture": spawn(args, "capture")}
    if "error" in results["capture"]:
        raise SystemExit("capture failed")
    print(f"[{datetime.now(UTC):%H:%M:%S}] GEMM rate ...", flush=True)
    results["gemm"] = measure_gemm(args.gemm_size)
    steps = ("read", "zoo") + (() if args.skip_numpy else ("numpy",))
    for step in steps + (() if args.skip_pairs else ("pairs",)):
        results[step] = spawn(args, step)
    if "error" in results["read"]:
        raise SystemExit("the read step failed")
    results["checks"] = check_values(results, network_names(args.networks))
    text = "\n".join(report(args, results, start_load)) + "\n"
    print(text)
    for step in ("numpy", "pairs"):  # checked above; the .json keeps (a)'s values only
        results.get(step, {}).pop("values", None)
    out = HERE / "results" / f"zoo_n{args.n}_{args.networks}.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(_dump(results) + "\n")


if __name__ == "__main__":
    main()
