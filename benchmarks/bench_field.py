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
  concentricity differences and Laplace-kernel CKA, from one pass over the distance tiles;
- ``numpy_distances``: the five in memory: the n x n distance matrices in numpy, distance
  correlation by double centring them, Laplace CKA from the n x n kernels;
- ``rsa_cov``: dask_repsim's whitened RSA comparisons (``cosine_cov``, ``corr_cov``) of the
  correlation RDMs, one pass over the tiles;
- ``rsatoolbox``: the same by rsatoolbox (``calc_rdm``, ``compare``), in memory;
- ``rtd``: dask_repsim's RTD (in memory by design: gudhi's barcode of a 2n x 2n matrix) on the
  first ``--rtd-rows`` samples (default 500);
- ``ripser_rtd``: the same barcodes by ripser (scikit-tda) on the authors' matrices (their
  code needs ripser++ on a GPU and does not install here);
- ``predictivity``: dask_repsim's ridge (penalty ``--ridge`` relative to x's variance) and
  PLS (25 components) predictivity of Y from X over 10 contiguous folds, from one co-moment
  pass;
- ``sklearn``: the same folds in memory with scikit-learn's ``Ridge`` (``alpha`` = the same
  penalty times the training fold's total variance) and ``PLSRegression(25, scale=False)``,
  scored as Brain-Score does (median over Y's units of the held-out Pearson r, mean over
  folds);
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
        "concentricity_difference", "cka_laplace")
#: Laplace CKA's bandwidth: sigma times each layer's median distance (the package default)
SIGMA = 0.8
WHITENED = ("cosine_cov", "corr_cov")
STEPS = {
    "knn": "dask_repsim: k-NN Jaccard, rank, joint rank-Jaccard, second-order cosine (tiles)",
    "numpy_knn": "numpy in memory after ReSi: n x n similarities, per-sample loops",
    "distances": "dask_repsim: dCor, RSM norm, uniformity, concentricity, Laplace CKA (its "
                 "medians' passes, one tile pass)",
    "numpy_distances": "numpy in memory: n x n distances, double centring for dCor, Laplace "
                       "kernels",
    "dcor": "dcor.distance_correlation (its n x n x p broadcast), distance correlation only",
    "rsa_cov": "dask_repsim: RSA cosine_cov and corr_cov of correlation RDMs (one tile pass)",
    "rsatoolbox": "rsatoolbox 0.3 in memory: calc_rdm, compare",
    "rtd": "dask_repsim: RTD on the first --rtd-rows samples (in memory, gudhi)",
    "ripser_rtd": "ripser on the authors' 2n x 2n matrices, same samples",
    "predictivity": "dask_repsim: ridge and PLS predictivity, 10 folds (one co-moment pass)",
    "sklearn": "scikit-learn Ridge and PLSRegression in memory, the same 10 folds",
}
#: ridge penalty of the predictivity steps, relative to x's total variance
RIDGE = 1e-3
FOLDS = 10
#: the steps that hold everything in memory (the references, and RTD by design)
IN_MEMORY = ("numpy_knn", "numpy_distances", "dcor", "rsatoolbox", "ripser_rtd", "sklearn")


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
    kernels = [np.exp(-dist / (SIGMA * np.sqrt(np.median(sq)))) for dist, sq in zip(d, d2,
                                                                                   strict=True)]
    del d, d2
    k, g = (centred(m) for m in kernels)
    out["cka_laplace"] = float(np.sum(k * g) / np.sqrt(np.sum(k * k) * np.sum(g * g)))
    return out


