"""Peak memory of importing a 4 GB ``.npy`` file (and an HDF5 one) into a capture store.

Writes the array chunk by chunk (never whole in memory) into a temporary folder on local disk,
then runs :func:`dask_repsim.imports.arrays.import_arrays` in a child process and reads the
child's peak resident set size (``ru_maxrss`` of the waited-for child) and wall time. The
import streams one chunk at a time, so its peak must stay far below the file's size: PASS
when it is under 1 GB. Beside it, in the same run and conditions (the file in the page cache):
the floor, one read pass over the ``.npy`` file chunk by chunk in a child that writes nothing;
and the baseline a user would write, ``numpy.load`` of the whole file and one
``zarr.create_array(data=...)`` with the same chunks, in memory. The report goes to
``benchmarks/results/import_4gb.txt``::

    python benchmarks/bench_import.py [--gb 4] [--hdf5] [--out benchmarks/results/import_4gb.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

LIMIT = 2**30  # peak RSS that passes
WIDTH = 4096  # float32 features per sample
CHILD = """
import sys
from dask_repsim.imports.arrays import import_arrays
group = import_arrays(sys.argv[1], sys.argv[2])
print(group["{layer}"].shape, group["{layer}"].chunks)
"""
#: the floor: one read of every byte of the .npy file, a chunk of rows at a time
READ = """
import sys, numpy as np
a = np.load(sys.argv[1] + "/layer.npy", mmap_mode="r")
total = 0.0
for start in range(0, a.shape[0], 2048):
    total += float(np.asarray(a[start:start + 2048], dtype=np.float64).sum())
print(a.shape, round(total, 3))
"""
#: the baseline: the whole array in memory, then one zarr write with the importer's chunks
NAIVE = """
import sys, numpy as np, zarr
a = np.load(sys.argv[1] + "/layer.npy")
zarr.create_array(sys.argv[2], data=a, chunks=(2048, a.shape[1]), zarr_format=3)
print(a.shape)
"""


def write_npy(path: Path, n: int) -> None:
    """A float32 (n, WIDTH) array written block by block with plain writes (no memory map:
    a child inherits its parent's peak RSS on Linux, so this process must stay small)."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n, WIDTH)})
        for start in range(0, n, 8192):
            stop = min(start + 8192, n)
            f.write(rng.standard_normal((stop - start, WIDTH), dtype=np.float32).tobytes())


def write_hdf5(path: Path, n: int) -> None:
    import h5py

    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("layer", shape=(n, WIDTH), dtype=np.float32)
        for start in range(0, n, 8192):
            stop = min(start + 8192, n)
            data[start:stop] = rng.standard_normal((stop - start, WIDTH), dtype=np.float32)


def run_child(source: Path, store: Path, layer: str, script: str | None = None,
              ) -> tuple[float, int, str]:
    """Wall seconds, peak RSS bytes of the child, and its output."""
    script = script or CHILD.format(layer=layer)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", script, str(source), str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise SystemExit(f"import failed: {err}")
    return wall, usage.ru_maxrss * 1024, out.strip()  # ru_maxrss is in KiB on Linux


def _beside(sub: Path, folder: Path, wall: float) -> list[str]:
    """The floor (a read pass) and the in-memory baseline on the same .npy file."""
    read, read_peak, _ = run_child(sub, folder, "", READ)
    naive, naive_peak, _ = run_child(sub, folder / "naive.zarr", "", NAIVE)
    shutil.rmtree(folder / "naive.zarr")
    return [f"npy floor (one read pass, chunk by chunk): {read:.1f} s, peak RSS "
            f"{read_peak / 2**20:.0f} MiB; the import took {wall / read:.2f} x the floor",
            f"npy baseline (numpy.load whole + zarr.create_array): {naive:.1f} s, peak RSS "
            f"{naive_peak / 2**20:.0f} MiB; the import took {wall / naive:.2f} x its time"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=4.0)
    parser.add_argument("--hdf5", action="store_true", help="also import an HDF5 file")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" /
                        "import_4gb.txt")
    args = parser.parse_args()
    n = int(args.gb * 1e9 / (WIDTH * 4))
    folder = Path(tempfile.mkdtemp(prefix="bench_import_"))
    lines = [f"command: python {' '.join(sys.argv)}",
             f"date: {datetime.now(UTC).isoformat(timespec='seconds')}",
             f"machine: {platform.machine()}, {os.cpu_count()} CPUs (nproc), "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM, "
             f"python {platform.python_version()}, numpy {np.__version__}"]
    ok = True
    try:
        cases = [("npy", folder / "npy", "layer.npy", write_npy)]
        if args.hdf5:
            cases.append(("hdf5", folder / "h5", "acts.h5", write_hdf5))
        for kind, sub, name, write in cases:
            sub.mkdir()
            start = time.perf_counter()
            write(sub / name, n)
            size = (sub / name).stat().st_size
            written = time.perf_counter() - start
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            wall, peak, out = run_child(sub, folder / f"{kind}.zarr", "layer")
            passed = peak < LIMIT
            ok &= passed
            lines.append(
                f"{kind}: source {size / 1e9:.2f} GB ({n} x {WIDTH} float32, written in "
                f"{written:.0f} s); import wall {wall:.1f} s ({size / 1e6 / wall:.0f} MB/s), "
                f"child peak RSS {peak / 2**20:.0f} MiB -> {'PASS' if passed else 'FAIL'} "
                f"(< {LIMIT / 2**20:.0f} MiB; the parent's own peak, which a child starts "
                f"from, was {before / 2**20:.0f} MiB); store shape, chunks {out}")
            shutil.rmtree(folder / f"{kind}.zarr")
            if kind == "npy":
                lines.extend(_beside(sub, folder, wall))
            (sub / name).unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines.append("PASS" if ok else "FAIL")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
