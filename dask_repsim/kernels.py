"""CKA for layers too wide for co-moments: sample-space Gram blocks, feature tiles, minibatches.

The co-moment pass (:mod:`dask_repsim.statistics`) holds a (p+q)^2 matrix; a flattened conv
layer with 10^5 features does not fit. The paths here never hold it, nor the n x n Gram matrix:

- **gram** (:func:`gram_cka`, :func:`rbf_cka`): Gram blocks ``K_ij = k(X_i, X_j)`` of row blocks
  ``i <= j`` are computed as Dask tasks; each task returns a few sums over its block (the
  Frobenius products ``sum K_ij * L_ij``, row sums, diagonals), from which HSIC is assembled
  exactly. Cost n^2 (p + q), memory a few blocks per task. The only exact route to RBF CKA.
- **tiled** (:func:`tiled_cka`): ``||X_c^T Y_c||_F^2`` as a sum over pairs of feature tiles of
  the squared norms of the tile products, each summed over row chunks. Exact, cost n p q,
  memory one tile product (``tile^2`` float64) per task.
- **minibatch** (:func:`minibatch_cka`): unbiased HSIC averaged over minibatches (Nguyen, Raghu &
  Kornblith 2021), with a bootstrap interval over minibatches. Approximate, any n and width.

All arithmetic is in float64 whatever the storage dtype. Columns are centred with their means
(one cheap pass) before any Gram block is formed: ``X X^T`` of uncentred ReLU activations would
cancel catastrophically when it is centred afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask
import numpy as np

from .inputs import Layer
from .parallel import compute

#: Largest n for which :func:`rbf_cka` finds the median squared distance exactly by default.
MEDIAN_EXACT_MAX = 20_000
#: Samples drawn (seeded) for the median when n exceeds ``median_exact_max``.
MEDIAN_SAMPLE = 4_000
# Bytes of float64 per row block of the gram path (per layer, before the Gram block itself).
_BLOCK_BYTES = 64 * 2**20
# Row blocks the gram path aims for at least (8 blocks: 36 block tasks to spread over threads).
_MIN_BLOCKS = 8
# Histogram bins per pass of the exact median, and how many candidate values may be gathered
# on the client once the bins have narrowed the median down.
_MEDIAN_BINS = 2**16
_MEDIAN_GATHER = 2**24


# --------------------------------------------------------------------------------- helpers


def _check_pair(x: Layer, y: Layer) -> int:
    n = x.data.shape[0]
    if y.data.shape[0] != n:
        raise ValueError(
            f"inputs have different numbers of samples: {x.name} has {n}, "
            f"{y.name} has {y.data.shape[0]}"
        )
    return int(n)


def _column_means(*layers: Layer) -> list[np.ndarray]:
    means = compute(*(layer.data.astype(np.float64).mean(axis=0) for layer in layers))
    return [np.asarray(m) for m in means]


def _row_blocks(layer: Layer, rows: int) -> list:
    """Delayed row blocks of ``layer`` (full width), ``rows`` samples each (the last shorter)."""
    return list(layer.data.rechunk({0: rows, 1: -1}).to_delayed(optimize_graph=False)[:, 0])


def _default_block_rows(n: int, width: int) -> int:
    by_memory = _BLOCK_BYTES // (8 * max(1, width))
    return int(max(64, min(n, 4096, by_memory, -(-n // _MIN_BLOCKS))))


def _centred(block: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return np.asarray(block, dtype=np.float64) - mean


def _sq_distances(a: np.ndarray, b: np.ndarray, same: bool) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (centred data)."""
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :]
    d2 -= 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    if same:
        np.fill_diagonal(d2, 0.0)  # exactly, as the distance of a sample to itself
    return d2


def _gram(a: np.ndarray, b: np.ndarray, same: bool, scale: float | None) -> np.ndarray:
    """Linear (``scale=None``) or RBF Gram block ``exp(-D^2 / scale)`` of centred rows."""
    if scale is None:
        return a @ b.T
    d2 = _sq_distances(a, b, same)
    np.multiply(d2, -1.0 / scale, out=d2)
    return np.exp(d2, out=d2)


