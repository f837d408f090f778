"""Jackknife replicates and intervals of RSA on the sample-space tiles
(:mod:`dask_repsim.paths.sample_blocks.rsa_jackknife`): each replicate against RSA recomputed in
dense float64 numpy on the samples outside its group (RDMs from their definitions, pair by pair;
comparisons from theirs: numpy's corrcoef, scipy's spearmanr, rankdata and kendalltau, Kendall's
tau-a by counting pairs, the whitened cosine from the paper's covariance of the entries), the
replicates' independence of the tiles, the chunking and the grid, the interval fields, the
coverage of the intervals and the errors."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist

import dask_repsim as dr
from dask_repsim import registry
from dask_repsim.engine.stream import group_bounds
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.sample_blocks.cells import sample_cells
from dask_repsim.paths.sample_blocks.rsa import ALL_COMPARES, rsa_values
from dask_repsim.results import jackknife_interval


def _pair(n: int, seed: int, integer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two related layers with offsets (y: a tanh of x plus noise); ``integer``: rounded, so
    that dissimilarities tie."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) * np.linspace(0.5, 2.0, 6) + 3.0
    y = np.tanh(x[:, :4] @ rng.normal(size=(4, 5)) / 2) + 0.6 * rng.normal(size=(n, 5)) + 10.0
    if integer:
        x, y = np.round(x), np.round(3 * y)
    return x, y


def _precision(seed: int, p: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(p, p))
    return a @ a.T / p + np.eye(p)


def reference_rdm(x: np.ndarray, rdm: str, precision: np.ndarray | None = None) -> np.ndarray:
    """The entries i < j (row-major) of the RDM, from its definition."""
    if rdm == "correlation":
        return 1.0 - np.corrcoef(x)[np.triu_indices(len(x), 1)]
    # less about its mean: distances do not change, the reference's sums do not cancel, and
    # integer activations stay integers (their ties exact)
    z = x - np.round(x.mean(axis=0))
    if rdm == "euclidean":
        return pdist(z, "sqeuclidean") / x.shape[1]
    i, j = np.triu_indices(len(x), 1)
    diff = z[i] - z[j]
    return np.einsum("kf,fg,kg->k", diff, precision, diff) / x.shape[1]


def _whitened(d1: np.ndarray, d2: np.ndarray, n: int, compare: str) -> float:
    """Diedrichsen et al. (2021): the cosine of the entries whitened by their covariance under
    i.i.d. noise, ``V = (C C') o (C C')`` with the pairwise contrasts ``C``; ``"corr_cov"``
    takes each vector less its mean first."""
    i, j = np.triu_indices(n, 1)
    c = np.zeros((len(i), n))
    c[np.arange(len(i)), i], c[np.arange(len(i)), j] = 1.0, -1.0
    v = (c @ c.T) ** 2
    if compare == "corr_cov":
        d1, d2 = d1 - d1.mean(), d2 - d2.mean()
    w1, w2 = np.linalg.solve(v, d1), np.linalg.solve(v, d2)
    return float(d1 @ w2 / np.sqrt((d1 @ w1) * (d2 @ w2)))


def reference_compare(d1: np.ndarray, d2: np.ndarray, n: int, compare: str) -> float:
    """The comparison of two vectors of entries of ``n``-sample RDMs, from its definition."""
    if compare == "corr":
        return float(np.corrcoef(d1, d2)[0, 1])
    if compare == "cosine":
        return float(d1 @ d2 / np.sqrt((d1 @ d1) * (d2 @ d2)))
    if compare == "spearman":
        return float(stats.spearmanr(d1, d2).statistic)
    if compare == "rho-a":  # average ranks about their mean, over a permutation's (N^3 - N) / 12
        m = len(d1)
        r1, r2 = stats.rankdata(d1) - (m + 1) / 2, stats.rankdata(d2) - (m + 1) / 2
        return float(r1 @ r2 / ((m**3 - m) / 12))
    if compare == "tau-b":
        return float(stats.kendalltau(d1, d2).statistic)
    if compare == "tau-a":  # concordant minus discordant over all ordered pairs of entries
        sign = np.sign(d1[:, None] - d1[None, :]) * np.sign(d2[:, None] - d2[None, :])
        return float(sign.sum() / (len(d1) * (len(d1) - 1)))
    return _whitened(d1, d2, n, compare)


def expected_replicates(x, y, rdm, groups, compares, noise=(None, None)) -> dict:
    """RSA recomputed on the samples outside each group, group by group."""
    n = len(x)
    bounds = group_bounds(n, groups)
    out = {c: [] for c in compares}
    for g in range(groups):
        keep = np.r_[0:bounds[g], bounds[g + 1]:n]
        d1 = reference_rdm(x[keep], rdm, noise[0])
        d2 = reference_rdm(y[keep], rdm, noise[1])
        for c in compares:
            out[c].append(reference_compare(d1, d2, len(keep), c))
    return out


@pytest.mark.parametrize("rdm", ["correlation", "euclidean", "mahalanobis"])
def test_replicates_equal_rsa_recomputed_without_each_group(rdm):
    """41 samples in 6 groups (bounds 0, 7, 14, 20, 27, 34, 41), every comparison, on one tile
    and on row blocks of 8 (a last block of one sample) and 13 samples, from chunks of 11."""
    x, y = _pair(41, 3)
    noise = (_precision(1, 6), _precision(2, 5)) if rdm == "mahalanobis" else None
    expected = expected_replicates(x, y, rdm, 6, ALL_COMPARES, noise or (None, None))
    lx = as_layer(da.from_array(x, chunks=(11, 6)))
    ly = as_layer(da.from_array(y, chunks=(11, 5)), name="y")
    for rows in (None, 8, 13):
        got = rsa_values(lx, ly, rdm=rdm, compares=ALL_COMPARES, noise=noise,
                         block_rows=rows, groups=6)
        for c in ALL_COMPARES:
            assert len(got["replicates"][c]) == 6
            np.testing.assert_allclose(got["replicates"][c], expected[c], rtol=0, atol=1e-10,
                                       err_msg=f"{c}, block_rows={rows}")


def test_rank_replicates_with_tied_dissimilarities():
    """Integer activations: many equal dissimilarities, so tau-b and rho-a differ from tau-a and
    spearman in every replicate, each as recomputed."""
    x, y = _pair(30, 4, integer=True)
    ranks = ("spearman", "rho-a", "tau-b", "tau-a")
    expected = expected_replicates(x, y, "euclidean", 4, ranks)
    assert len(np.unique(reference_rdm(x, "euclidean"))) < 200  # of 435 entries
    got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean", compares=ranks,
                     block_rows=9, groups=4)
    for c in ranks:
        np.testing.assert_allclose(got["replicates"][c], expected[c], rtol=0, atol=1e-10)
    assert np.all(np.abs(np.subtract(expected["tau-b"], expected["tau-a"])) > 1e-3)


def test_replicates_with_large_offsets_do_not_cancel():
    """Activations near 1e4 and many features: the euclidean dissimilarities' spread is small
    beside their mean, yet each replicate matches the recomputation."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(36, 300)) + 1e4
    y = x[:, :200] + 0.8 * rng.normal(size=(36, 200))
    compares = ("corr", "cosine", "corr_cov", "cosine_cov")
    expected = expected_replicates(x, y, "euclidean", 5, compares)
    for rows in (None, 7):
        got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean",
                         compares=compares, block_rows=rows, groups=5)
        for c in compares:
            np.testing.assert_allclose(got["replicates"][c], expected[c], rtol=0, atol=1e-10)


