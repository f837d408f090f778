"""Delete-a-group jackknife intervals from group-level statistics of the same pass.

The pass keeps the statistics of G contiguous ranges of samples instead of only their total
(:func:`~dask_repsim.statistics.grouped_comoments`). Leaving group g out is the merge of the
groups before it with those after it (prefix and suffix merges, so no subtraction and no loss
of precision); each measure is recomputed from each of the G small replicates on the client.

With the full-data estimate ``t`` and replicates ``t_(g)`` (mean ``t_.``)::

    stderr = sqrt((G - 1) / G * sum_g (t_(g) - t_.)^2)
    interval = t -/+ q * stderr,  q the (1 + level) / 2 quantile of Student's t with G - 1 dof

(Quenouille 1956; Tukey 1958; Efron & Stein 1981). Groups must be exchangeable: if the samples
are stored in a meaningful order (by class, by time), contiguous groups are not a random split
and the interval is too wide or too narrow; shuffle the storage order first.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _stats

from .exceptions import RepsimWarning
from .statistics import Statistics, _merge_all


class Estimate(float):
    """A float that carries its jackknife standard error and interval.

    Examples
    --------
    >>> e = jackknife(0.5, [0.49, 0.5, 0.51, 0.5], level=0.9)
    >>> float(e), round(e.stderr, 4), e.n_groups
    (0.5, 0.0122, 4)
    """

    stderr: float
    ci_low: float
    ci_high: float
    level: float
    n_groups: int

    def __new__(cls, value: float, stderr: float, ci_low: float, ci_high: float, level: float,
                n_groups: int) -> Estimate:
        out = super().__new__(cls, value)
        out.stderr, out.ci_low, out.ci_high = float(stderr), float(ci_low), float(ci_high)
        out.level, out.n_groups = float(level), int(n_groups)
        return out

    def __repr__(self) -> str:
        return (
            f"Estimate({float(self)!r}, stderr={self.stderr:.3g}, "
            f"{100 * self.level:g}% interval [{self.ci_low:.6g}, {self.ci_high:.6g}], "
            f"{self.n_groups} groups)"
        )


def jackknife_interval(
    estimate: np.ndarray, replicates: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard error, lower and upper end, elementwise; ``replicates`` has groups first."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    values = np.asarray(replicates, dtype=np.float64)
    g = values.shape[0]
    stderr = np.sqrt((g - 1) / g * np.sum((values - values.mean(axis=0)) ** 2, axis=0))
    q = _stats.t.ppf((1 + level) / 2, g - 1)
    return stderr, estimate - q * stderr, estimate + q * stderr


def jackknife(estimate: float, replicates: Sequence[float], level: float = 0.95) -> Estimate:
    """The jackknife standard error and interval of ``estimate`` from leave-one-group-out values."""
    stderr, low, high = jackknife_interval(estimate, np.asarray(replicates), level)
    return Estimate(estimate, stderr, low, high, level, len(replicates))


def leave_one_out(parts: Sequence[Statistics]) -> list[Statistics]:
    """The statistics of all groups but one, for each group, by prefix and suffix merges."""
    if len(parts) < 2:
        raise ValueError("a jackknife needs at least 2 groups")
    prefix = [parts[0]]
    for part in parts[1:-1]:
        prefix.append(Statistics.merge(prefix[-1], part))
    suffix = [parts[-1]]
    for part in parts[-2:0:-1]:
        suffix.append(Statistics.merge(part, suffix[-1]))
    suffix.reverse()  # suffix[i] = merge of parts[i + 1:]
    out = [suffix[0]]
    out += [Statistics.merge(prefix[g - 1], suffix[g]) for g in range(1, len(parts) - 1)]
    out.append(prefix[-1])
    return out


def replicate(measure: Callable[[Statistics], float], parts: Sequence[Statistics]) -> list[float]:
    """``measure`` of every leave-one-group-out replicate.

    The package's warnings (constant units, ...) were given for the full data; they are not
    repeated for each replicate.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        return [measure(s) for s in leave_one_out(parts)]


def total(parts: Sequence[Statistics]) -> Statistics:
    """The statistics of all groups together."""
    return _merge_all(*parts)
