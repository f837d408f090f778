"""Which measure finds the corresponding layer of another network? (Kornblith et al. 2019, Table 2)

The sanity check of Kornblith, Norouzi, Lee & Hinton (2019, section 6.1), at small scale: given
architecturally identical networks trained from different random initialisations, the most
similar layer of the second network to each layer of the first should be the one at the same
depth. For each measure the table gives the share of layers for which that holds, over every
ordered pair of networks.

The networks are the paper's Tiny-10 (its Table E.1: eight conv layers with batch
normalisation and ReLU, two of stride 2, then global average pooling and the logits) shrunk to
8x8 inputs, with ``c`` = 8 base channels where Tiny-10 has 16, and padding 1 on the seventh
conv where Tiny-10 has valid padding (which would leave nothing of a 2x2 map)::

    conv c, conv c                            8 x 8   (c x 64 = 512 features each)
    conv 2c stride 2, conv 2c, conv 2c        4 x 4   (256 features each)
    conv 4c stride 2, conv 4c, 1x1 conv 4c    2 x 2   (128 features each)
    global average pooling, logits (10 classes)

So there are as many conv layers to tell apart as in Tiny-10 (eight; picking one at random
would be right 12.5% of the time), not the two or three a network for 8x8 inputs needs.
Each is trained for a few epochs on two thirds of scikit-learn's 8x8 digits, and the eight
post-ReLU conv outputs are recorded on the held-out third with
:func:`dask_repsim.capture_activations` (one Zarr group per network; conv layers have
dims ``sample, channel, height, width`` and every measure flattens all but ``sample`` into
features). For each pair of networks one :func:`dask_repsim.compare` call gives every
measure of every layer pair: the CCA-family measures, linear regression, HSIC and linear CKA
from one co-moment pass, RBF-kernel CKA (bandwidth 0.2, 0.4, 0.8 times the median distance)
from the shared sample-space Gram tiles, and measures outside the paper's table: RSA
(correlation RDMs compared by Pearson correlation), mutual 10-nearest-neighbour alignment
(Huh et al. 2024), the 10-NN Jaccard, rank and joint rank-Jaccard similarities (Wang et al.
2020, as ReSi defines them) from sample x sample tiles, and from the co-moments the Bures
distance (the size-and-shape Procrustes distance), GULP (Boix-Adserà et al. 2022) and the
permutation metric (Williams et al. 2021), distances for which the corresponding layer is the
nearest, the eigenspace overlap score (May et al. 2019) and the effective number of shared
dimensions (Giaffar et al. 2023); Laplace-kernel CKA (bandwidth 0.8 times the median
distance) and RSA's whitened ``corr_cov`` comparison (Diedrichsen et al. 2021) from sample x
sample tiles, cross-validated ridge (penalty by generalised cross-validation) and PLS
predictivity (Brain-Score's) from the co-moments of 10 folds, and RTD (Barannikov et al.
2022, in memory: on the first 200 digits). As in the paper, the logits are left out, SVCCA
keeps 99% of the variance, and the asymmetric measures (PWCCA, linear regression, the
predictivities) are symmetrised as ``s(A_i, B_j) + s(B_j, A_i)``. A layer counts as
identified only when the corresponding layer is strictly the most similar (a tie is a miss).

The paper's figures, from Table 2 of arXiv:1905.00414v4 (10 Tiny-10 CNNs on CIFAR-10, logits
excluded; checked against the paper's text), are printed beside this run's; they are the
paper's numbers, not recomputed here:

    CCA (rho-bar) 1.4, CCA (R2_CCA) 10.6, SVCCA (rho-bar) 9.9, SVCCA (R2_CCA) 15.1,
    PWCCA 11.1, Linear Reg. 45.4, Linear HSIC 22.2, CKA (Linear) 99.3,
    CKA (RBF 0.2) 80.6, CKA (RBF 0.4) 99.1, CKA (RBF 0.8) 99.3

The setting differs from the paper's in ways that matter: 8x8 digits are far
easier than CIFAR-10, the networks are small and briefly trained, there are fewer of them,
and the similarities are computed on the 599 held-out digits (the paper used the CIFAR-10
training set), so that the widest layers (512 features) come close to having as many
features as samples, where the CCA-family measures lose their meaning (the paper's Theorem
1). RSA, mutual k-NN and the measures after them are not in the paper's table: their "paper"
column is empty. The
table reports what this run shows, whatever it is.

    python examples/layer_identification.py [--quick] [--out examples/output]

Writes ``layer_identification.png`` (linear CKA, RBF CKA and mean-CCA layer-by-layer maps
between two of the networks, and the accuracy per measure beside the paper's) and
``layer_identification.txt`` (the table). ``--quick`` (two networks with ``c`` = 4, two epochs,
conv layers 1, 3, 5 and 7 only, 200 digits) only checks that everything runs; its numbers mean
little.
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

#: compare() metrics; the asymmetric ones are symmetrised as the paper did
COMPARE_METRICS = [
    "mean_cca", "r2_cca", "svcca", "svcca_r2", "pwcca", "linear_regression", "hsic", "cka",
    "cka_rbf", "rsa", "mutual_knn", "jaccard_knn", "rank_similarity", "joint_rank_jaccard",
    "bures_distance", "eigenspace_overlap", "gulp", "permutation_distance", "ensd",
    "cka_laplace", "ridge_predictivity", "pls_predictivity",
]
ASYMMETRIC = ["pwcca", "linear_regression", "ridge_predictivity", "pls_predictivity"]
#: distances: the corresponding layer is the one at the *smallest* distance
DISTANCES = ["bures_distance", "gulp", "permutation_distance", "rtd"]
#: RTD holds its 2n x 2n matrices in memory: it runs on the first RTD_SAMPLES digits (its
#: authors average over subsets of 500)
RTD_SAMPLES = 200
SIGMAS = [0.2, 0.4, 0.8]
#: (row label, how this run computes it or None, Kornblith et al. 2019 Table 2 figure)
ROWS = [
    ("CCA (rho-bar)", "mean_cca", 1.4),
    ("CCA (R2_CCA)", "r2_cca", 10.6),
    ("SVCCA (rho-bar)", "svcca", 9.9),
    ("SVCCA (R2_CCA)", "svcca_r2", 15.1),
    ("PWCCA", "pwcca", 11.1),
    ("Linear Reg.", "linear_regression", 45.4),
    ("Linear HSIC", "hsic", 22.2),
    ("CKA (Linear)", "cka", 99.3),
    ("CKA (RBF 0.2)", "cka_rbf_0.2", 80.6),
    ("CKA (RBF 0.4)", "cka_rbf_0.4", 99.1),
    ("CKA (RBF 0.8)", "cka_rbf_0.8", 99.3),
    ("RSA (corr. RDM)", "rsa", None),
    ("Mutual 10-NN", "mutual_knn", None),
    ("10-NN Jaccard", "jaccard_knn", None),
    ("Rank sim. (10-NN)", "rank_similarity", None),
    ("Joint rank-Jacc.", "joint_rank_jaccard", None),
    ("Bures distance", "bures_distance", None),
    ("Eigenspace ovl.", "eigenspace_overlap", None),
    ("GULP (ridge 0)", "gulp", None),
    ("Permutation dist.", "permutation_distance", None),
    ("ENSD", "ensd", None),
    ("CKA (Laplace 0.8)", "cka_laplace_0.8", None),
    ("RSA (corr_cov)", "rsa_corr_cov", None),
    ("Ridge predictiv.", "ridge_predictivity", None),
    ("PLS predictivity", "pls_predictivity", None),
    (f"RTD ({RTD_SAMPLES} digits)", "rtd", None),
]
MEASURES = [key for _, key, _ in ROWS if key is not None]


def make_net(seed: int, channels: int) -> tuple[torch.nn.Sequential, list[str]]:
    """A Tiny-10-like CNN for 8x8 inputs, and the names of its eight post-ReLU modules."""
    torch.manual_seed(seed)
    c = channels
    # (in, out, kernel, stride, padding) of the eight conv layers
    convs = [
        (1, c, 3, 1, 1),
        (c, c, 3, 1, 1),  # 8 x 8
        (c, 2 * c, 3, 2, 1),
        (2 * c, 2 * c, 3, 1, 1),
        (2 * c, 2 * c, 3, 1, 1),  # 4 x 4
        (2 * c, 4 * c, 3, 2, 1),
        (4 * c, 4 * c, 3, 1, 1),
        (4 * c, 4 * c, 1, 1, 0),  # 2 x 2
    ]
    modules: list[torch.nn.Module] = []
    hidden = []
    for cin, cout, k, stride, pad in convs:
        modules += [
            torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad),
            torch.nn.BatchNorm2d(cout),
            torch.nn.ReLU(),
        ]
        hidden.append(str(len(modules) - 1))
    modules += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4 * c, 10)]
    return torch.nn.Sequential(*modules), hidden


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels), images (n, 1, 8, 8) in [0, 1]."""
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    images = torch.tensor(data.images[order] / 16.0, dtype=torch.float32)[:, None]
    labels = torch.tensor(data.target[order])
    split = len(order) * 2 // 3
    return images[:split], labels[:split], images[split:], labels[split:]


