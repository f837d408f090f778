"""Exact linear and RBF CKA from blocks of the sample-space Gram matrices.

The co-moment pass (:mod:`dask_repsim.engine.stream`) holds a (p+q)^2 matrix; a flattened conv
layer with 10^5 features does not fit. Here Gram blocks ``K_ij = k(X_i, X_j)`` of row blocks
``i <= j`` are computed as Dask tasks, each returning a few sums over its block (the Frobenius
products ``sum K_ij * L_ij``, row sums, diagonals), from which HSIC is assembled exactly. Cost
n^2 (p + q), memory a few blocks per task; neither the n x n Gram matrix nor a (p+q)^2 matrix is
ever held. The only exact route to RBF CKA.

All arithmetic is in float64 whatever the storage dtype. Rows are centred with the column means
of :func:`~dask_repsim.engine.columns.checked_columns` before any Gram block is formed, and the
inputs
are checked by it: NaN or Inf, a layer without variance and different sample counts raise the
errors of :mod:`dask_repsim.io.validation`, as on every path.

References
----------
Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations Revisited.
ICML. Song, Smola, Gretton, Bedo, Borgwardt (2012). Feature Selection via Dependence
Maximization. JMLR.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask
import numpy as np

from ...engine.columns import centred, default_block_rows, pair_means, row_blocks
from ...engine.medians import (
    MEDIAN_SAMPLE,
    exact_median_sq_distance,
    sampled_median_sq_distance,
    sq_distances,
)
from ...engine.parallel import compute
from ...io.inputs import Layer
from ...io.validation import require_samples
from ...measures.hsic import GramSums, cka_ratio
from ...results import Estimate

#: Largest n for which :func:`rbf_cka` finds the median squared distance exactly by default.
MEDIAN_EXACT_MAX = 20_000


def gram_block(a: np.ndarray, b: np.ndarray, same: bool, scale: float | None) -> np.ndarray:
    """Linear (``scale=None``) or RBF Gram block ``exp(-D^2 / scale)`` of centred rows.

    Examples
    --------
    >>> a = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> gram_block(a, a, True, None).tolist(), gram_block(a, a, True, 5.0).round(3).tolist()
    ([[1.0, 0.0], [0.0, 4.0]], [[1.0, 0.368], [0.368, 1.0]])
    """
    if scale is None:
        return a @ b.T
    d2 = sq_distances(a, b, same)
    np.multiply(d2, -1.0 / scale, out=d2)
    return np.exp(d2, out=d2)




def _block_sums(i, j, xi, xj, yi, yj, mx, my, sx, sy) -> tuple:
    """Sums over the Gram blocks K_ij and L_ij; block (j, i) is the transpose, counted here."""
    same = i == j
    xi, yi = centred(xi, mx), centred(yi, my)
    xj, yj = (xi, yi) if same else (centred(xj, mx), centred(yj, my))
    k = gram_block(xi, xj, same, sx)
    g = gram_block(yi, yj, same, sy)
    w = 1.0 if same else 2.0
    sums = (
        w * float(np.einsum("ij,ij->", k, g)),
        w * float(np.einsum("ij,ij->", k, k)),
        w * float(np.einsum("ij,ij->", g, g)),
    )
    rows = (k.sum(axis=1), g.sum(axis=1), k.sum(axis=0), g.sum(axis=0))
    diag = (np.diagonal(k).copy(), np.diagonal(g).copy()) if same else None
    return i, j, sums, rows, diag


def gram_sums(
    x: Layer,
    y: Layer,
    means: tuple[np.ndarray, np.ndarray],
    scales: tuple[float | None, float | None],
    rows: int,
) -> GramSums:
    """The :class:`GramSums` of ``x`` and ``y`` (centred with ``means``) from row blocks of
    ``rows`` samples; ``scales``: each side's RBF scale ``2 sigma^2 median``, None for linear."""
    n = int(x.data.shape[0])
    bx, by = row_blocks(x, rows), row_blocks(y, rows)
    starts = np.arange(0, n, rows)
    tasks = [
        dask.delayed(_block_sums, pure=True)(i, j, bx[i], bx[j], by[i], by[j], *means, *scales)
        for i in range(len(bx))
        for j in range(i, len(bx))
    ]
    kl = kk = ll = 0.0
    k_rows, l_rows, k_diag, l_diag = (np.zeros(n) for _ in range(4))
    for i, j, sums, (ki, li, kj, lj), diag in compute(*tasks):
        kl, kk, ll = kl + sums[0], kk + sums[1], ll + sums[2]
        si, sj = slice(starts[i], starts[i] + len(ki)), slice(starts[j], starts[j] + len(kj))
        k_rows[si] += ki
        l_rows[si] += li
        if i != j:
            k_rows[sj] += kj
            l_rows[sj] += lj
        else:
            k_diag[si], l_diag[si] = diag
    return GramSums(n, kl, kk, ll, k_rows, l_rows, k_diag, l_diag)


def _rows(x: Layer, y: Layer, n: int, block_rows: int | None) -> int:
    return block_rows or default_block_rows(n, max(x.data.shape[1], y.data.shape[1]))


