"""Gram, tiled and minibatch CKA against float64 references written here from the papers
(Kornblith et al. 2019 ``gram_linear``/``gram_rbf``/``center_gram``; Song et al. 2012's unbiased
HSIC), and the SVCCA tutorial value of RBF CKA."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from dask_repsim import kernels
from dask_repsim.inputs import as_layer

DATA = Path("/work/shared/data/svcca_tutorial")
if not DATA.exists():  # the repository's own copy, when the shared folder is not mounted
    DATA = Path(__file__).resolve().parents[1] / "shared" / "data" / "svcca_tutorial"

# ------------------------------------------------------------------------ references (numpy)


def gram_linear(x):
    return x @ x.T


def gram_rbf(x, threshold):
    """Kornblith et al.'s ``gram_rbf``: the median over all n^2 squared distances."""
    dot = x @ x.T
    sq = np.diag(dot)
    d2 = -2 * dot + sq[:, None] + sq[None, :]
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2))), np.median(d2)


def hsic_biased(k, g):
    """tr(K H L H) with H = I - 11^T / n: ``center_gram`` (H K H removes K's row and column
    means and adds back its grand mean), then the Frobenius product with L."""
    means = k.mean(axis=0)
    centred = k - means[None, :] - means[:, None] + means.mean()
    return float(np.sum(centred * g))


def hsic_unbiased(k, g):
    """Song et al. (2012), eq. (5)."""
    n = len(k)
    k, g = k.copy(), g.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(g, 0)
    k1, g1 = k.sum(axis=1), g.sum(axis=1)  # K~ 1, L~ 1
    # tr(K~ L~) = sum K~ * L~ (symmetric); 1' K~ L~ 1 = (K~ 1) . (L~ 1)
    value = np.sum(k * g) + k1.sum() * g1.sum() / ((n - 1) * (n - 2))
    value -= 2 / (n - 2) * (k1 @ g1)
    return float(value / (n * (n - 3)))


def cka_ref(k, g, debiased=False):
    hsic = hsic_unbiased if debiased else hsic_biased
    return hsic(k, g) / np.sqrt(hsic(k, k) * hsic(g, g))


def _centre(a):
    return a - a.mean(axis=0)


def _layers(x, y, rows=None):
    if rows is not None:
        x, y = da.from_array(x, chunks=(rows, -1)), da.from_array(y, chunks=(rows, -1))
    return as_layer(x, name="x"), as_layer(y, name="y")


def _correlated(n, p, q, seed=0, latent=8, offset=0.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, latent))
    x = z @ rng.normal(size=(latent, p)) + rng.normal(size=(n, p)) + offset
    y = np.maximum(z @ rng.normal(size=(latent, q)) + 2 * rng.normal(size=(n, q)), 0) + offset
    return x, y


# ---------------------------------------------------------------------------- exact paths


def test_rbf_cka_svcca_tutorial_value():
    expected = json.loads((DATA / "expected.json").read_text())["svhn"]["rbf_cka_0.5"]
    x = np.load(DATA / "svhn_model0_fc.npy")
    y = np.load(DATA / "svhn_model1_fc.npy")
    result = kernels.rbf_cka(*_layers(x, y), sigma=0.5, block_rows=300)
    assert float(result) == pytest.approx(expected, abs=1e-6)
    assert result.median_exact and result.method == "gram"


@pytest.fixture(scope="module")
def wide_pair():
    """2,500 samples x 6,000 / 5,000 features (float32 storage) and reference CKA values."""
    x, y = _correlated(2500, 6000, 5000, seed=1, latent=30, offset=2.0)
    x, y = x.astype(np.float32), y.astype(np.float32)
    xc, yc = _centre(x.astype(np.float64)), _centre(y.astype(np.float64))
    k, g = gram_linear(xc), gram_linear(yc)
    return x, y, {False: cka_ref(k, g), True: cka_ref(k, g, debiased=True)}


