"""Wider networks, and networks that generalise, are more alike (Morcos et al. 2018, small scale).

Two experiments on scikit-learn's 8x8 digits with two-hidden-layer MLPs, activations recorded
with :func:`dask_repsim.capture.capture_activations` on held-out digits and compared with
projection-weighted CCA (:func:`dask_repsim.pwcca`):

- width: for each hidden width, networks from different seeds; mean PWCCA between the
  hidden layers of every pair of same-width networks. Morcos et al. found wider networks
  converge to more similar representations.
- labels: networks trained on the true labels against networks trained on shuffled labels
  (which can only memorise); mean PWCCA within each group. Morcos et al. found networks that
  generalise more similar to each other than networks that memorise.

    python examples/width_and_labels.py [--quick] [--out examples/output]

Writes ``width_and_labels.png`` and ``width_and_labels.txt``.
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure  # not pyplot: writes files, needs no display
from sklearn.datasets import load_digits

import dask_repsim
from dask_repsim.capture import capture_activations

LAYERS = ["1", "3"]  # the ReLU after each hidden layer


def make_net(width: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 10),
    )


def train(net, x, y, epochs: int, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def mean_pwcca(stores: list[Path]) -> float:
    """Mean PWCCA over every pair of networks and every hidden layer."""
    values = []
    for a, b in itertools.combinations(stores, 2):
        da, db = xr.open_zarr(a), xr.open_zarr(b)
        values += [dask_repsim.pwcca(da[name], db[name]) for name in LAYERS]
    return float(np.mean(values))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    args = parser.parse_args(argv)
    widths, seeds, epochs = ([8, 64], 2, 5) if args.quick else ([8, 16, 32, 64, 128], 4, 30)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", category=dask_repsim.RepsimWarning)  # dead ReLU units

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = torch.tensor(data.data[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target[order])
    split = len(x) * 2 // 3
    x_train, y_train, x_test = x[:split], y[:split], x[split:]
    shuffled = y_train[torch.randperm(split, generator=torch.Generator().manual_seed(99))]
    root = args.out / "width_and_labels.zarr"

    def run(name: str, width: int, seed: int, labels: torch.Tensor) -> Path:
        net = make_net(width, seed)
        acc = train(net, x_train, labels, epochs, seed)
        store = root / name
        loader = torch.utils.data.DataLoader(x_test, batch_size=200)
        capture_activations(net, loader, layers=LAYERS, store=store, overwrite=True)
        print(f"{name}: training accuracy {acc:.3f}")
        return store

    by_width = {
        w: mean_pwcca([run(f"w{w}_s{s}", w, s, y_train) for s in range(seeds)]) for w in widths
    }
    width = max(widths)
    memorising = [run(f"w{width}_shuffled_s{s}", width, s, shuffled) for s in range(seeds)]
    by_labels = {"true labels": by_width[width], "shuffled labels": mean_pwcca(memorising)}

    lines = [
        f"Mean PWCCA between same-width MLPs ({seeds} seeds, {len(x_test)} test digits)",
        f"{'width':<18}{'PWCCA':>8}",
        *(f"{w:<18}{v:>8.3f}" for w, v in by_width.items()),
        f"Width {width}: mean PWCCA within each group",
        *(f"{k:<18}{v:>8.3f}" for k, v in by_labels.items()),
    ]
    table = "\n".join(lines)
    print(table)
    (args.out / "width_and_labels.txt").write_text(table + "\n")

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(list(by_width), list(by_width.values()), "o-")
    left.set_xscale("log", base=2)
    left.set_xlabel("hidden width")
    left.set_ylabel("mean PWCCA between seeds")
    left.set_title("wider networks")
    right.bar(list(by_labels), list(by_labels.values()), color=["tab:blue", "tab:orange"])
    right.set_ylim(0, 1)
    right.set_title(f"true vs shuffled labels (width {width})")
    fig.savefig(args.out / "width_and_labels.png", dpi=110)
    return {**{f"width {w}": v for w, v in by_width.items()}, **by_labels}


if __name__ == "__main__":
    main()
