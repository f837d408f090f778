"""``compare``: several measures for every pair of layers of two networks, as an xarray Dataset.

A few named steps, those of every pairwise function too (:mod:`dask_repsim.runners`): check
the metrics and their parameters (:func:`~dask_repsim.runners.plan_outputs`), gather the layers
(:func:`~dask_repsim.io.gather.grid_layers`), pick the path of each group of metrics
(:func:`metric_groups`, :func:`~dask_repsim.runners.choose_path`), run that path on every cell
(:func:`~dask_repsim.runners.run_cells`), and build one Dataset (:func:`build_dataset`). A
cell's value is exactly what the pairwise function gives for that pair.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy.stats import false_discovery_control

from . import runners
from .capture import provenance
from .io.gather import grid_layers
from .io.layouts import layout_attrs
from .options import Options, SampleDims
from .paths.gram import gamma
from .paths.sample_blocks.rsa_whitened import grid_noise
from .registry import DEFAULT_METRICS, MEASURES, PATHS
from .results import corrected_pvalues, holm_pvalues, jackknife_interval, permutation_pvalue
from .version import __version__

DIMS = ("layer_a", "layer_b")


def metric_groups(method: str, outputs: Sequence[tuple[str, str, float | None]],
                  ) -> list[list[int]]:
    """Indices of ``outputs`` computed together, each group on one path: all of them, unless
    ``method="auto"`` and no path computes them all; then, in turn, the path that ``auto``
    may choose computing most of those left takes them (the CCA family on the co-moments,
    RBF CKA on the Gram tiles, RSA and neighbours on sample x sample tiles).

    Examples
    --------
    >>> metric_groups("auto", [("cka", "cka", None), ("rsa", "rsa", None),
    ...                        ("mean_cca", "mean_cca", None)])
    [[0, 2], [1]]
    """
    everything = list(range(len(outputs)))
    if method != "auto":
        return [everything]
    groups: list[list[int]] = []
    left = everything
    while left:
        def covered(path: str, left: list[int] = left) -> list[int]:
            return [k for k in left if path in MEASURES[outputs[k][1]].paths]

        best = max((p for p in PATHS if PATHS[p].auto), key=lambda p: len(covered(p)))
        members = covered(best) or left  # none on an auto path: plan_grid says why
        groups.append(members)
        left = [k for k in left if k not in members]
    return groups


def _variable(values: np.ndarray, name: str, description: str | None = None) -> tuple:
    attrs = {"long_name": name} if description is None else {"long_name": name,
                                                             "description": description}
    return (DIMS, values, attrs)


def uncertainty_variables(cells, outputs, shape, options,
                          mirrored: bool = False) -> tuple[dict, dict]:
    """The interval and permutation variables of every output (variable name, measure,
    bandwidth), and their attrs; p-values corrected over the grid's cells (each pair once where
    ``mirrored``)."""
    names, measures = [o[0] for o in outputs], [MEASURES[o[1]] for o in outputs]
    values = runners.to_arrays(cells, shape, "value")
    variables: dict[str, tuple] = {}
    attrs: dict[str, Any] = {}
    reps = runners.to_arrays(cells, shape, "replicates")
    if reps is not None:
        level = options.get("level")
        corrected = np.array([m.bias_corrected for m in measures])[:, None, None]
        stderr, centre, low, high = jackknife_interval(values, reps, level, corrected)
        texts = {"stderr": ("jackknife standard error", stderr),
                 "centre": ("centre of the jackknife interval", centre),
                 "low": (f"lower end of the {level:.0%} jackknife interval", low),
                 "high": (f"upper end of the {level:.0%} jackknife interval", high)}
        for m_, m in enumerate(names):
            for suffix, (text, arr) in texts.items():
                variables[f"{m}_{suffix}"] = _variable(arr[m_], f"{text} of {m}")
        plain = [m for m, measure in zip(names, measures, strict=True)
                 if not measure.bias_corrected]
        attrs.update(interval="jackknife", level=level, n_groups=options.get("groups"),
                     interval_centre="the bias-corrected estimate G t - (G - 1) x the mean of "
                     "the G leave-a-group-out values" + (f", the estimate for {', '.join(plain)}"
                                                         if plain else ""))
    nulls = runners.to_arrays(cells, shape, "null")
    if nulls is not None:
        directions = np.array([m.similarity for m in measures])[:, None, None]
        pvalues = np.where(directions, permutation_pvalue(values, nulls, True),
                           permutation_pvalue(values, nulls, False))
        fwer, fdr = _corrected(values, nulls, measures, mirrored)
        summaries = {"pvalue": (pvalues, "permutation p-value"),
                     "pvalue_fwer": (fwer, "permutation p-value corrected over the grid's "
                                     "cells, family-wise (max-statistic)"),
                     "pvalue_fdr": (fdr, "permutation p-value corrected over the grid's "
                                    "cells, false discovery rate (Benjamini-Hochberg)"),
                     "null_mean": (nulls.mean(axis=0), "mean under permutation"),
                     "null_std": (nulls.std(axis=0, ddof=1), "standard deviation under "
                                  "permutation")}
        for m_, m in enumerate(names):
            for suffix, (arr, text) in summaries.items():
                variables[f"{m}_{suffix}"] = _variable(arr[m_], f"{text} of {m}")
        attrs.update(permutations=nulls.shape[0], seed=options.get("seed"),
                     pvalue_correction="over the cells of each metric"
                     + (" (each pair of layers once)" if mirrored else "")
                     + ": pvalue_fwer family-wise by the max-statistic method on the same "
                     "permutations (Westfall & Young 1993), pvalue_fdr the false discovery rate "
                     "(Benjamini & Hochberg 1995)")
    gamma_variables, gamma_attrs = _gamma_variables(cells, names, measures, shape, mirrored)
    variables.update(gamma_variables)
    attrs.update(gamma_attrs)
    return variables, attrs


def _gamma_variables(cells, names, measures, shape, mirrored: bool) -> tuple[dict, dict]:
    """The p-values and null moments of the Gamma approximation (``null="gamma"``), with
    p-values corrected over each metric's cells from the p-values alone: family-wise by
    Holm's method, the false discovery rate by Benjamini-Hochberg."""
    if not any(c.fields.get("null_method") == "gamma" for c in cells.values()):
        return {}, {}
    found = {f: np.full(shape, np.nan) for f in ("pvalue", "null_mean", "null_std")}
    for key, cell in cells.items():
        for f, arr in found.items():
            arr[key] = cell.fields[f]
    fwer, fdr = np.full(shape, np.nan), np.full(shape, np.nan)
    for m_, m in enumerate(measures):
        upper = mirrored and m.symmetric and shape[1] == shape[2]
        family = np.triu(np.ones(shape[1:], bool)) if upper else np.ones(shape[1:], bool)
        family &= np.isfinite(found["pvalue"][m_])
        if family.any():
            fwer[m_][family] = holm_pvalues(found["pvalue"][m_][family])
            fdr[m_][family] = false_discovery_control(found["pvalue"][m_][family])
        if upper:
            for arr in (fwer[m_], fdr[m_]):
                lower = np.tril_indices(len(arr), -1)
                arr[lower] = arr.T[lower]
    texts = {"pvalue": (found["pvalue"], "p-value (Gamma approximation)"),
             "pvalue_fwer": (fwer, "p-value (Gamma approximation) corrected over the grid's "
                             "cells, family-wise (Holm)"),
             "pvalue_fdr": (fdr, "p-value (Gamma approximation) corrected over the grid's "
                            "cells, false discovery rate (Benjamini-Hochberg)"),
             "null_mean": (found["null_mean"], "mean of the Gamma approximation of the null"),
             "null_std": (found["null_std"], "standard deviation of the Gamma approximation "
                          "of the null")}
    variables = {f"{m}_{suffix}": _variable(arr[m_], f"{text} of {m}")
                 for m_, m in enumerate(names) for suffix, (arr, text) in texts.items()}
    attrs = {"null": gamma.DESCRIPTION,
             "pvalue_correction": "over the cells of each metric"
             + (" (each pair of layers once)" if mirrored else "")
             + ": pvalue_fwer family-wise by Holm's method (1979), pvalue_fdr the false "
             "discovery rate (Benjamini & Hochberg 1995), both from the p-values"}
    return variables, attrs


