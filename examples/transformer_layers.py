"""Two small transformers from different seeds, every layer against every layer, tokens as samples.

Trains two copies of a two-layer ``nn.TransformerEncoder`` (batch first) that differ only in
their random seed on a toy sequence task (at each position, predict the token one step back),
then records four layers of each with :func:`dask_repsim.capture_activations` into local Zarr
stores (``examples/output/transformer_a.zarr`` and ``transformer_b.zarr``):

- ``embed``: the token embedding (``nn.Embedding``),
- ``encoder.layers.0`` and ``encoder.layers.1``: the two encoder blocks,
- ``head``: the per-token logits (``nn.Linear`` applied to the sequence).

Each is stored with dims ``(sample, token, unit)``, named by the module type. The evaluation
loader yields ``(tokens, ids)`` batches and each network is captured in a *different* order:
the captures' ``sample`` coordinates hold the ids, and :func:`dask_repsim.compare` pairs the
samples by id. Tokens are folded into samples (``sample_dims=("sample", "token")``): each
(sequence, position) is one sample, the usual way to compare transformer layers. Writes the
comparison (``transformer_layers.nc``) and its CKA heatmap (``transformer_layers.png``).

    python examples/transformer_layers.py [--steps 600] [--samples 2000] [--out examples/output]
    python examples/transformer_layers.py --quick --out /tmp/quick   # a few seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure  # not pyplot: writes files, needs no display
from torch import nn

import dask_repsim
from dask_repsim.plot import heatmap

VOCAB, LENGTH, WIDTH = 12, 10, 32
LAYERS = ["embed", "encoder.layers.0", "encoder.layers.1", "head"]


class TinyTransformer(nn.Module):
    """Token and position embeddings, two encoder blocks, a per-token linear head."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Embedding(LENGTH, WIDTH)
        block = nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, 2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position(torch.arange(tokens.shape[1]))
        return self.head(self.encoder(h))


def task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences and their targets: the previous token (the first: itself)."""
    tokens = torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))
    return tokens, torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)


def train(seed: int, steps: int) -> tuple[TinyTransformer, float]:
    """A network trained on fresh batches; its per-token accuracy on held-out sequences."""
    model = TinyTransformer(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        tokens, target = task(64, seed=1000 * (seed + 1) + step)
        loss = nn.functional.cross_entropy(model(tokens).reshape(-1, VOCAB), target.reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    tokens, target = task(512, seed=7)
    model.eval()
    with torch.no_grad():
        accuracy = (model(tokens).argmax(-1) == target).float().mean().item()
    return model, accuracy


def loader(tokens: torch.Tensor, ids: list[str], order: np.ndarray, batch: int = 50):
    """``(tokens, ids)`` batches in ``order``: each network sees the samples shuffled its way."""
    for start in range(0, len(order), batch):
        take = order[start : start + batch]
        yield tokens[take], [ids[i] for i in take]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps per network")
    parser.add_argument("--samples", type=int, default=2000, help="sequences captured")
    parser.add_argument("--out", type=Path, default=Path("examples/output"))
    parser.add_argument("--quick", action="store_true", help="60 steps, 200 sequences")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.samples = 60, 200
    torch.set_num_threads(1)  # tiny matrices: more threads only contend for the cores
    args.out.mkdir(parents=True, exist_ok=True)

    tokens, _ = task(args.samples, seed=3)
    ids = [f"seq{i:05d}" for i in range(args.samples)]
    datasets = {}
    for tag, seed in (("a", 0), ("b", 1)):
        model, accuracy = train(seed, args.steps)
        print(f"net_{tag}: seed {seed}, {args.steps} steps, token accuracy {accuracy:.3f}")
        order = np.random.default_rng(seed + 10).permutation(args.samples)
        store = args.out / f"transformer_{tag}.zarr"
        dask_repsim.capture_activations(
            model, loader(tokens, ids, order), layers=LAYERS, store=store, overwrite=True,
            sample_ids=1, n_samples=args.samples,
        )
        datasets[tag] = xr.open_zarr(store)
    a, b = datasets["a"], datasets["b"]
    print(f"captured dims: {dict(a['encoder.layers.0'].sizes)}; first ids of net_a "
          f"{a.sample.values[:2].tolist()}, of net_b {b.sample.values[:2].tolist()}")

    result = dask_repsim.compare(a, b, sample_dims=("sample", "token"),
                                 metrics=["cka", "svcca"])
    result.to_netcdf(args.out / "transformer_layers.nc")
    print(f"CKA, tokens folded into samples ({result.attrs['n_samples']} = "
          f"{args.samples} sequences x {LENGTH} tokens), samples paired by id:")
    print(result.cka.to_pandas().round(3).to_string())

    figure = Figure(figsize=(6, 5), layout="constrained")
    heatmap(result, "cka", ax=figure.add_subplot())
    figure.savefig(args.out / "transformer_layers.png", dpi=120)
    print(f"wrote {args.out / 'transformer_layers.png'} and {args.out / 'transformer_layers.nc'}")


if __name__ == "__main__":
    main()
