"""Growing a zoo: a zoo of 4 networks of wide layers grown by a 5th with a Gram store, against
comparing all 5 from scratch.

Five networks ("net0".."net4") see the same ``--n`` samples; each has the layers of
``--widths`` (default 65,536, 32,768 and 16,384 features, flattened conv layers: p > n),
float32, written to a Zarr v3 store of its own (a group, one array per layer in row chunks of
``--chunk-rows``, and the ``sample`` ids, as ``capture_activations`` writes them). The layers
are related: a shared low-rank signal through each network's seeded weights, ReLU, noise. Then,
each step in a fresh Python process, on Dask's threaded scheduler:

full    ``dask_repsim.compare_zoo`` of the 5 networks (``method="gram"``, ``metrics`` from
        ``--metrics``): every layer's Gram matrix formed, every cell computed
keep    ``compare_zoo`` of the 4 old networks with ``gram_store=`` (a fresh store), the result
        saved to netCDF: what a zoo that will grow runs once (not part of the ratio)
grow    ``dask_repsim.grow_zoo`` of that result by the 5th network, ``gram_store=`` the store
        of ``keep`` (a fresh store, so the 5th network's matrices are formed and written)

The report gives each step's wall time (imports excluded), CPU time, peak resident set size
(``wait4``'s ``ru_maxrss``, imports included), and the bytes read from each store (every
``get`` of a Zarr key through a counting wrapper store: chunks, metadata and the sample ids),
the ratio grow / full (target <= 1/3) and the largest difference between the cells of
``grow`` and ``full``. The report goes to ``--out`` (default
``benchmarks/results/zoo_grow.txt``), the raw figures beside it as ``.json``.

Examples
--------
::

    python benchmarks/bench_zoo_grow.py                        # n = 2,000, 3 layers a network
    python benchmarks/bench_zoo_grow.py --n 300 --widths 4096,1024 --out /tmp/zoo_grow.txt
    python benchmarks/bench_zoo_grow.py --keep                 # reuse the written stores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine_lines, plain, run_measured

HERE = Path(__file__).resolve().parent
NETWORKS = [f"net{i}" for i in range(5)]
OLD, NEW = NETWORKS[:4], NETWORKS[4]
RANK = 32
STEPS = {
    "full": "compare_zoo of all 5 networks from their activations (method='gram')",
    "keep": "compare_zoo of the 4 old networks with gram_store= (once, before growing)",
    "grow": "grow_zoo of the 4-network result by the 5th, from the Gram store",
}


# --------------------------------------------------------------------------- the data


def _layer_names(widths: list[int]) -> list[str]:
    return [f"layer{k}" for k in range(len(widths))]


def write_step(workdir: Path, n: int, widths: list[int], chunk: int, keep: bool) -> dict:
    """Write the five networks' stores (unless ``keep`` and complete): float32, chunk by chunk."""
    import zarr

    base = np.random.default_rng(0).normal(size=(n, RANK))
    done = {}
    for s, net in enumerate(NETWORKS):
        path = workdir / f"{net}.zarr"
        marker = workdir / f"{net}.complete"
        if keep and marker.exists():
            done[net] = None
            continue
        start = time.perf_counter()
        root = zarr.open_group(str(path), mode="w")
        root.create_array("sample", data=np.arange(n), dimension_names=("sample",))
        rng = np.random.default_rng(100 + s)
        for name, p in zip(_layer_names(widths), widths, strict=True):
            w = rng.normal(size=(RANK, p)) / np.sqrt(RANK)
            arr = root.create_array(name, shape=(n, p), chunks=(chunk, p), dtype="float32",
                                    dimension_names=("sample", f"{name}_unit"))
            for r0 in range(0, n, chunk):
                r1 = min(n, r0 + chunk)
                x = base[r0:r1] @ w + 0.5 * rng.standard_normal((r1 - r0, p))
                arr[r0:r1] = np.maximum(x, 0).astype(np.float32)
        marker.touch()
        done[net] = time.perf_counter() - start
    return {"seconds": done}


# --------------------------------------------------------------------------- the steps


