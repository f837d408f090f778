"""compare_zoo(): every cell is the two-network compare of its pair and the formula, each
unordered pair computed once for a symmetric measure, and what users read from a zoo (unstacked,
selected, best matches, network summaries, heatmaps) is what the cells say."""

from __future__ import annotations

import itertools

import dask
import numpy as np
import pytest
import references as ref
import xarray as xr
import zarr
from conftest import CountingStore

import dask_repsim as dr
from dask_repsim import runners
from dask_repsim.io.gather import grid_layers
from dask_repsim.options import Options
from dask_repsim.paths.gram import samplespace
from dask_repsim.registry import MEASURES, PATHS

N = 150
RNG = np.random.default_rng(5)
INPUTS = RNG.normal(size=(N, 6))  # every network sees the same samples: related layers


def _mlp(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    fc1 = np.maximum(INPUTS @ rng.normal(size=(6, 8)), 0) + 0.1 * rng.normal(size=(N, 8))
    fc2 = np.tanh(fc1 @ rng.normal(size=(8, 5)))
    conv = np.tanh(np.einsum("ni,ichw->nchw", INPUTS, rng.normal(size=(6, 3, 2, 2))))
    return {"fc1": fc1, "fc2": fc2, "conv": conv}


def _vit() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    embed = INPUTS @ rng.normal(size=(6, 6)) + 0.5 * rng.normal(size=(N, 6))
    return {"embed": embed, "block": np.sin(embed @ rng.normal(size=(6, 7)))}


#: three networks, one with other layers than the two of one architecture
ZOO = {"seed0": _mlp(0), "seed1": _mlp(1), "vit": _vit()}
LABELS = [f"{net}/{layer}" for net, layers in ZOO.items() for layer in layers]
N_LAYERS = len(LABELS)  # 8


def _array(net: str, layer: str) -> np.ndarray:
    x = ZOO[net][layer]
    return x.reshape(N, -1)


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F) (Kornblith et al. 2019)."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _mean_cca(x: np.ndarray, y: np.ndarray) -> float:
    """The mean canonical correlation: the singular values of Q_x^T Q_y for orthonormal bases
    of the centred columns."""
    qx = np.linalg.qr(x - x.mean(0))[0]
    qy = np.linalg.qr(y - y.mean(0))[0]
    return float(np.linalg.svd(qx.T @ qy, compute_uv=False).mean())


REFERENCES = {"cka": _linear_cka, "mean_cca": _mean_cca, "pwcca": ref.pwcca,
              "linear_regression": ref.linear_regression,
              "cka_debiased": ref.debiased_linear_cka}
METRICS = {"covariance": ["cka", "mean_cca", "pwcca", "linear_regression"],
           "gram": ["cka", "cka_debiased"]}


def _write_store(path) -> str:
    """The zoo as one zarr store: a group per network, an array per layer with dimension
    names, and each group's sample ids (as capture_activations writes them)."""
    root = zarr.open_group(path, mode="w")
    for net, layers in ZOO.items():
        group = root.create_group(net)
        group.create_array("sample", data=np.arange(N), dimension_names=("sample",))
        for layer, x in layers.items():
            dims = ("sample", *(f"{layer}_{d}" for d in ("c", "h", "w")[: x.ndim - 1]))
            arr = group.create_array(layer, shape=x.shape, chunks=(40, *x.shape[1:]),
                                     dtype=x.dtype, dimension_names=dims)
            arr[...] = x
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return _write_store(tmp_path_factory.mktemp("zoo") / "zoo.zarr")


def _form(kind: str, store: str):
    if kind == "mapping":
        return ZOO
    if kind == "zarr path":
        return store
    if kind == "zarr group":
        return zarr.open_group(store, mode="r")
    return xr.open_datatree(store, engine="zarr", chunks={}, consolidated=False)


@pytest.fixture(scope="module")
def mapping_results() -> dict[str, xr.Dataset]:
    return {method: dr.compare_zoo(ZOO, metrics=METRICS[method], method=method)
            for method in METRICS}


