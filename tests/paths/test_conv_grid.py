"""Grids of wide layers on the shared sample-space tiles (``method="gram"``).

References are written here from Kornblith et al. (2019): each layer's centred Gram matrix in
numpy, HSIC = tr(K H L H); the unbiased HSIC of Song et al. (2012) with zeroed diagonals; RBF
kernels exp(-D^2 / (2 sigma^2 median(D^2))) with the median over all n^2 entries (gram_rbf).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import CountingStore, write_zarr

import dask_repsim as dr
from dask_repsim.engine import parallel
from dask_repsim.paths.gram import samplespace, scratch

N = 240
WIDTHS_A = {"conv": 20_000, "mid": 300, "fc": 10}
WIDTHS_B = {"conv": 6_000, "fc": 10}


def _layers(widths: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(N, 12))
    out = {}
    for k, p in widths.items():  # related layers: a shared low-rank signal, ReLU, offsets
        x = base @ rng.normal(size=(12, p)) + 0.7 * rng.normal(size=(N, p))
        out[k] = (np.maximum(x, 0) + 3.0).astype(np.float32)
    return out


def _gram(x: np.ndarray) -> np.ndarray:
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    return xc @ xc.T


def _hsic(k: np.ndarray, g: np.ndarray) -> float:
    n = len(k)
    h = np.eye(n) - 1.0 / n
    return float(np.trace(k @ h @ g @ h))


def _unbiased_hsic(k: np.ndarray, g: np.ndarray) -> float:
    """Song et al. (2012), eq. (5)."""
    n = len(k)
    k, g = k.copy(), g.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(g, 0.0)
    one = np.ones(n)
    return float(np.trace(k @ g) + (one @ k @ one) * (one @ g @ one) / ((n - 1) * (n - 2))
                 - 2.0 / (n - 2) * (one @ k @ g @ one)) / (n * (n - 3))


def _cka(k: np.ndarray, g: np.ndarray, hsic=_hsic) -> float:
    return hsic(k, g) / np.sqrt(hsic(k, k) * hsic(g, g))


def _rbf(k: np.ndarray, sigma: float) -> np.ndarray:
    d = np.diag(k)[:, None] + np.diag(k)[None, :] - 2 * k
    d = np.maximum(d, 0)
    np.fill_diagonal(d, 0)
    return np.exp(-d / (2 * sigma**2 * np.median(d)))


def _references(a: dict, b: dict) -> dict[str, np.ndarray]:
    ka = {k: _gram(v) for k, v in a.items()}
    kb = {k: _gram(v) for k, v in b.items()}
    out = {}
    pairs = [(x, y) for x in ka for y in kb]
    shape = (len(ka), len(kb))
    out["cka"] = np.reshape([_cka(ka[x], kb[y]) for x, y in pairs], shape)
    out["cka_debiased"] = np.reshape([_cka(ka[x], kb[y], _unbiased_hsic) for x, y in pairs],
                                     shape)
    for s in (0.4, 0.8):
        out[f"cka_rbf_{s:g}"] = np.reshape(
            [_cka(_rbf(ka[x], s), _rbf(kb[y], s)) for x, y in pairs], shape)
    return out


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory):
    a, b = _layers(WIDTHS_A, 0), _layers(WIDTHS_B, 1)
    b["fc"] = (a["fc"] @ np.random.default_rng(2).normal(size=(10, 10))).astype(np.float32)
    root = tmp_path_factory.mktemp("conv")
    for name, layers in (("a", a), ("b", b)):
        for k, v in layers.items():
            write_zarr(root / f"{name}.zarr", k, v, chunks=(40, v.shape[1]),
                       dims=("sample", f"{k}_unit"))
    return a, b, root, _references(a, b)


METRICS = ["cka", "cka_debiased", "cka_rbf"]


def _check(ds: xr.Dataset, refs: dict) -> None:
    assert ds.attrs["method"] == "gram"
    assert set(refs) <= set(ds.data_vars)
    ds = ds.sel(layer_a=list(WIDTHS_A), layer_b=list(WIDTHS_B))  # the references' order
    for name, ref in refs.items():
        np.testing.assert_allclose(ds[name].values, ref, rtol=0, atol=1e-6, err_msg=name)
    assert ds.attrs["median_exact"]


#: budgets for either way of cutting the samples of ``grid_data``: the default (every layer's
#: whole Gram matrix at once) and one that leaves room for row blocks only, with one thread
#: per process (the cluster's workers) as with two
BUDGETS = {"whole": None, "tiles": "8MiB"}


def _cut(ds: xr.Dataset, how: str) -> None:
    if how == "whole":
        assert (ds.attrs["n_tiles"], ds.attrs["tile_rows"]) == (1, N)
    else:
        assert ds.attrs["n_tiles"] >= 6 and ds.attrs["tile_rows"] < N


@pytest.mark.parametrize("how", list(BUDGETS))
@pytest.mark.parametrize("kind", ["zarr", "xarray"])
def test_grid_equals_numpy_gram_references(grid_data, kind, how):
    """Widths 10 to 20,000, zarr groups and xarray Datasets, threaded scheduler, "auto" path;
    whole Gram matrices and row-block tiles."""
    a, b, root, refs = grid_data
    if kind == "zarr":
        left, right = str(root / "a.zarr"), str(root / "b.zarr")
    else:
        left, right = xr.open_zarr(root / "a.zarr", consolidated=False), \
            xr.open_zarr(root / "b.zarr", consolidated=False)
    with dask.config.set({"scheduler": "threads", "repsim.memory-budget": BUDGETS[how]}):
        ds = dr.compare(left, right, metrics=METRICS, sigma=[0.4, 0.8])
    _check(ds, refs)
    _cut(ds, how)
    assert sorted(ds.layer_a.values) == sorted(WIDTHS_A)
    # "auto" chose the tiles by cost, and says what the alternatives would have cost
    assert "gram" in ds.attrs["cost_estimate"] and ds.attrs["sigma"] == [0.4, 0.8]
    # a cell equals the pairwise function for that pair (the same tiles, cut as the budget
    # allows for two layers instead of five), medians included
    pair = dr.cka(a["mid"], b["fc"], kernel="rbf", sigma=0.4)
    assert abs(float(ds["cka_rbf_0.4"].sel(layer_a="mid", layer_b="fc")) - pair) < 1e-12
    medians = dict(v.split(": ") for v in ds.attrs["median_sq_distance"].split("; "))
    np.testing.assert_allclose(pair.median, (float(medians["mid of a"]),
                                             float(medians["fc of b"])), rtol=1e-12)
    # the grid, its medians and bandwidths included, saves to netCDF and reads back
    ds.to_netcdf(root / f"grid_{kind}_{how}.nc")
    back = xr.load_dataset(root / f"grid_{kind}_{how}.nc")
    xr.testing.assert_identical(back[list(refs)], ds[list(refs)])
    assert back.attrs["median_exact"] == 1
    assert back.attrs["median_sq_distance"] == ds.attrs["median_sq_distance"]
    assert list(back.attrs["sigma"]) == [0.4, 0.8]


@pytest.mark.parametrize("how", list(BUDGETS))
def test_grid_on_a_cluster_with_worker_processes(grid_data, how):
    distributed = pytest.importorskip("distributed")
    a, b, root, refs = grid_data
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster), \
            dask.config.set({"repsim.memory-budget": BUDGETS[how]}):
        assert parallel.workers_share_this_machine()  # so the row blocks go to local scratch
        assert parallel.task_slots() == 2  # the whole Gram matrices: two tasks form them
        ds = dr.compare(str(root / "a.zarr"), str(root / "b.zarr"), metrics=METRICS,
                        sigma=[0.4, 0.8])
    _check(ds, refs)
    _cut(ds, how)


def _counted_layers(tmp_path, widths: dict[str, int], n: int = 320):
    rng = np.random.default_rng(11)
    store = CountingStore(zarr.storage.LocalStore(tmp_path / "counted.zarr"))
    for name, p in widths.items():
        write_zarr(store, name, rng.normal(size=(n, p)) + 5.0, chunks=(32, p))
    store.reads.clear()
    return store, zarr.open_group(store, mode="r")


def test_whole_gram_matrices_read_each_chunk_once(tmp_path):
    """With room for every layer's n x n Gram matrix, the grid forms them in one row block:
    every stored chunk is read exactly once (no second read for the shift), and the values
    equal the references."""
    widths = {"l0": 50, "l1": 100, "l2": 150, "l3": 200}
    store, group = _counted_layers(tmp_path, widths)
    with dask.config.set({"scheduler": "threads", "num_workers": 2}):
        ds = dr.compare(group, metrics=METRICS, sigma=[0.5, 1.0], method="gram")
    assert (ds.attrs["n_tiles"], ds.attrs["tile_rows"]) == (1, 320)
    reads = store.chunk_reads()
    assert len(reads) == 4 * 320 // 32 and set(reads.values()) == {1}, reads
    x = {k: _gram(np.asarray(group[k])) for k in widths}
    for metric, kernel, hsic in (("cka", None, _hsic), ("cka_debiased", None, _unbiased_hsic),
                                 ("cka_rbf_0.5", 0.5, _hsic), ("cka_rbf_1", 1.0, _hsic)):
        for a_ in widths:
            for b_ in widths:
                k, g = (x[a_], x[b_]) if kernel is None else (_rbf(x[a_], kernel),
                                                               _rbf(x[b_], kernel))
                got = float(ds[metric].sel(layer_a=a_, layer_b=b_))
                assert abs(got - _cka(k, g, hsic)) < 1e-9, (metric, a_, b_)


def test_whole_gram_matrices_of_a_layer_cut_by_columns(tmp_path):
    """A layer wider than a task's share is cut into column ranges, each a task reading the
    layer's chunks (so twice here) and forming a partial Gram matrix; their sum is the
    layer's, with each range shifted by its own means."""
    widths = {"wide": 400, "fc": 20}
    store, group = _counted_layers(tmp_path, widths)
    plan = samplespace.whole_plan(320, [400, 20], 8, 2**30, 2, 2)
    assert sorted(u.width for b in plan for u in b) == [20, 200, 200]
    with dask.config.set({"scheduler": "threads", "num_workers": 2}):
        ds = dr.compare(group, metrics=["cka", "cka_debiased"], method="gram")
    assert ds.attrs["n_tiles"] == 1
    reads = store.chunk_reads()
    assert {v for k, v in reads.items() if k.startswith("wide/")} == {2}
    assert {v for k, v in reads.items() if k.startswith("fc/")} == {1}
    x = {k: _gram(np.asarray(group[k])) for k in widths}
    assert abs(float(ds.cka.sel(layer_a="wide", layer_b="fc"))
               - _cka(x["wide"], x["fc"])) < 1e-12
    assert abs(float(ds.cka_debiased.sel(layer_a="wide", layer_b="fc"))
               - _cka(x["wide"], x["fc"], _unbiased_hsic)) < 1e-12


