"""Mutual k-NN alignment and CKNNA over row-block tiles against brute-force float64 numpy written
from Huh, Cheung, Wang & Isola (2024) and its reference code's definitions; and the out-of-core
run of the sample-space measures (RSA too) within the memory budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import references
import xarray as xr
import zarr
from conftest import write_zarr

import dask_repsim as dr
from dask_repsim.exceptions import InputError, NonFiniteError, SampleCountError
from dask_repsim.io.inputs import as_layer
from dask_repsim.pairwise.samples import cknna, mutual_knn
from dask_repsim.paths.sample_blocks.neighbours import (
    knn_values,
    nearest_neighbours,
    rank_scores,
    top_k,
)

ROOT = Path(__file__).resolve().parents[2]


def brute_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The n x n cosine similarities and each row's k nearest others: larger similarity
    first, equal similarities by smaller index."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    n = len(x)
    idx = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        idx[i] = others[np.lexsort((others, -s[i, others]))[:k]]
    return s, idx


def brute_measures(x: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float]:
    """Mutual k-NN and CKNNA with dense n x n matrices (the paper's reference code: unbiased
    HSIC of the kernels masked by the shared neighbours, Song et al. 2012 eq. 5)."""
    n = len(x)
    kx, ix = brute_neighbours(x, k)
    ly, iy = brute_neighbours(y, k)
    mask_x, mask_y = np.zeros((n, n)), np.zeros((n, n))
    mask_x[np.arange(n)[:, None], ix] = 1.0
    mask_y[np.arange(n)[:, None], iy] = 1.0
    mutual = float(np.mean((mask_x * mask_y).sum(axis=1) / k))

    def hsic(a, b):  # a, b have zero diagonals (masks exclude i itself)
        return (np.sum(a * b.T) + a.sum() * b.sum() / ((n - 1) * (n - 2))
                - 2 * np.sum(a @ b) / (n - 2)) / (n * (n - 3))

    both = mask_x * mask_y
    value = hsic(both * kx, both * ly) / np.sqrt(
        hsic(mask_x * kx, mask_x * kx) * hsic(mask_y * ly, mask_y * ly))
    return mutual, float(value)


def binary_rows(n: int, p: int, ones: int, seed: int) -> np.ndarray:
    """Rows with exactly ``ones`` ones: norm 2 for 4 ones, so every cosine similarity is a
    multiple of 1/4, computed exactly, and most rows tie with many others."""
    rng = np.random.default_rng(seed)
    z = np.zeros((n, p))
    for row in z:
        row[rng.choice(p, ones, replace=False)] = 1.0
    return z


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(180, 12))
    y = np.tanh(x @ rng.normal(size=(12, 9))) + 0.4 * rng.normal(size=(180, 9))
    return x, y


def test_equal_the_brute_force_version(data):
    x, y = data
    mutual, value = brute_measures(x, y, 10)
    _, ix = brute_neighbours(x, 10)
    _, iy = brute_neighbours(y, 10)
    for rows in (64, 100, 180):
        _, idx_x, _, idx_y = nearest_neighbours(as_layer(x), as_layer(y, name="y"), 10,
                                                block_rows=rows)
        np.testing.assert_array_equal(idx_x, ix)
        np.testing.assert_array_equal(idx_y, iy)
        values = knn_values(as_layer(x), as_layer(y, name="y"), 10, block_rows=rows)
        assert values["mutual_knn"] == mutual
        assert values["cknna"] == pytest.approx(value, rel=1e-12)
    assert 0.05 < mutual < 0.9 and 0.05 < value < 0.9  # neither trivial nor perfect


def test_ties_are_broken_by_sample_index():
    x, y = binary_rows(150, 16, 4, 1), binary_rows(150, 16, 4, 2)
    mutual, value = brute_measures(x, y, 10)
    _, ix = brute_neighbours(x, 10)
    for rows in (64, 150):
        sim_x, idx_x, _, _ = nearest_neighbours(as_layer(x), as_layer(y, name="y"), 10,
                                                block_rows=rows)
        np.testing.assert_array_equal(idx_x, ix)
        assert (sim_x[:, :-1] == sim_x[:, 1:]).any()  # tied neighbours do occur
        values = knn_values(as_layer(x), as_layer(y, name="y"), 10, block_rows=rows)
        assert values["mutual_knn"] == mutual
        assert values["cknna"] == pytest.approx(value, rel=1e-12)


def test_top_k_of_a_block_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(50, 40)).astype(float)
    cols = np.arange(100, 140)
    values, idx = top_k(s, cols, 7)
    for r in range(50):
        order = np.lexsort((cols, -s[r]))[:7]
        np.testing.assert_array_equal(idx[r], cols[order])
        np.testing.assert_array_equal(values[r], s[r, order])


def test_identical_representations_and_scale(data):
    x, _ = data
    assert float(mutual_knn(x, 4.0 * x)) == 1.0
    assert float(cknna(x, 4.0 * x)) == pytest.approx(1.0, abs=1e-12)


def test_numpy_dask_zarr_and_xarray_inputs(data, tmp_path):
    x, y = data
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    write_zarr(tmp_path / "g.zarr", "x", x32, chunks=(50, 12))
    write_zarr(tmp_path / "g.zarr", "y", y32, chunks=(64, 9))
    mutual, value = brute_measures(x, y, 10)
    mutual32, value32 = brute_measures(x32.astype(float), y32.astype(float), 10)
    assert float(mutual_knn(x, y)) == mutual
    assert float(cknna(x, y)) == pytest.approx(value, rel=1e-12)
    dx, dy = da.from_array(x, chunks=(33, 5)), da.from_array(y, chunks=(100, 9))
    assert float(mutual_knn(dx, dy)) == mutual
    paths = str(tmp_path / "g.zarr" / "x"), str(tmp_path / "g.zarr" / "y")
    assert float(mutual_knn(*paths)) == mutual32
    assert float(cknna(*paths)) == pytest.approx(value32, rel=1e-12)
    labels = np.arange(180)
    xa = xr.DataArray(x, dims=("sample", "unit"), coords={"sample": labels})
    ya = xr.DataArray(y[::-1], dims=("sample", "unit"), coords={"sample": labels[::-1]})
    result = cknna(xa, ya, k=10)  # paired by label
    assert float(result) == pytest.approx(value, rel=1e-12)
    assert (result.method, result.k) == ("sample_blocks", 10)
    kl, kk, ll = result.hsic
    assert result.reference_value == pytest.approx(kl / (np.sqrt(kk * ll) + 1e-6), rel=1e-12)
    assert result.reference_value < float(result)


def test_bad_inputs_and_options(data):
    x, y = data
    bad = x.copy()
    bad[40, 0] = np.inf
    with pytest.raises(NonFiniteError, match="x has Inf at sample 40"):
        mutual_knn(bad, y)
    zero = y.copy()
    zero[[7, 9]] = 0.0
    with pytest.raises(InputError, match=r"y: sample 7 has all its 9 activations zero \(2 such"):
        cknna(x, zero)
    with pytest.raises(SampleCountError, match="different numbers of samples"):
        mutual_knn(x, y[:50])
    with pytest.raises(ValueError, match=r"mutual k-NN needs 1 <= k < n .* k=180 with n=180"):
        mutual_knn(x, y, k=180)
    with pytest.raises(ValueError, match=r"CKNNA needs 2 <= k < n"):
        cknna(x, y, k=1)
    assert float(mutual_knn(x, y, k=1)) == brute_measures(x, y, 1)[0]
    with pytest.raises(TypeError, match="k must be an int"):
        mutual_knn(x, y, k=2.5)
    for measure, function in (("mutual_knn", mutual_knn), ("cknna", cknna)):
        with pytest.raises(ValueError, match=f"not available for {measure}"):
            function(x, y, nan_policy="omit")


_CHILD = textwrap.dedent("""
    import json, sys, time
    import dask
    import dask_repsim as dr
    from dask_repsim.pairwise.samples import mutual_knn, rsa
    dask.config.set({"repsim.memory-budget": "2GB"})
    start = time.perf_counter()
    m = mutual_knn(sys.argv[1] + "/x", sys.argv[1] + "/y", k=10)
    # the other neighbour measures from one pass; the distance-matrix measures from one more
    knn = dr.compare(sys.argv[1] + "/x", sys.argv[1] + "/y", k=10,
                     metrics=["jaccard_knn", "rank_similarity", "joint_rank_jaccard",
                              "second_order_cosine"])
    apart = dr.compare(sys.argv[1] + "/x", sys.argv[1] + "/y",
                       metrics=["distance_correlation", "rsm_norm_difference",
                                "uniformity_difference", "concentricity_difference",
                                "disagreement", "jensen_shannon", "aligned_cosine"])
    r = rsa(sys.argv[1] + "/x", sys.argv[1] + "/y", rdm="correlation", compare="corr")
    whitened = {c: float(rsa(sys.argv[1] + "/x", sys.argv[1] + "/y", compare=c))
                for c in ("corr_cov", "cosine_cov")}
    laplace = dr.cka(sys.argv[1] + "/x", sys.argv[1] + "/y", kernel="laplace")
    spectra = dr.compare(sys.argv[1], metrics=["bures_distance", "eigenspace_overlap", "gulp",
                                                "permutation_distance", "magnitude_difference",
                                                "ridge_predictivity", "pls_predictivity"],
                         ridge=0.1, components=5).sel(layer_a="x", layer_b="y")
    try:  # in memory by design: refused before any read beyond the budget
        dr.rtd(sys.argv[1] + "/x", sys.argv[1] + "/y")
        refused = ""
    except ValueError as error:
        refused = str(error)
    # the process's own high-water RSS: ru_maxrss would count the parent's RSS at fork
    peak = int([line for line in open("/proc/self/status")
                if line.startswith("VmHWM")][0].split()[1]) * 1024
    sample_space = {k: float(v.item()) for ds in (knn, apart) for k, v in ds.data_vars.items()}
    print(json.dumps({"mutual_knn": float(m), "rsa": float(r), "peak": peak, **sample_space,
                      "seconds": time.perf_counter() - start, **whitened,
                      "cka_laplace": float(laplace), "rtd_refused": refused,
                      **{k: float(spectra[k]) for k in spectra.data_vars}}))