@pytest.mark.parametrize("method", sorted(METRICS))
def test_every_cell_is_the_compare_of_its_pair_and_the_formula(mapping_results, method):
    ds = mapping_results[method]
    assert list(ds.a.values) == LABELS and list(ds.b.values) == LABELS
    for net_a, net_b in itertools.product(ZOO, ZOO):
        pair = dr.compare(ZOO[net_a], ZOO[net_b], metrics=METRICS[method], method=method)
        for layer_a, layer_b in itertools.product(ZOO[net_a], ZOO[net_b]):
            cell = ds.sel(a=f"{net_a}/{layer_a}", b=f"{net_b}/{layer_b}")
            x, y = _array(net_a, layer_a), _array(net_b, layer_b)
            for metric in METRICS[method]:
                value = float(cell[metric])
                expected = float(pair[metric].sel(layer_a=layer_a, layer_b=layer_b))
                assert value == pytest.approx(expected, abs=1e-12), (metric, net_a, net_b)
                assert value == pytest.approx(REFERENCES[metric](x, y), abs=1e-8), metric


@pytest.mark.parametrize("kind", ["zarr path", "zarr group", "datatree"])
@pytest.mark.parametrize("method", sorted(METRICS))
def test_every_input_form_gives_the_same_cells(mapping_results, store, kind, method):
    ds = dr.compare_zoo(_form(kind, store), metrics=METRICS[method], method=method)
    expected = mapping_results[method]
    # a store's and a tree's layers come in name order: the same cells, labelled alike
    assert sorted(ds.a.values) == sorted(LABELS)
    assert list(ds.network_a.values) == ["seed0"] * 3 + ["seed1"] * 3 + ["vit"] * 2
    assert list(ds.layer_a.values[:3]) == ["conv", "fc1", "fc2"]
    for metric in METRICS[method]:
        got = ds[metric].sel(a=LABELS, b=LABELS).values
        np.testing.assert_allclose(got, expected[metric].values, rtol=0, atol=1e-12)
    assert ds.attrs["method"] == method


def test_a_zoo_against_another(store):
    """Zoo a against zoo b, of other forms: the cells of compare_zoo(a + b) between them."""
    other = {"small": {"fc1": ZOO["seed1"]["fc1"][:, :4], "out": ZOO["vit"]["block"]}}
    ds = dr.compare_zoo(_form("datatree", store), other, metrics=["cka", "linear_regression"])
    assert list(ds.b.values) == ["small/fc1", "small/out"]
    assert ds.attrs["self_comparison"] == 0 and ds.attrs["networks_b"] == "small"
    assert ds.attrs["networks_a"] == "seed0, seed1, vit"
    for label_a, label_b in itertools.product(ds.a.values, ds.b.values):
        x = _array(*str(label_a).split("/"))
        y = other["small"][str(label_b).split("/")[1]]
        cell = ds.sel(a=label_a, b=label_b)
        assert float(cell.cka) == pytest.approx(_linear_cka(x, y), abs=1e-8)
        assert float(cell.linear_regression) == pytest.approx(ref.linear_regression(x, y),
                                                              abs=1e-8)


# --- each unordered pair once --------------------------------------------------------------


def _counting(monkeypatch, metric: str, path: str) -> list[int]:
    calls: list[int] = []
    function = MEASURES[metric].paths[path]

    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    monkeypatch.setitem(MEASURES[metric].paths, path, counted)
    return calls


@pytest.mark.parametrize(("metric", "path"), [("cka", "covariance"), ("mean_cca", "qr"),
                                              ("procrustes", "covariance")])
def test_self_compare_computes_each_unordered_pair_once(monkeypatch, metric, path):
    calls = _counting(monkeypatch, metric, path)
    ds = dr.compare_zoo(ZOO, metrics=[metric], method=path)
    assert len(calls) == N_LAYERS * (N_LAYERS + 1) // 2  # 36 of the 64 cells
    np.testing.assert_array_equal(ds[metric].values, ds[metric].values.T)  # mirrored
    calls.clear()
    dr.compare(ZOO["seed0"], ZOO["vit"], metrics=[metric], method=path)
    assert len(calls) == 3 * 2  # two networks: every cell, as before


