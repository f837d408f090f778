"""RSA over row-block tiles against float64 references: numpy written from the definitions
(Kriegeskorte et al. 2008; rho-a as Nili et al. 2014) and rsatoolbox's calc_rdm and compare."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from conftest import write_zarr
from scipy import stats
from scipy.spatial.distance import pdist

from dask_repsim.exceptions import InputError, NonFiniteError, NoVarianceError, SampleCountError
from dask_repsim.io.inputs import as_layer
from dask_repsim.pairwise.samples import rsa
from dask_repsim.paths.sample_blocks.rsa import COMPARES, EntryMoments, average_ranks, rsa_values

rsatoolbox = pytest.importorskip("rsatoolbox")


def reference_rdm(x: np.ndarray, rdm: str) -> np.ndarray:
    """The upper triangle (i < j, row-major) of the RDM, from the definitions."""
    if rdm == "correlation":
        r = np.corrcoef(x)  # Pearson correlation between samples (rows) across features
        return 1.0 - r[np.triu_indices(len(x), 1)]
    return pdist(x, "sqeuclidean") / x.shape[1]  # pdist's order is the row-major i < j


def kendall_by_pairs(d1: np.ndarray, d2: np.ndarray, compare: str) -> float:
    """Kendall's tau from its definition: every pair of entries counted, concordant minus
    discordant, over all pairs (tau-a) or over the pairs untied in each vector (tau-b)."""
    sign = 0
    untied1 = untied2 = 0
    for start in range(0, len(d1), 500):
        a = np.sign(d1[start:start + 500, None] - d1[None, :])
        b = np.sign(d2[start:start + 500, None] - d2[None, :])
        sign += int((a * b).sum())
        untied1 += int(np.count_nonzero(a))
        untied2 += int(np.count_nonzero(b))
    pairs = len(d1) * (len(d1) - 1)  # ordered pairs, as the sums above count them
    if compare == "tau-a":
        return sign / pairs
    return sign / np.sqrt(float(untied1) * float(untied2))


def reference_compare(d1: np.ndarray, d2: np.ndarray, compare: str) -> float:
    if compare == "corr":
        return float(np.corrcoef(d1, d2)[0, 1])
    if compare == "cosine":
        return float(d1 @ d2 / np.sqrt((d1 @ d1) * (d2 @ d2)))
    if compare == "spearman":
        return float(stats.spearmanr(d1, d2).statistic)
    if compare in ("tau-a", "tau-b"):
        return kendall_by_pairs(d1, d2, compare)
    # rho-a (Nili et al. 2014): the expected Spearman correlation when ties are broken at
    # random. Tie-broken ranks are a permutation of 1..N, so the denominator is a permutation's
    # sum of squares (N^3 - N) / 12, and the expected cross-product about the mean is that of
    # the average ranks (ties broken independently in the two vectors).
    n = len(d1)
    r1, r2 = stats.rankdata(d1) - (n + 1) / 2, stats.rankdata(d2) - (n + 1) / 2
    return float(np.sum(r1 * r2) / ((n**3 - n) / 12))


def toolbox(x: np.ndarray, y: np.ndarray, rdm: str, compare: str) -> float:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm
    from rsatoolbox.rdm import compare as rdm_compare

    r1, r2 = calc_rdm(Dataset(x), method=rdm), calc_rdm(Dataset(y), method=rdm)
    return float(rdm_compare(r1, r2, method=compare)[0, 0])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(150, 9)) * np.linspace(0.5, 2, 9) + 3.0
    y = np.tanh(x[:, :6] @ rng.normal(size=(6, 5))) + 0.5 * rng.normal(size=(150, 5))
    return x, y


@pytest.mark.parametrize("rdm", ["correlation", "euclidean"])
def test_all_comparisons_equal_the_references_and_rsatoolbox(data, rdm):
    x, y = data
    d1, d2 = reference_rdm(x, rdm), reference_rdm(y, rdm)
    values = rsa_values(as_layer(x), as_layer(y, name="y"), rdm=rdm, compares=COMPARES,
                        block_rows=64)
    for compare in COMPARES:
        expected = reference_compare(d1, d2, compare)
        assert values[compare] == pytest.approx(expected, abs=1e-9), compare
        assert values[compare] == pytest.approx(toolbox(x, y, rdm, compare), abs=1e-9), compare
    assert values["spearman"] != pytest.approx(values["corr"], abs=1e-3)  # different measures
    assert values["rho-a"] == pytest.approx(values["spearman"], abs=1e-12)  # no ties here


def test_rank_comparisons_with_tied_dissimilarities():
    """Integer activations: many equal squared distances; ties get their average rank, and
    rho-a keeps the denominator without tie correction."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(60, 4)).astype(float)
    y = (x[:, :3] + rng.integers(0, 2, size=(60, 3))).astype(float)
    d1, d2 = reference_rdm(x, "euclidean"), reference_rdm(y, "euclidean")
    assert len(np.unique(d1)) < len(d1) / 100  # heavily tied
    values = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean",
                        compares=("spearman", "rho-a", "tau-b", "tau-a"), block_rows=16)
    for compare in ("spearman", "rho-a", "tau-b", "tau-a"):
        assert values[compare] == pytest.approx(reference_compare(d1, d2, compare), abs=1e-9)
        assert values[compare] == pytest.approx(toolbox(x, y, "euclidean", compare), abs=1e-9)
    assert values["rho-a"] < values["spearman"] - 1e-3  # ties shrink the uncorrected one
    assert values["tau-a"] < values["tau-b"] - 1e-3


