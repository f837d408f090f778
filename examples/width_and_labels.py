"""Wider networks, and networks that generalise, are more alike (Morcos et al. 2018, small scale).

Morcos, Raghu & Bengio (2018, "Insights on representational similarity in neural networks
with canonical correlation", sections 3.1 and 3.2) compared groups of CIFAR-10 CNNs trained
from different initialisations with projection-weighted CCA (PWCCA), computed on the training
data, and found that

- wider networks converge to more similar solutions than narrow ones (their Figure 4a), and
- networks trained on the true labels (which generalise) converge to more similar solutions
  in later layers than networks trained to zero loss on a fixed random permutation of the
  labels (which can only memorise); early layers are about equally similar in both groups, and
  memorising networks are about as similar to each other as to generalising ones (Figure 3).

This example repeats both experiments on scikit-learn's 8x8 digits with two-hidden-layer MLPs.
The hidden layers (post-ReLU) are recorded on the training digits with
:func:`dask_repsim.capture_activations` (one Zarr group per network) and compared with
:func:`dask_repsim.pwcca` (the paper's definition), layer by layer, over every pair of
networks in a group:

- width: hidden widths 8 to 128, four seeds each, 30 epochs of Adam;
- labels: width 128, four networks on the true labels and four on one fixed permutation of
  them, 100 epochs each, which brings both groups to 100% training accuracy.

PWCCA of finite samples is not zero for unrelated representations, and this floor grows with
the number of units, which could make wider networks look more alike for no reason. Each row
therefore also gives a chance level: the same PWCCA with the second network's samples put in a
random order. The output states the paper's finding and what this run shows, whatever it is.

    python examples/width_and_labels.py [--quick] [--out examples/output]

Writes ``width_and_labels.png`` and ``width_and_labels.txt``. ``--quick`` (two widths, two
seeds, a few epochs) only checks that everything runs; its numbers mean little.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

import dask
import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure  # not pyplot: writes files, needs no display
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits  # installed with scikit-learn

import dask_repsim
from dask_repsim.capture.activations import capture_activations

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
    """Adam on cross-entropy, minibatches of 32 in a seeded order; the training accuracy."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return accuracy(net, x, y)


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def mean_pwcca(
    group_a: list[Path], group_b: list[Path] | None = None, seed: int = 0
) -> dict[str, float]:
    """Per hidden layer, mean PWCCA over every pair of networks within ``group_a`` (or between
    the two groups), and the same with one side's samples in a random order (``chance ...``)."""
    pairs = (
        list(itertools.combinations(group_a, 2))
        if group_b is None
        else list(itertools.product(group_a, group_b))
    )
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for a, b in pairs:
        da, db = xr.open_zarr(a).load(), xr.open_zarr(b).load()  # small: read once
        shuffled = db.isel(sample=rng.permutation(db.sizes["sample"]))
        for name in LAYERS:
            values.setdefault(f"layer {name}", []).append(dask_repsim.pwcca(da[name], db[name]))
            values.setdefault(f"chance {name}", []).append(
                dask_repsim.pwcca(da[name], shuffled[name])
            )
    return {k: float(np.mean(v)) for k, v in values.items()}