def test_asymmetric_measure_computes_both_orders(monkeypatch):
    cka = _counting(monkeypatch, "cka", "covariance")
    regression = _counting(monkeypatch, "linear_regression", "covariance")
    dr.compare_zoo(ZOO, metrics=["cka", "linear_regression"], method="covariance")
    # one path for both: its cells are every ordered pair
    assert len(cka) == len(regression) == N_LAYERS**2


def test_gram_path_forms_each_pair_once_and_each_cell_once(monkeypatch):
    pairs_asked, cells = [], []
    grid_sums, cka_from_sums = samplespace.grid_sums, samplespace.cka_from_sums

    def sums(layers, pairs, **kwargs):
        pairs_asked.append(list(pairs))
        return grid_sums(layers, pairs, **kwargs)

    def one_cell(*args, **kwargs):
        cells.append(1)
        return cka_from_sums(*args, **kwargs)

    monkeypatch.setattr(samplespace, "grid_sums", sums)
    monkeypatch.setattr(samplespace, "cka_from_sums", one_cell)
    dr.compare_zoo(ZOO, metrics=["cka"], method="gram")
    (pairs,) = pairs_asked  # one run of the tiles for the whole zoo
    assert sorted(pairs) == [(i, j) for i in range(N_LAYERS) for j in range(i, N_LAYERS)]
    assert len(cells) == N_LAYERS * (N_LAYERS + 1) // 2


def test_each_chunk_is_read_once_for_the_whole_zoo(tmp_path):
    counting = CountingStore(zarr.storage.LocalStore(tmp_path / "zoo.zarr"))
    _write_store(counting)
    counting.reads.clear()
    with dask.config.set(scheduler="threads"):
        dr.compare_zoo(zarr.open_group(counting, mode="r"), metrics=["cka", "pwcca"],
                       method="covariance")
    reads = counting.chunk_reads()
    layers = {key.split("/c/")[0] for key in reads}
    assert layers >= {f"{net}/{layer}" for net in ZOO for layer in ZOO[net]}
    assert max(reads.values()) == 1, {k: v for k, v in reads.items() if v > 1}


def _pair_layers():
    a = {"x": INPUTS, "y": ZOO["seed0"]["fc2"], "z": ZOO["vit"]["block"]}
    return grid_layers(a, None, sample_dims=None, pool=None, resize=False,
                       spatial_dims=("height", "width"), storage_options=None)[2:]


@pytest.mark.parametrize("path", sorted(PATHS))
def test_run_cells_computes_the_cells_asked_for(path):
    layers, rows, cols = _pair_layers()
    metric = {"covariance": "cka", "qr": "mean_cca", "gram": "cka", "tiled": "cka",
              "sample_blocks": "rsa", "minibatch": "cka"}[path]
    outputs = runners.plan_outputs([metric], {})
    options = Options(seed=0) if path == "minibatch" else Options()
    batch = 50 if path == "minibatch" else None
    full, _ = runners.run_cells(path, outputs, layers, rows, cols, options, batch_size=batch)
    asked = [(0, 2), (1, 1), (2, 0)]
    some, _ = runners.run_cells(path, outputs, layers, rows, cols, options, batch_size=batch,
                                cells=asked)
    assert sorted(some) == [(0, i, j) for i, j in sorted(asked)]
    for key, cell in some.items():
        assert cell.value == pytest.approx(full[key].value, abs=1e-12)
    with pytest.raises(ValueError, match=r"cell \(3, 0\) is outside the grid of 3 rows"):
        runners.run_cells(path, outputs, layers, rows, cols, options, batch_size=batch,
                          cells=[(3, 0)])


# --- which measures are symmetric ----------------------------------------------------------

