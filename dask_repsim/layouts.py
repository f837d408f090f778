"""The xarray side of a grid: which dims of each layer index samples, and spatial resizing."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

SampleDims = Sequence[Hashable] | str | None


def sample_dims_for(value: Any, sample_dims: SampleDims) -> SampleDims:
    """The sample dims one variable of a Dataset uses: those of ``sample_dims`` it has.

    In a Dataset, a conv layer may have ("sample", "height", "width") where a dense layer has
    only "sample".
    """
    if isinstance(value, xr.DataArray) and sample_dims is not None:
        dims = (sample_dims,) if isinstance(sample_dims, str) else tuple(sample_dims)
        present = tuple(d for d in dims if d in value.dims)
        return present or dims
    return sample_dims


def resized(
    inputs_a: dict, inputs_b: dict, spatial_dims: Sequence[Hashable]
) -> tuple[dict, dict]:
    """Interpolate smaller spatial grids of xarray layers up to the largest one."""
    arrays = [v for v in (*inputs_a.values(), *inputs_b.values()) if isinstance(v, xr.DataArray)]
    target = {d: max((v.sizes[d] for v in arrays if d in v.dims), default=0) for d in spatial_dims}

    def grow(value: Any) -> Any:
        if not isinstance(value, xr.DataArray):
            return value
        dims = [d for d in spatial_dims if d in value.dims and value.sizes[d] < target[d]]
        if not dims:
            return value
        centres = {d: (np.arange(value.sizes[d]) + 0.5) / value.sizes[d] for d in dims}
        wanted = {d: (np.arange(target[d]) + 0.5) / target[d] for d in dims}
        out = value.drop_vars(dims, errors="ignore").assign_coords(centres)
        if isinstance(out.data, da.Array):
            out = out.chunk({d: -1 for d in dims})
        out = out.astype(np.float64).interp(wanted, kwargs={"fill_value": "extrapolate"})
        return out.drop_vars(dims)

    grown_a = {k: grow(v) for k, v in inputs_a.items()}
    grown_b = grown_a if inputs_b is inputs_a else {k: grow(v) for k, v in inputs_b.items()}
    return grown_a, grown_b
