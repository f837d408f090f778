"""The feature-tile path in passes: tile pairs packed so that a pass's products fit its limit,
each pair once; row chunks and chunks per task that keep the tasks' rows within half of the
memory budget; and values, replicates and nulls that do not depend on how many passes the
budget asks for (each equal to CKA recomputed in numpy float64)."""

from __future__ import annotations

import itertools

import dask
import numpy as np
import pytest
import references as ref

from dask_repsim.engine.columns import BLOCK_BYTES
from dask_repsim.engine.stream import group_bounds
from dask_repsim.io.inputs import as_layer
from dask_repsim.paths import tiled

N, P, Q = 150, 20, 13


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(N, 4))
    x = z @ rng.normal(size=(4, P)) + rng.normal(size=(N, P)) + 30.0
    y = np.maximum(z @ rng.normal(size=(4, Q)) + rng.normal(size=(N, Q)), 0) - 12.0
    return x, y


def _bytes(pair: tiled._Pair, widths, count: int) -> int:
    (sa, a), (sb, b) = pair.keys
    return 8 * count * widths[sa][a] * widths[sb][b]


@pytest.mark.parametrize("p, q, tile, count, limit", [
    (20, 13, 7, 1, 8 * 49 * 3), (20, 13, 7, 4, 8 * 49 * 3), (4096, 1000, 512, 22, 2**26),
    (100, 100, 100, 1, 1), (5, 5, 5, 1, 10**9),
])
def test_passes_hold_each_pair_once_within_the_limit(p, q, tile, count, limit):
    widths = [tiled._tile_widths(p, tile), tiled._tile_widths(q, tile)]
    assert sum(widths[0]) == p and max(widths[0]) <= tile
    pairs = tiled._pairs(len(widths[0]), len(widths[1]), True)
    nx, ny = len(widths[0]), len(widths[1])
    assert len(pairs) == nx * ny + nx * (nx + 1) // 2 + ny * (ny + 1) // 2
    passes = tiled._passes(pairs, widths, count, limit)
    assert list(itertools.chain(*passes)) == pairs  # each pair once, in order
    for group, after in zip(passes, passes[1:] + [None], strict=True):
        held = sum(_bytes(pair, widths, count) for pair in group)
        assert held <= limit or len(group) == 1
        if after is not None:  # packed: the next pair did not fit
            assert held + _bytes(after[0], widths, count) > limit


def test_symmetric_pairs_count_twice_off_the_diagonal():
    pairs = tiled._pairs(3, 2, True)
    assert {(p.target, p.a, p.b, p.weight) for p in pairs if p.target} == {
        (1, 0, 0, 1), (1, 0, 1, 2), (1, 0, 2, 2), (1, 1, 1, 1), (1, 1, 2, 2), (1, 2, 2, 1),
        (2, 0, 0, 1), (2, 0, 1, 2), (2, 1, 1, 1)}
    assert [p.keys for p in pairs if p.target == 0][:2] == [((0, 0), (1, 0)), ((0, 0), (1, 1))]
    assert tiled._pairs(3, 2, False) == [p for p in pairs if p.target == 0]


