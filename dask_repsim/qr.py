"""The CCA family from a tall-skinny QR factor: for ill-conditioned layers.

The co-moment route (:mod:`dask_repsim.cca`) whitens ``M = X_c^T X_c``, whose condition number
is the square of the data's: directions of the data below about 1e-8 of the largest are lost to
rounding there. Here each chunk of rows of ``Z = [X | Y]`` is centred with its own mean and
reduced to its R factor (``numpy.linalg.qr``); R factors merge up a Dask tree (Demmel, Grigori,
Hoemmen & Langou 2012), only R and the means travelling. The merge of parts with counts n_i and
means m_i stacks ``[R_1; ...; R_k; sqrt(n_1) (m_1 - m); ...; sqrt(n_k) (m_k - m)]`` and takes
its R factor: ``R^T R`` is then Chan, Golub & LeVeque's merged co-moment, but the matrix
itself never squares the condition number.

The final R (upper triangular) is ``Z_c = Q R`` for an orthonormal Q that is never formed. With
``A = R[:, :p]`` and ``B = R[:, p:]``, ``X_c = Q A`` and ``Y_c = Q B``: every measure of the CCA
family is a function of the column spaces of A and B (Bjorck & Golub 1973), computed by SVDs of
A and B, not of ``A^T A``. The R factor is the ``[[r11, r1x, r1y], [0, Rxx, Rxy], [0, 0, Ryy]]``
factor of ``[1 | X | Y]`` with the intercept row eliminated.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .cca import CCAResult
from .exceptions import RepsimWarning
from .inputs import Layer
from .linalg import svd
from .parallel import compute
from .statistics import CONSTANT_RTOL, SPLIT_EVERY, _slices, row_block_reduction

#: After standardising units, singular values of the data below this fraction of the largest
#: are taken as exact collinearity. Singular values, not variances: 1e-12 here keeps directions
#: the co-moment route (1e-10 of the variance, i.e. 1e-5 of the singular value) must drop.
RANK_RTOL = 1e-12


@dataclass(frozen=True)
class RFactor:
    """Count, column means and the R factor of the centred joint array of several layers.

    ``r.T @ r`` equals the centred co-moment matrix; ``r`` has ``min(n, P)`` rows.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(50, 3))
    >>> a, b = RFactor.from_chunk([z[:20]]), RFactor.from_chunk([z[20:]])
    >>> m = RFactor.merge(a, b)
    >>> bool(np.allclose(m.r.T @ m.r, np.cov(z.T) * 49))
    True
    """

    sizes: tuple[int, ...]
    count: int
    mean: np.ndarray
    r: np.ndarray

    @property
    def slices(self) -> list[slice]:
        """Column slice of each layer."""
        return _slices(self.sizes)

    @classmethod
    def from_chunk(cls, blocks: Sequence[np.ndarray]) -> RFactor:
        """The factor of one chunk of rows, given each layer's block of it."""
        sizes = tuple(int(np.prod(b.shape[1:])) for b in blocks)
        z = np.hstack([np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1) for b in blocks])
        if not np.isfinite(z).all():
            raise ValueError("the QR path needs finite activations: a chunk has NaN or Inf")
        mean = z.mean(axis=0)
        return cls(sizes, int(z.shape[0]), mean, np.linalg.qr(z - mean, mode="r"))

    @staticmethod
    def merge(*parts: RFactor) -> RFactor:
        """The factor of the union of disjoint sets of samples."""
        parts = tuple(p for p in parts if p.count > 0)
        count = sum(p.count for p in parts)
        mean = sum(p.count * p.mean for p in parts) / count
        rows = [p.r for p in parts] + [np.sqrt(p.count) * (p.mean - mean)[None] for p in parts]
        r = np.linalg.qr(np.vstack(rows), mode="r")
        return RFactor(parts[0].sizes, count, mean, r)


def _chunk(offset: int, *blocks: np.ndarray) -> RFactor:
    return RFactor.from_chunk(blocks)


def tsqr(layers: Sequence[Layer], *, split_every: int = SPLIT_EVERY) -> RFactor:
    """The :class:`RFactor` of the layers side by side, by a Dask tree of chunk QRs.

    Every chunk of every array is read once; a task holds one row chunk of all layers and
    returns an R factor of at most ``P x P`` (P the total number of features).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(1000, 4))
    >>> f = tsqr([as_layer(x.astype("float32"))])
    >>> f.count, f.r.shape
    (1000, (4, 4))
    """
    graph = row_block_reduction(
        layers, _chunk, RFactor.merge, name="repsim-qr", split_every=split_every
    )
    (factor,) = compute(graph)
    return factor


# ------------------------------------------------------------------------------- measures