# --------------------------------------------------------------------------- HSIC from sums


@dataclass(frozen=True)
class _GramSums:
    """What HSIC needs from the Gram matrices K (of x) and L (of y), summed over blocks."""

    n: int
    kl: float  # sum_ij K_ij L_ij
    kk: float
    ll: float
    k_rows: np.ndarray  # K 1
    l_rows: np.ndarray
    k_diag: np.ndarray
    l_diag: np.ndarray

    def hsic(self, debiased: bool) -> tuple[float, float, float]:
        """(HSIC(K,L), HSIC(K,K), HSIC(L,L)), each up to a factor common to the three."""
        n = self.n
        if not debiased:
            # tr(K H L H) = sum K.L - 2/n (K1).(L1) + (1'K1)(1'L1)/n^2 (H = I - 11'/n)
            def biased(s: float, a: np.ndarray, b: np.ndarray) -> float:
                return s - 2.0 / n * float(a @ b) + a.sum() * b.sum() / n**2

            return (
                biased(self.kl, self.k_rows, self.l_rows),
                biased(self.kk, self.k_rows, self.k_rows),
                biased(self.ll, self.l_rows, self.l_rows),
            )

        # Song et al. (2012), eq. (5), with K~, L~ the Gram matrices with zeroed diagonals:
        # tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1   (times n(n-3))
        kr, lr = self.k_rows - self.k_diag, self.l_rows - self.l_diag

        def unbiased(s: float, da_: np.ndarray, db: np.ndarray, a: np.ndarray, b: np.ndarray):
            trace = s - float(da_ @ db)
            return trace + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a @ b)

        return (
            unbiased(self.kl, self.k_diag, self.l_diag, kr, lr),
            unbiased(self.kk, self.k_diag, self.k_diag, kr, kr),
            unbiased(self.ll, self.l_diag, self.l_diag, lr, lr),
        )


def _block_sums(
    i: int,
    j: int,
    xi: np.ndarray,
    xj: np.ndarray,
    yi: np.ndarray,
    yj: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    sx: float | None,
    sy: float | None,
) -> tuple:
    """Sums over the Gram blocks K_ij and L_ij; block (j, i) is the transpose, counted here."""
    same = i == j
    xi, yi = _centred(xi, mx), _centred(yi, my)
    xj, yj = (xi, yi) if same else (_centred(xj, mx), _centred(yj, my))
    k = _gram(xi, xj, same, sx)
    g = _gram(yi, yj, same, sy)
    w = 1.0 if same else 2.0
    sums = (
        w * float(np.einsum("ij,ij->", k, g)),
        w * float(np.einsum("ij,ij->", k, k)),
        w * float(np.einsum("ij,ij->", g, g)),
    )
    rows = (k.sum(axis=1), g.sum(axis=1), k.sum(axis=0), g.sum(axis=0))
    diag = (np.diagonal(k).copy(), np.diagonal(g).copy()) if same else None
    return i, j, sums, rows, diag


