"""What the ``dask-repsim compare`` command writes: its text tables, JSON, figures and result
files (:mod:`dask_repsim.cli` parses the command and runs it).

Tables and JSON show every variable of the result over the layers (or a zoo's layers), and the
networks' summary when there is one; figures are a heatmap panel per metric (a zoo's too) with
p-values or intervals marked when the result has them; a result file is written beside its
destination and moved into place only once complete, so nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import xarray as xr


def _grid_lines(grid: xr.DataArray, title: str) -> list[str]:
    """A 2-D grid as a text table under ``title``: its first dim down, its second across."""
    dim_a, dim_b = (str(d) for d in grid.dims)
    rows = [str(v) for v in grid[dim_a].values]
    cols = [str(v) for v in grid[dim_b].values]
    corner = f"{dim_a} \\ {dim_b}"
    first = max(len(corner), *(len(r) for r in rows))
    width = max(8, *(len(c) for c in cols))
    lines = ["", title, f"{corner:<{first}}  " + "  ".join(f"{c:>{width}}" for c in cols)]
    for row, values in zip(rows, grid.values, strict=True):
        cells = "  ".join(f"{v:>{width}.4f}" for v in values)
        lines.append(f"{row:<{first}}  {cells}")
    return lines


def _sides(result: xr.Dataset) -> tuple[str, str]:
    """The dims of a result's rows and columns: a zoo's ``(a, b)``, else the layers'."""
    return ("a", "b") if "a" in result.dims else ("layer_a", "layer_b")


#: what --summary means, for the titles of the network tables
SUMMARY_TEXT = {"max": "the best value over their layer pairs",
                "matched": "the mean over the layers of the same name"}


def table(result: xr.Dataset, networks: dict[str, xr.DataArray] | None = None) -> str:
    lines = [f"n_samples: {result.attrs['n_samples']}"]
    if result.attrs.get("n_samples_omitted"):
        lines[0] += f" ({result.attrs['n_samples_omitted']} with NaN or Inf left out)"
    for metric, grid in result.data_vars.items():
        title = f"{metric}: {grid.attrs.get('description', '')}".rstrip(": ")
        lines += _grid_lines(grid.transpose(*_sides(result)), title)
    for metric, similarity in (networks or {}).items():
        summary = similarity.attrs["summary"]
        lines += _grid_lines(similarity, f"{metric} between networks, {summary}: "
                             f"{SUMMARY_TEXT[summary]}")
    return "\n".join(lines)


def _number(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None  # JSON has no NaN


def _nested(grid: xr.DataArray) -> dict[str, dict[str, float | None]]:
    """A 2-D grid as ``{row: {column: value}}``."""
    dim_a, dim_b = grid.dims
    return {str(a): {str(b): _number(v) for b, v in zip(grid[dim_b].values, row, strict=True)}
            for a, row in zip(grid[dim_a].values, grid.values, strict=True)}


def as_json(result: xr.Dataset, networks: dict[str, xr.DataArray] | None = None) -> str:
    out: dict[str, Any] = {str(metric): _nested(grid.transpose(*_sides(result)))
                           for metric, grid in result.data_vars.items()}
    out["n_samples"] = int(result.attrs["n_samples"])
    out["n_samples_omitted"] = int(result.attrs.get("n_samples_omitted", 0))
    if networks is not None:
        out["network_similarity"] = {m: _nested(s) for m, s in networks.items()}
        out["summary"] = next(iter(networks.values())).attrs["summary"]
    return json.dumps(out, indent=2, allow_nan=False)


def _panels(draws: list[Callable[..., Any]], rows: int, cols: int) -> Any:
    """A Figure with a panel per function (called with ``ax=``), three across, each panel
    sized for a grid of ``rows`` x ``cols`` cells."""
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global state

    ncols = min(len(draws), 3)
    nrows = math.ceil(len(draws) / ncols)
    panel = (max(4.0, 0.7 * cols + 2.5), max(3.0, 0.5 * rows + 2.2))
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, draw in zip(axes, draws, strict=False):
        draw(ax=ax)
    for ax in axes[len(draws):]:
        ax.set_axis_off()
    return fig


def _plot_figure(result: xr.Dataset) -> Any:
    from .plot import heatmap

    # one panel per metric; p-values (corrected over the grid's cells, family-wise) or
    # intervals mark its cells
    metrics = result.attrs["metrics"].split(", ")
    mark = "pvalue_fwer" if "permutations" in result.attrs or "null" in result.attrs \
        else None
    if mark is None and result.attrs.get("interval") == "jackknife":
        mark = "overlap"
    draws = [functools.partial(heatmap, result, str(metric), mark=mark) for metric in metrics]
    return _panels(draws, result.sizes["layer_a"], result.sizes["layer_b"])


def _networks_figure(networks: dict[str, xr.DataArray]) -> Any:
    from .plot import network_heatmap

    first = next(iter(networks.values()))
    return _panels([functools.partial(network_heatmap, s) for s in networks.values()],
                   *first.shape)


def _save_zoo_figure(result: xr.Dataset, metric: str, path: Path, fmt: str) -> None:
    import matplotlib.pyplot as plt

    from .plot import zoo_heatmap

    fig = zoo_heatmap(result, metric)  # a pyplot figure: closed once written
    try:
        fig.savefig(path, format=fmt)
    finally:
        plt.close(fig)


def save_plots(result: xr.Dataset, networks: dict[str, xr.DataArray] | None, plot: Path | None,
           fmt: str | None) -> list[tuple[Path, Callable[[Path], None]]]:
    """(file, function writing it to a given path) for every figure ``--plot`` asks for."""
    if plot is None:
        return []
    if networks is None:
        return [(plot, lambda tmp: _plot_figure(result).savefig(tmp, format=fmt))]
    files = [(plot.with_name(f"{plot.stem}_networks{plot.suffix}"),
              lambda tmp: _networks_figure(networks).savefig(tmp, format=fmt))]
    for metric in networks:
        files.append((plot.with_name(f"{plot.stem}_zoo_{metric}{plot.suffix}"),
                      functools.partial(_save_zoo_figure, result, metric, fmt=str(fmt))))
    return files


def plot_format(path: Path) -> str:
    from .plot import require_matplotlib

    require_matplotlib()
    from matplotlib.figure import Figure

    fmt = path.suffix.lstrip(".").lower() or "png"
    supported = Figure().canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save a plot as {fmt!r}; use one of {', '.join(supported)}")
    return fmt


def check_parent(path: Path | None) -> None:
    if path is not None and not path.resolve().parent.is_dir():
        raise FileNotFoundError(f"directory {str(path.parent)!r} does not exist (for {path})")


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A fresh file name in ``path``'s directory, removed unless the caller renamed it."""
    fd, name = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp makes the file private (0600); the result gets the usual permissions instead
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def save_result(result: xr.Dataset, out: Path | None,
          plots: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write every output to a temporary file first, then rename them all into place.

    A failure while writing any of them leaves no partial file, and earlier files at those
    paths untouched.
    """
    with contextlib.ExitStack() as stack:
        ready: list[tuple[Path, Path]] = []
        if out is not None:
            tmp = stack.enter_context(_temporary_beside(out))
            result.to_netcdf(tmp, mode="w")
            ready.append((tmp, out))
        for final, write in plots:
            tmp = stack.enter_context(_temporary_beside(final))
            write(tmp)
            ready.append((tmp, final))
        for tmp, final in ready:
            os.replace(tmp, final)