@dataclass(frozen=True)
class _Span:
    """One layer's centred data in Q coordinates, ``X_c = Q a``, and an orthonormal basis."""

    name: str
    a: np.ndarray  # (k, p)
    basis: np.ndarray  # (k, r), orthonormal, spans the columns of a


def _span(factor: RFactor, index: int, name: str, rank_rtol: float) -> _Span:
    s = factor.slices[index]
    a = factor.r[:, s]
    norms = np.linalg.norm(a, axis=0)  # each unit's centred root sum of squares
    mean = factor.mean[s]
    constant = (norms <= CONSTANT_RTOL * np.abs(mean) * np.sqrt(factor.count)) | (norms == 0)
    if constant.all():
        raise ValueError(
            f"{name} has no variance: all {a.shape[1]} units are constant over the "
            f"{factor.count} samples"
        )
    if constant.any():
        warnings.warn(
            f"{name}: {int(constant.sum())} of {a.shape[1]} units are constant over the samples "
            "and are left out of CCA-family measures",
            RepsimWarning,
            stacklevel=4,
        )
    kept = ~constant
    u, sv, _ = svd(a[:, kept] / norms[kept])
    return _Span(name, a, u[:, sv > rank_rtol * sv[0]])


def _spans(factor: RFactor, names: Sequence[str], rank_rtol: float) -> tuple[_Span, _Span]:
    if len(factor.sizes) != 2:
        raise ValueError(f"expected the factor of two layers, got {len(factor.sizes)}")
    return _span(factor, 0, names[0], rank_rtol), _span(factor, 1, names[1], rank_rtol)


