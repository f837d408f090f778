"""Jackknife replicates and permutation nulls of linear CKA on the feature-tile path: every
replicate equals CKA recomputed from scratch on the samples outside its group, every null value
CKA of x against y's rows permuted as :func:`block_permutations` says (both in numpy float64,
biased and debiased, the latter by Song et al.'s unbiased HSIC on Gram matrices); the same
replicates and null as the co-moment path's; a null that depends on neither the storage
chunks, the row chunks nor the tiles; tiles that do not divide the widths; and the errors."""

from __future__ import annotations

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import references as ref

import dask_repsim as dr
from dask_repsim.engine.permuted import block_permutations
from dask_repsim.engine.stream import group_bounds
from dask_repsim.exceptions import SampleCountError
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths import tiled

#: permutation blocks in these tests (the ``small_blocks`` fixture): n = 150 spans ten
BLOCK = 16
N, P, Q = 150, 20, 13
CKA = {False: ref.linear_cka, True: ref.debiased_linear_cka}


def _data(n: int = N, p: int = P, q: int = Q, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Related layers with large, different means (ReLU-like y), so that centring matters."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    x = z @ rng.normal(size=(4, p)) + rng.normal(size=(n, p)) + 30.0
    y = np.maximum(z @ rng.normal(size=(4, q)) + rng.normal(size=(n, q)), 0) - 12.0
    return x, y


def _layers(x, y):
    return as_layer(x, name="x"), as_layer(y, name="y")


def _permutations(n: int, block: int, seed: int, count: int) -> np.ndarray:
    """(count, n): the samples of y paired with samples 0..n-1 of x, rebuilt block by block
    from :func:`block_permutations` (the co-moment path's definition)."""
    parts = [start + block_permutations(seed, start, min(block, n - start), count)
             for start in range(0, n, block)]
    return np.concatenate(parts, axis=1)


def _close(got, expected) -> float:
    """Largest relative error, after asserting it is at most 1e-10."""
    got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
    error = np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-3))
    assert error <= 1e-10, error
    return float(error)


