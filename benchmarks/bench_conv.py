"""Conv benchmark: two ResNet-18s, every layer against every layer, out of core and in memory.

Two ResNet-18s in the torchvision layout (random initialisation, ``torch.manual_seed(0)`` and
``(1)``, eval mode, 100 classes) see the same ``--n`` seeded random 64 x 64 RGB images; the
outputs of conv1, layer1..layer4, avgpool and fc are recorded with
``dask_repsim.capture_activations`` into ``a.zarr`` and ``b.zarr`` (float32; flattened widths
65,536, 16,384, 8,192, 4,096, 2,048, 512, 100). Then, each step in a fresh Python process:

read    one read pass over every stored chunk of both stores (dask ``from_zarr(...).sum()``),
        twice; the faster is the I/O floor
gemm    this machine's float64 GEMM rate (``_common.py``): the best of 3 products
        4096 x 4096 @ 4096 x 4096 with all BLAS threads in one product, and with one BLAS
        thread in each of the cores' threads, a product each at once; the floor takes the higher
ours    ``dask_repsim.compare(a, b, metrics=M, sigma=[0.4, 0.8])`` on Dask's threaded
        scheduler, dask config ``repsim.memory-budget`` from ``--budget`` (``sigma=`` only when
        ``cka_rbf`` is asked for; ``method=`` only when ``--method`` is given)
numpy   what a skilled user writes with the data in memory: each layer loaded as float64,
        columns centred, its n x n Gram K = Xc Xc^T formed once; then for all 49 pairs linear
        CKA, debiased CKA (the unbiased HSIC of Song et al. 2012, zero diagonals) and RBF CKA
        (Kornblith et al.'s gram_rbf: squared distances from the Gram, bandwidth
        2 sigma^2 median over all n^2 of them, centred HSIC); numpy's default threaded BLAS,
        all cores (its best)

The arithmetic floor is n^2 x (sum of the 14 layers' widths) / 2 multiply-adds (every layer's
n x n Gram, which the linear and RBF measures all need, as a symmetric product, syrk; a general
product needs twice as many) at the measured GEMM rate; the floor is the larger of it and the
read pass. Peak memory is each process's peak resident set size from the kernel (``wait4``'s
``ru_maxrss``, imports included). The report goes to ``benchmarks/results/conv_n<n>.txt`` (and
the raw figures and values to ``conv_n<n>.json``).

Examples
--------
::

    python benchmarks/bench_conv.py                          # n = 2048, all steps
    python benchmarks/bench_conv.py --n 256 --metrics cka,cka_debiased
    python benchmarks/bench_conv.py --n 20000 --skip-numpy --budget 6GB --keep
    python benchmarks/bench_conv.py --n 256 --metrics cka,cka_debiased --method gram --keep
"""

from __future__ import annotations

import argparse
import json
import os
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
    machine_lines,
    measure_gemm,
    plain,
    run_measured,
)

HERE = Path(__file__).resolve().parent
LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
WIDTHS = (65_536, 16_384, 8_192, 4_096, 2_048, 512, 100)
NUMPY_METRICS = ("cka", "cka_debiased", "cka_rbf")
BATCH = 64
STEPS = {
    "read": "one read pass over every chunk of both stores (column sums), the I/O floor",
    "ours": "dask_repsim.compare(a, b), threaded scheduler, BLAS 1 thread per task (package)",
    "numpy": "numpy in memory: 14 Gram matrices, 49 pairs, BLAS default threads (all cores)",
}


# --------------------------------------------------------------------------- the networks


