"""Inference on the cross-validated predictivities: what jackknife intervals and permutation
tests add to ``ridge_predictivity`` and ``pls_predictivity``.

The data: two float32 Zarr arrays in one group under ``benchmarks/data/`` (written once, chunk
by chunk, fixed seeds), ``x`` with independent standard normal entries and
``y = tanh(x W) + 0.5 e`` (``W`` normal with variance ``1 / p``, ``e`` standard normal noise),
``--rows`` x ``--features`` each, Zarr chunks of ``--chunk-rows`` rows. Each step in its own
Python process (wall time of the call, imports excluded; peak RSS and CPU time from ``wait4``),
on Dask's threaded scheduler within ``repsim.memory-budget`` ``--budget`` (the package holds
BLAS to one thread per task in its pass); for each of ``ridge_predictivity`` (``ridge=None``:
the penalty by generalised cross-validation) and ``pls_predictivity`` (default components):

=========  ===================================================================================
plain      ``compare({"x": X}, {"y": Y}, metrics=[m], folds=k)``: one pass keeps the k folds'
           co-moments, the client fits each fold on the other k - 1
interval   the same with ``interval="jackknife"`` (20 groups; ridge only, PLS has none): the
           pass keeps 20 groups within the folds, each replicate refits all k folds
perm       the same with ``permutations=K``: the pass also keeps, per fold, K permuted
           cross-co-moment matrices (p x q each), and the client refits every fold for every
           permutation
=========  ===================================================================================

Inside each step's process the package's pass (``paths.covariance.cells.run_pass``) and its
fold fits on the client (``paths.covariance.folds.fold_cells``) are wrapped by timers, so the
report splits each step into the pass and the client's refits: the permuted refits are
``perm``'s client time less ``plain``'s.

The floor, measured in the same run (``_common.py``): one read pass over both arrays, and the
float64 multiply-adds the pass cannot do without at this machine's GEMM rate, the co-moments
of ``[x, y]`` as a symmetric product, ``n (p + q)^2 / 2``, and for ``perm`` the K permuted
cross products, ``K n p q`` multiply-adds (``K x 2 n p q`` flops). The report goes to
``benchmarks/results/predictivity_inference_n<rows>.txt`` (raw figures in ``.json``).

Examples
--------
::

    python benchmarks/bench_predictivity_inference.py             # 100,000 x 128, K = 100
    python benchmarks/bench_predictivity_inference.py --rows 5000 --permutations 5 \\
        --gemm-size 1024                                          # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from _common import (
    add_gemm_argument,
    floor_lines,
    gemm_lines,
    machine_lines,
    measure_gemm,
    measure_read,
    plain,
    run_measured,
)

HERE = Path(__file__).resolve().parent
METRICS = ("ridge_predictivity", "pls_predictivity")
STEPS = {"plain": "compare(x, y, metrics=[m], folds=k)",
         "interval": "... interval='jackknife' (20 groups)",
         "perm": "... permutations=K"}
#: standard deviation of y's noise
NOISE = 0.5


def write_pair(path: Path, rows: int, features: int, chunk_rows: int) -> None:
    """``x`` (standard normal) and ``y = tanh(x W) + NOISE e``, float32, ``rows`` x
    ``features`` each, in the Zarr group ``path``; kept when a complete one is there."""
    import zarr

    if (path / "zarr.json").exists() and zarr.open_group(path, mode="r").attrs.get("complete"):
        return
    w = np.random.default_rng(0).standard_normal((features, features)) / np.sqrt(features)
    root = zarr.open_group(path, mode="w")
    x_arr, y_arr = (root.create_array(name, shape=(rows, features),
                                      chunks=(chunk_rows, features), dtype="float32",
                                      dimension_names=("sample", "unit")) for name in "xy")
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        block = np.random.default_rng([2, start])
        x = block.standard_normal((stop - start, features))
        y = np.tanh(x @ w) + NOISE * block.standard_normal((stop - start, features))
        x_arr[start:stop], y_arr[start:stop] = x.astype(np.float32), y.astype(np.float32)
    root.attrs["complete"] = True


@contextmanager
def timers(clock: dict[str, float | None]):
    """Wrap the package's pass and its fold fits on the client by timers adding to ``clock``
    (``"pass"``, ``"client"``); a name the package no longer has is left ``None``."""
    from dask_repsim.paths.covariance import cells, folds

    saved = []
    for key, module, name in (("pass", cells, "run_pass"),
                              ("client", folds, "fold_cells")):
        original = getattr(module, name, None)
        if original is None:
            clock[key] = None
            continue

        def timed(*args, _original=original, _key=key, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                clock[_key] += time.perf_counter() - start

        saved.append((module, name, original))
        setattr(module, name, timed)
    try:
        yield clock
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def compare_step(path: str, metric: str, step: str, folds: int, permutations: int,
                 budget: str) -> dict:
    import dask

    import dask_repsim as dr

    kwargs = {"permutations": permutations} if step == "perm" else (
        {"interval": "jackknife"} if step == "interval" else {})
    clock: dict[str, float | None] = {"pass": 0.0, "client": 0.0}
    with dask.config.set({"repsim.memory-budget": budget, "scheduler": "threads"}), \
            warnings.catch_warnings(record=True) as caught, timers(clock):
        warnings.simplefilter("always")
        start = time.perf_counter()
        ds = dr.compare({"x": f"{path}/x"}, {"y": f"{path}/y"}, metrics=[metric], folds=folds,
                        **kwargs)
        seconds = time.perf_counter() - start
    values = {str(v): float(ds[v].item()) for v in ds.data_vars
              if ds[v].dims == ("layer_a", "layer_b")}
    return {"seconds": seconds, "pass_seconds": clock["pass"],
            "client_seconds": clock["client"], "values": values, "attrs": plain(dict(ds.attrs)),
            "warnings": sorted({str(w.message) for w in caught})}


def spawn(args: argparse.Namespace, step: str, metric: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--metric", metric,
           "--path", str(args.path), "--folds", str(args.folds), "--permutations",
           str(args.permutations), "--budget", args.budget]
    return run_measured(cmd, f"{metric} {step}")


def _seconds(value: float | None) -> str:
    return f"{value:9.2f}" if value is not None else f"{'n/a':>9}"


def _row(metric: str, step: str, r: dict, plain_s: float) -> list[str]:
    """The table's line of one step, and a line of its values against plain's."""
    if "skipped" in r:
        return [f"{metric:<19} {step:<9} none: {r['skipped']}"]
    if "error" in r:
        return [f"{metric:<19} {step:<9} failed: {r['error']}"]
    line = (f"{metric:<19} {step:<9} {r['seconds']:9.2f} {r['cpu_seconds']:9.1f} "
            f"{r['peak_bytes'] / 1e9:8.2f} {r['seconds'] / plain_s:8.2f} "
            f"{_seconds(r['pass_seconds'])} {_seconds(r['client_seconds'])}  {STEPS[step]}")
    v = r["values"]
    extra = f"value {v[metric]:.6f}"
    if f"{metric}_low" in v:
        extra += (f"; interval [{v[f'{metric}_low']:.6f}, {v[f'{metric}_high']:.6f}] over "
                  f"{r['attrs'].get('n_groups')} groups, stderr {v[f'{metric}_stderr']:.2e}")
    if f"{metric}_pvalue" in v:
        extra += (f"; p = {v[f'{metric}_pvalue']:.3g}, null {v[f'{metric}_null_mean']:.4f} "
                  f"+- {v[f'{metric}_null_std']:.4f}")
    return [line, f"{'':<30}{extra}"]


def _equal_line(metric: str, results: dict) -> str:
    """Whether the interval's and the permutations' value is plain's: bit for bit, or to
    rounding (the interval's folds merge two groups' co-moments each, in another order)."""
    base = results[metric, "plain"]["values"][metric]
    diffs = {step: abs(results[metric, step]["values"][metric] - base)
             for step in ("interval", "perm")
             if not {"error", "skipped"} & set(results[metric, step])}
    worst = max(diffs.values(), default=0.0) / max(abs(base), 1e-300)
    verdict = ("yes, bit for bit" if worst == 0 else "yes, to rounding" if worst <= 1e-12
               else "NO")
    return (f"  value equal to plain's: {verdict} (|difference|: "
            + ", ".join(f"{step} {d:.1e}" for step, d in diffs.items()) + ")")


def _differ(r: dict, base: dict, key: str) -> float | None:
    if r[key] is None or base[key] is None:
        return None
    return r[key] - base[key]


def _notes(metric: str, results: dict, args: argparse.Namespace, gemm: dict) -> list[str]:
    """What the interval and the permutations add to ``metric``'s plain step, pass and
    client apart, against the permutations' arithmetic."""
    base, k, perms = results[metric, "plain"], args.folds, args.permutations
    lines = []
    r = results[metric, "interval"]
    if not {"error", "skipped"} & set(r):
        groups = r["attrs"].get("n_groups") or 0
        client, extra = _differ(r, base, "client_seconds"), _differ(r, base, "pass_seconds")
        if client is not None and extra is not None:
            lines.append(f"  interval: pass {extra:+.2f} s ({groups} groups kept instead of {k});"
                         f" client {client:+.2f} s for {groups} replicates x {k} folds = "
                         f"{groups * k} refits ({1e3 * client / max(groups * k, 1):.2f} ms each)")
    r = results[metric, "perm"]
    if "error" in r:
        return lines
    arithmetic = perms * args.rows * float(args.features) ** 2 / gemm["madds_per_second"]
    client, extra = _differ(r, base, "client_seconds"), _differ(r, base, "pass_seconds")
    if extra is not None:
        lines.append(f"  perm: pass {extra:+.2f} s beyond plain's = {extra / arithmetic:.2f} x "
                     f"the permutations' arithmetic floor ({arithmetic:.2f} s)")
    if client is not None:
        lines.append(f"  perm: client's permuted refits {client:.2f} s (timed around fold_cells,"
                     f" perm's less plain's) for {perms} permutations x {k} folds = "
                     f"{perms * k} refits ({1e3 * client / (perms * k):.2f} ms each), "
                     f"{client / r['seconds']:.0%} of perm's time")
    rest = r["seconds"] - base["seconds"] - arithmetic
    lines.append(f"  perm: perm - plain - arithmetic floor = {rest:.2f} s (untimed estimate of "
                 "the client's share and of the pass's work beyond the floor: permuted gathers,"
                 " scheduling)")
    return lines