@pytest.mark.parametrize("split_every", [2, 8])
def test_replicates_are_cka_without_each_group(small_blocks, split_every):
    """G = 7 groups of 150 samples (not a multiple), tiles of 7 features (20 = 7 + 7 + 6,
    13 = 7 + 6), row chunks of 32 samples that groups cut inside, partial sums merged in a
    tree (split_every=2) or in one task."""
    x, y = _data()
    groups = 7
    bounds = group_bounds(N, groups)
    cells = tiled.cka_cells(*_layers(x, y), (False, True), groups=groups, tile=7,
                            chunk_rows=40, split_every=split_every)
    for cell, debiased in zip(cells, (False, True), strict=True):
        expected = [CKA[debiased](np.delete(x, np.s_[a:b], 0), np.delete(y, np.s_[a:b], 0))
                    for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        assert len(cell.replicates) == groups and cell.null is None
        _close(cell.replicates, expected)
        _close(cell.value, CKA[debiased](x, y))
        assert np.ptp(expected) > 1e-3  # the groups matter: a wrong group would show


def test_null_is_cka_against_permuted_rows(small_blocks):
    """K = 5 permutations in batches of 2 (a budget of two 7 x 7 products), y's rows permuted
    within blocks of 16 samples (the last one of 6)."""
    x, y = _data(seed=1)
    k, seed = 5, 3
    budget = 8 * 7 * 7 * 2
    assert tiled.inference_shape(7, None, k, budget) == (7, 7, 2)
    cells = tiled.cka_cells(*_layers(x, y), (False, True), permutations=k, seed=seed, tile=7,
                            chunk_rows=40, budget=budget)
    perms = _permutations(N, BLOCK, seed, k)
    starts = np.arange(N) // BLOCK * BLOCK
    assert ((perms >= starts) & (perms < np.minimum(starts + BLOCK, N))).all()  # within blocks
    assert (np.sort(perms, axis=1) == np.arange(N)).all() and (perms != np.arange(N)).any()
    for cell, debiased in zip(cells, (False, True), strict=True):
        assert cell.replicates is None and len(cell.null) == k
        _close(cell.null, [CKA[debiased](x, y[perm]) for perm in perms])
        _close(cell.value, CKA[debiased](x, y))
        assert max(np.abs(cell.null)) < 0.5 * abs(cell.value)  # permuted: far from the value


def test_same_replicates_and_null_as_the_co_moment_path():
    """n = 4,500 samples: three permutation blocks of the package's size (the last shorter),
    so that the co-moment path's null and intervals are compared as they are run."""
    x, y = _data(n=4500, p=12, q=9, seed=2)
    groups, k, seed = 6, 19, 4
    for debiased in (False, True):
        est = dr.cka(x, y, debiased=debiased, method="covariance", interval="jackknife",
                     groups=groups, permutations=k, seed=seed)
        cell = tiled.cka_cells(*_layers(x, y), (debiased,), groups=groups, permutations=k,
                               seed=seed, tile=5)[0]
        _close(cell.value, float(est))
        _close(cell.null, est.null)
        reps = np.asarray(cell.replicates)
        stderr = np.sqrt((groups - 1) / groups * np.sum((reps - reps.mean()) ** 2))
        _close(stderr, est.stderr)
        _close(groups * cell.value - (groups - 1) * reps.mean(), est.ci_centre)


def test_same_as_the_co_moment_path_with_small_blocks(small_blocks):
    x, y = _data(seed=5)
    est = dr.cka(x, y, debiased=True, method="covariance", interval="jackknife", groups=4,
                 permutations=7, seed=9)
    cell = tiled.cka_cells(*_layers(x, y), (True,), groups=4, permutations=7, seed=9,
                           tile=6, chunk_rows=64)[0]
    _close(cell.null, est.null)
    reps = np.asarray(cell.replicates)
    _close(np.sqrt(3 / 4 * np.sum((reps - reps.mean()) ** 2)), est.stderr)


def test_null_and_replicates_do_not_depend_on_the_chunking(small_blocks):
    """Other storage chunks, row chunks, tiles, batches and tree: the same values (to
    rounding); another seed: another null."""
    x, y = _data(seed=6)
    options = {"groups": 5, "permutations": 6, "seed": 11}
    one = tiled.cka_cells(as_layer(da.from_array(x, chunks=(37, 6)), name="x"),
                          as_layer(da.from_array(y, chunks=(23, 13)), name="y"),
                          (False, True), tile=7, chunk_rows=40, split_every=2,
                          budget=8 * 49 * 4, **options)
    other = tiled.cka_cells(*_layers(x, y), (False, True), tile=64, chunk_rows=100,
                            **options)
    for a, b in zip(one, other, strict=True):
        np.testing.assert_allclose(a.null, b.null, rtol=1e-12, atol=0)
        np.testing.assert_allclose(a.replicates, b.replicates, rtol=1e-12, atol=0)
    moved = tiled.cka_cells(*_layers(x, y), (False,), **{**options, "seed": 12}, tile=7)
    assert not np.allclose(moved[0].null, one[0].null)


def test_several_tiles_per_side_are_used(small_blocks, monkeypatch):
    """The tile-pair tasks see 7-, 7- and 6-feature tiles of x and 7- and 6-feature tiles of
    y, for the value with its replicates and for the null, and the results are exact."""
    seen, lock = set(), threading.Lock()
    original = tiled._pair_sum

    def spy(job, pair, means, blocks, starts, finish):
        with lock:
            seen.add((job.perms is not None, len(means[pair.keys[0]]), len(means[pair.keys[1]])))
        return original(job, pair, means, blocks, starts, finish)

    monkeypatch.setattr(tiled, "_pair_sum", spy)
    x, y = _data(seed=7)
    with dask.config.set(scheduler="threads"):
        cell = tiled.cka_cells(*_layers(x, y), (False,), groups=3, permutations=2, seed=0,
                               tile=7, chunk_rows=48)[0]
    cross = {(a, b) for a in (7, 6) for b in (7, 6)}
    assert {(a, b) for null, a, b in seen if null} == cross
    assert {(a, b) for null, a, b in seen if not null} == cross | {(6, 7)}  # x's own a <= b
    perms = _permutations(N, BLOCK, 0, 2)
    _close(cell.null, [ref.linear_cka(x, y[perm]) for perm in perms])
    bounds = group_bounds(N, 3)
    _close(cell.replicates, [ref.linear_cka(np.delete(x, np.s_[a:b], 0),
                                            np.delete(y, np.s_[a:b], 0))
                             for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def test_the_tile_shrinks_to_the_budget():
    """A task's G + 2 products (jackknife) or batch of permuted products stays within the
    budget, with the largest tile that does (between MIN_TILE and the tile asked for)."""
    least = tiled.MIN_TILE
    for tile, groups, k, budget in [(2048, 20, 1000, 2**26), (4096, 50, 10, 2**24),
                                    (300, 2, 3, 2**26), (2048, 200, 10_000, 2**20)]:
        value, null, batch = tiled.inference_shape(tile, groups, k, budget)
        for width, count in ((value, groups + 2), (null, k)):
            assert least <= width <= tile
            assert width == least or 8 * count * width**2 <= budget or width == tile
            assert width == tile or 8 * count * (width + 1) ** 2 > budget or width == least
        assert 1 <= batch <= k
        assert batch == 1 or 8 * batch * null**2 <= budget
        assert batch == k or 8 * (batch + 1) * null**2 > budget
    assert tiled.inference_shape(2048, 20, 0)[0] < tiled.inference_shape(2048, 2, 0)[0] < 2048
    assert tiled.inference_shape(2048, None, 0) == (2048, 2048, 0)


def test_grid_cells_carry_replicates_and_null(small_blocks):
    x, y = _data(seed=8)
    z = x[:, :5] ** 2
    layers = [as_layer(x, name="x"), as_layer(y, name="y"), as_layer(z, name="z")]
    cells, attrs = tiled.kernel_cells([{"debiased": False}, {"debiased": True}], layers, [0, 2],
                                      [1], groups=4, permutations=3, seed=2)
    assert attrs["n_samples"] == N
    for (m, i, _), cell in cells.items():
        a = (x, z)[i]
        assert cell.fields == {"method": "tiled"}
        assert len(cell.replicates) == 4 and len(cell.null) == 3
        _close(cell.null, [CKA[bool(m)](a, y[p]) for p in _permutations(N, BLOCK, 2, 3)])
    plain, _ = tiled.kernel_cells([{"debiased": False}], layers, [0], [1])
    assert plain[0, 0, 0].replicates is None and plain[0, 0, 0].null is None


def test_errors():
    x, y = _data(n=6, p=3, q=2)
    lx, ly = _layers(x, y)
    with pytest.raises(ValueError, match="groups=7 is more than the 6 samples"):
        tiled.cka_cells(lx, ly, (False,), groups=7)
    with pytest.raises(ValueError, match="groups must be an int >= 2 .* not 1"):
        tiled.cka_cells(lx, ly, (False,), groups=1)
    with pytest.raises(ValueError, match=r"groups must be an int >= 2 .* not 2\.5"):
        tiled.cka_cells(lx, ly, (False,), groups=2.5)
    with pytest.raises(ValueError, match="permutations must be an int >= 0, not -1"):
        tiled.cka_cells(lx, ly, (False,), permutations=-1)
    with pytest.raises(ValueError, match="seed must be an int >= 0, not 'a'"):
        tiled.cka_cells(lx, ly, (False,), permutations=2, seed="a")
    with pytest.raises(SampleCountError, match="leaves 3 samples when a group is left out; the "
                       "jackknife replicates of debiased CKA need at least 4: give groups=3"):
        tiled.cka_cells(lx, ly, (True,), groups=2)
    assert len(tiled.cka_cells(lx, ly, (True,), groups=3)[0].replicates) == 3