@pytest.mark.parametrize("memory, threads, widest", [
    (2**31, 2, 4096), (2**28, 2, 4096), (2**28, 16, 8192), (2**33, 1, 256), (2**20, 4, 2048),
])
def test_layout_keeps_the_tasks_rows_within_half_the_budget(memory, threads, widest):
    n = 1_000_000
    rows, per_task = tiled.layout(n, widest, memory, threads)
    assert 1 <= per_task <= 8 and rows * widest * 8 <= BLOCK_BYTES
    held = threads * (per_task + 1) * rows * widest * 8
    assert held <= memory // 2 or rows == 1
    assert per_task == 8 or threads * (per_task + 2) * rows * widest * 8 > memory // 2
    rows_aligned, _ = tiled.layout(n, widest, memory, threads, aligned=True)
    assert rows_aligned % 2048 == 0 and rows_aligned >= 2048
    assert tiled.layout(n, widest, memory, threads, chunk_rows=300)[0] == 300
    few = tiled.layout(1000, widest, memory, threads, slots=4)  # every slot gets a task
    assert -(-1000 // (few[0] * few[1])) >= 4 or few[0] == 1


def _cells(x, y, **options):
    return tiled.cka_cells(as_layer(x, name="x"), as_layer(y, name="y"), (False, True),
                           tile=7, **options)


@pytest.mark.parametrize("options", [{}, {"groups": 3}, {"permutations": 5, "seed": 4}])
def test_the_values_do_not_depend_on_the_passes(monkeypatch, options):
    """A budget of one 7 x 7 product per pass (15 value passes) and one of all of them (one
    pass) give the same values, replicates and null, each CKA of the kept or permuted samples."""
    x, y = _data(seed=3)
    calls = []
    original = tiled._passes

    def counted(pairs, widths, count, limit):
        found = original(pairs, widths, count, limit)
        calls.extend((len(pairs) == 6, len(group)) for group in found)
        return found

    monkeypatch.setattr(tiled, "_passes", counted)
    count = options.get("groups", 0) + 2 if "groups" in options else options.get(
        "permutations", 1)
    found = {}
    for name, budget in (("one pair", 8 * 49 * count), ("all", 2**30)):
        calls.clear()
        with dask.config.set(scheduler="threads", num_workers=2):
            found[name] = _cells(x, y, chunk_rows=40, budget=budget, **options)
        null = "permutations" in options  # then the null's passes: x against y only (6 pairs)
        passes = [size for of_null, size in calls if of_null == null]
        pairs = 6 if null else 15
        assert passes == ([1] * pairs if name == "one pair" else [pairs]), passes
    for a, b in zip(found["one pair"], found["all"], strict=True):
        assert a.value == pytest.approx(b.value, rel=1e-13)
        for field in ("replicates", "null"):
            if getattr(b, field) is not None:
                np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-12)
    for cell, cka in zip(found["one pair"], (ref.linear_cka, ref.debiased_linear_cka),
                         strict=True):
        assert cell.value == pytest.approx(cka(x, y), rel=1e-10)
        if "groups" in options:
            bounds = group_bounds(N, 3)
            expected = [cka(np.delete(x, np.s_[a:b], 0), np.delete(y, np.s_[a:b], 0))
                        for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            np.testing.assert_allclose(cell.replicates, expected, rtol=1e-10)


def test_the_memory_budget_sets_the_passes(monkeypatch):
    """dask config ``repsim.memory-budget``: a small one makes more passes and smaller row
    chunks, not other values."""
    x, y = _data(seed=5)
    seen = []
    original = tiled._pair_graph

    def counted(tiles, pair, job, split_every):
        seen.append(tiles[0].blocks.shape[0])
        return original(tiles, pair, job, split_every)

    monkeypatch.setattr(tiled, "_pair_graph", counted)
    passes = []
    original_passes = tiled._passes

    def packed(pairs, widths, count, limit):
        found = original_passes(pairs, widths, count, limit)
        passes.extend(len(group) for group in found)
        return found

    monkeypatch.setattr(tiled, "_passes", packed)
    values = {}
    for budget in ("1 GiB", 8 * 8 * 49 * 3):  # the latter: three 7 x 7 products per pass
        seen.clear()
        passes.clear()
        with dask.config.set({"repsim.memory-budget": budget, "scheduler": "threads",
                              "num_workers": 2}):
            values[budget] = [c.value for c in _cells(x, y)]
        assert len(seen) == 15  # every tile pair once
        if budget == "1 GiB":
            assert passes == [15]  # one pass
        else:
            assert passes == [3] * 5
            assert all(chunks > 2 for chunks in seen)  # smaller row chunks too
    np.testing.assert_allclose(values["1 GiB"], values[8 * 8 * 49 * 3], rtol=1e-13)
    np.testing.assert_allclose(values["1 GiB"], [ref.linear_cka(x, y),
                                                 ref.debiased_linear_cka(x, y)], rtol=1e-10)


@pytest.mark.slow
def test_worker_processes_give_the_threaded_values():
    """Two worker processes of 512 MB (a memory budget of 128 MB each, one thread): the passes
    and row chunks follow the workers' budget and threads, the values, replicates and null
    equal the threaded scheduler's to 1e-12."""
    distributed = pytest.importorskip("distributed")
    x, y = _data(seed=8)
    options = {"groups": 4, "permutations": 3, "seed": 2, "budget": 8 * 49 * 6}
    with dask.config.set(scheduler="threads", num_workers=2):
        threaded = _cells(x, y, **options)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="512MB", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        assert tiled.memory_budget() == 128_000_000 and tiled.threads_per_process() == 1
        found = _cells(x, y, **options)
    for a, b in zip(found, threaded, strict=True):
        assert a.value == pytest.approx(b.value, rel=1e-12)
        np.testing.assert_allclose(a.replicates, b.replicates, rtol=1e-12)
        np.testing.assert_allclose(a.null, b.null, rtol=1e-12)
