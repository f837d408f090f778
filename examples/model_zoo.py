"""A model zoo: does each layer's best match in another network sit at the same depth?

Eight MLPs trained here on scikit-learn's 8x8 digits, one architecture (four hidden layers with
ReLU, then the logits) at two widths, 16 ("narrow") and 128 ("wide") units per hidden layer,
each from seeds 0 to 3 (seed: initialisation and minibatch order). The four post-ReLU hidden
layers of every network are recorded on the held-out digits with
:func:`dask_repsim.capture_activations` into one Zarr store, one group per network, and the zoo
is compared with itself in one :func:`dask_repsim.compare_zoo` pass: linear CKA of every layer
of every network against every layer of every other (32 layers; each unordered pair computed
once).

:func:`dask_repsim.best_matches` then gives, for every layer, its most similar layer in each
other network. If training makes networks of one architecture alike layer by layer, that match
sits at the same depth. The table gives, per kind of pair (narrow with narrow, wide with wide,
narrow with wide of the same seed and of different seeds), the share of layers whose best match
is at the same depth (chance: one in four), the share within one layer of it, per depth, and the
mean linear CKA of the layers of the same depth (:func:`dask_repsim.network_similarity`,
``summary="matched"``). The output reports what this run shows, whatever it is.

    python examples/model_zoo.py [--quick] [--out examples/output]

Writes ``model_zoo.zarr`` (the activations), ``model_zoo.nc`` (the compare_zoo result),
``model_zoo.txt`` (the table) and three figures: ``model_zoo_matches.png`` (for each kind of
pair, the depth of each layer's best match against the layer's own depth: points on the diagonal
are at the same depth), ``model_zoo_layers.png`` (the zoo heatmap of four of the networks, a
panel per pair) and ``model_zoo_networks.png`` (the network-by-network mean CKA of the layers of
the same depth). ``--quick`` (two seeds per width, five epochs, 300 digits) only checks that
everything runs; its numbers mean little.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import dask
import numpy as np
import torch
import xarray as xr
import zarr
from matplotlib import pyplot as plt  # only to close zoo_heatmap's figure
from matplotlib.figure import Figure  # not pyplot: writes files, needs no display
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits  # installed with scikit-learn

import dask_repsim as dr
from dask_repsim.plot import network_heatmap, zoo_heatmap

WIDTHS = {"narrow": 16, "wide": 128}
DEPTH = 4  # hidden layers, recorded after their ReLU as h1 .. h4
LAYERS = [f"h{i}" for i in range(1, DEPTH + 1)]
#: the kinds of pairs of networks the table and the figure separate
KINDS = ["narrow vs narrow", "wide vs wide", "narrow vs wide, same seed",
         "narrow vs wide, other seed"]


def make_net(width: int, seed: int) -> torch.nn.Sequential:
    """Four hidden Linear + ReLU layers (the ReLUs named h1 .. h4), then the logits."""
    torch.manual_seed(seed)
    modules: OrderedDict[str, torch.nn.Module] = OrderedDict()
    size = 64
    for name in LAYERS:
        modules[f"fc{name[1:]}"] = torch.nn.Linear(size, width)
        modules[name] = torch.nn.ReLU()
        size = width
    modules["logits"] = torch.nn.Linear(size, 10)
    return torch.nn.Sequential(modules)


def train(net: torch.nn.Module, x, y, epochs: int, seed: int) -> None:
    """Adam on cross-entropy, minibatches of 32 in a seeded order."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()


def accuracy(net: torch.nn.Module, x, y) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def kind(net_a: str, net_b: str) -> str:
    """Which of :data:`KINDS` a pair of networks ("narrow_s0", "wide_s3", ...) is."""
    (width_a, seed_a), (width_b, seed_b) = net_a.split("_"), net_b.split("_")
    if width_a == width_b:
        return f"{width_a} vs {width_b}"
    return f"narrow vs wide, {'same' if seed_a == seed_b else 'other'} seed"


def match_depths(ds: xr.Dataset, metric: str = "cka") -> list[tuple[str, int, int]]:
    """(kind of pair, depth of the layer, depth of its best match) for every layer of every
    network and every other network, from :func:`dask_repsim.best_matches`."""
    best = dr.best_matches(ds, metric)
    out = []
    for i, (net_a, layer) in enumerate(zip(best.network_a.values, best.layer_a.values,
                                           strict=True)):
        for net_b, match in zip(best.network_b.values, best.match.values[i], strict=True):
            if net_b != net_a:
                out.append((kind(str(net_a), str(net_b)), LAYERS.index(str(layer)) + 1,
                            LAYERS.index(str(match)) + 1))
    return out


def summarise(ds: xr.Dataset, metric: str = "cka") -> dict[str, dict[str, float]]:
    """Per kind of pair: layer trials, the share whose best match is at the same depth, within
    one layer, at each depth, and the mean matched similarity of its pairs of networks."""
    depths = match_depths(ds, metric)
    matched = dr.network_similarity(ds, metric, summary="matched")
    rows = {}
    for name in KINDS:
        found = np.array([(a, b) for k, a, b in depths if k == name])
        if not len(found):
            continue
        pairs = [matched.sel(network_a=a, network_b=b).item()
                 for a, b in itertools.permutations(matched.network_a.values.tolist(), 2)
                 if kind(a, b) == name]
        rows[name] = {
            "trials": len(found), "same depth": float(np.mean(found[:, 0] == found[:, 1])),
            "within one": float(np.mean(abs(found[:, 0] - found[:, 1]) <= 1)),
            **{f"h{d}": float(np.mean(found[found[:, 0] == d, 1] == d))
               for d in range(1, DEPTH + 1)},
            f"matched {metric}": float(np.mean(pairs)),
        }
    return rows


