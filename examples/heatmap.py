r"""Layer-by-layer heatmap: every layer of one small network against every layer of another.

Writes ``examples/output/heatmap.zarr`` with one group per network ("net_a", "net_b") and one
array per layer, with dimension names so that xarray opens each group as a Dataset: a conv
layer ``conv`` (sample, channel, height, width), then two dense layers and the logits
(sample, unit). net_b starts from net_a's weights with a fifth of each weight replaced by fresh
random ones, as a second training run would differ. The four layers of each are compared in
one pass (the conv layer flattened into features) and drawn as CKA and SVCCA heatmaps in
``examples/output/heatmap.png``. Run it as::

    python examples/heatmap.py [--samples 4000] [--out examples/output]

The same from the command line::

    dask-repsim compare examples/output/heatmap.zarr/net_a examples/output/heatmap.zarr/net_b \
        -m cka -m svcca --plot examples/output/heatmap_cli.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from matplotlib.figure import Figure  # not pyplot: writes files, needs no display
from numpy.lib.stride_tricks import sliding_window_view

import dask_repsim
from dask_repsim.plot import heatmap

CHUNK = 1000


def network_weights(change: float) -> dict[str, np.ndarray]:
    """Weights of a tiny conv net; ``change`` mixes in that share of fresh random weights."""
    shapes = {"conv": (8, 3, 3, 3), "fc1": (8 * 6 * 6, 64), "fc2": (64, 32), "logits": (32, 10)}
    base, fresh = np.random.default_rng(1), np.random.default_rng(2)
    return {
        name: ((1 - change) * base.normal(size=shape) + change * fresh.normal(size=shape))
        / np.sqrt(np.prod(shape[1:]) if name == "conv" else shape[0])
        for name, shape in shapes.items()
    }


def forward(images: np.ndarray, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Activations of every layer for a batch of (sample, 3, 8, 8) images."""
    patches = sliding_window_view(images, (3, 3), axis=(2, 3))  # (n, 3, 6, 6, 3, 3)
    conv = np.maximum(np.einsum("nchwij,kcij->nkhw", patches, w["conv"]), 0)
    fc1 = np.maximum(conv.reshape(len(conv), -1) @ w["fc1"], 0)
    fc2 = np.maximum(fc1 @ w["fc2"], 0)
    return {"conv": conv, "fc1": fc1, "fc2": fc2, "logits": fc2 @ w["logits"]}


def write_network(root: zarr.Group, name: str, change: float, n: int) -> None:
    """Record every layer's activations on the shared inputs, chunk by chunk."""
    weights = network_weights(change)
    dims = {
        "conv": ("sample", "channel", "height", "width"),
        "fc1": ("sample", "fc1_unit"),
        "fc2": ("sample", "fc2_unit"),
        "logits": ("sample", "class"),
    }
    group = root.require_group(name)
    inputs = np.random.default_rng(0)  # the same images for both networks
    arrays: dict[str, zarr.Array] = {}
    for start in range(0, n, CHUNK):
        batch = forward(inputs.normal(size=(min(CHUNK, n - start), 3, 8, 8)), weights)
        for layer, values in batch.items():
            if layer not in arrays:
                arrays[layer] = group.create_array(
                    layer,
                    shape=(n,) + values.shape[1:],
                    chunks=(CHUNK,) + values.shape[1:],
                    dtype="float32",
                    dimension_names=dims[layer],
                    overwrite=True,
                )
            arrays[layer][start : start + len(values)] = values.astype("float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "heatmap.zarr"
    root = zarr.open_group(store, mode="w")
    write_network(root, "net_a", change=0.0, n=args.samples)
    write_network(root, "net_b", change=0.2, n=args.samples)
    print(f"wrote {store}: 2 networks x 4 layers, {args.samples} samples")

    # dimension names make each group a Dataset; "sample" alone as sample dim flattens the
    # conv layer's (channel, height, width) into features
    layers = ["conv", "fc1", "fc2", "logits"]  # network order (a Dataset's is arbitrary)
    net_a = xr.open_zarr(store, group="net_a", consolidated=False)[layers]
    net_b = xr.open_zarr(store, group="net_b", consolidated=False)[layers]
    result = dask_repsim.compare(net_a, net_b, metrics=["cka", "svcca"], sample_dims="sample")
    print(result.cka.to_pandas().round(3))

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ["cka", "svcca"], strict=True):
        heatmap(result, metric, ax=ax)
    fig.suptitle("net_a (rows) against net_b (columns)")
    fig.savefig(args.out / "heatmap.png", dpi=120)
    print(f"saved {args.out / 'heatmap.png'}")


if __name__ == "__main__":
    main()
