"""A pair's statistics from a pass depend only on the pair: not on the other layers in the pass,
the storage chunking or the memory budget. Checked against float64 numpy on explicit rows."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import write_zarr

from dask_repsim import RepsimWarning
from dask_repsim.engine import moments
from dask_repsim.engine import permuted as permuted_module
from dask_repsim.engine import stream as statistics
from dask_repsim.exceptions import NonFiniteError, NoVarianceError, SampleCountError
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths.covariance.passes import run_pass

N = 700
BLOCK = 50  # permutation blocks in these tests: several per chunk, chunks not aligned to them


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(permuted_module, "PERMUTATION_BLOCK", BLOCK)


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    """Related layers with large, different means (ReLU-like x)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(N, 3))
    x = np.maximum(latent @ rng.normal(size=(3, 5)) + rng.normal(size=(N, 5)), 0) + 40.0
    y = latent @ rng.normal(size=(3, 4)) + 2 * rng.normal(size=(N, 4)) - 15.0
    z = rng.normal(size=(N, 6)) + latent[:, :1]
    w = rng.normal(size=(N, 3)) * 3 + 100.0
    return {"x": x, "y": y, "z": z, "w": w}


def _layer(name: str, data: np.ndarray, chunks) -> object:
    return as_layer(da.from_array(data, chunks=(chunks, -1)), name=name)


def _reference(x: np.ndarray, y: np.ndarray) -> dict[str, object]:
    """What a Pair holds, from numpy: centred cross products and squared row norms."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    rx, ry = (xc**2).sum(1), (yc**2).sum(1)
    return {
        "count": len(x), "mean_x": x.mean(0), "mean_y": y.mean(0), "xx": xc.T @ xc,
        "yy": yc.T @ yc, "cross": xc.T @ yc, "norm_xy": rx @ ry, "norm_xx": rx @ rx,
        "norm_yy": ry @ ry,
    }


def _fields(p) -> dict[str, object]:
    return {
        "count": p.count, "mean_x": p.x.mean, "mean_y": p.y.mean, "xx": p.x.comoment,
        "yy": p.y.comoment, "cross": p.cross, "norm_xy": p.norm_xy, "norm_xx": p.norm_xx,
        "norm_yy": p.norm_yy,
    }


def _assert_same(got: dict, expected: dict, rtol: float) -> None:
    assert got["count"] == expected["count"]
    for key in expected:
        if key == "count":
            continue
        e = np.asarray(expected[key], dtype=np.float64)
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(got[key], e, rtol=rtol, atol=rtol * scale, err_msg=key)


def _block_permutation(n: int, seed: int, k: int, keep: np.ndarray | None = None):
    """Per permutation, (rows of x, rows of y paired with them): each block of BLOCK samples
    permuted by default_rng([seed, first]).permutation; with ``keep``, the kept rows of a block
    are paired in the order that permutation visits them."""
    keep = np.ones(n, dtype=bool) if keep is None else keep
    xs, ys = [[] for _ in range(k)], [[] for _ in range(k)]
    for first in range(0, n, BLOCK):
        size = min(BLOCK, n - first)
        rng = np.random.default_rng([seed, first])
        kept = [first + i for i in range(size) if keep[first + i]]
        for i in range(k):
            perm = first + rng.permutation(size)
            xs[i] += kept
            ys[i] += [int(j) for j in perm if keep[j]]
    return [(np.array(a, dtype=int), np.array(b, dtype=int)) for a, b in zip(xs, ys, strict=True)]


# ------------------------------------------------------------------------ (a) permutation nulls


@pytest.mark.parametrize("chunks_x,chunks_y", [(100, 100), (64, 175), (333, 41)])
def test_null_of_a_pair_does_not_depend_on_other_layers_or_chunking(chunks_x, chunks_y):
    d = _data(1)
    k, seed = 6, 3
    alone = run_pass(
        [_layer("x", d["x"], 90), _layer("y", d["y"], 120)], permute=([0], [1], k, seed)
    ).null(0, 1)
    layers = [
        _layer("z", d["z"], 37), _layer("x", d["x"], chunks_x), _layer("w", d["w"], 260),
        _layer("y", d["y"], chunks_y),
    ]
    grid = run_pass(layers, permute=([0, 1], [3, 2], k, seed)).null(1, 3)
    assert len(alone) == len(grid) == k
    for a, g in zip(alone, grid, strict=True):
        _assert_same(_fields(g), _fields(a), rtol=1e-12)


def test_null_is_the_same_from_zarr_with_other_chunkings(tmp_path):
    d = _data(2)
    for name, chunks in (("x", 128), ("y", 100), ("z", 30)):
        write_zarr(tmp_path / "a.zarr", name, d[name], chunks=(chunks, 2))
    for name, chunks in (("x", 77), ("y", 250)):
        write_zarr(tmp_path / "b.zarr", name, d[name], chunks=(chunks, 3))
    first, second = zarr.open_group(tmp_path / "a.zarr"), zarr.open_group(tmp_path / "b.zarr")
    k, seed = 4, 11
    with dask.config.set(scheduler="threads"):
        one = run_pass(
            [as_layer(first[n], name=n) for n in ("z", "x", "y")], permute=([1], [2], k, seed)
        )
        two = run_pass(
            [as_layer(second[n], name=n) for n in ("x", "y")], permute=([0], [1], k, seed)
        )
    for a, b in zip(one.null(1, 2), two.null(0, 1), strict=True):
        _assert_same(_fields(a), _fields(b), rtol=1e-12)


# ---------------------------------------------------- (c) null against explicitly permuted rows


def test_null_equals_numpy_on_rows_permuted_within_blocks():
    d = _data(3)
    k, seed = 5, 7
    result = run_pass(
        [_layer("x", d["x"], 130), _layer("z", d["z"], 45), _layer("y", d["y"], 210)],
        permute=([0, 1], [2], k, seed),
    )
    for a in (0, 1):
        source = d["x"] if a == 0 else d["z"]
        null = result.null(a, 2)
        for p, (rows_x, rows_y) in zip(null, _block_permutation(N, seed, k), strict=True):
            np.testing.assert_array_equal(rows_x, np.arange(N))
            _assert_same(_fields(p), _reference(source, d["y"][rows_y]), rtol=1e-10)
    # the permutations really differ from the identity and from each other
    crosses = [p.cross for p in result.null(0, 2)]
    assert not np.allclose(crosses[0], crosses[1])
    assert not np.allclose(crosses[0], result.pair(0, 2).cross)


def test_rows_of_a_block_stay_in_their_block():
    """Under every permutation, a block's x rows meet only y rows of the same block."""
    d = _data(4)
    y = np.zeros((N, 1))
    y[:BLOCK] = 1.0  # an indicator of the first block
    x = y + 1e-3 * d["x"][:, :1]
    result = run_pass([_layer("x", x, 90), _layer("y", y, 90)], permute=([0], [1], 3, 0))
    observed = result.pair(0, 1).cross
    for p in result.null(0, 1):
        # sum over the first block of x_i * y_perm(i) is unchanged when y's 1s stay in it
        np.testing.assert_allclose(p.cross, observed, rtol=1e-6)


