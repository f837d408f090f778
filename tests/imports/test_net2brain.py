"""import_net2brain: one .npz per image, and consolidate_per_layer's one .npz per layer."""

from __future__ import annotations

import numpy as np
import pytest
import tool_layouts as tl

import dask_repsim
from dask_repsim.imports.net2brain import import_net2brain

N = 13


@pytest.fixture
def extracted(tmp_path):
    rng = np.random.default_rng(3)
    layers = {"layer1": rng.standard_normal((N, 1, 3, 2, 2)).astype("float32"),
              "fc": rng.standard_normal((N, 1, 4)).astype("float32")}
    images = [f"/data/stimuli/image_{i:02d}.jpg" for i in range(N)]
    per_image = {img: {k: v[i] for k, v in layers.items()} for i, img in enumerate(images)}
    tl.net2brain_extract(str(tmp_path / "feats"), per_image)
    return tmp_path / "feats", {k: v[:, 0] for k, v in layers.items()}


@pytest.mark.parametrize("consolidated", [False, True])
def test_values_and_stems(extracted, tmp_path, consolidated):
    folder, want = extracted
    if consolidated:
        tl.net2brain_consolidate_per_layer(str(folder))
    group = import_net2brain(folder, tmp_path / "acts.zarr", chunk_samples=4)
    for name, acts in want.items():
        np.testing.assert_array_equal(group[name][...], acts)
    assert group["sample"][...].tolist() == [f"image_{i:02d}" for i in range(N)]
    grid = dask_repsim.compare(str(tmp_path / "acts.zarr"), want, metrics=["cka"])
    assert float(grid.cka.sel(layer_a="fc", layer_b="fc")) == pytest.approx(1.0, abs=1e-9)


def test_errors(extracted, tmp_path):
    folder, _ = extracted
    with pytest.raises(ValueError, match="holds no .npz files"):
        import_net2brain(tmp_path, tmp_path / "x.zarr")
    np.savez(folder / "image_99.npz", layer1=np.zeros((1, 3, 2, 2), "f4"))
    with pytest.raises(ValueError, match="image_99.npz has no layer 'fc'"):
        import_net2brain(folder, tmp_path / "x.zarr", chunk_samples=4)
    np.savez(folder / "image_99.npz", layer1=np.zeros((1, 3, 2, 2), "f4"), fc=np.zeros((1, 5)))
    with pytest.raises(ValueError, match="image_99.npz: layer 'fc' is float64 of shape"):
        import_net2brain(folder, tmp_path / "y.zarr", chunk_samples=4)
    np.savez(folder / "consolidated_fc.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="both consolidated_.*and per-image"):
        import_net2brain(folder, tmp_path / "z.zarr")
