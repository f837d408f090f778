"""Outputs of ``compare`` for every method, against an earlier commit of the package.

Runs the same calls on the same data with this checkout and with ``--ref`` (a git commit), each
in its own process, and prints the largest absolute difference of every variable of every call,
the variables only one side has, and the largest difference over all of them.

The default reference is 22f5476, the last commit before the package was restructured into
folders (io, engine, measures, paths, capture, pairwise): that restructuring moved code without
changing results, so every variable, permutation nulls and p-values included, is expected to
agree to rounding (<= 1e-15). The reference is extracted with ``git archive`` into a temporary
folder and imported from there (``PYTHONPATH``) by a process of its own, so it may predate any
layout of the package; only the public calls below (``dask_repsim.compare`` and
``DEFAULT_METRICS``) must exist in it. ``--ref 280d183`` compares with the commit before the
registry and per-path runners, after which permutation nulls were drawn within fixed blocks of
samples on purpose (``*_null_*`` and ``*_pvalue`` differ there)::

    python benchmarks/compare_release.py [--ref COMMIT]
"""

from __future__ import annotations

import argparse
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REF = "22f5476"

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
out["__package__"] = dr.__file__
pickle.dump(out, open(sys.argv[1], "wb"))
'''


def run(checkout: Path, target: Path) -> dict:
    script = target.with_suffix(".py")
    script.write_text(CALLS)
    env = {"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(script), str(target)], check=True, env=env,
                   cwd=checkout)
    return pickle.loads(target.read_bytes())


def difference(new: np.ndarray, old: np.ndarray) -> float:
    """Largest |new - old|; NaN where both are NaN counts as equal, elsewhere as inf."""
    if new.shape != old.shape or (np.isnan(new) != np.isnan(old)).any():
        return float("inf")
    both = ~np.isnan(new)
    return float(np.abs(new[both] - old[both]).max()) if both.any() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=REF, help=f"git commit to compare with (default {REF})")
    args = parser.parse_args()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(old_tree, filter="data")
        old = run(old_tree, Path(tmp) / "old.pkl")
        new = run(ROOT, Path(tmp) / "new.pkl")
    print(f"reference {args.ref}: {old.pop('__package__')}")
    print(f"this checkout ({head}, with uncommitted changes if any): {new.pop('__package__')}")
    worst = {"all": (0.0, ""), "outside permutation nulls": (0.0, "")}
    for call, variables in old.items():
        for name, values in variables.items():
            if name not in new[call]:
                print(f"{call:>13} {name:<28} only in {args.ref}")
                continue
            diff = difference(new[call][name], values)
            null = "null" in name or "pvalue" in name
            for key in worst if not null else ("all",):
                if diff > worst[key][0] or not worst[key][1]:
                    worst[key] = (diff, f"{call} {name}")
            print(f"{call:>13} {name:<28} max abs(new - old) = {diff:.2e}"
                  + ("  (permutation null)" if null else ""))
        for name in sorted(set(new[call]) - set(variables)):
            print(f"{call:>13} {name:<28} new")
    for key, (diff, where) in worst.items():
        print(f"largest difference, {key}: {diff:.2e} "
              + (f"({where})" if diff else "(every variable identical)"))


if __name__ == "__main__":
    main()
