"""One set of input rules for every computational path.

Each path (co-moments, tall-skinny QR, Gram blocks, feature tiles, minibatches) learns per layer,
in its own pass or a cheap column pass, the number of samples, the first sample holding NaN or
Inf, and each unit's mean and centred sum of squares. The checks below turn those into the same
errors, in terms of the user's data, whichever path ran:

- :func:`check_sample_counts`: every input has the same number of samples;
- :func:`nonfinite_error`: NaN or Inf, naming the input and its first bad sample;
- :func:`constant_units` / :func:`no_variance_error`: a unit is constant when its centred
  standard deviation is at the rounding level of its mean (:data:`CONSTANT_RTOL`), so large
  offsets (activations around 1e9) are not mistaken for constant units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..exceptions import NonFiniteError, NoVarianceError, SampleCountError

#: A unit whose centred standard deviation is at most this fraction of its |mean| is constant:
#: the residual is rounding error of the float64 means (about 1e-16 |mean| per operation, times
#: the depth of the sums), not signal. 1e-12 leaves three orders of magnitude for the sums and
#: still resolves unit-variance activations offset by 1e9.
CONSTANT_RTOL = 1e-12


def constant_units(sum_sq: np.ndarray, mean: np.ndarray, count: int) -> np.ndarray:
    """Mask of constant units from their centred sums of squares and means over ``count`` samples.

    Examples
    --------
    >>> x = np.array([[1e9, 1.0], [1e9 + 2.0, 1.0], [1e9 + 1.0, 1.0]])
    >>> m = x.mean(axis=0)
    >>> constant_units(((x - m) ** 2).sum(axis=0), m, 3).tolist()
    [False, True]
    """
    std = np.sqrt(np.clip(np.asarray(sum_sq, dtype=np.float64), 0, None) / max(count, 1))
    return (std <= CONSTANT_RTOL * np.abs(mean)) | (std == 0)


def nonfinite_error(name: str, sample: int, is_nan: bool) -> NonFiniteError:
    """The error for NaN or Inf in ``name`` (first bad sample ``sample``)."""
    kind = "NaN" if is_nan else "Inf"
    return NonFiniteError(
        f"{name} has {kind} at sample {sample} (the first non-finite sample); "
        "pass nan_policy='omit' to leave such samples out"
    )


def first_nonfinite(
    names: Sequence[str], first: Sequence[int], is_nan: Sequence[bool]
) -> NonFiniteError | None:
    """The error for the earliest non-finite sample over several inputs (``first`` < 0: none)."""
    bad = [(int(f), bool(nan), name) for name, f, nan in zip(names, first, is_nan, strict=True)]
    bad = [b for b in bad if b[0] >= 0]
    if not bad:
        return None
    sample, nan, name = min(bad, key=lambda b: b[0])
    return nonfinite_error(name, sample, nan)


def no_variance_error(name: str, n_features: int, count: int) -> NoVarianceError:
    """The error for an input whose units are all constant."""
    return NoVarianceError(
        f"{name} has no variance: all {n_features} units are constant over the {count} samples"
    )


def check_sample_counts(names: Sequence[str], counts: Sequence[int]) -> int:
    """The common number of samples; an error naming the largest and smallest input otherwise.

    Examples
    --------
    >>> check_sample_counts(["x", "y"], [10, 10])
    10
    """
    counts = [int(c) for c in counts]
    if len(set(counts)) > 1:
        large = max(range(len(counts)), key=lambda i: counts[i])
        small = min(range(len(counts)), key=lambda i: counts[i])
        raise SampleCountError(
            f"inputs have different numbers of samples: {names[large]} has {counts[large]}, "
            f"{names[small]} has {counts[small]}"
        )
    return counts[0]


def require_samples(count: int, needed: int, measure: str) -> None:
    """An error when ``measure`` needs more samples than ``count``."""
    if count < needed:
        raise SampleCountError(f"{measure} needs at least {needed} samples, got {count}")
