"""The xarray side of the inputs: which dims of each layer play which role, and spatial resizing.

Dims are addressed by their **role**: a requested name ``"height"`` means the dim called
``height`` or any dim whose name ends in ``.height``. :func:`~dask_repsim.capture_activations`
qualifies a dim by its layer's name (``conv1.height``) when layers disagree on its size, because
xarray needs one size per dim name in a Dataset; ``sample_dims``, ``pool``, ``resize`` and
``spatial_dims`` find those dims all the same. A name that is itself qualified
(``"conv1.height"``) matches only that dim.

In a grid, each layer uses the requested dims it has (a dense layer has only ``sample`` where a
conv layer has ``sample, height, width``); a requested dim that no layer has is an error listing
every layer's dims (:func:`check_requested`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

SampleDims = Sequence[Hashable] | str | None


def as_names(dims: SampleDims) -> tuple[Hashable, ...]:
    """``sample_dims`` or ``spatial_dims`` as a tuple of names (``None``: none)."""
    if dims is None:
        return ()
    return (dims,) if isinstance(dims, str) else tuple(dims)


def matching(dims: Iterable[Hashable], role: Hashable) -> list[Hashable]:
    """The dims among ``dims`` that play ``role``: named ``role``, or ``<layer>.<role>``.

    Examples
    --------
    >>> matching(("sample", "conv1.channel", "conv1.height", "width"), "height")
    ['conv1.height']
    >>> matching(("sample", "conv1.height"), "conv2.height")
    []
    """
    dims = list(dims)
    if role in dims:
        return [role]
    return [d for d in dims if str(d).endswith(f".{role}")]


def resolve(dims: Sequence[Hashable], requested: SampleDims, name: str) -> tuple[Hashable, ...]:
    """The dims of a layer (``name``) that the ``requested`` roles address, in request order;
    roles the layer does not have are left out. Two dims for one role is an error."""
    found = []
    for role in as_names(requested):
        hits = matching(dims, role)
        if len(hits) > 1:
            raise ValueError(
                f"{role!r} is ambiguous in {name}: it has dims {tuple(hits)}; name one of them"
            )
        found += [h for h in hits if h not in found]
    return tuple(found)


def sample_dims_for(value: Any, sample_dims: SampleDims, name: str = "input") -> SampleDims:
    """The sample dims one layer of a grid uses: those of ``sample_dims`` it has, by role.

    In a Dataset, a conv layer may have ("sample", "height", "width") where a dense layer has
    only "sample". A layer with none of them keeps the request (and fails on it).
    """
    if isinstance(value, xr.DataArray) and sample_dims is not None:
        return resolve(value.dims, sample_dims, name) or as_names(sample_dims)
    return sample_dims


def check_requested(
    values: Mapping[str, Any], option: str, requested: SampleDims
) -> None:
    """An error when a dim of ``requested`` (by role) is in none of the layers, listing the
    dims each layer has. Plain arrays have no dim names: they never count as having one."""
    names = as_names(requested)
    arrays = {k: v for k, v in values.items() if isinstance(v, xr.DataArray)}
    missing = [r for r in names if not any(matching(v.dims, r) for v in arrays.values())]
    if not missing:
        return
    listed = "; ".join(
        f"{k} {tuple(str(d) for d in v.dims)}" if isinstance(v, xr.DataArray)
        else f"{k} (a plain array of shape {tuple(getattr(v, 'shape', ()))}: no dim names)"
        for k, v in values.items()
    )
    raise ValueError(
        f"{option} {tuple(str(m) for m in missing)}: no layer has "
        f"{'this dim' if len(missing) == 1 else 'these dims'}; the layers' dims are: {listed}"
    )


def _grow(value: Any, spatial_dims: Sequence[Hashable], target: Mapping[Hashable, int]) -> Any:
    """``value`` with its spatial dims smaller than ``target`` (by role) interpolated up."""
    if not isinstance(value, xr.DataArray):
        return value
    dims = {}
    for role in spatial_dims:
        for dim in matching(value.dims, role):
            if value.sizes[dim] < target[role]:
                dims[dim] = target[role]
    if not dims:
        return value
    centres = {d: (np.arange(value.sizes[d]) + 0.5) / value.sizes[d] for d in dims}
    wanted = {d: (np.arange(size) + 0.5) / size for d, size in dims.items()}
    out = value.drop_vars(list(dims), errors="ignore").assign_coords(centres)
    if isinstance(out.data, da.Array):
        out = out.chunk({d: -1 for d in dims})
    out = out.astype(np.float64).interp(wanted, kwargs={"fill_value": "extrapolate"})
    return out.drop_vars(list(dims))


def resized(
    inputs_a: dict, inputs_b: dict, spatial_dims: Sequence[Hashable]
) -> tuple[dict, dict]:
    """Interpolate smaller spatial grids of xarray layers up to the largest one, by role:
    ``conv1.height`` and ``conv2.height`` both grow to the largest ``height``."""
    arrays = [v for v in (*inputs_a.values(), *inputs_b.values()) if isinstance(v, xr.DataArray)]
    target = {
        role: max((v.sizes[d] for v in arrays for d in matching(v.dims, role)), default=0)
        for role in spatial_dims
    }
    grown_a = {k: _grow(v, spatial_dims, target) for k, v in inputs_a.items()}
    if inputs_b is inputs_a:
        return grown_a, grown_a
    return grown_a, {k: _grow(v, spatial_dims, target) for k, v in inputs_b.items()}
