"""RSA's whitened comparisons (Diedrichsen et al. 2021) and Mahalanobis RDM over row-block tiles
against rsatoolbox's calc_rdm and compare and against numpy written here from the definitions:
the whitened cosine ``v1' V^-1 v2 / sqrt(...)`` with ``V = (C C') o (C C')`` built from the
pairwise contrasts ``C``, and ``d_ij = (x_i - x_j)' P (x_i - x_j) / p`` from each pair's
difference."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from conftest import write_zarr

import dask_repsim as dr
from dask_repsim.exceptions import InputError, NonFiniteError
from dask_repsim.io.inputs import as_layer
from dask_repsim.pairwise.samples import rsa
from dask_repsim.paths.sample_blocks.rsa import rsa_values

rsatoolbox = pytest.importorskip("rsatoolbox")


def reference_rdm(x: np.ndarray, rdm: str, precision: np.ndarray | None = None) -> np.ndarray:
    """The entries i < j (row-major) of the RDM from its definition, pair by pair."""
    i, j = np.triu_indices(len(x), 1)
    if rdm == "correlation":
        z = x - x.mean(axis=1, keepdims=True)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        return 1.0 - np.einsum("kf,kf->k", z[i], z[j])
    diff = x[i] - x[j]
    weight = np.eye(x.shape[1]) if precision is None else precision
    return np.einsum("kf,fg,kg->k", diff, weight, diff) / x.shape[1]


def whitened_reference(d1: np.ndarray, d2: np.ndarray, n: int, compare: str) -> float:
    """The paper's whitened cosine: the entries' covariance under i.i.d. noise is ``V = (C C')
    o (C C')``, ``C`` the pairwise contrast of each pair ``i < j`` (row i: +1, row j: -1);
    ``"corr_cov"`` takes each vector less its mean first."""
    i, j = np.triu_indices(n, 1)
    c = np.zeros((len(i), n))
    c[np.arange(len(i)), i] = 1.0
    c[np.arange(len(i)), j] = -1.0
    v = (c @ c.T) ** 2
    if compare == "corr_cov":
        d1, d2 = d1 - d1.mean(), d2 - d2.mean()
    w1, w2 = np.linalg.solve(v, d1), np.linalg.solve(v, d2)
    return float(d1 @ w2 / np.sqrt((d1 @ w1) * (d2 @ w2)))


def toolbox(x: np.ndarray, y: np.ndarray, rdm: str, compare: str, noise=None) -> float:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm
    from rsatoolbox.rdm import compare as rdm_compare

    if noise is None:
        r1, r2 = calc_rdm(Dataset(x), method=rdm), calc_rdm(Dataset(y), method=rdm)
    else:
        r1 = calc_rdm(Dataset(x), method=rdm, noise=noise[0])
        r2 = calc_rdm(Dataset(y), method=rdm, noise=noise[1])
    return float(rdm_compare(r1, r2, method=compare)[0, 0])


def make(kind: str, n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two related layers of ``kind``; ``"offset"`` adds 1e4 to every activation."""
    rng = np.random.default_rng(seed)
    if kind == "lowrank":
        x = rng.normal(size=(n, 2)) @ rng.normal(size=(2, p)) + 0.01 * rng.normal(size=(n, p))
    elif kind == "heavy":
        x = rng.standard_t(2, size=(n, p))
    elif kind == "relu_int":
        x = np.maximum(np.round(3 * rng.normal(size=(n, p))), 0.0)
        x[:, 0] += np.arange(n) % 3 + 1  # no sample all zero or constant
    else:
        x = rng.normal(size=(n, p))
    y = np.tanh(x @ rng.normal(size=(p, 5)) / np.sqrt(p)) + 0.5 * rng.normal(size=(n, 5))
    if kind == "relu_int":
        y = np.maximum(np.round(4 * y), 0.0)
        y[:, 0] += np.arange(n) % 4 + 1
    if kind == "offset":
        x, y = x + 1e4, y + 1e4
    return x, y


def _references_input(x: np.ndarray, rdm: str) -> np.ndarray:
    """Distances do not change when every sample moves by the same vector: the references get
    the activations less their column means, so their own sums of squares do not cancel."""
    return x if rdm == "correlation" else x - x.mean(axis=0)


KINDS = ["gaussian", "lowrank", "heavy", "offset", "relu_int"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "p"), [(10, 4), (33, 60), (60, 8)])
@pytest.mark.parametrize("rdm", ["correlation", "euclidean"])
def test_whitened_comparisons_equal_rsatoolbox_and_the_paper(kind, n, p, rdm):
    x, y = make(kind, n, p, seed=n + p)
    values = rsa_values(as_layer(x), as_layer(y, name="y"), rdm=rdm,
                        compares=("cosine_cov", "corr_cov", "corr"), block_rows=7)
    rx, ry = _references_input(x, rdm), _references_input(y, rdm)
    d1, d2 = reference_rdm(rx, rdm), reference_rdm(ry, rdm)
    for compare in ("cosine_cov", "corr_cov"):
        assert values[compare] == pytest.approx(toolbox(rx, ry, rdm, compare), abs=1e-9)
        assert values[compare] == pytest.approx(whitened_reference(d1, d2, n, compare),
                                                abs=1e-9)
    # whitening changes the comparison: not the plain correlation of the entries
    assert values["corr_cov"] != pytest.approx(values["corr"], abs=1e-6)


def test_whitened_comparisons_do_not_depend_on_the_tiles_when_distances_concentrate():
    """2,000 features: every squared distance is near 2, the double-centred terms small beside
    it; any block size gives the same value, that of rsatoolbox."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 2000))
    y = x[:, :1000] + 0.7 * rng.normal(size=(60, 1000))
    d = reference_rdm(x - x.mean(0), "euclidean")
    assert d.std() < 0.05 * d.mean()
    for compare in ("cosine_cov", "corr_cov"):
        expected = toolbox(x - x.mean(0), y - y.mean(0), "euclidean", compare)
        for rows in (3, 7, 16, 60):
            value = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean",
                               compares=(compare,), block_rows=rows)[compare]
            assert value == pytest.approx(expected, abs=1e-10), (compare, rows)


def test_whitened_comparisons_with_the_other_comparisons_in_one_pass():
    """Gathered entries (ranks) and row sums from the same tiles: each equal to its reference
    (rsatoolbox given the small integer activations themselves: their distances, and ties, are
    exact)."""
    x, y = make("relu_int", 40, 6, seed=1)
    compares = ("cosine_cov", "spearman", "corr_cov", "tau-b", "cosine")
    values = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean", compares=compares,
                        block_rows=9)
    for compare in compares:
        assert values[compare] == pytest.approx(toolbox(x, y, "euclidean", compare),
                                                abs=1e-9), compare


def precisions(p: int, seed: int, rank: int | None = None) -> np.ndarray:
    """A noise precision: the inverse of a shrunk sample covariance, or of rank ``rank``."""
    rng = np.random.default_rng(seed)
    if rank is not None:
        factor = rng.normal(size=(p, rank))
        return factor @ factor.T
    noise = rng.normal(size=(3 * p, p)) @ rng.normal(size=(p, p))
    return np.linalg.inv(np.cov(noise.T) + 0.1 * np.eye(p))


@pytest.mark.parametrize("compare", ["cosine_cov", "corr_cov"])
def test_whitened_comparisons_keep_the_euclidean_rdms_invariances(compare):
    """Properties of the whitened comparisons of euclidean RDMs: a rotation, a permutation of
    units or a shift of either layer leaves them unchanged (its distances do not change), and
    so does isotropic scaling (a cosine of the RDMs); a stretch of one direction changes
    them. The mahalanobis RDM with a precision ``P`` equals the euclidean RDM of ``x L``
    (``P = L L'``)."""
    rng = np.random.default_rng(31)
    x = rng.normal(size=(70, 6))
    y = np.tanh(x @ rng.normal(size=(6, 5))) + 0.5 * rng.normal(size=(70, 5))
    base = float(rsa(x, y, rdm="euclidean", compare=compare))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for changed in (x @ q, x[:, ::-1], 3.5 * x + 100.0):
        assert float(rsa(changed, y, rdm="euclidean", compare=compare)) == pytest.approx(
            base, rel=1e-10)
    stretched = x * np.array([5.0, 1, 1, 1, 1, 1])
    assert abs(float(rsa(stretched, y, rdm="euclidean", compare=compare)) - base) > 1e-3
    a = rng.normal(size=(6, 6))
    precision = a @ a.T
    chol = np.linalg.cholesky(precision)
    whitened = float(rsa(x, y, rdm="mahalanobis", compare=compare,
                         noise=(precision, np.eye(5))))
    assert whitened == pytest.approx(float(rsa(x @ chol, y, rdm="euclidean", compare=compare)),
                                     rel=1e-9)


@pytest.mark.parametrize("kind", ["gaussian", "offset", "relu_int", "heavy"])
@pytest.mark.parametrize(("n", "p"), [(12, 30), (50, 6)])
def test_mahalanobis_rdm_equals_rsatoolbox_and_the_definition(kind, n, p):
    x, y = make(kind, n, p, seed=3 * n + p)
    noise = (precisions(p, 1), precisions(5, 2))
    compares = ("corr", "cosine", "spearman", "cosine_cov", "corr_cov")
    if kind == "relu_int":  # distances tied in exact arithmetic are tied or not as rounding
        compares = compares[:2] + compares[3:]  # goes (here and in rsatoolbox): no ranks
    values = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="mahalanobis", noise=noise,
                        compares=compares, block_rows=8)
    rx, ry = x - x.mean(0), y - y.mean(0)
    d1 = reference_rdm(rx, "mahalanobis", noise[0])
    d2 = reference_rdm(ry, "mahalanobis", noise[1])
    for compare in compares:
        expected = toolbox(rx, ry, "mahalanobis", compare, noise)
        assert values[compare] == pytest.approx(expected, abs=1e-9), compare
    assert values["corr"] == pytest.approx(np.corrcoef(d1, d2)[0, 1], abs=1e-9)
    assert values["cosine_cov"] == pytest.approx(whitened_reference(d1, d2, n, "cosine_cov"),
                                                 abs=1e-9)
    plain = rsa_values(as_layer(x), as_layer(y, name="y"), rdm="euclidean", compares=("corr",))
    assert values["corr"] != pytest.approx(plain["corr"], abs=1e-4)  # the precision matters


def test_mahalanobis_with_identity_is_euclidean_and_a_singular_precision_is_allowed():
    x, y = make("gaussian", 40, 7, seed=9)
    identity = rsa(x, y, rdm="mahalanobis", noise=(np.eye(7), np.eye(5)), compare="corr")
    assert float(identity) == pytest.approx(float(rsa(x, y, rdm="euclidean")), abs=1e-12)
    assert (identity.rdm, identity.compare) == ("mahalanobis", "corr")
    low = precisions(7, 4, rank=3)  # positive semidefinite, rank 3
    value = float(rsa(x, y, rdm="mahalanobis", noise=(low, np.eye(5)), compare="cosine_cov"))
    d1 = reference_rdm(x, "mahalanobis", low)
    d2 = reference_rdm(y, "mahalanobis", np.eye(5))
    assert value == pytest.approx(whitened_reference(d1, d2, 40, "cosine_cov"), abs=1e-9)
    assert value == pytest.approx(
        toolbox(x - x.mean(0), y - y.mean(0), "mahalanobis", "cosine_cov", (low, np.eye(5))),
        abs=1e-9)


def test_grid_on_zarr_stores_equals_the_pairwise_function_and_rsatoolbox(tmp_path):
    rng = np.random.default_rng(11)
    a1, a2 = rng.normal(size=(45, 6)), rng.normal(size=(45, 4))
    b1 = np.tanh(a1 @ rng.normal(size=(6, 5))) + 0.3 * rng.normal(size=(45, 5))
    for name, value in (("l1", a1), ("l2", a2)):
        write_zarr(tmp_path / "a.zarr", name, value, chunks=(16, value.shape[1]))
    write_zarr(tmp_path / "b.zarr", "l1", b1, chunks=(20, 5))  # same name as a layer of a
    ds = dr.compare(str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), metrics=["rsa"],
                    rdm_compare="corr_cov")
    for name, x in (("l1", a1), ("l2", a2)):
        cell = float(ds.rsa.sel(layer_a=name, layer_b="l1"))
        assert cell == pytest.approx(toolbox(x, b1, "correlation", "corr_cov"), abs=1e-9)
        assert cell == pytest.approx(float(rsa(x, b1, compare="corr_cov")), abs=1e-12)
    assert ds.attrs["rdm_compare"] == "corr_cov"
    # one precision per layer name for both sides, or a pair of mappings (side a, side b)
    pa1, pa2, pb1 = precisions(6, 1), precisions(4, 2), precisions(5, 3)
    both = dr.compare({"l1": a1, "l2": a2}, {"m1": b1}, metrics=["rsa"], rdm="mahalanobis",
                      rdm_compare="cosine_cov", rdm_noise={"l1": pa1, "l2": pa2, "m1": pb1})
    pair = dr.compare(str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), metrics=["rsa"],
                      rdm="mahalanobis", rdm_compare="cosine_cov",
                      rdm_noise=({"l1": pa1, "l2": pa2}, {"l1": pb1}))
    for name, x, p in (("l1", a1, pa1), ("l2", a2, pa2)):
        expected = toolbox(x - x.mean(0), b1 - b1.mean(0), "mahalanobis", "cosine_cov", (p, pb1))
        assert float(both.rsa.sel(layer_a=name, layer_b="m1")) == pytest.approx(expected,
                                                                                 abs=1e-9)
        assert float(pair.rsa.sel(layer_a=name, layer_b="l1")) == pytest.approx(expected,
                                                                                 abs=1e-9)
        assert float(rsa(x, b1, rdm="mahalanobis", noise=(p, pb1), compare="cosine_cov")) == (
            pytest.approx(expected, abs=1e-9))
    assert pair.attrs["rdm"] == "mahalanobis" and "rdm_noise" not in pair.attrs
    zoo = dr.compare_zoo({"n": {"l1": a1, "l2": a2}}, metrics=["rsa"], rdm="mahalanobis",
                         rdm_noise={"n/l1": pa1, "n/l2": pa2})
    expected = toolbox(a1 - a1.mean(0), a2 - a2.mean(0), "mahalanobis", "corr", (pa1, pa2))
    assert float(zoo.rsa.sel(a="n/l1", b="n/l2")) == pytest.approx(expected, abs=1e-9)
    assert float(zoo.rsa.sel(a="n/l2", b="n/l1")) == pytest.approx(expected, abs=1e-9)


