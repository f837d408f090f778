r"""More alike than chance? Permutation tests and intervals on a ResNet-18 grid.

Two ResNet-18s (the torchvision layout, random initialisation from seeds 0 and 1) see ``--n``
seeded random 32 x 32 images; seven layers of each (conv1, layer1..layer4, avgpool, fc; up to
16,384 features once flattened) are recorded with :func:`dask_repsim.capture_activations` into
``examples/output/inference.zarr``. Then every layer of network a against every layer of
network b, twice:

- *same images*: both networks saw the same images in the same order;
- *other images*: network b's activations of other images (a second seeded set), paired with
  network a's sample by sample: the layers are unrelated by construction.

Each grid is linear CKA and debiased CKA on the Gram tiles (the path ``method="auto"`` takes
for layers this wide), with a 999-permutation test of every cell (samples of b permuted, the same
permutations for every cell) and a 20-group jackknife interval. A 7 x 7 grid is 49 tests: the
family-wise corrected p-value (``<metric>_pvalue_fwer``, max-statistic) says which cells are
more alike than chance *among all 49*. The heatmaps (``examples/output/inference.png``) hatch
the cells whose corrected p-value exceeds 0.05. Run it as::

    python examples/inference.py [--n 256] [--permutations 999] [--out examples/output]

With a few hundred images and thousands of features, CKA of *unrelated* layers is far from 0
(above 0.9 for conv1 here): the value alone does not say whether two layers are alike, and the
test does (no cell of the "other images" grid passes). Debiased CKA (Song et al. 2012; Murphy
et al. 2024) is near 0 for them. Prints, for each grid and measure, how many cells pass at 0.05
uncorrected, family-wise corrected and with the false discovery rate controlled, and each pair
of corresponding layers with its interval (layer4 and avgpool coincide: at 32 x 32 inputs
layer4's output is 1 x 1).
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

LAYERS = ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
BATCH = 128


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """ResNet-18 as in torchvision (BasicBlocks [2, 2, 2, 2]), 10 classes."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        for i, planes in enumerate(widths):
            inplanes, stride = (64, 1) if i == 0 else (widths[i - 1], 2)
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, planes, stride),
                                                         BasicBlock(planes, planes)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, 10)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def images(n: int, seed: int):
    """``n`` seeded random 32 x 32 RGB images in batches, the same on every pass."""
    for start in range(0, n, BATCH):
        rng = np.random.default_rng([seed, start])
        yield torch.from_numpy(rng.standard_normal((min(BATCH, n - start), 3, 32, 32),
                                                   dtype=np.float32))


def record(out: Path, n: int) -> str:
    """Network a on image set 0, network b on image sets 0 and 1: three groups of one store."""
    store = str(out / "inference.zarr")
    for group, seed, image_seed in (("a", 0, 0), ("b_same", 1, 0), ("b_other", 1, 1)):
        dask_repsim.capture_activations(ResNet18(seed).eval(), images(n, image_seed),
                                        layers=LAYERS, store=f"{store}/{group}",
                                        overwrite=True, n_samples=n)
    return store


METRICS = ["cka", "cka_debiased"]


def summary(name: str, ds: xr.Dataset, metric: str) -> list[str]:
    """How many of the 49 cells pass at 0.05, and the corresponding layers with intervals."""
    passed = {kind: int((ds[f"{metric}_{kind}"] <= 0.05).sum())
              for kind in ("pvalue", "pvalue_fwer", "pvalue_fdr")}
    lines = [f"{name}, {metric}: cells with p <= 0.05 of {ds[metric].size}: uncorrected "
             f"{passed['pvalue']}, family-wise {passed['pvalue_fwer']}, false discovery rate "
             f"{passed['pvalue_fdr']}"]
    for layer in LAYERS:
        cell = ds.sel(layer_a=layer, layer_b=layer)
        lines.append(f"  {layer:<8} {float(cell[metric]):6.3f}  95% interval "
                     f"[{float(cell[f'{metric}_low']):6.3f}, {float(cell[f'{metric}_high']):6.3f}]"
                     f"  p {float(cell[f'{metric}_pvalue']):.3f}  p_fwer "
                     f"{float(cell[f'{metric}_pvalue_fwer']):.3f}")
    return lines


def main(argv: list[str] | None = None) -> dict[str, xr.Dataset]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images (default 256)")
    parser.add_argument("--permutations", type=int, default=999)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    store = record(args.out, args.n)
    grids = {}
    for name, b in (("same images", "b_same"), ("other images", "b_other")):
        grids[name] = dask_repsim.compare(f"{store}/a", f"{store}/{b}", metrics=METRICS,
                                          permutations=args.permutations, seed=0,
                                          interval="jackknife")
        grids[name].to_netcdf(args.out / f"inference_{b}.nc")
        for metric in METRICS:
            print("\n".join(summary(name, grids[name], metric)))
    figure = Figure(figsize=(11, 9.5), layout="constrained")
    axes = figure.subplots(2, 2)
    for column, (name, ds) in enumerate(grids.items()):
        for row, metric in enumerate(METRICS):
            heatmap(ds, metric, ax=axes[row, column], mark="pvalue_fwer", vmin=None)
            axes[row, column].set_title(f"{metric}, {name}")
    figure.savefig(args.out / "inference.png", dpi=110)
    print(f"wrote {args.out / 'inference.png'}; method {grids['same images'].attrs['method']}")
    return grids


if __name__ == "__main__":
    main()
