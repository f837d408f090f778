"""Heatmaps of layer-by-layer similarity grids (the result of :func:`dask_repsim.compare`), and
of model zoos (:func:`dask_repsim.compare_zoo`): a panel per pair of networks, and a network by
network summary.

Needs matplotlib, the ``plot`` extra: ``pip install dask-repsim[plot]``. It is imported only
when a plot is drawn, so the rest of the package works without it.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from .exceptions import RepsimWarning

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Grids up to this many rows and columns get their values written in the cells by default.
ANNOTATE_MAX = 12


def require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "plotting needs matplotlib; install it with: pip install dask-repsim[plot]"
        ) from err
    return matplotlib


def _pick(result: xr.Dataset, metric: str | None) -> str:
    """``metric``, or the one variable of ``result``; an error when it is not there or when
    ``result`` holds several and none is named."""
    names = [str(name) for name in result.data_vars]
    if metric is None:
        if len(names) != 1:
            raise ValueError(f"result holds several metrics {names}; name the one to plot")
        metric = names[0]
    if metric not in result.data_vars:
        raise ValueError(f"metric {metric!r} is not in the result; it holds {names}")
    return metric


def _grid(result: xr.Dataset | xr.DataArray, metric: str | None) -> xr.DataArray:
    """The (layer_a, layer_b) DataArray of ``metric`` in ``result``."""
    if isinstance(result, xr.Dataset):
        grid = result[_pick(result, metric)]
    elif isinstance(result, xr.DataArray):
        grid = result
    else:
        raise TypeError(
            f"cannot plot a {type(result).__name__}; give the Dataset returned by compare() "
            "or one of its variables"
        )
    if set(grid.dims) != {"layer_a", "layer_b"}:
        raise ValueError(f"expected dims ('layer_a', 'layer_b'), got {tuple(grid.dims)}")
    return grid.transpose("layer_a", "layer_b")


def heatmap(
    result: xr.Dataset | xr.DataArray,
    metric: str | None = None,
    *,
    ax: Axes | None = None,
    annotate: bool | None = None,
    cmap: str | Any = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    fmt: str = ".2f",
    mark: str | None = None,
    alpha: float | None = None,
) -> Axes:
    """Draw one metric of a layer-by-layer comparison as a heatmap.

    Parameters
    ----------
    result
        The Dataset returned by :func:`dask_repsim.compare` (dims ``layer_a``, ``layer_b``),
        or one of its variables.
    metric
        Which variable of ``result`` to draw; may be left out when it holds only one.
    ax
        Matplotlib Axes to draw into; a new figure is made when ``None``.
    annotate
        Write each value in its cell. Default: only when the grid is at most 12 x 12, where the
        numbers stay legible.
    cmap, vmin, vmax
        Colour map and its range. The range defaults to [0, 1], the range of every measure of
        the package, so that colours mean the same thing across plots; pass ``None`` to fit it
        to the data (debiased CKA can be slightly negative).
    fmt
        Format of the annotations.
    mark
        Hatch cells (``///``) whose value is not distinguishable, from a ``compare`` result
        computed with uncertainty: ``"pvalue"`` marks cells whose permutation p-value
        (``<metric>_pvalue``, from ``permutations=``) exceeds ``alpha``: not more similar than
        unrelated samples; ``"pvalue_fwer"`` and ``"pvalue_fdr"`` the same with the p-values
        corrected over the grid's cells (family-wise, false discovery rate). ``"overlap"``
        marks cells whose jackknife interval (``<metric>_low``, ``<metric>_high``, from
        ``interval="jackknife"``) overlaps the interval of the largest value in the same row
        (outlined): not distinguishable from the row's most similar layer.
    alpha
        The p-value level of the p-value marks (default 0.05); an error with another
        ``mark``. A warning when the result's ``permutations`` cannot give a p-value below a
        level given here (the smallest is ``1 / (K + 1)``): every cell would be hatched.

    Returns
    -------
    matplotlib.axes.Axes
        ``layer_b`` along x, ``layer_a`` along y (first layer at the top), layer names as tick
        labels, a colour bar labelled with the metric, and the metric's ``description``
        attribute as title.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import dask_repsim
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 6))
    >>> result = dask_repsim.compare({"a1": x, "a2": x[:, :3]}, {"b1": x ** 2}, metrics=["cka"])
    >>> ax = heatmap(result, "cka")
    >>> [t.get_text() for t in ax.get_yticklabels()], [t.get_text() for t in ax.get_xticklabels()]
    (['a1', 'a2'], ['b1'])
    >>> ax.figure.savefig("cka.png")  # doctest: +SKIP
    """
    require_matplotlib()
    grid = _grid(result, metric)
    name = str(metric if metric is not None else grid.name)
    alpha = _alpha(result, mark, alpha)
    marked, best = _marks(result, name, grid, mark, alpha)
    values = np.asarray(grid.values, dtype=float)
    rows = [str(v) for v in grid.layer_a.values]
    cols = [str(v) for v in grid.layer_b.values]
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(
            figsize=(max(4.0, 0.7 * len(cols) + 2.5), max(3.0, 0.5 * len(rows) + 1.8)),
            layout="constrained",
        )
    image = _draw(ax, values, rows, cols, cmap=cmap, vmin=vmin, vmax=vmax, fmt=fmt,
                  annotate=len(rows) <= ANNOTATE_MAX and len(cols) <= ANNOTATE_MAX
                  if annotate is None else annotate)
    ax.set_xlabel("layer_b")
    ax.set_ylabel("layer_a")
    ax.set_title(textwrap.fill(str(grid.attrs.get("description", name)), 45), fontsize="medium")
    colorbar = ax.figure.colorbar(image, ax=ax)
    colorbar.set_label(name)
    if mark is not None:
        from matplotlib.patches import Rectangle

        for i, j in marked:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                   edgecolor="0.6", linewidth=0))
        for i, j in best:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red",
                                   linewidth=2))
        which = {"pvalue": "p", "pvalue_fwer": "family-wise p",
                 "pvalue_fdr": "FDR-adjusted p"}
        legend = (f"/// {which[mark]} > {alpha:g}" if mark in which
                  else "/// interval overlaps the row's best (outlined)")
        ax.set_xlabel(f"layer_b     ({legend})")
    return ax


def _draw(ax: Axes, values: np.ndarray, rows: list[str], cols: list[str], *, cmap: Any,
          vmin: float | None, vmax: float | None, fmt: str, annotate: bool,
          ticks: tuple[bool, bool] = (True, True)) -> Any:
    """``values`` as an image on ``ax``, ``rows`` and ``cols`` as tick labels (``ticks``: on
    the y and the x axis), each value written in its cell when ``annotate``."""
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(np.arange(len(cols)), labels=cols if ticks[1] else [], rotation=45,
                  ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(len(rows)), labels=rows if ticks[0] else [])
    if annotate:
        for (i, j), value in np.ndenumerate(values):
            if math.isnan(value):
                continue
            # dark text on light cells and light text on dark ones
            r, g, b, _ = image.cmap(image.norm(value))
            light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize="small",
                    color="black" if light else "white")
    return image


def _alpha(result: xr.Dataset | xr.DataArray, mark: str | None, alpha: float | None) -> float:
    """The level of the p-value marks: ``alpha`` (default 0.05) for a ``mark`` of p-values,
    an error for another ``mark``; a warning when the permutations cannot reach it."""
    if mark not in ("pvalue", "pvalue_fwer", "pvalue_fdr"):
        if alpha is not None:
            raise ValueError(f"alpha= is the level of the p-value marks (mark='pvalue', "
                             f"'pvalue_fwer' or 'pvalue_fdr'), not of mark={mark!r}")
        return 0.05
    if alpha is None:  # compare warned of fewer than 19 permutations already
        return 0.05
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    count = result.attrs.get("permutations")
    if count is not None and 1 / (int(count) + 1) > alpha:
        warnings.warn(f"the result's {count} permutations give no p-value below "
                      f"1/{int(count) + 1} = {1 / (int(count) + 1):.3g}, so mark={mark!r} "
                      f"hatches every cell at alpha={alpha:g}; compare with at least "
                      f"{math.ceil(1 / alpha) - 1} permutations", RepsimWarning, stacklevel=3)
    return alpha


def _marks(
    result: xr.Dataset | xr.DataArray, name: str, grid: xr.DataArray, mark: str | None,
    alpha: float,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(marked cells, outlined cells) as (row, column) indices for ``mark``."""
    if mark is None:
        return [], []
    tests = ("pvalue", "pvalue_fwer", "pvalue_fdr")
    if mark not in (*tests, "overlap"):
        raise ValueError(f"mark must be None, 'pvalue', 'pvalue_fwer', 'pvalue_fdr' or "
                         f"'overlap', not {mark!r}")
    needed = [f"{name}_{mark}"] if mark in tests else [f"{name}_low", f"{name}_high"]
    how = "permutations=K" if mark in tests else "interval='jackknife'"
    if not isinstance(result, xr.Dataset) or any(v not in result.data_vars for v in needed):
        raise ValueError(
            f"mark={mark!r} needs {' and '.join(needed)} in the result: pass the Dataset of "
            f"compare(..., {how})"
        )
    extra = [result[v].transpose("layer_a", "layer_b").values for v in needed]
    if mark in tests:
        return [tuple(map(int, ij)) for ij in np.argwhere(extra[0] > alpha)], []
    low, high = extra
    values = np.asarray(grid.values, dtype=float)
    marked, best = [], []
    for i, row in enumerate(values):
        if np.isnan(row).all():
            continue
        top = int(np.nanargmax(row))
        best.append((i, top))
        for j in range(len(row)):
            if j != top and not np.isnan(row[j]) and high[i, j] >= low[i, top]:
                marked.append((i, j))
    return marked, best