def _corrected(values: np.ndarray, nulls: np.ndarray, measures: Sequence[Any],
               mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each metric's p-values corrected over its cells
    (:func:`~dask_repsim.results.corrected_pvalues`); in a mirrored grid (a zoo), the family
    of a symmetric measure is the upper triangle and the lower one its mirror image."""
    fwer, fdr = np.full(values.shape, np.nan), np.full(values.shape, np.nan)
    for m_, m in enumerate(measures):
        upper = mirrored and m.symmetric and values.shape[1] == values.shape[2]
        family = np.triu(np.ones(values.shape[1:], bool)) if upper else None
        fwer[m_], fdr[m_] = corrected_pvalues(values[m_], nulls[:, m_], m.similarity, family)
        if upper:
            for arr in (fwer[m_], fdr[m_]):
                lower = np.tril_indices(len(arr), -1)
                arr[lower] = arr.T[lower]
    return fwer, fdr


def build_dataset(cells: runners.Cells, outputs: Sequence[tuple[str, str, float | None]],
                  names_a: list[str], names_b: list[str], path: str, run_attrs: dict[str, Any],
                  options: Options) -> xr.Dataset:
    """The one Dataset builder: a variable per output
    (:func:`~dask_repsim.runners.plan_outputs`) over (layer_a, layer_b), then intervals,
    permutation summaries and path-specific variables."""
    metrics = [name for name, _, _ in outputs]
    shape = (len(metrics), len(names_a), len(names_b))
    values = runners.to_arrays(cells, shape, "value")
    variables = {
        name: _variable(values[k], name, MEASURES[m].description if s is None else
                        f"{MEASURES[m].description}, sigma={s:g}")
        for k, (name, m, s) in enumerate(outputs)
    }
    extra, attrs = uncertainty_variables(cells, outputs, shape, options,
                                         bool(run_attrs.pop("mirrored", False)))
    variables.update(extra)
    if path == "minibatch":
        for bound in ("ci_low", "ci_high"):
            arr = np.full(shape[1:], np.nan)
            for (_, i, j), cell in cells.items():
                arr[i, j] = cell.fields[bound]
            name = f"cka_{bound.removeprefix('ci_')}"
            variables[name] = _variable(arr, name)
    counts = run_attrs.pop("n_samples_per_cell", None)
    if counts is not None:
        used = np.full(shape[1:], -1, dtype=np.int64)
        for (i, j), (count, _) in counts.items():
            used[i, j] = count
        variables["n_samples_used"] = (DIMS, used, {"long_name": "samples used by each cell "
                                                    "(nan_policy='omit')"})
    attrs = {"dask_repsim_version": __version__, "metrics": ", ".join(metrics),
             "method": path, **run_attrs, **attrs}
    return xr.Dataset(variables, coords={"layer_a": names_a, "layer_b": names_b}, attrs=attrs)


def compare(
    a: Any, b: Any = None, *, metrics: Iterable[str] = DEFAULT_METRICS,
    sample_dims: SampleDims = None, pool: str | None = None, resize: bool = False,
    spatial_dims: Sequence[Hashable] | None = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, null: str | None = None,
    method: str = "auto", batch_size: int | None = None, alpha: float | None = None,
    sigma: float | Sequence[float] | None = None, rdm: str | None = None,
    rdm_compare: str | None = None, k: int | None = None, ridge: float | None = None,
    folds: int | None = None, components: int | None = None,
    join: str = "exact", rdm_noise: Any = None,
) -> xr.Dataset:
    """Several measures for every pair of layers of ``a`` and ``b``, from one pass over the data.

    Parameters
    ----------
    a, b
        Each a single input (any kind :func:`cka` takes), an ``xarray.Dataset`` (one variable
        per layer), a mapping of layer names to inputs, or a zarr group (object, path or URL).
        ``b=None`` compares ``a`` with itself.
    metrics
        Names from ``dask_repsim.METRICS`` (:data:`dask_repsim.registry.MEASURES`): ``cka``,
        ``cka_debiased``, ``mean_cca``, ``r2_cca``, ``svcca``, ``pwcca``,
        ``linear_regression``, ``procrustes`` (the default, ``DEFAULT_METRICS``), and more:
        ``cka_rbf`` (see ``sigma``), ``hsic``, ``svcca_r2``, ``shape_metric``,
        ``cka_angular``, ``bures_distance``, ``eigenspace_overlap``, ``matched_correlation``,
        ``rsa``, ``distance_correlation``, ``rsm_norm_difference``, ``mutual_knn``,
        ``jaccard_knn``, ``rank_similarity``, ``joint_rank_jaccard``, ``second_order_cosine``,
        ``cknna``, ``ensd``, ``gulp``, ``permutation_distance``, ``magnitude_difference``,
        ``uniformity_difference``, ``concentricity_difference``, ``aligned_cosine``,
        ``disagreement``, ``jensen_shannon``, ``ridge_predictivity``, ``pls_predictivity``.
    sample_dims
        For xarray inputs, the dims that index samples; each variable uses those it has. A conv
        layer's ``("sample", "height", "width")`` folds spatial positions into samples (the
        SVCCA tutorials' method); the default, ``"sample"`` alone, flattens them into features.
    pool
        ``"mean"`` averages conv layers' ``spatial_dims`` away (plain arrays: every axis after
        the second) before comparing.
    resize
        When spatial positions are folded into samples, layers need the same grid: ``True``
        interpolates (linearly, on pixel centres) every smaller ``spatial_dims`` grid up to the
        largest one among xarray inputs. An error where a spatial dim is not folded (resizing
        flattened features would change the values, not the samples), and with ``pool``.
    spatial_dims
        The dims ``pool`` averages away, or ``resize`` interpolates (default
        ``("height", "width")``); an error without either.
    storage_options, nan_policy
        As for :func:`dask_repsim.cka`. With ``nan_policy="omit"`` each cell leaves out the
        samples where either of its layers has NaN or Inf (so a cell's value does not depend
        on the other layers); a variable ``n_samples_used`` says how many each cell used.
    interval, level, groups
        ``interval="jackknife"`` adds ``<metric>_stderr``, ``<metric>_centre``,
        ``<metric>_low`` and ``<metric>_high`` variables: a delete-a-group jackknife over
        ``groups`` contiguous ranges of samples (default 20; 5 with rtd, and a grid takes the
        fewest of its measures'), from the same pass, the interval
        centred on the jackknife's bias-corrected estimate (``<metric>_centre``; on the
        estimate for pwcca, ``attrs["interval_centre"]``).
    permutations, seed
        ``permutations=K`` adds ``<metric>_pvalue``, ``<metric>_null_mean`` and
        ``<metric>_null_std``: a permutation test of every cell from the same pass, side
        ``b``'s samples permuted within blocks of consecutive samples. Each task holds K
        cross matrices of (features of a) x (features of b); an error says when that exceeds
        the memory budget. A cell's null depends only on its two layers and ``seed``.
        ``<metric>_pvalue_fwer`` and ``<metric>_pvalue_fdr`` are the p-values corrected over
        the metric's cells: family-wise (max-statistic: the permutations are the same for
        every cell) and for the false discovery rate (Benjamini-Hochberg).
        On the Gram tiles (``method="gram"``: cka, cka_debiased, cka_rbf) intervals and
        permutation tests come from the Gram matrices the path saves to scratch, with the same
        groups and permutations (:mod:`dask_repsim.paths.gram.permuted`,
        :mod:`dask_repsim.paths.gram.jackknife`).
    null
        ``null="gamma"`` (Gram tiles: cka, cka_rbf): the same p-value and null variables from
        the Gamma approximation of HSIC's null (Gretton et al. 2008) instead of permutations
        (:mod:`dask_repsim.paths.gram.gamma`): one more pass over the saved matrices, and
        approximate (``attrs["null"]`` says so); the corrected p-values are then Holm's
        (family-wise) and Benjamini-Hochberg's, from the p-values.
    method, batch_size
        ``"auto"`` (default): the exact path of least estimated arithmetic that computes every
        metric within the memory budget (:func:`dask_repsim.planning.plan_grid`; the estimates are
        in ``attrs["cost_estimate"]``). ``"covariance"``: the one-pass co-moments, every metric,
        cost ``n P^2`` for ``P`` features in all. ``"gram"``: exact ``cka``, ``cka_debiased`` and
        ``cka_rbf`` from sample-space Gram tiles, each layer's formed once for the whole grid (cost
        ``n^2 sum(p)``: the path for wide conv layers; :mod:`dask_repsim.paths.gram.samplespace`).
        ``"qr"``: one tall-skinny QR pass over all layers; the CCA family (``mean_cca``, ``r2_cca``,
        ``svcca``, ``pwcca``, ``linear_regression``) without squaring the condition number.
        ``"tiled"``: exact ``cka`` and ``cka_debiased`` from feature tiles, pair by pair.
        ``"minibatch"``: the minibatch estimate of ``cka`` (Nguyen et al. 2021, an approximation,
        said in ``attrs["approximate"]``, with ``cka_low``/``cka_high`` bootstrap intervals), with
        ``batch_size`` (default 1000) samples per batch. The path used is in ``attrs["method"]``;
        :data:`dask_repsim.registry.PATHS` lists what each supports.
    sigma
        For the ``cka_rbf`` metric: the RBF bandwidth as a fraction of each layer's median
        distance between samples (default 0.8), one value or several. With several, the
        variables are ``cka_rbf_<sigma>`` (``cka_rbf_0.4``, ...). Each layer's median is
        found once per grid, exactly up to 20,000 samples and over a seeded subsample of
        4,000 beyond (``attrs["median_exact"]``, 1 or 0); an error when no metric takes it.
    rdm, rdm_compare, rdm_noise
        For the ``rsa`` metric: the dissimilarity matrices (``"correlation"``, default,
        ``"euclidean"`` or ``"mahalanobis"``) and how they are compared (``"corr"``, default,
        ``"cosine"``, ``"spearman"``, ``"rho-a"``, ``"tau-b"``, ``"tau-a"``, ``"cosine_cov"``,
        ``"corr_cov"``), as :func:`dask_repsim.rsa` (its ``compare=``); with
        ``rdm="mahalanobis"``, ``rdm_noise`` is each layer's noise precision matrix: a mapping
        of layer names to matrices (for both sides), or a pair of such mappings (side ``a``,
        side ``b``); :func:`dask_repsim.rsa`'s ``noise=``.
    k
        For the k-nearest-neighbour measures (``mutual_knn``, ``jaccard_knn``,
        ``rank_similarity``, ``joint_rank_jaccard``, ``second_order_cosine``, ``cknna``):
        neighbours per sample
        (default 10), as :func:`dask_repsim.mutual_knn`. These measures and ``rsa`` run on the
        ``sample_blocks`` path, pair by pair; with ``method="auto"`` beside the path of the
        other metrics (``attrs["method"]`` names both).
    join
        As for :func:`dask_repsim.cka`: samples with labels are paired by label;
        ``"inner"`` keeps the samples every layer holds.
    alpha
        For the ``shape_metric`` metric: the partial whitening of :func:`shape_metric` (default
        1, rotations only); an error when no metric takes it.
    ridge
        For the ``gulp`` metric: the ridge penalty of :func:`gulp`'s predictors (default 0);
        for ``ridge_predictivity``: its ridge penalty (default: chosen by generalised
        cross-validation); both relative to the predicting layer's total variance. An error
        when no metric takes it.
    folds, components
        For ``ridge_predictivity`` and ``pls_predictivity``: the folds of the cross-validation
        (default 10, contiguous ranges of samples in storage order: store the samples
        shuffled), and ``pls_predictivity``'s PLS components (default 25, at most the
        predicting layer's rank), as :func:`ridge_predictivity` and :func:`pls_predictivity`;
        an error when no metric takes them.

    Returns
    -------
    xarray.Dataset
        One variable per metric over dims ``(layer_a, layer_b)``, layer names as coordinates;
        attrs say how many samples were used, the layout (``sample_dims``, ``pool``,
        ``spatial_dims``: text, ``"none"`` when not given; ``resize``: 1 or 0; values of
        different layouts are not comparable) and what each metric is, and, for capture
        stores, what made each side (``provenance_a``, ``provenance_b``: JSON text of
        :mod:`dask_repsim.capture.provenance`'s record; a warning when both sides claim the
        same model with different preprocessing).

    Notes
    -----
    The statistics of all layers' features side by side are computed in one pass: every
    chunk of every array is read once, however many pairs and metrics there are.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 8))
    >>> ds = compare({"x": x}, {"y": x[:, ::-1]}, metrics=["cka", "procrustes"])
    >>> float(ds.cka.sel(layer_a="x", layer_b="y")), ds.cka.dims
    (1.0, ('layer_a', 'layer_b'))
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed, null=null)
    parameters = {"alpha": alpha, "sigma": sigma, "rdm": rdm, "rdm_compare": rdm_compare,
                  "k": k, "ridge": ridge, "rdm_noise": rdm_noise, "folds": folds,
                  "components": components}
    outputs = runners.plan_outputs(metrics, parameters)
    spatial_dims, layout = layout_attrs(sample_dims, pool, resize, spatial_dims)
    names_a, names_b, layers, rows, cols = grid_layers(
        a, b, sample_dims=sample_dims, pool=pool, resize=resize, spatial_dims=spatial_dims,
        storage_options=storage_options, join=join)
    parameters["rdm_noise"] = grid_noise(rdm_noise, (names_a, names_b), layers, (rows, cols))
    origins = provenance_attrs(a, a if b is None else b, storage_options)
    options = runners.call_options(options, outputs, parameters)
    cells, path, run_attrs = run_grid(outputs, layers, rows, cols, options, method=method,
                                      batch_size=batch_size, parameters=parameters)
    result = build_dataset(cells, outputs, names_a, names_b, path, run_attrs, options)
    result.attrs.update(layout, **origins)
    return result


