"""Delete-a-group jackknife intervals on the QR path: every replicate equals the CCA family
recomputed on the samples outside its group (by the QR path and by a numpy reference written
here: QR of the centred kept data, principal angles from the SVD of ``Q_x^T Q_y``; Bjorck &
Golub 1973), whatever the chunking, n not a multiple of G, a grid's joint factor; on
well-conditioned data the intervals are the co-moment path's, on ill-conditioned data they
are the reference's where the co-moment path's are not; and the options the path refuses."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import write_zarr
from scipy import stats

import dask_repsim as dr
from dask_repsim import RepsimWarning, registry
from dask_repsim.engine.stream import group_bounds
from dask_repsim.exceptions import NonFiniteError
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths import qr

#: every measure the QR path computes
METRICS = ("mean_cca", "r2_cca", "svcca", "svcca_r2", "pwcca", "linear_regression")

# ------------------------------------------------------------------------ references (numpy)


def _centre(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=0)


def _q(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the centred columns (full column rank), by numpy's QR."""
    return np.linalg.qr(_centre(a))[0]


def _top(a: np.ndarray, keep: float = 0.99) -> np.ndarray:
    """Orthonormal basis of the centred data's leading left singular vectors holding ``keep``
    of its variance (SVCCA's reduction)."""
    u, s, _ = np.linalg.svd(_centre(a), full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    return u[:, : int(np.argmax(share >= keep)) + 1]


def reference(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The QR path's measures of (x, y) from their definitions (x and y of full column rank):
    canonical correlations the cosines of the principal angles; PWCCA's weights from the
    narrower side's canonical variates (x's when as wide)."""
    qx, qy = _q(x), _q(y)
    u, rho, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    rho = np.clip(rho, 0.0, 1.0)
    yc = _centre(y)
    h, units = (qx @ u, _centre(x)) if x.shape[1] <= y.shape[1] else (qy @ vt.T, yc)
    alpha = np.abs(h.T @ units).sum(axis=1)  # canonical variates (unit norm) against units
    top = np.clip(np.linalg.svd(_top(x).T @ _top(y), compute_uv=False), 0.0, 1.0)
    return {"mean_cca": rho.mean(), "r2_cca": np.mean(rho**2), "svcca": top.mean(),
            "svcca_r2": np.mean(top**2), "pwcca": float(alpha @ rho / alpha.sum()),
            "linear_regression": float(np.sum((qx.T @ yc) ** 2) / np.sum(yc**2))}


def without(a: np.ndarray, bounds: tuple[int, ...], g: int) -> np.ndarray:
    return np.delete(a, np.arange(bounds[g], bounds[g + 1]), axis=0)


def jackknife(value: float, replicates: np.ndarray) -> tuple[float, float]:
    """(standard error, bias-corrected centre) from the definition."""
    g = len(replicates)
    stderr = np.sqrt((g - 1) / g * np.sum((replicates - replicates.mean()) ** 2))
    return float(stderr), float(g * value - (g - 1) * replicates.mean())


# ------------------------------------------------------------------------------------ data


def correlated(seed: int, n: int, p: int = 6, q: int = 5,
               offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    x = latent @ rng.normal(size=(4, p)) + 0.7 * rng.normal(size=(n, p)) + offset
    y = np.tanh(latent @ rng.normal(size=(4, q))) + 0.5 * rng.normal(size=(n, q)) - offset
    return x, y


def ill_conditioned(seed: int, n: int = 2000, offset: float = 0.0) -> tuple[np.ndarray, ...]:
    """x of 6 units with singular values 1 to 1e-9 (condition number 1e9, rotated so that no
    unit holds one direction); y of 5 units, two of them carried by x's two weakest
    directions."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, 11)))
    u -= u.mean(axis=0)
    v, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x = (u[:, :6] * np.logspace(0, -9, 6)) @ v.T + offset
    y = np.column_stack([u[:, 5] + 0.5 * u[:, 6], u[:, 4] + 0.1 * u[:, 7], u[:, 8],
                         u[:, 0] + u[:, 9], u[:, 10]])
    return x, y @ rng.normal(size=(5, 5)) - offset


def _layer(a: np.ndarray, name: str, rows: int | tuple[int, ...] | None = None):
    return as_layer(a if rows is None else da.from_array(a, chunks=(rows, -1)), name=name)


def _functions():
    return registry.path_functions("qr", list(METRICS))


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("n", "groups", "rows"), [
    (203, 7, (30, 50, 17)),  # chunks straddling the bounds 29, 58, ...; one spans 3 groups
    (500, 20, (37, 64, 100)),  # n a multiple of G, chunks not of the groups
    (1001, 13, ((250, 120, 631), 333, 1001)),  # uneven chunks; one layer a single chunk
    (61, 61, (7, 10, 61)),  # groups of one sample: the leave-one-out jackknife
])
def test_replicates_are_the_measures_without_each_group(n, groups, rows):
    """A grid of two row layers against one column layer from one grouped pass: replicate g of
    every cell and measure equals the QR path's value on the samples outside group g (1e-10
    relative) and the numpy reference (1e-12); the value is that of the pass without groups."""
    x, y = correlated(n, n, offset=30.0)
    z = np.sin(x[:, :4]) + 0.3 * np.random.default_rng(n).normal(size=(n, 4))
    data = {"x": x, "z": z, "y": y}
    layers = [_layer(a, name, r) for (name, a), r in zip(data.items(), rows, strict=True)]
    functions = _functions()
    cells, attrs = qr.qr_cells(functions, layers, [0, 1], [2], groups=groups)
    plain, _ = qr.qr_cells(functions, layers, [0, 1], [2])
    bounds = group_bounds(n, groups)
    assert attrs["n_samples"] == n
    worst_path, worst_ref = 0.0, 0.0
    for g in range(groups):
        kept = {name: without(a, bounds, g) for name, a in data.items()}
        again, _ = qr.qr_cells(functions, [_layer(a, name) for name, a in kept.items()],
                               [0, 1], [2])
        for i, side in enumerate(("x", "z")):
            ref = reference(kept[side], kept["y"])
            for m, metric in enumerate(METRICS):
                rep = cells[m, i, 0].replicates[g]
                truth = again[m, i, 0].value
                worst_path = max(worst_path, abs(rep - truth) / abs(truth))
                worst_ref = max(worst_ref, abs(rep - ref[metric]))
    assert worst_path <= 1e-10, worst_path
    assert worst_ref <= 1e-12, worst_ref
    for key, cell in cells.items():
        assert len(cell.replicates) == groups
        assert cell.value == pytest.approx(plain[key].value, rel=1e-12, abs=1e-14)
        assert plain[key].replicates is None