@pytest.mark.slow
@pytest.mark.parametrize("debiased", [False, True])
def test_wide_linear_cka_gram_and_tiled(wide_pair, debiased):
    x, y, ref = wide_pair
    lx, ly = _layers(x, y, rows=1000)
    assert kernels.gram_cka(lx, ly, debiased=debiased, block_rows=900) == pytest.approx(
        ref[debiased], abs=1e-6
    )
    assert kernels.tiled_cka(lx, ly, debiased=debiased, tile=2048) == pytest.approx(
        ref[debiased], abs=1e-6
    )


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_gram_and_tiled_small(debiased):
    x, y = _correlated(700, 90, 70, seed=2, offset=1e3)  # large means: centring matters
    k, g = gram_linear(_centre(x)), gram_linear(_centre(y))
    ref = cka_ref(k, g, debiased)
    lx, ly = _layers(x, y, rows=160)
    assert kernels.gram_cka(lx, ly, debiased=debiased, block_rows=200) == pytest.approx(
        ref, abs=1e-9
    )
    assert kernels.tiled_cka(lx, ly, debiased=debiased, tile=32, chunk_rows=150) == pytest.approx(
        ref, abs=1e-9
    )
    # 5 row chunks in groups of 2: partial tile sums added in a tree before the norm
    tree = kernels.tiled_cka(lx, ly, debiased=debiased, tile=32, chunk_rows=150, split_every=2)
    assert tree == pytest.approx(ref, abs=1e-9)


@pytest.fixture(scope="module")
def rbf_pair():
    return _correlated(3000, 20, 30, seed=3, latent=5)


@pytest.mark.parametrize("sigma", [0.5, 0.8])
def test_rbf_cka_matches_numpy(rbf_pair, sigma):
    x, y = rbf_pair
    k, med_x = gram_rbf(x, sigma)
    g, med_y = gram_rbf(y, sigma)
    lx, ly = _layers(x, y, rows=1100)
    result = kernels.rbf_cka(lx, ly, sigma=sigma, block_rows=700)
    assert float(result) == pytest.approx(cka_ref(k, g), abs=1e-6)
    np.testing.assert_allclose(result.median, (med_x, med_y), rtol=1e-10)
    assert result.median_exact
    debiased = kernels.rbf_cka(lx, ly, sigma=sigma, debiased=True, block_rows=700)
    assert float(debiased) == pytest.approx(cka_ref(k, g, debiased=True), abs=1e-6)


@pytest.mark.parametrize("n", [201, 240])  # n^2 odd: one middle value; even: the mean of two
def test_exact_median_with_ties(n):
    rng = np.random.default_rng(n)
    x = rng.integers(0, 3, size=(n, 2)).astype(float)  # few distinct distances: many ties
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    layer = as_layer(x)
    # equal up to the rounding of distances computed from centred coordinates
    assert kernels.exact_median_sq_distance(layer, block_rows=50) == pytest.approx(
        np.median(d2), rel=1e-12
    )
    y = rng.normal(size=(n, 3))
    d2 = ((y[:, None] - y[None]) ** 2).sum(-1)
    got = kernels.exact_median_sq_distance(as_layer(y), block_rows=64)
    assert got == pytest.approx(np.median(d2), rel=1e-12)


def test_rbf_cka_sampled_median_beyond_threshold(rbf_pair):
    x, y = rbf_pair
    k, med_x = gram_rbf(x, 0.8)
    g, med_y = gram_rbf(y, 0.8)
    lx, ly = _layers(x, y)
    result = kernels.rbf_cka(lx, ly, median_exact_max=1000, median_sample=800, seed=4)
    assert not result.median_exact
    np.testing.assert_allclose(result.median, (med_x, med_y), rtol=0.05)
    assert result.median != pytest.approx((med_x, med_y), rel=1e-8)  # really a subsample
    # the bandwidth is a little off, the kernel CKA a little more so
    assert float(result) == pytest.approx(cka_ref(k, g), abs=0.01)
    again = kernels.rbf_cka(lx, ly, median_exact_max=1000, median_sample=800, seed=4)
    assert float(again) == float(result)


def test_errors():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="different numbers of samples"):
        kernels.gram_cka(as_layer(x), as_layer(x[:9], name="y"))
    with pytest.raises(ValueError, match="no variance"):
        kernels.tiled_cka(as_layer(x), as_layer(np.ones((10, 2)), name="y"))
    with pytest.raises(ValueError, match="at least 4 samples"):
        kernels.gram_cka(as_layer(x[:3]), as_layer(x[:3], name="y"), debiased=True)
    with pytest.raises(ValueError, match="batch_size"):
        kernels.minibatch_cka(as_layer(x), as_layer(x, name="y"), batch_size=3)
    with pytest.raises(ValueError, match="kernel"):
        kernels.minibatch_cka(as_layer(x), as_layer(x, name="y"), batch_size=5, kernel="poly")