def test_whole_plan_follows_the_budget():
    """The plan fits the budget it is given, cuts wide layers before giving up, and leaves the
    samples to row blocks when even that does not fit. A task holds its own unit's matrices
    only (the Gram matrices go to scratch as they are formed), so the layer count does not
    matter; RBF CKA adds three n x n temporaries per task."""
    n, widths = 2048, [65536, 16384, 100]
    square, mib = 8 * n * n, 2**20

    def cut(plan):
        return sorted((u.layer, u.width) for b in plan for u in b)

    def per_task(width, rbf=False, widest=65536):  # the docstring's count, written out
        return (5 if rbf else 2) * square + n * (8 * min(widest, 2048) + 4 * width)

    roomy = samplespace.whole_plan(n, widths, 4, 2**32, 2, 2)  # conv1 is over half the work
    assert cut(roomy) == [(0, 32768), (0, 32768), (1, 16384), (2, 100)] and len(roomy) == 2
    assert 2 * per_task(16384) <= 600 * mib < 2 * per_task(32768)  # narrower units needed
    tight = samplespace.whole_plan(n, widths, 4, 600 * mib, 2, 2)
    assert cut(tight) == [(0, 16384)] * 4 + [(1, 16384), (2, 100)]
    assert samplespace.whole_plan(n, widths, 4, 2 * per_task(16384) - 1, 2, 2) is None
    assert samplespace.whole_plan(n, widths, 4, 2**32, 2, 2, rbf=True) is not None
    many = [100] * 40
    need = 4 * per_task(100, rbf=True, widest=100)
    assert samplespace.whole_plan(n, many, 4, need, 4, 4, rbf=True) is not None
    assert samplespace.whole_plan(n, many, 4, 4 * 5 * square, 4, 4, rbf=True) is None
    assert samplespace.whole_plan(n, many, 4, 4 * 5 * square, 4, 4) is not None
    assert samplespace.saved_grams(tight) == 7  # 4 shares of conv1 and their sum, 2 layers


