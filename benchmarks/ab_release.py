"""The same ``compare`` call timed with this checkout and with an earlier commit, alternately.

Answers "is it slower than before?" with a ratio measured in one run: each repeat runs the call
once with each code (in its own process, the reference unpacked with ``git archive``), in
alternating order, on the same stored data; the table gives every time and the ratio of the
medians. The data are the stores an earlier benchmark kept::

    python benchmarks/ab_release.py --case core     # bench_core's 1,000,000 x (256 + 256) pair
    python benchmarks/ab_release.py --case conv     # bench_conv's two ResNet-18s at 2,048 images
    python benchmarks/ab_release.py --case client   # bench_path_inference's 20,000 x (64 + 64)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "core": ("core_n1000000_p256_c65536", "x.zarr", "y.zarr", "None"),
    "conv": ("conv_n2048", "a.zarr", "b.zarr", "['cka', 'cka_debiased', 'cka_rbf']"),
    "permutations": ("core_n1000000_p256_c65536", "x.zarr", "y.zarr", "['cka', 'mean_cca']"),
    # the client's share: each null value and replicate whitened or refitted on the client
    "client": ("path_inference_n20000_p64_c10000.zarr", "x", "y",
               "['mean_cca', 'pwcca', 'ridge_predictivity']"),
}
#: extra options of each case's call
OPTIONS = {"permutations": {"permutations": 20, "seed": 0},
           "client": {"permutations": 100, "seed": 0, "interval": "jackknife", "folds": 5}}
CALL = r'''
import json, sys, time
import dask_repsim as dr
a, b, metrics, extra = sys.argv[1], sys.argv[2], eval(sys.argv[3]), json.loads(sys.argv[4])
kw = {} if metrics is None else {"metrics": metrics}
kw.update(extra)
if metrics and "cka_rbf" in metrics:
    kw["sigma"] = [0.4, 0.8]
start, cpu = time.perf_counter(), time.process_time()
ds = dr.compare(a, b, **kw)
ds.load()
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "file": dr.__file__,
                  "values": {k: ds[k].values.tolist() for k in ds.data_vars}}))
'''


def run(code: Path, a: str, b: str, metrics: str, extra: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CALL, a, b, metrics, extra], cwd=code,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(code)},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=list(CASES), required=True)
    parser.add_argument("--ref", default="22f5476")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder, xa, xb, metrics = CASES[args.case]
    data = ROOT / "benchmarks" / "data" / folder
    a, b = str(data / xa), str(data / xb)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.ref], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        times: dict[str, list[float]] = {"this": [], "ref": []}
        cpu: dict[str, list[float]] = {"this": [], "ref": []}
        values = {}
        for r in range(args.repeat):
            for side in (("this", "ref") if r % 2 == 0 else ("ref", "this")):
                result = run(ROOT if side == "this" else old, a, b, metrics,
                             json.dumps(OPTIONS.get(args.case, {})))
                times[side].append(result["seconds"])
                cpu[side].append(result["cpu"])
                values[side] = result["values"]
    shared = [k for k in values["this"] if k in values["ref"]]
    new = [k for k in values["this"] if k not in values["ref"]]
    diff = max(abs(x - y) for k in shared for x, y in
               zip(_flat(values["this"][k]), _flat(values["ref"][k]), strict=True))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    print(f"case {args.case}: dask_repsim.compare on {data}, {args.repeat} alternating repeats"
          + (f", options {OPTIONS[args.case]}" if args.case in OPTIONS else ""))
    for side, label in (("this", f"this checkout ({head})"), ("ref", f"reference {args.ref}")):
        print(f"  {label:28s} " + ", ".join(f"{t:.2f}" for t in times[side]) +
              f" s; median {statistics.median(times[side]):.2f} s; CPU "
              + ", ".join(f"{t:.1f}" for t in cpu[side]) + " s")
    ratio = statistics.median(times["this"]) / statistics.median(times["ref"])
    print(f"  ratio of medians, this / reference: {ratio:.3f}; largest value difference {diff:.2e}"
          + (f" (variables the reference lacks: {', '.join(new)})" if new else ""))


def _flat(x):
    if isinstance(x, list):
        for item in x:
            yield from _flat(item)
    else:
        yield x


if __name__ == "__main__":
    main()
