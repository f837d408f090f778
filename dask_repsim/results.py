"""What a pairwise measure returns: a ``float`` that carries what was computed with it.

:class:`Estimate` is the one scalar result type of every pairwise function on every path. It is
a plain ``float`` (``round``, arithmetic, ``numpy`` and ``json`` all work) whose attributes say
what else the call computed: a jackknife interval (``interval="jackknife"``), a permutation null
(``permutations=K``), which path ran (``.method``), and, for an approximation asked for
explicitly, what it approximates (``.approximate``, otherwise ``None``). :class:`CCAResult`,
what :func:`dask_repsim.cca` returns, is a float too: the mean canonical correlation, with all
the correlations in ``.rho``.

Jackknife intervals: with the full-data estimate ``t`` and G leave-one-group-out replicates
``t_(g)`` (mean ``t_.``)::

    stderr = sqrt((G - 1) / G * sum_g (t_(g) - t_.)^2)
    interval = t -/+ q * stderr,  q the (1 + level) / 2 quantile of Student's t with G - 1 dof

(Quenouille 1956; Tukey 1958; Efron & Stein 1981). Permutation p-values are
``(1 + #{null >= observed}) / (K + 1)`` (Phipson & Smyth 2010).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats as _stats

#: The fields of an :class:`Estimate`; those not computed are ``None``.
FIELDS = (
    "stderr", "ci_centre", "ci_low", "ci_high", "level", "n_groups",
    "pvalue", "null_mean", "null_std", "n_permutations", "null", "null_method",
    "method", "approximate",
)


class Estimate(float):
    """A float that carries its interval, its permutation null and how it was computed.

    With an interval: ``.stderr``, ``.ci_centre`` (the jackknife's bias-corrected estimate, on
    which the interval is centred), ``.ci_low``, ``.ci_high``, ``.level``, ``.n_groups``. With a
    permutation null: ``.pvalue``, ``.null_mean``, ``.null_std``, ``.n_permutations`` and the
    K values ``.null``; ``.null_method`` says which null (``"permutation"``, or ``"gamma"``
    for the Gamma approximation, whose ``.pvalue``, ``.null_mean`` and ``.null_std`` come
    without permutations). ``.method``: the computational path. ``.approximate``: ``None`` for an
    exact value, else a description of the approximation. Path-specific details (for example
    RBF CKA's ``.median``) are attributes too. What was not computed is ``None``.

    Examples
    --------
    >>> import numpy as np
    >>> import dask_repsim as dr
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 5))
    >>> e = dr.cka(x, x + rng.normal(size=(1000, 5)), interval="jackknife", groups=10, level=0.9)
    >>> isinstance(e, float), round(e, 3), e.method, e.n_groups, e.level, e.pvalue
    (True, 0.506, 'covariance', 10, 0.9, None)
    >>> bool(e.ci_low < e < e.ci_high), round(e.stderr, 3)
    (True, 0.012)
    """

    stderr: float | None
    ci_centre: float | None
    ci_low: float | None
    ci_high: float | None
    level: float | None
    n_groups: int | None
    pvalue: float | None
    null_mean: float | None
    null_std: float | None
    n_permutations: int | None
    null: np.ndarray | None
    method: str | None
    approximate: str | None

    def __new__(cls, value: float, **fields: Any) -> Estimate:
        out = super().__new__(cls, value)
        for name in FIELDS:
            setattr(out, name, None)
        for name, field in fields.items():
            setattr(out, name, field)
        return out

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), float(self), dict(self.__dict__)))

    def __repr__(self) -> str:
        parts = [repr(float(self))]
        if self.stderr is not None:
            parts.append(
                f"stderr={self.stderr:.3g}, {100 * self.level:g}% interval "
                f"[{self.ci_low:.6g}, {self.ci_high:.6g}] about {self.ci_centre:.6g}, "
                f"{self.n_groups} groups"
            )
        if self.pvalue is not None and self.null_method == "gamma":
            parts.append(f"pvalue={self.pvalue:.4g} (Gamma approximation), null "
                         f"{self.null_mean:.4g} +/- {self.null_std:.2g}")
        elif self.pvalue is not None:
            parts.append(
                f"pvalue={self.pvalue:.4g}, null {self.null_mean:.4g} +/- {self.null_std:.2g} "
                f"over {self.n_permutations} permutations"
            )
        if self.approximate is not None:
            parts.append(f"approximate: {self.approximate}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _rebuild(cls: type, value: float, fields: dict[str, Any]) -> Any:
    out = float.__new__(cls, value)
    out.__dict__.update(fields)
    return out


def permutation_pvalue(
    observed: np.ndarray | float, null: np.ndarray, similarity: bool = True
) -> np.ndarray:
    """``(1 + #{null >= observed}) / (K + 1)`` elementwise; ``null`` has permutations first.

    The one-sided p-value of "no more similar than unrelated samples": for similarities
    (larger is more similar) the null values reaching the observed one from above count, for
    distances (``similarity=False``) those reaching it from below. Null values within rounding
    (1e-9 relative) of the observed one count as reaching it.

    Examples
    --------
    >>> float(permutation_pvalue(0.9, np.array([0.1, 0.2, 0.95, 0.3])))
    0.4
    """
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    tolerance = 1e-9 * np.maximum(1.0, np.abs(observed))
    reach = null >= observed - tolerance if similarity else null <= observed + tolerance
    return (1 + reach.sum(axis=0)) / (null.shape[0] + 1)


def jackknife_interval(
    estimate: np.ndarray | float, replicates: np.ndarray, level: float = 0.95,
    corrected: np.ndarray | bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standard error, centre, lower and upper end, elementwise; ``replicates`` has groups
    first.

    Where ``corrected`` (elementwise; the measure's
    :attr:`~dask_repsim.registry.Measure.bias_corrected`), the interval is centred on the
    bias-corrected estimate ``G t - (G - 1) t_.`` (Quenouille 1956), else on the estimate
    ``t``: most measures are ratios or spectra of co-moments, biased at finite n by about as
    much as their spread (centred on ``t``, 95% intervals of a linear fit's R^2 covered the
    population value in 89.5% of 200 samples, centred on the corrected estimate in 95.5%).

    Examples
    --------
    >>> se, centre, low, high = jackknife_interval(0.5, np.array([0.4, 0.45, 0.5, 0.45]))
    >>> round(float(centre), 6), round(float(se), 6)  # 4 x 0.5 - 3 x 0.45
    (0.65, 0.061237)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    values = np.asarray(replicates, dtype=np.float64)
    g = values.shape[0]
    mean = values.mean(axis=0)
    stderr = np.sqrt((g - 1) / g * np.sum((values - mean) ** 2, axis=0))
    estimate = np.asarray(estimate, dtype=np.float64)
    centre = np.where(corrected, g * estimate - (g - 1) * mean, estimate)
    q = _stats.t.ppf((1 + level) / 2, g - 1)
    return stderr, centre, centre - q * stderr, centre + q * stderr


def uncertainty_fields(
    value: float,
    replicates: Sequence[float] | None = None,
    level: float = 0.95,
    null: Sequence[float] | None = None,
    similarity: bool = True,
    corrected: bool = True,
) -> dict[str, Any]:
    """The interval and permutation fields of an :class:`Estimate` of ``value``; the
    interval centred on the bias-corrected estimate when ``corrected``."""
    fields: dict[str, Any] = {}
    if replicates is not None:
        stderr, centre, low, high = jackknife_interval(value, np.asarray(replicates), level,
                                                       corrected)
        fields.update(
            stderr=float(stderr), ci_centre=float(centre), ci_low=float(low),
            ci_high=float(high), level=float(level), n_groups=len(replicates),
        )
    if null is not None:
        values = np.asarray(null, dtype=np.float64)
        fields.update(
            null=values,
            pvalue=float(permutation_pvalue(float(value), values, similarity)),
            null_mean=float(values.mean()),
            null_std=float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            n_permutations=len(values), null_method="permutation",
        )
    return fields


def holm_pvalues(pvalues: np.ndarray) -> np.ndarray:
    """p-values adjusted for the family-wise error rate by Holm's step-down method (Holm 1979):
    the i-th smallest of m becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; valid under any
    dependence between the tests.

    Examples
    --------
    >>> holm_pvalues(np.array([0.01, 0.04, 0.03, 0.2])).tolist()
    [0.04, 0.09, 0.09, 0.2]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(scaled)
    return out


def corrected_pvalues(
    observed: np.ndarray, null: np.ndarray, similarity: bool = True,
    family: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Permutation p-values corrected over the cells of ``family`` (a mask of ``observed``'s
    shape, default every cell; ``null`` has the same permutations first for every cell):
    family-wise and false-discovery-rate adjusted; NaN outside the family.

    Family-wise: the single-step max-statistic method (Westfall & Young 1993). Each cell's
    observed and null values are standardised by their mean and standard deviation (so that
    cells with wider nulls do not dominate), and a cell's p-value is
    ``(1 + #{k: max over the family of the standardised null k >= its value}) / (K + 1)``:
    as the permutations are the same for every cell, the chance that any cell of unrelated
    layers falls below ``alpha`` is at most ``alpha`` (the mean and deviation are taken over
    the observed value and the null values together, so that the observed stays exchangeable
    with the permutations). False discovery rate: Benjamini &
    Hochberg (1995) adjusted p-values of the cells' permutation p-values
    (:func:`scipy.stats.false_discovery_control`).

    Examples
    --------
    >>> null = np.array([[0.1, 0.5], [0.2, 0.6], [0.3, 0.4]])  # 3 permutations, 2 cells
    >>> fwer, fdr = corrected_pvalues(np.array([0.35, 0.55]), null)
    >>> fwer.tolist(), fdr.tolist()
    ([0.5, 0.75], [0.5, 0.5])
    """
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    sign = 1.0 if similarity else -1.0
    # standardised over the observed and the null values together: a symmetric function of
    # all K + 1, so that the observed stays exchangeable with the permutations under the null
    every = np.concatenate([observed[None], null])
    spread = every.std(axis=0, ddof=1)
    spread = np.where(spread > 0, spread, 1.0)  # constant values: centred only
    centre = every.mean(axis=0)
    t_obs, t_null = sign * (observed - centre) / spread, sign * (null - centre) / spread
    family = np.ones(observed.shape, bool) if family is None else np.asarray(family, bool)
    family = family & np.isfinite(t_obs) & np.isfinite(t_null).all(axis=0)
    fwer, fdr = np.full(observed.shape, np.nan), np.full(observed.shape, np.nan)
    if not family.any():
        return fwer, fdr
    largest = t_null[:, family].max(axis=1)
    t = t_obs[family]
    reach = largest[:, None] >= t[None, :] - 1e-9 * np.maximum(1.0, np.abs(t))[None, :]
    fwer[family] = (1 + reach.sum(axis=0)) / (len(null) + 1)
    raw = permutation_pvalue(observed, null, similarity)
    fdr[family] = _stats.false_discovery_control(raw[family])
    return fwer, fdr


def summarise(
    value: float,
    replicates: Sequence[float] | None = None,
    level: float = 0.95,
    null: Sequence[float] | None = None,
    similarity: bool = True,
    **fields: Any,
) -> Estimate:
    """``value`` as an :class:`Estimate` with its interval and null, when computed."""
    return Estimate(
        value, **uncertainty_fields(value, replicates, level, null, similarity), **fields
    )


class CCAResult(Estimate):
    """Canonical correlations of two layers; as a float, their mean.

    Attributes
    ----------
    rho : numpy.ndarray
        Canonical correlations, descending, ``min(rank X, rank Y)`` of them.
    mean, r2 : Estimate
        Their mean (SVCCA's summary) and the mean of their squares (R^2_CCA), each with its
        interval and p-value when those were asked for.

    Examples
    --------
    >>> r = CCAResult(np.array([0.9, 0.5, 0.1]))
    >>> round(r, 6), round(r.r2, 4), r.truncated_mean(0.9)
    (0.5, 0.3567, Estimate(0.7))
    """

    rho: np.ndarray

    def __new__(
        cls,
        rho: np.ndarray,
        *,
        replicates: Sequence[np.ndarray] = (),
        level: float = 0.95,
        null: Sequence[np.ndarray] = (),
        method: str | None = None,
    ) -> CCAResult:
        rho = np.asarray(rho, dtype=np.float64)
        out = super().__new__(cls, float(np.mean(rho)) if rho.size else float("nan"))
        out.rho, out.method = rho, method
        out._replicates, out._level, out._null = tuple(replicates), level, tuple(null)
        out.__dict__.update(out._summary(np.mean).__dict__)
        return out

    def _summary(self, f: Callable[[np.ndarray], float]) -> Estimate:
        """``f`` of the correlations, with its interval and p-value when those were asked for."""
        return summarise(
            float(f(self.rho)),
            [f(r) for r in self._replicates] if self._replicates else None,
            self._level,
            [f(r) for r in self._null] if self._null else None,
            method=self.method,
        )

    @property
    def mean(self) -> Estimate:
        """Mean of all canonical correlations (Raghu et al. 2017's SVCCA summary, rho-bar)."""
        return self._summary(np.mean)

    @property
    def r2(self) -> Estimate:
        """Mean of the squared canonical correlations (R^2_CCA of Kornblith et al. 2019)."""
        return self._summary(lambda r: np.mean(r**2))

    def truncated_mean(self, threshold: float = 0.98) -> Estimate:
        """Mean of the leading correlations holding ``threshold`` of their sum.

        This is the ``mean`` that the SVCCA reference code (google/svcca ``cca_core``) reports:
        it keeps the first ``i`` correlations for the smallest ``i >= 1`` with
        ``sum(rho[:i]) >= threshold * sum(rho)``, which drops the weakest ones.
        """
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], not {threshold}")

        def truncated(rho: np.ndarray) -> float:
            share = np.cumsum(rho) / rho.sum()
            i = int(np.searchsorted(share, threshold * (1 - 1e-12))) + 1
            return float(np.mean(rho[: min(i, len(rho))]))

        return self._summary(truncated)


@dataclasses.dataclass
class Cell:
    """One measure of one pair of layers, with what was computed beside it."""

    value: Any
    replicates: list[Any] | None = None
    null: list[Any] | None = None
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)


#: a grid's cells by (measure, row, column)
Cells = dict[tuple[int, int, int], Cell]

#: the (row, column) positions of a grid's cells that a path computes
Positions = Sequence[tuple[int, int]]


def grid_cells(rows: Sequence[Any], cols: Sequence[Any],
               todo: Positions | None = None) -> list[tuple[int, int]]:
    """The cells of a grid of ``rows`` x ``cols`` that a path computes: ``todo``, or every one,
    row by row.

    Examples
    --------
    >>> grid_cells(["x", "y"], ["z"])
    [(0, 0), (1, 0)]
    >>> grid_cells(["x", "y"], ["x", "y"], todo=[(0, 0), (0, 1), (1, 1)])
    [(0, 0), (0, 1), (1, 1)]
    """
    if todo is None:
        return [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    return [(int(i), int(j)) for i, j in todo]
