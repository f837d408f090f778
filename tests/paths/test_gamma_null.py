"""The Gamma approximation of HSIC's null on the sample-space tiles (``null="gamma"``): its
mean, variance and p-value are those of Gretton et al. (2008) computed in numpy, whatever the
plan; its p-values are close to uniform for independent layers and its power grows with n; the
grid corrects them over its cells; what it cannot serve is an error."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from scipy import stats

import dask_repsim as dr
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.gram import samplespace


def _rbf_kernel(a: np.ndarray, sigma: float) -> np.ndarray:
    """Kornblith et al.'s ``gram_rbf``: exp(-d^2 / (2 sigma^2 median d^2)), the median over all
    n^2 squared distances."""
    d2 = np.sum((a[:, None, :] - a[None, :, :]) ** 2, axis=-1)
    return np.exp(-d2 / (2 * sigma**2 * np.median(d2)))


def _gretton(k: np.ndarray, l_: np.ndarray) -> tuple[float, float, float]:
    """(p-value, null mean, null variance) of ``HSIC_b = tr(KHLH) / n^2``, written from
    Gretton et al. (2008), section 3 and their ``hsicTestGamma``: the mean from their Theorem
    3 (traces of the covariance operators from the kernels' diagonal and off-diagonal means),
    the variance from the centred kernels' products, a Gamma with those moments for
    ``n HSIC_b``."""
    n = len(k)
    h = np.eye(n) - 1.0 / n
    kc, lc = h @ k @ h, h @ l_ @ h
    statistic = np.sum(kc * lc) / n
    b = (kc * lc / 6.0) ** 2
    np.fill_diagonal(b, 0.0)
    variance = 72.0 * (n - 4) * (n - 5) / (n * (n - 1) * (n - 2) * (n - 3)) * \
        b.sum() / (n * (n - 1))

    def trace(m: np.ndarray) -> float:
        return np.diag(m).mean() - (m.sum() - np.trace(m)) / (n * (n - 1))

    mean = trace(k) * trace(l_) / n
    shape, scale = mean**2 / variance, n * variance / mean
    return float(stats.gamma.sf(statistic, shape, scale=scale)), float(mean), float(variance)


def _norm(k: np.ndarray, l_: np.ndarray) -> float:
    """``sqrt(HSIC_b(K, K) HSIC_b(L, L))``: what CKA divides HSIC_b by."""
    n = len(k)
    h = np.eye(n) - 1.0 / n
    kc, lc = h @ k @ h, h @ l_ @ h
    return float(np.sqrt(np.sum(kc * kc) * np.sum(lc * lc)) / n**2)


def _layers(n: int, seed: int) -> list[np.ndarray]:
    """A layer with an offset, one related to it and one unrelated."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) + 30.0
    y = np.tanh((x - 30.0) @ rng.normal(size=(6, 4))) + 1.5 * rng.normal(size=(n, 4))
    return [x, y, np.exp(rng.normal(size=(n, 3)))]


KERNELS = {
    "cka": ({"debiased": False}, lambda a: a @ a.T),
    "cka_rbf_0.8": ({"kernel": "rbf", "sigma": 0.8, "debiased": False},
                    lambda a: _rbf_kernel(a, 0.8)),
    "cka_rbf_0.4": ({"kernel": "rbf", "sigma": 0.4, "debiased": False},
                    lambda a: _rbf_kernel(a, 0.4)),
}


@pytest.mark.parametrize("block_rows", [None, 64], ids=["whole", "row_blocks"])
def test_moments_and_pvalues_are_those_of_gretton_et_al(block_rows):
    """Every cell of a 2 x 3 grid (a layer with itself among them), linear and RBF kernels at
    two bandwidths, whole Gram matrices and row blocks of 64 samples: the p-value equals the
    Gamma p-value of numpy's kernels (relative 1e-9), and the null's mean and standard
    deviation are Gretton et al.'s in CKA's units (1e-10)."""
    n = 250
    data = _layers(n, 0)
    layers = [as_layer(a, name=f"l{i}") for i, a in enumerate(data)]
    specs = [spec for spec, _ in KERNELS.values()]
    rows, cols = [0, 1], [1, 2, 0]
    with dask.config.set(scheduler="threads"):
        cells, attrs = samplespace.gram_cells(specs, layers, rows, cols, seed=0,
                                              block_rows=block_rows, gamma_null=True)
    assert attrs["n_tiles"] == (1 if block_rows is None else 10)
    for (m, i, j), cell in cells.items():
        kernel = list(KERNELS.values())[m][1]
        k, l_ = kernel(data[rows[i]]), kernel(data[cols[j]])
        pvalue, mean, variance = _gretton(k, l_)
        norm = _norm(k, l_)
        where = str((m, i, j))
        assert cell.fields["null_method"] == "gamma"
        assert cell.fields["pvalue"] == pytest.approx(pvalue, rel=1e-9, abs=1e-300), where
        assert cell.fields["null_mean"] == pytest.approx(mean / norm, rel=1e-10), where
        assert cell.fields["null_std"] == pytest.approx(np.sqrt(variance) / norm,
                                                        rel=1e-10), where


def test_gamma_null_matches_the_permutation_null():
    """For unrelated layers the Gamma's mean and standard deviation are those of 999
    permutations within 10% and 20%, and its p-value within 0.05 of theirs."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 5)), np.exp(rng.normal(size=(400, 4)))
    gamma = dr.cka(x, y, method="gram", null="gamma")
    permuted = dr.cka(x, y, method="gram", permutations=999, seed=1)
    assert float(gamma) == float(permuted)
    assert gamma.null_mean == pytest.approx(permuted.null_mean, rel=0.1)
    assert gamma.null_std == pytest.approx(permuted.null_std, rel=0.2)
    assert gamma.pvalue == pytest.approx(permuted.pvalue, abs=0.05)
    assert gamma.n_permutations is None and gamma.null is None
    assert "Gamma approximation" in repr(gamma)


@pytest.mark.large  # a simulation of many repetitions: CI runs it with -m large
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_pvalues_hold_their_level_for_independent_layers(kernel):
    """Independent Gaussian layers, 500 times at n = 100: the rates of p <= 0.01, 0.05 and
    0.1 are each within their binomial 99% range. (It matches two moments of the null: its
    p-values above the tail are larger than uniform ones, so the quarters are not even.)"""
    reps = 500
    p = np.empty(reps)
    with dask.config.set(scheduler="sync"):
        for r in range(reps):
            rng = np.random.default_rng(4000 + r)
            x, y = rng.normal(size=(100, 3)), rng.normal(size=(100, 2))
            p[r] = dr.cka(x, y, method="gram", kernel=kernel, null="gamma").pvalue
    for level in (0.01, 0.05, 0.1):
        low, high = stats.binom.ppf(0.005, reps, level), stats.binom.isf(0.005, reps, level)
        assert low <= np.sum(p <= level) <= high, (level, np.sum(p <= level))
    assert np.mean(p <= 0.5) <= 0.5 + 3 * np.sqrt(0.25 / reps)  # not liberal in the bulk


def test_power_increases_with_the_number_of_samples():
    """A weak linear relation (y = 0.25 x + noise): the Gamma test's rejection rate at 0.05
    over 60 repetitions grows with n."""
    rates = []
    with dask.config.set(scheduler="sync"):
        for n in (20, 80, 320):
            hits = 0
            for r in range(60):
                rng = np.random.default_rng([n, r, 1])
                x = rng.normal(size=(n, 4))
                y = 0.25 * x[:, :2] + rng.normal(size=(n, 2))
                hits += dr.cka(x, y, method="gram", null="gamma").pvalue <= 0.05
            rates.append(hits / 60)
    assert rates[0] < rates[1] < rates[2], rates
    assert rates[2] > 0.9, rates


def test_grid_corrects_gamma_pvalues_over_its_cells():
    """compare(null="gamma"): each cell's p-value is the pairwise call's; the family-wise
    p-values are Holm's and the false-discovery ones Benjamini-Hochberg's (scipy) of the
    metric's cells; attrs say the null is approximate."""
    data = _layers(120, 5)
    a = {"x": data[0], "y": data[1]}
    b = {"y": data[1], "z": data[2], "x2": data[0] + 1.0}
    ds = dr.compare(a, b, metrics=["cka", "cka_rbf"], method="gram", null="gamma")
    assert "approximate" in ds.attrs["null"] and "Holm" in ds.attrs["pvalue_correction"]
    for metric, kernel in (("cka", "linear"), ("cka_rbf", "rbf")):
        raw = ds[f"{metric}_pvalue"].values
        for i, la in enumerate(a):
            for j, lb in enumerate(b):
                one = dr.cka(a[la], b[lb], method="gram", kernel=kernel, null="gamma")
                assert raw[i, j] == pytest.approx(one.pvalue, rel=1e-9, abs=1e-300)
        flat = raw.ravel()
        order = np.argsort(flat)
        m = flat.size
        holm = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * flat[order]))
        expected = np.empty(m)
        expected[order] = holm
        np.testing.assert_allclose(ds[f"{metric}_pvalue_fwer"].values.ravel(), expected)
        np.testing.assert_allclose(ds[f"{metric}_pvalue_fdr"].values.ravel(),
                                   stats.false_discovery_control(flat))