""")


@pytest.mark.large
def test_out_of_core_within_the_memory_budget(tmp_path):
    """50,000 x 512 float32 Zarr layers: the n x n similarity and dissimilarity matrices would
    take 20 GB each; the child's peak RSS stays near the 2 GB budget while it computes RSA, the
    k-nearest-neighbour measures, the distance-matrix measures, Laplace CKA and RSA's
    whitened comparisons; RTD, in memory by design, is refused before any read. The co-moment
    measures of the same layers (Bures distance, eigenspace overlap, GULP, the permutation
    metric, ridge and PLS predictivity) in the same child equal the references computed here
    in memory."""
    n, p, chunk = 50_000, 512, 5_000
    root = zarr.open_group(tmp_path / "big.zarr", mode="w")
    arrays = [root.create_array(name, shape=(n, p), chunks=(chunk, p), dtype="float32")
              for name in ("x", "y")]
    mix = np.random.default_rng(0).normal(size=(p, p)).astype(np.float32) / np.sqrt(p)
    for start in range(0, n, chunk):
        rng = np.random.default_rng(start)
        z = rng.normal(size=(chunk, p)).astype(np.float32)
        arrays[0][start : start + chunk] = z
        arrays[1][start : start + chunk] = np.tanh(z @ mix) + 0.5 * rng.normal(
            size=(chunk, p)).astype(np.float32)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "big.zarr")],
                            stdout=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read()
    assert proc.wait() == 0
    result = json.loads(out.strip().splitlines()[-1])
    peak = result["peak"]
    bound = 2e9 + 400 * 2**20
    print(f"\n50,000 x 512 sample-space measures: peak RSS {peak / 2**30:.2f} GiB in "
          f"{result['seconds']:.0f} s")
    assert peak < bound, f"peak RSS {peak / 2**30:.2f} GiB over {bound / 2**30:.2f} GiB"
    assert 0.0 < result["mutual_knn"] < 1.0 and 0.0 < result["rsa"] < 1.0
    # exact on every kind of data at small n (their own tests); here: they ran out of core
    assert 0.0 < result["joint_rank_jaccard"] <= result["jaccard_knn"] <= result["mutual_knn"]
    assert 0.0 < result["rank_similarity"] <= 1.0
    assert 0.0 < result["distance_correlation"] < 1.0 and result["rsm_norm_difference"] > 0
    assert result["uniformity_difference"] >= 0 and result["concentricity_difference"] >= 0
    assert 0.0 < result["second_order_cosine"] < 1.0
    x, y = (np.asarray(root[name][:], dtype=np.float64) for name in ("x", "y"))
    assert result["bures_distance"] == pytest.approx(references.size_and_shape_distance(x, y),
                                                     rel=1e-8)
    assert result["eigenspace_overlap"] == pytest.approx(references.eigenspace_overlap(x, y),
                                                         abs=1e-9)
    assert result["gulp"] == pytest.approx(references.gulp(x, y, 0.1), rel=1e-7)
    assert result["permutation_distance"] == pytest.approx(
        references.permutation_distance(x, y), abs=1e-9)
    assert result["magnitude_difference"] == pytest.approx(
        references.magnitude_difference(x, y), rel=1e-9)
    assert result["disagreement"] == pytest.approx(references.disagreement(x, y), abs=1e-12)
    assert result["jensen_shannon"] == pytest.approx(references.jensen_shannon(x, y), rel=1e-9)
    assert result["aligned_cosine"] == pytest.approx(references.aligned_cosine(x, y), rel=1e-9)
    assert 0.0 < result["cka_laplace"] < 1.0
    assert 0.0 < result["corr_cov"] < 1.0 and 0.0 < result["cosine_cov"] < 1.0
    assert "over the memory budget" in result["rtd_refused"]
    assert "50,000 samples" in result["rtd_refused"]
    assert result["ridge_predictivity"] == pytest.approx(
        references.ridge_predictivity(x, y, ridge=0.1), rel=1e-8)
    assert result["pls_predictivity"] == pytest.approx(
        references.pls_predictivity(x, y, components=5), rel=1e-8)


def test_grid_options_the_sample_space_measures_lack_name_them():
    """compare with an option no path of a metric supports names the metric and the option."""
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(60, 4))
    with pytest.raises(ValueError, match=r"^second_order_cosine: no path of this metric "
                                         r"supports omitting non-finite samples"):
        dr.compare({"x": x}, {"y": y}, metrics=["second_order_cosine", "cka"],
                   nan_policy="omit")
    with pytest.raises(ValueError, match=r"^mutual_knn, cknna: no path of these metrics "
                                         r"supports omitting non-finite samples"):
        dr.compare({"x": x}, {"y": y}, metrics=["mutual_knn", "cknna"], nan_policy="omit")


def test_grid_takes_mutual_knn_and_cknna_from_one_pass(monkeypatch):
    """Both neighbour metrics in one compare: one pass per pair, the values of the pairwise
    functions (which make a pass each)."""
    from dask_repsim.paths.sample_blocks import neighbours

    rng = np.random.default_rng(13)
    x = {"a": rng.normal(size=(120, 6)), "b": rng.normal(size=(120, 9))}
    y = {"c": x["a"] @ rng.normal(size=(6, 5)) + 0.3 * rng.normal(size=(120, 5))}
    calls = []
    real = neighbours.knn_values
    monkeypatch.setattr(neighbours, "knn_values",
                        lambda *args, **kw: calls.append(kw["measures"]) or real(*args, **kw))
    ds = dr.compare(x, y, metrics=["cknna", "rsa", "mutual_knn"], k=7)
    assert calls == [("cknna", "mutual_knn")] * 2  # one pass for each of the two pairs
    for name in ("a", "b"):
        cell = ds.sel(layer_a=name, layer_b="c")
        assert float(cell.mutual_knn) == mutual_knn(x[name], y["c"], k=7)
        assert float(cell.cknna) == pytest.approx(cknna(x[name], y["c"], k=7), rel=1e-12)
        assert float(cell.rsa) == pytest.approx(dr.rsa(x[name], y["c"]), rel=1e-12)


def test_jaccard_equals_the_set_version_and_shares_the_pass(data):
    """k-NN Jaccard: ReSi's set version in numpy (``references.jaccard_knn``) for several k
    and row blocks, with tied similarities too; never above mutual k-NN; near its chance level
    k / (2 (n - 1) - k) for unrelated layers; one pass with mutual k-NN in a grid."""
    x, y = data
    for k in (1, 5, 10):
        expected = references.jaccard_knn(x, y, k)
        for rows in (64, 180):
            got = knn_values(as_layer(x), as_layer(y, name="y"), k, block_rows=rows,
                             measures=("jaccard_knn",))["jaccard_knn"]
            assert got == pytest.approx(expected, rel=1e-14), (k, rows)
        assert dr.jaccard_knn(x, y, k=k) <= dr.mutual_knn(x, y, k=k)
    assert 0.05 < references.jaccard_knn(x, y) < 0.9
    tied_x, tied_y = binary_rows(150, 16, 4, 1), binary_rows(150, 16, 4, 2)
    assert float(dr.jaccard_knn(tied_x, tied_y, k=6)) == pytest.approx(
        references.jaccard_knn(tied_x, tied_y, 6), rel=1e-14)
    rng = np.random.default_rng(21)
    unrelated = [rng.normal(size=(2000, 10)) for _ in range(2)]
    chance = 10 / (2 * 1999 - 10)
    assert float(dr.jaccard_knn(*unrelated)) == pytest.approx(chance, rel=0.25)
    ds = dr.compare({"x": x}, {"y": y}, metrics=["jaccard_knn", "mutual_knn"], k=5)
    assert ds.jaccard_knn.item() == pytest.approx(references.jaccard_knn(x, y, 5), rel=1e-14)
    assert ds.mutual_knn.item() == pytest.approx(references.mutual_knn(x, y, 5), rel=1e-14)
    with pytest.raises(ValueError, match="k-NN Jaccard needs 1 <= k < n"):
        dr.jaccard_knn(x, y, k=180)


@pytest.mark.parametrize("measure", ["rank_similarity", "joint_rank_jaccard"])
def test_rank_measures_equal_resis_definition_and_share_the_pass(data, measure):
    """Rank and joint rank-Jaccard similarity: ReSi's per-sample loops in Python over ranked
    lists (``references.rank_similarity``) for several k and row blocks, tied similarities
    too; 1 for a rotated, scaled copy; one pass with the other neighbour measures in a grid."""
    x, y = data
    reference = getattr(references, measure)
    for k in (1, 5, 10):
        expected = reference(x, y, k)
        for rows in (64, 180):
            got = knn_values(as_layer(x), as_layer(y, name="y"), k, block_rows=rows,
                             measures=(measure,))[measure]
            assert got == pytest.approx(expected, rel=1e-13), (k, rows)
    assert 0.02 < reference(x, y) < 0.9
    tied_x, tied_y = binary_rows(150, 16, 4, 1), binary_rows(150, 16, 4, 2)
    assert float(getattr(dr, measure)(tied_x, tied_y, k=6)) == pytest.approx(
        reference(tied_x, tied_y, 6), rel=1e-13)
    q = np.linalg.qr(np.random.default_rng(3).normal(size=(12, 12)))[0]
    assert float(getattr(dr, measure)(x, 4 * x @ q)) == pytest.approx(1.0, abs=1e-15)
    ds = dr.compare({"x": x}, {"y": y}, metrics=[measure, "jaccard_knn", "cknna"], k=5)
    assert ds[measure].item() == pytest.approx(reference(x, y, 5), rel=1e-13)
    assert ds.jaccard_knn.item() == pytest.approx(references.jaccard_knn(x, y, 5), rel=1e-14)
    name = {"rank_similarity": "rank similarity", "joint_rank_jaccard": "joint rank-Jaccard"}
    with pytest.raises(ValueError, match=f"{name[measure]} needs 1 <= k < n"):
        getattr(dr, measure)(x, y, k=180)


def test_joint_rank_jaccard_is_the_product_per_sample(data):
    """Joint rank-Jaccard never exceeds rank similarity or k-NN Jaccard (each factor is at
    most 1); each sample's score is ReSi's, 0 when its lists share nothing."""
    x, y = data
    joint = float(dr.joint_rank_jaccard(x, y, k=8))
    assert joint <= float(dr.rank_similarity(x, y, k=8))
    assert joint <= float(dr.jaccard_knn(x, y, k=8))
    # per sample: ReSi's score of each pair of ranked lists; none shared scores 0
    _, idx_x, _, idx_y = nearest_neighbours(as_layer(x), as_layer(y, name="y"), 8)
    score, common = rank_scores(idx_x, idx_y)
    expected = [references._rank_score(a, b)
                for a, b in zip(idx_x.tolist(), idx_y.tolist(), strict=True)]
    np.testing.assert_allclose(score, expected, rtol=1e-14, atol=0)
    assert (common == 0).any() and (score[common == 0] == 0).all()
    assert (score <= 1 + 1e-15).all()


def test_second_order_cosine_equals_the_papers_definition(data, monkeypatch):
    """Second-order cosine similarity: the cosine of each sample's similarity vectors over the
    union of its neighbourhoods (``references.second_order_cosine``, dense n x n) for several
    k and row blocks, tied similarities and non-negative activations too; 1 for a rotated,
    scaled copy; the neighbour lists of a grid come from one pass shared with the other
    neighbour measures, then one more pass picks the similarities they lack."""
    x, y = data
    for k in (1, 5, 10):
        expected = references.second_order_cosine(x, y, k)
        for rows in (37, 180):
            got = knn_values(as_layer(x), as_layer(y, name="y"), k, block_rows=rows,
                             measures=("second_order_cosine",))["second_order_cosine"]
            assert got == pytest.approx(expected, rel=1e-12), (k, rows)
    tied_x, tied_y = binary_rows(150, 16, 4, 1), binary_rows(150, 16, 4, 2)
    assert float(dr.second_order_cosine(tied_x, tied_y, k=6)) == pytest.approx(
        references.second_order_cosine(tied_x, tied_y, 6), rel=1e-12)
    relu = np.maximum(x, 0) + 0.01
    assert float(dr.second_order_cosine(relu, np.maximum(y, 0) + 0.01)) == pytest.approx(
        references.second_order_cosine(relu, np.maximum(y, 0) + 0.01), rel=1e-12)
    q = np.linalg.qr(np.random.default_rng(3).normal(size=(12, 12)))[0]
    assert float(dr.second_order_cosine(x, 4 * x @ q)) == pytest.approx(1.0, abs=1e-14)
    from dask_repsim.paths.sample_blocks import neighbours as module

    passes = []
    original = module.nearest_neighbours
    monkeypatch.setattr(module, "nearest_neighbours",
                        lambda *a, **kw: passes.append(1) or original(*a, **kw))
    ds = dr.compare({"x": x}, {"y": y}, metrics=["second_order_cosine", "mutual_knn"], k=5)
    assert len(passes) == 1
    assert ds.second_order_cosine.item() == pytest.approx(
        references.second_order_cosine(x, y, 5), rel=1e-12)
    with pytest.raises(ValueError, match="second-order cosine similarity needs 1 <= k < n"):
        dr.second_order_cosine(x, y, k=180)


def test_second_order_cosine_refuses_orthogonal_neighbourhoods():
    """One-hot samples: every similarity to another sample is 0 or 1; a sample whose
    neighbourhood holds only samples orthogonal to it has no second-order vector."""
    x = np.eye(6)
    y = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(InputError, match="sample 0 has cosine similarity 0 with every sample"):
        dr.second_order_cosine(x, y, k=2)
