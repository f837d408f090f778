"""Outputs of ``compare`` for every method, against an earlier commit of the package.

Runs the same calls on the same data with this checkout and with ``--ref`` (a git commit,
default the last one before the restructuring into a registry and per-path runners), each in its
own process, and prints the largest absolute difference of every variable. Differences are
expected only where a behaviour was fixed on purpose (permutation nulls are now drawn within
fixed blocks of samples, so ``*_null_*`` and ``*_pvalue`` differ)::

    python benchmarks/compare_release.py [--ref COMMIT]
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = "280d183"

CALLS = r'''
import pickle, sys, warnings
import numpy as np
import dask.array as da
import dask_repsim as dr

rng = np.random.default_rng(0)
n = 500
base = rng.normal(size=(n, 8))
a = {"fc1": np.maximum(base @ rng.normal(size=(8, 12)), 0) + 3.0,
     "fc2": da.from_array(base @ rng.normal(size=(8, 6)) + rng.normal(size=(n, 6)), chunks=120)}
b = {"fc1": np.tanh(base @ rng.normal(size=(8, 10))) + 0.2 * rng.normal(size=(n, 10)),
     "fc2": da.from_array(rng.normal(size=(n, 5)), chunks=90)}
cca_family = ["mean_cca", "r2_cca", "svcca", "pwcca", "linear_regression"]
calls = {
    "default": dict(),
    "covariance": dict(method="covariance",
                       metrics=list(dr.DEFAULT_METRICS) + ["matched_correlation"]),
    "qr": dict(method="qr", metrics=cca_family),
    "gram": dict(method="gram", metrics=["cka", "cka_debiased"]),
    "tiled": dict(method="tiled", metrics=["cka", "cka_debiased"]),
    "minibatch": dict(method="minibatch", metrics=["cka"], batch_size=100),
    "jackknife": dict(interval="jackknife", groups=10),
    "permutations": dict(metrics=["cka", "mean_cca"], permutations=10, seed=3),
}
out = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, kw in calls.items():
        ds = dr.compare(a, b, **kw)
        out[name] = {k: np.asarray(v.values, dtype=float) for k, v in ds.data_vars.items()}
pickle.dump(out, open(sys.argv[1], "wb"))
'''


def run(checkout: Path, target: Path) -> dict:
    script = target.with_suffix(".py")
    script.write_text(CALLS)
    env = {"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(script), str(target)], check=True, env=env,
                   cwd=checkout)
    return pickle.loads(target.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=REF)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach",
                        str(old_tree), args.ref], check=True)
        try:
            old = run(old_tree, Path(tmp) / "old.pkl")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(old_tree)], check=True)
        new = run(ROOT, Path(tmp) / "new.pkl")
    worst = 0.0
    for call, variables in old.items():
        for name, values in variables.items():
            if name not in new[call]:
                print(f"{call:>13} {name:<28} only in {args.ref}")
                continue
            diff = float(abs(new[call][name] - values).max())
            expected = "null" in name or "pvalue" in name
            worst = worst if expected else max(worst, diff)
            print(f"{call:>13} {name:<28} max abs(new - old) = {diff:.2e}"
                  + ("  (permutation blocks changed on purpose)" if expected else ""))
        for name in sorted(set(new[call]) - set(variables)):
            print(f"{call:>13} {name:<28} new")
    print(f"largest difference outside permutation nulls: {worst:.2e}")


if __name__ == "__main__":
    main()