_X = INPUTS[:, :5] + 0.3 * RNG.normal(size=(N, 5))
_Y = np.tanh(INPUTS @ RNG.normal(size=(6, 5))) + 0.3 * RNG.normal(size=(N, 5))


#: the parameters that change a measure, each tried
VARIANTS = {"rsa": [{}, {"rdm": "euclidean", "rdm_compare": "spearman"},
                    {"rdm_compare": "rho-a"}, {"rdm_compare": "cosine"}],
            "shape_metric": [{}, {"alpha": 0.3}, {"alpha": 0.0}], "mutual_knn": [{}, {"k": 5}],
            "gulp": [{}, {"ridge": 0.05}],
            "cknna": [{}, {"k": 5}], "cka_rbf": [{}, {"sigma": 0.3}],
            "ridge_predictivity": [{}, {"ridge": 0.05, "folds": 5}],
            "pls_predictivity": [{}, {"components": 2}]}


def _value(metric: str, path: str, x: np.ndarray, y: np.ndarray, **parameters) -> float:
    extra = {"batch_size": 50} if path == "minibatch" else {}
    ds = dr.compare({"x": x}, {"y": y}, metrics=[metric], method=path, **extra, **parameters)
    return float(ds[metric].item())


@pytest.mark.parametrize(("metric", "path"), [(m, p) for m in MEASURES
                                              for p in MEASURES[m].paths])
def test_the_registry_says_which_measures_are_symmetric(metric, path):
    """A measure marked symmetric gives the same value with x and y swapped, on every path
    that computes it, for layers as wide and of other widths, with each of its parameters;
    one marked asymmetric does not, for the example here (pwcca: layers as wide, whose
    weights are then x's)."""
    for parameters in VARIANTS.get(metric, [{}]):
        if MEASURES[metric].symmetric:
            # layers of other widths, where the measure compares them
            for y in (_Y,) if MEASURES[metric].same_units else (_Y, _Y[:, :3]):
                assert _value(metric, path, _X, y, **parameters) == pytest.approx(
                    _value(metric, path, y, _X, **parameters), abs=1e-12), parameters
        else:
            swapped = _value(metric, path, _Y, _X, **parameters)
            assert abs(_value(metric, path, _X, _Y, **parameters) - swapped) > 1e-8


def test_the_asymmetric_measures():
    """pwcca, linear_regression, cknna and the predictivities; the independent references
    agree that swapping changes them (cknna: the k-NN masks are not symmetric, and the
    unbiased HSIC's 1^T K L 1 term is not 1^T L K 1 for matrices that are not; the
    predictivities predict y from x)."""
    assert [m for m in MEASURES if not MEASURES[m].symmetric] == [
        "pwcca", "linear_regression", "cknna", "ridge_predictivity", "pls_predictivity"]
    for reference in (ref.pwcca, ref.linear_regression, ref.cknna, ref.ridge_predictivity,
                      ref.pls_predictivity):
        assert abs(reference(_X, _Y) - reference(_Y, _X)) > 1e-8
    assert ref.mutual_knn(_X, _Y) == pytest.approx(ref.mutual_knn(_Y, _X), abs=1e-15)


# --- the result ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uncertain() -> xr.Dataset:
    return dr.compare_zoo(ZOO, metrics=["cka", "pwcca"], interval="jackknife", groups=5,
                          permutations=9, seed=3)


def test_layout_and_attrs(uncertain):
    ds = uncertain
    assert ds.cka.dims == ("a", "b")
    assert list(ds.network_b.values) == [lbl.split("/")[0] for lbl in LABELS]
    assert list(ds.layer_b.values) == [lbl.split("/")[1] for lbl in LABELS]
    assert {"cka_low", "cka_high", "cka_stderr", "cka_pvalue", "pwcca_pvalue"} <= set(
        ds.data_vars)
    assert ds.attrs["networks_a"] == ds.attrs["networks_b"] == "seed0, seed1, vit"
    assert ds.attrs["self_comparison"] == 1
    assert ds.attrs["permutations"] == 9 and ds.attrs["interval"] == "jackknife"
    assert ds.attrs["method"] == "covariance"


