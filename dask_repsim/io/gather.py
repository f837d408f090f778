"""Gathering the layers of a call: one pair, or each side of a grid, their samples
paired by label and their sample counts checked.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import xarray as xr

from ..exceptions import SampleCountError
from .inputs import Layer, as_layer, layers_of, open_input
from .labels import align_samples, check_join
from .layouts import (
    SampleDims,
    as_names,
    check_layout,
    check_requested,
    resized,
    sample_dims_for,
)
from .validation import check_sample_counts


def distinct(layers: list[Layer]) -> list[Layer]:
    """Drop layers that are the same dask array as an earlier one: an input is read once."""
    seen: dict[str, Layer] = {}
    for layer in layers:
        seen.setdefault(layer.data.name, layer)
    return list(seen.values())


def pair_layers(x: Any, y: Any, options: Any, join: str = "exact") -> list[Layer]:
    """The layers of ``x`` and ``y`` (one when they are the same array), their samples paired
    by label (:mod:`dask_repsim.io.labels`; ``join="inner"``: the samples both hold), the
    requested sample dims checked (:mod:`dask_repsim.io.layouts`), sample counts checked."""
    check_join(join)
    storage = options.storage_options
    inputs = {"x": open_input(x, "x", storage), "y": open_input(y, "y", storage)}
    if not any(isinstance(v, xr.DataArray) for v in inputs.values()):
        # a DataArray names the dims it lacks itself (as_layer); plain arrays have none
        check_requested(inputs, "sample_dims", options.sample_dims)
    x, y = align_samples(list(inputs.items()), options.sample_dims, join)
    kw = {"sample_dims": options.sample_dims, "storage_options": storage}
    lx, ly = as_layer(x, name="x", **kw), as_layer(y, name="y", **kw)
    check_sample_counts([lx.name, ly.name], [lx.data.shape[0], ly.data.shape[0]])
    return distinct([lx, ly])


def sizes(layers: list[Layer]) -> tuple[int, int, int]:
    """Samples, features of the first layer, features of the last."""
    return layers[0].data.shape[0], layers[0].data.shape[1], layers[-1].data.shape[1]


def grid_layers(
    a: Any, b: Any, *, sample_dims: SampleDims, pool: str | None, resize: bool,
    spatial_dims: Sequence[Hashable], storage_options: Mapping[str, Any] | None,
    join: str = "exact",
) -> tuple[list[str], list[str], list[Layer], list[int], list[int]]:
    """Layer names of each side, the distinct layers, and each side's indices into them.

    Dims are addressed by role (:mod:`dask_repsim.io.layouts`): a requested sample or spatial dim
    that no layer has is an error listing every layer's dims, and so is a spatial dim that
    ``pool`` or ``resize`` would not act on (:func:`~dask_repsim.io.layouts.check_layout`:
    ``resize`` interpolates dims folded into samples, ``pool`` averages feature dims; callers
    check the options themselves with :func:`~dask_repsim.io.layouts.layout_attrs`). Labelled
    layers are paired by sample label (:mod:`dask_repsim.io.labels`), aligned to side ``a``'s
    first labelled layer.
    """
    check_join(join)
    inputs_a = layers_of(a, "x", storage_options)
    inputs_b = inputs_a if b is None or b is a else layers_of(b, "y", storage_options)
    one_side = inputs_b is inputs_a
    inputs_a = {k: open_input(v, k, storage_options) for k, v in inputs_a.items()}
    inputs_b = inputs_a if one_side else {k: open_input(v, k, storage_options)
                                          for k, v in inputs_b.items()}
    keys_a = {k: k if one_side else f"{k} of a" for k in inputs_a}  # names in messages
    keys_b = keys_a if one_side else {k: f"{k} of b" for k in inputs_b}
    both = {keys_a[k]: v for k, v in inputs_a.items()}
    both.update({keys_b[k]: v for k, v in inputs_b.items()})
    check_requested(both, "sample_dims", sample_dims)
    # plain arrays pool every axis after the second: spatial_dims names DataArrays' dims
    plain_maps = any(not isinstance(v, xr.DataArray) and getattr(v, "ndim", 0) > 2
                     for v in both.values())
    spatial_dims = as_names(spatial_dims)
    if resize or (pool == "mean" and not plain_maps):
        check_requested(both, "spatial_dims", spatial_dims)
    check_layout(both, sample_dims, pool, resize, spatial_dims)
    aligned = dict(zip(both, align_samples(list(both.items()), sample_dims, join), strict=True))
    inputs_a = {k: aligned[keys_a[k]] for k in inputs_a}
    inputs_b = inputs_a if one_side else {k: aligned[keys_b[k]] for k in inputs_b}
    if resize:
        inputs_a, inputs_b = resized(inputs_a, inputs_b, spatial_dims)

    def layer(name: str, value: Any) -> Layer:
        return as_layer(value, name=name, sample_dims=sample_dims_for(value, sample_dims, name),
                        storage_options=storage_options, pool=pool, spatial_dims=spatial_dims)

    side_a = [layer(name, value) for name, value in inputs_a.items()]
    side_b = side_a if inputs_b is inputs_a else [layer(n, v) for n, v in inputs_b.items()]
    layers = distinct(side_a + side_b)  # an array on both sides is read once
    position = {layer.data.name: i for i, layer in enumerate(layers)}
    try:
        check_sample_counts([x.name for x in layers], [x.data.shape[0] for x in layers])
    except SampleCountError as error:
        if len(as_names(sample_dims)) < 2:  # nothing folded: the counts are the user's
            raise
        raise SampleCountError(
            f"{error}; with spatial positions folded into samples, give the folded layers one "
            "grid (resize=True), or fold fewer sample_dims (and pool='mean' to average the "
            "rest away)"
        ) from None
    rows = [position[x.data.name] for x in side_a]
    cols = [position[x.data.name] for x in side_b]
    return list(inputs_a), list(inputs_b), layers, rows, cols