def provenance_attrs(a: Any, b: Any, storage_options: Mapping[str, Any] | None,
                     ) -> dict[str, str]:
    """Both sides' provenance (:mod:`dask_repsim.capture.provenance`) as JSON text for the
    result's attrs (``provenance_a``, ``provenance_b``; a side without any is left out), after
    warning when both claim the same model with different preprocessing."""
    found = {side: provenance.of_input(x, storage_options) for side, x in (("a", a), ("b", b))}
    provenance.check_pair(found["a"], found["b"])
    return {f"provenance_{side}": json.dumps(p, sort_keys=True)
            for side, p in found.items() if p is not None}


def run_grid(outputs: Sequence[tuple[str, str, float | None]], layers: Sequence[Any],
             rows: Sequence[int], cols: Sequence[int], options: Options, *, method: str,
             batch_size: int | None, parameters: Mapping[str, Any], mirror: bool = False,
             ) -> tuple[runners.Cells, str, dict[str, Any]]:
    """Every cell of a grid, each group of metrics (:func:`metric_groups`) on its path: the
    cells, the paths that ran and the run's attrs. ``mirror``: for a grid of layers with
    themselves, a group of symmetric metrics computes each unordered pair once
    (:func:`~dask_repsim.runners.symmetric_cells`, :func:`~dask_repsim.runners.mirror`)."""
    mirror = mirror and list(rows) == list(cols)
    cells: runners.Cells = {}
    paths, run_attrs = [], {}
    for group in metric_groups(method, outputs):  # one path each
        chosen = [outputs[g] for g in group]
        measures = [m for _, m, _ in chosen]
        path, plan = runners.choose_path(method, measures, layers, rows, cols, options)
        todo = runners.symmetric_cells(measures, rows, cols) if mirror else None
        part, attrs = runners.run_cells(path, chosen, layers, rows, cols, options,
                                        batch_size=batch_size, parameters=parameters,
                                        cells=todo)
        if mirror:
            part = runners.mirror(part, attrs, measures)
        cells.update({(group[m], i, j): cell for (m, i, j), cell in part.items()})
        paths.append(attrs.pop("method", path))
        for key, value in {**attrs, **plan}.items():
            run_attrs[key] = value if key not in run_attrs or run_attrs[key] == value \
                else f"{run_attrs[key]}; {value}"
    # noise precisions are matrices: the attrs say which RDM (rdm="mahalanobis"), not them
    run_attrs.update({k: v for k, v in parameters.items() if v is not None and k != "rdm_noise"})
    if "sigma" in run_attrs:
        run_attrs["sigma"] = runners.check_sigma(run_attrs["sigma"])
    return cells, " + ".join(paths), run_attrs
