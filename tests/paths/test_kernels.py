"""Gram, tiled and minibatch CKA against float64 references written here from the papers
(Kornblith et al. 2019 ``gram_linear``/``gram_rbf``/``center_gram``; Song et al. 2012's unbiased
HSIC), and the SVCCA tutorial value of RBF CKA; the column statistics they are centred and checked
with, and the errors every kernel path raises for the same bad input.

The gram path is the sample-space tiles that grids share (:mod:`dask_repsim.paths.gram`); a pair
is a grid of one cell there, whether it comes from ``dr.cka`` or ``dr.compare``."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

import dask_repsim as dr
from dask_repsim.engine import medians
from dask_repsim.engine.columns import checked_columns, column_statistics
from dask_repsim.exceptions import NonFiniteError, NoVarianceError, SampleCountError
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths import minibatch
from dask_repsim.paths import tiled as tiles
from dask_repsim.paths.gram import samplespace, scratch
from dask_repsim.results import Estimate

DATA = Path("/work/shared/data/svcca_tutorial")
if not DATA.exists():  # the repository's own copy, when the shared folder is not mounted
    DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "svcca_tutorial"

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


def _cell(spec, x, y, block_rows=None, seed=0):
    """The one cell of layers x and y on the gram path's shared tiles, as an Estimate;
    ``block_rows``: samples per row block (default: the whole Gram matrices when they fit)."""
    cells, _ = samplespace.gram_cells([spec], [x, y], [0], [1], seed=seed, block_rows=block_rows)
    return Estimate(cells[0, 0, 0].value, **cells[0, 0, 0].fields)


def gram_cka(x, y, debiased=False, block_rows=None):
    return float(_cell({"debiased": debiased}, x, y, block_rows))


def rbf_cka(x, y, sigma=0.8, debiased=False, block_rows=None):
    return _cell({"kernel": "rbf", "sigma": sigma, "debiased": debiased}, x, y, block_rows)


def tiled_cka(x, y, debiased=False, **options):
    return tiles.cka_values(x, y, (debiased,), **options)[0]


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
    result = dr.cka(x, y, kernel="rbf", sigma=0.5)
    assert float(result) == pytest.approx(expected, abs=1e-6)
    assert result.median_exact and result.method == "gram" and result.sigma == 0.5
    tiled = rbf_cka(*_layers(x, y), sigma=0.5, block_rows=300)  # row-block tiles
    assert float(tiled) == pytest.approx(expected, abs=1e-6)
    assert tiled.median == pytest.approx(result.median, rel=1e-12)


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
    assert gram_cka(lx, ly, debiased, block_rows=900) == pytest.approx(
        ref[debiased], abs=1e-6
    )
    assert tiled_cka(lx, ly, debiased, tile=2048) == pytest.approx(
        ref[debiased], abs=1e-6
    )


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_gram_and_tiled_small(debiased):
    x, y = _correlated(700, 90, 70, seed=2, offset=1e3)  # large means: centring matters
    k, g = gram_linear(_centre(x)), gram_linear(_centre(y))
    ref = cka_ref(k, g, debiased)
    lx, ly = _layers(x, y, rows=160)
    assert gram_cka(lx, ly, debiased, block_rows=200) == pytest.approx(
        ref, abs=1e-9
    )
    assert tiled_cka(lx, ly, debiased, tile=32, chunk_rows=150) == pytest.approx(
        ref, abs=1e-9
    )
    # 5 row chunks in groups of 2: partial tile sums added in a tree before the norm
    tree = tiled_cka(lx, ly, debiased, tile=32, chunk_rows=150, split_every=2)
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
    for block_rows in (700, None):  # row-block tiles (5 x 5), one tile of all samples
        result = rbf_cka(lx, ly, sigma=sigma, block_rows=block_rows)
        assert float(result) == pytest.approx(cka_ref(k, g), abs=1e-6)
        np.testing.assert_allclose(result.median, (med_x, med_y), rtol=1e-10)
        assert result.median_exact and result.approximate is None and result.sigma == sigma
        debiased = rbf_cka(lx, ly, sigma=sigma, debiased=True, block_rows=block_rows)
        assert float(debiased) == pytest.approx(cka_ref(k, g, debiased=True), abs=1e-6)


@pytest.mark.parametrize("gather", [scratch.GATHER, 2**6])  # one narrowing pass, or several
@pytest.mark.parametrize("block_rows", [None, 50])  # tiles off the diagonal count twice
@pytest.mark.parametrize("n", [201, 240])  # n^2 odd: one middle value; even: the mean of two
def test_exact_median_with_ties(monkeypatch, n, block_rows, gather):
    monkeypatch.setattr(medians, "GATHER", gather)  # the order statistics are the engine's
    rng = np.random.default_rng(n)
    x = rng.integers(0, 3, size=(n, 2)).astype(float)  # few distinct distances: many ties
    y = rng.normal(size=(n, 3))
    result = rbf_cka(*_layers(x, y), block_rows=block_rows)
    # equal up to the rounding of distances computed from shifted coordinates
    for got, data in zip(result.median, (x, y), strict=True):
        d2 = ((data[:, None] - data[None]) ** 2).sum(-1)
        assert got == pytest.approx(np.median(d2), rel=1e-12)


def test_rbf_cka_sampled_median_beyond_threshold(rbf_pair, monkeypatch):
    monkeypatch.setattr(samplespace, "MEDIAN_EXACT_MAX", 1000)
    monkeypatch.setattr(samplespace, "MEDIAN_SAMPLE", 800)
    x, y = rbf_pair
    k, med_x = gram_rbf(x, 0.8)
    g, med_y = gram_rbf(y, 0.8)
    result = dr.cka(x, y, kernel="rbf", seed=4)
    assert not result.median_exact and result.method == "gram"
    assert result.approximate == ("RBF bandwidths from the median squared distance among a "
                                  "seeded random subset of 800 samples (n > 1000)")
    # the median over the subset drawn with the seed, as gram_rbf would take it
    subset = np.sort(np.random.default_rng(4).choice(3000, size=800, replace=False))
    np.testing.assert_allclose(result.median, (gram_rbf(x[subset], 1)[1],
                                               gram_rbf(y[subset], 1)[1]), rtol=1e-10)
    np.testing.assert_allclose(result.median, (med_x, med_y), rtol=0.05)
    assert result.median != pytest.approx((med_x, med_y), rel=1e-8)  # really a subsample
    # the bandwidth is a little off, the kernel CKA a little more so
    assert float(result) == pytest.approx(cka_ref(k, g), abs=0.01)
    again = dr.cka(x, y, kernel="rbf", seed=4)
    assert float(again) == float(result) and again.median == result.median
    assert dr.cka(x, y, kernel="rbf", seed=5).median != result.median


def _grid_medians(ds):
    return tuple(float(v.split(": ")[1]) for v in ds.attrs["median_sq_distance"].split("; "))


@pytest.mark.parametrize("budget", [None, "2MiB"])  # whole Gram matrices, row-block tiles
def test_pairwise_and_grid_are_one_computation(budget):
    """``dr.cka`` of a pair and ``dr.compare``'s cell for it run the same tiles: RBF CKA and
    its medians (exact or from the same seeded subsample) and gram linear CKA are equal to
    the last bit."""
    x, y = _correlated(600, 40, 25, seed=12, latent=5, offset=3.0)
    with dask.config.set({"repsim.memory-budget": budget}):
        ds = dr.compare({"x": x}, {"y": y}, metrics=["cka", "cka_debiased", "cka_rbf"],
                        sigma=[0.4, 0.8], method="gram")
        assert (ds.attrs["n_tiles"] > 1) == (budget is not None)
        for sigma in (0.4, 0.8):
            pair = dr.cka(x, y, kernel="rbf", sigma=sigma)
            assert float(pair) == float(ds[f"cka_rbf_{sigma:g}"].squeeze())
            assert pair.median == _grid_medians(ds) and pair.median_exact
            assert (pair.method, pair.sigma, pair.approximate) == ("gram", sigma, None)
        for metric, debiased in (("cka", False), ("cka_debiased", True)):
            pair = dr.cka(x, y, method="gram", debiased=debiased)
            assert float(pair) == float(ds[metric].squeeze()) and pair.method == "gram"


def test_pairwise_and_grid_share_the_subsampled_medians(monkeypatch):
    monkeypatch.setattr(samplespace, "MEDIAN_EXACT_MAX", 300)
    monkeypatch.setattr(samplespace, "MEDIAN_SAMPLE", 200)
    x, y = _correlated(400, 8, 6, seed=13, latent=3)
    for seed in (0, 3):
        ds = dr.compare({"x": x}, {"y": y}, metrics=["cka_rbf"], seed=seed)
        pair = dr.cka(x, y, kernel="rbf", seed=seed)
        assert float(pair) == float(ds.cka_rbf.squeeze())
        assert pair.median == _grid_medians(ds) and not pair.median_exact
        assert ds.attrs["median_exact"] == 0 and "200 samples (n > 300)" in pair.approximate


def test_pairwise_rbf_runs_on_the_shared_tiles(monkeypatch):
    """``dr.cka(kernel="rbf")`` is the grid code: its Gram tiles, the exact medians (of each
    whole matrix's distances in memory; over the scratch tiles with row blocks), and the
    kernel sums from them, once each."""
    calls = Counter()

    def counted(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("grid_sums", "_rbf_grid", "saved_sums", "_linear_parts"):
        counted(samplespace, name)
    counted(scratch, "medians")
    counted(scratch, "whole_median")
    x, y = _correlated(300, 7, 5, seed=14, latent=3)
    for debiased in (False, True):
        calls.clear()
        result = dr.cka(x, y, kernel="rbf", sigma=0.5, debiased=debiased)
        # one pass over the saved whole Gram matrices (300 samples: one row block), one over
        # the saved distances for the kernels; each layer's median where its matrix is formed
        assert calls == {"grid_sums": 1, "_linear_parts": 1, "whole_median": 2,
                         "_rbf_grid": 1, "saved_sums": 2}
        k, g = gram_rbf(x, 0.5)[0], gram_rbf(y, 0.5)[0]
        assert float(result) == pytest.approx(cka_ref(k, g, debiased), abs=1e-12)
        calls.clear()
        with dask.config.set({"repsim.memory-budget": 4 * 2**20}):  # row-block tiles
            tiled = dr.cka(x, y, kernel="rbf", sigma=0.5, debiased=debiased)
        # the medians narrowed over the scratch tiles of all layers at once: the same values
        assert calls == {"grid_sums": 1, "_linear_parts": 1, "medians": 1, "_rbf_grid": 1,
                         "saved_sums": 1}
        assert tiled.median == result.median
        assert float(tiled) == pytest.approx(float(result), abs=1e-14)
        k, g = gram_rbf(x, 0.5)[0], gram_rbf(y, 0.5)[0]
        assert float(result) == pytest.approx(cka_ref(k, g, debiased), abs=1e-12)


def test_option_errors():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(SampleCountError, match="debiased CKA needs at least 4 samples, got 3"):
        gram_cka(as_layer(x[:3]), as_layer(x[:3], name="y"), debiased=True)
    with pytest.raises(SampleCountError, match="debiased CKA needs at least 4 samples, got 3"):
        tiled_cka(as_layer(x[:3]), as_layer(x[:3], name="y"), debiased=True)
    with pytest.raises(SampleCountError, match="debiased CKA needs at least 4 samples, got 3"):
        dr.cka(x[:3], x[:3] ** 2, kernel="rbf", debiased=True)
    with pytest.raises(ValueError, match=r"sigma must be > 0 and finite \(a fraction of the "
                       r"median distance\), not 0"):
        dr.cka(x, x ** 2, kernel="rbf", sigma=0)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch.minibatch_cka(as_layer(x), as_layer(x, name="y"), batch_size=3)
    with pytest.raises(ValueError, match="batch_size 11 exceeds the 10 samples"):
        minibatch.minibatch_cka(as_layer(x), as_layer(x, name="y"), batch_size=11)
    with pytest.raises(ValueError, match="kernel"):
        minibatch.minibatch_cka(as_layer(x), as_layer(x, name="y"), batch_size=5, kernel="poly")


# ------------------------------------------------------------- the same errors on every path

PATHS = {
    "gram": lambda x, y: gram_cka(x, y, block_rows=16),
    "gram_debiased": lambda x, y: gram_cka(x, y, True, block_rows=16),
    "tiled": lambda x, y: tiled_cka(x, y, tile=2, chunk_rows=16),
    "tiled_debiased": lambda x, y: tiled_cka(x, y, True, tile=2, chunk_rows=16),
    "rbf": lambda x, y: rbf_cka(x, y, block_rows=16),
    "rbf_debiased": lambda x, y: rbf_cka(x, y, debiased=True),
    "minibatch": lambda x, y: minibatch.minibatch_cka(x, y, batch_size=10),
    "minibatch_rbf": lambda x, y: minibatch.minibatch_cka(x, y, kernel="rbf", batch_size=10),
}


def _bad_pair(kind):
    """40 x 5 and 40 x 4 activations in row chunks of 16, spoiled as ``kind`` says."""
    x, y = _correlated(40, 5, 4, seed=6, latent=3)
    names = ("conv1", "fc2")
    if kind == "nan":
        x[21, 3] = np.nan  # in the second chunk: the sample number is global
    elif kind == "inf":
        y[33, 0] = -np.inf
    elif kind == "both":
        x[30, 1], y[5, 2] = np.nan, np.inf  # the earlier sample is reported
    elif kind == "constant":
        y[:] = 1e9 + np.arange(4)  # constant units, large means
    elif kind == "counts":
        y = y[:39]
    lx = as_layer(da.from_array(x, chunks=(16, -1)), name=names[0])
    ly = as_layer(da.from_array(y, chunks=(16, -1)), name=names[1])
    return lx, ly


BAD = {
    "nan": (NonFiniteError, "conv1 has NaN at sample 21 (the first non-finite sample)"),
    "inf": (NonFiniteError, "fc2 has Inf at sample 33 (the first non-finite sample)"),
    "both": (NonFiniteError, "fc2 has Inf at sample 5 "),
    "constant": (NoVarianceError, "fc2 has no variance: all 4 units are constant over the 40"),
    "counts": (SampleCountError, "different numbers of samples: conv1 has 40, fc2 has 39"),
}


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("path", list(PATHS))
def test_bad_input_gives_the_same_error_on_every_path(path, kind):
    error, message = BAD[kind]
    with pytest.raises(error, match=re.escape(message)):
        PATHS[path](*_bad_pair(kind))


def test_bad_input_errors_name_pairwise_inputs_x_and_y():
    x, y = _correlated(40, 5, 4, seed=6, latent=3)
    x[7, 0] = np.nan
    for path in PATHS.values():
        with pytest.raises(NonFiniteError, match="^x has NaN at sample 7 "):
            path(*_layers(x, y))
    with pytest.raises(NoVarianceError, match="^y has no variance"):
        gram_cka(*_layers(x[:, 1:], np.zeros((40, 3))))


@pytest.mark.parametrize("path", ["gram", "tiled"])
def test_undefined_debiased_value_raises_the_debiased_cka_error(path):
    """A layer that varies in one sample has an unbiased self-HSIC of exactly zero: undefined
    debiased CKA, whatever sign rounding gives it."""
    for n in (5, 12, 100):
        x = np.zeros((n, 2))
        x[0] = [1.0, -2.0]
        y = np.random.default_rng(n).normal(size=(n, 3))
        with pytest.raises(ValueError, match=(
            rf"^the unbiased HSIC of x with itself is \S+ <= 0 at n={n}, so debiased CKA is "
            r"undefined here \(too few samples, or a layer that varies in only one or two "
            r"samples\); use debiased=False or more samples$"
        )):
            PATHS[f"{path}_debiased"](*_layers(x, y))
        assert PATHS[path](*_layers(x, y)) == pytest.approx(
            cka_ref(gram_linear(_centre(x)), gram_linear(_centre(y))), abs=1e-12
        )


# -------------------------------------------- values that must not change with the input's form


def test_an_all_zero_unit_changes_no_exact_value():
    x, y = _correlated(300, 12, 9, seed=7, latent=4)
    padded = np.hstack([x[:, :5], np.zeros((300, 1)), x[:, 5:]])
    for debiased in (False, True):
        expected = gram_cka(*_layers(x, y), debiased)
        assert gram_cka(*_layers(padded, y), debiased) == pytest.approx(expected, abs=1e-9)
        got = tiled_cka(*_layers(padded, y), debiased, tile=4)
        assert got == pytest.approx(expected, abs=1e-9)
        rbf = dr.cka(padded, y, kernel="rbf", debiased=debiased)
        assert rbf == pytest.approx(dr.cka(x, y, kernel="rbf", debiased=debiased), abs=1e-9)


def test_activations_offset_by_1e9_give_the_reference_values():
    """Units of unit variance around 1e9: not constant, and centred before any Gram block, so
    the values are those of numpy's centred data (E[x^2] - E[x]^2 would lose every digit)."""
    x, y = _correlated(400, 15, 10, seed=8, latent=4)
    xo, yo = x + 1e9, y + 1e9
    xc, yc = _centre(xo), _centre(yo)
    k, g = gram_linear(xc), gram_linear(yc)
    layers = _layers(xo, yo, rows=96)
    for debiased in (False, True):
        ref = cka_ref(k, g, debiased)
        assert gram_cka(*layers, debiased, block_rows=128) == pytest.approx(ref, abs=1e-6)
        assert tiled_cka(*layers, debiased, tile=4) == pytest.approx(ref, abs=1e-6)
        kr, _ = gram_rbf(xc, 0.8)
        gr, _ = gram_rbf(yc, 0.8)
        rbf = rbf_cka(*layers, debiased=debiased, block_rows=128)
        assert rbf == pytest.approx(cka_ref(kr, gr, debiased), abs=1e-6)
    for kernel in ("linear", "rbf"):
        plain = minibatch.minibatch_cka(*_layers(x, y), kernel=kernel, batch_size=50, seed=1)
        offset = minibatch.minibatch_cka(*layers, kernel=kernel, batch_size=50, seed=1)
        assert offset == pytest.approx(plain, abs=1e-6)


# ------------------------------------------------------------------------ column statistics


class _CountingArray:
    """An array whose reads are counted, chunk by chunk."""

    def __init__(self, values):
        self.values = values
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim
        self.reads = Counter()

    def __getitem__(self, key):
        out = self.values[key]
        if out.size:
            self.reads[tuple((k.start, k.stop) for k in key)] += 1
        return out


def test_column_statistics_equal_numpy_and_read_each_chunk_once():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(203, 7)) * np.arange(1, 8) + 1e9 * (np.arange(7) % 2)
    b = rng.gamma(2.0, size=(203, 5)).astype(np.float32)
    b[150, 2] = np.nan
    ca, cb = _CountingArray(a), _CountingArray(b)
    la = as_layer(da.from_array(ca, chunks=((40, 40, 40, 40, 43), (3, 4))), name="a")
    lb = as_layer(da.from_array(cb, chunks=(29, 2)), name="b")
    ca.reads.clear(), cb.reads.clear()
    sa, sb = column_statistics([la, lb])
    assert (sa.name, sa.count, sa.first_nonfinite) == ("a", 203, -1)
    np.testing.assert_allclose(sa.mean, a.mean(axis=0), rtol=1e-15)
    centred_sq = ((a - a.mean(axis=0)) ** 2).sum(axis=0)  # numpy's two passes: near exact
    np.testing.assert_allclose(sa.sum_sq[::2], centred_sq[::2], rtol=1e-13)
    # Units around 1e9: the chunk means are float64 with spacing 1.2e-7, which the pairwise
    # update carries into sum_sq (about 1e-8 relative here); E[x^2] - E[x]^2 would be off by
    # the spacing of 1e18 x 203, more than sum_sq itself.
    np.testing.assert_allclose(sa.sum_sq[1::2], centred_sq[1::2], rtol=1e-7)
    b64 = b.astype(np.float64)
    ok = [0, 1, 3, 4]  # the units without the NaN
    np.testing.assert_allclose(sb.mean[ok], b64.mean(axis=0)[ok], rtol=1e-14)
    np.testing.assert_allclose(
        sb.sum_sq[ok], ((b64 - b64.mean(axis=0)) ** 2).sum(axis=0)[ok], rtol=1e-12
    )
    assert (sb.first_nonfinite, sb.nonfinite_is_nan) == (150, True)
    assert len(ca.reads) == 10 and set(ca.reads.values()) == {1}
    assert len(cb.reads) == 7 * 3 and set(cb.reads.values()) == {1}