# ------------------------------------------------------------------ (b) pairwise deletion


def _with_nans(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    d = {name: a.copy() for name, a in d.items()}
    d["x"][[3, 120, 121, 650], 1] = np.nan
    d["y"][[120, 400], 0] = np.inf
    d["z"][[5, 6, 7, 300, 301, 555], 2] = np.nan  # only z: not x's or y's business
    d["w"][:40, 0] = -np.inf
    d["w"][[3, 500], 1] = np.nan
    return d


def test_omit_gives_each_pair_the_samples_finite_in_both():
    d = _with_nans(_data(5))
    keep = np.isfinite(d["x"]).all(1) & np.isfinite(d["y"]).all(1)
    with pytest.warns(RepsimWarning, match="left out 5 of 700 samples"):
        alone = run_pass(
            [_layer("x", d["x"], 100), _layer("y", d["y"], 64)], nan_policy="omit"
        )
    note = r"left out 48 of 700 .*: z at 6 samples, x at 4, w at 41, y at 2"
    with pytest.warns(RepsimWarning, match=note):
        crowd = run_pass(
            [_layer(n, d[n], c) for n, c in (("z", 33), ("x", 250), ("w", 71), ("y", 128))],
            nan_policy="omit",
        )
    expected = _reference(d["x"][keep], d["y"][keep])
    _assert_same(_fields(alone.pair(0, 1)), expected, rtol=1e-10)
    _assert_same(_fields(crowd.pair(1, 3)), _fields(alone.pair(0, 1)), rtol=1e-12)
    assert crowd.count(1, 3) == alone.count(0, 1) == keep.sum() == N - 5
    assert crowd.omitted(1, 3) == 5
    # other pairs: their own samples
    for a, b, na, nb in ((0, 2, "z", "w"), (0, 1, "z", "x"), (3, 1, "y", "x")):
        both = np.isfinite(d[na]).all(1) & np.isfinite(d[nb]).all(1)
        _assert_same(
            _fields(crowd.pair(a, b)), _reference(d[na][both], d[nb][both]), rtol=1e-10
        )
        assert crowd.count(a, b) == both.sum()
    # by default a pass serves distinct layers: w with itself would miss w's samples that are
    # bad elsewhere only, so it is refused rather than computed from too few samples
    with pytest.raises(ValueError, match=r"did not compute the pair \(w, w\)"):
        crowd.pair(2, 2)


def test_a_layer_with_itself_needs_no_listing_when_it_lost_nothing():
    d = _with_nans(_data(17))
    with pytest.warns(RepsimWarning, match="left out 4 of 700"):
        single = run_pass([_layer("x", d["x"], 100)], nan_policy="omit")
    keep = np.isfinite(d["x"]).all(1)
    _assert_same(_fields(single.pair(0, 0)), _reference(d["x"][keep], d["x"][keep]), 1e-10)
    x = d["x"].copy()
    x[np.isfinite(d["y"]).all(1) == 0] = np.nan  # every sample bad in y is bad in x too
    with pytest.warns(RepsimWarning):
        result = run_pass([_layer("x", x, 100), _layer("y", d["y"], 64)], nan_policy="omit")
    keep = np.isfinite(x).all(1)
    _assert_same(_fields(result.pair(0, 0)), _reference(x[keep], x[keep]), 1e-10)
    with pytest.raises(ValueError, match=r"did not compute the pair \(y, y\)"):
        result.pair(1, 1)


@pytest.mark.parametrize("groups", [4, 7])
def test_omit_jackknife_replicates_leave_out_the_group_and_the_pairs_bad_samples(groups):
    d = _with_nans(_data(6))
    layers = [_layer(n, d[n], c) for n, c in (("w", 90), ("x", 64), ("z", 200), ("y", 111))]
    with pytest.warns(RepsimWarning):
        crowd = run_pass(layers, groups=groups, nan_policy="omit")
        alone = run_pass([layers[1], layers[3]], groups=groups, nan_policy="omit")
    bounds = np.linspace(0, N, groups + 1).round().astype(int)
    finite = np.isfinite(d["x"]).all(1) & np.isfinite(d["y"]).all(1)
    reps, reps_alone = crowd.replicates(1, 3), alone.replicates(0, 1)
    assert len(reps) == groups
    for g in range(groups):
        keep = finite.copy()
        keep[bounds[g] : bounds[g + 1]] = False
        expected = _reference(d["x"][keep], d["y"][keep])
        _assert_same(_fields(reps[g]), expected, rtol=1e-10)
        _assert_same(_fields(reps[g]), _fields(reps_alone[g]), rtol=1e-12)
    both = np.isfinite(d["z"]).all(1) & np.isfinite(d["w"]).all(1)
    for g, rep in enumerate(crowd.replicates(2, 0)):
        keep = both.copy()
        keep[bounds[g] : bounds[g + 1]] = False
        _assert_same(_fields(rep), _reference(d["z"][keep], d["w"][keep]), rtol=1e-10)


def test_omit_null_permutes_the_rows_finite_in_both():
    d = _with_nans(_data(7))
    k, seed = 4, 5
    with pytest.warns(RepsimWarning):
        alone = run_pass(
            [_layer("x", d["x"], 140), _layer("y", d["y"], 140)], nan_policy="omit",
            permute=([0], [1], k, seed),
        )
        crowd = run_pass(
            [_layer(n, d[n], c) for n, c in (("x", 64), ("z", 100), ("y", 333), ("w", 50))],
            nan_policy="omit", permute=([0, 1], [2, 3], k, seed),
        )
    for a, b, na, nb in ((0, 2, "x", "y"), (1, 3, "z", "w"), (0, 3, "x", "w")):
        keep = np.isfinite(d[na]).all(1) & np.isfinite(d[nb]).all(1)
        null = crowd.null(a, b)
        for p, (rows_x, rows_y) in zip(null, _block_permutation(N, seed, k, keep), strict=True):
            _assert_same(_fields(p), _reference(d[na][rows_x], d[nb][rows_y]), rtol=1e-10)
    for p, q in zip(alone.null(0, 1), crowd.null(0, 2), strict=True):
        _assert_same(_fields(q), _fields(p), rtol=1e-12)


def test_restricted_permutation_is_the_block_permutation_without_bad_rows():
    d = _data(8)
    k, seed = 3, 2
    clean = run_pass(
        [_layer("x", d["x"], 100), _layer("y", d["y"], 100)], permute=([0], [1], k, seed)
    )
    for p, (rows_x, rows_y) in zip(clean.null(0, 1), _block_permutation(N, seed, k), strict=True):
        _assert_same(_fields(p), _reference(d["x"][rows_x], d["y"][rows_y]), rtol=1e-10)


def test_omit_values_do_not_depend_on_the_memory_budget(monkeypatch):
    d = _with_nans(_data(9))
    layers = [_layer(n, d[n], c) for n, c in (("x", 350), ("z", 700), ("y", 175))]
    with pytest.warns(RepsimWarning):
        big = run_pass(layers, groups=3, nan_policy="omit", permute=([0], [2], 3, 1))
    monkeypatch.setattr(statistics, "SUB_BLOCK_BYTES", 1)  # 256-row sub-blocks
    with pytest.warns(RepsimWarning):
        small = run_pass(layers, groups=3, nan_policy="omit", permute=([0], [2], 3, 1))
    _assert_same(_fields(small.pair(0, 2)), _fields(big.pair(0, 2)), rtol=1e-12)
    for a, b in zip(small.replicates(0, 2), big.replicates(0, 2), strict=True):
        _assert_same(_fields(a), _fields(b), rtol=1e-12)
    for a, b in zip(small.null(0, 2), big.null(0, 2), strict=True):
        _assert_same(_fields(a), _fields(b), rtol=1e-12)


def test_too_many_partly_finite_samples_for_the_budget_is_a_clear_error():
    d = _data(10)
    x = d["x"].copy()
    x[::3, 0] = np.nan  # a third of the samples, finite in y
    layers = [_layer("x", x, 100), _layer("y", d["y"], 100), _layer("z", d["z"], 100)]
    with dask.config.set({"repsim.memory-budget": 9 * 2000}):
        with pytest.raises(ValueError, match=r"234 samples have NaN or Inf in some layers but"):
            run_pass(layers, nan_policy="omit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        result = run_pass(layers, nan_policy="omit")  # the default budget holds them
    assert result.count(1, 2) == N and result.count(0, 1) == N - 234


def test_errors_are_the_shared_input_errors():
    d = _data(11)
    x = d["x"].copy()
    x[17, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"^x has NaN at sample 17\b"):
        run_pass([_layer("x", x, 100), _layer("y", d["y"], 64)])
    with pytest.raises(SampleCountError, match=r"x has 700.*y has 600"):
        run_pass([_layer("x", d["x"], 100), _layer("y", d["y"][:600], 64)])
    y = d["y"].copy()
    x[::2] = np.nan
    y[1::2] = np.nan
    with pytest.warns(RepsimWarning, match="left out 700 of 700"):
        result = run_pass([_layer("x", x, 100), _layer("y", y, 64)], nan_policy="omit")
    assert result.count(0, 1) == 0
    with pytest.raises(NonFiniteError, match="no samples left for x and y"):
        result.pair(0, 1)
    constant = np.full((N, 2), 3.0)
    p = run_pass([_layer("x", d["x"], 100), _layer("c", constant, 100)]).pair(0, 1)
    with pytest.raises(NoVarianceError, match="c has no variance: all 2 units are constant"):
        p.y.require_variance()


def test_offset_activations_are_not_constant():
    """Unit-variance activations offset by 1e9 vary: only the shared rule says constant."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(N, 3)) + 1e9
    x[:, 2] = 1e9
    p = run_pass([_layer("x", x, 128), _layer("y", rng.normal(size=(N, 2)), 128)]).pair(0, 1)
    assert p.x.constant.tolist() == [False, False, True]


# ------------------------------------------------------------------ (d) a task's memory bound


def test_tasks_centre_at_most_a_sub_block_or_a_permutation_block(monkeypatch):
    d = _data(13)
    layers = [_layer("x", d["x"], 700), _layer("y", d["y"], 700)]  # one stored chunk
    k, seed = 3, 4
    reference = run_pass(layers, groups=2, permute=([0], [1], k, seed))
    sizes = []
    original = moments.Centred.of.__func__

    def spy(cls, blocks, offset, aside=False):
        sizes.append(blocks[0].shape[0])
        return original(cls, blocks, offset, aside)

    monkeypatch.setattr(moments.Centred, "of", classmethod(spy))
    monkeypatch.setattr(statistics, "SUB_BLOCK_BYTES", 1)  # 256-row sub-blocks
    with dask.config.set(scheduler="synchronous"):
        pieces = run_pass(layers, groups=2, permute=([0], [1], k, seed))
    assert sizes and max(sizes) <= 256, max(sizes)
    assert sum(s for s in sizes if s <= BLOCK) >= N  # the null: one block of 50 at a time
    _assert_same(_fields(pieces.pair(0, 1)), _fields(reference.pair(0, 1)), rtol=1e-12)
    for a, b in zip(pieces.null(0, 1), reference.null(0, 1), strict=True):
        _assert_same(_fields(a), _fields(b), rtol=1e-12)
    for a, b in zip(pieces.replicates(0, 1), reference.replicates(0, 1), strict=True):
        _assert_same(_fields(a), _fields(b), rtol=1e-12)


def test_permutation_blocks_still_read_each_stored_chunk_once(counting_store):
    from test_single_pass import _chunk_keys

    d = _data(14)
    write_zarr(counting_store, "x", d["x"], chunks=(128, 2))  # not multiples of BLOCK
    write_zarr(counting_store, "y", d["y"], chunks=(99, 4))
    counting_store.reads.clear()
    group = zarr.open_group(counting_store, mode="r")
    with dask.config.set(scheduler="threads"):
        result = run_pass(
            [as_layer(group["x"], name="x"), as_layer(group["y"], name="y")], groups=3,
            permute=([0], [1], 3, 8),
        )
        null = result.null(0, 1)
    reads = counting_store.chunk_reads()
    assert set(reads) == _chunk_keys(group)
    assert max(reads.values()) == 1
    for p, (rows_x, rows_y) in zip(null, _block_permutation(N, 8, 3), strict=True):
        _assert_same(_fields(p), _reference(d["x"][rows_x], d["y"][rows_y]), rtol=1e-10)


def test_a_pass_limited_to_pairs_refuses_pairs_it_did_not_compute():
    d = _with_nans(_data(15))
    layers = [_layer(n, d[n], 100) for n in ("x", "y", "z")]
    with pytest.warns(RepsimWarning):
        result = run_pass(layers, nan_policy="omit", pairs=[(0, 1), (2, 2)])
    both = np.isfinite(d["z"]).all(1)
    _assert_same(_fields(result.pair(2, 2)), _reference(d["z"][both], d["z"][both]), 1e-10)
    with pytest.raises(ValueError, match=r"did not compute the pair \(x, x\)"):
        result.pair(0, 0)  # x's rows that are bad in y only were not kept for it
    with pytest.raises(ValueError, match=r"did not compute the pair \(x, z\)"):
        result.pair(0, 2)


def test_omit_null_when_every_permutation_block_is_carried_aside():
    """NaN in z in every block: each block of the (x, y) null is computed from its raw rows."""
    d = _data(16)
    z = d["z"].copy()
    z[::7, 0] = np.nan
    k, seed = 3, 9
    with pytest.warns(RepsimWarning, match="left out 100 of 700"):
        result = run_pass(
            [_layer("x", d["x"], 128), _layer("y", d["y"], 99), _layer("z", z, 64)],
            nan_policy="omit", permute=([0], [1, 2], k, seed),
        )
    assert result.permuted is None  # nothing permuted in the tasks: all blocks came back raw
    for p, (rows_x, rows_y) in zip(result.null(0, 1), _block_permutation(N, seed, k), strict=True):
        _assert_same(_fields(p), _reference(d["x"][rows_x], d["y"][rows_y]), rtol=1e-10)
    keep = np.isfinite(z).all(1)
    for p, (rows_x, rows_z) in zip(
        result.null(0, 2), _block_permutation(N, seed, k, keep), strict=True
    ):
        _assert_same(_fields(p), _reference(d["x"][rows_x], z[rows_z]), rtol=1e-10)
