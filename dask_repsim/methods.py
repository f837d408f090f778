"""Which computational path computes a measure: a cost model over n, p, q and a memory budget.

Paths (DESIGN.md, "When the feature side is too wide"):

- ``covariance``: the one-pass co-moments (:mod:`dask_repsim.statistics`); cost ~ n (p+q)^2,
  memory ~ (p+q)^2 per task. Every measure; exact.
- ``gram``: sample-space Gram blocks (:mod:`dask_repsim.kernels`); cost ~ n^2 (p+q), memory in
  blocks. Linear and RBF CKA; exact.
- ``tiled``: ||X^T Y||_F^2 from feature tiles; cost ~ n (p+q)^2 / 2, memory per tile. Linear
  CKA; exact.
- ``minibatch``: unbiased HSIC averaged over minibatches (Nguyen et al. 2021). CKA;
  approximate, with a bootstrap interval; only on request.
- ``qr``: tall-skinny QR of [1 | X | Y] (:mod:`dask_repsim.qr`). The CCA family, without
  squaring the condition number; exact; only on request (it costs about twice the covariance
  path).

``"auto"`` picks the cheapest exact path that fits the memory budget and never approximates.
The budget is the dask config value ``repsim.memory-budget`` (bytes) if set, else a quarter of
the smallest worker's memory limit when a ``distributed.Client`` is active, else a quarter of
this machine's memory. The chosen path is logged on the ``dask_repsim`` logger.
"""

from __future__ import annotations

import logging
import os

import dask

logger = logging.getLogger("dask_repsim")

CKA_METHODS = ("auto", "covariance", "gram", "tiled", "minibatch")
CCA_METHODS = ("auto", "covariance", "qr")
# float64 copies of the co-moment matrix alive in one task (its own, a merge, the shift)
_COPIES = 4


def memory_budget() -> int:
    """Bytes one task may use for the feature-side matrices."""
    configured = dask.config.get("repsim.memory-budget", None)
    if configured is not None:
        if isinstance(configured, str):
            return int(dask.utils.parse_bytes(configured))
        return int(configured)
    try:
        from distributed import get_client

        workers = get_client().scheduler_info().get("workers", {}).values()
        limits = [w["memory_limit"] for w in workers if w.get("memory_limit")]
        if limits:
            return min(limits) // 4
    except (ImportError, ValueError):  # no active client
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def choose(measure: str, method: str, n: int, p: int, q: int) -> str:
    """The path for ``measure`` ("cka", "rbf_cka" or "cca") given the caller's ``method``.

    Examples
    --------
    >>> choose("cka", "auto", n=100_000, p=256, q=256)
    'covariance'
    >>> choose("rbf_cka", "auto", n=3000, p=64, q=64)
    'gram'
    """
    allowed = {"cka": CKA_METHODS, "rbf_cka": ("auto", "gram", "minibatch"), "cca": CCA_METHODS}
    if method not in allowed[measure]:
        raise ValueError(
            f"method {method!r} is not available here; choose from {allowed[measure]}"
        )
    if method != "auto":
        chosen = method
    elif measure == "rbf_cka":
        chosen = "gram"  # the only exact path for a non-linear kernel
    else:
        fits = _COPIES * 8 * (p + q) ** 2 <= memory_budget()
        if measure == "cca":
            if not fits:
                raise ValueError(
                    f"{p} + {q} features need {_COPIES * 8 * (p + q) ** 2 / 2**30:.1f} GiB of "
                    "co-moments, more than the memory budget; CCA of layers this wide is "
                    "degenerate unless n is larger still: use cka(), or svcca on fewer units"
                )
            chosen = "covariance"
        elif fits:
            chosen = "covariance"
        else:  # exact paths whose memory does not grow with the width
            chosen = "gram" if n * n * (p + q) < n * (p + q) ** 2 / 2 else "tiled"
    logger.info("%s: method=%s (n=%d, p=%d, q=%d)", measure, chosen, n, p, q)
    return chosen