def test_given_means_skip_the_feature_tiles_column_pass():
    x, y = _correlated(200, 6, 5, seed=10, latent=3)
    cx, cy = _CountingArray(x), _CountingArray(y)
    lx = as_layer(da.from_array(cx, chunks=(50, -1)), name="x")
    ly = as_layer(da.from_array(cy, chunks=(50, -1)), name="y")
    cx.reads.clear()
    means = tuple(c.mean for c in checked_columns([lx, ly]))
    assert sum(cx.reads.values()) == 4
    expected = gram_linear(_centre(x)), gram_linear(_centre(y))
    cx.reads.clear()
    got = tiles.cka_values(lx, ly, (False, True), means=means)
    np.testing.assert_allclose(
        got, [cka_ref(*expected), cka_ref(*expected, debiased=True)], atol=1e-12
    )
    assert set(cx.reads.values()) == {1}  # one pass: no column statistics again
    cx.reads.clear()
    assert tiles.cka_values(lx, ly, (False,)) == pytest.approx(got[:1], abs=1e-15)
    assert set(cx.reads.values()) == {2}  # checked, then the pass


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_gram_tiles_need_no_column_pass(kernel):
    """The Gram tiles shift the rows by their first chunk's means and centre exactly from the
    row sums: with every Gram matrix whole, each chunk is read once (the medians and kernels
    of RBF CKA from the scratch distances), and the values are those of centred data."""
    x, y = _correlated(200, 6, 5, seed=10, latent=3, offset=50.0)
    cx, cy = _CountingArray(x), _CountingArray(y)
    lx = as_layer(da.from_array(cx, chunks=(50, -1)), name="x")
    ly = as_layer(da.from_array(cy, chunks=(50, -1)), name="y")
    cx.reads.clear(), cy.reads.clear()
    if kernel == "linear":
        k, g = gram_linear(_centre(x)), gram_linear(_centre(y))
        got = [gram_cka(lx, ly, debiased) for debiased in (False, True)]
    else:
        (k, _), (g, _) = gram_rbf(_centre(x), 0.8), gram_rbf(_centre(y), 0.8)
        got = [float(rbf_cka(lx, ly, debiased=debiased)) for debiased in (False, True)]
    np.testing.assert_allclose(got, [cka_ref(k, g), cka_ref(k, g, debiased=True)], atol=1e-12)
    for counted in (cx, cy):
        assert len(counted.reads) == 4 and set(counted.reads.values()) == {2}  # two calls


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
    r = minibatch.minibatch_cka(*_layers(x, y, rows=7000), batch_size=1000, seed=1)
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
    exact = float(dr.cka(x, y, kernel="rbf", sigma=0.8))
    r = minibatch.minibatch_cka(*_layers(x, y), kernel="rbf", sigma=0.8, batch_size=400, seed=2)
    assert r.kernel == "rbf" and r.n_batches == 10
    assert abs(float(r) - exact) < 0.02
    assert r.ci_low <= float(r) <= r.ci_high


def test_minibatch_contiguous_batches():
    x, y, _ = _population(2000, seed=3)
    r = minibatch.minibatch_cka(*_layers(x, y, rows=300), batch_size=300, shuffle=False)
    assert r.n_batches == 6  # 2000 // 300, sizes 334 or 333: every sample used
    blocks = np.array_split(np.arange(2000), 6)
    b = blocks[2]
    kb, gb = gram_linear(x[b]), gram_linear(y[b])
    assert r.hsic[2, 0] == pytest.approx(hsic_unbiased(kb, gb), rel=1e-9)


def _coverage(seeds, n, batch_size):
    hits = 0
    for seed in seeds:
        x, y, population = _population(n, seed)
        r = minibatch.minibatch_cka(*_layers(x, y), batch_size=batch_size, seed=seed, n_boot=500)
        hits += r.ci_low <= population <= r.ci_high
    return hits / len(seeds)


@pytest.mark.slow
def test_minibatch_interval_coverage():
    assert _coverage(range(40), n=8000, batch_size=200) >= 0.85