def test_replicates_do_not_depend_on_the_chunking():
    x, y = correlated(3, 700)
    functions = _functions()
    found = [qr.qr_cells(functions, [_layer(x, "x", r), _layer(y, "y", r)], [0], [1],
                         groups=9)[0] for r in (700, 77, 35, (300, 1, 399))]
    for cells in found[1:]:
        for key, cell in cells.items():
            np.testing.assert_allclose(cell.replicates, found[0][key].replicates, rtol=1e-12)


@pytest.mark.parametrize("groups", [20, 9])
def test_well_conditioned_intervals_are_the_co_moment_paths(groups):
    """Through the public functions, chunked: the QR path's standard errors, centres and ends
    equal the co-moment path's (1e-10; both are exact on well-conditioned data)."""
    x, y = correlated(5, 1503, offset=4.0)
    xd, yd = da.from_array(x, chunks=(211, -1)), da.from_array(y, chunks=(500, -1))
    calls = {
        "mean": lambda **k: dr.cca(xd, yd, **k).mean, "r2": lambda **k: dr.cca(xd, yd, **k).r2,
        "svcca": lambda **k: dr.svcca(xd, yd, **k), "pwcca": lambda **k: dr.pwcca(xd, yd, **k),
        "pwcca_yx": lambda **k: dr.pwcca(yd, xd, **k),
        "linear_regression": lambda **k: dr.linear_regression(xd, yd, **k),
    }
    for name, call in calls.items():
        q = call(method="qr", interval="jackknife", groups=groups)
        c = call(method="covariance", interval="jackknife", groups=groups)
        assert q.method == "qr" and q.n_groups == groups and q.level == 0.95, name
        assert q.stderr > 1e-4, name  # an interval of some width
        for field in ("stderr", "ci_centre", "ci_low", "ci_high"):
            assert getattr(q, field) == pytest.approx(getattr(c, field), abs=1e-10), (name, field)
    # PWCCA's interval is centred on the estimate, on this path as on the co-moment path
    q = dr.pwcca(xd, yd, method="qr", interval="jackknife", groups=groups)
    assert q.ci_centre == float(q)


