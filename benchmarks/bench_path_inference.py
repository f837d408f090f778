"""Inference on the QR and feature-tile paths: what jackknife intervals and permutation tests
add to ``method="qr"`` (the CCA family) and ``method="tiled"`` (linear CKA), each against the
co-moment path (``method="covariance"``) with the same options.

The data: for each part a pair of float32 Zarr arrays in one group under ``benchmarks/data/``,
written once by ``bench_predictivity_inference.write_pair`` (fixed seeds): ``x`` with
independent standard normal entries and ``y = tanh(x W) + 0.5 e`` (``W`` normal with variance
``1 / p``, ``e`` standard normal noise), p = q features each:

======  ==========================  ===========================================================
part    default data                call (``path``: qr or tiled, and covariance)
======  ==========================  ===========================================================
qr      200,000 x (64 + 64),        ``compare({"x": X}, {"y": Y}, metrics=["mean_cca",
        chunks of 10,000 rows       "pwcca"], method=path)``
tiled   20,000 x (1024 + 1024),     ``cka(X, Y, method=path)`` (linear CKA)
        chunks of 4,096 rows
======  ==========================  ===========================================================

and for each path the steps ``plain``, ``interval`` (``interval="jackknife"``, ``--groups``
groups, default 20) and ``perm`` (``permutations=K``: ``--qr-permutations``, default 100;
``--tiled-permutations``, default 19, the fewest with which a test can reject at the 0.05
level: the tiled null costs ``K n p q``). Each step runs in its own Python process (wall time
of the call, imports excluded; peak RSS and CPU time from ``wait4``) on Dask's threaded
scheduler within ``repsim.memory-budget`` ``--budget`` (the tiled path sizes its tiles by its
own 64 MiB per task); with ``--repeat R`` (default 2) each step runs R times, interleaved, and
the fastest counts (the highest peak memory). A step the package refuses (the co-moment
path's null keeps K cross matrices of p x q in every copy of its pass's statistics: at the
tiled defaults, 19 of 1024 x 1024 do not fit 2 GB) is reported as refused, with the
package's message.

The floor of each step, measured in the same run (``_common.py``): one read pass over the
part's two arrays, and the float64 multiply-adds the step cannot do without at this machine's
GEMM rate, with ``r_x, r_y`` the ranks of the layers (p and q for this data):

- QR path: the TSQR's Householder QR of the n x (p+q) data, ``n (p+q)^2`` multiply-adds
  (``2 n (p+q)^2`` flops; the merges of the chunks' R factors, O((p+q)^3) each, are left out);
  with ``permutations=K`` also the bases ``H = X_c T``, ``n (p r_x + q r_y)``, and the permuted
  cross products ``H_x^T P_k H_y``, ``K n r_x r_y``;
- co-moment and tiled paths: the co-moments of ``[x, y]`` as a symmetric product,
  ``n (p+q)^2 / 2 = n (p q + (p^2 + q^2) / 2)`` (the tiled path's cross and own tile products);
  with ``permutations=K`` also the permuted cross products, ``K n p q``;
- a jackknife adds only work of order G (p+q)^3 on the client: its floor is plain's.

The report (``--out``, default ``benchmarks/results/path_inference.txt``, raw figures in the
``.json`` beside it) gives each step against its path's plain step and against its floor, and
checks that the values with inference equal plain's and that the paths' nulls agree (every
path permutes y's samples with the same permutations).

Examples
--------
::

    python benchmarks/bench_path_inference.py            # the defaults, ~2 min on 2 idle cores
    python benchmarks/bench_path_inference.py --qr-rows 20000 --tiled-rows 4096 \\
        --tiled-features 256 --qr-permutations 19 --gemm-size 1024 --budget 200MB \\
        --repeat 1 --out /tmp/path_inference_smoke.txt   # a smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

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
from bench_predictivity_inference import NOISE, write_pair

HERE = Path(__file__).resolve().parent
#: each part's own path, compared with the co-moment path
PATHS = {"qr": ("qr", "covariance"), "tiled": ("tiled", "covariance")}
QR_METRICS = ("mean_cca", "pwcca")
STEPS = ("plain", "interval", "perm")
#: the Estimate's fields under the Dataset's names
FIELDS = {"stderr": "stderr", "centre": "ci_centre", "low": "ci_low", "high": "ci_high",
          "pvalue": "pvalue", "null_mean": "null_mean", "null_std": "null_std"}


def _qr_values(path: str, method: str, kwargs: dict) -> dict:
    import dask_repsim as dr

    ds = dr.compare({"x": f"{path}/x"}, {"y": f"{path}/y"}, metrics=list(QR_METRICS),
                    method=method, **kwargs)
    return {str(v): float(ds[v].item()) for v in ds.data_vars
            if ds[v].dims == ("layer_a", "layer_b")}


def _cka_values(path: str, method: str, kwargs: dict) -> dict:
    import dask_repsim as dr

    e = dr.cka(f"{path}/x", f"{path}/y", method=method, **kwargs)
    values = {"cka": float(e)} | {f"cka_{k}": float(getattr(e, f)) for k, f in FIELDS.items()
                                  if getattr(e, f) is not None}
    return values | ({"null": [float(v) for v in e.null]} if e.null is not None else {})


def run_step(part: str, method: str, step: str, path: str, permutations: int, groups: int,
             budget: str) -> dict:
    """One step's call, timed (the package imported first), its values and warnings; a step
    the package refuses (a ValueError, such as a null over the memory budget) gives
    ``{"refused": message}``."""
    import dask

    import dask_repsim  # noqa: F401  (imports are not timed)

    kwargs = {"permutations": permutations} if step == "perm" else (
        {"interval": "jackknife", "groups": groups} if step == "interval" else {})
    with dask.config.set({"repsim.memory-budget": budget, "scheduler": "threads"}), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            values = (_qr_values if part == "qr" else _cka_values)(path, method, kwargs)
        except ValueError as error:  # e.g. a null over the memory budget: the path refuses
            return {"refused": str(error)}
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "values": values,
            "warnings": sorted({str(w.message) for w in caught})}


def spawn(args: argparse.Namespace, part: str, method: str, step: str) -> dict:
    shape = args.shapes[part]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--part", part,
           "--method", method, "--path", str(shape["path"]), "--permutations",
           str(shape["permutations"]), "--groups", str(args.groups), "--budget", args.budget]
    return run_measured(cmd, f"{part}: {method} {step}")


def fastest(runs: list[dict]) -> dict:
    """The fastest of a step's runs, with every run's time and the highest peak; the first
    run when none gave values."""
    done = [r for r in runs if "seconds" in r]
    if not done:
        return runs[0]
    best = min(done, key=lambda r: r["seconds"])
    return best | {"times": [r["seconds"] for r in done],
                   "peak_bytes": max(r["peak_bytes"] for r in done)}


def arithmetic(method: str, step: str, shape: dict) -> tuple[float, str]:
    """The multiply-adds a step cannot do without, and their formula in words."""
    n, p, k = shape["rows"], shape["features"], shape["permutations"]
    if method == "qr":
        madds, text = n * (2.0 * p) ** 2, "n (p+q)^2 (the TSQR's Householder QR)"
        if step == "perm":
            madds += n * 2.0 * p * p + k * n * float(p) ** 2
            text += (f" + n (p r_x + q r_y) (the bases) + K n r_x r_y (the permuted cross "
                     f"products) with r_x = p, r_y = q, K = {k}")
    else:
        madds = n * (2.0 * p) ** 2 / 2
        text = "n (p q + (p^2 + q^2) / 2) (cross and own products; = n (p+q)^2 / 2, syrk)"
        if step == "perm":
            madds += k * n * float(p) ** 2
            text += f" + K n p q (the permuted cross products) with K = {k}"
    return madds, f"{text}, n = {n:,}, p = q = {p}"


def null_arithmetic(method: str, shape: dict) -> float:
    """The null's own multiply-adds: what ``perm`` adds to ``plain`` at the least."""
    return arithmetic(method, "perm", shape)[0] - arithmetic(method, "plain", shape)[0]