@pytest.mark.parametrize("local_disk", [True, False])
def test_each_chunk_read_a_bounded_number_of_times(tmp_path, monkeypatch, local_disk):
    """However many layers, pairs and bandwidths: every chunk is read once into the scratch
    copy of its row block (the first chunk once more, for the shift), or, when the workers
    may not share this machine's disk, once by the task whose row block the cluster carries
    to the tiles (the first chunk once more). RBF kernels read the distances back from disk."""
    if not local_disk:
        monkeypatch.setattr(samplespace, "workers_share_this_machine", lambda: False)
    rng = np.random.default_rng(3)
    store = CountingStore(zarr.storage.LocalStore(tmp_path / "counted.zarr"))
    n, names = 320, ["l0", "l1", "l2", "l3"]
    for k, name in enumerate(names):
        write_zarr(store, name, rng.normal(size=(n, 50 * (k + 1))), chunks=(32, 50 * (k + 1)))
    store.reads.clear()
    group = zarr.open_group(store, mode="r")
    with dask.config.set({"scheduler": "threads", "num_workers": 2,
                          "repsim.memory-budget": 2**20}):
        if not local_disk:  # the distances need a scratch directory every worker sees
            with pytest.raises(ValueError, match="RBF CKA keeps files in a scratch directory "
                                                 "that every worker must see.*repsim.scratch"):
                dr.compare(group, metrics=["cka_rbf"], method="gram")
        ds = dr.compare(group, metrics=["cka", "cka_debiased"] + ["cka_rbf"] * local_disk,
                        sigma=[0.5, 1.0] if local_disk else None, method="gram")
    rows, tiles = ds.attrs["tile_rows"], ds.attrs["n_tiles"]
    blocks = -(-n // rows)
    assert tiles == blocks * (blocks + 1) // 2 and blocks >= 3
    reads = store.chunk_reads()
    assert len(reads) == 4 * n // 32  # every chunk was read
    # 16 pairs x 4 outputs: no read per pair
    assert max(reads.values()) <= 2, reads
    assert sum(v == 2 for v in reads.values()) == 4  # the first chunk of each layer
    x = {k: np.asarray(group[k]) for k in names}
    assert abs(float(ds["cka"].sel(layer_a="l1", layer_b="l3"))
               - _cka(_gram(x["l1"]), _gram(x["l3"]))) < 1e-9
    if local_disk:
        ref = _cka(_rbf(_gram(x["l1"]), 1.0), _rbf(_gram(x["l3"]), 1.0))
        assert abs(float(ds["cka_rbf_1"].sel(layer_a="l1", layer_b="l3")) - ref) < 1e-9


@pytest.mark.parametrize("gather", [2**4, 2**10])
def test_exact_median_over_scratch_tiles_with_few_gathered(monkeypatch, gather):
    """The bit-prefix narrowing gives numpy's median however few values may be gathered
    (several passes over the scratch tiles), ties and a zero diagonal included."""
    monkeypatch.setattr(scratch, "GATHER", gather)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(150, 4)).astype(np.float64)  # many tied distances
    y = rng.normal(size=(150, 3))
    ds = dr.compare({"x": x}, {"y": y}, metrics=["cka_rbf"], method="gram")
    med = [float(v.split(": ")[1]) for v in ds.attrs["median_sq_distance"].split("; ")]
    for value, data in zip(med, (x, y), strict=True):
        d = ((data[:, None] - data[None]) ** 2).sum(-1)
        assert value == pytest.approx(np.median(d), rel=1e-12, abs=1e-12)


