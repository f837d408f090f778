"""Pairing samples by label: the one rule every public function and ``compare`` follow.

An input is **labelled** when it is a DataArray whose sample dim carries a coordinate (an index):
``xr.DataArray(..., coords={"sample": ids})``, a Dataset opened from a capture
(:func:`~dask_repsim.capture_activations` writes a ``sample`` coordinate), or a zarr array or
group path inside such a capture. The sample dim that carries the labels is the one playing the
role ``sample`` among the input's sample dims (else the first of them); folded dims such as
``height`` need no labels.

- Labelled inputs are paired by label. Identical labels in the same order cost nothing: the
  arrays are used as they are.
- The same labels in another order are aligned to the order of the first labelled input (in
  ``compare``: side ``a``'s first layer). For a chunked (dask) input that is a gather of rows
  (``DataArray.isel`` with the new order, dask's ``take``): every chunk of that input is read
  once and its rows are regrouped into chunks in the new order, so the input passes through
  memory once more and the graph grows by about (input chunks) x (output chunks) small tasks.
  To pay this once rather than per call, store the data sorted the same way
  (``ds.sortby("sample").to_zarr(...)``), or capture both networks with the same loader order.
- Different label sets are an error that says how many labels differ and names the first
  missing one, unless ``join="inner"`` asks for the samples that every input holds (in the
  order of the first labelled input). Labels must then be unique.
- Plain arrays (numpy, dask, zarr without dimension names) and DataArrays without a coordinate
  on their sample dim are unlabelled: they are taken by position, in the order of the first
  labelled input when there is one. Mixing a labelled and an unlabelled input is therefore
  positional pairing; ``join="inner"`` with an unlabelled input is an error when it would drop
  samples, and with no labelled input at all.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .inputs import split_dims
from .layouts import SampleDims, matching, sample_dims_for

#: the values ``join=`` takes
JOINS = ("exact", "inner")


def check_join(join: str) -> None:
    """An error for a ``join`` that is not one of :data:`JOINS`.

    Examples
    --------
    >>> check_join("outer")
    Traceback (most recent call last):
    ...
    ValueError: join must be one of ('exact', 'inner'), not 'outer'
    """
    if not isinstance(join, str) or join not in JOINS:
        raise ValueError(f"join must be one of {JOINS}, not {join!r}")


def sample_index(value: Any, sample_dims: SampleDims, name: str
                 ) -> tuple[Hashable, pd.Index] | None:
    """The dim that labels ``value``'s samples and its labels, or None for an unlabelled input.

    Examples
    --------
    >>> x = xr.DataArray(np.zeros((3, 2)), dims=("sample", "unit"), coords={"sample": [7, 8, 9]})
    >>> dim, index = sample_index(x, None, "x")
    >>> dim, list(index)
    ('sample', [7, 8, 9])
    >>> sample_index(np.zeros((3, 2)), None, "y") is None
    True
    """
    if not isinstance(value, xr.DataArray):
        return None
    samples, _ = split_dims(value, sample_dims_for(value, sample_dims, name), name)
    dim = next(iter(matching(samples, "sample")), samples[0])
    return (dim, value.indexes[dim]) if dim in value.indexes else None


def _show(label: Any) -> str:
    if isinstance(label, tuple):
        return repr(tuple(x.item() if isinstance(x, np.generic) else x for x in label))
    return repr(label.item() if isinstance(label, np.generic) else label)


def _unique(index: pd.Index, name: str) -> None:
    if not index.is_unique:
        first = index[index.duplicated()][0]
        raise ValueError(
            f"the sample labels of {name} repeat ({_show(first)} more than once), so its "
            "samples cannot be paired by label; give each sample its own label"
        )


def _differ(a: str, ia: pd.Index, b: str, ib: pd.Index) -> ValueError:
    """The error for two label sets that differ."""
    parts = []
    for one, i1, other, i2 in ((a, ia, b, ib), (b, ib, a, ia)):
        gone = i1[~i1.isin(i2)]
        if len(gone):
            parts.append(f"{len(gone)} of the {len(i1)} sample labels of {one} are not in "
                         f"{other} (first: {_show(gone[0])})")
    common = int(ia.isin(ib).sum())
    return ValueError(
        f"{a} and {b} hold different samples: {'; '.join(parts)}. Samples are paired by "
        f"label; pass join='inner' to compare the {common} samples both hold"
    )


def _target(labelled: list[tuple[str, pd.Index]], join: str) -> pd.Index:
    """The labels every input is aligned to."""
    first, target = labelled[0]
    for name, index in labelled[1:]:
        if index.equals(target):
            continue
        _unique(target, first)
        _unique(index, name)
        if join == "exact":
            if len(index) != len(target) or not index.isin(target).all():
                raise _differ(first, target, name, index)
        else:
            target = target[target.isin(index)]
    if len(target) == 0:
        names = ", ".join(n for n, _ in labelled)
        raise ValueError(f"no sample label is held by every input ({names}); there is nothing "
                         "to compare")
    return target


def align_samples(named: Sequence[tuple[str, Any]], sample_dims: SampleDims,
                  join: str = "exact") -> list[Any]:
    """The inputs of ``named`` (``(name, input)`` pairs), labelled ones aligned by label.

    See the module documentation for the rule. Unlabelled inputs are returned as they are.

    Examples
    --------
    >>> ids = ["a", "b", "c", "d"]
    >>> x = xr.DataArray(np.arange(8.0).reshape(4, 2), dims=("sample", "unit"),
    ...                  coords={"sample": ids})
    >>> _, y = align_samples([("x", x), ("y", x[::-1])], None)
    >>> y.sample.values.tolist(), bool((y.values == x.values).all())
    (['a', 'b', 'c', 'd'], True)
    >>> _, z = align_samples([("x", x), ("z", x[1:])], None, join="inner")
    >>> z.sample.values.tolist()
    ['b', 'c', 'd']
    """
    check_join(join)
    found = [sample_index(value, sample_dims, name) for name, value in named]
    labelled = [(named[k][0], f[1]) for k, f in enumerate(found) if f is not None]
    if not labelled:
        if join == "inner":
            raise ValueError("join='inner' pairs samples by label, but no input has sample "
                             "labels (a coordinate on its sample dim); plain arrays are "
                             "paired by position")
        return [value for _, value in named]
    target = _target(labelled, join)
    unlabelled = [name for (name, _), f in zip(named, found, strict=True) if f is None]
    if unlabelled and any(len(target) != len(index) for _, index in labelled):
        raise ValueError(
            f"join='inner' drops samples of the labelled inputs, but {', '.join(unlabelled)} "
            "has no sample labels to select its samples by; label it or give it the common "
            "samples"
        )
    out = []
    for (_, value), f in zip(named, found, strict=True):
        if f is not None and not f[1].equals(target):
            value = value.isel({f[0]: f[1].get_indexer(target)})
        out.append(value)
    return out