def _rsatoolbox(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    import rsatoolbox as rt

    rdms = [rt.rdm.calc_rdm(rt.data.Dataset(z), method="correlation") for z in (x, y)]
    return {c: float(rt.rdm.compare(rdms[0], rdms[1], method=c)[0, 0]) for c in WHITENED}


def _ripser_rtd(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from ripser import ripser
    from scipy.spatial.distance import pdist, squareform

    r = [squareform(pdist(z)) for z in (x, y)]
    r = [m / np.quantile(m, 0.9) for m in r]

    def one(a: np.ndarray, b: np.ndarray) -> float:
        n = len(a)
        m = np.zeros((2 * n, 2 * n))
        m[n:, :n], m[:n, n:], m[n:, n:] = a, a, np.minimum(a, b)
        bars = ripser(m, distance_matrix=True, maxdim=1)["dgms"][1]
        return float(np.sum(bars[:, 1] - bars[:, 0]))

    return {"rtd": (one(r[0], r[1]) + one(r[1], r[0])) / 2}


def _sklearn(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.linear_model import Ridge

    bounds = np.linspace(0, len(x), FOLDS + 1).astype(int)
    scores: dict[str, list[float]] = {"ridge_predictivity": [], "pls_predictivity": []}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        train = np.r_[0:a, b:len(x)]
        xt = x[train]
        alpha = RIDGE * float(((xt - xt.mean(axis=0)) ** 2).sum())
        for name, model in (("ridge_predictivity", Ridge(alpha=alpha)),
                            ("pls_predictivity", PLSRegression(25, scale=False))):
            predicted = model.fit(xt, y[train]).predict(x[a:b])
            p, t = predicted - predicted.mean(axis=0), y[a:b] - y[a:b].mean(axis=0)
            r = (p * t).sum(axis=0) / np.sqrt((p * p).sum(axis=0) * (t * t).sum(axis=0))
            scores[name].append(float(np.median(r)))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def run_step(step: str, path: str, budget: str, rtd_rows: int) -> dict:
    import dask

    if step in IN_MEMORY:
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
        rows = rtd_rows if step == "ripser_rtd" else n
        x, y = (root[name][:rows].astype(np.float64) for name in ("x", "y"))
        functions = {"dcor": lambda a, b: {"distance_correlation": float(
            dcor.distance_correlation(a, b))}, "numpy_knn": _numpy_knn,
            "numpy_distances": _in_memory_distances, "rsatoolbox": _rsatoolbox,
            "ripser_rtd": _ripser_rtd, "sklearn": _sklearn}
        values = functions[step](x, y)
        return {"values": values, "seconds": time.perf_counter() - start}
    from dask_repsim.io.inputs import as_layer
    from dask_repsim.paths.sample_blocks.distances import distance_values
    from dask_repsim.paths.sample_blocks.neighbours import knn_values
    from dask_repsim.paths.sample_blocks.rsa import rsa_values
    from dask_repsim.paths.sample_blocks.topology import rtd_value

    layers = as_layer(f"{path}/x", name="x"), as_layer(f"{path}/y", name="y")
    if step == "rtd":
        layers = tuple(as_layer(layer.data[:rtd_rows], name=layer.name) for layer in layers)
    start = time.perf_counter()
    with dask.config.set({"repsim.memory-budget": budget}):
        if step == "knn":
            values = knn_values(*layers, K, measures=KNN)
        elif step == "distances":
            values = distance_values(*layers, measures=DIST, sigma=SIGMA)
        elif step == "rsa_cov":
            values = rsa_values(*layers, rdm="correlation", compares=WHITENED)
        elif step == "rtd":
            values = {"rtd": rtd_value(*layers)}
        else:
            import dask_repsim as dr

            values = {"ridge_predictivity": dr.ridge_predictivity(*(f"{path}/{v}" for v in "xy"),
                                                                  folds=FOLDS, ridge=RIDGE),
                      "pls_predictivity": dr.pls_predictivity(*(f"{path}/{v}" for v in "xy"),
                                                              folds=FOLDS, components=25)}
    return {"values": {k: float(v) for k, v in values.items()},
            "seconds": time.perf_counter() - start}


def _child(step: str, path: Path, budget: str, rtd_rows: int) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--path", str(path), "--budget", budget,
           "--rtd-rows", str(rtd_rows)]
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
    ratio = "-" if "rtd" in step else f"{r['seconds'] / floor:.2f}"  # on other samples
    head = (f"{step:<10} {r['seconds']:9.1f} {r['peak_rss_gb']:8.2f} "
            f"{ratio:>8}  {STEPS[step]}")
    return [head, *(f"{'':<10}   {name:<26} {value:.12f}" for name, value in r["values"].items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--chunk-rows", type=int, default=2_000)
    parser.add_argument("--budget", default="2GB")
    parser.add_argument("--rtd-rows", type=int, default=500,
                        help="samples of the RTD steps (in memory; default 500)")
    add_gemm_argument(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_step(args.child, args.path, args.budget, args.rtd_rows)))
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
        lines = _lines(step, _child(step, path, args.budget, args.rtd_rows), floor)
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
