"""Compare two networks' layers on a SLURM cluster, with workers submitted by dask-jobqueue.

::

    python deploy/hpc/slurm_cluster.py /scratch/$USER/net_a.zarr /scratch/$USER/net_b.zarr \\
        --jobs 8 --out similarity.nc

Cores, memory, walltime, partition and account per worker job come from ``jobqueue.yaml``
beside this file (dask's configuration format). The activations must be on a file system the
compute nodes see (or on object storage); every chunk is read by a worker, never by this process.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import dask.config
import yaml

#: The jobqueue settings used by default.
CONFIG = Path(__file__).with_name("jobqueue.yaml")


def jobqueue_config(path: str | Path = CONFIG) -> dask.config.set:
    """A context in which dask's ``jobqueue`` configuration is updated from ``path``.

    Keys the file does not set keep dask-jobqueue's defaults.

    Examples
    --------
    >>> import dask
    >>> with jobqueue_config():
    ...     dask.config.get("jobqueue.slurm.worker-command")
    'dask worker'
    """
    loaded = yaml.safe_load(Path(path).read_text())
    merged = dask.config.merge(dask.config.config, loaded)
    return dask.config.set(jobqueue=merged["jobqueue"])


def main(argv: Sequence[str] | None = None) -> None:
    """Start the cluster, run :func:`dask_repsim.compare` on it, print or save the result."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    import dask_repsim

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="zarr group of the first network's layers (path or URL)")
    parser.add_argument("b", nargs="?", help="the same for the second network (default: a)")
    parser.add_argument("--jobs", type=int, default=4, help="worker jobs to submit")
    parser.add_argument("--config", type=Path, default=CONFIG, help="jobqueue settings")
    parser.add_argument("--out", type=Path, help="save the result as netCDF here")
    args = parser.parse_args(argv)
    with jobqueue_config(args.config), SLURMCluster() as cluster, Client(cluster) as client:
        cluster.scale(jobs=args.jobs)
        print(cluster.job_script())
        # Start as soon as one worker is up; later ones join the running computation.
        client.wait_for_workers(1, timeout="1h")
        result = dask_repsim.compare(args.a, args.b)
    if args.out:
        result.to_netcdf(args.out)
    print(result)


if __name__ == "__main__":
    main()