def test_corrected_pvalues_count_each_pair_once(uncertain):
    """Corrected over a zoo's cells, a symmetric measure's pair is one test (the upper
    triangle; the mirrors share its values), an asymmetric one's every ordered cell: the
    false-discovery values equal Benjamini-Hochberg written here over those cells."""

    def benjamini_hochberg(p):
        order = np.argsort(p)
        scaled = len(p) * p[order] / np.arange(1, len(p) + 1)
        out = np.empty(len(p))
        out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
        return out

    ds = uncertain
    upper = np.triu_indices(ds.sizes["a"])
    for var in ("cka_pvalue_fwer", "cka_pvalue_fdr"):
        np.testing.assert_array_equal(ds[var].values, ds[var].values.T, err_msg=var)
    np.testing.assert_allclose(ds.cka_pvalue_fdr.values[upper],
                               benjamini_hochberg(ds.cka_pvalue.values[upper]), rtol=1e-12)
    np.testing.assert_allclose(ds.pwcca_pvalue_fdr.values.ravel(),
                               benjamini_hochberg(ds.pwcca_pvalue.values.ravel()), rtol=1e-12)
    assert (ds.cka_pvalue_fwer >= ds.cka_pvalue).all()
    assert "each pair of layers once" in ds.attrs["pvalue_correction"]


def test_mirrored_cells_carry_the_pairs_interval_and_null(uncertain):
    """cka is mirrored with its interval and p-value; the upper cells are the compare of the
    pair; pwcca (asymmetric) is computed in both orders."""
    ds = uncertain
    for var in ("cka", "cka_low", "cka_high", "cka_pvalue", "cka_null_mean"):
        np.testing.assert_array_equal(ds[var].values, ds[var].values.T, err_msg=var)
    pair = dr.compare(ZOO["seed0"], ZOO["vit"], metrics=["cka", "pwcca"],
                      interval="jackknife", groups=5, permutations=9, seed=3)
    for var in ("cka", "cka_low", "cka_pvalue", "cka_null_std", "pwcca", "pwcca_pvalue"):
        got = ds[var].sel(a=[f"seed0/{n}" for n in ZOO["seed0"]],
                          b=[f"vit/{n}" for n in ZOO["vit"]]).values
        np.testing.assert_allclose(got, pair[var].values, rtol=0, atol=1e-12, err_msg=var)
    back = dr.compare(ZOO["vit"], ZOO["seed0"], metrics=["pwcca"], permutations=9, seed=3)
    got = ds.pwcca.sel(a=[f"vit/{n}" for n in ZOO["vit"]],
                       b=[f"seed0/{n}" for n in ZOO["seed0"]]).values
    np.testing.assert_allclose(got, back.pwcca.values, rtol=0, atol=1e-12)


def test_survives_netcdf(uncertain, tmp_path):
    uncertain.to_netcdf(tmp_path / "zoo.nc")
    with xr.open_dataset(tmp_path / "zoo.nc") as back:
        xr.testing.assert_identical(back.load(), uncertain)
        assert dr.best_matches(back).identical(dr.best_matches(uncertain))


def test_nan_policy_omit_counts_mirror():
    zoo = {"n0": {"x": INPUTS.copy()}, "n1": {"y": np.tanh(INPUTS)}}
    zoo["n0"]["x"][3, 0] = np.nan
    with pytest.warns(dr.RepsimWarning, match="left out 1 of 150 samples"):
        ds = dr.compare_zoo(zoo, metrics=["cka"], nan_policy="omit")
    np.testing.assert_array_equal(ds.n_samples_used.values, [[N - 1, N - 1], [N - 1, N]])
    ok = np.isfinite(zoo["n0"]["x"]).all(axis=1)
    assert float(ds.cka[1, 0]) == pytest.approx(
        _linear_cka(np.tanh(INPUTS)[ok], INPUTS[ok]), abs=1e-8)


