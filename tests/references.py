"""In-memory float64 reference formulas for the pairwise measures, written from the papers.

Everything here works on whole (samples x features) numpy arrays and deliberately takes routes
other than the package's co-moment algebra: sample-space Gram matrices for CKA, orthonormal
bases of the data (Bjorck & Golub 1973) for canonical correlations, least squares for
regression. Nothing is imported from ``dask_repsim``.
"""

from __future__ import annotations

import numpy as np

#: After standardising columns, singular values below this fraction of the largest are taken
#: as exact collinearity (duplicated units, sums of units).
RANK_RTOL = 1e-8


def _as_float64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64, copy=False)


def centre(a: np.ndarray) -> np.ndarray:
    """Subtract each column's mean."""
    a = _as_float64(a)
    return a - a.mean(axis=0)


def varying_columns(a: np.ndarray) -> np.ndarray:
    """Indices of the columns that are not exactly constant (dead units are)."""
    a = _as_float64(a)
    return np.flatnonzero(np.ptp(a, axis=0) > 0)


# ---------------------------------------------------------------------------------------------
# CKA (Kornblith, Norouzi, Lee & Hinton 2019) in sample space
# ---------------------------------------------------------------------------------------------


def _hsic_biased(gram_k: np.ndarray, gram_l: np.ndarray) -> float:
    """tr(K H L H), H = I - 11^T/n: the (unnormalised) HSIC of Gretton et al. 2005."""
    # H K H is K with its row and column means removed (and the grand mean added back)
    row_means = gram_k.mean(axis=1)
    centred = gram_k - row_means[None, :] - row_means[:, None] + row_means.mean()
    return float(np.sum(centred * gram_l))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA, HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), from Gram matrices.

    The Gram matrices are of the column-centred data: H K H of the raw Gram matrix is the same
    matrix, but forming X X^T first would cancel catastrophically for units with large means.
    """
    xc, yc = centre(x), centre(y)
    k, g = xc @ xc.T, yc @ yc.T  # K and L of the papers
    return _hsic_biased(k, g) / np.sqrt(_hsic_biased(k, k) * _hsic_biased(g, g))


def _hsic_unbiased(gram_k: np.ndarray, gram_l: np.ndarray) -> float:
    """Unbiased HSIC of Song, Smola, Gretton, Bedo & Borgwardt (2012), eq. (5).

    With K~, L~ the Gram matrices with zeroed diagonals::

        HSIC_1 = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))
    """
    n = gram_k.shape[0]
    k, g = gram_k.copy(), gram_l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(g, 0.0)
    k_rows, l_rows = k.sum(axis=0), g.sum(axis=0)
    trace_kl = float(np.sum(k * g))  # tr(K~ L~), both symmetric
    total = trace_kl + k_rows.sum() * l_rows.sum() / ((n - 1) * (n - 2))
    total -= 2.0 / (n - 2) * float(k_rows @ l_rows)
    return total / (n * (n - 3))


def debiased_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA with the unbiased HSIC, on the Gram matrices of the centred data."""
    xc, yc = centre(x), centre(y)
    k, g = xc @ xc.T, yc @ yc.T  # K and L of the papers
    return _hsic_unbiased(k, g) / np.sqrt(_hsic_unbiased(k, k) * _hsic_unbiased(g, g))


# ---------------------------------------------------------------------------------------------
# Canonical correlations by orthonormal bases (Bjorck & Golub 1973)
# ---------------------------------------------------------------------------------------------