def train(net: torch.nn.Module, images, labels, epochs: int, seed: int) -> None:
    """Adam on cross-entropy, minibatches of 32 in a seeded order."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=generator).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(images[idx]), labels[idx]).backward()
            opt.step()
    net.eval()


def accuracy(net: torch.nn.Module, images, labels) -> float:
    with torch.no_grad():
        return float((net(images).argmax(1) == labels).float().mean())


def similarity_grids(a: xr.Dataset, b: xr.Dataset) -> dict[str, np.ndarray]:
    """Every measure of the table for every (layer of a, layer of b): name -> (L, L) array."""
    forward = dask_repsim.compare(a, b, metrics=COMPARE_METRICS, sigma=SIGMAS)
    backward = dask_repsim.compare(b, a, metrics=ASYMMETRIC)
    whitened = dask_repsim.compare(a, b, metrics=["rsa"], rdm_compare="corr_cov")
    first = {"sample": slice(RTD_SAMPLES)}
    topology = dask_repsim.compare(a.isel(first), b.isel(first), metrics=["rtd"])
    grids = {m: forward[m].values for m in MEASURES if m in forward}
    grids["rsa_corr_cov"], grids["rtd"] = whitened["rsa"].values, topology["rtd"].values
    for m in ASYMMETRIC:  # Kornblith et al.: "we symmetrized the similarity as S + S^T"
        grids[m] = grids[m] + backward[m].values.T
    for m in DISTANCES:  # smaller is more similar: the identification takes the largest
        grids[m] = -grids[m]
    return grids


def identified(grid: np.ndarray) -> tuple[int, int]:
    """(hits, trials): layers of either network whose strictly most similar layer in the other
    network is the one at the same depth."""
    hits = 0
    for g in (grid, grid.T):  # layers of the first network, then of the second
        for i, row in enumerate(g):
            hits += int(row[i] > np.delete(row, i).max())
    return hits, 2 * grid.shape[0]


def table(result: dict[str, float], header: str) -> str:
    lines = [
        header,
        f"{'measure':<17}{'this run (%)':>13}{'paper (%)':>11}   dask_repsim",
    ]
    for label, key, paper in ROWS:
        ours = f"{100 * result[key]:>13.1f}" if key is not None else f"{'-':>13}"
        how = {
            None: "(not in dask_repsim)",
            "pwcca": "compare pwcca, S + S^T",
            "linear_regression": "compare linear_regression, S + S^T",
            "bures_distance": "compare bures_distance, the smallest",
            "gulp": "compare gulp, the smallest",
            "permutation_distance": "compare permutation_distance, the smallest",
            "ridge_predictivity": "compare ridge_predictivity (GCV), S + S^T",
            "pls_predictivity": "compare pls_predictivity, S + S^T",
            "rsa_corr_cov": "compare rsa, rdm_compare='corr_cov'",
            "rtd": f"compare rtd on {RTD_SAMPLES} digits, the smallest",
        }.get(key, f"compare {key.rsplit('_', 1)[0]}, sigma={key.rsplit('_', 1)[1]}"
              if key and ("rbf" in key or "laplace" in key) else None)
        cited = f"{paper:>11.1f}" if paper is not None else f"{'-':>11}"
        lines.append(f"{label:<17}{ours}{cited}   {how or 'compare ' + key}")
    lines.append(
        "paper: Kornblith et al. 2019, Table 2 (10 Tiny-10 CNNs, CIFAR-10, logits excluded)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (seconds)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    parser.add_argument("--nets", type=int, help="number of networks (default 4; quick 2)")
    args = parser.parse_args(argv)
    n_nets, epochs, channels, n_samples = (2, 2, 4, 200) if args.quick else (4, 10, 8, None)
    n_nets = args.nets or n_nets
    if n_nets < 2:
        parser.error("--nets must be at least 2")
    args.out.mkdir(parents=True, exist_ok=True)
    # One thread for torch and BLAS: the networks and matrices here are so small that a
    # second thread mostly waits on the first (and, on a busy machine, slows everything).
    torch.set_num_threads(1)
    threadpool_limits(1)
    # Small in-memory graphs: the single-threaded scheduler has the least overhead.
    dask.config.set(scheduler="synchronous")
    # Dead ReLU units and wide layers are expected here; the measures handle them.
    warnings.filterwarnings("ignore", category=dask_repsim.RepsimWarning)

    x_train, y_train, x_test, y_test = digits()
    x_test, y_test = x_test[:n_samples], y_test[:n_samples]
    started = time.perf_counter()
    stores, test_accuracies = [], []
    for seed in range(n_nets):
        net, layers = make_net(seed, channels)
        depths = list(range(1, len(layers) + 1))
        if args.quick:  # conv layers 1, 3, 5, 7 only
            layers, depths = layers[::2], depths[::2]
        train(net, x_train, y_train, epochs, seed)
        test_accuracies.append(accuracy(net, x_test, y_test))
        store = args.out / "layer_identification.zarr" / f"net{seed}"
        loader = torch.utils.data.DataLoader(x_test, batch_size=128)  # deterministic order
        capture_activations(net, loader, layers=layers, store=store, overwrite=True)
        stores.append(store)
        print(
            f"net{seed}: train accuracy {accuracy(net, x_train, y_train):.3f}, "
            f"test accuracy {test_accuracies[-1]:.3f}"
        )
    trained = time.perf_counter()

    # Zarr lists a group's arrays by name ("11" before "2"): put the layers back in depth order
    # (for the maps; the identification only needs the same order in both networks).
    datasets = [xr.open_zarr(store)[layers] for store in stores]
    widths = [int(np.prod(v.shape[1:])) for v in datasets[0].data_vars.values()]
    hits = dict.fromkeys(MEASURES, 0)
    trials = 0
    first = None
    for i, j in itertools.combinations(range(n_nets), 2):
        grids = similarity_grids(datasets[i], datasets[j])
        first = first or grids
        for m in MEASURES:
            h, trials_ij = identified(grids[m])
            hits[m] += h
        trials += trials_ij
        print(f"net{i} vs net{j}: compared ({time.perf_counter() - trained:.0f} s)")
    result = {m: hits[m] / trials for m in MEASURES}
    elapsed = time.perf_counter() - started

    header = (
        f"Layer identification: {n_nets} Tiny-10-like CNNs on 8x8 digits (c={channels}, "
        f"{epochs} epochs, mean test accuracy {np.mean(test_accuracies):.3f}), "
        f"{len(widths)} conv layers of {min(widths)}-{max(widths)} features, "
        f"{len(x_test)} held-out digits, {trials} layer trials per measure; "
        f"training {trained - started:.0f} s, comparing {elapsed - (trained - started):.0f} s"
    )
    text = table(result, header)
    print(text)
    (args.out / "layer_identification.txt").write_text(text + "\n")

    fig = Figure(figsize=(16, 4), layout="constrained")
    axes = fig.subplots(1, 4)
    ticks = range(1, len(depths) + 1)
    for ax, (measure, title) in zip(
        axes[:3],
        [("cka", "linear CKA"), ("cka_rbf_0.4", "RBF CKA (0.4)"), ("mean_cca", "mean CCA")],
        strict=True,
    ):
        image = ax.imshow(
            first[measure],
            vmin=0,
            vmax=1,
            cmap="magma",
            origin="lower",
            extent=(0.5, len(depths) + 0.5, 0.5, len(depths) + 0.5),
        )
        ax.set_xticks(ticks, depths)
        ax.set_yticks(ticks, depths)
        ax.set_xlabel("net1 conv layer")
        ax.set_ylabel("net0 conv layer")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.8)
    labels = [label for label, _, _ in ROWS]
    rows = np.arange(len(ROWS))
    ours = [100 * result[key] if key else np.nan for _, key, _ in ROWS]
    axes[3].barh(rows - 0.2, ours, height=0.4, color="tab:blue", label="this run")
    axes[3].barh(
        rows + 0.2, [np.nan if p is None else p for *_, p in ROWS], height=0.4,
        color="tab:gray", label="paper (CIFAR-10)",
    )
    axes[3].set_yticks(rows, labels)
    axes[3].set_xlim(0, 100)
    axes[3].set_xlabel("layers identified (%)")
    axes[3].invert_yaxis()
    axes[3].legend(loc="upper right", fontsize="small")
    fig.suptitle("Is the most similar layer of another network the corresponding one?")
    fig.savefig(args.out / "layer_identification.png", dpi=110)
    return result


if __name__ == "__main__":
    main()