def test_average_ranks_equal_scipy():
    v = np.random.default_rng(0).integers(0, 20, size=500).astype(float)
    np.testing.assert_array_equal(average_ranks(v), stats.rankdata(v))


def test_pearson_moments_are_stable_for_large_means():
    """Dissimilarities around 1e9 (large means): the merged moments keep the correlation."""
    rng = np.random.default_rng(1)
    e1, e2 = rng.normal(size=10_000), rng.normal(size=10_000)
    e2 += e1
    expected = np.corrcoef(e1, e2)[0, 1]
    d1, d2 = e1 + 1e9, 3 * e2 + 1e9
    total = EntryMoments.of(d1[:0], d2[:0])
    for part in np.array_split(np.arange(10_000), 37):
        total = EntryMoments.merge(total, EntryMoments.of(d1[part], d2[part]))
    assert total.pearson() == pytest.approx(expected, abs=1e-9)
    assert total.cosine() == pytest.approx(d1 @ d2 / np.linalg.norm(d1) / np.linalg.norm(d2),
                                           abs=1e-12)


@pytest.mark.parametrize("rdm", ["correlation", "euclidean"])
def test_independent_of_block_rows_and_offsets(data, rdm):
    x, y = data
    expected = reference_compare(reference_rdm(x, rdm), reference_rdm(y, rdm), "corr")
    for rows in (37, 64, 150):
        value = rsa_values(as_layer(x), as_layer(y, name="y"), rdm=rdm, block_rows=rows)
        assert value["corr"] == pytest.approx(expected, abs=1e-10)
    # an offset of 1e6 on every activation changes neither RDM
    shifted = rsa_values(as_layer(x + 1e6), as_layer(y + 1e6, name="y"), rdm=rdm,
                         block_rows=50)
    assert shifted["corr"] == pytest.approx(expected, abs=1e-6)


