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


@pytest.mark.large  # the default run's docs build runs the script (its gallery)
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


@pytest.mark.large  # the default run's docs build runs the script (its gallery)
def test_inference_example_runs_small(tmp_path):
    """The inference example at 128 images and 99 permutations: the saved grids are linear
    and debiased CKA of the saved activations (numpy's, cell by cell), the counts and rows it
    prints follow from them, and the figure is a real PNG. Nothing is asserted about what the
    networks show."""
    pytest.importorskip("torch")
    matplotlib_image = pytest.importorskip("matplotlib.image")
    import references as ref
    import zarr

    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "inference.py"), "--n", "128",
         "--permutations", "99", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    layers = ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    def flat(group: str, layer: str) -> np.ndarray:
        stored = zarr.open_group(str(tmp_path / "inference.zarr" / group), mode="r")[layer]
        x = np.asarray(stored, dtype=np.float64)
        return x.reshape(len(x), -1)

    for name, group in (("same images", "b_same"), ("other images", "b_other")):
        with xr.open_dataset(tmp_path / f"inference_{group}.nc") as saved:
            saved = saved.load()
        assert saved.attrs["method"] == "gram" and saved.attrs["permutations"] == 99
        for metric, reference in (("cka", ref.linear_cka),
                                  ("cka_debiased", ref.debiased_linear_cka)):
            for la in ("conv1", "layer3", "fc"):
                for lb in ("layer1", "fc"):
                    expected = reference(flat("a", la), flat(group, lb))
                    got = float(saved[metric].sel(layer_a=la, layer_b=lb))
                    assert got == pytest.approx(expected, abs=1e-10), (name, metric, la, lb)
            counts = [int((saved[f"{metric}_{k}"] <= 0.05).sum())
                      for k in ("pvalue", "pvalue_fwer", "pvalue_fdr")]
            assert (f"{name}, {metric}: cells with p <= 0.05 of 49: uncorrected {counts[0]}, "
                    f"family-wise {counts[1]}, false discovery rate {counts[2]}") in result.stdout
            for layer in layers:
                cell = saved.sel(layer_a=layer, layer_b=layer)
                assert (f"  {layer:<8} {float(cell[metric]):6.3f}  95% interval "
                        f"[{float(cell[f'{metric}_low']):6.3f}") in result.stdout, layer
    png = tmp_path / "inference.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib_image.imread(png)
    assert image.shape[0] > 600 and image.shape[1] > 800 and image[..., :3].std() > 0.05


@pytest.mark.large  # the default run's docs build runs the script (its gallery)
def test_hf_models_example_runs_quick(tmp_path):
    """The Hugging Face example at its ``--quick`` size: each saved comparison is linear and
    debiased CKA of the saved stores' mean-pooled hidden states (numpy's, cell by cell), the
    tables it prints are the saved ones, and the figure is a real PNG. Nothing is asserted
    about what the networks show."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    matplotlib_image = pytest.importorskip("matplotlib.image")
    import references as ref
    import zarr

    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hf_models.py"), "--quick", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    layers = ["embeddings", "layer_1", "layer_2", "layer_3", "layer_4"]
    stores = {}
    for net in ("bert_a", "bert_b", "gpt2"):
        group = zarr.open_group(str(tmp_path / f"hf_models_{net}.zarr"), mode="r")
        state = group.attrs["dask_repsim_capture"]
        assert state["layers"] == layers and state["tokens"] == "mean" and state["complete"]
        np.testing.assert_array_equal(group["sample"][...], np.arange(300))
        stores[net] = {layer: np.asarray(group[layer], dtype=np.float64) for layer in layers}
        assert all(x.shape == (300, 64) and np.isfinite(x).all() for x in stores[net].values())
    for a, b in (("bert_a", "bert_b"), ("bert_a", "gpt2")):
        with xr.open_dataset(tmp_path / f"hf_models_{a}_{b}.nc") as saved:
            saved = saved.load()
        assert list(saved.layer_a.values) == layers == list(saved.layer_b.values)
        for metric, reference in (("cka", ref.linear_cka),
                                  ("cka_debiased", ref.debiased_linear_cka)):
            for la in layers:
                for lb in layers:
                    expected = reference(stores[a][la], stores[b][lb])
                    got = float(saved[metric].sel(layer_a=la, layer_b=lb))
                    assert got == pytest.approx(expected, abs=1e-9), (a, b, metric, la, lb)
        assert saved.cka.to_pandas().round(3).to_string() in result.stdout
    png = tmp_path / "hf_models.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib_image.imread(png)
    assert image.shape[0] > 400 and image.shape[1] > 800 and image[..., :3].std() > 0.05
