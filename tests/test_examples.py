"""The model-zoo example (``examples/model_zoo.py``) at its ``--quick`` size: the result it saves
is :func:`dask_repsim.compare_zoo` of the store it wrote, and every number of the table it prints
follows from that result, recomputed here with numpy (each layer's best match is the argmax of
its row within each other network). Nothing is asserted about what the networks show.

The other examples run at their quick size in ``tests/capture/test_capture.py`` and
``tests/io/test_model_layouts.py``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import dask_repsim as dr

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["narrow vs narrow", "wide vs wide", "narrow vs wide, same seed",
         "narrow vs wide, other seed"]
NETWORKS = ["narrow_s0", "narrow_s1", "wide_s0", "wide_s1"]  # the quick run's
LAYERS = ["h1", "h2", "h3", "h4"]


def kind_of(net_a: str, net_b: str) -> str:
    (width_a, seed_a), (width_b, seed_b) = net_a.split("_"), net_b.split("_")
    if width_a == width_b:
        return f"{width_a} vs {width_b}"
    return "narrow vs wide, " + ("same seed" if seed_a == seed_b else "other seed")


def expected_table(saved: xr.Dataset) -> dict[str, list[float]]:
    """Per kind of pair: trials, same depth, within one, same depth at h1 .. h4, matched cka,
    from the saved (a, b) grid alone."""
    cka = saved.cka.transpose("a", "b").values
    nets_a, layers_a = saved.network_a.values.astype(str), saved.layer_a.values.astype(str)
    nets_b, layers_b = saved.network_b.values.astype(str), saved.layer_b.values.astype(str)
    found: dict[str, list[tuple[int, int]]] = {k: [] for k in KINDS}
    for i, (net_a, layer_a) in enumerate(zip(nets_a, layers_a, strict=True)):
        for net_b in NETWORKS:
            if net_b == net_a:
                continue
            columns = np.flatnonzero(nets_b == net_b)
            best = columns[np.argmax(cka[i, columns])]
            found[kind_of(net_a, net_b)].append(
                (LAYERS.index(layer_a) + 1, LAYERS.index(layers_b[best]) + 1))
    table = {}
    for kind, pairs in found.items():
        depth = np.array(pairs)
        same = depth[:, 0] == depth[:, 1]
        matched = [np.mean([cka[(nets_a == a) & (layers_a == layer)][0][
            (nets_b == b) & (layers_b == layer)][0] for layer in LAYERS])
            for a, b in itertools.permutations(NETWORKS, 2) if kind_of(a, b) == kind]
        table[kind] = [len(depth), same.mean(), (abs(depth[:, 0] - depth[:, 1]) <= 1).mean(),
                       *(same[depth[:, 0] == d].mean() for d in range(1, 5)),
                       float(np.mean(matched))]
    return table


def test_model_zoo_example_runs_quick(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    matplotlib_image = pytest.importorskip("matplotlib.image")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "model_zoo.py"), "--quick", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "model_zoo.txt").read_text()
    assert text.strip() in result.stdout  # the table printed is the table written

    # the saved result is the zoo of the saved store: 4 networks of layers h1 .. h4
    with xr.open_dataset(tmp_path / "model_zoo.nc") as saved:
        saved = saved.load()
    direct = dr.compare_zoo(str(tmp_path / "model_zoo.zarr"), metrics=["cka"])
    assert [str(v) for v in saved.a.values] == [f"{n}/{layer}" for n in NETWORKS
                                                  for layer in LAYERS]
    np.testing.assert_allclose(saved.cka.values, direct.cka.values, rtol=0, atol=1e-12)

    # every row of the table, recomputed from the saved grid
    rows = {kind: line[len(kind):].split() for line in text.splitlines() for kind in KINDS
            if line.startswith(kind + " ")}
    assert list(rows) == KINDS, text
    expected = expected_table(saved)
    for kind, values in rows.items():
        assert int(values[0]) == expected[kind][0], kind
        np.testing.assert_allclose([float(v) for v in values[1:]], expected[kind][1:],
                                   atol=5e-4, err_msg=kind)
    # each layer is matched in each of the 3 other networks
    assert sum(int(v[0]) for v in rows.values()) == len(NETWORKS) * 3 * len(LAYERS)
    assert "Model zoo: 4 MLPs" in text and "mean test accuracy narrow" in text

    for name in ("matches", "layers", "networks"):
        png = tmp_path / f"model_zoo_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        image = matplotlib_image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400, name
        assert image[..., :3].std() > 0.05, name
