"""The co-moment pass's memory model (engine.memory): one function, per process, and everything
sized from it stays within the budget."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from dask_repsim.engine import memory, stream
from dask_repsim.engine.parallel import memory_budget
from dask_repsim.io.inputs import as_layer


@pytest.mark.parametrize("threads", [1, 2, 8])
@pytest.mark.parametrize("budget", ["64 MiB", "3 GiB"])
@pytest.mark.parametrize(("groups", "permutations", "aside"), [(1, 0, False), (20, 0, True),
                                                               (5, 50, False)])
def test_what_the_model_sizes_fits_the_budget(threads, budget, groups, permutations, aside):
    """At the widest pass and below it, the sub-blocks and the rows carried aside that the
    model hands out leave the pass within the budget; one feature more does not fit."""
    with dask.config.set({"repsim.memory-budget": budget, "num_workers": threads,
                          "scheduler": "threads"}):
        total = memory_budget()
        widest = memory.max_features(groups=groups, permutations=permutations, aside=aside)
        assert widest > 0
        assert memory.least_budget(widest + 1, groups=groups, permutations=permutations,
                                   aside=aside) > total
        for width in (widest, widest // 2, 10):
            kw = {"groups": groups, "permutations": permutations, "cross": width}
            rows = memory.sub_block_rows(width, **kw)
            limit = memory.aside_limit(width, **kw)
            assert rows >= max(width, memory.MIN_SUB_BLOCK_ROWS)
            assert memory.pass_bytes(width, rows=rows, aside=limit, **kw) <= total or (
                memory.least_budget(width, **kw) > total)  # a null's cross blocks may not fit
            if aside:
                assert limit * 2 * (threads * memory.TASK_COPIES + memory.LEVELS) >= total // 4


def test_the_budget_is_per_process():
    """Each task running at once holds its copies: more threads, narrower passes."""
    one = memory.pass_bytes(1000, threads=1)
    assert memory.pass_bytes(1000, threads=4) - one == 3 * 8 * (
        memory.TASK_COPIES * 1000**2 + 1000**2)  # three more tasks' copies and sub-blocks
    widths = []
    for threads in (1, 2, 4, 8):
        with dask.config.set({"repsim.memory-budget": "1 GiB", "num_workers": threads,
                              "scheduler": "threads"}):
            widths.append(memory.max_features())
    assert widths == sorted(widths, reverse=True) and widths[0] > 1.6 * widths[-1]
    # a jackknife's groups and a null's cross blocks are held too
    assert memory.pass_bytes(1000, threads=2, groups=20) - memory.pass_bytes(1000, threads=2) \
        == 19 * 16 * 1000**2
    assert memory.pass_bytes(1000, threads=2, permutations=10, cross=250_000) > \
        memory.pass_bytes(1000, threads=2, permutations=10)


def test_the_pass_takes_its_sub_blocks_from_the_model(monkeypatch):
    """A pass's tasks centre the sub-blocks the model leaves them, capped at SUB_BLOCK_BYTES."""
    x = np.random.default_rng(0).normal(size=(5000, 300))
    layers = [as_layer(da.from_array(x, chunks=(5000, -1)), name="x"),
              as_layer(da.from_array(x[:, :100] ** 2, chunks=(2500, -1)), name="y")]
    plans = []
    original = stream.chunk_statistics

    def spy(offset, plan, *blocks):
        plans.append(plan)
        return original(offset, plan, *blocks)

    monkeypatch.setattr(stream, "chunk_statistics", spy)
    small = {"repsim.memory-budget": memory.least_budget(400) + 2**20, "num_workers": 2,
             "scheduler": "threads"}
    with dask.config.set(small):
        expected = memory.sub_block_rows(400)
        narrow = stream.comoments(layers)
    assert plans and {p.sub_block for p in plans} == {expected} and 400 <= expected < 2500
    plans.clear()
    wide = stream.comoments(layers)
    assert {p.sub_block for p in plans} == {stream.SUB_BLOCK_BYTES // (8 * 400)}
    np.testing.assert_allclose(narrow.comoment, wide.comoment, rtol=1e-12,
                               atol=1e-12 * np.abs(wide.comoment).max())


@pytest.mark.parametrize("value", ["", "0", "-5 MB", "lots", 0, -1, "  "])
def test_a_budget_that_is_not_a_positive_size_is_an_error(value):
    """An empty or zero budget read as 1 or 0 bytes shrank every tile to its least (the
    environment variable set to nothing gave 1 byte): it is an error naming the setting."""
    with dask.config.set({"repsim.memory-budget": value}), \
            pytest.raises(ValueError, match="repsim.memory-budget' must be a positive size"):
        memory_budget()


@pytest.mark.parametrize("value, expected", [("2 GiB", 2**31), ("512MB", 512 * 10**6),
                                             (12345, 12345)])
def test_a_budget_is_read_as_bytes(value, expected):
    with dask.config.set({"repsim.memory-budget": value}):
        assert memory_budget() == expected