def table(rows: dict[str, dict[str, float]], header: str) -> str:
    columns = ["trials", "same depth", "within one", *LAYERS, "matched cka"]
    lines = [header, "", f"{'pairs of networks':<28}" + "".join(f"{c:>12}" for c in columns)]
    for name, row in rows.items():
        cells = [f"{row['trials']:>12d}"] + [f"{row[c]:>12.3f}" for c in columns[1:]]
        lines.append(f"{name:<28}" + "".join(cells))
    lines.append("same depth: share of layers whose best match (largest linear CKA) in the "
                 "other network is at the same depth (chance 0.25); within one: at most one "
                 "layer away; h1 .. h4: same depth, per depth; matched cka: mean linear CKA of "
                 "the layers of the same depth (network_similarity, summary='matched')")
    return "\n".join(lines)


def matches_figure(depths: list[tuple[str, int, int]]) -> Figure:
    """A panel per kind of pair: each layer's depth against its best match's, as bubbles."""
    fig = Figure(figsize=(3.2 * len(KINDS), 3.6), layout="constrained")
    axes = fig.subplots(1, len(KINDS), sharey=True)
    for ax, name in zip(axes, KINDS, strict=True):
        found = [(a, b) for k, a, b in depths if k == name]
        ax.plot([0.5, DEPTH + 0.5], [0.5, DEPTH + 0.5], ":", color="0.6", zorder=0)
        for a, b in set(found):
            share = found.count((a, b)) / sum(x == a for x, _ in found)
            ax.scatter(a, b, s=900 * share, color="tab:blue", alpha=0.7)
            ax.annotate(f"{share:.0%}", (a, b), ha="center", va="center", fontsize="small")
        ax.set_xticks(range(1, DEPTH + 1), LAYERS)
        ax.set_yticks(range(1, DEPTH + 1), LAYERS)
        ax.set_xlim(0.5, DEPTH + 0.5)
        ax.set_ylim(0.5, DEPTH + 0.5)
        ax.set_xlabel("layer")
        ax.set_title(name, fontsize="medium")
    axes[0].set_ylabel("its best match in the other network")
    fig.suptitle("Where each layer's best match (linear CKA) sits; share per layer")
    return fig


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    args = parser.parse_args(argv)
    seeds, epochs, n_samples = (2, 5, 300) if args.quick else (4, 30, None)
    args.out.mkdir(parents=True, exist_ok=True)
    # One thread for torch and BLAS: these MLPs and matrices are so small that a second
    # thread mostly waits on the first (and, on a busy machine, slows everything).
    torch.set_num_threads(1)
    threadpool_limits(1)
    dask.config.set(scheduler="synchronous")  # small in-memory graphs: least overhead
    warnings.filterwarnings("ignore", category=dr.RepsimWarning)  # dead ReLU units
    started = time.perf_counter()

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x = torch.tensor(data.data[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target[order])
    split = len(x) * 2 // 3
    x_train, y_train = x[:split], y[:split]
    x_test, y_test = x[split:][:n_samples], y[split:][:n_samples]

    # The zoo's store: its root group first, then one group per network. A fresh store, so
    # that no network of an earlier run (the full run's, in the same --out) stays in the zoo.
    store = args.out / "model_zoo.zarr"
    zarr.open_group(store, mode="w")
    test_acc: dict[str, list[float]] = {}
    for width_name, width in WIDTHS.items():
        for seed in range(seeds):
            net = make_net(width, seed)
            train(net, x_train, y_train, epochs, seed)
            test_acc.setdefault(width_name, []).append(accuracy(net, x_test, y_test))
            loader = torch.utils.data.DataLoader(x_test, batch_size=200)  # a fixed order
            name = f"{width_name}_s{seed}"
            dr.capture_activations(net, loader, layers=LAYERS, store=store / name)
            print(f"{name}: test accuracy {test_acc[width_name][-1]:.3f}")
    trained = time.perf_counter()

    ds = dr.compare_zoo(store, metrics=["cka"])
    compared = time.perf_counter()
    ds.to_netcdf(args.out / "model_zoo.nc")
    rows = summarise(ds)
    n_nets = len(WIDTHS) * seeds
    header = (
        f"Model zoo: {n_nets} MLPs on 8x8 digits ({DEPTH} hidden ReLU layers of "
        f"{' or '.join(str(w) for w in WIDTHS.values())} units, seeds 0-{seeds - 1}, {epochs} "
        f"epochs on {split} digits; mean test accuracy "
        f"{', '.join(f'{k} {np.mean(v):.3f}' for k, v in test_acc.items())}); linear CKA on "
        f"{len(x_test)} held-out digits, one compare_zoo pass over {ds.sizes['a']} layers "
        f"({ds.attrs['method']} path); training {trained - started:.0f} s, "
        f"comparing {compared - trained:.0f} s"
    )
    text = table(rows, header)
    print(text)
    (args.out / "model_zoo.txt").write_text(text + "\n")

    matches_figure(match_depths(ds)).savefig(args.out / "model_zoo_matches.png", dpi=110)
    shown = [f"{w}_s{s}" for w in WIDTHS for s in range(2)]  # four networks: readable
    part = dr.select_zoo(ds, network_a=shown, network_b=shown)
    fig = zoo_heatmap(part, "cka")
    fig.savefig(args.out / "model_zoo_layers.png", dpi=90)
    plt.close(fig)  # zoo_heatmap draws with pyplot: let its figure go
    fig = Figure(figsize=(6.5, 5.2), layout="constrained")
    network_heatmap(dr.network_similarity(ds, "cka", summary="matched"), ax=fig.subplots())
    fig.savefig(args.out / "model_zoo_networks.png", dpi=110)
    return rows


if __name__ == "__main__":
    main()
