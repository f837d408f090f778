"""Model zoos: every layer of many networks against every layer of every other, as one grid.

A zoo is many networks (seeds, widths, architectures), each a set of layers. Every (network,
layer) is one layer of a single grid run through the one dispatcher (:mod:`dask_repsim.runners`),
so each layer's statistics are formed once for the whole zoo: the co-moment pass reads each
layer once, the Gram path forms each layer's Gram tiles once. A zoo compared with itself
computes each unordered pair of layers once for the symmetric measures
(:attr:`dask_repsim.registry.Measure.symmetric`) and mirrors it:
``N L (N L + 1) / 2`` cells for N networks of L layers, not ``(N L)^2``.

The result is one Dataset over dims ``(a, b)``, each a "network/layer" label, with the network
and layer of each as coordinates; :func:`unstack_zoo`, :func:`select_zoo`,
:func:`best_matches` and :func:`network_similarity` read it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import grid, runners
from .capture import provenance
from .io.gather import grid_layers
from .io.inputs import networks_of, open_input
from .io.labels import align_samples, sample_index
from .io.layouts import layout_attrs
from .options import Options, SampleDims, reject_unused
from .paths.gram import store as kept
from .paths.sample_blocks.rsa_whitened import grid_noise
from .registry import DEFAULT_METRICS, MEASURES, path_functions
from .results import Cell

#: the coordinates of each side of a zoo's result, by dim
SIDES = {"a": ("network_a", "layer_a"), "b": ("network_b", "layer_b")}
#: what summarises a pair of networks in :func:`network_similarity`
SUMMARIES = ("max", "matched")


def _flat(networks: Mapping[str, Mapping[str, Any]], what: str) -> dict[str, Any]:
    """Every (network, layer) of a zoo as one layer named "network/layer"."""
    flat: dict[str, Any] = {}
    for net, layers in networks.items():
        for layer, value in layers.items():
            label = f"{net}/{layer}"
            if label in flat:
                raise ValueError(f"two layers of the {what} are both called {label!r} "
                                 "(network/layer); rename a network or a layer")
            flat[label] = value
    return flat


def _parts(networks: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The network and the layer of every flat layer, in order."""
    pairs = [(net, layer) for net, layers in networks.items() for layer in layers]
    return [n for n, _ in pairs], [str(layer) for _, layer in pairs]