def zoo_heatmap(
    result: xr.Dataset,
    metric: str | None = None,
    *,
    annotate: bool | None = None,
    cmap: str | Any = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    fmt: str = ".2f",
) -> Figure:
    """Draw one metric of a model zoo as a heatmap per pair of networks.

    Parameters
    ----------
    result
        The Dataset returned by :func:`dask_repsim.compare_zoo` (or a selection of it,
        :func:`dask_repsim.select_zoo`).
    metric
        Which variable to draw; may be left out when ``result`` holds only one.
    annotate
        Write each value in its cell. Default: only when the whole zoo is at most 12 x 12
        layers.
    cmap, vmin, vmax, fmt
        As for :func:`heatmap`; one colour range for every panel (``None``: the data's over
        all panels), so that colours compare across them.

    Returns
    -------
    matplotlib.figure.Figure
        A grid of panels, one row per network of side ``a`` and one column per network of
        side ``b`` (each panel as wide and tall as its layers, so every cell is the same size):
        the panel of networks (A, B) draws ``layer_a`` of A down and ``layer_b`` of B across.
        Network names label the rows (y axis of the first column) and the columns (titles of
        the top row), layer names the first column's and the bottom row's ticks; one colour
        bar, labelled with the metric.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import dask_repsim
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> zoo = {"mlp": {"fc1": x, "fc2": np.tanh(x)}, "cnn": {"conv": x[:, :3]}}
    >>> fig = zoo_heatmap(dask_repsim.compare_zoo(zoo, metrics=["cka"]), "cka")
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['mlp', 'cnn']
    >>> fig.savefig("zoo.png")  # doctest: +SKIP
    """
    require_matplotlib()
    import matplotlib.pyplot as plt

    from .zoo import check_zoo, select_zoo

    check_zoo(result)
    name = _pick(result, metric)
    nets = [list(dict.fromkeys(map(str, result[c].values))) for c in ("network_a", "network_b")]
    sizes = [[int((result[c].values.astype(str) == n).sum()) for n in ns]
             for c, ns in zip(("network_a", "network_b"), nets, strict=True)]
    values = np.asarray(result[name].transpose("a", "b").values, dtype=float)
    vmin = float(np.nanmin(values)) if vmin is None else vmin  # one range for every panel
    vmax = float(np.nanmax(values)) if vmax is None else vmax
    if annotate is None:
        annotate = max(values.shape) <= ANNOTATE_MAX
    fig, axes = plt.subplots(
        len(nets[0]), len(nets[1]), squeeze=False, layout="constrained",
        gridspec_kw={"height_ratios": sizes[0], "width_ratios": sizes[1]},
        figsize=(max(4.0, 0.6 * values.shape[1] + 3), max(3.0, 0.45 * values.shape[0] + 2)))
    image = None
    for r, net_a in enumerate(nets[0]):
        for c, net_b in enumerate(nets[1]):
            panel = select_zoo(result[[name]], network_a=net_a, network_b=net_b)
            ax = axes[r, c]
            image = _draw(ax, np.asarray(panel[name].transpose("a", "b").values, dtype=float),
                          [str(v) for v in panel.layer_a.values],
                          [str(v) for v in panel.layer_b.values], cmap=cmap, vmin=vmin,
                          vmax=vmax, fmt=fmt, annotate=annotate,
                          ticks=(c == 0, r == len(nets[0]) - 1))
            if r == 0:
                ax.set_title(net_b, fontsize="medium")
            if c == 0:
                ax.set_ylabel(net_a)
    colorbar = fig.colorbar(image, ax=axes)
    colorbar.set_label(name)
    fig.suptitle(textwrap.fill(str(result[name].attrs.get("description", name)), 60),
                 fontsize="medium")
    return fig


