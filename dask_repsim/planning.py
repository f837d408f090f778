"""Which computational path computes a measure: a cost model over n, the widths and a memory
budget.

Paths (:data:`~dask_repsim.registry.PATHS` lists what each supports):

- ``covariance``: the one-pass co-moments (:mod:`dask_repsim.engine.stream`); cost ~ n (p+q)^2,
  memory ~ (p+q)^2 per task (:mod:`dask_repsim.engine.memory`). Every co-moment measure; exact.
- ``gram``: sample-space Gram tiles; pair by pair cost ~ n^2 (p+q); for a grid each layer's
  tile is formed once for all pairs (:mod:`dask_repsim.paths.gram.samplespace`), cost ~ n^2 sum(p)
  plus n^2 per pair, memory in tiles. Linear, debiased and RBF CKA; exact.
- ``tiled``: ||X^T Y||_F^2 from feature tiles; cost ~ n (p+q)^2 / 2, memory per tile. Linear
  CKA; exact.
- ``sample_blocks``: sample x sample row blocks (:mod:`dask_repsim.paths.sample_blocks.tiles`: RSA,
  mutual
  k-NN, CKNNA); cost ~ n^2 (p+q) per pair; exact.
- ``minibatch``: unbiased HSIC averaged over minibatches (Nguyen et al. 2021). CKA;
  approximate, with a bootstrap interval; only on request.
- ``qr``: tall-skinny QR of [1 | X | Y] (:mod:`dask_repsim.paths.qr`). The CCA family, without
  squaring the condition number; exact; only on request (it costs about twice the covariance
  path).

``"auto"`` picks the cheapest exact path that fits the memory budget and never approximates:
for a grid and for a pairwise call alike (a pairwise call is a grid of one cell,
:mod:`dask_repsim.runners`) with :func:`plan_grid`, which estimates each path's multiply-adds
for the whole grid (:func:`grid_costs`) and takes the cheapest that fits, a grid whose metrics
no one path computes running in groups (``compare``); :func:`choose` is the same for one pair
from its sizes alone. The budget is the dask config value ``repsim.memory-budget`` (bytes) if
set, else a quarter of the smallest worker's memory limit when a ``distributed.Client`` is
active, else a quarter of this machine's memory. The chosen path and the estimates are logged
on the ``dask_repsim`` logger and given in the result's ``attrs``.
"""

from __future__ import annotations

import logging

from .engine.memory import max_features
from .engine.parallel import memory_budget
from .paths.covariance.passes import plan_passes
from .registry import MEASURES, PATHS, supports

__all__ = ["choose", "grid_costs", "max_features", "memory_budget", "plan_grid", "plan_passes"]

logger = logging.getLogger("dask_repsim")

#: the metric of each kind of pairwise call
KINDS = {"cka": "cka", "rbf_cka": "cka_rbf", "cca": "mean_cca", "procrustes": "procrustes",
         "hsic": "hsic", "shape_metric": "shape_metric"}


def choose(measure: str, method: str, n: int, p: int, q: int) -> str:
    """The path for one pair of ``measure`` (a kind of :data:`KINDS`: "cka", "rbf_cka", "cca",
    ...) given ``method``, from the sizes alone: a grid of one cell (:func:`plan_grid`), as
    every pairwise function plans its call (:func:`dask_repsim.runners.choose_path`).

    ``"auto"`` takes the exact path of least estimated arithmetic that ``auto`` may choose
    (:data:`~dask_repsim.registry.PATHS`) and that fits the memory budget; it never
    approximates.

    Examples
    --------
    >>> choose("cka", "auto", n=100_000, p=256, q=256)
    'covariance'
    >>> choose("cka", "auto", n=500, p=3000, q=2000)  # far fewer samples than features
    'gram'
    >>> choose("rbf_cka", "auto", n=3000, p=64, q=64)
    'gram'
    """
    metric = KINDS[measure]
    allowed = ("auto", *MEASURES[metric].paths)
    if method not in allowed:
        raise ValueError(
            f"method {method!r} is not available here; choose from {allowed}"
        )
    if method != "auto":
        return method
    return plan_grid([metric], n, [p, q], [0], [1])[0]


def _capacity(needs: tuple[str, ...], groups: int) -> int:
    """The widest covariance pass that fits the budget with ``needs`` (the permutation blocks
    of a null, the rows ``nan_policy="omit"`` carries aside) and the jackknife's ``groups``."""
    return max_features(groups=int(groups), permutations=int("permutations" in needs),
                        aside="nan_omit" in needs)


