"""The one dispatcher: the steps that :func:`dask_repsim.compare` and every pairwise function
share, and each path's computation for a set of cells.

A cell is a pair (row layer, column layer) of a grid; a pairwise call is a grid of one cell
(:func:`run_pair`). Whatever the entry point, a call takes the same steps:

1. :func:`plan_outputs`: the metrics and the parameters that select or tune them (``sigma``,
   ``alpha``, ``rdm``, ``rdm_compare``, ``rdm_noise``, ``k``, ``ridge``, ``folds``,
   ``components``) checked, one output per metric and bandwidth;
2. the layers gathered, samples paired by label (:mod:`dask_repsim.io.gather`);
3. :func:`choose_path`: ``method``, or for ``"auto"`` the path of
   :func:`dask_repsim.planning.plan_grid`;
4. :func:`run_cells`: the options that path does not use refused
   (:func:`dask_repsim.options.reject_unused`), then the path's cell runner, given the measures'
   functions for that path (:func:`dask_repsim.registry.path_functions`), the layers, and which
   layers form the rows and the columns. It returns a :class:`Cell` per (measure, row, column):
   the value, and on the co-moment path its jackknife replicates and permutation null.

So the same option gets the same error from ``dr.<measure>(...)`` and from
``dr.compare(..., metrics=[...])``, and a pairwise value is the cell ``compare`` gives for that
pair. Input rules are the same on every path (:mod:`dask_repsim.io.validation`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from . import planning
from .io.gather import pair_layers
from .io.inputs import Layer
from .measures.cca import canonical_correlations
from .measures.predictivity import DEFAULT_FOLDS
from .options import DEFAULTS, Options, reject_unused
from .paths import minibatch, qr, tiled
from .paths.covariance.cells import covariance_cells
from .paths.gram import samplespace
from .paths.sample_blocks import cells as sample_blocks
from .paths.sample_blocks import distances, neighbours
from .paths.sample_blocks.rsa import check_choice
from .registry import (
    MEASURES,
    PATHS,
    check_metrics,
    check_parameters,
    check_replicate_samples,
    check_samples,
    path_functions,
)
from .results import Cell, Cells, Estimate, uncertainty_fields

#: one output of a call: (variable name, measure, RBF bandwidth or None)
Output = tuple[str, str, float | None]

#: the neighbours per sample of ``mutual_knn`` and ``cknna`` when ``k`` is not given
DEFAULT_K = neighbours.DEFAULT_K

#: the measures whose kernel bandwidths ``sigma`` sets (fractions of each layer's median
#: distance): several bandwidths give a variable each
SIGMA_METRICS = ("cka_rbf", "cka_laplace")

#: the paths whose measures are kernel options (dicts), not functions that take parameters
_SPECS = ("gram", "tiled", "minibatch")


def _shown(value: Any) -> Any:
    """A numpy scalar as the Python number it holds, for error messages."""
    return value.item() if isinstance(value, np.generic) else value


def check_sigma(sigma: Any) -> list[float]:
    """The RBF bandwidths of ``sigma`` (one value or several; default 0.8): each a finite number
    > 0, none repeated.

    Examples
    --------
    >>> check_sigma([0.4, 0.8])
    [0.4, 0.8]
    >>> check_sigma(float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: sigma must be > 0 and finite (a fraction of the median distance), not inf
    """
    if sigma is None:
        return [DEFAULTS["sigma"]]
    values = list(np.atleast_1d(np.asarray(sigma, dtype=object)))
    if not values:
        raise ValueError(f"sigma= needs at least one bandwidth (a fraction of the median "
                         f"distance), not {sigma!r}")
    for s in values:
        number = isinstance(s, int | float | np.integer | np.floating) and not isinstance(s, bool)
        if not (number and np.isfinite(s) and s > 0):
            raise ValueError("sigma must be > 0 and finite (a fraction of the median distance), "
                             f"not {_shown(s)!r}")
    sigmas = [float(s) for s in values]
    if len(set(sigmas)) != len(sigmas):
        raise ValueError(f"sigma has repeated values: {sigmas}")
    return sigmas


def expand_metrics(metrics: Sequence[str], sigma: Any) -> list[Output]:
    """(variable name, measure, bandwidth) of every output: each measure of
    :data:`SIGMA_METRICS` once per bandwidth of ``sigma`` (named ``<measure>_<sigma>``, as
    ``cka_rbf_0.4``, when there are several)."""
    sigmas = check_sigma(sigma)
    out: list[Output] = []
    for m in metrics:
        if m not in SIGMA_METRICS:
            out.append((m, m, None))
        elif len(sigmas) == 1:
            out.append((m, m, sigmas[0]))
        else:
            out.extend((f"{m}_{s:g}", m, s) for s in sigmas)
    return out


def plan_outputs(metrics: Sequence[str], parameters: Mapping[str, Any]) -> list[Output]:
    """The outputs of a call (:func:`expand_metrics`), after checking the metrics and the
    parameters: each given one taken by some metric asked for, and each value valid. One
    name alone (``metrics="cka"``) is that metric, not its letters."""
    metrics = check_metrics([metrics] if isinstance(metrics, str) else list(metrics))
    check_parameters(metrics, parameters)
    rdm, rdm_compare = parameters.get("rdm"), parameters.get("rdm_compare")
    noise = parameters.get("rdm_noise")
    if rdm is not None or rdm_compare is not None or noise is not None:
        check_choice(rdm or "correlation", (rdm_compare or "corr",), noise)
    alpha = parameters.get("alpha")
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    ridge = parameters.get("ridge")
    if ridge is not None and not (isinstance(ridge, int | float | np.integer | np.floating)
                                  and not isinstance(ridge, bool) and 0 <= ridge < np.inf):
        raise ValueError(f"ridge must be a finite number >= 0 (a ridge penalty relative to "
                         f"the layer's total variance: gulp's, ridge_predictivity's), not "
                         f"{_shown(ridge)!r}")
    for name, least, what in (("folds", 2, "the k of k-fold cross-validation"),
                              ("components", 1, "PLS components")):
        value = parameters.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, int | np.integer) or value < least):
            raise ValueError(f"{name} must be an int >= {least} ({what}), not "
                             f"{_shown(value)!r}")
    return expand_metrics(metrics, parameters.get("sigma"))


def choose_path(method: str, metrics: Sequence[str], layers: Sequence[Layer],
                rows: Sequence[int], cols: Sequence[int], options: Options,
                ) -> tuple[str, dict[str, Any]]:
    """``method``, or for ``"auto"`` the exact path of least estimated arithmetic that
    computes every metric, supports the options asked for (intervals, permutations,
    ``nan_policy="omit"``, ``null="gamma"``) and fits the memory budget
    (:func:`dask_repsim.planning.plan_grid`); with the estimates, for ``attrs``."""
    allowed = ("auto", *PATHS)
    if method not in allowed:
        raise ValueError(f"method must be one of {allowed}, not {method!r}")
    unpaired = [m for m in metrics if not MEASURES[m].paired]
    if options.permutations > 0 and unpaired:
        raise ValueError(
            f"{', '.join(unpaired)}: a difference of per-layer statistics does not depend on "
            "how the two layers' samples are paired, so a permutation test of it tests "
            "nothing; leave it out of calls with permutations=")
    if method != "auto":
        path_functions(method, list(metrics))  # an error naming what the path cannot compute
        return method, {}
    widths = [int(layer.data.shape[1]) for layer in layers]
    needs = tuple(need for need, asked in (
        ("interval", options.interval is not None), ("permutations", options.permutations > 0),
        ("nan_omit", options.nan_policy == "omit"), ("gamma", options.null == "gamma"))
        if asked)
    return planning.plan_grid(list(metrics), int(layers[0].data.shape[0]), widths,
                              list(rows), list(cols), needs,
                              groups=options.groups_used, permutations=options.permutations)


def measure_functions(path: str, metrics: Sequence[str], parameters: Mapping[str, Any] | None,
                      own: Mapping[str, Any] | None = None) -> list[Any]:
    """What ``path`` needs for each of ``metrics`` (:func:`dask_repsim.registry.path_functions`),
    or, for a pairwise call whose own options change the measure (``svcca(keep=...)``,
    ``cca``'s correlations), ``own[path]``, with the same parameters bound."""
    found = path_functions(path, list(metrics), None if path in _SPECS else parameters)
    if own is None:
        return found
    if path not in own:
        raise ValueError(f"{metrics[0]} with these options is not available on the {path!r} "
                         f"path; paths that compute it: {', '.join(own)}")
    function = own[path]
    given = {k: v for k, v in (parameters or {}).items()
             if k in MEASURES[metrics[0]].parameters and v is not None}
    return [partial(function, **given) if given and callable(function) else function]


def run_cells(path: str, outputs: Sequence[Output], layers: Sequence[Layer],
              rows: Sequence[int], cols: Sequence[int], options: Options, *,
              batch_size: int | None, parameters: Mapping[str, Any] | None = None,
              functions: Mapping[str, Any] | None = None,
              cells: Sequence[tuple[int, int]] | None = None,
              ) -> tuple[Cells, dict[str, Any]]:
    """The cells of the grid on ``path``: ``cells`` (positions (i, j) into ``rows`` and
    ``cols``, as :func:`symmetric_cells` gives them), or every one; ``outputs`` from
    :func:`plan_outputs`; ``functions``: a pairwise call's own function for each path
    (:func:`measure_functions`)."""
    if cells is not None:
        check_cells(cells, len(rows), len(cols))
    metrics = [measure for _, measure, _ in outputs]
    check_samples(metrics, layers[rows[0]].data.shape[0])  # every measure's minimum, one rule
    if options.interval and path != "minibatch":  # and so in each jackknife replicate
        check_replicate_samples(metrics, layers[rows[0]].data.shape[0], options.get("groups"))
    if batch_size is not None and path != "minibatch":
        raise ValueError(f"batch_size= applies to method='minibatch' only, not {path!r}")
    reject_unused(path, options, level_used=path == "minibatch",
                  seed_used=path == "minibatch" or any(m in SIGMA_METRICS for m in metrics),
                  measures=metrics)
    found = measure_functions(path, metrics, parameters, functions)
    if path == "sample_blocks":
        k = (parameters or {}).get("k")
        return sample_block_cells(found, outputs, layers, rows, cols, options,
                                  DEFAULT_K if k is None else k, cells)
    if path == "gram":
        specs = [dict(spec, sigma=s) for spec, (_, _, s) in zip(found, outputs, strict=True)]
        return samplespace.gram_cells(specs, layers, rows, cols, seed=options.get("seed"),
                                      todo=cells, permutations=options.permutations,
                                      groups=options.get("groups") if options.interval else None,
                                      gamma_null=options.null == "gamma")
    if path == "covariance":
        return covariance_cells(found, layers, rows, cols, options, todo=cells)
    if path == "qr":
        return qr.qr_cells(found, layers, rows, cols, todo=cells,
                           groups=options.get("groups") if options.interval else None,
                           permutations=options.permutations, seed=options.get("seed"))
    if path == "minibatch":
        sigma = outputs[0][2]
        return minibatch.minibatch_cells(
            layers, rows, cols, kernel=found[0].get("kernel", "linear"),
            sigma=DEFAULTS["sigma"] if sigma is None else sigma,
            batch_size=batch_size or DEFAULTS["batch_size"],
            seed=options.get("seed"), level=options.get("level"), todo=cells)
    return tiled.kernel_cells(found, layers, rows, cols, todo=cells,
                              groups=options.get("groups") if options.interval else None,
                              permutations=options.permutations, seed=options.get("seed"))


def sample_block_cells(found: Sequence[Any], outputs: Sequence[Output],
                       layers: Sequence[Layer], rows: Sequence[int], cols: Sequence[int],
                       options: Options, k: int, cells: Sequence[tuple[int, int]] | None,
                       ) -> tuple[Cells, dict[str, Any]]:
    """The ``"sample_blocks"`` path's cells: with Laplace CKA asked for, it and the other
    measures of the distance tiles from :func:`~dask_repsim.paths.sample_blocks.distances.
    distance_cells` (each layer's median once, each pair's tiles once at every bandwidth),
    the rest from :func:`~dask_repsim.paths.sample_blocks.cells.sample_cells`."""
    metrics = [measure for _, measure, _ in outputs]
    seed = options.get("seed")
    inference = {"permutations": options.permutations, "seed": seed,
                 "groups": options.get("groups") if options.interval else None}
    if "cka_laplace" not in metrics:
        return sample_blocks.sample_cells(found, layers, rows, cols, metrics, k, todo=cells,
                                          **inference)
    tiles = [m for m, name in enumerate(metrics) if name in distances.TILE_MEASURES]
    rest = [m for m in range(len(metrics)) if m not in tiles]
    part, attrs = distances.distance_cells([(metrics[m], outputs[m][2]) for m in tiles],
                                           layers, rows, cols, todo=cells, **inference)
    out = {(tiles[m], i, j): cell for (m, i, j), cell in part.items()}
    if rest:
        more, other = sample_blocks.sample_cells(
            [found[m] for m in rest], layers, rows, cols, [metrics[m] for m in rest], k,
            todo=cells, **inference)
        out.update({(rest[m], i, j): cell for (m, i, j), cell in more.items()})
        attrs = {**other, **attrs}
    return out, attrs


def check_cells(cells: Sequence[tuple[int, int]], n_rows: int, n_cols: int) -> None:
    """An error for an empty list of cells or a cell outside an ``n_rows`` x ``n_cols`` grid."""
    if not len(cells):
        raise ValueError("cells= is empty: name at least one (row, column) cell to compute")
    for i, j in cells:
        if not (0 <= i < n_rows and 0 <= j < n_cols):
            raise ValueError(f"cell ({i}, {j}) is outside the grid of {n_rows} rows and "
                             f"{n_cols} columns")


def symmetric_cells(metrics: Sequence[str], rows: Sequence[int],
                    cols: Sequence[int]) -> list[tuple[int, int]] | None:
    """The cells (i, j), i <= j, of a grid of layers with themselves (``rows == cols``) when
    every one of ``metrics`` is symmetric (:attr:`dask_repsim.registry.Measure.symmetric`):
    each unordered pair once, ``L (L + 1) / 2`` of the ``L^2``; ``None`` (every cell)
    otherwise. :func:`mirror` fills in the rest.

    Examples
    --------
    >>> symmetric_cells(["cka", "mean_cca"], [0, 1, 2], [0, 1, 2])
    [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    >>> symmetric_cells(["cka", "linear_regression"], [0, 1], [0, 1]) is None
    True
    """
    if list(rows) != list(cols) or not all(MEASURES[m].symmetric for m in metrics):
        return None
    return [(i, j) for i in range(len(rows)) for j in range(i, len(cols))]


def mirror(cells: Cells, attrs: dict[str, Any], metrics: Sequence[str]) -> Cells:
    """``cells`` of a grid of layers with themselves with the upper triangle's cell (i, j),
    i < j, of each symmetric measure of ``metrics`` copied to its mirror image (j, i), and so
    the per-cell sample counts in ``attrs``: the value, the jackknife replicates, and the
    permutation null (side b's samples permuted for the pair as computed, so the two cells'
    p-values agree). The cells of :func:`symmetric_cells` are the upper triangle; when an
    asymmetric measure made the path compute every cell, the symmetric ones' lower cells are
    replaced all the same, so that a measure's cells do not depend on the metrics beside it.
    An RBF cell's medians (row layer's first) are swapped."""
    out = dict(cells)
    for (m, i, j), cell in cells.items():
        if i < j and MEASURES[metrics[m]].symmetric:
            fields = cell.fields
            if "median" in fields:
                fields = {**fields, "median": tuple(reversed(fields["median"]))}
            out[m, j, i] = Cell(cell.value, cell.replicates, cell.null, fields)
    counts = attrs.get("n_samples_per_cell")
    if counts is not None:
        attrs["n_samples_per_cell"] = {**counts, **{(j, i): c for (i, j), c in counts.items()}}
    attrs["mirrored"] = True  # for the grid's corrected p-values: each pair is one test
    return out


def call_options(options: Options, outputs: Sequence[Output],
                 parameters: Mapping[str, Any] | None = None) -> Options:
    """``options`` for a call of ``outputs``: the default jackknife groups of its measures
    (:meth:`~dask_repsim.options.Options.for_measures`), at least the folds of its
    cross-validated measures."""
    measures = [measure for _, measure, _ in outputs]
    folds = (parameters or {}).get("folds") or DEFAULT_FOLDS
    least = folds if any(MEASURES[m].folds for m in measures) else 2
    return options.for_measures(measures, least)


def run_pair(measure: str, x: Any, y: Any, options: Options, *, method: str = "auto",
             join: str = "exact", batch_size: int | None = None,
             parameters: Mapping[str, Any] | None = None,
             functions: Mapping[str, Any] | None = None) -> tuple[Cell, str, dict[str, Any]]:
    """``measure`` of ``x`` and ``y`` as a grid of one cell, by the steps ``compare`` takes:
    the cell, the path that ran and the run's attrs."""
    parameters = dict(parameters or {})
    outputs = plan_outputs([measure], parameters)
    if len(outputs) != 1:
        raise ValueError("sigma= takes one bandwidth in a pairwise call; compare() takes "
                         "several")
    layers = pair_layers(x, y, options, join)
    options = call_options(options, outputs, parameters)
    rows, cols = [0], [len(layers) - 1]
    path, _ = choose_path(method, [measure], layers, rows, cols, options)
    cells, attrs = run_cells(path, outputs, layers, rows, cols, options, batch_size=batch_size,
                             parameters=parameters, functions=functions)
    return cells[0, 0, 0], path, attrs


def cell_estimate(cell: Cell, options: Options, method: str, similarity: bool = True,
                  corrected: bool = True, **fields: Any) -> Estimate:
    """A cell as an :class:`Estimate`: its value, ``fields`` and the fields its path gave it
    (which take precedence), its interval (centred on the bias-corrected estimate when
    ``corrected``) and permutation fields, and ``.method``."""
    uncertainty = uncertainty_fields(float(cell.value), cell.replicates, options.get("level"),
                                     cell.null, similarity, corrected)
    return Estimate(float(cell.value), **{**fields, **cell.fields, **uncertainty,
                                          "method": method})


def measure_estimate(measure: str, cell: Cell, options: Options, method: str,
                     **fields: Any) -> Estimate:
    """:func:`cell_estimate` of a cell of ``measure``, which says whether larger is more
    similar (the side permutation p-values count) and where its interval is centred."""
    return cell_estimate(cell, options, method, MEASURES[measure].similarity,
                         MEASURES[measure].bias_corrected, **fields)


def pair_estimate(measure: str, x: Any, y: Any, options: Options, **kwargs: Any) -> Estimate:
    """:func:`run_pair` as an :class:`Estimate` (:func:`measure_estimate`)."""
    cell, path, _ = run_pair(measure, x, y, options, **kwargs)
    return measure_estimate(measure, cell, options, path)


def _correlations(pair: Any) -> np.ndarray:
    return canonical_correlations(pair)[0]


def _correlations_from_r(pair: Any) -> np.ndarray:
    return qr.canonical_correlations_of(pair).rho


#: what a pairwise function reports beyond a grid's value, on each path that computes it:
#: ``cca``'s canonical correlations (for ``mean_cca``; ``cknna``'s HSIC terms are in its
#: cells' fields)
DETAILS: dict[str, dict[str, Callable[..., Any]]] = {
    "mean_cca": {"covariance": _correlations, "qr": _correlations_from_r},
}


def to_arrays(cells: Cells, shape: tuple[int, int, int], what: str) -> np.ndarray | None:
    """``values``, ``replicates`` (groups first) or ``null`` (permutations first) of every cell
    as one float array, NaN where a cell was not computed; ``None`` when no cell has them."""
    if what == "value":
        out = np.full(shape, np.nan)
        for key, cell in cells.items():
            out[key] = cell.value
        return out
    first = next((getattr(c, what) for c in cells.values() if getattr(c, what) is not None), None)
    if first is None:
        return None
    out = np.full((len(first), *shape), np.nan)
    for key, cell in cells.items():
        out[(slice(None), *key)] = getattr(cell, what)
    return out
