"""Statistics that keep only some cross blocks (what an a-versus-b grid needs)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import dask_repsim as dr
from dask_repsim import RepsimWarning
from dask_repsim.engine.moments import Statistics
from dask_repsim.engine.stream import one_pass
from dask_repsim.engine.views import pair, sides
from dask_repsim.io.inputs import as_layer

SIZES = (3, 4, 2, 5)
KEPT = [(0, 2), (3, 1)]


def _data(n: int = 240, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 2))
    return [
        5.0 + shared @ rng.normal(size=(2, p)) + rng.normal(size=(n, p)) for p in SIZES
    ]


def _bounds() -> np.ndarray:
    return np.cumsum((0,) + SIZES)


def test_chunk_keeps_diagonal_and_requested_blocks_only():
    blocks = _data()
    stats = Statistics.from_chunk(blocks, pairs=KEPT)
    z = np.hstack(blocks)
    full = (z - z.mean(0)).T @ (z - z.mean(0))
    b = _bounds()
    for i in range(len(SIZES)):
        for j in range(len(SIZES)):
            block = stats.comoment[b[i] : b[i + 1], b[j] : b[j + 1]]
            if i == j or (min(i, j), max(i, j)) in {(0, 2), (1, 3)}:
                np.testing.assert_allclose(block, full[b[i] : b[i + 1], b[j] : b[j + 1]])
                assert stats.has_pair(i, j)
            else:
                assert np.isnan(block).all()
                assert not stats.has_pair(i, j)


def test_all_pairs_is_the_full_product():
    blocks = _data()
    every = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    stats = Statistics.from_chunk(blocks, pairs=every)
    assert stats.pairs is None and np.isfinite(stats.comoment).all()


@pytest.mark.parametrize("groups", [1, 3])
def test_merged_blocks_equal_the_full_pass(groups):
    """Chunk merges (the pairwise update) and sample groups keep the kept blocks exact."""
    layers = [
        as_layer(da.from_array(x, chunks=(37, -1)), name=f"l{i}") for i, x in enumerate(_data())
    ]
    full, _ = one_pass(layers, groups=groups)
    sparse, _ = one_pass(layers, groups=groups, pairs=KEPT)
    b = _bounds()
    for f, s in zip(full, sparse, strict=True):
        assert s.count == f.count
        np.testing.assert_allclose(s.mean, f.mean, rtol=1e-13)
        for i, j in [(0, 0), (1, 1), (2, 2), (3, 3), (0, 2), (2, 0), (1, 3), (3, 1)]:
            rows, cols = slice(b[i], b[i + 1]), slice(b[j], b[j + 1])
            np.testing.assert_allclose(s.comoment[rows, cols], f.comoment[rows, cols], rtol=1e-12)
            np.testing.assert_allclose(s.norm_product[i, j], f.norm_product[i, j], rtol=1e-12)
            np.testing.assert_allclose(
                s.norm_comoment[i, cols], f.norm_comoment[i, cols], rtol=1e-12, atol=1e-9
            )


def test_pair_refuses_a_block_that_was_not_computed():
    stats = Statistics.from_chunk(_data(), pairs=KEPT)
    layer_sides = sides(stats, ["a", "b", "c", "d"])
    assert pair(stats, layer_sides, 2, 0).cross.shape == (2, 3)
    with pytest.raises(ValueError, match="no cross block of layers 0 and 1"):
        pair(stats, layer_sides, 0, 1)


def test_two_network_grid_equals_pairwise_functions():
    """compare(a, b) computes only a x b cross blocks; its cells equal the pairwise functions."""
    data = _data(n=300, seed=1)
    a = {"a0": data[0], "a1": data[1]}
    b = {"b0": data[2], "b1": data[3]}
    grid = dr.compare(a, b, metrics=["cka", "cka_debiased", "pwcca", "mean_cca"])
    for na, xa in a.items():
        for nb, xb in b.items():
            cell = grid.sel(layer_a=na, layer_b=nb)
            assert float(cell["cka"]) == pytest.approx(float(dr.cka(xa, xb)), abs=1e-12)
            assert float(cell["cka_debiased"]) == pytest.approx(
                float(dr.cka(xa, xb, debiased=True)), abs=1e-12
            )
            assert float(cell["pwcca"]) == pytest.approx(float(dr.pwcca(xa, xb)), abs=1e-12)
            assert float(cell["mean_cca"]) == pytest.approx(dr.cca(xa, xb).mean, abs=1e-12)


def test_long_chunks_are_taken_in_sub_blocks_with_the_same_result(monkeypatch):
    """A stored chunk longer than the sub-block is centred piecewise and merged: same numbers,
    the same first non-finite sample, the same omitted count."""
    from dask_repsim.engine import stream as statistics

    data = _data(n=2000, seed=3)
    data[1][1500, 2] = np.nan
    layers = [
        as_layer(da.from_array(x, chunks=(1000, -1)), name=f"l{i}") for i, x in enumerate(data)
    ]
    with pytest.warns(RepsimWarning, match="left out 1 of 2000"):
        whole, _ = one_pass(layers, groups=3, nan_policy="omit", pairs=KEPT)
    with pytest.raises(ValueError, match="l1 has NaN at sample 1500"):
        one_pass(layers)
    monkeypatch.setattr(statistics, "SUB_BLOCK_BYTES", 1)  # 256-row sub-blocks
    with pytest.warns(RepsimWarning, match="left out 1 of 2000"):
        pieces, _ = one_pass(layers, groups=3, nan_policy="omit", pairs=KEPT)
    with pytest.raises(ValueError, match="l1 has NaN at sample 1500"):
        one_pass(layers)
    for w, p in zip(whole, pieces, strict=True):
        assert (p.count, p.omitted) == (w.count, w.omitted)
        finite = np.isfinite(w.comoment)
        np.testing.assert_array_equal(finite, np.isfinite(p.comoment))
        np.testing.assert_allclose(p.comoment[finite], w.comoment[finite], rtol=1e-12)
        np.testing.assert_allclose(p.norm_product, w.norm_product, rtol=1e-12)
    assert sum(w.omitted for w in whole) == 1


def test_select_is_the_statistics_of_those_layers_alone():
    blocks = _data()
    stats = Statistics.from_chunk(blocks, pairs=KEPT)
    part = stats.select([3, 1, 2])
    direct = Statistics.from_chunk([blocks[3], blocks[1], blocks[2]])
    assert part.sizes == (5, 4, 2) and part.count == direct.count
    assert part.has_pair(0, 1) and not part.has_pair(0, 2) and not part.has_pair(1, 2)
    np.testing.assert_allclose(part.mean, direct.mean, rtol=1e-14)
    finite = np.isfinite(part.comoment)
    assert finite[:9, :9].all() and not finite[:5, 9:].any()
    np.testing.assert_allclose(part.comoment[finite], direct.comoment[finite], rtol=1e-12)
    np.testing.assert_allclose(part.norm_product[0, 1], direct.norm_product[0, 1], rtol=1e-12)
    np.testing.assert_allclose(np.diag(part.norm_product), np.diag(direct.norm_product))


def test_permuted_select_is_the_null_of_those_layers_alone():
    from dask_repsim.engine.moments import Centred
    from dask_repsim.engine.permuted import Permuted, block_permutations

    blocks = _data(n=90)
    perms = block_permutations(1, 0, 90, 3)
    full = Permuted.from_centred(Centred.of(blocks, 0), [0, 1], [2, 3, 1], perms)
    alone = Permuted.from_centred(Centred.of([blocks[1], blocks[3]], 0), [0], [1], perms)
    part = full.select([1], [1])
    for name in ("cross", "norm_cross", "norm_ab", "norm_ba", "mean_a", "mean_b", "trace_b"):
        np.testing.assert_allclose(getattr(part, name), getattr(alone, name), rtol=1e-12)