# ------------------------------------------------------------------------------ minibatch


def _population(n, seed):
    """x ~ N(0, diag(sx^2)), y = x W + noise: population linear CKA is known in closed form."""
    rng = np.random.default_rng(1234)  # the population is the same for every seed
    p, q = 12, 8
    sx = np.linspace(0.5, 2.0, p)
    w = rng.normal(size=(p, q)) / np.sqrt(p)
    noise = 0.8
    cxx = np.diag(sx**2)
    cxy = cxx @ w
    cyy = w.T @ cxx @ w + noise**2 * np.eye(q)
    population = np.sum(cxy**2) / np.sqrt(np.sum(cxx**2) * np.sum(cyy**2))
    data = np.random.default_rng(seed)
    x = data.normal(size=(n, p)) * sx
    y = x @ w + noise * data.normal(size=(n, q))
    return x, y, population


def test_minibatch_linear_close_to_exact_at_60000():
    x, y, _ = _population(60_000, seed=0)
    xc, yc = _centre(x), _centre(y)
    # feature-space linear CKA (Kornblith et al. 2019, eq. 6) of the whole data
    exact = np.sum((xc.T @ yc) ** 2) / np.sqrt(np.sum((xc.T @ xc) ** 2) * np.sum((yc.T @ yc) ** 2))
    r = kernels.minibatch_cka(*_layers(x, y, rows=7000), batch_size=1000, seed=1)
    assert r.approximate and r.n_batches == 60 and r.kernel == "linear"
    assert abs(float(r) - exact) < 0.02
    assert r.ci_low <= float(r) <= r.ci_high
    assert 0 < r.ci_high - r.ci_low < 0.05
    # the estimate is the ratio of the mean per-batch unbiased HSICs, checked on one batch
    order = np.random.default_rng(1).permutation(60_000)
    first = np.sort(np.array_split(order, 60)[0])
    kb, gb = gram_linear(x[first]), gram_linear(y[first])
    np.testing.assert_allclose(
        r.hsic[0], [hsic_unbiased(kb, gb), hsic_unbiased(kb, kb), hsic_unbiased(gb, gb)],
        rtol=1e-9,
    )
    m = r.hsic.mean(axis=0)
    assert float(r) == pytest.approx(m[0] / np.sqrt(m[1] * m[2]), rel=1e-12)


def test_minibatch_rbf_close_to_exact():
    x, y = _correlated(4000, 10, 12, seed=5, latent=4)
    exact = float(kernels.rbf_cka(*_layers(x, y), sigma=0.8))
    r = kernels.minibatch_cka(*_layers(x, y), kernel="rbf", sigma=0.8, batch_size=400, seed=2)
    assert r.kernel == "rbf" and r.n_batches == 10
    assert abs(float(r) - exact) < 0.02
    assert r.ci_low <= float(r) <= r.ci_high


def test_minibatch_contiguous_batches():
    x, y, _ = _population(2000, seed=3)
    r = kernels.minibatch_cka(*_layers(x, y, rows=300), batch_size=300, shuffle=False)
    assert r.n_batches == 6  # 2000 // 300, sizes 334 or 333: every sample used
    blocks = np.array_split(np.arange(2000), 6)
    b = blocks[2]
    kb, gb = gram_linear(x[b]), gram_linear(y[b])
    assert r.hsic[2, 0] == pytest.approx(hsic_unbiased(kb, gb), rel=1e-9)


def _coverage(seeds, n, batch_size):
    hits = 0
    for seed in seeds:
        x, y, population = _population(n, seed)
        r = kernels.minibatch_cka(*_layers(x, y), batch_size=batch_size, seed=seed, n_boot=500)
        hits += r.ci_low <= population <= r.ci_high
    return hits / len(seeds)


@pytest.mark.slow
def test_minibatch_interval_coverage():
    assert _coverage(range(40), n=8000, batch_size=200) >= 0.85