# --- reading a zoo -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    return dr.compare_zoo(ZOO, metrics=["cka", "cka_angular"])


def test_unstack(small):
    u = dr.unstack_zoo(small)
    assert u.cka.dims == ("network_a", "layer_a", "network_b", "layer_b")
    assert list(u.network_a.values) == list(ZOO)
    assert list(u.layer_a.values) == ["fc1", "fc2", "conv", "embed", "block"]
    for net_a, layer_a, net_b, layer_b in itertools.product(
            ZOO, u.layer_a.values, ZOO, u.layer_b.values):
        value = float(u.cka.sel(network_a=net_a, layer_a=layer_a, network_b=net_b,
                                layer_b=layer_b))
        if layer_a in ZOO[net_a] and layer_b in ZOO[net_b]:
            assert value == float(small.cka.sel(a=f"{net_a}/{layer_a}", b=f"{net_b}/{layer_b}"))
        else:
            assert np.isnan(value)
    assert u.attrs == small.attrs
    assert small.repsim.unstack_zoo().identical(u)


def test_select(small):
    part = dr.select_zoo(small, network_a="vit", layer_b=["fc2", "embed"])
    assert list(part.a.values) == ["vit/embed", "vit/block"]
    assert list(part.b.values) == ["seed0/fc2", "seed1/fc2", "vit/embed"]
    np.testing.assert_array_equal(part.cka.values,
                                  small.cka.values[np.ix_([6, 7], [1, 4, 6])])
    # xarray's own selection by a non-index coordinate, as the docs say
    by_index = small.set_xindex("network_a").sel(network_a="vit")
    np.testing.assert_array_equal(by_index.cka.values, small.cka.values[6:])
    assert small.repsim.select_zoo(network_a="vit").identical(dr.select_zoo(small,
                                                                            network_a="vit"))
    with pytest.raises(ValueError, match="network_a 'resnet' is not in the zoo; it holds "
                                         "seed0, seed1, vit"):
        dr.select_zoo(small, network_a="resnet")
    with pytest.raises(ValueError, match="layer_b 'fc9' is not in the zoo"):
        dr.select_zoo(small, layer_b=["fc1", "fc9"])
    with pytest.raises(ValueError, match="no layer of the zoo has network_a='vit', "
                                         "layer_a='fc1'"):
        dr.select_zoo(small, network_a="vit", layer_a="fc1")


def _best_by_hand(ds: xr.Dataset, metric: str, largest: bool, skip_own: bool):
    """For each row and each network of b: (layer, value) of its best column, by loops."""
    out = {}
    values = ds[metric].values
    for i, (net_a, lbl) in enumerate(zip(ds.network_a.values, ds.a.values, strict=True)):
        for net_b in dict.fromkeys(ds.network_b.values):
            if skip_own and net_b == net_a:
                out[str(lbl), str(net_b)] = ("", np.nan)
                continue
            cols = [j for j, n in enumerate(ds.network_b.values) if n == net_b]
            best = max(cols, key=lambda j: values[i, j] if largest else -values[i, j])
            out[str(lbl), str(net_b)] = (str(ds.layer_b.values[best]), values[i, best])
    return out


@pytest.mark.parametrize(("metric", "largest"), [("cka", True), ("cka_angular", False)])
def test_best_matches(small, metric, largest):
    best = dr.best_matches(small, metric)
    assert best[metric].dims == ("a", "network_b") and best.match.dims == ("a", "network_b")
    assert list(best.network_a.values) == list(small.network_a.values)
    expected = _best_by_hand(small, metric, largest, skip_own=True)
    for (lbl, net_b), (layer, value) in expected.items():
        cell = best.sel(a=lbl, network_b=net_b)
        assert str(cell.match.item()) == layer
        np.testing.assert_equal(float(cell[metric]), value)
    assert best.attrs["best"] == ("largest" if largest else "smallest")
    assert small.repsim.best_matches(metric).identical(best)
    # angular CKA is arccos(CKA): the same matches
    if metric == "cka_angular":
        np.testing.assert_array_equal(best.match.values, dr.best_matches(small).match.values)


