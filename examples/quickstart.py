"""Quick start: two networks' activations in a local Zarr store, every measure on a local cluster.

Writes ``examples/output/activations.zarr`` with one group per network ("net_a", "net_b"), one
array per layer (samples x units, float32, chunked along samples, dimension names set), starts a
``distributed.LocalCluster`` with worker processes, and prints a table of all eight measures for
each layer of net_a against each layer of net_b, computed in one pass over the store.

    python examples/quickstart.py [--samples 200000] [--out examples/output]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import zarr
from distributed import Client, LocalCluster

import dask_repsim

CHUNK = 25_000


def write_network(root: zarr.Group, name: str, change: float, n: int) -> None:
    """Record three ReLU layers of a random network on shared inputs, chunk by chunk.

    Both networks start from the same weights; ``change`` mixes in that much of fresh random
    weights, as training from another seed or a later checkpoint would.
    """
    widths = [64, 128, 96, 32]
    base, fresh = np.random.default_rng(1), np.random.default_rng(int(change * 1000) + 2)
    weights = [
        ((1 - change) * base.normal(size=(a, b)) + change * fresh.normal(size=(a, b))) / np.sqrt(a)
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    group = root.require_group(name)
    arrays = [
        group.create_array(
            f"layer{i + 1}",
            shape=(n, w),
            chunks=(CHUNK, w),
            dtype="float32",
            dimension_names=("sample", f"unit{i + 1}"),
            overwrite=True,
        )
        for i, w in enumerate(widths[1:])
    ]
    data = np.random.default_rng(0)  # the same inputs for both networks
    for start in range(0, n, CHUNK):
        h = data.normal(size=(min(CHUNK, n - start), widths[0]))
        for arr, w in zip(arrays, weights, strict=True):
            h = np.maximum(h @ w, 0)
            arr[start : start + len(h)] = h.astype("float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "activations.zarr"
    root = zarr.open_group(store, mode="w")
    write_network(root, "net_a", change=0.0, n=args.samples)
    write_network(root, "net_b", change=0.5, n=args.samples)
    print(f"wrote {store}: 2 networks x 3 layers, {args.samples} samples")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        with Client(cluster) as client:
            print(f"dask cluster: {len(client.scheduler_info()['workers'])} worker processes")
            start = time.perf_counter()
            result = dask_repsim.compare(f"{store}/net_a", f"{store}/net_b")
            seconds = time.perf_counter() - start
    print(f"all {len(result.data_vars)} measures, 3 x 3 layers, one pass: {seconds:.1f} s\n")
    header = f"{'layer_a':8} {'layer_b':8} " + " ".join(f"{m:>17}" for m in result.data_vars)
    print(header)
    for a in result.layer_a.values:
        for b in result.layer_b.values:
            cell = result.sel(layer_a=a, layer_b=b)
            row = " ".join(f"{float(cell[m]):17.4f}" for m in result.data_vars)
            print(f"{a:8} {b:8} {row}")
    result.to_netcdf(args.out / "similarity.nc")
    print(f"\nsaved {args.out / 'similarity.nc'}")


if __name__ == "__main__":
    main()
