"""The package's warning type and the errors it raises for bad input.

Every computational path checks its input through :mod:`dask_repsim.io.validation`, so the same
bad input gets the same error, naming the input (a layer name in grids), whichever path runs.
All of them are ``ValueError`` subclasses.
"""


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