def resnet18(seed: int):
    """ResNet-18 in the torchvision layout (BasicBlocks [2, 2, 2, 2], 100 classes), with
    torchvision's initialisation, seeded, in eval mode."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int = 1):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18(nn.Module):
        def __init__(self, num_classes: int = 100):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths = (64, 128, 256, 512)
            for i, planes in enumerate(widths):
                inplanes, stride = (64, 1) if i == 0 else (widths[i - 1], 2)
                blocks = [BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)
            for m in self.modules():  # as torchvision.models.ResNet
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(seed)
    return ResNet18().eval()


class Images:
    """``n`` seeded random 64 x 64 RGB images (standard normal, like normalised images), in
    batches of ``BATCH``; the same every time it is iterated."""

    def __init__(self, n: int, seed: int = 2024):
        self.n, self.seed = n, seed

    def __iter__(self):
        import torch

        for start in range(0, self.n, BATCH):
            size = min(BATCH, self.n - start)
            rng = np.random.default_rng([self.seed, start])
            yield torch.from_numpy(rng.standard_normal((size, 3, 64, 64), dtype=np.float32))


def _complete(store: Path, n: int) -> bool:
    import zarr

    try:
        state = zarr.open_group(store, mode="r").attrs["dask_repsim_capture"]
    except (FileNotFoundError, KeyError, ValueError):
        return False
    return bool(state.get("complete")) and int(state.get("committed", -1)) == n


def capture_step(workdir: Path, n: int, keep: bool) -> dict:
    """Record both networks' activations (or, with ``keep``, reuse complete stores)."""
    import dask_repsim

    out = {}
    for net, seed in (("a", 0), ("b", 1)):
        store = workdir / f"{net}.zarr"
        if keep and _complete(store, n):
            out[net] = None
            continue
        model = resnet18(seed)
        start = time.perf_counter()
        dask_repsim.capture_activations(
            model, Images(n), layers=list(LAYERS), store=str(store), overwrite=True, n_samples=n
        )
        out[net] = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------- the steps


def read_step(a: str, b: str) -> dict:
    import dask
    import dask.array as da

    arrays = [da.from_zarr(f"{store}/{name}") for store in (a, b) for name in LAYERS]
    times = []
    with dask.config.set(scheduler="threads"):
        for _ in range(2):
            start = time.perf_counter()
            dask.compute(*[x.sum(dtype="float64") for x in arrays])
            times.append(time.perf_counter() - start)
    return {"seconds": min(times), "times": times,
            "bytes": int(sum(x.nbytes for x in arrays))}


def ours_step(a: str, b: str, metrics: list[str], sigmas: list[float],
              budget: str | None, method: str | None) -> dict:
    import dask

    import dask_repsim

    config = {"scheduler": "threads"}
    if budget is not None:
        config["repsim.memory-budget"] = budget
    kwargs = {"sigma": sigmas} if "cka_rbf" in metrics else {}
    kwargs.update({"method": method} if method is not None else {})
    with dask.config.set(config), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        ds = dask_repsim.compare(a, b, metrics=metrics, **kwargs)
        seconds = time.perf_counter() - start
    values = {
        str(var): ds[var].sel(layer_a=list(LAYERS), layer_b=list(LAYERS)).values.tolist()
        for var in ds.data_vars
        if ds[var].dims == ("layer_a", "layer_b")
    }
    return {"seconds": seconds, "values": values, "attrs": plain(dict(ds.attrs)),
            "warnings": sorted({str(w.message) for w in caught})}


def _gram_of(root, name: str) -> np.ndarray:
    x = root[name][...]
    x = x.reshape(len(x), -1).astype(np.float64)
    x -= x.mean(axis=0)
    return x @ x.T  # numpy uses syrk for X X^T


def _median_sq_distance(k: np.ndarray) -> float:
    """Median of all n^2 squared distances (zero diagonal included), from the Gram matrix."""
    d = np.diag(k)
    dist = np.multiply(k, -2.0)
    dist += d[:, None]
    dist += d[None, :]
    return float(np.median(dist, overwrite_input=True))


def _rbf_centred(k: np.ndarray, median: float, sigma: float) -> np.ndarray:
    """exp(-D / (2 sigma^2 median)), double-centred, D the squared distances from ``k``."""
    d = np.diag(k)
    r = np.multiply(k, 2.0)
    r -= d[:, None]
    r -= d[None, :]  # r = -D
    r /= 2 * sigma**2 * median
    np.exp(r, out=r)
    m = r.mean(axis=0)
    r -= m[None, :]
    r -= m[:, None]
    r += m.mean()
    return r


