"""Temporary: the kernel paths' old names, until ``api.py`` calls :mod:`~dask_repsim.gram`,
:mod:`~dask_repsim.tiles` and :mod:`~dask_repsim.minibatch` directly. To be removed."""

from __future__ import annotations

from .gram import cka_values as gram_cka_values
from .gram import rbf_cka
from .medians import exact_median_sq_distance, sampled_median_sq_distance
from .minibatch import minibatch_cka
from .tiles import cka_values as tiled_cka_values

__all__ = [
    "exact_median_sq_distance", "gram_cka", "gram_cka_values", "minibatch_cka", "rbf_cka",
    "sampled_median_sq_distance", "tiled_cka", "tiled_cka_values",
]


def gram_cka(x, y, *, debiased: bool = False, **options) -> float:
    """:func:`dask_repsim.gram.cka_values` for one flag."""
    return gram_cka_values(x, y, (debiased,), **options)[0]


def tiled_cka(x, y, *, debiased: bool = False, **options) -> float:
    """:func:`dask_repsim.tiles.cka_values` for one flag."""
    return tiled_cka_values(x, y, (debiased,), **options)[0]
