#!/bin/sh
# Entry point of the dask-repsim image (deploy/Dockerfile).
#
# The dask Helm chart starts its containers with the dashed commands `dask-scheduler` and
# `dask-worker`, which current distributed no longer installs: they run here as
# `dask scheduler` and `dask worker` with the same arguments. Any other command runs as given.
set -e
case "$1" in
    dask-scheduler) shift; exec dask scheduler "$@" ;;
    dask-worker) shift; exec dask worker "$@" ;;
esac
exec "$@"
