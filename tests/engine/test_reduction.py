"""The one tree reduction (engine.reduction): its shapes, and that the co-moment pass's chain of
pairwise merges gives the same numbers, bit for bit, as merges of up to SPLIT_EVERY results."""

from __future__ import annotations

import ast
import operator
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from dask_repsim.engine.reduction import SPLIT_EVERY, tree_reduce
from dask_repsim.engine.stream import (
    Partial,
    PassPlan,
    chunk_statistics,
    group_bounds,
    row_block_reduction,
)
from dask_repsim.io.inputs import as_layer

PACKAGE = Path(__file__).resolve().parents[2] / "dask_repsim"


def test_tree_shapes_and_folds():
    parts = [dask.delayed(i) for i in range(20)]
    assert tree_reduce(parts, lambda *xs: sum(xs), name="sum").compute() == 190
    chain = tree_reduce(parts, operator.add, name="add", split_every=3, pairwise=True)
    assert chain.compute() == 190
    graph = dict(chain.__dask_graph__())
    merges = [k for k in graph if str(k).startswith("add-merge")]
    assert len(merges) == 19  # one binary merge per part but the first
    order = tree_reduce([dask.delayed(c) for c in "abcdefghij"], operator.add, name="s",
                        split_every=4, pairwise=True)
    assert order.compute() == "abcdefghij"  # consecutive results, left to right
    one = dask.delayed(7)
    assert tree_reduce([one], operator.add, name="x") is one
    with pytest.raises(ValueError, match="at least 2"):
        tree_reduce(parts, operator.add, name="x", split_every=1)
    with pytest.raises(ValueError, match="at least one part"):
        tree_reduce([], operator.add, name="x")


def _fields(partial: Partial) -> list[np.ndarray]:
    out = []
    for group in sorted(partial):
        s = partial[group]
        out += [s.mean, s.comoment, s.norm_comoment, s.norm_product]
    p = partial.permuted
    return out + [p.cross, p.norm_cross, p.norm_ab, p.norm_ba, partial.aside.rows]


def test_pairwise_chain_equals_merges_of_split_every_bit_for_bit():
    """70 row blocks (two levels of the tree), three sample groups, a null and rows carried
    aside: the chain of binary merges folds the same results in the same order."""
    rng = np.random.default_rng(2)
    data = [rng.normal(size=(7000, p)) * 3 + 5 for p in (4, 6, 3)]
    data[1][[10, 3000], 2] = np.nan
    layers = [as_layer(da.from_array(x, chunks=(c, -1)), name=f"l{i}")
              for i, (x, c) in enumerate(zip(data, (100, 230, 175), strict=True))]
    plan = PassPlan(bounds=group_bounds(7000, 3), wanted=((0, 1), (0, 2), (1, 2)),
                    null=((0,), (1, 2), 3, 1, 100), limit=2**20)
    results = []
    for pairwise in (False, True):
        graph = row_block_reduction(layers, chunk_statistics, Partial.merge, name="t",
                                    args=(plan,), align=100, pairwise=pairwise)
        results.append(_fields(dask.compute(graph, scheduler="sync")[0]))
    assert len(results[0]) == 17 and len(results[0][-1]) == 2  # the two rows carried aside
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def _defined(name: str) -> list[str]:
    """Package modules that define ``name`` at the top level (a function or an assignment)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = ([node.name] if isinstance(node, ast.FunctionDef | ast.ClassDef) else
                     [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)])
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.append(node.target.id)
            if name in names:
                found.append(str(path.relative_to(PACKAGE)))
    return found


def test_one_reduction_and_one_column_layout():
    assert SPLIT_EVERY == 8
    assert _defined("SPLIT_EVERY") == ["engine/reduction.py"]
    assert _defined("column_slices") == ["engine/moments.py"]
    assert _defined("SUB_BLOCK_BYTES") == ["engine/stream.py"]