def _counting(path: str):
    """A local Zarr store that counts the bytes of every key read through it."""
    import zarr.storage

    class CountingBytes(zarr.storage.WrapperStore):
        def __init__(self, store):
            super().__init__(store)
            self.bytes = 0

        async def get(self, key, prototype, byte_range=None):
            buf = await super().get(key, prototype, byte_range)
            if buf is not None:
                self.bytes += len(buf)
            return buf

        def _with_store(self, store):
            return self

    return CountingBytes(zarr.storage.LocalStore(path))


def _values(ds, metrics: list[str]) -> dict:
    return {m: ds[m].values.tolist() for m in metrics}


def run_step(args: argparse.Namespace) -> dict:
    import dask
    import xarray as xr
    import zarr

    import dask_repsim as dr
    from dask_repsim.engine.parallel import memory_budget

    metrics = args.metrics.split(",")
    grams = str(args.workdir / "grams.zarr")
    config = {"scheduler": "threads"}
    if args.budget:
        config["repsim.memory-budget"] = args.budget
    nets = OLD if args.step == "keep" else [NEW] if args.step == "grow" else NETWORKS
    stores = {net: _counting(str(args.workdir / f"{net}.zarr")) for net in nets}
    zoo = {net: zarr.open_group(s, mode="r") for net, s in stores.items()}
    gram_store = _counting(grams) if args.step == "grow" else None
    with dask.config.set(config):
        memory_budget()  # imports distributed (to look for a client) before the clock starts
        start = time.perf_counter()
        if args.step == "full":
            ds = dr.compare_zoo(zoo, metrics=metrics, method="gram")
        elif args.step == "keep":
            ds = dr.compare_zoo(zoo, metrics=metrics, gram_store=grams)
        else:
            with xr.open_dataset(args.workdir / "kept.nc") as kept:
                ds = dr.grow_zoo(kept.load(), zoo, gram_store=gram_store)
        seconds = time.perf_counter() - start
    if args.step == "keep":
        ds.to_netcdf(args.workdir / "kept.nc")
    read = {net: s.bytes for net, s in stores.items()}
    if gram_store is not None:
        read["Gram store"] = gram_store.bytes
    attrs = {k: v for k, v in ds.attrs.items() if k != "gram_digests"}
    return {"seconds": seconds, "read_bytes": read, "attrs": plain(attrs),
            "values": _values(ds, metrics), "labels": [str(v) for v in ds.a.values]}


def run_child(args: argparse.Namespace) -> dict:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.step == "write":
        result = write_step(args.workdir, args.n, args.widths, args.chunk_rows, args.keep)
    else:
        result = run_step(args)
    return {**result, "baseline_bytes": base}