def test_ill_conditioned_replicates_match_the_reference_where_co_moments_lose_them():
    """Condition number 1e9, y carried by x's weakest directions: the QR replicates equal the
    numpy reference on the kept samples (1e-8), and so do the standard errors and centres
    (1e-7); the co-moment path (condition number squared: 1e18) drops those directions: its
    values are off by more than twice the QR interval's width, its intervals miss the value
    and its standard errors are off by more than 10%."""
    x, y = ill_conditioned(0)
    assert np.linalg.cond(_centre(x)) > 5e8
    n, groups = len(x), 8
    bounds = group_bounds(n, groups)
    layers = [_layer(x, "x", 333), _layer(y, "y", 512)]
    metrics = [m for m in METRICS if m not in ("svcca", "svcca_r2")]  # those use every direction
    cells, _ = qr.qr_cells(registry.path_functions("qr", metrics), layers, [0], [1],
                           groups=groups)
    refs = [reference(without(x, bounds, g), without(y, bounds, g)) for g in range(groups)]
    full = reference(x, y)
    for m, metric in enumerate(metrics):
        replicates = np.array(cells[m, 0, 0].replicates)
        expected = np.array([r[metric] for r in refs])
        np.testing.assert_allclose(replicates, expected, rtol=0, atol=1e-8, err_msg=metric)
        stderr, centre = jackknife(full[metric], expected)
        bias_corrected = registry.MEASURES[metric].bias_corrected
        estimate = dr.compare({"x": x}, {"y": y}, metrics=[metric], method="qr",
                              interval="jackknife", groups=groups)
        assert estimate[f"{metric}_stderr"].item() == pytest.approx(stderr, abs=1e-7), metric
        assert estimate[f"{metric}_centre"].item() == pytest.approx(
            centre if bias_corrected else full[metric], abs=1e-7), metric
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RepsimWarning)
            lost = dr.compare({"x": x}, {"y": y}, metrics=[metric], interval="jackknife",
                              groups=groups)
        width = estimate[f"{metric}_high"].item() - estimate[f"{metric}_low"].item()
        assert abs(lost[metric].item() - full[metric]) > 2 * width, metric
        assert not lost[f"{metric}_low"].item() <= full[metric] <= lost[f"{metric}_high"].item()
        assert abs(lost[f"{metric}_stderr"].item() / stderr - 1) > 0.1, metric


def test_compare_gives_interval_variables_equal_to_the_pairwise_ones(counting_store):
    """A grid on the QR path with an interval: every metric's standard error, centre and ends
    (PWCCA centred on the estimate, the others on the bias-corrected one, from the cells'
    replicates), each stored chunk read once, each cell the pairwise call's interval."""
    x, y = correlated(8, 900, offset=2.0)
    z = np.tanh(x[:, :3]) + 0.4 * np.random.default_rng(9).normal(size=(900, 3))
    for name, a, rows in (("x", x, 125), ("z", z, 200), ("y", y, 300)):
        write_zarr(counting_store, name, a, chunks=(rows, a.shape[1]))
    counting_store.reads.clear()
    group = zarr.open_group(counting_store, mode="r")
    with dask.config.set(scheduler="threads"):
        ds = dr.compare({"x": group["x"], "z": group["z"]}, {"y": group["y"]},
                        metrics=list(METRICS), method="qr", interval="jackknife", groups=11)
    assert max(counting_store.chunk_reads().values()) == 1
    assert ds.attrs["method"] == "qr" and ds.attrs["n_groups"] == 11
    assert "the estimate for pwcca" in ds.attrs["interval_centre"]
    data = {"x": x, "z": z}
    for a in ("x", "z"):
        cells, _ = qr.qr_cells(_functions(), [_layer(data[a], "a"), _layer(y, "y")], [0], [1],
                               groups=11)
        for m, metric in enumerate(METRICS):
            cell = ds.sel(layer_a=a, layer_b="y")
            value, replicates = cells[m, 0, 0].value, np.array(cells[m, 0, 0].replicates)
            stderr, centre = jackknife(value, replicates)
            if metric == "pwcca":
                centre = value
            half = stats.t.ppf(0.975, 10) * stderr
            assert cell[metric].item() == pytest.approx(value, abs=1e-12), (a, metric)
            assert cell[f"{metric}_stderr"].item() == pytest.approx(stderr, abs=1e-12)
            assert cell[f"{metric}_centre"].item() == pytest.approx(centre, abs=1e-12)
            assert cell[f"{metric}_low"].item() == pytest.approx(centre - half, abs=1e-12)
            assert cell[f"{metric}_high"].item() == pytest.approx(centre + half, abs=1e-12)
    pairwise = dr.linear_regression(z, y, method="qr", interval="jackknife", groups=11)
    assert ds.linear_regression_low.sel(layer_a="z").item() == pytest.approx(
        pairwise.ci_low, abs=1e-12)