def grid_costs(
    metrics: list[str], n: int, widths: list[int], rows: list[int], cols: list[int],
    needs: tuple[str, ...] = (), groups: int = 1, permutations: int = 0,
) -> dict[str, float]:
    """Estimated multiply-adds of each exact path that ``"auto"`` may choose for a grid, that
    computes every metric and supports each of ``needs`` (``"interval"``, ``"permutations"``,
    ``"nan_omit"``, ``"gamma"``); a path that does not fit the memory budget is left out.
    ``groups``: the jackknife's sample groups where known (the covariance path, the only one
    with intervals, plans its passes with the groups it computes). ``permutations``: K, the
    permutations of a null, whose cost each path's estimate adds.

    - ``covariance``: ``n`` times each layer's own block ``p^2`` and each requested cross block
      ``p q``, that ``1 + K`` times (only if the widest pair's co-moments fit,
      :func:`~dask_repsim.engine.memory.max_features`);
    - ``gram``: ``n^2 sum(p)`` for each layer's Gram tiles, plus ``n^2 (1 + K)`` per pair;
    - ``sample_blocks``: ``n^2 (p + q)`` per pair;
    - ``tiled``: ``n ((1 + K) p q + (p^2 + q^2) / 2)`` per pair, only when the co-moments do
      not fit (pair by pair it shares nothing, so its estimate flatters it).

    Examples
    --------
    >>> costs = grid_costs(["cka"], 2048, [65536, 100], [0], [1])
    >>> sorted(costs), f"{costs['gram']:.2e}"
    (['gram', 'tiled'], '2.75e+11')
    >>> sorted(grid_costs(["cka"], 2048, [65536, 100], [0], [1], needs=("interval",)))
    ['gram', 'tiled']
    >>> wide = (["cka"], 100_000, [20_000, 20_000], [0], [1])
    >>> plan_grid(*wide)[0], plan_grid(*wide, ("permutations",), permutations=99)[0]
    ('tiled', 'gram')
    >>> sorted(grid_costs(["cka"], 2048, [65536, 100], [0], [1], needs=("nan_omit",)))
    []
    """
    used = sorted(set(rows) | set(cols))
    pairs = {tuple(sorted((a, b))) for a in rows for b in cols}
    able = [p for p in PATHS if PATHS[p].auto and all(p in MEASURES[m].paths for m in metrics)
            and all(supports(m, p, need) for m in metrics for need in needs)]
    costs: dict[str, float] = {}
    widest = max(widths[r] for r in rows) + max(widths[c] for c in cols)
    if "covariance" in able and widest <= _capacity(needs, groups):
        cross = sum(widths[a] * widths[b] for a, b in pairs if a != b)
        costs["covariance"] = float(n) * (sum(widths[u] ** 2 for u in used)
                                          + (1 + permutations) * cross)
    if "gram" in able:
        costs["gram"] = float(n) ** 2 * (sum(widths[u] for u in used)
                                         + (1 + permutations) * len(pairs))
    if "sample_blocks" in able:  # each pair's own pass over both layers
        costs["sample_blocks"] = float(n) ** 2 * sum(widths[a] + widths[b] for a, b in pairs)
    if "tiled" in able and "covariance" not in costs:
        costs["tiled"] = float(n) * sum((1 + permutations) * widths[a] * widths[b]
                                        + (widths[a] ** 2 + widths[b] ** 2) / 2
                                        for a, b in pairs)
    return costs


#: the options behind plan_grid's ``needs``, in the user's words
_NEEDS = {"interval": "intervals (interval=)", "permutations": "permutation tests (permutations=)",
          "nan_omit": "omitting non-finite samples (nan_policy='omit')",
          "gamma": "the Gamma approximation of the null (null='gamma')"}


def _lacking(lacking: list[str], needs: tuple[str, ...]) -> ValueError:
    """The error for metrics none of whose paths offers one of ``needs``."""
    one = len(lacking) == 1
    missing = [need for need in needs if any(
        not any(supports(m, p, need) for p in MEASURES[m].paths) for m in lacking)]
    paths = sorted({p for m in lacking for p in MEASURES[m].paths}, key=list(PATHS).index)
    names = ", ".join(lacking)
    return ValueError(
        f"{names}: no path of {'this metric' if one else 'these metrics'} supports "
        f"{' or '.join(_NEEDS[need] for need in missing)}: not available for {names}, computed "
        f"on the {', '.join(map(repr, paths))} path{'' if len(paths) == 1 else 's'} "
        "(dask_repsim.PATHS lists what each path supports); leave "
        f"{'it' if one else 'them'} out of this call")


def plan_grid(
    metrics: list[str], n: int, widths: list[int], rows: list[int], cols: list[int],
    needs: tuple[str, ...] = (), groups: int = 1, permutations: int = 0,
) -> tuple[str, dict[str, str]]:
    """The path ``"auto"`` runs a grid on: the least estimated arithmetic (:func:`grid_costs`)
    among the exact paths that compute every metric and fit the memory budget; with the
    estimates, logged and returned for the result's ``attrs``. ``groups`` and
    ``permutations`` as in :func:`grid_costs`.

    Examples
    --------
    >>> plan_grid(["cka"], 2048, [65536, 16384, 100], [0, 1, 2], [0, 1, 2])[0]
    'gram'
    >>> plan_grid(["cka", "mean_cca"], 100_000, [256, 256], [0], [1])[0]
    'covariance'
    """
    costs = grid_costs(metrics, n, widths, rows, cols, needs, groups, permutations)
    if not costs:
        able = [p for p in PATHS if all(p in MEASURES[m].paths for m in metrics)
                and all(supports(m, p, need) for m in metrics for need in needs)]
        if "covariance" in able:  # too wide: plan_passes says so, naming the paths that can
            plan_passes(widths, rows, cols, _capacity(needs, groups))
        lacking = [m for m in metrics if not all(
            any(supports(m, p, need) for p in MEASURES[m].paths) for need in needs)]
        if lacking:  # a metric none of whose paths offers what was asked
            raise _lacking(lacking, needs)
        raise ValueError(f"no exact path computes all of {metrics}"
                         + (f" with {', '.join(needs)}" if needs else "")
                         + "; compare them in separate calls")
    chosen = min(costs, key=costs.__getitem__)
    estimate = ", ".join(f"{p} {c:.2e}" for p, c in costs.items())
    logger.info("%s: method=%s (%d layers, n=%d; multiply-adds: %s)", ", ".join(metrics),
                chosen, len(set(rows) | set(cols)), n, estimate)
    return chosen, {"cost_estimate": f"multiply-adds: {estimate}"}