def test_replicates_without_an_outlying_sample_lose_no_precision():
    """Sample 5 a thousand times further out: its dissimilarities dominate every RDM's spread
    (squared distances a million times the others'), and leaving its group out leaves entries
    whose spread is about 1e-6 of the whole. Each replicate merges the cells outside the group
    (no subtraction from the total), so it still matches the recomputation."""
    x, y = _pair(40, 3)
    x[5] *= 1000.0
    y[5] *= 1000.0
    compares = ("corr", "cosine", "corr_cov", "cosine_cov", "spearman")
    expected = expected_replicates(x, y, "euclidean", 5, compares)
    d = reference_rdm(x, "euclidean")
    assert d.var() > 1e5 * reference_rdm(np.delete(x, 5, axis=0), "euclidean").var()
    for rows in (None, 9):
        got = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean",
                         compares=compares, block_rows=rows, groups=5)
        for c in compares:
            np.testing.assert_allclose(got["replicates"][c], expected[c], rtol=0, atol=1e-10)


def test_replicates_are_the_same_for_any_tiles_chunking_grid_and_null():
    """Row blocks of 16 or 32 samples or one tile, chunks of 37 samples, a permutation null in
    the same pass (its own row blocks), and a grid with other layers give the same replicates;
    the pairwise function and compare give the same interval."""
    n = 150
    x, y = _pair(n, 5)
    z = np.random.default_rng(6).normal(size=(n, 3))
    compares = ("corr", "cosine_cov", "spearman")
    runs = [rsa_values(as_layer(x), as_layer(y, name="y"), compares=compares, groups=9,
                       block_rows=rows) for rows in (None, 16, 32)]
    chunked = rsa_values(as_layer(da.from_array(x, chunks=(37, 6))),
                         as_layer(da.from_array(y, chunks=(37, 5)), name="y"),
                         compares=compares, block_rows=16, groups=9)
    with_null = rsa_values(as_layer(x), as_layer(y, name="y"), compares=compares, groups=9,
                           null=(5, 2))
    plain_null = rsa_values(as_layer(x), as_layer(y, name="y"), compares=compares, null=(5, 2))
    for other in [*runs[1:], chunked, with_null]:
        for c in compares:
            np.testing.assert_allclose(other["replicates"][c], runs[0]["replicates"][c],
                                       rtol=0, atol=1e-12)
            assert other[c] == pytest.approx(runs[0][c], abs=1e-12)
    for c in compares:  # asking for replicates changes no null
        np.testing.assert_allclose(with_null["null"][c], plain_null["null"][c], rtol=0,
                                   atol=1e-12)
    layers = [as_layer(a, name=name) for a, name in ((x, "x"), (z, "z"), (y, "y"))]
    functions = registry.path_functions("sample_blocks", ["rsa"], {"rdm_compare": "corr"})
    cells, _ = sample_cells(functions, layers, [0, 1], [2, 1, 0], ["rsa"], groups=9)
    np.testing.assert_allclose(cells[0, 0, 0].replicates, runs[0]["replicates"]["corr"],
                               rtol=0, atol=1e-12)
    one = dr.rsa(x, y, interval="jackknife", groups=9)
    grid = dr.compare({"x": x, "z": z}, {"y": y, "z2": z}, metrics=["rsa"],
                      interval="jackknife", groups=9)
    cell = grid.sel(layer_a="x", layer_b="y")
    for field, var in (("stderr", "rsa_stderr"), ("ci_low", "rsa_low"), ("ci_high", "rsa_high"),
                       ("ci_centre", "rsa_centre")):
        assert float(cell[var]) == pytest.approx(getattr(one, field), abs=1e-12)