def test_non_finite_samples_are_named_from_the_grouped_pass():
    """The earliest non-finite sample is found across groups and chunks split at their bounds
    (NaN in group 2 and Inf in group 1 of y: the Inf, earlier, is named)."""
    x, y = correlated(11, 300)
    y[130, 2] = np.nan
    y[70, 1] = np.inf
    with pytest.raises(NonFiniteError, match="y has Inf at sample 70"):
        dr.compare({"x": da.from_array(x, chunks=(45, -1))},
                   {"y": da.from_array(y, chunks=(45, -1))}, metrics=["mean_cca"], method="qr",
                   interval="jackknife", groups=4)


def test_options_the_qr_path_refuses():
    x, y = correlated(12, 60)
    paths = "paths that support it: covariance$"
    with pytest.raises(ValueError, match="nan_policy='omit' is not available on the 'qr' path; "
                       + paths):
        dr.cca(x, y, method="qr", nan_policy="omit", permutations=19)
    with pytest.raises(ValueError, match="groups=61 is more than the 60 samples"):
        dr.svcca(x, y, method="qr", interval="jackknife", groups=61)
    with pytest.raises(ValueError, match="groups= applies to intervals only"):
        dr.linear_regression(x, y, method="qr", groups=5)
    assert registry.supports("mean_cca", "qr", "interval")
    assert registry.supports("mean_cca", "qr", "permutations")
    assert not registry.supports("mean_cca", "qr", "nan_omit")


def weak_population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x: 6 independent Gaussian directions scaled 1 to 1e-9 and rotated; y: the two weakest
    directions, mixed, plus noise."""
    s = rng.normal(size=(n, 6))
    x = (s * np.logspace(0, -9, 6)) @ ROTATION.T + 1.0
    return x, s[:, 4:] @ MIX + NOISE * rng.normal(size=(n, 2))


ROTATION = np.linalg.qr(np.random.default_rng(200).normal(size=(6, 6)))[0]
MIX = np.random.default_rng(201).normal(size=(2, 2))
NOISE = 1.5


def test_intervals_cover_where_the_co_moment_paths_cannot():
    """200 samples (n = 400) of a population whose canonical correlations are carried by x's
    two weakest directions (1e-7.2 and 1e-9 of the strongest): y = s_w M + e, so the
    population correlations are c_i / sqrt(c_i^2 + 1.5^2) for the singular values c_i of M.
    The QR path's standard error is within 30% of the estimates' spread and its 95% intervals
    cover the population mean correlation within the 99% binomial range of 95% (184 of 200);
    the co-moment path's, which drop those directions, never do (its estimates near 0.08 for
    0.72)."""
    c = np.linalg.svd(MIX, compute_uv=False)
    truth = float(np.mean(c / np.sqrt(c**2 + NOISE**2)))
    rng = np.random.default_rng(7)
    sims = 200
    covered = np.zeros((sims, 2), dtype=bool)
    values, stderrs = np.zeros(sims), np.zeros(sims)
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        for s in range(sims):
            x, y = weak_population(400, rng)
            for k, method in enumerate(("qr", "covariance")):
                e = dr.cca(x, y, method=method, interval="jackknife").mean
                covered[s, k] = e.ci_low <= truth <= e.ci_high
                if method == "qr":
                    values[s], stderrs[s] = float(e), e.stderr
    low, high = (stats.binom.ppf(0.005, sims, 0.95), stats.binom.isf(0.005, sims, 0.95))
    assert low <= covered[:, 0].sum() <= high, covered.sum(axis=0)
    assert 0.7 <= stderrs.mean() / values.std(ddof=1) <= 1.3
    assert covered[:, 1].sum() == 0, covered.sum(axis=0)