def network_heatmap(
    similarity: xr.DataArray,
    *,
    ax: Axes | None = None,
    annotate: bool | None = None,
    cmap: str | Any = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    fmt: str = ".2f",
) -> Axes:
    """Draw a network-by-network summary (:func:`dask_repsim.network_similarity`) as a heatmap.

    Parameters
    ----------
    similarity
        A DataArray over dims ``(network_a, network_b)``.
    ax, annotate, cmap, vmin, vmax, fmt
        As for :func:`heatmap`.

    Returns
    -------
    matplotlib.axes.Axes
        ``network_b`` along x, ``network_a`` along y, network names as tick labels, a colour
        bar labelled with the DataArray's name, and its summary as title.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import dask_repsim
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> zoo = {"s0": {"fc": x}, "s1": {"fc": np.tanh(x)}, "s2": {"fc": x[:, :2]}}
    >>> sim = dask_repsim.network_similarity(dask_repsim.compare_zoo(zoo, metrics=["cka"]))
    >>> ax = network_heatmap(sim)
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['s0', 's1', 's2']
    """
    require_matplotlib()
    dims = ("network_a", "network_b")
    if not isinstance(similarity, xr.DataArray) or set(similarity.dims) != set(dims):
        raise ValueError(f"expected a DataArray over dims {dims} (network_similarity()), got "
                         f"{type(similarity).__name__} with dims "
                         f"{tuple(getattr(similarity, 'dims', ()))}")
    grid = similarity.transpose(*dims)
    rows, cols = ([str(v) for v in grid[d].values] for d in dims)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(cols) + 2.5),
                                      max(3.0, 0.5 * len(rows) + 1.8)), layout="constrained")
    image = _draw(ax, np.asarray(grid.values, dtype=float), rows, cols, cmap=cmap, vmin=vmin,
                  vmax=vmax, fmt=fmt, annotate=max(len(rows), len(cols)) <= ANNOTATE_MAX
                  if annotate is None else annotate)
    ax.set_xlabel("network_b")
    ax.set_ylabel("network_a")
    name = str(grid.name if grid.name is not None else grid.attrs.get("metric", ""))
    ax.set_title(str(grid.attrs.get("long_name", name)), fontsize="medium")
    ax.figure.colorbar(image, ax=ax).set_label(name)
    return ax