def test_best_matches_between_two_zoos_match_networks_of_the_same_name():
    other = {"seed0": ZOO["seed1"]}
    ds = dr.compare_zoo({"seed0": ZOO["seed0"]}, other, metrics=["cka"])
    best = dr.best_matches(ds)
    expected = _best_by_hand(ds, "cka", True, skip_own=False)
    for (lbl, net_b), (layer, _) in expected.items():
        assert str(best.match.sel(a=lbl, network_b=net_b).item()) == layer != ""


def test_network_similarity(small):
    values = small.cka.values
    nets = list(ZOO)
    net_of = small.network_a.values
    top = dr.network_similarity(small, "cka")
    assert top.dims == ("network_a", "network_b") and list(top.network_a.values) == nets
    low = dr.network_similarity(small, "cka_angular")
    for i, j in itertools.product(range(3), range(3)):
        block = values[np.ix_(net_of == nets[i], net_of == nets[j])]
        assert float(top[i, j]) == block.max()
        assert float(low[i, j]) == pytest.approx(np.arccos(np.clip(block.max(), -1, 1)),
                                                 abs=1e-12)
    seeds = dr.select_zoo(small, network_a=["seed0", "seed1"], network_b=["seed0", "seed1"])
    matched = dr.network_similarity(seeds, "cka", summary="matched")
    for a, b in itertools.product(["seed0", "seed1"], repeat=2):
        by_hand = np.mean([float(small.cka.sel(a=f"{a}/{n}", b=f"{b}/{n}"))
                           for n in ("fc1", "fc2", "conv")])
        assert float(matched.sel(network_a=a, network_b=b)) == pytest.approx(by_hand,
                                                                            abs=1e-15)
    assert small.repsim.network_similarity("cka", "max").identical(top)
    with pytest.raises(ValueError, match="networks 'seed0' and 'vit' share no layer name"):
        dr.network_similarity(small, "cka", summary="matched")
    with pytest.raises(ValueError, match="summary must be one of"):
        dr.network_similarity(small, "cka", summary="mean")
    with pytest.raises(ValueError, match="metric 'svcca' is not in the result; its metrics "
                                         "are cka, cka_angular"):
        dr.network_similarity(small, "svcca")


# --- errors --------------------------------------------------------------------------------


def test_zoo_errors(tmp_path):
    x = INPUTS
    with pytest.raises(ValueError, match="the zoo holds no networks"):
        dr.compare_zoo({})
    with pytest.raises(ValueError, match="network 'b' of the zoo holds no layers"):
        dr.compare_zoo({"a": {"x": x}, "b": {}})
    with pytest.raises(ValueError, match="network 'b' of the zoo holds no layers"):
        dr.compare_zoo({"a": {"x": x}, "b": xr.Dataset()})
    with pytest.raises(TypeError, match=r"zoo\['fc1'\] is an array \(one layer\), not a "
                                        "network"):
        dr.compare_zoo({"fc1": x, "fc2": x})
    with pytest.raises(TypeError, match=r"the other zoo must be a mapping of network names.*"
                                        r"got Dataset \(one network"):
        dr.compare_zoo(ZOO, xr.Dataset({"fc": (("sample", "u"), x)}))
    with pytest.raises(TypeError, match="the other zoo must be .* got ndarray"):
        dr.compare_zoo(ZOO, x)
    with pytest.raises(TypeError, match=r"other zoo\['fc'\] is an array"):
        dr.compare_zoo(ZOO, {"fc": x})
    with pytest.raises(ValueError, match="two layers of the zoo are both called 'a/b/c'"):
        dr.compare_zoo({"a": {"b/c": x}, "a/b": {"c": x}})
    root = zarr.open_group(tmp_path / "bad.zarr", mode="w")
    root.create_array("fc", data=x)
    root.create_group("net").create_array("fc", data=x)
    with pytest.raises(ValueError, match=r"holds arrays \(fc\) beside its network groups"):
        dr.compare_zoo(str(tmp_path / "bad.zarr"))
    zarr.open_group(tmp_path / "empty.zarr", mode="w").create_group("net")
    with pytest.raises(ValueError, match="network 'net' of the zoo holds no layers"):
        dr.compare_zoo(str(tmp_path / "empty.zarr"))
    zarr.open_group(tmp_path / "rootless.zarr" / "net", mode="w").create_array("fc", data=x)
    with pytest.raises(FileNotFoundError, match=r"needs its root group .*zarr.open_group"):
        dr.compare_zoo(str(tmp_path / "rootless.zarr"))
    with pytest.raises(ValueError, match=r"zoo at .* is a zarr array \(one layer\)"):
        dr.compare_zoo(str(tmp_path / "rootless.zarr" / "net" / "fc"))