def test_sigma_rules():
    x = np.random.default_rng(5).normal(size=(50, 4))
    with pytest.raises(ValueError, match="sigma= applies to the metric"):
        dr.compare({"x": x}, metrics=["cka"], sigma=0.5)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        dr.compare({"x": x}, metrics=["cka_rbf"], sigma=[0.5, -1])
    with pytest.raises(ValueError, match="method='covariance' computes"):
        dr.compare({"x": x}, metrics=["cka_rbf"], method="covariance")
    with pytest.raises(ValueError, match=r"no path of this metric supports omitting non-finite "
                                         r"samples \(nan_policy='omit'\)"):
        dr.compare({"x": x}, metrics=["cka_rbf"], nan_policy="omit")
    one = dr.compare({"x": x}, {"y": x ** 2}, metrics=["cka_rbf"], sigma=0.5)
    assert list(one.data_vars) == ["cka_rbf"] and one.attrs["sigma"] == [0.5]


_RSS_SCRIPT = textwrap.dedent("""
    import json, sys, tracemalloc
    import dask, dask_repsim as dr
    tracemalloc.start()  # numpy, zarr and the package's buffers, in every thread
    with dask.config.set({"repsim.memory-budget": sys.argv[3], "scheduler": "threads",
                          "num_workers": 2}):
        ds = dr.compare(sys.argv[1], sys.argv[2], metrics=["cka", "cka_rbf"],
                        sigma=[0.4, 0.8])
    # the process's own high-water RSS: ru_maxrss would count the parent's RSS at fork
    peak = int([line for line in open('/proc/self/status')
                if line.startswith('VmHWM')][0].split()[1]) * 1024
    print(json.dumps({"peak": peak, "traced": tracemalloc.get_traced_memory()[1],
                      "method": ds.attrs["method"],
                      "tiles": ds.attrs["n_tiles"], "cka": ds.cka.values.tolist()}))
""")