def orthonormal_basis(a: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """Orthonormal basis (n x r) of the span of the centred, non-constant columns of ``a``.

    Columns are standardised first so that the rank cut does not depend on units' scales.
    """
    ac = centre(a)[:, varying_columns(a)]
    ac = ac / np.linalg.norm(ac, axis=0)
    u, s, _ = np.linalg.svd(ac, full_matrices=False)
    return u[:, s > rtol * s[0]]


def canonical_decomposition(
    x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations (descending) and the unit-norm canonical variates of x and y.

    With Qx, Qy orthonormal bases of the centred data, the SVD Qx^T Qy = U S V^T gives the
    correlations S and the variates Qx U, Qy V; there are min(rank X, rank Y) of them.
    """
    qx, qy = orthonormal_basis(x), orthonormal_basis(y)
    u, s, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return np.clip(s, 0.0, 1.0), qx @ u, qy @ vt.T


def canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """All canonical correlations, descending."""
    return canonical_decomposition(x, y)[0]


def mean_cca(x: np.ndarray, y: np.ndarray) -> float:
    """Mean canonical correlation (rho-bar of Raghu et al. 2017)."""
    return float(np.mean(canonical_correlations(x, y)))


def r2_cca(x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared canonical correlation (R^2_CCA of Kornblith et al. 2019)."""
    return float(np.mean(canonical_correlations(x, y) ** 2))


# ---------------------------------------------------------------------------------------------
# SVCCA (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017)
# ---------------------------------------------------------------------------------------------


def svd_reduce(a: np.ndarray, keep: float | int) -> np.ndarray:
    """The centred data projected on its top singular directions.

    ``keep`` an int: that many directions (at most the rank). A float: the smallest k whose
    squared singular values reach that fraction of their sum.
    """
    ac = centre(a)
    _, s, vt = np.linalg.svd(ac, full_matrices=False)
    # directions of (numerically) zero variance are not directions of the data: rounding noise
    # there would otherwise enter CCA as spurious uncorrelated directions
    rank = int(np.count_nonzero(s > RANK_RTOL * s[0]))
    if isinstance(keep, int | np.integer):
        k = min(int(keep), rank)
    else:
        share = np.cumsum(s**2) / np.sum(s**2)
        k = min(int(np.count_nonzero(share < keep)) + 1, rank)
    return ac @ vt[:k].T


def svcca(x: np.ndarray, y: np.ndarray, keep: float | int = 0.99) -> float:
    """Mean canonical correlation of the SVD-reduced data of each side."""
    return mean_cca(svd_reduce(x, keep), svd_reduce(y, keep))


# ---------------------------------------------------------------------------------------------
# PWCCA (Morcos, Raghu & Bengio 2018), as defined in the paper
# ---------------------------------------------------------------------------------------------


def pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """Projection-weighted mean of the canonical correlations.

    The side with fewer units (x on ties) gives the canonical variates h_i (unit norm);
    alpha_i = sum_j |<h_i, z_j>| over that side's centred units z_j; the result is
    sum_i alpha_i rho_i / sum_i alpha_i.
    """
    rho, hx, hy = canonical_decomposition(x, y)
    h, units = (hx, centre(x)) if x.shape[1] <= y.shape[1] else (hy, centre(y))
    alpha = np.abs(h.T @ units).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


# ---------------------------------------------------------------------------------------------
# Linear regression and orthogonal Procrustes (Kornblith et al. 2019, Table 1)
# ---------------------------------------------------------------------------------------------


def linear_regression(x: np.ndarray, y: np.ndarray) -> float:
    """1 - SS_res / SS_tot of a least-squares fit of y from x with an intercept, summed over
    y's units (scikit-learn's ``variance_weighted`` R^2)."""
    x, y = _as_float64(x), _as_float64(y)
    design = np.hstack([np.ones((x.shape[0], 1)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return 1.0 - float(np.sum(residual**2) / np.sum(centre(y) ** 2))


def procrustes(x: np.ndarray, y: np.ndarray) -> float:
    """Orthogonal Procrustes similarity ||X_c^T Y_c||_* / (||X_c||_F ||Y_c||_F)."""
    xc, yc = centre(x), centre(y)
    nuclear = np.linalg.svd(xc.T @ yc, compute_uv=False).sum()
    return float(nuclear / (np.linalg.norm(xc) * np.linalg.norm(yc)))


#: The metrics of ``dask_repsim.compare`` by name, as reference functions of (x, y).
METRICS = {
    "cka": linear_cka,
    "cka_debiased": debiased_linear_cka,
    "mean_cca": mean_cca,
    "r2_cca": r2_cca,
    "svcca": svcca,
    "pwcca": pwcca,
    "linear_regression": linear_regression,
    "procrustes": procrustes,
}


def matched_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Mean Pearson correlation of the one-to-one matching of units maximising its sum
    (Li et al. 2016), over the units that vary."""
    from scipy.optimize import linear_sum_assignment

    xc, yc = centre(x)[:, varying_columns(x)], centre(y)[:, varying_columns(y)]
    corr = (xc / np.linalg.norm(xc, axis=0)).T @ (yc / np.linalg.norm(yc, axis=0))
    rows, cols = linear_sum_assignment(corr, maximize=True)
    return float(corr[rows, cols].mean())


#: every metric of the registry, the eight above and the unit-matching one
ALL_METRICS = {**METRICS, "matched_correlation": matched_correlation}


def linear_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """tr(K H L H) / (n-1)^2 with linear kernels (Gretton et al. 2005)."""
    n = len(x)
    k, g = centre(x) @ centre(x).T, centre(y) @ centre(y).T
    return float(_hsic_biased(k, g) / (n - 1) ** 2)


def svcca_r2(x: np.ndarray, y: np.ndarray, keep: float | int = 0.99) -> float:
    """Mean squared canonical correlation of the SVD-reduced activations."""
    rho = canonical_correlations(svd_reduce(x, keep), svd_reduce(y, keep))
    return float(np.mean(rho**2))


def partially_whiten(a: np.ndarray, alpha: float) -> np.ndarray:
    """Williams et al. (2021) / netrep's partial whitening of centred data (variance kept):
    ``X Z``, ``Z = V diag(alpha + (1 - alpha) lambda^-1/2) V^T`` of ``X^T X``, eigenvalues
    clipped at 1e-7."""
    xc = centre(a)
    if alpha > 1 - 1e-7:
        return xc
    lam, v = np.linalg.eigh(xc.T @ xc)
    lam = np.maximum(lam, 1e-7)
    d = alpha + (1 - alpha) * lam**-0.5
    new_var = np.sum(alpha**2 * lam + 2 * alpha * (1 - alpha) * lam**0.5 + (1 - alpha) ** 2)
    d *= np.sqrt(lam.sum() / new_var)
    return xc @ ((v * d) @ v.T)


def shape_metric(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> float:
    """Angular distance after partial whitening, zero-padding the narrower side and the best
    rotation (orthogonal Procrustes, scipy) of one onto the other (Williams et al. 2021)."""
    from scipy.linalg import orthogonal_procrustes

    a, b = partially_whiten(x, alpha), partially_whiten(y, alpha)
    width = max(a.shape[1], b.shape[1])
    a = np.pad(a, ((0, 0), (0, width - a.shape[1])))
    b = np.pad(b, ((0, 0), (0, width - b.shape[1])))
    rotation, _ = orthogonal_procrustes(a, b)
    aligned = a @ rotation
    cosine = np.sum(aligned * b) / (np.linalg.norm(aligned) * np.linalg.norm(b))
    return float(np.arccos(np.clip(cosine, -1.0, 1.0)))


def cka_angular(x: np.ndarray, y: np.ndarray) -> float:
    """The angle between the centred Gram matrices: arccos of linear CKA."""
    return float(np.arccos(np.clip(linear_cka(x, y), -1.0, 1.0)))


def rbf_cka(x: np.ndarray, y: np.ndarray, sigma: float = 0.8) -> float:
    """Kornblith et al.'s ``gram_rbf``: exp(-D^2 / (2 sigma^2 median(D^2))), the median over
    all n^2 squared distances (zero diagonal included), then biased CKA of the two kernels."""

    def gram(a: np.ndarray) -> np.ndarray:
        g = centre(a) @ centre(a).T
        d = np.maximum(np.diag(g)[:, None] + np.diag(g)[None, :] - 2 * g, 0)
        np.fill_diagonal(d, 0)
        return np.exp(-d / (2 * sigma**2 * np.median(d)))

    k, g = gram(x), gram(y)
    return float(_hsic_biased(k, g) / np.sqrt(_hsic_biased(k, k) * _hsic_biased(g, g)))


def rsa_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """RSA (Kriegeskorte et al. 2008) with rsatoolbox's defaults: RDMs of 1 - Pearson
    correlation between samples, compared by the Pearson correlation of their upper
    triangles."""
    iu = np.triu_indices(len(x), 1)
    d1 = (1 - np.corrcoef(_as_float64(x)))[iu]
    d2 = (1 - np.corrcoef(_as_float64(y)))[iu]
    return float(np.corrcoef(d1, d2)[0, 1])


def _cosine_neighbours(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and each sample's k most similar others (ties: smaller index)."""
    u = _as_float64(a) / np.linalg.norm(_as_float64(a), axis=1, keepdims=True)
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(len(a)), s.shape), -s), axis=1)
    np.fill_diagonal(s, 1.0)
    return s, order[:, :k]


def _knn_masks(x: np.ndarray, y: np.ndarray, k: int) -> tuple:
    n = len(x)
    sx, ix = _cosine_neighbours(x, k)
    sy, iy = _cosine_neighbours(y, k)
    mx, my = np.zeros((n, n)), np.zeros((n, n))
    mx[np.arange(n)[:, None], ix] = 1.0
    my[np.arange(n)[:, None], iy] = 1.0
    return sx, sy, mx, my


def mutual_knn(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Huh et al. (2024): mean over samples of |N_x(i) & N_y(i)| / k."""
    _, _, mx, my = _knn_masks(x, y, k)
    return float(np.mean((mx * my).sum(axis=1) / k))


def ensd(x: np.ndarray, y: np.ndarray) -> float:
    """Giaffar et al. (2023)'s ENSD as the authors' code writes it for data centred per unit:
    PR(X) PR(Y) TR(X, Y), with the n x n Gram matrices K = X_c X_c^T and L = Y_c Y_c^T,
    PR = (tr K)^2 / tr(K K) and TR = tr((K / tr K)(L / tr L))."""
    k, g = centre(x) @ centre(x).T, centre(y) @ centre(y).T

    def pr(a: np.ndarray) -> float:
        return float(np.trace(a) ** 2 / np.trace(a @ a))

    return pr(k) * pr(g) * float(np.trace((k / np.trace(k)) @ (g / np.trace(g))))


def jaccard_knn(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """ReSi's jaccard_similarity (cosine neighbours): mean over samples of the Jaccard index
    |N_x(i) & N_y(i)| / |N_x(i) | N_y(i)| of the neighbour sets, as Python sets."""
    _, ix = _cosine_neighbours(x, k)
    _, iy = _cosine_neighbours(y, k)
    return float(np.mean([len(set(a) & set(b)) / len(set(a) | set(b))
                          for a, b in zip(ix.tolist(), iy.tolist(), strict=True)]))


def _rank_score(a: list[int], b: list[int]) -> float:
    """Wang et al. (2020), as ReSi's _rank_sim_i: for the shared neighbours j of two ranked
    lists, sum 2 / ((1 + |r_a - r_b|)(r_a + r_b)) (ranks from 1), over the harmonic number
    of their count; 0 when none is shared."""
    shared = set(a) & set(b)
    if not shared:
        return 0.0
    total = sum(2.0 / ((1 + abs(a.index(j) - b.index(j))) * (a.index(j) + b.index(j) + 2))
                for j in shared)
    return total / sum(1.0 / m for m in range(1, len(shared) + 1))


def rank_similarity(x: np.ndarray, y: np.ndarray, k: int = 10, joint: bool = False) -> float:
    """ReSi's rank_similarity (cosine neighbours); ``joint``: its
    joint_rank_jaccard_similarity, each sample's score times its Jaccard index."""
    _, ix = _cosine_neighbours(x, k)
    _, iy = _cosine_neighbours(y, k)
    scores = []
    for a, b in zip(ix.tolist(), iy.tolist(), strict=True):
        jaccard = len(set(a) & set(b)) / len(set(a) | set(b)) if joint else 1.0
        scores.append(_rank_score(a, b) * jaccard)
    return float(np.mean(scores))


def second_order_cosine(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Hamilton et al. (2016): for each sample, its cosine similarities in each layer to the
    union of its k nearest neighbours in the two layers, and the cosine of those two vectors,
    averaged (the union as a sorted Python set)."""
    sx, ix = _cosine_neighbours(x, k)
    sy, iy = _cosine_neighbours(y, k)
    values = []
    for i, (a, b) in enumerate(zip(ix.tolist(), iy.tolist(), strict=True)):
        union = sorted(set(a) | set(b))
        u, v = sx[i, union], sy[i, union]
        values.append(u @ v / np.sqrt((u @ u) * (v @ v)))
    return float(np.mean(values))


def joint_rank_jaccard(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    return rank_similarity(x, y, k, joint=True)


def cknna(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Huh et al. (2024), their code's cknna(unbiased=True) without its 1e-6: the unbiased
    HSIC (Song et al. 2012, eq. 5) of the cosine kernels masked by the shared neighbours."""
    n = len(x)
    sx, sy, mx, my = _knn_masks(x, y, k)

    def hsic(a: np.ndarray, b: np.ndarray) -> float:  # zero diagonals: masks exclude i
        return (np.sum(a * b.T) + a.sum() * b.sum() / ((n - 1) * (n - 2))
                - 2 * np.sum(a @ b) / (n - 2)) / (n * (n - 3))

    both = mx * my
    return float(hsic(both * sx, both * sy)
                 / np.sqrt(hsic(mx * sx, mx * sx) * hsic(my * sy, my * sy)))


def bures_distance(x: np.ndarray, y: np.ndarray) -> float:
    """``sqrt(tr K + tr L - 2 F)`` of the centred linear kernels per sample,
    ``K = X_c X_c^T / n``, ``L``, with the fidelity ``F = tr((K^1/2 L K^1/2)^1/2)`` from the
    n x n matrices' eigenvalues (Harvey, Lipshutz & Williams 2023)."""
    n = len(x)
    k, g = centre(x) @ centre(x).T / n, centre(y) @ centre(y).T / n
    w, v = np.linalg.eigh(k)
    w[w < RANK_RTOL * w.max()] = 0.0  # the kernels have rank <= p: the rest is rounding
    root = (v * np.sqrt(w)) @ v.T
    inner = root @ g @ root
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    fidelity = np.sqrt(values[values > RANK_RTOL * values.max()]).sum()
    return float(np.sqrt(max(np.trace(k) + np.trace(g) - 2 * fidelity, 0.0)))


def size_and_shape_distance(x: np.ndarray, y: np.ndarray) -> float:
    """``min_Q ||X_c - Y_c Q||_F / sqrt(n)`` over orthogonal Q, the narrower side zero-padded
    (Williams et al. 2021), with scipy's orthogonal Procrustes solution."""
    from scipy.linalg import orthogonal_procrustes

    width = max(x.shape[1], y.shape[1])
    xc, yc = (np.pad(centre(a), ((0, 0), (0, width - a.shape[1]))) for a in (x, y))
    q, _ = orthogonal_procrustes(yc, xc)
    return float(np.linalg.norm(xc - yc @ q) / np.sqrt(len(x)))


def permutation_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Williams et al. (2021) / netrep's permutation metric, angular score: centred columns,
    the narrower side zero-padded, units matched by ``linear_sum_assignment`` on ``X^T Y``,
    then ``arccos(<X P_x, Y P_y>_F / (||X||_F ||Y||_F))`` of the matched data."""
    from scipy.optimize import linear_sum_assignment

    width = max(x.shape[1], y.shape[1])
    xc, yc = (np.pad(centre(a), ((0, 0), (0, width - a.shape[1]))) for a in (x, y))
    rows, cols = linear_sum_assignment(xc.T @ yc, maximize=True)
    cosine = np.sum(xc[:, rows] * yc[:, cols]) / (np.linalg.norm(xc) * np.linalg.norm(yc))
    return float(np.arccos(np.clip(cosine, -1.0, 1.0)))


def eigenspace_overlap(x: np.ndarray, y: np.ndarray) -> float:
    """``||U_X^T U_Y||_F^2 / max(p, q)`` with U the left singular vectors of the activations as
    given (not centred) up to their rank (May et al. 2019)."""
    def span(a: np.ndarray) -> np.ndarray:
        a = _as_float64(a)
        return np.linalg.svd(a, full_matrices=False)[0][:, :np.linalg.matrix_rank(a)]

    return float(np.linalg.norm(span(x).T @ span(y)) ** 2 / max(x.shape[1], y.shape[1]))


def gulp(x: np.ndarray, y: np.ndarray, ridge: float = 0.0) -> float:
    """GULP (Boix-Adserà et al. 2022): each layer centred and scaled to ``||X||_F^2 = n``,
    ``Sigma = X^T X / n``, ``R = (Sigma + ridge I)^-1`` (the pseudo-inverse at 0), and
    ``sqrt(tr(R_x S_x R_x S_x) + tr(R_y S_y R_y S_y) - 2 tr(R_x S_xy R_y S_yx))``."""
    n = len(x)
    a, b = (np.sqrt(n) * centre(v) / np.linalg.norm(centre(v)) for v in (x, y))
    sa, sb, sab = a.T @ a / n, b.T @ b / n, a.T @ b / n

    def regularised_inverse(s: np.ndarray) -> np.ndarray:
        if ridge == 0:
            return np.linalg.pinv(s, rcond=RANK_RTOL, hermitian=True)
        return np.linalg.inv(s + ridge * np.eye(len(s)))

    ra, rb = regularised_inverse(sa), regularised_inverse(sb)
    squared = (np.trace(ra @ sa @ ra @ sa) + np.trace(rb @ sb @ rb @ sb)
               - 2 * np.trace(ra @ sab @ rb @ sab.T))
    return float(np.sqrt(max(squared, 0.0)))


def _distance_matrix(a: np.ndarray) -> np.ndarray:
    """Euclidean distances between all pairs of rows, from the differences themselves."""
    return np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(axis=2))


def distance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Székely, Rizzo & Bakirov (2007), the V-statistic: the double-centred distance matrices
    A = D - row means - column means + grand mean, dCov^2 = mean(A * B), and
    dCor = sqrt(dCov^2(x, y) / sqrt(dCov^2(x, x) dCov^2(y, y)))."""
    def centred(d: np.ndarray) -> np.ndarray:
        return d - d.mean(axis=0) - d.mean(axis=1)[:, None] + d.mean()

    a, b = centred(_distance_matrix(x)), centred(_distance_matrix(y))
    return float(np.sqrt(np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b))))


def magnitude_difference(x: np.ndarray, y: np.ndarray) -> float:
    """ReSi: | ||mean(X)|| - ||mean(Y)|| |, the norms of the mean rows."""
    return float(abs(np.linalg.norm(_as_float64(x).mean(axis=0))
                     - np.linalg.norm(_as_float64(y).mean(axis=0))))


def uniformity_difference(x: np.ndarray, y: np.ndarray) -> float:
    """ReSi after Wang & Isola (2020): |U(X) - U(Y)|, U = log(sum_ij exp(-2 d_ij^2) / n^2)
    over all ordered pairs (the diagonal included), d from the differences themselves."""
    def uniformity(a: np.ndarray) -> float:
        return float(np.log(np.exp(-2.0 * _distance_matrix(a) ** 2).sum() / len(a) ** 2))

    return abs(uniformity(_as_float64(x)) - uniformity(_as_float64(y)))


def concentricity_difference(x: np.ndarray, y: np.ndarray) -> float:
    """ReSi: |C(X) - C(Y)|, C the mean cosine of each row with the mean row (an all-zero row
    counting 0, as scikit-learn's cosine)."""
    def concentricity(a: np.ndarray) -> float:
        a = _as_float64(a)
        mean = a.mean(axis=0)
        norms = np.linalg.norm(a, axis=1)
        cos = np.zeros(len(a))
        cos[norms > 0] = a[norms > 0] @ mean / (norms[norms > 0] * np.linalg.norm(mean))
        return float(cos.mean())

    return abs(concentricity(x) - concentricity(y))


def aligned_cosine(x: np.ndarray, y: np.ndarray) -> float:
    """ReSi's aligned_cossim: the narrower layer padded with zero units, x rotated onto y by
    scipy's orthogonal Procrustes (raw activations), each row's cosine, averaged over the rows
    with a direction in both."""
    from scipy.linalg import orthogonal_procrustes

    x, y = _as_float64(x), _as_float64(y)
    width = max(x.shape[1], y.shape[1])
    x = np.pad(x, ((0, 0), (0, width - x.shape[1])))
    y = np.pad(y, ((0, 0), (0, width - y.shape[1])))
    rotated = x @ orthogonal_procrustes(x, y)[0]
    norms = np.linalg.norm(rotated, axis=1) * np.linalg.norm(y, axis=1)
    kept = norms > 0
    return float(np.mean(np.einsum("ij,ij->i", rotated[kept], y[kept]) / norms[kept]))


def disagreement(x: np.ndarray, y: np.ndarray) -> float:
    """ReSi: the share of rows whose argmax differs."""
    return float(np.mean(np.argmax(x, axis=1) != np.argmax(y, axis=1)))


def jensen_shannon(x: np.ndarray, y: np.ndarray) -> float:
    """The mean over rows of the Jensen-Shannon divergence (bits) of the softmax outputs, row by
    row as ReSi writes it: (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2, each KL a sum
    of p log(p / m) terms (0 where p is 0), in bits, clipped to [0, 1]."""
    from scipy.special import softmax

    out = []
    for p, q in zip(softmax(_as_float64(x), axis=1), softmax(_as_float64(y), axis=1),
                    strict=True):
        m = (p + q) / 2
        kl = [float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / m), 0.0)))
              for a in (p, q)]
        out.append(min(max((kl[0] + kl[1]) / 2 / np.log(2), 0.0), 1.0))
    return float(np.mean(out))


