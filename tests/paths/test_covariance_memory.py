"""The co-moment path's memory budget bounds the process (:mod:`dask_repsim.engine.memory`).

A grid of two networks whose 1,650 features do not fit one pass under a small budget, on two
threads, with a jackknife (and a permutation null): every array allocated after the imports
(numpy's, zarr's and the package's, in every thread, traced by ``tracemalloc``) stays within
the budget at its peak, and the process's peak RSS within the budget plus the fixed overhead of
the sample-space test (``tests/paths/test_conv_grid.py``, docs/guide/memory.rst).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

import dask_repsim as dr

N = 6000
WIDTHS = {"a": {"conv": 500, "mid": 300, "fc": 100}, "b": {"conv": 400, "mid": 250, "fc": 100}}
#: what a process holds besides the arrays the budget counts: the imports (about 250 MiB),
#: dask, and memory the C allocator keeps after the tasks' buffers are freed
RSS_OVERHEAD = 600 * 2**20

_SCRIPT = textwrap.dedent("""
    import json, sys, tracemalloc, warnings
    import dask, dask_repsim as dr
    tracemalloc.start()  # numpy, zarr and the package's buffers, in every thread
    options = json.loads(sys.argv[4])
    with dask.config.set({"repsim.memory-budget": int(sys.argv[3]), "scheduler": "threads",
                          "num_workers": 2}), warnings.catch_warnings():
        warnings.simplefilter("ignore", dr.RepsimWarning)  # the grid is split into passes
        ds = dr.compare(sys.argv[1], sys.argv[2], metrics=["cka"], method="covariance",
                        **options)
    # the process's own high-water RSS: ru_maxrss would count the parent's RSS at fork
    peak = int([line for line in open('/proc/self/status')
                if line.startswith('VmHWM')][0].split()[1]) * 1024
    print(json.dumps({"peak": peak, "traced": tracemalloc.get_traced_memory()[1],
                      "passes": ds.attrs["n_passes"], "cka": ds.cka.values.tolist()}))
""")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str]:
    """Two networks of ReLU layers sharing a low-rank signal, float32, in 400-row chunks (15 row
    blocks: two levels of the pass's tree)."""
    root = tmp_path_factory.mktemp("covariance_memory")
    rng = np.random.default_rng(4)
    base = rng.normal(size=(N, 16))
    paths = []
    for net, widths in WIDTHS.items():
        group = zarr.open_group(root / f"{net}.zarr", mode="w")
        for name, p in widths.items():
            x = np.maximum(base @ rng.normal(size=(16, p)) + rng.normal(size=(N, p)), 0) + 2
            group.create_array(name, shape=(N, p), chunks=(400, p), dtype="float32",
                               dimension_names=("sample", f"{name}_unit"))[...] = x
        paths.append(str(root / f"{net}.zarr"))
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def one_pass(stores) -> np.ndarray:
    """The grid's CKA from one pass, under the default budget."""
    ds = dr.compare(*stores, metrics=["cka"], method="covariance")
    assert ds.attrs["n_passes"] == 1
    return ds.cka.values


@pytest.mark.parametrize(("options", "budget"), [
    ({}, 160 * 2**20),
    ({"interval": "jackknife", "groups": 10}, 320 * 2**20),
    ({"interval": "jackknife", "groups": 5, "permutations": 4, "seed": 1}, 512 * 2**20),
])
def test_comoment_grid_peak_within_the_budget(stores, one_pass, options, budget):
    """The traced arrays stay within the budget and the RSS within the budget plus the fixed
    overhead; the grid takes several passes, with the values of one pass."""
    out = subprocess.run([sys.executable, "-c", _SCRIPT, *stores, str(budget), json.dumps(options)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["passes"] > 1
    assert result["traced"] < budget, result["traced"] / 2**20
    assert result["peak"] < budget + RSS_OVERHEAD, result["peak"] / 2**20
    np.testing.assert_allclose(result["cka"], one_pass, rtol=1e-12)


def test_the_peak_is_the_childs_own():
    """A child's ``ru_maxrss`` includes its parent's RSS at fork (Linux folds the forked copy's
    high-water mark in at exec), so after a large test suite it would exceed any bound; the
    scripts above read the child's own ``VmHWM`` instead."""
    held = np.ones(2**27)  # 1 GiB touched in this (parent) process
    code = ("import resource\n"
            "own = int([line for line in open('/proc/self/status')\n"
            "           if line.startswith('VmHWM')][0].split()[1]) * 1024\n"
            "print(own, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    own, inherited = map(int, out.stdout.split())
    assert held.sum() == 2**27
    assert own < 200 * 2**20 < 2**30 < inherited