def test_the_whitened_comparisons_stream_where_ranks_are_refused():
    """Nothing is gathered: a budget too small for ranking the entries computes them."""
    x, y = make("gaussian", 300, 3, seed=2)
    with dask.config.set({"repsim.memory-budget": "1 MB"}):
        with pytest.raises(ValueError, match="compare='spearman' ranks all 44,850"):
            rsa(x, y, compare="spearman")
        value = float(rsa(x, y, rdm="euclidean", compare="cosine_cov"))
    assert value == pytest.approx(
        toolbox(x - x.mean(0), y - y.mean(0), "euclidean", "cosine_cov"), abs=1e-9)


def test_bad_precisions_and_options_are_refused():
    x, y = make("gaussian", 20, 4, seed=0)
    good = (np.eye(4), np.eye(5))
    with pytest.raises(ValueError, match="rdm='mahalanobis' needs the noise precision"):
        rsa(x, y, rdm="mahalanobis")
    with pytest.raises(ValueError, match="apply to rdm='mahalanobis' only, not rdm='euclidean'"):
        rsa(x, y, rdm="euclidean", noise=good)
    with pytest.raises(InputError, match=r"y: the noise precision matrix has shape \(4, 4\), "
                                         r"but the layer has 5 features"):
        rsa(x, y, rdm="mahalanobis", noise=(np.eye(4), np.eye(4)))
    bad = np.eye(4)
    bad[1, 2] = np.nan
    with pytest.raises(NonFiniteError, match="x: the noise precision matrix has NaN or Inf"):
        rsa(x, y, rdm="mahalanobis", noise=(bad, np.eye(5)))
    skew = np.eye(4)
    skew[0, 1] = 0.5
    with pytest.raises(InputError, match="x: the noise precision matrix is not symmetric"):
        rsa(x, y, rdm="mahalanobis", noise=(skew, np.eye(5)))
    with pytest.raises(InputError, match="y: the noise precision matrix is not positive "
                                         "semidefinite"):
        rsa(x, y, rdm="mahalanobis", noise=(np.eye(4), np.diag([1.0, 1, 1, 1, -0.1])))
    with pytest.raises(ValueError, match=r"noise= takes the noise precision matrices of x and y"):
        rsa(x, y, rdm="mahalanobis", noise=np.ones(4))
    with pytest.raises(ValueError, match="rdm_noise has no noise precision matrix for layer "
                                         "'l2'"):
        dr.compare({"l1": x, "l2": x[:, :3]}, {"m": y}, metrics=["rsa"], rdm="mahalanobis",
                   rdm_noise={"l1": np.eye(4), "m": np.eye(5)})
    with pytest.raises(ValueError, match="rdm_noise names 'l3', which is none of"):
        dr.compare({"l1": x}, {"m": y}, metrics=["rsa"], rdm="mahalanobis",
                   rdm_noise={"l1": np.eye(4), "m": np.eye(5), "l3": np.eye(2)})
    with pytest.raises(ValueError, match="rdm_noise= applies to the metric"):
        dr.compare({"l1": x}, {"m": y}, metrics=["cka"], rdm_noise={"l1": np.eye(4)})
    with pytest.raises(ValueError, match="compare must be one of"):
        rsa(x, y, compare="cov")
    three = np.eye(3)  # three samples at equal distances: one dissimilarity
    with pytest.raises(ValueError, match="same dissimilarity .* compare='corr_cov' is undefined"):
        rsa(three, y[:3], rdm="euclidean", compare="corr_cov")
    assert float(rsa(three, y[:3], rdm="euclidean", compare="cosine_cov")) == pytest.approx(
        toolbox(three - three.mean(0), y[:3] - y[:3].mean(0), "euclidean", "cosine_cov"),
        abs=1e-9)