def test_reading_something_else_than_a_zoo_result():
    grid = dr.compare({"x": INPUTS}, metrics=["cka"])
    for function in (dr.unstack_zoo, dr.best_matches, dr.network_similarity):
        with pytest.raises(ValueError, match=r"expected the Dataset of compare_zoo\(\).*this "
                                             r"is a compare\(\) result"):
            function(grid)


# --- heatmaps ------------------------------------------------------------------------------


def test_zoo_heatmap_draws_each_pair_of_networks(small, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.image
    import matplotlib.pyplot as plt

    from dask_repsim.plot import zoo_heatmap

    try:
        fig = zoo_heatmap(small, "cka")
        panels = [ax for ax in fig.axes if ax.images]
        assert len(panels) == 9
        nets = list(ZOO)
        for k, ax in enumerate(panels):
            net_a, net_b = nets[k // 3], nets[k % 3]
            block = small.cka.sel(a=small.network_a == net_a, b=small.network_b == net_b)
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), block.values)
            assert ax.images[0].get_clim() == (0.0, 1.0)
            assert ax.get_title() == (net_b if k < 3 else "")
            assert ax.get_ylabel() == (net_a if k % 3 == 0 else "")
            ylabels = [t.get_text() for t in ax.get_yticklabels()]
            assert ylabels == (list(ZOO[net_a]) if k % 3 == 0 else [""] * len(ZOO[net_a]))
            xlabels = [t.get_text() for t in ax.get_xticklabels()]
            assert xlabels == (list(ZOO[net_b]) if k >= 6 else [""] * len(ZOO[net_b]))
            assert len(ax.texts) == block.size  # 8 x 8 layers: annotated
        (bar,) = [ax for ax in fig.axes if ax not in panels]
        assert bar.get_ylabel() == "cka"
        fig.savefig(tmp_path / "zoo.png")
        png = matplotlib.image.imread(tmp_path / "zoo.png")
        width, height = fig.get_size_inches() * fig.dpi
        assert png.shape[:2] == (round(height), round(width))
        with pytest.raises(ValueError, match="several metrics"):
            zoo_heatmap(small)
        with pytest.raises(ValueError, match="expected the Dataset of compare_zoo"):
            zoo_heatmap(dr.compare({"x": INPUTS}, metrics=["cka"]))
    finally:
        plt.close("all")


def test_network_heatmap_draws_the_summary(small, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dask_repsim.plot import network_heatmap

    try:
        sim = dr.network_similarity(small, "cka")
        ax = network_heatmap(sim)
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), sim.values)
        assert [t.get_text() for t in ax.get_xticklabels()] == list(ZOO)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(ZOO)
        assert ax.get_xlabel() == "network_b" and ax.get_ylabel() == "network_a"
        assert ax.images[0].colorbar.ax.get_ylabel() == "cka"
        assert ax.get_title() == "max cka between networks"
        assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in sim.values.ravel()]
        ax.figure.savefig(tmp_path / "networks.png")
        assert (tmp_path / "networks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(ValueError, match=r"expected a DataArray over dims \('network_a', "
                                             r"'network_b'\)"):
            network_heatmap(small.cka)
    finally:
        plt.close("all")