def _wide_stores(tmp_path, n: int, p: int) -> tuple[str, str]:
    rng = np.random.default_rng(6)
    for name, seed in (("a", 0), ("b", 1)):
        root = zarr.open_group(tmp_path / f"{name}.zarr", mode="w")
        arr = root.create_array("conv", shape=(n, p), chunks=(100, p), dtype="float32",
                                dimension_names=("sample", "unit"))
        for s in range(0, n, 500):
            arr[s:s + 500] = rng.normal(size=(min(500, n - s), p)).astype(np.float32) + seed
        root.create_array("fc", shape=(n, 10), chunks=(100, 10), dtype="float32",
                          dimension_names=("sample", "fc_unit"))[...] = rng.normal(size=(n, 10))
    return str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")


#: what a process holds besides the arrays the budget counts: the imports (about 250 MiB),
#: dask, and memory the C allocator keeps after the tasks' buffers are freed
RSS_OVERHEAD = 600 * 2**20


@pytest.mark.parametrize(("budget", "tiles"), [(2**30, 1), (600 * 2**20, 6)])
def test_wide_grid_peak_rss_within_the_budget(tmp_path, budget, tiles):
    """Two 2,000 x 40,000 float32 layers (320 MB each) with a budget of 1 GiB (whole Gram
    matrices, each layer's rows held by a task) or 600 MiB (row-block tiles): every array
    allocated after the imports (numpy's, zarr's and the package's, traced) stays within the
    budget at its peak, and the process's peak RSS within the budget plus a fixed overhead."""
    a, b = _wide_stores(tmp_path, 2000, 40_000)
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, a, b, str(budget)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["method"] == "gram"
    assert result["tiles"] == 1 if tiles == 1 else result["tiles"] >= tiles
    assert result["traced"] < budget, result["traced"] / 2**20
    assert result["peak"] < budget + RSS_OVERHEAD, result["peak"] / 2**20
    assert np.isfinite(result["cka"]).all()