def compare_zoo(
    zoo: Any, other: Any = None, *, metrics: Iterable[str] = DEFAULT_METRICS,
    sample_dims: SampleDims = None, pool: str | None = None, resize: bool = False,
    spatial_dims: Sequence[Hashable] | None = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, null: str | None = None,
    method: str = "auto", batch_size: int | None = None, alpha: float | None = None,
    sigma: float | Sequence[float] | None = None, rdm: str | None = None,
    rdm_compare: str | None = None, k: int | None = None, ridge: float | None = None,
    folds: int | None = None, components: int | None = None,
    join: str = "exact", gram_store: Any = None, rdm_noise: Any = None,
) -> xr.Dataset:
    """Every layer of every network of ``zoo`` against every layer of every network of
    ``other`` (the zoo itself when ``None``), as one grid: each layer's statistics once.

    Parameters
    ----------
    zoo, other
        A zoo: a mapping of network names to networks (each anything :func:`compare` takes as
        one side with named layers: a mapping of layer names to inputs, an
        ``xarray.Dataset``, a zarr group object, path or URL, a netCDF file); a zarr group
        (object, path or URL) whose child groups are the networks, one array per layer (as
        several :func:`capture_activations` calls write into one store); or an
        ``xarray.DataTree`` (``xr.open_datatree(store, engine="zarr", chunks={})``) whose child
        nodes are the networks, their data variables the layers. Networks may have different
        layers. The networks of a store or a tree come in name order, a mapping's in its own
        order. ``other=None`` compares the zoo with itself.
    metrics, sample_dims, pool, resize, spatial_dims, storage_options, nan_policy, interval, \
level, groups, permutations, seed, null, method, batch_size, alpha, sigma, rdm, rdm_compare, \
k, ridge, folds, components, join
        As for :func:`compare`, for the grid of all the zoo's layers: samples are paired by
        label across every network, ``method="auto"`` picks one path for the zoo as a whole.
    rdm_noise
        As for :func:`compare`, the layers named by their ``"network/layer"`` labels.
    gram_store
        A Zarr group (a path or URL, created when missing, a group or a store object) that
        keeps each layer's centred Gram matrix (float64, n x n, ``8 n^2`` bytes per layer)
        under its ``"network/layer"`` label, written as the Gram path forms it. Layers whose
        Gram matrix the store already holds, formed from the same data (the same samples,
        width, dtype and values of the first and last samples), are read from it instead of
        their activations; one formed from other data is formed again and replaced, with a
        :class:`~dask_repsim.RepsimWarning`. Only ``cka`` and ``cka_debiased`` (functions of
        the linear Gram matrices), on ``method="gram"`` (or ``"auto"``). The result's attrs
        ``gram_store`` (the path or URL given, else the store's description),
        ``gram_digests`` (each layer's fingerprint), ``gram_formed`` and ``gram_read`` (the
        layers whose matrices were formed, and read from the store) let :func:`grow_zoo` add
        networks later. See :mod:`dask_repsim.paths.gram.store`.

    Returns
    -------
    xarray.Dataset
        The variables of :func:`compare` (one per metric, and the interval and permutation
        variables it adds) over dims ``(a, b)``, whose coordinates are unique
        ``"network/layer"`` labels, with non-index coordinates ``network_a``, ``layer_a``
        (along ``a``), ``network_b`` and ``layer_b`` (along ``b``). Attrs are those of
        :func:`compare`, plus ``networks_a`` and ``networks_b`` (the names, comma-separated)
        and ``self_comparison`` (1 when ``other`` was ``None``, else 0); the layout attrs
        (``sample_dims``, ``pool``, ``resize``, ``spatial_dims``) as :func:`compare`'s.

    Notes
    -----
    Compared with itself, a zoo computes each unordered pair of (network, layer) once for the
    symmetric measures (every measure but ``pwcca``, whose weights come from the narrower
    layer, layer_a's when both are as wide, ``linear_regression``, ``ridge_predictivity`` and
    ``pls_predictivity``, which fit layer_b from layer_a, and ``cknna``, whose k-NN-masked
    kernels are not symmetric matrices;
    :attr:`dask_repsim.registry.Measure.symmetric`) and mirrors it: its value,
    jackknife replicates and permutation null (side ``b`` permuted for the pair as computed, so
    both cells have the same p-value). A path whose metrics include an asymmetric one computes
    every cell (the symmetric ones' lower cells are still the mirrors, so that a metric's
    cells do not depend on the metrics beside it).

    Read the result with :func:`unstack_zoo`, :func:`select_zoo` or
    ``ds.set_xindex("network_a").sel(network_a=...)``, :func:`best_matches` and
    :func:`network_similarity`; draw it with :func:`dask_repsim.plot.zoo_heatmap` and
    :func:`dask_repsim.plot.network_heatmap`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 6))
    >>> zoo = {"seed0": {"fc1": x, "fc2": np.tanh(x)}, "seed1": {"fc1": -x, "fc2": x[:, :3]}}
    >>> ds = compare_zoo(zoo, metrics=["cka"])
    >>> ds.cka.dims, [str(v) for v in ds.a.values]
    (('a', 'b'), ['seed0/fc1', 'seed0/fc2', 'seed1/fc1', 'seed1/fc2'])
    >>> round(float(ds.cka.sel(a="seed0/fc1", b="seed1/fc1")), 6)
    1.0
    >>> [str(v) for v in ds.network_b.values]
    ['seed0', 'seed0', 'seed1', 'seed1']
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed, null=null)
    parameters = {"alpha": alpha, "sigma": sigma, "rdm": rdm, "rdm_compare": rdm_compare,
                  "k": k, "ridge": ridge, "folds": folds, "components": components,
                  "rdm_noise": rdm_noise}
    outputs = runners.plan_outputs(metrics, parameters)
    spatial_dims, layout = layout_attrs(sample_dims, pool, resize, spatial_dims)
    if gram_store is not None:
        kept.check_metrics([m for _, m, _ in outputs], method)
    side_a = networks_of(zoo, "zoo", storage_options)
    same = other is None or other is zoo
    side_b = side_a if same else networks_of(other, "other zoo", storage_options)
    flat_a, flat_b = _flat(side_a, "zoo"), None if same else _flat(side_b, "other zoo")
    names_a, names_b, layers, rows, cols = grid_layers(
        flat_a, flat_b, sample_dims=sample_dims, pool=pool, resize=resize,
        spatial_dims=spatial_dims, storage_options=storage_options, join=join)
    parameters["rdm_noise"] = grid_noise(rdm_noise, (names_a, names_b), layers, (rows, cols))
    options = runners.call_options(options, outputs, parameters)
    if gram_store is None:
        cells, path, run_attrs = grid.run_grid(outputs, layers, rows, cols, options,
                                               method=method, batch_size=batch_size,
                                               parameters=parameters, mirror=same)
    else:
        samples = _sample_ids([*flat_a.items(), *(flat_b or {}).items()], sample_dims,
                              storage_options, join)
        cells, path, run_attrs = _store_grid(
            outputs, layers, [names_a, names_b], [rows, cols], options, batch_size=batch_size,
            store=kept.GramStore(gram_store, storage_options), samples=samples, mirror=same)
    result = _zoo_dataset(cells, outputs, (side_a, side_b), (names_a, names_b), path,
                          run_attrs, options, same)
    result.attrs.update(layout, **_provenance(zoo, other, same, storage_options))
    return result


def _provenance(zoo: Any, other: Any, same: bool, storage_options: Mapping[str, Any] | None,
                ) -> dict[str, str]:
    """The networks' provenance as JSON text (``provenance_a``, ``provenance_b``: network
    name to record, for those that have one), after warning for each pair of networks that
    claim the same model with different preprocessing."""
    found = {"a": provenance.of_networks(zoo, storage_options)}
    found["b"] = found["a"] if same else provenance.of_networks(other, storage_options)
    for name_a, pa in found["a"].items():
        for name_b, pb in found["b"].items():
            if not same or name_a < name_b:
                provenance.check_pair(pa, pb, f"networks {name_a!r} and {name_b!r}")
    return {f"provenance_{side}": json.dumps(p, sort_keys=True)
            for side, p in found.items() if p}


def _zoo_dataset(cells, outputs, sides, names, path, run_attrs, options, same) -> xr.Dataset:
    """The Dataset of a zoo's cells: :func:`grid.build_dataset` over dims ``(a, b)``, with
    the network and layer of each side as coordinates."""
    side_a, side_b = sides
    ds = grid.build_dataset(cells, outputs, *names, path, run_attrs, options)
    ds = ds.rename(layer_a="a", layer_b="b")
    coords = {}
    for dim, networks in (("a", side_a), ("b", side_b)):
        nets, layer_names = _parts(networks)
        net, layer = SIDES[dim]
        coords[net] = (dim, nets, {"long_name": f"network of {dim}"})
        coords[layer] = (dim, layer_names, {"long_name": f"layer of {dim}"})
    ds = ds.assign_coords(coords)
    ds.attrs.update(networks_a=", ".join(side_a), networks_b=", ".join(side_b),
                    self_comparison=int(same))
    return ds


def _sample_ids(named: Sequence[tuple[str, Any]], sample_dims: SampleDims,
                storage_options: Mapping[str, Any] | None, join: str) -> list[str] | None:
    """The sample labels (as strings) the layers of ``named`` are compared on, paired by label
    as :func:`~dask_repsim.io.gather.grid_layers` pairs them; ``None`` when none has labels."""
    opened = [(name, open_input(value, name, storage_options)) for name, value in named]
    for (name, _), value in zip(opened, align_samples(opened, sample_dims, join), strict=True):
        found = sample_index(value, sample_dims, name)
        if found is not None:
            return [str(label) for label in found[1]]
    return None


def _aligned_to(flat: Mapping[str, Any], samples: list[str] | None, sample_dims: SampleDims,
                storage_options: Mapping[str, Any] | None, join: str) -> dict[str, Any]:
    """The layers of ``flat`` with their samples in the order of ``samples`` (the labels of a
    Gram store's matrices): labelled layers are selected by label (``join="exact"``: they
    must hold those samples and no other), unlabelled ones taken by position."""
    out = {}
    for name, value in flat.items():
        value = open_input(value, name, storage_options)
        found = None if samples is None else sample_index(value, sample_dims, name)
        if found is not None:
            dim, index = found
            have = pd.Index([str(label) for label in index])
            where = have.get_indexer(samples)
            missing = [s for s, w in zip(samples, where, strict=True) if w < 0]
            if missing or (join == "exact" and len(have) != len(samples)):
                raise ValueError(
                    f"{name} holds other samples than the zoo's Gram matrices "
                    f"({len(have)} labels, {len(missing)} of the zoo's {len(samples)} missing"
                    + (f", first: {missing[0]!r}" if missing else "") + "); a zoo grows by "
                    "networks that saw its samples" + ("" if missing else
                                                       " (join='inner' drops the others)"))
            if len(have) != len(samples) or not (where == np.arange(len(samples))).all():
                value = value.isel({dim: where})
        out[name] = value
    return out


def _store_grid(outputs, layers, names, sides, options, *, batch_size, store, samples,
                mirror, todo=None) -> tuple[runners.Cells, str, dict[str, Any]]:
    """The cells of a zoo's grid through a Gram store
    (:func:`dask_repsim.paths.gram.store.store_cells`), mirrored when the zoo is compared with
    itself: the cells, the path and the run's attrs (``gram_digests``: each label's Gram
    fingerprint, as JSON). ``layers[u]`` is ``None`` for a layer read from the store alone."""
    measures = [m for _, m, _ in outputs]
    if batch_size is not None:
        raise ValueError("batch_size= applies to method='minibatch' only, not to gram_store=")
    reject_unused("gram", options, measures=measures)
    asked = [name for name, on in (("interval=", options.interval is not None),
                                   ("permutations=", options.permutations > 0),
                                   ("null=", options.null is not None)) if on]
    if asked:
        raise ValueError(f"{' and '.join(asked)} {'is' if len(asked) == 1 else 'are'} not "
                         "available with gram_store=: they are summed from the Gram matrices "
                         "a grid saves to scratch, not from a store; leave gram_store out")
    rows, cols = sides
    keys: list[list[str]] = [[] for _ in layers]
    owner: dict[str, int] = {}
    for label, u in zip([*names[0], *names[1]], [*rows, *cols], strict=True):
        if owner.setdefault(label, u) != u:
            raise ValueError(f"two different layers are both called {label!r}; a Gram store "
                             "keeps one matrix per network/layer label: rename a network")
        if label not in keys[u]:
            keys[u].append(label)
    if mirror and todo is None:
        todo = runners.symmetric_cells(measures, rows, cols)
    cells, attrs, digests = kept.store_cells(path_functions("gram", measures), layers, keys,
                                             rows, cols, store, samples=samples, todo=todo)
    if mirror:
        cells = runners.mirror(cells, attrs, measures)
    attrs["gram_digests"] = json.dumps(digests)
    return cells, "gram", attrs


def grow_zoo(
    result: xr.Dataset, networks: Any, *, gram_store: Any = None,
    sample_dims: SampleDims = None, pool: str | None = None, resize: bool = False,
    spatial_dims: Sequence[Hashable] | None = None,
    storage_options: Mapping[str, Any] | None = None, join: str = "exact",
) -> xr.Dataset:
    """A zoo's result grown by new networks: only the cells that involve a new network are
    computed, the old networks' layers from their Gram matrices in the Gram store.

    Parameters
    ----------
    result
        The Dataset of ``compare_zoo(zoo, gram_store=...)`` (a zoo compared with itself, its
        Gram matrices kept), or of an earlier ``grow_zoo``.
    networks
        The new networks: a zoo in any form :func:`compare_zoo` takes; none may have the name
        of a network of ``result``.
    gram_store
        The Gram store the result's matrices are in (default: the ``gram_store`` attr of
        ``result``, the path or URL it was given). The new networks' Gram matrices are written
        there too, so the zoo can grow again.
    sample_dims, pool, resize, spatial_dims, storage_options, join
        As for :func:`compare_zoo`, for the new networks: give those the zoo was compared
        with (an error when they differ from the layout that ``result``'s attrs record).
        Their samples are paired with the stored matrices' by label (those stored with labels;
        ``join="inner"`` lets a new network hold more samples, the others dropped), else by
        position.

    Returns
    -------
    xarray.Dataset
        What ``compare_zoo`` of the old and new networks together gives (the old networks
        first), its old cells copied from ``result``; attrs those of ``result``, with the new
        networks in ``networks_a``, ``networks_b`` and ``grown_by``, their fingerprints added
        to ``gram_digests``, and this run's ``gram_formed`` (the new layers' matrices formed)
        and ``gram_read`` (those read from the store: the old layers').

    Notes
    -----
    None of the old networks' activations is read: each cell of a new layer with an old one is
    summed from the two stored n x n matrices, read by row blocks within the memory budget.
    Cost: the new networks' Gram matrices (``n^2 p`` each layer), and ``8 n^2`` bytes read per
    layer of the zoo. The old layers' matrices must be those ``result`` was computed from (their
    fingerprints, ``attrs["gram_digests"]``); a store whose matrix was replaced since (by a
    ``compare_zoo`` of changed data) is an error.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 40))
    >>> zoo = {"s0": {"fc": x, "relu": np.maximum(x, 0)}, "s1": {"fc": x[:, ::-1]}}
    >>> store = os.path.join(tempfile.mkdtemp(), "grams.zarr")
    >>> ds = compare_zoo(zoo, metrics=["cka"], gram_store=store)
    >>> s2 = {"fc": np.tanh(x), "out": x[:, :5]}
    >>> grown = grow_zoo(ds, {"s2": s2})  # reads none of the old networks' activations
    >>> [str(v) for v in grown.a.values]
    ['s0/fc', 's0/relu', 's1/fc', 's2/fc', 's2/out']
    >>> full = compare_zoo({**zoo, "s2": s2}, metrics=["cka"])
    >>> bool(abs(grown.cka - full.cka).max() < 1e-12), grown.attrs["grown_by"]
    (True, 's2')
    """
    check_zoo(result)
    spatial_dims, layout = layout_attrs(sample_dims, pool, resize, spatial_dims)
    _check_same_layout(result, layout)
    digests, store, outputs = _growing(result, gram_store, storage_options)
    old = [str(v) for v in result.a.values]
    infos = [store.info(label) for label in old]
    for label, info in zip(old, infos, strict=True):
        if info is None or info["fingerprint"] != digests.get(label):
            raise ValueError(
                f"the Gram store at {store.location} " + ("holds no Gram matrix of "
                f"{label!r}" if info is None else f"holds a Gram matrix of {label!r} formed "
                "from other data than this result's (the store was written since)")
                + "; compare the whole zoo again with compare_zoo(..., gram_store=...)")
    samples = infos[0]["samples"]
    if any(info["samples"] != samples for info in infos):
        raise ValueError(f"the Gram matrices of {', '.join(old)} in the Gram store at "
                         f"{store.location} are over different samples")
    olds = {net: dict.fromkeys(_order(result.layer_a.values[result.network_a.values == net]))
            for net in _order(result.network_a.values)}
    new = networks_of(networks, "new networks", storage_options)
    clash = [net for net in new if net in olds]
    if clash:
        raise ValueError(f"the zoo already holds the networks {', '.join(clash)}; give the new "
                         "networks other names")
    flat = _aligned_to(_flat(new, "new networks"), samples, sample_dims, storage_options, join)
    names, _, layers, rows, _ = grid_layers(
        flat, None, sample_dims=sample_dims, pool=pool, resize=resize,
        spatial_dims=spatial_dims, storage_options=storage_options, join=join)
    start = len(old)
    positions = [*range(start), *(start + u for u in rows)]
    todo = [(i, j) for i in range(len(positions)) for j in range(max(i, start), len(positions))]
    cells, path, attrs = _store_grid(
        outputs, [None] * start + layers, [old + names, old + names], [positions, positions],
        Options(), batch_size=None, store=store, samples=samples, mirror=True, todo=todo)
    for m, (name, _, _) in enumerate(outputs):
        values = result[name].values
        for i in range(start):
            for j in range(start):
                cells[m, i, j] = Cell(float(values[i, j]),
                                      fields={"method": "gram", "approximate": None})
    kept_attrs = {k: v for k, v in result.attrs.items()
                  if k not in ("dask_repsim_version", "metrics", "method", "tile_rows",
                               "n_tiles")}
    grown = ", ".join(filter(None, [result.attrs.get("grown_by", ""), *new]))
    kept_attrs.update(attrs)  # this run's: the matrices formed and read, its tiles
    kept_attrs.update(grown_by=grown, gram_digests=json.dumps(
        {**digests, **json.loads(attrs["gram_digests"])}))
    side = {**olds, **new}
    return _zoo_dataset(cells, outputs, (side, side), (old + names, old + names), path,
                        kept_attrs, Options(), True)


def _check_same_layout(result: xr.Dataset, layout: Mapping[str, str | int]) -> None:
    """An error when the layout options given to grow a zoo differ from those its result
    records (a result written before the layout was recorded has none to check)."""
    recorded = {k: result.attrs[k] for k in layout if k in result.attrs}
    if recorded and any(recorded.get(k) != v for k, v in layout.items()):
        def said(options: Mapping[str, Any]) -> str:  # resize read from netCDF: a numpy int
            return ", ".join(f"{k}={v!r}" if isinstance(v := options.get(k), str | None)
                             else f"{k}={int(v)}" for k in layout)

        raise ValueError(
            f"the zoo was compared with the layout {said(recorded)} and is grown with "
            f"{said(layout)}: values of different layouts are not comparable; give grow_zoo "
            "the sample_dims, pool, resize and spatial_dims the zoo was compared with"
        )


def _growing(result: xr.Dataset, gram_store: Any, storage_options: Mapping[str, Any] | None,
             ) -> tuple[dict[str, str], Any, list]:
    """What a zoo's result grows from: its layers' Gram fingerprints, the Gram store and the
    outputs (its metrics); an error when it cannot grow."""
    if not result.attrs.get("self_comparison"):
        raise ValueError("grow_zoo grows a zoo compared with itself (compare_zoo(zoo, "
                         "gram_store=...)); this result compares two zoos")
    if list(result.a.values) != list(result.b.values):
        raise ValueError("grow_zoo grows the whole result of a zoo compared with itself (the "
                         "same layers along a and b), not a selection of it")
    if "gram_digests" not in result.attrs:
        raise ValueError("this result was computed without gram_store=, so no Gram matrices "
                         "were kept to grow it from; compare the zoo with "
                         "compare_zoo(zoo, metrics=..., gram_store=path) first")
    where = result.attrs.get("gram_store") if gram_store is None else gram_store
    metrics = [m.strip() for m in str(result.attrs["metrics"]).split(",")]
    kept.check_metrics(metrics, "gram")
    return (json.loads(result.attrs["gram_digests"]), kept.GramStore(where, storage_options),
            runners.plan_outputs(metrics, {}))


def check_zoo(ds: Any) -> xr.Dataset:
    """``ds`` if it is a :func:`compare_zoo` result (or a selection of one); an error
    otherwise."""
    needed = [c for dim in SIDES for c in SIDES[dim]]
    if not isinstance(ds, xr.Dataset) or set(SIDES) - set(ds.dims) or any(
            c not in ds.coords for c in needed):
        raise ValueError("expected the Dataset of compare_zoo(): dims ('a', 'b') with the "
                         f"coordinates {', '.join(needed)}"
                         + ("; this is a compare() result" if isinstance(ds, xr.Dataset)
                            and "layer_a" in ds.dims else ""))
    return ds


def _order(values: Any) -> list[str]:
    """The distinct values in their first order."""
    return list(dict.fromkeys(str(v) for v in np.asarray(values)))


def unstack_zoo(ds: xr.Dataset) -> xr.Dataset:
    """A :func:`compare_zoo` result over dims ``(network_a, layer_a, network_b, layer_b)``.

    Parameters
    ----------
    ds
        The Dataset of :func:`compare_zoo`, or a selection of it (:func:`select_zoo`).

    Returns
    -------
    xarray.Dataset
        Every variable over ``(network_a, layer_a, network_b, layer_b)``, networks and layers
        in the order they first appear; NaN where a network lacks a layer (so integer
        variables become floats). When the networks share their layer names (one
        architecture) this is the natural 4-D array; with different architectures the layer
        dims hold the union of their names.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 6))
    >>> zoo = {"mlp": {"fc1": x, "fc2": np.tanh(x)}, "cnn": {"conv": x[:, :4]}}
    >>> u = unstack_zoo(compare_zoo(zoo, metrics=["cka"]))
    >>> u.cka.dims, [str(v) for v in u.layer_a.values]
    (('network_a', 'layer_a', 'network_b', 'layer_b'), ['fc1', 'fc2', 'conv'])
    >>> bool(np.isnan(u.cka.sel(network_a="cnn", layer_a="fc1")).all())
    True
    """
    check_zoo(ds)
    order = {c: _order(ds[c].values) for dim in SIDES for c in SIDES[dim]}
    out = ds.drop_vars(list(SIDES)).set_index(
        a=list(SIDES["a"]), b=list(SIDES["b"])).unstack(list(SIDES))
    return out.reindex(order).transpose(*SIDES["a"], *SIDES["b"], ...)


def select_zoo(ds: xr.Dataset, *, network_a: str | Sequence[str] | None = None,
               layer_a: str | Sequence[str] | None = None,
               network_b: str | Sequence[str] | None = None,
               layer_b: str | Sequence[str] | None = None) -> xr.Dataset:
    """The part of a :func:`compare_zoo` result with the given networks and layers on each side.

    Parameters
    ----------
    ds
        The Dataset of :func:`compare_zoo`.
    network_a, layer_a, network_b, layer_b
        A name or a list of names each; left out: every one. Rows (``a``) whose network and
        layer are among those asked for are kept, in the zoo's order, and so columns (``b``).

    Returns
    -------
    xarray.Dataset
        ``ds`` with those rows and columns, dims ``(a, b)`` as before. The same as
        ``ds.set_xindex("network_a").sel(network_a=name)`` for one network, with errors that
        list what the zoo holds.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 6))
    >>> zoo = {"mlp": {"fc1": x, "fc2": np.tanh(x)}, "cnn": {"conv": x[:, :4]}}
    >>> ds = compare_zoo(zoo, metrics=["cka"])
    >>> part = select_zoo(ds, network_a="mlp", network_b="cnn")
    >>> [str(v) for v in part.a.values], [str(v) for v in part.b.values]
    (['mlp/fc1', 'mlp/fc2'], ['cnn/conv'])
    >>> select_zoo(ds, network_a="vit")
    Traceback (most recent call last):
    ...
    ValueError: network_a 'vit' is not in the zoo; it holds mlp, cnn
    """
    check_zoo(ds)
    asked = {"network_a": network_a, "layer_a": layer_a, "network_b": network_b,
             "layer_b": layer_b}
    keep = {dim: np.ones(ds.sizes[dim], dtype=bool) for dim in SIDES}
    for dim, coords in SIDES.items():
        for coord in coords:
            wanted = asked[coord]
            if wanted is None:
                continue
            names = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]
            known = _order(ds[coord].values)
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{coord} {', '.join(map(repr, unknown))} "
                                 f"{'is' if len(unknown) == 1 else 'are'} not in the zoo; "
                                 f"it holds {', '.join(known)}")
            keep[dim] &= np.isin(ds[coord].values.astype(str), names)
        if not keep[dim].any():
            given = ", ".join(f"{c}={asked[c]!r}" for c in coords if asked[c] is not None)
            raise ValueError(f"no layer of the zoo has {given}")
    return ds.isel(keep)


def _metric(ds: xr.Dataset, metric: str) -> tuple[xr.DataArray, bool]:
    """The variable ``metric`` of a zoo result and whether larger is more similar."""
    check_zoo(ds)

    def measure_of(name: str) -> str:  # cka_rbf_0.4 is a bandwidth of cka_rbf
        return next((m for m in runners.SIGMA_METRICS if name.startswith(f"{m}_")), name)

    measure = measure_of(metric)
    metrics = [str(v) for v in ds.data_vars if measure_of(str(v)) in MEASURES]
    if metric not in ds.data_vars or measure not in MEASURES:
        raise ValueError(f"metric {metric!r} is not in the result; its metrics are "
                         f"{', '.join(metrics) or 'none'}")
    return ds[metric], MEASURES[measure].similarity


def best_matches(ds: xr.Dataset, metric: str = "cka") -> xr.Dataset:
    """Each layer's best-matching layer in every other network, and its value.

    Parameters
    ----------
    ds
        The Dataset of :func:`compare_zoo`.
    metric
        The variable to match by: the largest value for a similarity, the smallest for a
        distance (``cka_angular``, ``shape_metric``, ``bures_distance``;
        :attr:`dask_repsim.registry.Measure.similarity`).

    Returns
    -------
    xarray.Dataset
        Over dims ``(a, network_b)``: ``match``, the layer of ``network_b`` that matches layer
        ``a`` best, and ``<metric>``, its value; ``a`` keeps its coordinates ``network_a`` and
        ``layer_a``. For a zoo compared with itself a network is not matched with itself:
        there ``match`` is ``""`` and the value NaN.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 6))
    >>> zoo = {"s0": {"fc1": x, "fc2": np.tanh(x[:, :2])}, "s1": {"h": x[:, :2], "g": -x}}
    >>> best = best_matches(compare_zoo(zoo, metrics=["cka"]), "cka")
    >>> [str(v) for v in best.match.sel(network_b="s1").values]
    ['g', 'h', '', '']
    """
    values, similarity = _metric(ds, metric)
    grid4 = unstack_zoo(values.to_dataset())[metric]
    best = grid4.max("layer_b") if similarity else grid4.min("layer_b")
    match = (grid4.idxmax if similarity else grid4.idxmin)("layer_b")
    rows = {c: xr.DataArray(ds[c].values, dims="a") for c in SIDES["a"]}
    best, match = best.sel(rows), match.sel(rows)
    if ds.attrs.get("self_comparison"):
        own = best.network_b == xr.DataArray(ds.network_a.values, dims="a")
        best, match = best.where(~own), match.where(~own)
    match = match.fillna("").astype(str)
    coords = {"a": ds.a.values, **{c: ("a", ds[c].values) for c in SIDES["a"]}}
    out = xr.Dataset({"match": match.drop_vars(list(SIDES["a"])),
                      metric: best.drop_vars(list(SIDES["a"]))}).assign_coords(coords)
    out["match"].attrs = {"long_name": f"layer of network_b best matching a by {metric}"}
    out[metric].attrs = {**values.attrs, "long_name": f"{metric} of the best match"}
    out.attrs = {"metric": metric, "best": "largest" if similarity else "smallest"}
    return out.transpose("a", "network_b")


def network_similarity(ds: xr.Dataset, metric: str = "cka",
                       summary: str = "max") -> xr.DataArray:
    """Network-by-network similarity: one number per pair of networks.

    Parameters
    ----------
    ds
        The Dataset of :func:`compare_zoo`.
    metric
        The variable summarised.
    summary
        ``"max"``: the best value over every pair of their layers (the largest for a
        similarity, the smallest for a distance), as the Platonic Representation Hypothesis
        paper (Huh et al. 2024) compares models. ``"matched"``: the mean over the layers of
        the same name (networks of one architecture: seeds, checkpoints); an error names the
        networks when two share no layer name.

    Returns
    -------
    xarray.DataArray
        Dims ``(network_a, network_b)``, networks in the zoo's order; attrs ``summary`` and
        ``metric``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(300, 6))
    >>> zoo = {"s0": {"fc1": x, "fc2": np.tanh(x)}, "s1": {"fc1": -x, "fc2": x[:, :2]}}
    >>> ds = compare_zoo(zoo, metrics=["cka"])
    >>> sim = network_similarity(ds, "cka", summary="matched")
    >>> sim.dims, round(float(sim.sel(network_a="s0", network_b="s1")), 6) == round(
    ...     (1 + float(ds.cka.sel(a="s0/fc2", b="s1/fc2"))) / 2, 6)
    (('network_a', 'network_b'), True)
    """
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, not {summary!r}")
    values, similarity = _metric(ds, metric)
    grid4 = unstack_zoo(values.to_dataset())[metric]
    if summary == "max":
        layer_dims = ["layer_a", "layer_b"]
        out = grid4.max(layer_dims) if similarity else grid4.min(layer_dims)
    else:
        shared = [n for n in grid4.layer_a.values if n in set(grid4.layer_b.values)]
        pick = xr.DataArray(shared, dims="layer")
        same = grid4.sel(layer_a=pick, layer_b=pick)  # (network_a, network_b, layer)
        counts = same.count("layer")
        if not (counts > 0).all():
            net_a, net_b = (str(c[int(i)]) for c, i in zip(
                (counts.network_a.values, counts.network_b.values),
                np.argwhere(counts.values == 0)[0], strict=True))
            raise ValueError(f"networks {net_a!r} and {net_b!r} share no layer name: "
                             "summary='matched' averages the layers of the same name "
                             "(networks of one architecture); use summary='max'")
        out = same.mean("layer")
    out.name = metric
    out.attrs = {"metric": metric, "summary": summary,
                 "long_name": f"{summary} {metric} between networks"}
    return out