def layer_mean(values: dict[str, float], kind: str = "layer") -> float:
    """Mean over the hidden layers of ``mean_pwcca``'s ``layer ...`` (or ``chance ...``)."""
    return float(np.mean([values[f"{kind} {name}"] for name in LAYERS]))


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    args = parser.parse_args(argv)
    if args.quick:
        widths, seeds, epochs, label_width, label_epochs = [8, 64], 2, 5, 64, 5
    else:
        widths, seeds, epochs, label_width, label_epochs = [8, 16, 32, 64, 128], 4, 30, 128, 100
    args.out.mkdir(parents=True, exist_ok=True)
    # One thread for torch and BLAS: these MLPs and matrices are so small that a second
    # thread mostly waits on the first (and, on a busy machine, slows everything).
    torch.set_num_threads(1)
    threadpool_limits(1)
    dask.config.set(scheduler="synchronous")  # small in-memory graphs: least overhead
    warnings.filterwarnings("ignore", category=dask_repsim.RepsimWarning)  # dead ReLU units
    started = time.perf_counter()

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = torch.tensor(data.data[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target[order])
    split = len(x) * 2 // 3
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    shuffled = y_train[torch.randperm(split, generator=torch.Generator().manual_seed(99))]
    root = args.out / "width_and_labels.zarr"
    test_acc: dict[str, list[float]] = {}
    train_acc: dict[str, list[float]] = {}

    def run(group: str, width: int, seed: int, labels: torch.Tensor, n_epochs: int) -> Path:
        net = make_net(width, seed)
        train_acc.setdefault(group, []).append(train(net, x_train, labels, n_epochs, seed))
        test_acc.setdefault(group, []).append(accuracy(net, x_test, y_test))
        store = root / f"{group}_s{seed}"
        # Recorded on the training digits, as in the paper.
        loader = torch.utils.data.DataLoader(x_train, batch_size=200)
        capture_activations(net, loader, layers=LAYERS, store=store, overwrite=True)
        print(
            f"{group} seed {seed}: train accuracy {train_acc[group][-1]:.3f}, "
            f"test accuracy {test_acc[group][-1]:.3f}"
        )
        return store

    by_width = {}
    for w in widths:
        by_width[w] = mean_pwcca([run(f"w{w}", w, s, y_train, epochs) for s in range(seeds)])
    true = [run("true", label_width, s, y_train, label_epochs) for s in range(seeds)]
    memo = [run("shuffled", label_width, s, shuffled, label_epochs) for s in range(seeds)]
    by_labels = {
        "true labels": mean_pwcca(true),
        "shuffled labels": mean_pwcca(memo),
        "true vs shuffled": mean_pwcca(true, memo),
    }
    elapsed = time.perf_counter() - started

    def cells(v: dict[str, float]) -> str:
        return "".join(f"{v[f'{k} {n}']:>10.3f}" for k in ("layer", "chance") for n in LAYERS)

    head = "".join(f"{f'{k} {i + 1}':>10}" for k in ("layer", "chance") for i in range(2))
    acc = {g: (np.mean(train_acc[g]), np.mean(test_acc[g])) for g in train_acc}
    group_of = {"true labels": "true", "shuffled labels": "shuffled", "true vs shuffled": None}
    lines = [
        f"Mean PWCCA between two-hidden-layer MLPs on 8x8 digits, per hidden layer, on the "
        f"{split} training digits; chance: the second network's samples shuffled ({elapsed:.0f} s)",
        "",
        f"Width ({seeds} seeds each, {epochs} epochs; pairs within each width)",
        f"{'width':<18}{'train acc':>10}{'test acc':>10}{head}",
        *(
            f"{w:<18}{acc[f'w{w}'][0]:>10.3f}{acc[f'w{w}'][1]:>10.3f}{cells(v)}"
            for w, v in by_width.items()
        ),
        "",
        f"Labels (width {label_width}, {seeds} seeds per group, {label_epochs} epochs)",
        f"{'group':<18}{'train acc':>10}{'test acc':>10}{head}",
    ]
    for name, v in by_labels.items():
        g = group_of[name]
        a = f"{acc[g][0]:>10.3f}{acc[g][1]:>10.3f}" if g else f"{'':>20}"
        lines.append(f"{name:<18}{a}{cells(v)}")

    # What the paper found, and whether this run shows it, from the numbers above.
    def trend(kind: str, name: str) -> str:
        series = [by_width[w][f"{kind} {name}"] for w in widths]
        steps = list(itertools.pairwise(series))
        shape = (
            "rising at every step"
            if all(b > a for a, b in steps)
            else f"rising at {sum(b > a for a, b in steps)} of {len(steps)} steps"
        )
        return f"{series[0]:.3f} -> {series[-1]:.3f} ({shape})"

    widths_seen = f"width {widths[0]} -> {widths[-1]}"
    rows = {
        k: (by_labels[k][f"layer {LAYERS[0]}"], by_labels[k][f"layer {LAYERS[-1]}"])
        for k in by_labels
    }
    (gen1, gen2), (mem1, mem2), (inter1, inter2) = rows.values()
    lines += [
        "",
        "Morcos et al. 2018 (CIFAR-10 CNNs) found: wider networks converge to more similar "
        "solutions; generalising networks are more alike in later layers than memorising ones, "
        "which are about as alike to each other as to generalising ones; early layers about "
        "equally alike in both groups.",
        f"This run, {widths_seen}: hidden layer 1 {trend('layer', LAYERS[0])}, hidden layer 2 "
        f"{trend('layer', LAYERS[1])}; chance level {trend('chance', LAYERS[0])} and "
        f"{trend('chance', LAYERS[1])}.",
        f"This run, labels: hidden layer 2 true {gen2:.3f} vs shuffled {mem2:.3f} "
        f"({'generalising more alike' if gen2 > mem2 else 'generalising NOT more alike'}), "
        f"true vs shuffled {inter2:.3f}; hidden layer 1 true {gen1:.3f} vs shuffled "
        f"{mem1:.3f}, true vs shuffled {inter1:.3f}.",
    ]
    table = "\n".join(lines)
    print(table)
    (args.out / "width_and_labels.txt").write_text(table + "\n")

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for i, name in enumerate(LAYERS):
        color = f"C{i}"
        left.plot(
            widths,
            [by_width[w][f"layer {name}"] for w in widths],
            "o-",
            color=color,
            label=f"hidden layer {i + 1}",
        )
        left.plot(
            widths,
            [by_width[w][f"chance {name}"] for w in widths],
            "o:",
            color=color,
            alpha=0.6,
            label=f"chance, layer {i + 1}",
        )
    left.set_xscale("log", base=2)
    left.set_xticks(widths, [str(w) for w in widths])
    left.set_ylim(0, 1)
    left.set_xlabel("hidden width")
    left.set_ylabel("mean PWCCA between seeds")
    left.set_title("wider networks")
    left.legend(fontsize="small")
    groups = np.arange(len(by_labels))
    for i, name in enumerate(LAYERS):
        right.bar(
            groups + (i - 0.5) * 0.35,
            [v[f"layer {name}"] for v in by_labels.values()],
            width=0.35,
            color=f"C{i}",
            label=f"hidden layer {i + 1}",
        )
        right.scatter(
            groups + (i - 0.5) * 0.35,
            [v[f"chance {name}"] for v in by_labels.values()],
            marker="_",
            s=200,
            color="k",
            zorder=3,
            label="chance" if i == 0 else None,
        )
    right.set_xticks(groups, list(by_labels))
    right.set_ylim(0, 1.2)
    right.set_yticks(np.linspace(0, 1, 6))
    right.set_title(f"true vs shuffled labels (width {label_width})")
    right.legend(fontsize="small", loc="upper center", ncols=3)
    fig.savefig(args.out / "width_and_labels.png", dpi=110)
    return {"width": {str(w): v for w, v in by_width.items()}, "labels": by_labels}


if __name__ == "__main__":
    main()