@pytest.mark.parametrize("compare", ALL_COMPARES)
def test_interval_fields_of_every_comparison_with_permutations(compare):
    """dr.rsa with interval= and permutations= has both sets of fields; the interval is the
    jackknife's (Quenouille's bias-corrected centre, t quantile with G - 1 degrees of freedom)
    from the replicates recomputed on the samples outside each group."""
    x, y = _pair(60, 7)
    e = dr.rsa(x, y, rdm="euclidean", compare=compare, interval="jackknife", groups=5,
               level=0.9, permutations=19, seed=3)
    reps = np.array(expected_replicates(x, y, "euclidean", 5, (compare,))[compare])
    stderr = np.sqrt(4 / 5 * np.sum((reps - reps.mean()) ** 2))
    centre = 5 * float(e) - 4 * reps.mean()
    half = stats.t.ppf(0.95, 4) * stderr
    assert e.stderr == pytest.approx(stderr, abs=1e-10)
    assert e.ci_centre == pytest.approx(centre, abs=1e-10)
    assert (e.ci_low, e.ci_high) == pytest.approx((centre - half, centre + half), abs=1e-10)
    assert (e.n_groups, e.level) == (5, 0.9)
    assert 0 < e.pvalue <= 1 and len(e.null) == 19
    plain = dr.rsa(x, y, rdm="euclidean", compare=compare, permutations=19, seed=3)
    np.testing.assert_allclose(e.null, plain.null, rtol=0, atol=1e-12)


def test_mahalanobis_intervals_in_a_grid():
    """compare's rdm_noise with intervals: each cell's interval from its layers' precisions."""
    x, y = _pair(40, 9)
    px, py = _precision(3, 6), _precision(4, 5)
    grid = dr.compare({"x": x}, {"y": y}, metrics=["rsa"], rdm="mahalanobis",
                      rdm_compare="corr_cov", rdm_noise=({"x": px}, {"y": py}),
                      interval="jackknife", groups=4)
    reps = np.array(expected_replicates(x, y, "mahalanobis", 4, ("corr_cov",),
                                        (px, py))["corr_cov"])
    assert float(grid.rsa_stderr[0, 0]) == pytest.approx(
        np.sqrt(3 / 4 * np.sum((reps - reps.mean()) ** 2)), abs=1e-10)