def _angles(bx: np.ndarray, by: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = svd(bx.T @ by)
    return np.clip(s, 0.0, 1.0), u, vt.T


def canonical_correlations_from_r(
    factor: RFactor, names: Sequence[str] = ("x", "y"), *, rank_rtol: float = RANK_RTOL
) -> CCAResult:
    """Canonical correlations of the two layers of ``factor``: the cosines of the principal
    angles between the column spaces of ``A`` and ``B`` (Bjorck & Golub 1973).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(500, 3))
    >>> f = tsqr([as_layer(x), as_layer(x @ np.diag([1.0, 1e-6, 1e6]), name="y")])
    >>> np.round(canonical_correlations_from_r(f).rho, 9)
    array([1., 1., 1.])
    """
    sx, sy = _spans(factor, names, rank_rtol)
    return CCAResult(_angles(sx.basis, sy.basis)[0])


def cca(x: Layer, y: Layer, *, rank_rtol: float = RANK_RTOL) -> CCAResult:
    """All canonical correlations of two layers from their TSQR factor.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.inputs.as_layer`) with the same samples.
    rank_rtol
        After standardising units, singular values of the centred data below this fraction of
        the largest are taken as exact collinearity.

    Returns
    -------
    CCAResult
        As :func:`dask_repsim.cca`.

    Notes
    -----
    Accurate to about ``eps * cond(X_c)`` where the co-moment route gives
    ``eps * cond(X_c)^2``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 4))
    >>> np.round(cca(as_layer(x), as_layer(x @ rng.normal(size=(4, 4)) + 5, name="y")).rho, 6)
    array([1., 1., 1., 1.])
    """
    return canonical_correlations_from_r(tsqr([x, y]), (x.name, y.name), rank_rtol=rank_rtol)


def _top_basis(span: _Span, keep: float | int, spectrum: str, rank_rtol: float) -> np.ndarray:
    """Orthonormal basis (Q coordinates) of the projections on the top singular directions."""
    u, s, _ = svd(span.a)
    good = s > rank_rtol * s[0]
    u, s = u[:, good], s[good]
    if isinstance(keep, int | np.integer) and not isinstance(keep, bool):
        if keep < 1:
            raise ValueError(f"keep must be >= 1 directions, not {keep}")
        k = min(int(keep), len(s))
    else:
        if not 0 < keep <= 1:
            raise ValueError(f"keep as a fraction of variance must be in (0, 1], not {keep}")
        weights = s**2 if spectrum == "variance" else s
        share = np.cumsum(weights) / weights.sum()
        k = int(np.searchsorted(share, keep * (1 - 1e-12))) + 1
    return u[:, :k]


def svcca_from_r(
    factor: RFactor,
    names: Sequence[str] = ("x", "y"),
    *,
    keep: float | int = 0.99,
    spectrum: str = "variance",
    rank_rtol: float = RANK_RTOL,
) -> float:
    """SVCCA (Raghu et al. 2017) of the two layers of ``factor``; see :func:`svcca`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(500, 3)) * [10.0, 1.0, 1e-3]
    >>> round(svcca_from_r(tsqr([as_layer(x), as_layer(2 * x, name="y")]), keep=2), 6)
    1.0
    """
    if spectrum not in ("variance", "singular_values"):
        raise ValueError(f"spectrum must be 'variance' or 'singular_values', not {spectrum!r}")
    sx, sy = _spans(factor, names, rank_rtol)
    bx = _top_basis(sx, keep, spectrum, rank_rtol)
    by = _top_basis(sy, keep, spectrum, rank_rtol)
    return float(np.mean(_angles(bx, by)[0]))


def svcca(
    x: Layer,
    y: Layer,
    *,
    keep: float | int = 0.99,
    spectrum: str = "variance",
    rank_rtol: float = RANK_RTOL,
) -> float:
    """SVCCA from the TSQR factor: CCA between each side's top singular directions.

    The singular directions of ``X_c = Q A`` are those of A, so the projections
    ``X_c V_k = Q U_k S_k`` have the orthonormal basis ``U_k`` in Q coordinates. ``keep`` and
    ``spectrum`` as in :func:`dask_repsim.svcca` (centred data).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.normal(size=(2000, 3)) * [10.0, 5.0, 3.0]
    >>> x = np.hstack([signal, rng.normal(size=(2000, 5)) * 0.01])
    >>> y = np.hstack([signal @ rng.normal(size=(3, 3)), rng.normal(size=(2000, 5)) * 0.01])
    >>> round(svcca(as_layer(x), as_layer(y, name="y"), keep=0.99), 4)
    1.0
    """
    return svcca_from_r(
        tsqr([x, y]), (x.name, y.name), keep=keep, spectrum=spectrum, rank_rtol=rank_rtol
    )


def pwcca_from_r(
    factor: RFactor, names: Sequence[str] = ("x", "y"), *, rank_rtol: float = RANK_RTOL
) -> float:
    """PWCCA (Morcos et al. 2018, paper definition) of the two layers of ``factor``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(500, 3))
    >>> round(pwcca_from_r(tsqr([as_layer(x), as_layer(x[:, ::-1], name="y")])), 6)
    1.0
    """
    sx, sy = _spans(factor, names, rank_rtol)
    rho, u, v = _angles(sx.basis, sy.basis)
    use_x = sx.a.shape[1] <= sy.a.shape[1]
    span, rotation = (sx, u) if use_x else (sy, v)
    h = span.basis @ rotation[:, : len(rho)]  # canonical variates, unit norm, Q coordinates
    alpha = np.abs(h.T @ span.a).sum(axis=1)  # sum_j |<h_i, x_j>| over centred units
    return float(alpha @ rho / alpha.sum())


def pwcca(x: Layer, y: Layer, *, rank_rtol: float = RANK_RTOL) -> float:
    """Projection-weighted CCA from the TSQR factor (paper definition, as
    :func:`dask_repsim.pwcca`).

    The canonical variates of the side with fewer units (x on ties) are ``h_i = Q U u_i``
    with U its orthonormal basis, and its centred units are the columns of ``Q A``, so
    ``alpha_i = sum_j |(U u_i)^T A_j|``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 5))
    >>> round(pwcca(as_layer(x), as_layer(x @ rng.normal(size=(5, 5)), name="y")), 6)
    1.0
    """
    return pwcca_from_r(tsqr([x, y]), (x.name, y.name), rank_rtol=rank_rtol)


def linear_regression_from_r(
    factor: RFactor, names: Sequence[str] = ("x", "y"), *, rank_rtol: float = RANK_RTOL
) -> float:
    """Fraction of y's variance explained by a least-squares fit from x; see
    :func:`linear_regression`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(500, 2))
    >>> y = np.hstack([x, np.random.default_rng(1).normal(size=(500, 2))])
    >>> round(linear_regression_from_r(tsqr([as_layer(x), as_layer(y, name="y")])), 1)
    0.5
    """
    sx, sy = _spans(factor, names, rank_rtol)
    return float(np.sum((sx.basis.T @ sy.a) ** 2) / np.sum(sy.a**2))


def linear_regression(x: Layer, y: Layer, *, rank_rtol: float = RANK_RTOL) -> float:
    """Linear-regression R^2 of y from x (with intercept) from the TSQR factor.

    With ``X_c = Q A`` and ``Y_c = Q B`` the fitted values are the projection of B on the
    column space of A: ``R^2 = ||U_A^T B||_F^2 / ||B||_F^2`` (U_A an orthonormal basis of A).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 3))
    >>> y = np.hstack([x, rng.normal(size=(1000, 3))])
    >>> round(linear_regression(as_layer(x), as_layer(y, name="y")), 2)
    0.5
    """
    return linear_regression_from_r(tsqr([x, y]), (x.name, y.name), rank_rtol=rank_rtol)
