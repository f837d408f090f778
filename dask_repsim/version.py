"""The installed package's version."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dask-repsim")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "unknown"