def test_errors_of_rsa_jackknife():
    """More groups than samples, groups leaving fewer than 3 samples, and an RDM that is constant
    without one group: clear errors, never NaN."""
    x, y = _pair(20, 1)
    lx, ly = as_layer(x), as_layer(y, name="y")
    with pytest.raises(ValueError, match="more than the 20 samples"):
        rsa_values(lx, ly, groups=21)
    with pytest.raises(ValueError, match="leaves 2 samples .* RSA need at least 3: give "
                                         "groups=3 or more"):
        rsa_values(as_layer(x[:5]), as_layer(y[:5], name="y"), groups=2)
    with pytest.raises(ValueError, match="needs at least 4 samples"):
        rsa_values(as_layer(x[:3]), as_layer(y[:3], name="y"), groups=3)
    with pytest.raises(ValueError, match="leaves 2 samples"):
        dr.rsa(x[:4], y[:4], interval="jackknife", groups=2)
    assert len(rsa_values(as_layer(x[:4]), as_layer(y[:4], name="y"),
                          groups=4)["replicates"]["corr"]) == 4
    with dask.config.set({"repsim.memory-budget": "1MB"}), pytest.raises(
            ValueError, match=r"groups=150: .*150 x 150 tables.*beyond the memory budget"):
        rsa_values(as_layer(np.tile(x, (10, 1))), as_layer(np.tile(y, (10, 1)), name="y"),
                   groups=150)
    # the rank comparisons keep the tiles' entries while each replicate's are ranked: 72 bytes
    # an entry instead of 48, 3.2 MB for the 44,850 entries of 300 samples
    x3, y3 = _pair(300, 2)
    with dask.config.set({"repsim.memory-budget": "2.8MB"}):
        assert np.isfinite(rsa_values(as_layer(x3), as_layer(y3, name="y"),
                                      compares=("spearman",))["spearman"])
        with pytest.raises(ValueError, match=r"compare='spearman' ranks all 44,850"):
            rsa_values(as_layer(x3), as_layer(y3, name="y"), compares=("spearman",),
                       groups=20)
    # samples 3..5 of x are equidistant: without group 1 (samples 0..2) x's RDM is constant
    rng = np.random.default_rng(2)
    x6 = np.vstack([rng.normal(size=(3, 3)), np.eye(3)])
    y6 = rng.normal(size=(6, 2))
    for compare in ("corr", "spearman", "corr_cov"):
        with pytest.raises(ValueError, match=r"RDM of x without samples 0 to 2 \(jackknife "
                                             r"group 1 of 2\) has the same dissimilarity"):
            rsa_values(as_layer(x6), as_layer(y6, name="y"), rdm="euclidean",
                       compares=(compare,), groups=2)
    assert np.isfinite(rsa_values(as_layer(x6), as_layer(y6, name="y"), rdm="euclidean")["corr"])


W_COVERAGE = np.random.default_rng(123).normal(size=(8, 6)) / np.sqrt(8)


def _nonlinear(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """x Gaussian with 8 units, y = tanh(2 x W) + noise with 6."""
    x = rng.normal(size=(n, 8))
    return x, np.tanh(2 * x @ W_COVERAGE) + 0.5 * rng.normal(size=(n, 6))


@pytest.mark.large
def test_jackknife_intervals_cover_the_population_value():
    """200 samples of n = 200 from a nonlinear relation: 95% intervals (20 groups, centred as
    rsa's are, on the bias-corrected estimate) of "corr", "spearman" and "corr_cov" (euclidean
    RDMs) cover the population value, that of one sample of 5,000, as often as the binomial 99%
    range of 200 trials at 0.95 allows."""
    compares = ("corr", "spearman", "corr_cov")
    low, high = (int(v) for v in stats.binom.interval(0.99, 200, 0.95))
    corrected = registry.MEASURES["rsa"].bias_corrected
    with dask.config.set(scheduler="sync"):
        big = _nonlinear(np.random.default_rng(1000), 5000)
        truth = rsa_values(as_layer(big[0]), as_layer(big[1], name="y"), rdm="euclidean",
                           compares=compares)
        rng = np.random.default_rng(5)
        covered = dict.fromkeys(compares, 0)
        for _ in range(200):
            x, y = _nonlinear(rng, 200)
            found = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean",
                               compares=compares, groups=20)
            for c in compares:
                _, _, lo, hi = jackknife_interval(found[c], np.array(found["replicates"][c]),
                                                  0.95, corrected)
                covered[c] += int(lo <= truth[c] <= hi)
    for c in compares:
        assert low <= covered[c] <= high, (c, covered[c], (low, high))
