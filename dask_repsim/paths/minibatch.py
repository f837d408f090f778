"""Minibatch CKA (Nguyen, Raghu & Kornblith 2021) with a bootstrap interval. Approximate.

Unbiased HSIC (Song et al. 2012) of each minibatch's Gram matrices, averaged over minibatches;
the batches are independent Dask tasks, so any n and any width that fits a batch's Gram matrix.
The inputs are first checked by :func:`~dask_repsim.engine.columns.checked_columns` (the errors of
:mod:`dask_repsim.io.validation`, as on every path).

References
----------
Nguyen, Raghu, Kornblith (2021). Do Wide and Deep Networks Learn the Same Things? ICLR.
Song, Smola, Gretton, Bedo, Borgwardt (2012). Feature Selection via Dependence Maximization.
JMLR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from ..engine.columns import checked_columns
from ..engine.medians import sq_distances
from ..engine.parallel import compute
from ..io.inputs import Layer
from ..io.validation import check_sample_counts
from ..measures.hsic import GramSums, cka_ratio
from ..results import Cell, Cells, Estimate, Positions, grid_cells


def _batch_gram(a: np.ndarray, kernel: str, sigma: float) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(axis=0)  # HSIC_1 of these kernels does not depend on a shift of the data
    if kernel == "linear":
        return a @ a.T
    d2 = sq_distances(a, a, True)
    med = float(np.median(d2))
    if not med > 0:
        return np.ones_like(d2)  # no spread within the batch: a constant kernel, HSIC 0
    return np.exp(-d2 / (2.0 * sigma**2 * med))


def _batch_hsic(xb: np.ndarray, yb: np.ndarray, kernel: str, sigma: float) -> np.ndarray:
    """Unbiased HSIC (xy, xx, yy) of one batch, the 1/(n(n-3)) factor included."""
    k, g = _batch_gram(xb, kernel, sigma), _batch_gram(yb, kernel, sigma)
    n = k.shape[0]
    return np.array(GramSums.of_matrices(k, g).hsic(debiased=True)) / (n * (n - 3))


def _ratio(mean: np.ndarray) -> np.ndarray:
    """xy / sqrt(xx yy) along the last axis; NaN where a self-HSIC mean is not positive."""
    xx, yy = mean[..., 1], mean[..., 2]
    ok = (xx > 0) & (yy > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, mean[..., 0] / np.sqrt(np.where(ok, xx * yy, 1.0)), np.nan)


def _check_options(kernel: str, batch_size: int, level: float) -> None:
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf', not {kernel!r}")
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4, not {batch_size}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")


def _batch_tasks(x: Layer, y: Layer, n: int, options: dict) -> list:
    """One delayed per-batch HSIC per minibatch: ``n // batch_size`` batches of sizes differing
    by at most one, from a seeded permutation of the samples (``shuffle``) or contiguous."""
    n_batches = n // options["batch_size"]
    shuffle = options["shuffle"]
    order = np.random.default_rng(options["seed"]).permutation(n) if shuffle else np.arange(n)
    tasks = []
    for idx in np.array_split(order, n_batches):
        if shuffle:
            idx = np.sort(idx)  # reading order; HSIC does not depend on the order in a batch
            xb, yb = x.data[idx], y.data[idx]
        else:
            xb, yb = x.data[idx[0] : idx[-1] + 1], y.data[idx[0] : idx[-1] + 1]
        tasks.append(
            dask.delayed(_batch_hsic, pure=True)(xb, yb, options["kernel"], options["sigma"])
        )
    return tasks


def _bootstrap(hsic: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of the ratio over minibatches resampled with replacement."""
    n_batches = hsic.shape[0]
    draws = np.random.default_rng([seed, 1]).integers(0, n_batches, size=(n_boot, n_batches))
    means = np.stack([hsic[:, c][draws].mean(axis=1) for c in range(3)], axis=1)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(_ratio(means), [alpha, 1 - alpha])
    return float(low), float(high)


