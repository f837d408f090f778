"""The package's warning type and the errors it raises for bad input.

Every computational path checks its input through :mod:`dask_repsim.io.validation`, so the same
bad input gets the same error, naming the input (a layer name in grids), whichever path runs.
All of them are ``ValueError`` subclasses. :func:`quietly` computes a measure's jackknife
replicates or null without repeating the warnings its value gave.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any


class RepsimWarning(UserWarning):
    """Something about the data that changes what a measure means (constant units, CCA with more
    features than samples); the result is still computed."""


class InputError(ValueError):
    """Activations a measure cannot be computed from; the message names the input."""


class NonFiniteError(InputError):
    """An input has NaN or Inf (and ``nan_policy="raise"``)."""


class NoVarianceError(InputError):
    """Every unit of an input is constant over the samples."""


class SampleCountError(InputError):
    """Inputs have different numbers of samples, or too few for the measure."""


def quietly(function: Callable[[Any], Any], items: Sequence[Any] | None) -> list[Any] | None:
    """``function`` of every item, without repeating the package's warnings for each (they were
    given for the full data already); ``None`` for no items.

    Examples
    --------
    >>> def noisy(v):
    ...     warnings.warn("constant units", RepsimWarning)
    ...     return 2 * v
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error")
    ...     quietly(noisy, [1, 2]), quietly(noisy, None)
    ([2, 4], None)
    """
    if items is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        return [function(item) for item in items]
