"""The package's own warning type."""


class RepsimWarning(UserWarning):
    """Something about the data that changes what a measure means (constant units, CCA with more
    features than samples); the result is still computed."""
