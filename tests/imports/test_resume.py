"""Every importer: a run killed after some chunks resumes to the store of an uninterrupted
one; a resume from changed files is refused. One real SIGKILL through the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tool_layouts as layouts
import zarr

from dask_repsim import cli
from dask_repsim.capture import store as capture_store
from dask_repsim.imports import common
from dask_repsim.imports.arrays import import_arrays
from dask_repsim.imports.brainscore import import_brainscore
from dask_repsim.imports.net2brain import import_net2brain
from dask_repsim.imports.platonic import import_platonic
from dask_repsim.imports.thingsvision import import_thingsvision

N = 30
ROOT = Path(__file__).resolve().parents[2]


class _Crash(Exception):
    pass


def _arrays(tmp):
    rng = np.random.default_rng(5)
    np.save(tmp / "fc.npy", rng.standard_normal((N, 4)))
    with h5py.File(tmp / "x.h5", "w") as f:
        f.create_dataset("conv/out", data=rng.standard_normal((N, 2, 3)).astype("f4"))
    return import_arrays, tmp


def _thingsvision(tmp):
    layouts.thingsvision_file_names(str(tmp), [f"i{k}.png" for k in range(N)])
    layouts.thingsvision_store_features(str(tmp), np.random.default_rng(6).random((N, 3)),
                                        "txt")
    return import_thingsvision, tmp


def _net2brain(tmp):
    rng = np.random.default_rng(7)
    layouts.net2brain_extract(str(tmp), {f"im{k}.jpg": {"a": rng.random((1, 3)),
                                                          "b": rng.random((1, 2, 2))}
                                         for k in range(N)})
    return import_net2brain, tmp


def _platonic(tmp):
    torch = pytest.importorskip("torch")
    torch.save({"feats": torch.randn(N, 3, 4), "num_params": 7}, tmp / "m_pool-cls.pt")
    return import_platonic, tmp / "m_pool-cls.pt"


def _brainscore(tmp):
    rng = np.random.default_rng(8)
    assembly = layouts.model_tools_assembly({"l1": rng.random((N, 3)), "l2": rng.random((N, 2))},
                                            [f"s{k}.png" for k in range(N)], "net")
    layouts.brainio_write_netcdf(assembly, str(tmp / "a.nc"))
    return import_brainscore, tmp / "a.nc"


@pytest.mark.parametrize("chunks_per_write", [1, 2])
@pytest.mark.parametrize("make", [_arrays, _thingsvision, _net2brain, _platonic, _brainscore])
def test_crash_then_resume_equals_uninterrupted(tmp_path, monkeypatch, make, chunks_per_write):
    monkeypatch.setattr(common, "WRITE_CHUNKS", chunks_per_write)
    (tmp_path / "src").mkdir()
    importer, source = make(tmp_path / "src")
    clean = importer(source, tmp_path / "clean.zarr", chunk_samples=7)
    original, calls = capture_store.ChunkWriter._commit, {"n": 0}

    def failing(self, **changes):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Crash
        return original(self, **changes)

    store = tmp_path / "killed.zarr"
    with monkeypatch.context() as patch:
        patch.setattr(capture_store.ChunkWriter, "_commit", failing)
        with pytest.raises(_Crash):
            importer(source, store, chunk_samples=7)
    state = zarr.open_group(store).attrs["dask_repsim_capture"]
    # two writes of chunks_per_write chunks of 7 samples each were committed before the crash
    assert state["committed"] == 14 * chunks_per_write and not state["complete"]
    resumed = importer(source, store, resume=True)
    assert sorted(resumed.array_keys()) == sorted(clean.array_keys())
    for name in clean.array_keys():
        np.testing.assert_array_equal(resumed[name][...], clean[name][...])
    assert resumed.attrs["dask_repsim_capture"]["complete"]


def test_resume_from_other_files_is_refused(tmp_path, monkeypatch):
    importer, source = _arrays(tmp_path)
    monkeypatch.setattr(capture_store.ChunkWriter, "finish", lambda self: None)  # stops early
    importer(source, tmp_path / "a.zarr", chunk_samples=7)
    monkeypatch.undo()
    np.save(tmp_path / "fc.npy", np.zeros((N, 4)))  # same size, other values
    with pytest.raises(ValueError, match="differs from the interrupted import's .the values "
                                         "of the first samples"):
        importer(source, tmp_path / "a.zarr", resume=True)


def _committed(store: Path) -> int:
    try:
        meta = json.loads((store / "zarr.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return meta.get("attributes", {}).get("dask_repsim_capture", {}).get("committed", 0)


SLOW = """
import sys, time
from dask_repsim.imports import arrays
from dask_repsim import cli
read = arrays.npy_rows
def slow(path, where=None):
    rows = read(path, where)
    fetch = rows.fetch
    rows.fetch = lambda a, b: (time.sleep(0.2), fetch(a, b))[1]
    return rows
arrays.npy_rows = slow
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_through_the_command_line_then_resume(tmp_path):
    data = np.random.default_rng(9).standard_normal((200, 5))
    np.save(tmp_path / "fc.npy", data)
    store = tmp_path / "killed.zarr"
    args = ["import", "arrays", str(tmp_path / "fc.npy"), str(store), "--chunk-samples", "10"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW, *args], stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    try:
        while _committed(store) < 30 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 30 <= _committed(store) < 200
    assert cli.main([*args, "--resume"]) == 0
    np.testing.assert_array_equal(zarr.open_group(store)["fc"][...], data)
