"""Uncertainty from the same pass: jackknife intervals and permutation tests.

Jackknife intervals
-------------------

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

Permutation tests
-----------------
Under "x and y are unrelated", pairing sample i of x with any sample of y is as likely as
with sample i. The pass also computes the cross statistics of x against K random row
permutations of y (:class:`~dask_repsim.permuted.Permuted`; the marginal statistics of each
side do not change under permutation), and each measure is recomputed from each permuted cross
block. The p-value is ``(1 + #{null >= observed}) / (K + 1)`` (Phipson & Smyth 2010), exact for
any K when the assumption below holds.

Samples are permuted within blocks of
:data:`~dask_repsim.permuted.PERMUTATION_BLOCK` consecutive samples, so the test assumes that
samples are exchangeable within blocks of that many consecutive samples: under the null, any
order of the samples in a block is as likely as the stored one. That holds when the stored
order is random or unrelated to the activations. When samples are stored in a meaningful order
(by class, by time, consecutive crops of one image), the within-block null is too narrow; write
the data in a shuffled order first (e.g. ``ds.isel(sample=np.random.default_rng(0).permutation(n))``
then ``to_zarr``). The blocks do not depend on the storage chunking, and the permutations only
on ``seed`` and each block's first sample
(:func:`~dask_repsim.permuted.block_permutations`), so a pair's null is the same in any pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from scipy import stats as _stats

from .exceptions import RepsimWarning
from .moments import Statistics, merge_all

T = TypeVar("T")


class Estimate(float):
    """A float that carries its jackknife interval and/or its permutation null.

    With an interval (``interval="jackknife"``): ``.stderr``, ``.ci_low``, ``.ci_high``,
    ``.level``, ``.n_groups``. With a permutation null (``permutations=K``): ``.pvalue``,
    ``.null_mean``, ``.null_std``, ``.n_permutations`` and the K values themselves, ``.null``.
    What was not asked for is ``None``.

    Examples
    --------
    >>> e = jackknife(0.5, [0.49, 0.5, 0.51, 0.5], level=0.9)
    >>> float(e), round(e.stderr, 4), e.n_groups, e.pvalue
    (0.5, 0.0122, 4, None)
    """

    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    level: float | None
    n_groups: int | None
    pvalue: float | None
    null_mean: float | None
    null_std: float | None
    n_permutations: int | None
    null: np.ndarray | None

    def __new__(
        cls,
        value: float,
        stderr: float | None = None,
        ci_low: float | None = None,
        ci_high: float | None = None,
        level: float | None = None,
        n_groups: int | None = None,
        *,
        null: Sequence[float] | None = None,
    ) -> Estimate:
        out = super().__new__(cls, value)
        fields = (stderr, ci_low, ci_high, level)
        out.stderr, out.ci_low, out.ci_high, out.level = (
            None if v is None else float(v) for v in fields
        )
        out.n_groups = None if n_groups is None else int(n_groups)
        out.pvalue = out.null_mean = out.null_std = out.n_permutations = out.null = None
        if null is not None:
            values = out.null = np.asarray(null, dtype=np.float64)
            out.pvalue = float(permutation_pvalue(float(value), values))
            out.null_mean, out.null_std = float(values.mean()), float(values.std(ddof=1))
            out.n_permutations = len(values)
        return out

    def __repr__(self) -> str:
        parts = [repr(float(self))]
        if self.stderr is not None:
            parts.append(
                f"stderr={self.stderr:.3g}, {100 * self.level:g}% interval "
                f"[{self.ci_low:.6g}, {self.ci_high:.6g}], {self.n_groups} groups"
            )
        if self.pvalue is not None:
            parts.append(
                f"pvalue={self.pvalue:.4g}, null {self.null_mean:.4g} +/- {self.null_std:.2g} "
                f"over {self.n_permutations} permutations"
            )
        return f"Estimate({', '.join(parts)})"


def permutation_pvalue(observed: np.ndarray | float, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= observed}) / (K + 1)`` elementwise; ``null`` has permutations first.

    Every measure here is larger for more similar representations, so this is the one-sided
    p-value of "no more similar than unrelated samples". Null values within rounding
    (1e-9 relative) of the observed one count as reaching it.

    Examples
    --------
    >>> float(permutation_pvalue(0.9, np.array([0.1, 0.2, 0.95, 0.3])))
    0.4
    """
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    reach = null >= observed - 1e-9 * np.maximum(1.0, np.abs(observed))
    return (1 + reach.sum(axis=0)) / (null.shape[0] + 1)


def summarise(
    value: float,
    replicates: Sequence[float] | None = None,
    level: float = 0.95,
    null: Sequence[float] | None = None,
) -> float:
    """``value`` as a plain float, or an :class:`Estimate` with what was computed for it."""
    if replicates is None and null is None:
        return float(value)
    if replicates is None:
        return Estimate(value, null=null)
    stderr, low, high = jackknife_interval(value, np.asarray(replicates), level)
    return Estimate(value, stderr, low, high, level, len(replicates), null=null)


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
    return summarise(estimate, replicates, level)


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
    return quietly(measure, leave_one_out(parts))


def quietly(measure: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
    """``measure`` of every item, without repeating the package's warnings for each."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepsimWarning)
        return [measure(item) for item in items]


def total(parts: Sequence[Statistics]) -> Statistics:
    """The statistics of all groups together."""
    return merge_all(*parts)
