"""Heatmaps of compare() results: what is drawn is the data, labelled by layer and metric."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import xarray as xr

import dask_repsim
from dask_repsim.plot import heatmap

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(150, 5))
    a = {"in": x, "hidden": np.maximum(x @ rng.normal(size=(5, 7)), 0), "out": x[:, :2]}
    b = {"conv": rng.normal(size=(150, 2, 2, 2)), "fc": np.tanh(x @ rng.normal(size=(5, 4)))}
    return dask_repsim.compare(a, b, metrics=["cka", "procrustes"])


def labels(ticks) -> list[str]:
    return [t.get_text() for t in ticks]


def test_image_ticks_colorbar_title(result):
    ax = heatmap(result, "procrustes")
    (image,) = ax.images
    # the image is the grid itself: layer_a down the rows, layer_b across the columns
    np.testing.assert_array_equal(np.asarray(image.get_array()), result.procrustes.values)
    assert labels(ax.get_yticklabels()) == ["in", "hidden", "out"]
    assert labels(ax.get_xticklabels()) == ["conv", "fc"]
    assert list(ax.get_yticks()) == [0, 1, 2] and list(ax.get_xticks()) == [0, 1]
    assert ax.get_xlabel() == "layer_b" and ax.get_ylabel() == "layer_a"
    assert image.colorbar is not None
    assert image.colorbar.ax.get_ylabel() == "procrustes"
    assert image.get_clim() == (0.0, 1.0)
    assert " ".join(ax.get_title().split()) == result.procrustes.attrs["description"]


def test_small_grid_is_annotated_with_its_values(result):
    ax = heatmap(result, "cka")
    values = result.cka.values
    assert len(ax.texts) == values.size
    for text in ax.texts:
        col, row = text.get_position()
        assert text.get_text() == f"{values[int(row), int(col)]:.2f}"
    assert {(int(t.get_position()[1]), int(t.get_position()[0])) for t in ax.texts} == {
        (i, j) for i in range(values.shape[0]) for j in range(values.shape[1])
    }
    assert len(heatmap(result, "cka", annotate=False).texts) == 0


def test_large_grid_is_not_annotated_unless_asked():
    rng = np.random.default_rng(0)
    names = [f"l{i}" for i in range(13)]
    grid = xr.Dataset(
        {"cka": (("layer_a", "layer_b"), rng.uniform(size=(13, 13)))},
        coords={"layer_a": names, "layer_b": names},
    )
    assert len(heatmap(grid, "cka").texts) == 0
    assert len(heatmap(grid, "cka", annotate=True).texts) == 13 * 13
    twelve = grid.isel(layer_a=slice(12), layer_b=slice(12))
    assert len(heatmap(twelve, "cka").texts) == 12 * 12


def test_draws_into_given_axes_and_saves_png(result, tmp_path):
    fig, (left, right) = plt.subplots(1, 2)
    assert heatmap(result, "cka", ax=right, vmin=None, vmax=None, cmap="magma") is right
    assert not left.images
    image = right.images[0]
    values = result.cka.values
    assert image.get_clim() == pytest.approx((values.min(), values.max()))
    assert image.get_cmap().name == "magma"
    fig.savefig(tmp_path / "cka.png")
    data = (tmp_path / "cka.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    png = matplotlib.image.imread(tmp_path / "cka.png")
    width, height = fig.get_size_inches() * fig.dpi
    assert png.shape[:2] == (round(height), round(width))


def test_dataarray_and_single_metric_dataset(result):
    ax = heatmap(result.cka)
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), result.cka.values)
    assert ax.images[0].colorbar.ax.get_ylabel() == "cka"
    transposed = heatmap(result[["cka"]].transpose("layer_b", "layer_a"))
    np.testing.assert_array_equal(
        np.asarray(transposed.images[0].get_array()), result.cka.values
    )


def test_bad_requests(result):
    with pytest.raises(ValueError, match="several metrics"):
        heatmap(result)
    with pytest.raises(ValueError, match="'svcca' is not in the result"):
        heatmap(result, "svcca")
    with pytest.raises(ValueError, match="layer_a"):
        heatmap(xr.DataArray(np.zeros((2, 2)), dims=("x", "y")))
    with pytest.raises(TypeError):
        heatmap(np.zeros((2, 2)), "cka")


def test_missing_matplotlib_says_how_to_install(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install dask-repsim\[plot\]"):
        heatmap(result, "cka")


def _hatched_cells(ax) -> set[tuple[int, int]]:
    """(row, column) of the cells covered by a hatched rectangle."""
    return {
        (round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in ax.patches if p.get_hatch()
    }


def test_mark_pvalue_hatches_cells_not_more_similar_than_permuted():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300, 3))
    a = {"x": x, "noise": rng.normal(size=(300, 3))}
    b = {"y": x @ rng.normal(size=(3, 3)) + 0.5 * rng.normal(size=(300, 3))}
    ds = dask_repsim.compare(a, b, metrics=["cka"], permutations=19, seed=0)
    pvalues = ds.cka_pvalue.values
    assert pvalues[0, 0] == pytest.approx(0.05) and pvalues[1, 0] > 0.05
    ax = heatmap(ds, "cka", mark="pvalue", alpha=0.05)
    assert _hatched_cells(ax) == {(1, 0)}
    assert "p > 0.05" in ax.get_xlabel()
    for mark, label in (("pvalue_fwer", "family-wise p > 0.1"),
                        ("pvalue_fdr", "FDR-adjusted p > 0.1")):
        ax = heatmap(ds, "cka", mark=mark, alpha=0.1)
        expected = {tuple(map(int, ij)) for ij in np.argwhere(ds[f"cka_{mark}"].values > 0.1)}
        assert _hatched_cells(ax) == expected and (1, 0) in expected
        assert label in ax.get_xlabel()


def test_alpha_is_the_level_of_pvalue_marks_only_and_within_reach():
    """alpha= without a p-value mark is an error, not ignored; a level the permutations
    cannot reach (19 permutations: p >= 0.05) hatches every cell, with a warning saying so."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300, 3))
    ds = dask_repsim.compare({"x": x}, {"y": x + 0.5 * rng.normal(size=(300, 3))},
                             metrics=["cka"], permutations=19, seed=0, interval="jackknife")
    assert float(ds.cka_pvalue.squeeze()) == pytest.approx(0.05)
    for mark in (None, "overlap"):
        with pytest.raises(ValueError, match=f"alpha= is the level of the p-value marks .*"
                                             f"not of mark={mark!r}"):
            heatmap(ds, "cka", mark=mark, alpha=0.01)
    with pytest.warns(dask_repsim.RepsimWarning, match=r"19 permutations give no p-value below "
                      r"1/20 = 0.05, so mark='pvalue' hatches every cell at alpha=0.01; compare "
                      r"with at least 99 permutations"):
        ax = heatmap(ds, "cka", mark="pvalue", alpha=0.01)
    assert _hatched_cells(ax) == {(0, 0)}
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        heatmap(ds, "cka", mark="pvalue", alpha=5)