def _debiased(kl: float, ka: dict, kb: dict, n: int) -> float:
    """n(n-3) x unbiased HSIC of the two Grams with their diagonals set to zero, from
    <K, L>, row sums, diagonals and totals (Song et al. 2012, eq. 5)."""
    trace = kl - ka["diag"] @ kb["diag"]
    rows = (ka["rows"] - ka["diag"]) @ (kb["rows"] - kb["diag"])
    totals = (ka["total"] - ka["diag"].sum()) * (kb["total"] - kb["diag"].sum())
    return trace + totals / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rows


def numpy_step(a: str, b: str, metrics: list[str], sigmas: list[float]) -> dict:
    import zarr

    start = time.perf_counter()
    rbf = "cka_rbf" in metrics
    grams, stats = {}, {}
    for net, store in (("a", a), ("b", b)):
        root = zarr.open_group(store, mode="r")
        for name in LAYERS:
            k = grams[net, name] = _gram_of(root, name)
            stats[net, name] = {"diag": np.diag(k).copy(), "rows": k.sum(axis=1),
                                "total": float(k.sum()), "norm": float(np.vdot(k, k)),
                                "median": _median_sq_distance(k) if rbf else None}
    n = len(grams["a", LAYERS[0]])
    loaded = time.perf_counter() - start
    values = {m: np.zeros((len(LAYERS), len(LAYERS))) for m in metrics if m != "cka_rbf"}
    for i, p in enumerate(LAYERS):
        for j, q in enumerate(LAYERS):
            sa, sb = stats["a", p], stats["b", q]
            kl = float(np.vdot(grams["a", p], grams["b", q]))
            if "cka" in values:  # the Grams of centred data are centred already
                values["cka"][i, j] = kl / np.sqrt(sa["norm"] * sb["norm"])
            if "cka_debiased" in values:
                xy = _debiased(kl, sa, sb, n)
                xx, yy = _debiased(sa["norm"], sa, sa, n), _debiased(sb["norm"], sb, sb, n)
                values["cka_debiased"][i, j] = xy / np.sqrt(xx * yy)
    for sigma in sigmas if rbf else ():
        values[f"cka_rbf_{sigma}"] = _rbf_values(grams, stats, sigma)
    return {"seconds": time.perf_counter() - start, "grams_seconds": loaded,
            "values": {m: v.tolist() for m, v in values.items()}, "blas": blas_info()}


def _rbf_values(grams: dict, stats: dict, sigma: float) -> np.ndarray:
    """RBF CKA of all pairs: network b's 7 centred RBF Grams held, network a's one at a time."""
    side_b = [_rbf_centred(grams["b", q], stats["b", q]["median"], sigma) for q in LAYERS]
    norms_b = [float(np.vdot(r, r)) for r in side_b]
    out = np.zeros((len(LAYERS), len(LAYERS)))
    for i, p in enumerate(LAYERS):
        r = _rbf_centred(grams["a", p], stats["a", p]["median"], sigma)
        norm = float(np.vdot(r, r))
        for j, rb in enumerate(side_b):
            out[i, j] = float(np.vdot(r, rb)) / np.sqrt(norm * norms_b[j])
        del r
    return out


def numpy_bytes(n: int, metrics: list[str]) -> int:
    """Estimated peak of the numpy step's arrays (imports not included): while a layer is
    loaded, the Grams formed before it, its own, and the layer in float32 and float64; then
    the 14 Grams, with RBF 7 + 1 centred RBF Grams more."""
    square = 8 * n * n
    loads = [square * (g + 1) + 12 * n * w for g, w in enumerate(WIDTHS + WIDTHS)]
    return max(*loads, square * (22 if "cka_rbf" in metrics else 14))


# --------------------------------------------------------------------------- the driver