def _floors(part: str, results: dict, shape: dict) -> tuple[dict, list[str]]:
    """Each step's floor (seconds), and the lines that say how each was found."""
    floors, lines = {}, []
    for method in PATHS[part]:
        for kind, steps in (("plain", ("plain", "interval")), ("perm", ("perm",))):
            madds, text = arithmetic(method, kind, shape)
            floor, found = floor_lines(madds, text, results["gemm"],
                                       results[part, "read"]["seconds"])
            floors |= {(method, step): floor for step in steps}
            lines += [f"floor of {method} {' and '.join(steps)}:", *(f"  {t}" for t in found)]
    return floors, lines


def _value_text(part: str, values: dict) -> str:
    """A step's values, interval and p-value in a few words."""
    parts = []
    for m in (QR_METRICS if part == "qr" else ("cka",)):
        text = f"{m} {values[m]:.6f}"
        if f"{m}_low" in values:
            text += (f" [{values[f'{m}_low']:.6f}, {values[f'{m}_high']:.6f}], stderr "
                     f"{values[f'{m}_stderr']:.2e}")
        if f"{m}_pvalue" in values:
            text += (f", p = {values[f'{m}_pvalue']:.3g}, null {values[f'{m}_null_mean']:.5f}"
                     f" +- {values[f'{m}_null_std']:.5f}")
        parts.append(text)
    return "; ".join(parts)