def minibatch_cka(
    x: Layer,
    y: Layer,
    *,
    kernel: str = "linear",
    sigma: float = 0.8,
    batch_size: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    shuffle: bool = True,
    n_boot: int = 1000,
    means: tuple[np.ndarray, np.ndarray] | None = None,
) -> Estimate:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021) with a bootstrap interval. Approximate.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples.
    kernel
        ``"linear"`` or ``"rbf"`` (bandwidth ``sigma`` times each batch's median distance,
        the rule of ``dask_repsim.cka(kernel="rbf")`` applied within the batch).
    batch_size
        Samples per minibatch (at least 4). The samples are split into
        ``n // batch_size`` batches of sizes differing by at most one; none is left out.
    seed
        Seeds the permutation and the bootstrap.
    level, n_boot
        Coverage and number of resamples of the percentile bootstrap interval: minibatches are
        resampled with replacement and the ratio recomputed.
    shuffle
        True (default): batches are drawn from a seeded random permutation of the samples, so
        each is a random sample even when the data are stored in order (e.g. by class); every
        batch is gathered by fancy indexing, reading from many chunks. False: contiguous runs of
        samples, each read from its own chunks, for data stored in random order.
    means
        Column means from :func:`~dask_repsim.engine.columns.checked_columns`: given, the inputs
        count as checked and are not read for it again (each batch is centred on its own means).

    Returns
    -------
    Estimate
        The estimate with ``.method`` ``"minibatch"``, ``.approximate`` (what it approximates),
        ``.ci_low``, ``.ci_high``, ``.level``, ``.n_batches``, ``.batch_size``, ``.kernel`` and
        the per-batch unbiased HSIC ``.hsic``, shape (n_batches, 3): (xy, xx, yy).

    Notes
    -----
    ``CKA_mb = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) mean_b HSIC_1(L_b, L_b))``
    with HSIC_1 the unbiased estimator of Song et al. (2012) on each batch's Gram matrices. Each
    mean is unbiased for the population HSIC, so the estimate converges to the population CKA
    as the number of batches grows, whatever the batch size.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(4000, 10))
    >>> r = minibatch_cka(as_layer(x), as_layer(x @ rng.normal(size=(10, 10)), name="y"),
    ...                   batch_size=500)
    >>> r.n_batches, r.ci_low <= r <= r.ci_high, r.method
    (8, True, 'minibatch')
    """
    _check_options(kernel, batch_size, level)
    if means is None:
        n = checked_columns([x, y])[0].count
    else:
        n = check_sample_counts([x.name, y.name], [x.data.shape[0], y.data.shape[0]])
    if n < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} samples")
    options = dict(batch_size=batch_size, shuffle=shuffle, seed=seed, kernel=kernel, sigma=sigma)
    hsic = np.array(compute(*_batch_tasks(x, y, n, options)))
    value = cka_ratio(
        hsic.mean(axis=0), (x.name, y.name), batch_size, True,
        measure="minibatch CKA", remedy="use larger minibatches (batch_size)",
    )
    low, high = _bootstrap(hsic, n_boot, seed, level)
    rbf = "RBF " if kernel == "rbf" else ""
    return Estimate(
        value, method="minibatch", ci_low=low, ci_high=high, level=level,
        approximate=f"minibatch {rbf}CKA (Nguyen et al. 2021), unbiased HSIC averaged over "
        f"minibatches of {batch_size} samples, bootstrap interval",
        n_batches=hsic.shape[0], batch_size=batch_size, kernel=kernel, hsic=hsic,
    )


def minibatch_cells(
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    *,
    kernel: str,
    sigma: float,
    batch_size: int,
    seed: int,
    level: float,
    todo: Positions | None = None,
) -> tuple[Cells, dict[str, Any]]:
    """Approximate CKA cells, each with its bootstrap interval (Nguyen et al. 2021);
    ``todo``: the (row, column) cells to compute (default every one)."""
    cells: Cells = {}
    estimate = None
    for i, j in grid_cells(rows, cols, todo):
        estimate = minibatch_cka(
            layers[rows[i]], layers[cols[j]], kernel=kernel, sigma=sigma,
            batch_size=batch_size, seed=seed, level=level,
        )
        cells[0, i, j] = Cell(float(estimate), fields=dict(estimate.__dict__))
    attrs = {"n_samples": layers[rows[0]].data.shape[0], "n_samples_omitted": 0,
             "approximate": estimate.approximate, "n_batches": estimate.n_batches,
             "batch_size": batch_size, "level": level}
    return cells, attrs