def run_child(args: argparse.Namespace) -> dict:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    a, b = str(args.workdir / "a.zarr"), str(args.workdir / "b.zarr")
    metrics, sigmas = args.metrics.split(","), [float(s) for s in args.sigma.split(",")]
    if args.step == "capture":
        result = capture_step(args.workdir, args.n, args.keep)
    elif args.step == "read":
        result = read_step(a, b)
    elif args.step == "ours":
        result = ours_step(a, b, metrics, sigmas, args.budget, args.method)
    else:
        result = numpy_step(a, b, [m for m in metrics if m in NUMPY_METRICS], sigmas)
    return {**result, "baseline_bytes": base}


def spawn(args: argparse.Namespace, step: str) -> dict:
    """Run ``step`` in a fresh interpreter; its peak RSS from the kernel via ``wait4``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--n", str(args.n),
           "--metrics", args.metrics, "--sigma", args.sigma, "--workdir", str(args.workdir)]
    cmd += ["--keep"] if args.keep else []
    cmd += ["--budget", args.budget] if args.budget is not None else []
    cmd += ["--method", args.method] if args.method is not None else []
    return run_measured(cmd, step)




def max_difference(ours: dict, ref: dict) -> tuple[float, list[str]]:
    """Largest |ours - numpy| over every metric and cell both have, and the metrics compared."""
    common = [m for m in ref["values"] if m in ours.get("values", {})]
    diffs = [np.max(np.abs(np.array(ours["values"][m]) - np.array(ref["values"][m])))
             for m in common]
    return (float(max(diffs)) if diffs else float("nan")), common


def _matrix_lines(name: str, values: list[list[float]]) -> list[str]:
    lines = [f"{name} (rows: layers of network a, columns: layers of network b)",
             "  " + " " * 9 + "".join(f"{q:>10}" for q in LAYERS)]
    for p, row in zip(LAYERS, values, strict=True):
        lines.append(f"  {p:<9}" + "".join(f"{v:10.6f}" for v in row))
    return lines


def _step_lines(results: dict, floor: float) -> list[str]:
    ref = results.get("numpy", {}).get("seconds")
    lines = [f"{'step':<6} {'seconds':>9} {'CPU s':>9} {'peak GB':>8} {'base GB':>8} "
             f"{'x numpy':>8} {'x floor':>8}  what"]
    for step in ("read", "ours", "numpy"):
        r = results.get(step)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"{step:<6} failed: {r['error']}")
            continue
        s = r["seconds"]
        x_numpy = f"{s / ref:8.2f}" if ref else f"{'-':>8}"
        lines.append(f"{step:<6} {s:9.2f} {r['cpu_seconds']:9.1f} {r['peak_bytes'] / 1e9:8.2f} "
                     f"{r['baseline_bytes'] / 1e9:8.2f} {x_numpy} {s / floor:8.2f}  "
                     f"{STEPS[step]}")
    return lines


def report(args: argparse.Namespace, results: dict, start_load: tuple[float, ...]) -> list[str]:
    n, metrics = args.n, args.metrics.split(",")
    total = 2 * sum(WIDTHS)
    read, gemm = results["read"], results["gemm"]
    floor, floor_text = floor_lines(
        n * n * total / 2, f"n^2 x P / 2 = {n}^2 x {total:,} / 2 (every layer's n x n Gram as a "
        "symmetric product, syrk; a general product: twice)", gemm, read["seconds"])
    cap = results["capture"]
    captured = ", ".join(f"network {k} {v:.1f} s" if v is not None else f"network {k} reused"
                         for k, v in cap.items() if k in ("a", "b"))
    lines = [
        f"# dask_repsim conv benchmark: two ResNet-18s (seeds 0 and 1), 7 x 7 layers, "
        f"n = {n:,} random 64 x 64 RGB images",
        "",
        "command: python benchmarks/bench_conv.py " + " ".join(sys.argv[1:]),
        *machine_lines(start_load, ("numpy", "dask", "zarr", "xarray", "torch")),
        "layers (per network, flattened widths): "
        + ", ".join(f"{p} {w:,}" for p, w in zip(LAYERS, WIDTHS, strict=True))
        + f"; both networks together P = {total:,}",
        f"data: float32 Zarr v3 from capture_activations, {read['bytes'] / 1e9:.2f} GB for both "
        f"stores, in {args.workdir}",
        f"capture (not part of the comparison): {captured}; peak "
        f"{cap['peak_bytes'] / 1e9:.2f} GB",
        f"metrics: {', '.join(metrics)}; sigma {args.sigma} for cka_rbf; dask config "
        f"repsim.memory-budget: {args.budget or 'unset (the package default)'}; compare "
        f"method: {args.method or 'not passed (auto)'}",
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
    ]
    return lines + _comparison_lines(args, results, floor)


def _comparison_lines(args: argparse.Namespace, results: dict, floor: float) -> list[str]:
    ours, ref = results["ours"], results.get("numpy")
    lines = [""]
    if "error" in ours:
        lines.append(f"ours failed ({ours['error']}): no values")
        for name, values in (ref or {}).get("values", {}).items():
            lines += ["", *_matrix_lines(f"numpy {name}", values)]
        return lines
    lines.append(f"ours / floor = {ours['seconds'] / floor:.2f}")
    if ref is None:
        need = numpy_bytes(args.n, args.metrics.split(","))
        lines.append(f"numpy: skipped (--skip-numpy); it would need about {need / 1e9:.1f} GB "
                     "(estimate: 14 n x n float64 Grams, 22 with RBF, or while conv1 of "
                     "network b is loaded 8 Grams and 12 n x 65,536 bytes)")
    elif "error" not in ref:
        diff, common = max_difference(ours, ref)
        lines += [
            f"ours / numpy = {ours['seconds'] / ref['seconds']:.2f}; numpy formed its 14 Grams "
            f"(and, for RBF, medians) in {ref['grams_seconds']:.2f} s; its peak "
            f"{ref['peak_bytes'] / 1e9:.2f} GB against an estimate of "
            f"{numpy_bytes(args.n, args.metrics.split(',')) / 1e9:.2f} GB + imports",
            f"max |ours - numpy| over {', '.join(common)} ({49 * len(common)} cells): {diff:.2e}",
        ]
    lines += ["", "ours: Dataset attrs " + json.dumps(ours["attrs"])]
    lines += [f"ours: warning: {w}" for w in ours["warnings"]]
    for name, values in ours["values"].items():
        lines += ["", *_matrix_lines(name, values)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="images (default 2048)")
    parser.add_argument("--metrics", default="cka,cka_debiased,cka_rbf",
                        help="comma-separated compare metrics (default cka,cka_debiased,cka_rbf)")
    parser.add_argument("--sigma", default="0.4,0.8", help="cka_rbf bandwidths (default 0.4,0.8)")
    parser.add_argument("--budget", help="dask config repsim.memory-budget, e.g. 6GB (default: "
                        "unset)")
    parser.add_argument("--method", help="compare's method= (default: not passed, 'auto')")
    parser.add_argument("--skip-numpy", action="store_true", help="do not run the numpy step")
    parser.add_argument("--workdir", type=Path, help="where a.zarr and b.zarr go (default "
                        "benchmarks/data/conv_n<n>)")
    parser.add_argument("--keep", action="store_true",
                        help="reuse complete captured stores of this n in the work dir")
    add_gemm_argument(parser)
    parser.add_argument("--step", choices=("capture", *STEPS), help=argparse.SUPPRESS)
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
    print(f"[{datetime.now(UTC):%H:%M:%S}] GEMM rate ...", flush=True)
    results["gemm"] = measure_gemm(args.gemm_size)
    for step in ("read", "ours") + (() if args.skip_numpy else ("numpy",)):
        results[step] = spawn(args, step)
    if "error" in results["read"]:
        raise SystemExit("the read step failed")
    text = "\n".join(report(args, results, start_load)) + "\n"
    print(text)
    out = HERE / "results" / f"conv_n{args.n}.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(plain(results), indent=1))


if __name__ == "__main__":
    main()