@pytest.mark.slow
def test_wide_grid_on_workers_with_a_memory_limit(tmp_path):
    """Worker processes limited to 1.2 GB each (the budget: a quarter of that, per process):
    the grid completes without a worker being killed or restarted, values as on threads."""
    distributed = pytest.importorskip("distributed")
    a, b = _wide_stores(tmp_path, 1200, 40_000)
    with dask.config.set(scheduler="threads"):
        local = dr.compare(a, b, metrics=["cka", "cka_rbf"])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1.2GB", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        before = set(client.scheduler_info()["workers"])
        ds = dr.compare(a, b, metrics=["cka", "cka_rbf"])
        after = set(client.scheduler_info()["workers"])
    assert len(before) == 2 and after == before  # a restarted worker comes back renamed
    assert ds.attrs["method"] == "gram"
    xr.testing.assert_allclose(ds[["cka", "cka_rbf"]], local[["cka", "cka_rbf"]], rtol=1e-9)


def test_too_little_scratch_disk_is_an_error_before_writing(tmp_path, monkeypatch):
    """The grid says how much scratch disk it needs and where, and leaves nothing behind."""
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 10**5, 10**5))
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(200, 30)), rng.normal(size=(200, 20))
    with dask.config.set({"repsim.scratch": str(tmp_path), "repsim.memory-budget": 2**16,
                          "scheduler": "threads", "num_workers": 2}):
        with pytest.raises(OSError, match=r"copies of the row blocks and squared distances "
                                          r"for RBF CKA need [\d.]+ kiB of scratch disk.*"
                                          r"'repsim.scratch'"):
            dr.compare({"x": x}, {"y": y}, metrics=["cka", "cka_rbf"], method="gram")
        monkeypatch.undo()
        ds = dr.compare({"x": x}, {"y": y}, metrics=["cka", "cka_rbf"], method="gram")
    assert ds.attrs["n_tiles"] > 1 and list(tmp_path.iterdir()) == []
    ref = _cka(_gram(x), _gram(y))
    assert abs(float(ds.cka.squeeze()) - ref) < 1e-12


def test_row_copies_of_arrays_chunked_along_features():
    """Dask arrays chunked along features too: the diagonal tiles read whole rows through the
    chunks, copy them to scratch, and the grid equals the reference."""
    import dask.array as da

    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(300, 45)), rng.normal(size=(300, 8)) ** 2
    with dask.config.set({"repsim.memory-budget": 2**17, "scheduler": "threads",
                          "num_workers": 2}):
        ds = dr.compare({"x": da.from_array(x, chunks=(70, 16))},
                        {"y": da.from_array(y, chunks=(50, 3))},
                        metrics=["cka", "cka_debiased"], method="gram")
    assert ds.attrs["n_tiles"] >= 6
    assert abs(float(ds.cka.squeeze()) - _cka(_gram(x), _gram(y))) < 1e-12
    assert abs(float(ds.cka_debiased.squeeze())
               - _cka(_gram(x), _gram(y), _unbiased_hsic)) < 1e-12


def test_subsampled_median_is_labelled_approximate(monkeypatch):
    """Beyond MEDIAN_EXACT_MAX samples the bandwidths come from a seeded subsample: the grid
    says so in attrs, the pairwise result (the cell's fields) in ``.approximate``, and the
    values follow from the reported medians."""
    monkeypatch.setattr(samplespace, "MEDIAN_EXACT_MAX", 100)
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(160, 6)), rng.normal(size=(160, 4)) ** 2
    ds = dr.compare({"x": x}, {"y": y}, metrics=["cka", "cka_rbf"], sigma=0.5, method="gram")
    assert ds.attrs["median_exact"] == 0
    assert ds.attrs["approximate"] == ("cka_rbf: RBF bandwidths from each layer's median squared "
                                       "distance among a seeded random subset of 160 samples "
                                       "(n > 100)")
    med = [float(v.split(": ")[1]) for v in ds.attrs["median_sq_distance"].split("; ")]

    def kernel(data, m):
        d = ((data[:, None] - data[None]) ** 2).sum(-1)
        return np.exp(-d / (2 * 0.5**2 * m))

    ref = _cka(kernel(x, med[0]), kernel(y, med[1]))
    assert abs(float(ds.cka_rbf.squeeze()) - ref) < 1e-9
    pair = dr.cka(x, y, kernel="rbf", sigma=0.5)
    assert float(pair) == float(ds.cka_rbf.squeeze()) and pair.median == tuple(med)
    assert (pair.median_exact, pair.approximate) == (False, (
        "RBF bandwidths from the median squared distance among a seeded random subset of 160 "
        "samples (n > 100)"))