def _table(part: str, results: dict, floors: dict) -> list[str]:
    lines = ["| path | step | seconds | CPU s | peak GB | x plain | floor s | x floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    values = []
    for method in PATHS[part]:
        base = results[part, method, "plain"]
        for step in STEPS:
            r = results[part, method, step]
            if not _ok(r, base):
                why = r.get("error") or ("refused (see the notes)" if "refused" in r
                                         else "its plain step did not run")
                lines.append(f"| {method} | {step} | {why} | | | | | |")
                continue
            floor = floors[method, step]
            lines.append(f"| {method} | {step} | {r['seconds']:.2f} | {r['cpu_seconds']:.1f} | "
                         f"{r['peak_bytes'] / 1e9:.2f} | {r['seconds'] / base['seconds']:.2f} |"
                         f" {floor:.2f} | {r['seconds'] / floor:.2f} |")
            runs = ", ".join(f"{t:.2f}" for t in r.get("times", [r["seconds"]]))
            values.append(f"  {method} {step} (runs {runs} s): {_value_text(part, r['values'])}")
    return [*lines, "", "values:", *values]


def _ok(*steps: dict) -> bool:
    """Whether every one of ``steps`` ran to its values."""
    return all("values" in r for r in steps)


def _checks(part: str, results: dict, metrics: tuple[str, ...]) -> list[str]:
    """Values with inference against plain's, and the two paths against each other."""
    lines = []
    for method in PATHS[part]:
        base = results[part, method, "plain"]
        diffs = [abs(results[part, method, s]["values"][m] - base["values"][m])
                 for s in STEPS[1:] for m in metrics if _ok(base, results[part, method, s])]
        lines.append(f"  {method}: values with inference equal plain's within "
                     f"{max(diffs, default=float('nan')):.1e}")
    own, cov = (results[part, method, "perm"] for method in PATHS[part])
    plain_own, plain_cov = (results[part, method, "plain"] for method in PATHS[part])
    if _ok(plain_own, plain_cov):
        lines.append(f"  {PATHS[part][0]} against covariance, values: " + ", ".join(
            f"{m} {abs(plain_own['values'][m] - plain_cov['values'][m]):.1e}" for m in metrics))
    if _ok(own, cov):
        a, b = own["values"], cov["values"]
        null = "".join(f"; the K null values themselves within "
                       f"{max(abs(u - v) for u, v in zip(a['null'], b['null'], strict=True)):.1e}"
                       for _ in a.keys() & {"null"})
        lines.append(f"  {PATHS[part][0]} against covariance, nulls: " + ", ".join(
            f"{m} null mean {abs(a[f'{m}_null_mean'] - b[f'{m}_null_mean']):.1e} apart, "
            f"p-values {a[f'{m}_pvalue']:.3g} and {b[f'{m}_pvalue']:.3g}" for m in metrics)
            + null)
    return lines


def _notes(part: str, results: dict, shape: dict, gemm: dict) -> list[str]:
    """What each path's permutations and interval add to its plain step, against the null's
    arithmetic; and the part's own path against the co-moment path."""
    lines = []
    for method in PATHS[part]:
        base, interval, perm = (results[part, method, s] for s in STEPS)
        if _ok(base, perm):
            extra, floor = perm["seconds"] - base["seconds"], \
                null_arithmetic(method, shape) / gemm["madds_per_second"]
            lines.append(f"  {method}: perm - plain = {extra:.2f} s = {extra / floor:.2f} x the "
                         f"null's arithmetic floor ({floor:.2f} s)")
        if _ok(base, interval):
            lines.append(f"  {method}: interval - plain = "
                         f"{interval['seconds'] - base['seconds']:+.2f} s")
        lines += [f"  {method} {step} refused: {results[part, method, step]['refused']}"
                  for step in STEPS if "refused" in results[part, method, step]]
    own, cov = PATHS[part]
    lines.append(f"  {own} / covariance: " + ", ".join(
        f"{step} {results[part, own, step]['seconds'] / results[part, cov, step]['seconds']:.2f}"
        for step in STEPS if _ok(results[part, own, step], results[part, cov, step])))
    return lines


def part_lines(part: str, args: argparse.Namespace, results: dict) -> list[str]:
    shape, read = args.shapes[part], results[part, "read"]
    n, p = shape["rows"], shape["features"]
    call = ("compare(x, y, metrics=['mean_cca', 'pwcca'], method=path)" if part == "qr"
            else "cka(x, y, method=path) (linear CKA)")
    lines = [
        f"## {part} part: {call}", "",
        f"data: x {n:,} x {p} standard normal, y = tanh(x W) + {NOISE} noise, {n:,} x {p}, "
        f"float32, Zarr chunks of {shape['chunk_rows']:,} rows; interval: jackknife, "
        f"{args.groups} groups; perm: K = {shape['permutations']} permutations",
        f"read pass over both arrays ({read['bytes'] / 1e9:.2f} GB): "
        + ", ".join(f"{t:.2f}" for t in read["times"]) + " s (the faster counts)",
    ]
    floors, text = _floors(part, results, shape)
    metrics = QR_METRICS if part == "qr" else ("cka",)
    lines += [*text, "", *_table(part, results, floors), "", "checks:",
              *_checks(part, results, metrics), "notes:",
              *_notes(part, results, shape, results["gemm"])]
    warned = sorted({w for method in PATHS[part] for step in STEPS
                     for w in results[part, method, step].get("warnings", [])})
    return lines + [f"  warning: {w}" for w in warned] + [""]


def report(args: argparse.Namespace, results: dict, start_load: tuple[float, ...]) -> list[str]:
    lines = [
        "# dask_repsim: jackknife intervals and permutation tests on the QR and feature-tile "
        "paths",
        "",
        "command: python benchmarks/bench_path_inference.py " + " ".join(sys.argv[1:]),
        *machine_lines(start_load, ("numpy", "dask", "zarr", "xarray")),
        f"settings: repsim.memory-budget {args.budget}, threaded scheduler, each step in a "
        f"fresh process, {args.repeat} run(s) each, interleaved: the fastest counts (wall "
        "time of the call, imports excluded; its CPU time; the highest peak RSS, from wait4, "
        "imports included)",
        "",
        *gemm_lines(results["gemm"]),
        "",
    ]
    for part in args.parts:
        lines += part_lines(part, args, results)
    return lines + ["x plain: the step's time over its path's plain step; x floor: over the "
                    "step's floor (the larger of the read pass and its arithmetic)."]


def shapes(args: argparse.Namespace) -> dict:
    """Each part's data (rows, features, chunking, permutations, Zarr path)."""
    out = {}
    for part in args.parts:
        rows, features, chunk_rows, permutations = (
            getattr(args, f"{part}_{key}") for key in ("rows", "features", "chunk_rows",
                                                       "permutations"))
        out[part] = {"rows": rows, "features": features, "chunk_rows": chunk_rows,
                     "permutations": permutations,
                     "path": HERE / "data" / f"path_inference_n{rows}_p{features}"
                                            f"_c{chunk_rows}.zarr"}
    return out


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for part, (rows, features, chunk_rows, permutations) in {
            "qr": (200_000, 64, 10_000, 100), "tiled": (20_000, 1024, 4096, 19)}.items():
        parser.add_argument(f"--{part}-rows", type=int, default=rows)
        parser.add_argument(f"--{part}-features", type=int, default=features,
                            help=f"p = q (default {features})")
        parser.add_argument(f"--{part}-chunk-rows", type=int, default=chunk_rows)
        parser.add_argument(f"--{part}-permutations", type=int, default=permutations)
    parser.add_argument("--groups", type=int, default=20, help="jackknife groups (default 20)")
    parser.add_argument("--budget", default="2GB")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each step, interleaved; the fastest counts (default 2)")
    parser.add_argument("--parts", nargs="+", choices=tuple(PATHS), default=list(PATHS))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "path_inference.txt")
    add_gemm_argument(parser)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=tuple(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--permutations", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.step:
        print(json.dumps(run_step(args.part, args.method, args.step, args.path,
                                  args.permutations, args.groups, args.budget)))
        return
    start_load = os.getloadavg()
    args.shapes = shapes(args)
    results: dict = {"gemm": measure_gemm(args.gemm_size)}
    for part, shape in args.shapes.items():
        write_pair(shape["path"], shape["rows"], shape["features"], shape["chunk_rows"])
        results[part, "read"] = measure_read([shape["path"]])
    runs: dict = {}
    for _ in range(args.repeat):  # interleaved: a burst of load hits one run of each step
        for part in args.parts:
            for method in PATHS[part]:
                for step in STEPS:
                    runs.setdefault((part, method, step), []).append(
                        spawn(args, part, method, step))
    results |= {key: fastest(r) for key, r in runs.items()}
    text = "\n".join(report(args, results, start_load)) + "\n"
    print(text)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        plain({" ".join(key) if isinstance(key, tuple) else key: v
               for key, v in results.items()}), indent=1))


if __name__ == "__main__":
    main()