def rsm_norm_difference(x: np.ndarray, y: np.ndarray) -> float:
    """The Frobenius norm of the difference of the two n x n Euclidean distance matrices."""
    return float(np.linalg.norm(_distance_matrix(x) - _distance_matrix(y), "fro"))


ALL_METRICS.update(
    bures_distance=bures_distance, eigenspace_overlap=eigenspace_overlap, gulp=gulp,
    permutation_distance=permutation_distance,
    rsa=rsa_correlation, mutual_knn=mutual_knn, jaccard_knn=jaccard_knn, cknna=cknna,
    rank_similarity=rank_similarity, joint_rank_jaccard=joint_rank_jaccard, ensd=ensd,
    distance_correlation=distance_correlation, rsm_norm_difference=rsm_norm_difference,
    second_order_cosine=second_order_cosine, magnitude_difference=magnitude_difference,
    uniformity_difference=uniformity_difference,
    concentricity_difference=concentricity_difference, disagreement=disagreement,
    jensen_shannon=jensen_shannon, aligned_cosine=aligned_cosine,
    hsic=linear_hsic, svcca_r2=svcca_r2, shape_metric=shape_metric, cka_angular=cka_angular,
    cka_rbf=rbf_cka,
)


def laplace_cka(x: np.ndarray, y: np.ndarray, sigma: float = 0.8,
                medians: tuple[float, float] | None = None) -> float:
    """CKA (Kornblith et al. 2019, biased HSIC) of the Laplace kernels
    exp(-||a_i - a_j|| / (sigma m)), m^2 the median of all n^2 squared distances of the layer,
    zero diagonal included (``gram_rbf``'s median), or ``medians`` (m_x^2, m_y^2) when given;
    distances from the differences. Each kernel is taken less 1 (``expm1``), which centring
    ignores: for large sigma the kernel is 1 less small deviations, which ``exp`` would round."""

    def gram(a: np.ndarray, median: float | None) -> np.ndarray:
        d = _distance_matrix(_as_float64(a))
        return np.expm1(-d / (sigma * np.sqrt(np.median(d**2) if median is None else median)))

    k, g = (gram(a, m) for a, m in zip((x, y), medians or (None, None), strict=True))
    return float(_hsic_biased(k, g) / np.sqrt(_hsic_biased(k, k) * _hsic_biased(g, g)))