def cka_values(
    x: Layer,
    y: Layer,
    debiased: Sequence[bool],
    *,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    block_rows: int | None = None,
) -> list[float]:
    """Exact linear CKA for each flag of ``debiased``, from one set of Gram-block sums.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples.
    debiased
        For each value wanted: use the unbiased HSIC estimator of Song et al. (2012).
    means
        The column means of x and y from :func:`~dask_repsim.engine.columns.checked_columns` (the
        inputs count as checked); None: checked and computed here, one pass over both.
    block_rows
        Samples per row block; a task holds two row blocks of each layer and two
        ``block_rows^2`` Gram blocks. Default:
        :func:`~dask_repsim.engine.columns.default_block_rows`.

    Notes
    -----
    With ``K = X_c X_c^T`` and ``L = Y_c Y_c^T`` (centred columns),
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``HSIC(K, L) = tr(K H L H)``
    (Kornblith et al. 2019, eq. 3-4), computed from ``sum_ij K_ij L_ij`` and the row sums of K
    and L, each summed over the blocks ``i <= j``. Cost ``n^2 (p + q)``: cheaper than the
    co-moments (``n (p + q)^2``) when the layers are wider than there are samples.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 50))
    >>> q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    >>> y = as_layer(2 * x @ q + 1, name="y")
    >>> [round(v, 9) for v in cka_values(as_layer(x), y, (False, True), block_rows=128)]
    [1.0, 1.0]
    """
    n, mx, my = pair_means(x, y, means)
    if any(debiased):
        require_samples(n, 4, "debiased CKA")
    sums = gram_sums(x, y, (mx, my), (None, None), _rows(x, y, n, block_rows))
    names, scale = (x.name, y.name), (sums.kk, sums.ll)
    return [cka_ratio(sums.hsic(flag), names, n, flag, scale=scale) for flag in debiased]


def _bandwidth_medians(x, y, means, exact, block_rows, median_sample, seed) -> tuple:
    if exact:
        medians = tuple(
            exact_median_sq_distance(layer, block_rows=block_rows, mean=m)
            for layer, m in zip((x, y), means, strict=True)
        )
    else:
        medians = tuple(
            sampled_median_sq_distance(layer, size=median_sample, seed=seed) for layer in (x, y)
        )
    for layer, med in zip((x, y), medians, strict=True):
        if not med > 0:
            raise ValueError(
                f"{layer.name}: the median squared distance between samples is {med}; at least "
                "half of the pairs of samples coincide, so the RBF bandwidth is undefined"
            )
    return medians


def rbf_cka(
    x: Layer,
    y: Layer,
    sigma: float = 0.8,
    *,
    debiased: bool = False,
    seed: int = 0,
    means: tuple[np.ndarray, np.ndarray] | None = None,
    median_exact_max: int = MEDIAN_EXACT_MAX,
    median_sample: int = MEDIAN_SAMPLE,
    block_rows: int | None = None,
) -> Estimate:
    """Exact RBF-kernel CKA from Gram blocks, bandwidth a fraction of the median distance.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples.
    sigma
        Bandwidth as a fraction of the median distance (Kornblith et al. use 0.2 to 2;
        ``gram_rbf``'s ``threshold``).
    debiased
        Use the unbiased HSIC estimator of Song et al. (2012).
    seed
        Seeds the subset of samples of a sampled median.
    means
        As for :func:`cka_values`.
    median_exact_max
        Up to this many samples the median squared distance is exact over all n^2 pairs
        (:func:`~dask_repsim.engine.medians.exact_median_sq_distance`); beyond, it is taken over a
        seeded random subset of ``median_sample`` samples and the result says so.
    block_rows
        Samples per row block (see :func:`cka_values`).

    Returns
    -------
    Estimate
        The CKA, with ``.method`` ``"gram"``, ``.median`` (x's and y's median squared
        distance: the bandwidths are ``2 sigma^2 median``), ``.median_exact`` (False when over
        a subset; ``.approximate`` then says so) and ``.sigma``.

    Notes
    -----
    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2 median(D^2)))``, the median over all n^2 squared
    distances with the zero diagonal (``gram_rbf`` of Kornblith et al. 2019); then
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` summed from Gram blocks as in
    :func:`cka_values`. Each median pass and the HSIC pass take ``n^2 (p + q)``; the exact
    median takes two or three passes over the blocks.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(400, 5))
    >>> result = rbf_cka(as_layer(x), as_layer(3 * x + 1, name="y"), sigma=0.5)
    >>> round(result, 6), result.median_exact, result.approximate
    (1.0, True, None)
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, not {sigma}")
    n, mx, my = pair_means(x, y, means)
    if debiased:
        require_samples(n, 4, "debiased CKA")
    exact = n <= median_exact_max
    medians = _bandwidth_medians(x, y, (mx, my), exact, block_rows, median_sample, seed)
    scales = tuple(2.0 * sigma**2 * m for m in medians)
    sums = gram_sums(x, y, (mx, my), scales, _rows(x, y, n, block_rows))
    value = cka_ratio(
        sums.hsic(debiased), (x.name, y.name), n, debiased, scale=(sums.kk, sums.ll)
    )
    approximate = None if exact else (
        f"RBF bandwidths from the median squared distance among a seeded random subset of "
        f"{min(median_sample, n)} samples (n > {median_exact_max})"
    )
    return Estimate(
        value, method="gram", approximate=approximate, median=medians, median_exact=exact,
        sigma=sigma,
    )
