"""Convergent learning on scikit-learn's digits: do two networks from different seeds share units?

Trains two one-hidden-layer ReLU networks (``sklearn.neural_network.MLPClassifier``) that differ
only in their random seed, records the hidden layer of each on all 1797 digit images into a local
Zarr store (``examples/output/convergent_learning.zarr``, arrays ``net_a`` and ``net_b``, samples
x units, chunked along samples), then, from one pass over the store per measure:

- matches net_a's units to net_b's (bipartite: one-to-one; semi: each to its best) and plots the
  sorted matched correlations (``examples/output/convergent_learning.png``), as in Figure 2 of
  Li et al. (2016), "Convergent Learning";
- prints the sparse-prediction table: how well a sparse linear map of net_a's units predicts each
  of net_b's, by L1 penalty (loss, and non-zero weights per predicted unit).

    python examples/convergent_learning.py [--hidden 64] [--epochs 200] [--out examples/output]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import zarr  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from dask_repsim import RepsimWarning  # noqa: E402
from dask_repsim.pairwise.units import match_units, sparse_prediction  # noqa: E402

ALPHAS = (0.0, 1e-3, 1e-2, 3e-2, 1e-1)
CHUNK = 256


def hidden_activations(net: MLPClassifier, images: np.ndarray) -> np.ndarray:
    """The first hidden layer of a fitted network: ReLU(images W + b)."""
    return np.maximum(images @ net.coefs_[0] + net.intercepts_[0], 0.0)


def train(seed: int, hidden: int, epochs: int, images, labels) -> MLPClassifier:
    net = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=epochs, random_state=seed)
    # Matrices this small run fastest on one BLAS thread; more only contend for the cores.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        # A short run stops before the optimiser's tolerance is reached; that is the point.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return net.fit(images, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64, help="hidden units per network")
    parser.add_argument("--epochs", type=int, default=200, help="training epochs (max_iter)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    digits = load_digits()
    images = digits.data / 16.0
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.25, random_state=0
    )
    store = args.out / "convergent_learning.zarr"
    root = zarr.open_group(store, mode="w")
    for name, seed in (("net_a", 1), ("net_b", 2)):
        net = train(seed, args.hidden, args.epochs, train_x, train_y)
        acts = hidden_activations(net, images).astype("float32")
        arr = root.create_array(
            name,
            shape=acts.shape,
            chunks=(CHUNK, acts.shape[1]),
            dtype=acts.dtype,
            dimension_names=("sample", "unit"),
        )
        arr[...] = acts
        print(f"{name}: seed {seed}, test accuracy {net.score(test_x, test_y):.3f}")
    print(f"wrote {store}: {len(images)} samples x {args.hidden} units per network\n")

    a, b = f"{store}/net_a", f"{store}/net_b"
    with warnings.catch_warnings(record=True) as caught:
        # Dead ReLU units (never active on these images) are reported, not fatal.
        warnings.simplefilter("always", RepsimWarning)
        bipartite = match_units(a, b, method="bipartite")
        semi = match_units(a, b, method="semi")
        table = sparse_prediction(a, b, alphas=ALPHAS)
    for note in sorted({str(w.message) for w in caught if issubclass(w.category, RepsimWarning)}):
        print(f"note (x is net_a, y is net_b): {note}")

    shared = len(semi.unit_b) - len(np.unique(semi.unit_b))
    print(
        f"matched correlation: bipartite mean {float(bipartite.correlation.mean()):.3f}, "
        f"semi mean {float(semi.correlation.mean()):.3f} "
        f"({shared} of net_a's units share a semi-match with another)\n"
    )
    print("sparse prediction of net_b's units from net_a's (standardised units)")
    print(f"{'alpha':>8} {'loss':>8} {'nonzero weights per unit':>26}")
    for alpha in table.alpha.values:
        row = table.sel(alpha=alpha)
        print(f"{alpha:8.0e} {float(row.loss):8.4f} {float(row.nonzero.mean()):26.1f}")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(semi.pair) + 1), semi.correlation, label="semi-matching")
    ax.plot(np.arange(1, len(bipartite.pair) + 1), bipartite.correlation, label="bipartite")
    ax.set_xlabel("matched unit pair, sorted")
    ax.set_ylabel("correlation")
    ax.set_title("Units of two digit networks (different seeds)")
    ax.set_ylim(min(0.0, float(bipartite.correlation.min())), 1.0)
    ax.legend()
    fig.tight_layout()
    png = args.out / "convergent_learning.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"\nsaved {png} ({time.perf_counter() - start:.1f} s in all)")


if __name__ == "__main__":
    main()