def report(args: argparse.Namespace, results: dict, start_load: tuple[float, ...]) -> list[str]:
    n, p, k, perms = args.rows, args.features, args.folds, args.permutations
    gemm, read = results["gemm"], results["read"]
    lines = [
        "# dask_repsim: jackknife intervals and permutation tests of the cross-validated "
        "predictivities",
        "",
        "command: python benchmarks/bench_predictivity_inference.py " + " ".join(sys.argv[1:]),
        *machine_lines(start_load, ("numpy", "dask", "zarr", "xarray")),
        f"data: x {n:,} x {p} standard normal, y = tanh(x W) + {NOISE} noise, {n:,} x {p}, "
        f"float32, Zarr chunks of {args.chunk_rows:,} rows; {k} folds; {perms} permutations; "
        f"repsim.memory-budget {args.budget}, threaded scheduler, BLAS 1 thread per task in "
        "the pass",
        "",
        *gemm_lines(gemm),
        f"read pass over both arrays ({read['bytes'] / 1e9:.2f} GB): "
        + ", ".join(f"{t:.2f}" for t in read["times"]) + " s (the faster counts)",
    ]
    value_madds = n * (2.0 * p) ** 2 / 2
    plain_floor, text = floor_lines(value_madds, f"n (p+q)^2 / 2 with n = {n:,}, p = q = {p} "
                                    "(the co-moments as a symmetric product)", gemm,
                                    read["seconds"])
    lines += ["floor of plain and interval:", *(f"  {t}" for t in text)]
    perm_floor, text = floor_lines(value_madds + perms * n * float(p) ** 2,
                                   f"n (p+q)^2 / 2 + K n p q with K = {perms} (the co-moments, "
                                   "and each permutation's cross product, K x 2 n p q flops)",
                                   gemm, read["seconds"])
    lines += ["floor of perm:", *(f"  {t}" for t in text), "",
              f"{'metric':<19} {'step':<9} {'seconds':>9} {'CPU s':>9} {'peak GB':>8} "
              f"{'x plain':>8} {'pass s':>9} {'client s':>9}  what"]
    for metric in METRICS:
        base = results[metric, "plain"]
        if "error" in base:
            lines.append(f"{metric:<19} plain     failed: {base['error']}")
            continue
        for step in STEPS:
            lines += _row(metric, step, results[metric, step], base["seconds"])
        lines.append(_equal_line(metric, results))
        lines += _notes(metric, results, args, gemm)
        if "error" not in results[metric, "perm"]:
            lines.append(f"  x floor: plain {base['seconds'] / plain_floor:.2f}, perm "
                         f"{results[metric, 'perm']['seconds'] / perm_floor:.2f}")
    lines += ["", "pass s: time in the package's pass (run_pass); client s: time in the fold "
              "fits on the client (fold_cells), BLAS at its default threads there; the rest is "
              "planning and the Dataset."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=128, help="p = q (default 128)")
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--budget", default="2GB")
    add_gemm_argument(parser)
    parser.add_argument("--step", choices=tuple(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--metric", choices=METRICS, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(compare_step(args.path, args.metric, args.step, args.folds,
                                      args.permutations, args.budget)))
        return
    start_load = os.getloadavg()
    args.path = HERE / "data" / (f"predictivity_n{args.rows}_p{args.features}"
                                 f"_c{args.chunk_rows}.zarr")
    write_pair(args.path, args.rows, args.features, args.chunk_rows)
    results: dict = {"gemm": measure_gemm(args.gemm_size), "read": measure_read([args.path])}
    for metric in METRICS:
        for step in STEPS:
            results[metric, step] = (
                {"skipped": "PLS has no interval (the registry says why)"}
                if metric == "pls_predictivity" and step == "interval"
                else spawn(args, step, metric))
    text = "\n".join(report(args, results, start_load)) + "\n"
    print(text)
    out = HERE / "results" / f"predictivity_inference_n{args.rows}.txt"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        plain({" ".join(key) if isinstance(key, tuple) else key: v
               for key, v in results.items()}), indent=1))


if __name__ == "__main__":
    main()
