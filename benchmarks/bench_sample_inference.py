"""Inference on the sample-space tiles: what permutation tests and jackknife intervals add to a
pair's measures, family by family.

The pair of ``bench_field.py`` (two float32 Zarr arrays X, Y, ``--rows`` x ``--features``,
ReLU features of shared latent factors, in ``benchmarks/data/``), compared by
``compare({"x": X}, {"y": Y}, metrics=M, method="sample_blocks")`` within
``repsim.memory-budget`` ``--budget``, each step in its own Python process (wall time of the
call, imports excluded; peak RSS and CPU time from ``wait4``):

=============  =============================================================================
family         metrics M
=============  =============================================================================
distances      distance_correlation, rsm_norm_difference, cka_laplace (one tile pass, after
               the Laplace kernels' median passes)
rsa            rsa (correlation RDMs, ``rdm_compare="corr"``; one tile pass)
knn            mutual_knn, cknna, second_order_cosine (k = 10; the neighbour pass and the
               second-order pass)
=============  =============================================================================

and for each family the steps ``plain`` (the values), ``perm`` (``permutations=K``, default
100) and ``interval`` (``interval="jackknife"``, 20 groups; for the k-NN family the pass keeps
longer neighbour lists, and second-order cosine looks up its replicates' similarities in one
more pass). ``bandwidth`` measures this machine's memory bandwidth (``numpy.copyto`` between two
1 GiB float64 arrays, best of 5).

The floor of a tile family's permutations is their memory traffic: per permutation, each
permuted y matrix over the tiles (the n (n + b) / 2 entries of the row-block pairs ``I <= J``,
about n^2 / 2) gathered once (read and written) and its product with x's read once, about
``n^2 x 8 bytes x 2`` per matrix (distances: the distance matrix and the Laplace kernel; RSA:
the RDM), at the measured bandwidth. The k-NN family's null relabels the neighbour lists, and
second-order cosine's looks up its permuted pairings' similarities in the pass the value makes:
its floor is that pass. The report goes to ``benchmarks/results/sample_inference_n<rows>.txt``
(raw figures in ``.json``).

Examples
--------
::

    python benchmarks/bench_sample_inference.py                  # 10,000 x 512, K = 100
    python benchmarks/bench_sample_inference.py --rows 2000 --permutations 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from _common import machine_lines, plain, run_measured
from bench_inference import bandwidth_step
from bench_rsa_knn import _write_pair

HERE = Path(__file__).resolve().parent
FAMILIES = {
    "distances": ("distance_correlation", "rsm_norm_difference", "cka_laplace"),
    "rsa": ("rsa",),
    "knn": ("mutual_knn", "cknna", "second_order_cosine"),
}
#: tile matrices whose permuted copies each permutation gathers, per family
PERMUTED_MATRICES = {"distances": 2, "rsa": 1}
STEPS = {"plain": "compare(x, y, metrics=M)", "perm": "... permutations=K",
         "interval": "... interval='jackknife', 20 groups"}


def compare_step(path: str, family: str, step: str, permutations: int, budget: str) -> dict:
    import dask

    import dask_repsim as dr

    kwargs = {"permutations": permutations} if step == "perm" else (
        {"interval": "jackknife"} if step == "interval" else {})
    if family == "knn":
        kwargs["k"] = 10
    with dask.config.set({"repsim.memory-budget": budget, "scheduler": "threads"}), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        ds = dr.compare({"x": f"{path}/x"}, {"y": f"{path}/y"}, metrics=list(FAMILIES[family]),
                        method="sample_blocks", **kwargs)
        seconds = time.perf_counter() - start
    values = {str(v): float(ds[v].item()) for v in ds.data_vars
              if ds[v].dims == ("layer_a", "layer_b")}
    return {"seconds": seconds, "values": values,
            "warnings": sorted({str(w.message) for w in caught})}


def spawn(args: argparse.Namespace, step: str, family: str = "") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--family",
           family or "-", "--path", str(args.path), "--permutations", str(args.permutations),
           "--budget", args.budget]
    return run_measured(cmd, f"{family} {step}".strip())


def report(args: argparse.Namespace, results: dict, start_load: tuple[float, ...]) -> list[str]:
    n, k = args.rows, args.permutations
    rate = results["bandwidth"]["bytes_per_second"]
    lines = [
        "# dask_repsim: permutation tests and jackknife intervals on the sample-space tiles",
        "",
        "command: python benchmarks/bench_sample_inference.py " + " ".join(sys.argv[1:]),
        *machine_lines(start_load, ("numpy", "dask", "zarr", "xarray")),
        f"data: {n:,} x {args.features} float32 (x2), Zarr chunks of {args.chunk_rows} rows; "
        f"repsim.memory-budget {args.budget}, threaded scheduler, BLAS 1 thread per task; "
        f"{k} permutations",
        f"memory bandwidth: {rate / 1e9:.2f} GB/s (numpy.copyto of 1 GiB, read + write, best "
        "of 5)",
        "",
        f"{'family':<10} {'step':<9} {'seconds':>9} {'CPU s':>9} {'peak GB':>8} "
        f"{'x plain':>8}  what",
    ]
    notes = []
    for family, metrics in FAMILIES.items():
        if "error" in results[family, "plain"]:
            lines.append(f"{family:<10} plain     failed: {results[family, 'plain']['error']}")
            continue
        plain_s = results[family, "plain"]["seconds"]
        for step in STEPS:
            r = results.get((family, step))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"{family:<10} {step:<9} failed: {r['error']}")
                continue
            lines.append(f"{family:<10} {step:<9} {r['seconds']:9.2f} {r['cpu_seconds']:9.1f} "
                         f"{r['peak_bytes'] / 1e9:8.2f} {r['seconds'] / plain_s:8.2f}  "
                         f"{STEPS[step]}")
            diff = max(abs(r["values"][m] - results[family, "plain"]["values"][m])
                       for m in metrics)
            extra = ", ".join(f"{m} p = {r['values'][f'{m}_pvalue']:.3g}" for m in metrics
                              if f"{m}_pvalue" in r["values"])
            extra += ", ".join(f"{m} [{r['values'][f'{m}_low']:.4f}, "
                               f"{r['values'][f'{m}_high']:.4f}]" for m in metrics
                               if f"{m}_low" in r["values"])
            lines.append(f"{'':<20} values as plain's within {diff:.1e}; {extra}")
        perm = results.get((family, "perm"), {})
        if family in PERMUTED_MATRICES and "error" not in perm:
            traffic = n * n * 8.0 * 2 * PERMUTED_MATRICES[family] * k
            floor = traffic / rate
            notes.append(f"{family}: permutations {perm['seconds'] - plain_s:.2f} s beyond the "
                         f"values = {(perm['seconds'] - plain_s) / floor:.2f} x their floor "
                         f"(n^2 x 8 B x 2 x {PERMUTED_MATRICES[family]} matrix(es) x {k} = "
                         f"{traffic / 1e9:.1f} GB, {floor:.2f} s)")
        elif "error" not in perm:
            notes.append(f"{family}: permutations {perm['seconds'] - plain_s:.2f} s beyond the "
                         "values (their floor: none beyond the value's own passes)")
    return lines + [""] + notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--chunk-rows", type=int, default=2_000)
    parser.add_argument("--budget", default="2GB")
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "bandwidth":
        print(json.dumps(bandwidth_step()))
        return
    if args.step:
        print(json.dumps(compare_step(args.path, args.family, args.step, args.permutations,
                                      args.budget)))
        return
    start_load = os.getloadavg()
    args.path = HERE / "data" / f"rsa_knn_n{args.rows}_p{args.features}.zarr"
    _write_pair(args.path, args.rows, args.features, args.chunk_rows)
    results: dict = {"bandwidth": spawn(args, "bandwidth")}
    for family in FAMILIES:
        for step in STEPS:
            results[family, step] = spawn(args, step, family)
    text = "\n".join(report(args, results, start_load)) + "\n"
    print(text)
    out = HERE / "results" / f"sample_inference_n{args.rows}.txt"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        plain({" ".join(key) if isinstance(key, tuple) else key: v
               for key, v in results.items()}), indent=1))


if __name__ == "__main__":
    main()