def _gram_sums(
    x: Layer, y: Layer, sx: float | None, sy: float | None, block_rows: int | None, means=None
) -> _GramSums:
    n = _check_pair(x, y)
    rows = block_rows or _default_block_rows(n, max(x.data.shape[1], y.data.shape[1]))
    mx, my = means if means is not None else _column_means(x, y)
    bx, by = _row_blocks(x, rows), _row_blocks(y, rows)
    starts = np.arange(0, n, rows)
    tasks = [
        dask.delayed(_block_sums, pure=True)(i, j, bx[i], bx[j], by[i], by[j], mx, my, sx, sy)
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
    return _GramSums(n, kl, kk, ll, k_rows, l_rows, k_diag, l_diag)


def _cka_from(hsic: tuple[float, float, float], x: Layer, y: Layer, n: int) -> float:
    xy, xx, yy = hsic
    for name, value in ((x.name, xx), (y.name, yy)):
        if not value > 0:
            raise ValueError(
                f"HSIC of {name} with itself is {value:.3g} at n={n}: the layer has no variance, "
                "or too few samples for the unbiased estimator"
            )
    return float(xy / np.sqrt(xx * yy))


def _check_debiased(n: int, debiased: bool) -> None:
    if debiased and n < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples, got {n}")


# ---------------------------------------------------------------------------------- gram


def gram_cka(x: Layer, y: Layer, *, debiased: bool = False, block_rows: int | None = None) -> float:
    """Exact linear CKA from blocks of the sample-space Gram matrices.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.inputs.as_layer`) with the same samples.
    debiased
        Use the unbiased HSIC estimator of Song et al. (2012).
    block_rows
        Samples per row block; a task holds two row blocks of each layer and two
        ``block_rows^2`` Gram blocks. Default: about 64 MiB of float64 per row block, at most
        4096 rows and at most n / 8 (at least 8 blocks, to keep the threads busy).

    Returns
    -------
    float

    Notes
    -----
    With ``K = X_c X_c^T`` and ``L = Y_c Y_c^T`` (centred columns),
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``HSIC(K, L) = tr(K H L H)``
    (Kornblith et al. 2019, eq. 3-4), computed from ``sum_ij K_ij L_ij`` and the row sums of K
    and L, each summed over the blocks ``i <= j``. Cost ``n^2 (p + q)``: cheaper than the
    co-moments (``n (p + q)^2``) when the layers are wider than there are samples.

    References
    ----------
    Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations
    Revisited. ICML. Song, Smola, Gretton, Bedo, Borgwardt (2012). Feature Selection via
    Dependence Maximization. JMLR.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 50))
    >>> q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    >>> round(gram_cka(as_layer(x), as_layer(2 * x @ q, name="y"), block_rows=128), 6)
    1.0
    """
    return gram_cka_values(x, y, (debiased,), block_rows=block_rows)[0]


def gram_cka_values(
    x: Layer, y: Layer, debiased: Sequence[bool], *, block_rows: int | None = None
) -> list[float]:
    """:func:`gram_cka` for each flag of ``debiased``, from one set of Gram-block sums.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(200, 30))
    >>> biased, unbiased = gram_cka_values(as_layer(x), as_layer(x + 1, name="y"), (False, True))
    >>> round(biased, 9), round(unbiased, 9)
    (1.0, 1.0)
    """
    n = _check_pair(x, y)
    for flag in debiased:
        _check_debiased(n, flag)
    sums = _gram_sums(x, y, None, None, block_rows)
    return [_cka_from(sums.hsic(flag), x, y, n) for flag in debiased]


@dataclass(frozen=True)
class RBFCKAResult:
    """RBF-kernel CKA and how its bandwidths were chosen; ``float(result)`` is the CKA.

    Attributes
    ----------
    value : float
        The CKA.
    median : tuple of float
        Median squared pairwise distance of x and of y (the bandwidths are
        ``sigma^2 * median``).
    median_exact : bool
        True when the medians are over all n^2 pairs; False when over a seeded subsample.
    method : str
        ``"gram"``: exact CKA from Gram blocks.
    """

    value: float
    median: tuple[float, float]
    median_exact: bool
    method: str = "gram"
    sigma: float = 0.8
    debiased: bool = False

    def __float__(self) -> float:
        return self.value


def _median_histogram(bx: list, mx: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    tasks = [
        dask.delayed(_block_histogram, pure=True)(i, j, bx[i], bx[j], mx, lo, hi, bins)
        for i in range(len(bx))
        for j in range(i, len(bx))
    ]
    return np.sum(compute(*tasks), axis=0)


def _block_histogram(i, j, xi, xj, mx, lo, hi, bins):
    same = i == j
    a = _centred(xi, mx)
    d2 = _sq_distances(a, a if same else _centred(xj, mx), same).ravel()
    inside = d2[(d2 >= lo) & (d2 < hi)]
    idx = np.minimum(((inside - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.int64)
    return counts * (1 if same else 2)


def _block_gather(i, j, xi, xj, mx, lo, hi):
    same = i == j
    a = _centred(xi, mx)
    d2 = _sq_distances(a, a if same else _centred(xj, mx), same).ravel()
    w = 1 if same else 2
    return w * int(np.count_nonzero(d2 < lo)), d2[(d2 >= lo) & (d2 < hi)], w


def exact_median_sq_distance(layer: Layer, *, block_rows: int | None = None, mean=None) -> float:
    """Median of all n^2 squared distances between samples, zero diagonal included, exactly.

    Computed from row blocks without holding the n x n matrix: histograms of the blocks'
    squared distances narrow down the two middle order statistics, whose candidates are then
    gathered and sorted. ``numpy.median`` of ``gram_rbf``'s distance matrix gives the same
    number (Kornblith et al.'s convention).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    >>> bool(np.isclose(exact_median_sq_distance(as_layer(x), block_rows=64), np.median(d2)))
    True
    """
    n = int(layer.data.shape[0])
    rows = block_rows or _default_block_rows(n, layer.data.shape[1])
    (mx,) = _column_means(layer) if mean is None else (mean,)
    bx = _row_blocks(layer, rows)
    total = n * n
    k1, k2 = (total - 1) // 2, total // 2  # numpy's middle pair (equal when n^2 is odd)
    # D^2_ij <= 2 |x_i|^2 + 2 |x_j|^2 for centred rows: an upper bound on every distance
    norms = ((layer.data.astype(np.float64) - mx) ** 2).sum(axis=1)
    hi = 4.0 * float(compute(norms.max())[0]) * (1 + 1e-12) + 1e-300
    lo, below = 0.0, 0
    while True:
        counts = _median_histogram(bx, mx, lo, hi, _MEDIAN_BINS)
        cum = below + np.cumsum(counts)
        b1 = int(np.searchsorted(cum, k1, side="right"))
        b2 = int(np.searchsorted(cum, k2, side="right"))
        width = (hi - lo) / _MEDIAN_BINS
        new_lo, new_hi = lo + b1 * width, lo + (b2 + 1) * width
        new_below = below + (int(cum[b1 - 1] - below) if b1 > 0 else 0)
        span = int(cum[b2] - (cum[b1 - 1] if b1 > 0 else below))
        if span <= _MEDIAN_GATHER or new_hi - new_lo <= 4 * np.spacing(new_hi):
            break
        lo, hi, below = new_lo, new_hi, new_below
    # Widen by a bin on each side: a value on a bin edge may round into either neighbour.
    lo, hi = max(0.0, new_lo - width), new_hi + width
    tasks = [
        dask.delayed(_block_gather, pure=True)(i, j, bx[i], bx[j], mx, lo, hi)
        for i in range(len(bx))
        for j in range(i, len(bx))
    ]
    parts = compute(*tasks)
    start = sum(p[0] for p in parts)
    values = np.concatenate([p[1] for p in parts])
    weights = np.concatenate([np.full(len(p[1]), p[2], dtype=np.int64) for p in parts])
    order = np.argsort(values, kind="stable")
    values, cum = values[order], start + np.cumsum(weights[order])
    if not (start <= k1 and cum[-1] > k2):  # pragma: no cover (guards the bin arithmetic)
        raise RuntimeError("median search lost the middle order statistics")
    v1 = values[np.searchsorted(cum, k1, side="right")]
    v2 = values[np.searchsorted(cum, k2, side="right")]
    return float((v1 + v2) / 2)


def sampled_median_sq_distance(
    layer: Layer, *, size: int = MEDIAN_SAMPLE, seed: int = 0, mean=None
) -> float:
    """Median squared distance among a seeded random subset of ``size`` samples.

    The same rule as :func:`exact_median_sq_distance` (all ``size^2`` pairs of the subset, zero
    diagonal included) on samples drawn without replacement with ``numpy.random.default_rng
    (seed)``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(5000, 2))
    >>> med = sampled_median_sq_distance(as_layer(x), size=1000, seed=0)
    >>> bool(abs(med - 4 * np.log(2)) < 0.1)  # population: twice the median of chi2(2)
    True
    """
    n = int(layer.data.shape[0])
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    rows = np.asarray(compute(layer.data[idx])[0], dtype=np.float64)
    rows -= rows.mean(axis=0) if mean is None else mean
    return float(np.median(_sq_distances(rows, rows, True)))


def rbf_cka(
    x: Layer,
    y: Layer,
    sigma: float = 0.8,
    *,
    debiased: bool = False,
    median_exact_max: int = MEDIAN_EXACT_MAX,
    median_sample: int = MEDIAN_SAMPLE,
    seed: int = 0,
    block_rows: int | None = None,
) -> RBFCKAResult:
    """Exact RBF-kernel CKA from Gram blocks, bandwidth a fraction of the median distance.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.inputs.as_layer`) with the same samples.
    sigma
        Bandwidth as a fraction of the median distance (Kornblith et al. use 0.2 to 2;
        ``gram_rbf``'s ``threshold``).
    debiased
        Use the unbiased HSIC estimator of Song et al. (2012).
    median_exact_max
        Up to this many samples the median squared distance is exact over all n^2 pairs
        (:func:`exact_median_sq_distance`); beyond, it is taken over a seeded random subset of
        ``median_sample`` samples (:func:`sampled_median_sq_distance`) and the result says so.
    median_sample, seed
        Size and seed of that subset.
    block_rows
        Samples per row block (see :func:`gram_cka`).

    Returns
    -------
    RBFCKAResult
        ``float(result)`` is the CKA; ``.median`` (x's and y's median squared distance),
        ``.median_exact`` and ``.method`` say how it was obtained.

    Notes
    -----
    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2 median(D^2)))``, the median over all n^2 squared
    distances with the zero diagonal (``gram_rbf`` of Kornblith et al. 2019); then
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` summed from Gram blocks as in
    :func:`gram_cka`. Cost: each median pass and the HSIC pass take ``n^2 (p + q)``; the exact
    median takes two or three passes over the blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 5))
    >>> result = rbf_cka(as_layer(x), as_layer(3 * x + 1, name="y"), sigma=0.5)
    >>> round(float(result), 6), result.median_exact
    (1.0, True)
    """
    n = _check_pair(x, y)
    _check_debiased(n, debiased)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, not {sigma}")
    mx, my = _column_means(x, y)
    exact = n <= median_exact_max
    if exact:
        medians = tuple(
            exact_median_sq_distance(layer, block_rows=block_rows, mean=m)
            for layer, m in ((x, mx), (y, my))
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
    sx, sy = (2.0 * sigma**2 * m for m in medians)
    sums = _gram_sums(x, y, sx, sy, block_rows, means=(mx, my))
    value = _cka_from(sums.hsic(debiased), x, y, n)
    return RBFCKAResult(value, medians, exact, "gram", sigma, debiased)


# --------------------------------------------------------------------------------- tiled


def _tile_sum(ma: np.ndarray, mb: np.ndarray, blocks_a: list, blocks_b: list, norm: bool):
    """``sum_k A_k^T B_k`` over row blocks of two feature tiles (centred), or its squared
    Frobenius norm (``norm``): one task per tile pair and group of row blocks, so that only one
    tile x tile product per task is alive."""
    out = None
    for a, b in zip(blocks_a, blocks_b, strict=True):
        ca = _centred(a, ma)
        cb = ca if b is a else _centred(b, mb)  # a diagonal tile: numpy uses syrk
        product = ca.T @ cb
        if out is None:
            out = product
        else:
            out += product
    return _frobenius_sq(out) if norm else out


def _sum_all(*parts):
    out = parts[0].copy()
    for p in parts[1:]:
        out += p
    return out


def _frobenius_sq(m: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", m, m))


def _row_norm_products(a, b, ma, mb):
    ra = np.einsum("ij,ij->i", _centred(a, ma), _centred(a, ma))
    rb = np.einsum("ij,ij->i", _centred(b, mb), _centred(b, mb))
    return np.array([ra @ rb, ra @ ra, rb @ rb, ra.sum(), rb.sum()])


def tiled_cka(
    x: Layer,
    y: Layer,
    *,
    debiased: bool = False,
    tile: int = 2048,
    chunk_rows: int | None = None,
    split_every: int = 8,
) -> float:
    """Exact linear CKA from products of feature tiles, never holding a (p+q)^2 matrix.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.inputs.as_layer`) with the same samples.
    debiased
        Use the unbiased HSIC estimator of Song et al. (2012).
    tile
        Features per tile: a task holds one ``chunk_rows x tile`` block of each side and one
        ``tile x tile`` float64 product.
    chunk_rows
        Samples per row chunk. Default: about 64 MiB of float64 per ``chunk_rows x tile``
        block.
    split_every
        Row chunks per task (their products summed inside it), and partial sums per task of
        the tree reduction above them.

    Returns
    -------
    float

    Notes
    -----
    ``||X_c^T Y_c||_F^2 = sum_ab ||sum_k X_c[k, a]^T Y_c[k, b]||_F^2`` over feature tiles a of
    x, b of y and row chunks k; likewise ``||X_c^T X_c||_F^2`` over tiles ``a <= b`` (off-
    diagonal pairs twice). ``CKA = ||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)``
    (Kornblith et al. 2019). Cost ``n (p q + p^2/2 + q^2/2)``; the debiased estimator also
    needs ``sum_i |x_i|^2 |y_i|^2``, one more light pass.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 50))
    >>> q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    >>> round(tiled_cka(as_layer(x), as_layer(2 * x @ q, name="y"), tile=16), 6)
    1.0
    """
    return tiled_cka_values(
        x, y, (debiased,), tile=tile, chunk_rows=chunk_rows, split_every=split_every
    )[0]


def tiled_cka_values(
    x: Layer,
    y: Layer,
    debiased: Sequence[bool],
    *,
    tile: int = 2048,
    chunk_rows: int | None = None,
    split_every: int = 8,
) -> list[float]:
    """:func:`tiled_cka` for each flag of ``debiased``, from one set of tile products.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(200, 30))
    >>> y = as_layer(-x, name="y")
    >>> [round(v, 9) for v in tiled_cka_values(as_layer(x), y, (True, False), tile=8)]
    [1.0, 1.0]
    """
    n = _check_pair(x, y)
    for flag in debiased:
        _check_debiased(n, flag)
    mx, my = _column_means(x, y)
    rows = chunk_rows or int(max(1, min(n, _BLOCK_BYTES // (8 * tile))))
    bx = x.data.rechunk((rows, tile)).to_delayed(optimize_graph=False)
    by = y.data.rechunk((rows, tile)).to_delayed(optimize_graph=False)
    cx = np.cumsum((0,) + x.data.rechunk((rows, tile)).chunks[1])
    cy = np.cumsum((0,) + y.data.rechunk((rows, tile)).chunks[1])

    def tile_norm(blocks_a, blocks_b, a, b, ma, mb, ca, cb):
        means = ma[ca[a] : ca[a + 1]], mb[cb[b] : cb[b + 1]]
        starts = range(0, blocks_a.shape[0], split_every)
        parts = [
            dask.delayed(_tile_sum, pure=True)(
                *means,
                list(blocks_a[k : k + split_every, a]),
                list(blocks_b[k : k + split_every, b]),
                len(starts) == 1,
            )
            for k in starts
        ]
        if len(parts) == 1:
            return parts[0]
        while len(parts) > 1:
            parts = [
                dask.delayed(_sum_all, pure=True)(*parts[i : i + split_every])
                for i in range(0, len(parts), split_every)
            ]
        return dask.delayed(_frobenius_sq, pure=True)(parts[0])

    tx, ty = bx.shape[1], by.shape[1]
    xy = [tile_norm(bx, by, a, b, mx, my, cx, cy) for a in range(tx) for b in range(ty)]
    xx = [
        (1 if a == b else 2) * tile_norm(bx, bx, a, b, mx, mx, cx, cx)
        for a in range(tx)
        for b in range(a, tx)
    ]
    yy = [
        (1 if a == b else 2) * tile_norm(by, by, a, b, my, my, cy, cy)
        for a in range(ty)
        for b in range(a, ty)
    ]
    graphs = [dask.delayed(sum)(xy), dask.delayed(sum)(xx), dask.delayed(sum)(yy)]
    if any(debiased):
        xr_ = x.data.rechunk({0: rows, 1: -1}).to_delayed(optimize_graph=False)[:, 0]
        yr_ = y.data.rechunk({0: rows, 1: -1}).to_delayed(optimize_graph=False)[:, 0]
        norms = [
            dask.delayed(_row_norm_products, pure=True)(a, b, mx, my)
            for a, b in zip(xr_, yr_, strict=True)
        ]
        graphs.append(dask.delayed(sum)(norms))
    out = compute(*graphs)
    s_xy, s_xx, s_yy = (float(v) for v in out[:3])

    def unbiased(s: float, norms: float, ta: float, tb: float) -> float:
        # Kornblith et al.'s feature_space_linear_cka, times n(n-3)
        return s - n / (n - 2) * norms + ta * tb / ((n - 1) * (n - 2))

    values = []
    for flag in debiased:
        hsic = (s_xy, s_xx, s_yy)
        if flag:
            nxy, nxx, nyy, tr_x, tr_y = out[3]
            hsic = (
                unbiased(s_xy, nxy, tr_x, tr_y),
                unbiased(s_xx, nxx, tr_x, tr_x),
                unbiased(s_yy, nyy, tr_y, tr_y),
            )
        values.append(_cka_from(hsic, x, y, n))
    return values


# ----------------------------------------------------------------------------- minibatch


@dataclass(frozen=True)
class MinibatchCKAResult:
    """Minibatch CKA with a bootstrap interval; ``float(result)`` is the estimate.

    Attributes
    ----------
    value : float
        ``mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) mean_b HSIC_1(L_b, L_b))``.
    ci_low, ci_high : float
        Percentile bootstrap interval over minibatches at ``level``.
    n_batches, batch_size : int
        Number of minibatches and their nominal size.
    hsic : numpy.ndarray
        Per-batch unbiased HSIC, shape (n_batches, 3): (xy, xx, yy).
    """

    value: float
    ci_low: float
    ci_high: float
    level: float
    n_batches: int
    batch_size: int
    kernel: str
    hsic: np.ndarray
    approximate: bool = True

    def __float__(self) -> float:
        return self.value


def _hsic1(k: np.ndarray, g: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5), including the 1/(n(n-3)) factor."""
    n = k.shape[0]
    k, g = k.copy(), g.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(g, 0.0)
    kr, gr = k.sum(axis=1), g.sum(axis=1)
    total = np.einsum("ij,ij->", k, g) + kr.sum() * gr.sum() / ((n - 1) * (n - 2))
    total -= 2.0 / (n - 2) * float(kr @ gr)
    return float(total / (n * (n - 3)))


def _batch_gram(a: np.ndarray, kernel: str, sigma: float) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(axis=0)  # HSIC_1 of these kernels does not depend on a shift of the data
    if kernel == "linear":
        return a @ a.T
    d2 = _sq_distances(a, a, True)
    med = float(np.median(d2))
    if not med > 0:
        return np.ones_like(d2)  # no spread within the batch: a constant kernel, HSIC 0
    return np.exp(-d2 / (2.0 * sigma**2 * med))


def _batch_hsic(xb: np.ndarray, yb: np.ndarray, kernel: str, sigma: float) -> np.ndarray:
    k, g = _batch_gram(xb, kernel, sigma), _batch_gram(yb, kernel, sigma)
    return np.array([_hsic1(k, g), _hsic1(k, k), _hsic1(g, g)])


def minibatch_cka(
    x: Layer,
    y: Layer,
    *,
    kernel: str = "linear",
    sigma: float = 0.8,
    batch_size: int = 1000,
    shuffle: bool = True,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = 1000,
) -> MinibatchCKAResult:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021) with a bootstrap interval. Approximate.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.inputs.as_layer`) with the same samples.
    kernel
        ``"linear"`` or ``"rbf"`` (bandwidth ``sigma`` times each batch's median distance,
        the rule of :func:`rbf_cka` applied within the batch).
    batch_size
        Samples per minibatch (at least 4). The samples are split into
        ``n // batch_size`` batches of sizes differing by at most one; none is left out.
    shuffle
        True (default): batches are drawn from a seeded random permutation of the samples, so
        each is a random sample even when the data are stored in order (e.g. by class); every
        batch is gathered by fancy indexing, reading from many chunks. False: contiguous runs of
        samples, each read from its own chunks, for data stored in random order.
    seed
        Seeds the permutation and the bootstrap.
    level, n_boot
        Coverage and number of resamples of the percentile bootstrap interval: minibatches are
        resampled with replacement and the ratio recomputed.

    Returns
    -------
    MinibatchCKAResult
        ``float(result)``; ``.ci_low``, ``.ci_high``, ``.n_batches``, ``.approximate`` (True).

    Notes
    -----
    ``CKA_mb = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) mean_b HSIC_1(L_b, L_b))``
    with HSIC_1 the unbiased estimator of Song et al. (2012) on each batch's Gram matrices. Each
    mean is unbiased for the population HSIC, so the estimate converges to the population CKA
    as the number of batches grows, whatever the batch size. The batches are independent Dask
    tasks.

    References
    ----------
    Nguyen, Raghu, Kornblith (2021). Do Wide and Deep Networks Learn the Same Things? ICLR.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(4000, 10))
    >>> r = minibatch_cka(as_layer(x), as_layer(x @ rng.normal(size=(10, 10)), name="y"),
    ...                   batch_size=500)
    >>> r.n_batches, r.ci_low <= float(r) <= r.ci_high, r.approximate
    (8, True, True)
    """
    n = _check_pair(x, y)
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf', not {kernel!r}")
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4, not {batch_size}")
    if n < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} samples")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    n_batches = n // batch_size
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    batches = np.array_split(order, n_batches)
    tasks = []
    for idx in batches:
        if shuffle:
            idx = np.sort(idx)  # reading order; HSIC does not depend on the order in a batch
            xb, yb = x.data[idx], y.data[idx]
        else:
            xb, yb = x.data[idx[0] : idx[-1] + 1], y.data[idx[0] : idx[-1] + 1]
        tasks.append(dask.delayed(_batch_hsic, pure=True)(xb, yb, kernel, sigma))
    hsic = np.array(compute(*tasks))
    mean = hsic.mean(axis=0)
    value = _ratio(mean)
    boot_rng = np.random.default_rng([seed, 1])
    draws = boot_rng.integers(0, n_batches, size=(n_boot, n_batches))
    means = np.stack([hsic[:, c][draws].mean(axis=1) for c in range(3)], axis=1)
    ratios = _ratio(means)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(ratios, [alpha, 1 - alpha])
    return MinibatchCKAResult(
        float(value), float(low), float(high), level, n_batches, batch_size, kernel, hsic
    )


def _ratio(mean: np.ndarray) -> np.ndarray:
    """xy / sqrt(xx yy) along the last axis; NaN where a self-HSIC mean is not positive."""
    xx, yy = mean[..., 1], mean[..., 2]
    ok = (xx > 0) & (yy > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, mean[..., 0] / np.sqrt(np.where(ok, xx * yy, 1.0)), np.nan)
