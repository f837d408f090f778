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

``spatial_dims`` names the dims that the two spatial options act on, and nothing else:
``pool="mean"`` averages those that are features away (before flattening), ``resize=True``
interpolates those folded into samples up to the largest grid, so that folded layers have the
same samples. Each spatial dim a layer has must be what its option acts on (:func:`check_layout`):
resizing flattened features would change the values compared, not the samples; pooling dims
folded into samples would do nothing. The options are recorded in the result's attrs
(:func:`layout_attrs`): values computed with different layouts are not comparable.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

SampleDims = Sequence[Hashable] | str | None
#: the dims ``pool`` and ``resize`` act on when ``spatial_dims`` is not given
SPATIAL_DIMS = ("height", "width")


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


def _joined(names: Sequence[Hashable]) -> str:
    return ", ".join(str(n) for n in names) or "none"


def layout_attrs(
    sample_dims: SampleDims, pool: str | None, resize: bool, spatial_dims: SampleDims
) -> tuple[tuple[Hashable, ...], dict[str, str | int]]:
    """The spatial dims that ``pool`` or ``resize`` act on (:data:`SPATIAL_DIMS` when not given;
    none without either) and the attrs that record the layout in a result, netCDF-safe:
    ``sample_dims``, ``pool`` and ``spatial_dims`` as text (dims joined by ", ", ``"none"`` when
    not given or not used), ``resize`` as 1 or 0. ``spatial_dims`` given without ``pool`` or
    ``resize``, and both of those together, are errors.

    Examples
    --------
    >>> spatial, attrs = layout_attrs(("sample", "height", "width"), None, True, None)
    >>> spatial, attrs["sample_dims"], attrs["pool"], attrs["resize"]
    (('height', 'width'), 'sample, height, width', 'none', 1)
    """
    if pool not in (None, "mean"):
        raise ValueError(f"pool must be None or 'mean', not {pool!r}")
    if not isinstance(resize, bool | np.bool_):
        raise ValueError(f"resize must be True or False, not {resize!r}")
    if pool is not None and resize:
        raise ValueError(
            "pool='mean' and resize=True do not go together: pool averages the spatial_dims "
            "away, leaving no grid to resize; resize interpolates spatial grids folded into "
            "samples (sample_dims), so that folded layers have the same samples"
        )
    if pool is None and not resize:
        if spatial_dims is not None:
            raise ValueError(
                f"spatial_dims {tuple(str(d) for d in as_names(spatial_dims))} applies only "
                "with pool='mean' (the dims averaged away) or resize=True (the grids folded "
                "into samples that are interpolated); neither is given, so it would be "
                "ignored: give pool= or resize=, or leave out spatial_dims"
            )
        spatial: tuple[Hashable, ...] = ()
    else:
        spatial = as_names(SPATIAL_DIMS if spatial_dims is None else spatial_dims)
        if not spatial:
            raise ValueError(f"spatial_dims is empty: name the dims that "
                             f"{'pool' if pool else 'resize'} acts on")
    attrs = {"sample_dims": _joined(as_names(sample_dims)), "pool": pool or "none",
             "resize": int(resize), "spatial_dims": _joined(spatial)}
    return spatial, attrs


def check_layout(
    values: Mapping[str, Any], sample_dims: SampleDims, pool: str | None, resize: bool,
    spatial_dims: Sequence[Hashable],
) -> None:
    """An error when a layer has a spatial dim that its option would not act on as it says:
    with ``resize=True``, one left as a feature (flattened: resizing would change the values
    compared, not the samples); with ``pool="mean"``, one folded into samples (pooling would
    leave it as it is). Plain arrays have no dim names: they are not checked.

    Examples
    --------
    >>> conv = xr.DataArray(np.zeros((4, 2, 3, 3)), dims=("sample", "channel", "height", "width"))
    >>> check_layout({"conv": conv}, None, "mean", False, ("height", "width"))  # pooled: fine
    >>> check_layout({"conv": conv}, None, None, True, ("height", "width"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: resize=True interpolates spatial grids folded into samples ...
    """
    if pool is None and not resize:
        return
    for name, value in values.items():
        if not isinstance(value, xr.DataArray):
            continue
        samples = (resolve(value.dims, sample_dims, name) if sample_dims is not None
                   else resolve(value.dims, "sample", name) or value.dims[:1])
        spatial = resolve(value.dims, spatial_dims, name)
        wrong = tuple(str(d) for d in spatial if (d in samples) != resize)
        if not wrong:
            continue
        if resize:
            fold = ("sample", *(str(d) for d in spatial_dims))
            raise ValueError(
                f"resize=True interpolates spatial grids folded into samples (as with "
                f"sample_dims={fold}), so that folded layers have the same samples; {name} has "
                f"{wrong} as features (flattened), where resizing would change the values "
                "compared, not the samples: fold them into samples with sample_dims, name in "
                "spatial_dims only the folded dims, or leave out resize (flattened or pooled "
                "layers need no common grid)"
            )
        raise ValueError(
            f"pool='mean' averages the spatial_dims that are features away; {name} has {wrong} "
            f"folded into samples by sample_dims {tuple(str(d) for d in as_names(sample_dims))}"
            ", which pooling would leave as they are: leave them out of sample_dims to average "
            "them away, out of spatial_dims to keep them folded, or leave out pool"
        )