def test_numpy_dask_zarr_and_xarray_inputs(data, tmp_path):
    x, y = data
    expected = toolbox(x, y, "correlation", "corr")
    write_zarr(tmp_path / "g.zarr", "x", x.astype(np.float32), chunks=(40, 9))
    write_zarr(tmp_path / "g.zarr", "y", y.astype(np.float32), chunks=(70, 5))
    x32, y32 = x.astype(np.float32).astype(float), y.astype(np.float32).astype(float)
    expected32 = toolbox(x32, y32, "correlation", "corr")
    assert float(rsa(x, y)) == pytest.approx(expected, abs=1e-9)
    assert float(rsa(da.from_array(x, chunks=(33, 4)), da.from_array(y, chunks=(80, 5)))) == (
        pytest.approx(expected, abs=1e-9))
    assert float(rsa(str(tmp_path / "g.zarr" / "x"), str(tmp_path / "g.zarr" / "y"))) == (
        pytest.approx(expected32, abs=1e-9))
    xa = xr.DataArray(x, dims=("sample", "unit"), coords={"sample": np.arange(150)})
    ya = xr.DataArray(y[::-1], dims=("sample", "unit"), coords={"sample": np.arange(150)[::-1]})
    result = rsa(xa, ya)  # paired by label: y reversed with its labels is the same pairing
    assert float(result) == pytest.approx(expected, abs=1e-9)
    assert (result.method, result.rdm, result.compare) == ("sample_blocks", "correlation", "corr")


def test_bad_inputs_give_the_errors_of_every_path(data):
    x, y = data
    bad = x.copy()
    bad[17, 2] = np.nan
    with pytest.raises(NonFiniteError, match="x has NaN at sample 17"):
        rsa(bad, y)
    with pytest.raises(NoVarianceError, match="y has no variance"):
        rsa(x, np.ones((150, 3)))
    with pytest.raises(SampleCountError, match="different numbers of samples"):
        rsa(x, y[:100])
    with pytest.raises(SampleCountError, match="rsa needs at least 3 samples, got 2"):
        rsa(x[:2], y[:2])
    flat = x.copy()
    flat[5] = 2.5  # sample 5 has the same activation in every feature
    with pytest.raises(InputError, match=r"x: sample 5 has the same activation in all its 9"):
        rsa(flat, y)
    assert np.isfinite(float(rsa(flat, y, rdm="euclidean")))  # its distances are defined


def test_bad_options_are_refused():
    x = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(ValueError, match="rdm must be one of"):
        rsa(x, x, rdm="cosine")
    with pytest.raises(ValueError, match="compare must be one of"):
        rsa(x, x, compare="kendall")
    with pytest.raises(ValueError, match=r"not available for rsa.*'sample_blocks' path"):
        rsa(x, x, nan_policy="omit")
    for option in ({"level": 0.9}, {"groups": 5}):  # intervals: tests/paths/test_rsa_jackknife
        with pytest.raises(ValueError, match=r"applies to intervals only"):
            rsa(x, x, **option)
    with pytest.raises(ValueError, match=r"seed= is used by permutation tests"):
        rsa(x, x, seed=1)  # without permutations=


def test_rank_comparisons_beyond_the_exact_size_are_refused():
    x = np.random.default_rng(0).normal(size=(300, 3))
    with dask.config.set({"repsim.memory-budget": "1 MB"}), pytest.raises(
        ValueError, match=r"compare='spearman' ranks all 44,850 .*use compare='corr' or 'cosine'"
    ):
        rsa(x, x + 1, compare="spearman")
    # Kendall's pair counting needs twice the bytes per entry: 4.3 MB of 44,850 entries
    with dask.config.set({"repsim.memory-budget": "4 MB"}), pytest.raises(
        ValueError, match=r"compare='tau-a' ranks all 44,850 .* about 4\.\d+ MiB"
    ):
        rsa(x, x + 1, compare="tau-a")
    with dask.config.set({"repsim.memory-budget": "4 MB"}):
        assert float(rsa(x, x + 1, compare="spearman")) == pytest.approx(1.0)
    with dask.config.set({"repsim.memory-budget": "1 MB"}):  # Pearson streams: fine
        assert float(rsa(x, x + 1)) == pytest.approx(1.0)


def test_an_rdm_with_one_dissimilarity_is_refused():
    """Three samples at equal distances: the RDM is constant and its correlation undefined;
    its cosine is defined."""
    x = np.eye(3)
    y = np.random.default_rng(0).normal(size=(3, 4))
    with pytest.raises(ValueError, match="euclidean RDM of x has the same dissimilarity"):
        rsa(x, y, rdm="euclidean")
    expected = toolbox(x, y, "euclidean", "cosine")
    assert float(rsa(x, y, rdm="euclidean", compare="cosine")) == pytest.approx(expected)