def test_zoo_mirrors_gamma_pvalues():
    """A zoo compared with itself: each unordered pair once, its mirror the same p-values,
    corrected over the upper triangle."""
    data = _layers(80, 6)
    zoo = {"n1": {"x": data[0], "y": data[1]}, "n2": {"z": data[2]}}
    ds = dr.compare_zoo(zoo, metrics=["cka"], method="gram", null="gamma")
    for name in ("cka_pvalue", "cka_pvalue_fwer", "cka_pvalue_fdr", "cka_null_mean"):
        values = ds[name].values
        np.testing.assert_array_equal(values, values.T, err_msg=name)


def test_auto_takes_the_gram_path_for_the_gamma_null():
    """``null="gamma"`` without ``method=``: the planner takes the one path that has it (the
    co-moments would be cheaper here, and do not have it), for a pairwise call, a grid and a
    zoo; a metric no path approximates is an error that says which and why."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 5))
    y = np.tanh(x @ rng.normal(size=(5, 3))) + rng.normal(size=(120, 3))
    e = dr.cka(x, y, null="gamma")
    assert e.method == "gram" and e.null_method == "gamma"
    k, l_ = x @ x.T, y @ y.T
    pvalue, mean, variance = _gretton(k, l_)
    norm = _norm(k, l_)
    assert e.pvalue == pytest.approx(pvalue, rel=1e-9, abs=1e-300)
    assert (e.null_mean, e.null_std) == pytest.approx((mean / norm, np.sqrt(variance) / norm),
                                                      rel=1e-10)
    grid = dr.compare({"x": x}, {"y": y, "z": x[::-1]}, metrics=["cka", "cka_rbf"],
                      null="gamma")
    assert grid.attrs["method"] == "gram"
    assert float(grid.cka_pvalue.sel(layer_a="x", layer_b="y")) == pytest.approx(e.pvalue,
                                                                                   rel=1e-9)
    zoo = dr.compare_zoo({"n0": {"x": x}, "n1": {"y": y}}, metrics=["cka"], null="gamma")
    assert zoo.attrs["method"] == "gram"
    with pytest.raises(ValueError, match=r"mean_cca: no path of this metric supports the Gamma "
                                         r"approximation of the null \(null='gamma'\)"):
        dr.compare({"x": x}, {"y": y}, metrics=["cka", "mean_cca"], null="gamma")
    with pytest.raises(ValueError, match="rsa: no path of this metric supports the Gamma"):
        dr.compare({"x": x}, {"y": y}, metrics=["rsa"], null="gamma")


def test_what_the_gamma_approximation_cannot_serve_is_an_error(tmp_path):
    """Debiased CKA, the co-moment path, permutations beside it, too few samples, an unknown
    null and a Gram store: clear errors."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    with pytest.raises(ValueError, match="null='gamma' is not available for cka_debiased"):
        dr.cka(x, y, debiased=True, method="gram", null="gamma")
    with pytest.raises(ValueError, match="null='gamma' is not available on the 'covariance'"):
        dr.cka(x, y, method="covariance", null="gamma")
    with pytest.raises(ValueError, match="give it or permutations=, not both"):
        dr.cka(x, y, method="gram", null="gamma", permutations=19)
    with pytest.raises(ValueError, match="null must be None"):
        dr.cka(x, y, method="gram", null="permutations")
    with pytest.raises(dr.SampleCountError, match="needs at least 6 samples, got 5"):
        dr.cka(x[:5], y[:5], method="gram", null="gamma")
    with pytest.raises(ValueError, match="null= is not available with gram_store="):
        dr.compare_zoo({"n": {"x": x, "y": y}}, metrics=["cka"], null="gamma",
                       gram_store=str(tmp_path / "grams.zarr"))


def test_command_line_gamma_null(tmp_path):
    """``dask-repsim compare --null gamma`` writes the p-values compare gives, with the
    approximation named in the file's attrs."""
    import xarray as xr
    import zarr

    from dask_repsim import cli

    data = _layers(90, 8)
    for side, names in (("a", ("x", "y")), ("b", ("z",))):
        root = zarr.open_group(tmp_path / f"{side}.zarr", mode="w")
        for name, arr in zip(names, (data[:2] if side == "a" else data[2:]), strict=True):
            root.create_array(name, data=arr)
    out = tmp_path / "g.nc"
    code = cli.main(["compare", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "-m",
                     "cka", "--method", "gram", "--null", "gamma", "--out", str(out)])
    assert code == 0
    with xr.open_dataset(out) as saved:
        saved = saved.load()
    direct = dr.compare(str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), metrics=["cka"],
                        method="gram", null="gamma")
    for name in ("cka_pvalue", "cka_pvalue_fwer", "cka_pvalue_fdr", "cka_null_mean"):
        np.testing.assert_allclose(saved[name].values, direct[name].values, rtol=1e-12)
    assert "Gamma approximation" in saved.attrs["null"]