def spawn(args: argparse.Namespace, step: str) -> dict:
    """Run ``step`` in a fresh interpreter; its peak RSS from the kernel via ``wait4``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--n", str(args.n),
           "--widths", ",".join(map(str, args.widths)), "--chunk-rows", str(args.chunk_rows),
           "--metrics", args.metrics, "--workdir", str(args.workdir)]
    cmd += ["--keep"] if args.keep else []
    cmd += ["--budget", args.budget] if args.budget else []
    result = run_measured(cmd, step)
    if "error" in result:
        raise SystemExit(f"step {step} failed: {result['error']}")
    return result


# --------------------------------------------------------------------------- the report




def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _read_text(read: dict) -> str:
    return "; ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in read.items())


def report(args: argparse.Namespace, results: dict, sizes: dict,
           start_load: tuple[float, ...]) -> list[str]:
    n, widths = args.n, args.widths
    full, grow = results["full"], results["grow"]
    ratio = grow["seconds"] / full["seconds"]
    same = grow["labels"] == full["labels"]
    diff = max(float(np.max(np.abs(np.array(grow["values"][m]) - np.array(full["values"][m]))))
               for m in full["values"]) if same else float("nan")
    written = ", ".join(f"{k} {v:.1f} s" if v is not None else f"{k} reused"
                        for k, v in results["write"]["seconds"].items())
    lines = [
        f"# dask_repsim zoo growth: a zoo of 4 networks grown by a 5th with a Gram store, "
        f"n = {n:,}, {len(widths)} layers a network",
        "",
        "command: python benchmarks/bench_zoo_grow.py " + " ".join(sys.argv[1:]),
        *machine_lines(start_load),
        "layers (per network, float32, flattened widths): "
        + ", ".join(f"{w:,}" for w in widths) + f"; row chunks of {args.chunk_rows}",
        f"data: {sum(sizes[k] for k in NETWORKS) / 1e9:.2f} GB in 5 stores "
        f"({sizes['net0'] / 1e6:,.1f} MB each) in {args.workdir}; write (not timed): {written}",
        f"Gram store after growing: {sizes['grams'] / 1e6:,.1f} MB "
        f"({5 * len(widths)} matrices of 8 n^2 = {8 * n * n / 1e6:,.1f} MB)",
        f"metrics: {args.metrics}; dask config repsim.memory-budget: "
        f"{args.budget or 'unset (the package default)'}; threaded scheduler",
        "",
        f"{'step':<5} {'seconds':>9} {'CPU s':>9} {'peak GB':>8} {'base GB':>8}  what",
    ]
    for step in ("full", "keep", "grow"):
        r = results[step]
        lines.append(f"{step:<5} {r['seconds']:9.2f} {r['cpu_seconds']:9.1f} "
                     f"{r['peak_bytes'] / 1e9:8.2f} {r['baseline_bytes'] / 1e9:8.2f}  "
                     f"{STEPS[step]}")
    lines += [
        "",
        "seconds: wall time of the work in the step's own process (imports excluded); CPU s: "
        "user + system time of that process;",
        "peak GB: its peak resident set size (imports included); base GB: its RSS after imports.",
        "",
        "bytes read (every Zarr key read through a counting store):",
        f"  full: {_read_text(full['read_bytes'])}",
        f"  keep: {_read_text(results['keep']['read_bytes'])}",
        f"  grow: {_read_text(grow['read_bytes'])}; the 4 old networks' stores: not opened, "
        "0 bytes",
        "",
        f"grow / full = {grow['seconds']:.2f} / {full['seconds']:.2f} s = {ratio:.3f} "
        f"(target <= 1/3: {'met' if ratio <= 1 / 3 else 'NOT met'})",
        f"max |grow - full| over {', '.join(full['values'])} "
        f"({len(full['labels']) ** 2} cells each): {diff:.2e}"
        + ("" if same else " (the layers differ: not compared)"),
        "",
        "grow: Dataset attrs " + json.dumps(grow["attrs"]),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="samples (default 2000)")
    parser.add_argument("--widths", default="65536,32768,16384",
                        help="each network's layer widths (default 65536,32768,16384)")
    parser.add_argument("--chunk-rows", type=int, default=256, help="rows a stored chunk "
                        "(default 256)")
    parser.add_argument("--metrics", default="cka,cka_debiased",
                        help="comma-separated metrics (default cka,cka_debiased)")
    parser.add_argument("--budget", help="dask config repsim.memory-budget, e.g. 4GB (default: "
                        "unset)")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default "
                        "benchmarks/data/zoo_grow_n<n>)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "zoo_grow.txt",
                        help="the report (default benchmarks/results/zoo_grow.txt)")
    parser.add_argument("--keep", action="store_true",
                        help="reuse complete network stores of these sizes in the work dir")
    parser.add_argument("--step", choices=("write", *STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.widths = [int(w) for w in str(args.widths).split(",")]
    args.workdir = (args.workdir or HERE / "data" / f"zoo_grow_n{args.n}").resolve()
    if args.step:
        print(json.dumps(run_child(args)))
        return
    if args.keep and (args.workdir / "widths.json").exists() and json.loads(
            (args.workdir / "widths.json").read_text()) != [args.widths, args.chunk_rows]:
        args.keep = False  # stores of other layers: write them again
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "widths.json").write_text(json.dumps([args.widths, args.chunk_rows]))
    start_load = os.getloadavg()
    results = {"write": spawn(args, "write"), "full": spawn(args, "full")}
    shutil.rmtree(args.workdir / "grams.zarr", ignore_errors=True)  # a fresh Gram store
    results["keep"] = spawn(args, "keep")
    results["grow"] = spawn(args, "grow")
    sizes = {net: _size(args.workdir / f"{net}.zarr") for net in NETWORKS}
    sizes["grams"] = _size(args.workdir / "grams.zarr")
    text = "\n".join(report(args, results, sizes, start_load)) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