ALL_METRICS["cka_laplace"] = laplace_cka


def rips_h1_length(m: np.ndarray) -> float:
    """The summed lengths of the one-dimensional bars of the Rips filtration of the distance
    matrix ``m`` (Z/2 coefficients), by ripser. Ripser compares float32 values, so it is given
    the ranks of the entries (integers, exact in float32 below 2**24 distinct values; the same
    order and ties as the float64 entries, so the same pairs), and each bar's ends are mapped
    back to the float64 entries."""
    from ripser import ripser

    values, ranks = np.unique(m, return_inverse=True)
    assert len(values) < 2**24
    bars = ripser(ranks.reshape(m.shape).astype(np.float32), maxdim=1,
                  distance_matrix=True)["dgms"][1].astype(np.int64)
    return float(np.sum(values[bars[:, 1]] - values[bars[:, 0]]))


def rtd_matrix(first: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The R-Cross-Barcode's 2n x 2n matrix ``[[0, first], [first, min(first, other)]]`` of two
    normalised distance matrices (Barannikov et al. 2022; the authors' ``calc_embed_dist``)."""
    n = len(first)
    m = np.zeros((2 * n, 2 * n))
    m[n:, :n] = first
    m[:n, n:] = first.T
    m[n:, n:] = np.minimum(first, other)
    return m


def rtd(x: np.ndarray, y: np.ndarray, h1_length=rips_h1_length) -> float:
    """Representation Topology Divergence, the authors' ``rtd1``: each layer's Euclidean
    distances divided by their 0.9 quantile (all n^2 entries), then ``(H1(m(x, y)) + H1(m(y,
    x))) / 2`` with ``H1`` the summed bar lengths (``h1_length``) of :func:`rtd_matrix`."""
    r = []
    for a in (_as_float64(x), _as_float64(y)):
        d = np.sqrt(np.sum((a[:, None, :] - a[None, :, :]) ** 2, axis=-1))
        r.append(d / np.quantile(d, 0.9))
    return (h1_length(rtd_matrix(r[0], r[1])) + h1_length(rtd_matrix(r[1], r[0]))) / 2


ALL_METRICS["rtd"] = rtd


def max_statistic_pvalues(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Westfall & Young's single-step max-T p-values: each cell standardised by the mean and
    standard deviation of its observed and null values, compared with the largest
    standardised null value of every permutation."""
    every = np.concatenate([observed[None], null])
    mean, sd = every.mean(axis=0), every.std(axis=0, ddof=1)
    t, t_null = (observed - mean) / sd, (null - mean) / sd
    largest = t_null.reshape(len(null), -1).max(axis=1)
    return np.array([(1 + np.sum(largest >= v - 1e-9)) / (len(null) + 1)
                     for v in t.ravel()]).reshape(t.shape)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini & Hochberg's adjusted p-values: min over j >= rank of m p_(j) / j."""
    flat = p.ravel()
    order = np.argsort(flat)
    m = len(flat)
    adjusted = np.minimum(1.0, np.minimum.accumulate((m * flat[order] / np.arange(1, m + 1))
                                                     [::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    return out.reshape(p.shape)


def fold_bounds(n: int, folds: int) -> np.ndarray:
    """First sample of each of ``folds`` contiguous folds, and ``n``: fold g holds the samples
    from round(g n / k) up to round((g + 1) n / k)."""
    return np.rint(np.arange(folds + 1) * n / folds).astype(int)


def ridge_fit(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, intercept) of ridge regression with intercept on the rows given: ``(X_c^T X_c +
    ridge ||X_c||_F^2 I)^-1 X_c^T Y_c``, the minimum-norm least-squares fit at ``ridge = 0``
    (singular values of ``X_c`` at most ``sqrt(RANK_RTOL)`` times the largest taken as 0: the
    rounding of centring activations offset far from 0)."""
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - xm, y - ym
    if ridge == 0:
        b = np.linalg.lstsq(xc, yc, rcond=np.sqrt(RANK_RTOL))[0]
    else:
        b = np.linalg.solve(xc.T @ xc + ridge * np.sum(xc**2) * np.eye(x.shape[1]), xc.T @ yc)
    return b, ym - xm @ b


def golub_gcv(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> float:
    """The penalty of ``grid`` (relative to ``||X_c||_F^2``) minimising Golub, Heath & Wahba's
    GCV ``n ||(I - A) y||^2 / tr(I - A)^2`` summed over y's columns, with the hat matrix
    ``A = 11^T / n + K (K + lambda I)^-1`` of the ridge fit with intercept (``K = X_c X_c^T``,
    ``lambda`` the relative penalty times ``tr K``), in the eigenbasis of K: ``K (K + lambda
    I)^-1 = U diag(e / (e + lambda)) U^T``."""
    n = len(x)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    k = xc @ xc.T
    e, u = np.linalg.eigh(k)
    e = np.clip(e, 0, None)
    z = np.sum((u.T @ yc) ** 2, axis=1)
    scores = []
    for ridge in grid:
        shrink = ridge * np.trace(k) / (e + ridge * np.trace(k))  # I - hat, eigenvalues
        rss = np.sum(shrink**2 * z)
        scores.append(n * rss / (n - 1 - np.sum(1 - shrink)) ** 2)
    return float(grid[int(np.argmin(scores))])


def pls_fit(x: np.ndarray, y: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, intercept) of PLS2 regression (NIPALS, regression deflation, no scaling) on the
    rows given: w the first left singular vector of ``X_k^T Y_k``, ``t = X_k w``, ``p = X_k^T t
    / t^T t``, ``q = Y_k^T t / t^T t``, ``X_k+1 = X_k - t p^T``, ``Y_k+1 = Y_k - t q^T``,
    ``B = W (P^T W)^-1 Q^T``."""
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xk, yk = x - xm, y - ym
    w_, p_, q_ = [], [], []
    for _ in range(components):
        w = np.linalg.svd(xk.T @ yk)[0][:, 0]
        t = xk @ w
        p, q = xk.T @ t / (t @ t), yk.T @ t / (t @ t)
        xk, yk = xk - np.outer(t, p), yk - np.outer(t, q)
        w_.append(w)
        p_.append(p)
        q_.append(q)
    w, p, q = (np.column_stack(a) for a in (w_, p_, q_))
    b = w @ np.linalg.inv(p.T @ w) @ q.T
    return b, ym - xm @ b


def kfold_predictivity(x: np.ndarray, y: np.ndarray, fit, folds: int = 10,
                       labels: np.ndarray | None = None) -> float:
    """Brain-Score's CrossRegressedCorrelation over contiguous folds: ``fit(x_train, y_train)
    -> (B, intercept)`` on all folds but one, each unit's Pearson r (``np.corrcoef``) between
    prediction and truth on the held-out fold, the median over units, the mean over folds.
    ``labels``: each sample's fold (0 .. folds - 1), instead of contiguous folds; a fold
    without samples is left out of the mean."""
    if labels is None:
        labels = np.repeat(np.arange(folds), np.diff(fold_bounds(len(x), folds)))
    medians = []
    for g in range(folds):
        test = labels == g
        if not test.any():
            continue
        b, intercept = fit(x[~test], y[~test])
        predicted = x[test] @ b + intercept
        r = [np.corrcoef(predicted[:, u], y[test][:, u])[0, 1] for u in range(y.shape[1])]
        medians.append(np.median(r))
    return float(np.mean(medians))


def ridge_predictivity(x: np.ndarray, y: np.ndarray, folds: int = 10,
                       ridge: float | None = None, labels: np.ndarray | None = None) -> float:
    """:func:`kfold_predictivity` of :func:`ridge_fit`, the penalty chosen on each training set
    by :func:`golub_gcv` over ``numpy.logspace(-8, 2, 41)`` when not given."""
    grid = np.logspace(-8, 2, 41)

    def fit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ridge_fit(a, b, golub_gcv(a, b, grid) if ridge is None else ridge)

    return kfold_predictivity(x, y, fit, folds, labels)


def pls_predictivity(x: np.ndarray, y: np.ndarray, folds: int = 10,
                     components: int | None = None, labels: np.ndarray | None = None) -> float:
    """:func:`kfold_predictivity` of :func:`pls_fit`, with 25 components or, when fewer, the
    rank of each training set's centred x (singular values above ``sqrt(RANK_RTOL)`` times the
    largest)."""
    def fit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        singular = np.linalg.svd(a - a.mean(axis=0), compute_uv=False)
        rank = int(np.sum(singular > np.sqrt(RANK_RTOL) * singular[0]))
        return pls_fit(a, b, min(25, rank) if components is None else components)

    return kfold_predictivity(x, y, fit, folds, labels)


ALL_METRICS.update(ridge_predictivity=ridge_predictivity, pls_predictivity=pls_predictivity)