def test_mark_overlap_hatches_cells_whose_interval_reaches_the_rows_best():
    layers = ["l1", "l2", "l3"]
    values = np.array([[0.9, 0.85, 0.2], [0.1, 0.5, 0.7]])
    half = np.array([[0.03, 0.03, 0.03], [0.05, 0.05, 0.05]])
    dims = ("layer_a", "layer_b")
    ds = xr.Dataset(
        {"cka": (dims, values), "cka_low": (dims, values - half),
         "cka_high": (dims, values + half)},
        coords={"layer_a": ["a", "b"], "layer_b": layers},
    )
    ax = heatmap(ds, "cka", mark="overlap")
    # row a: 0.85 + 0.03 >= 0.9 - 0.03 overlaps the best; 0.2 does not.
    # row b: 0.5 + 0.05 < 0.7 - 0.05: nothing overlaps
    assert _hatched_cells(ax) == {(0, 1)}
    outlined = {(round(p.get_y() + 0.5), round(p.get_x() + 0.5))
                for p in ax.patches if not p.get_hatch()}
    assert outlined == {(0, 0), (1, 2)}


def test_mark_needs_the_uncertainty_variables(result):
    with pytest.raises(ValueError, match="needs cka_pvalue.*permutations=K"):
        heatmap(result, "cka", mark="pvalue")
    with pytest.raises(ValueError, match="interval='jackknife'"):
        heatmap(result, "cka", mark="overlap")
    with pytest.raises(ValueError, match="mark must be"):
        heatmap(result, "cka", mark="stars")
