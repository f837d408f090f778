"""The CCA family from a tall-skinny QR factor: for ill-conditioned layers.

The co-moment route (:mod:`dask_repsim.measures.cca`) whitens ``M = X_c^T X_c``, whose condition
number is the square of the data's: directions of the data below about 1e-8 of the largest are lost
to rounding there. Here each chunk of rows of ``Z = [X | Y]`` is centred with its own mean and
reduced to its R factor (``numpy.linalg.qr``); R factors merge up a Dask tree (Demmel, Grigori,
Hoemmen & Langou 2012), only R and the means travelling. The merge of parts with counts n_i and
means m_i stacks ``[R_1; ...; R_k; sqrt(n_1) (m_1 - m); ...; sqrt(n_k) (m_k - m)]`` and takes its R
factor: ``R^T R`` is then Chan, Golub & LeVeque's merged co-moment, but the matrix itself never
squares the condition number.

The final R (upper triangular) is ``Z_c = Q R`` for an orthonormal Q that is never formed (the
factor of ``[1 | X | Y]`` with the intercept row eliminated). With ``A = R[:, :p]`` and
``B = R[:, p:]``, ``X_c = Q A`` and ``Y_c = Q B``: every measure of the CCA family is a function
of the column spaces of A and B (Bjorck & Golub 1973), computed by SVDs of A and B, not of
``A^T A``, so accurate to about ``eps * cond(X_c)`` where the co-moment route gives
``eps * cond(X_c)^2``. Input rules are those of :mod:`dask_repsim.io.validation`, as on every path.

Jackknife intervals (delete-a-group, as on the co-moment path): with ``groups=G`` the pass keeps
one R factor per contiguous group of samples (:func:`~dask_repsim.engine.stream.group_bounds`,
the groups of every path, whatever the chunking: a row block that straddles a bound is split
there), each merged up the tree with its own group's parts only (:func:`grouped_tsqr`). The
total is the merge of the G groups' factors, and replicate g the merge of every group but g, by
prefix and suffix merges (:func:`leave_one_out`): a QR of stacked R factors, never a
subtraction or a downdate, so a replicate is as accurate as the factor of the kept samples
computed afresh. Each measure is then its function of that factor. Without an interval the
pass is one group, the same arithmetic as before intervals existed.

Permutation tests (``permutations=K``): a permutation P of y's samples leaves each layer's
own span, basis and units as they are, and every measure here is a function of those and of
``H_x^T H_y``, the product of the two layers' orthonormal bases as samples
(:class:`QRPair`). So the null needs ``H_x^T P_k H_y`` only: one more pass turns each row block
of a layer into its basis, ``H = X_c[:, units] @ transform`` (:func:`basis_layer`; rounding
about ``eps * cond(X_c)``, as the factor's), and the co-moment engine sums the permuted cross
products of those bases with the permutations, blocks and seed of every other path's null
(:func:`permuted_crosses`). The R factor of ``[X | P Y]`` is never needed, and the null is that
of the values computed here, not of the co-moment path's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..engine import uncertainty
from ..engine.memory import check_permutations, least_budget
from ..engine.moments import column_slices
from ..engine.parallel import client_blas, compute
from ..engine.reduction import SPLIT_EVERY
from ..engine.stream import group_bounds, pass_statistics, row_block_reduction
from ..exceptions import RepsimWarning, quietly
from ..io.inputs import Layer
from ..io.validation import check_sample_counts, constant_units, first_nonfinite, no_variance_error
from ..measures.linalg import svd
from ..results import CCAResult, Cell, Cells, Estimate, Positions, grid_cells

#: Rank cut-off of the QR path, on singular values (not their squares). After standardising a
#: layer's varying units, singular values of its R columns below this fraction of the largest
#: are exact collinearity (duplicated units, sums of units). Float64 rounding leaves such
#: directions near 1e-16 to 1e-14 of the largest singular value, since R has the data's
#: condition number, not its square; 1e-12 is above that and keeps every direction the QR path
#: is there to resolve. The co-moment path's ``statistics.RANK_RTOL`` (1e-10) is a cut-off on
#: eigenvalues of the correlation matrix, i.e. on squared singular values (1e-5 of the largest
#: singular value), because the co-moment matrix squares the rounding too.
SINGULAR_RTOL = 1e-12


@dataclass(frozen=True)
class RFactor:
    """Count, column means and the R factor of the centred joint array of several layers.

    ``r.T @ r`` equals the centred co-moment matrix; ``r`` has ``min(n, P)`` rows. Rows holding
    NaN or Inf are left out of it and recorded per layer: ``first_nonfinite`` (the first such
    sample, -1 for none) and ``nonfinite_is_nan`` (whether that sample holds a NaN).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(50, 3))
    >>> a, b = RFactor.from_chunk([z[:20]]), RFactor.from_chunk([z[20:]], offset=20)
    >>> m = RFactor.merge(a, b)
    >>> bool(np.allclose(m.r.T @ m.r, np.cov(z.T) * 49))
    True
    >>> z[30, 1] = np.nan
    >>> RFactor.merge(a, RFactor.from_chunk([z[20:]], offset=20)).first_nonfinite
    array([30])
    """

    sizes: tuple[int, ...]
    count: int
    mean: np.ndarray
    r: np.ndarray
    first_nonfinite: np.ndarray | None = field(default=None, repr=False)
    nonfinite_is_nan: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.first_nonfinite is None:
            object.__setattr__(self, "first_nonfinite", np.full(len(self.sizes), -1, np.int64))
        if self.nonfinite_is_nan is None:
            object.__setattr__(self, "nonfinite_is_nan", np.zeros(len(self.sizes), dtype=bool))

    @property
    def slices(self) -> list[slice]:
        """Column slice of each layer."""
        return column_slices(self.sizes)

    def select(self, a: int, b: int) -> RFactor:
        """The factor of layers ``a`` and ``b`` alone: ``X_c = Q R[:, a]`` for every layer with
        one Q, so a pair's columns of R are a factor of that pair."""
        sa, sb = self.slices[a], self.slices[b]
        return RFactor(
            (self.sizes[a], self.sizes[b]), self.count,
            np.concatenate([self.mean[sa], self.mean[sb]]),
            np.hstack([self.r[:, sa], self.r[:, sb]]),
        )

    @classmethod
    def from_chunk(cls, blocks: Sequence[np.ndarray], offset: int = 0) -> RFactor:
        """The factor of one chunk of rows (starting at sample ``offset``), given each layer's
        block of it; rows with NaN or Inf are recorded and left out."""
        sizes = tuple(int(np.prod(b.shape[1:])) for b in blocks)
        z = np.hstack([np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1) for b in blocks])
        first = np.full(len(blocks), -1, dtype=np.int64)
        is_nan = np.zeros(len(blocks), dtype=bool)
        mean = z.mean(axis=0)
        if not np.isfinite(mean).all():  # NaN or Inf somewhere (or an overflowing sum)
            finite = np.ones(z.shape[0], dtype=bool)
            for i, s in enumerate(column_slices(sizes)):
                ok = np.isfinite(z[:, s]).all(axis=1)
                if not ok.all():
                    row = int(np.argmin(ok))
                    first[i], is_nan[i] = offset + row, bool(np.isnan(z[row, s]).any())
                finite &= ok
            z = z[finite]
            mean = z.mean(axis=0) if len(z) else np.zeros(z.shape[1])
        r = np.linalg.qr(z - mean, mode="r")
        return cls(sizes, int(z.shape[0]), mean, r, first, is_nan)

    @staticmethod
    def merge(*parts: RFactor) -> RFactor:
        """The factor of the union of disjoint sets of samples; the earliest non-finite sample
        of each layer wins."""
        first = np.stack([p.first_nonfinite for p in parts])
        is_nan = np.stack([p.nonfinite_is_nan for p in parts])
        winner = np.where(first < 0, np.iinfo(np.int64).max, first).argmin(axis=0)[None]
        first, is_nan = (np.take_along_axis(v, winner, axis=0)[0] for v in (first, is_nan))
        sizes = parts[0].sizes
        parts = tuple(p for p in parts if p.count > 0)
        if not parts:
            width = sum(sizes)
            return RFactor(sizes, 0, np.zeros(width), np.zeros((0, width)), first, is_nan)
        count = sum(p.count for p in parts)
        mean = sum(p.count * p.mean for p in parts) / count
        rows = [p.r for p in parts] + [np.sqrt(p.count) * (p.mean - mean)[None] for p in parts]
        r = np.linalg.qr(np.vstack(rows), mode="r")
        return RFactor(sizes, count, mean, r, first, is_nan)


def _chunk(offset: int, bounds: tuple[int, ...], *blocks: np.ndarray) -> dict[int, RFactor]:
    """The factors of one row block starting at sample ``offset``: one per sample group it
    overlaps (``bounds``: :func:`~dask_repsim.engine.stream.group_bounds`), the block split at
    the groups' bounds. With one group, the factor of the whole block."""
    out: dict[int, RFactor] = {}
    start, stop_all = offset, offset + blocks[0].shape[0]
    group = int(np.searchsorted(bounds, offset, side="right")) - 1
    while start < stop_all:
        stop = min(int(bounds[group + 1]), stop_all)
        out[group] = RFactor.from_chunk([b[start - offset : stop - offset] for b in blocks], start)
        start, group = stop, group + 1
    return out


def merge_groups(*parts: dict[int, RFactor]) -> dict[int, RFactor]:
    """Each sample group's factor merged over ``parts`` (consecutive ranges of samples, each a
    dict of group -> factor): the groups stay apart.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(30, 2))
    >>> a, b = _chunk(0, (0, 15, 30), z[:20]), _chunk(20, (0, 15, 30), z[20:])
    >>> m = merge_groups(a, b)
    >>> sorted(m), [m[g].count for g in m]
    ([0, 1], [15, 15])
    """
    keys = sorted({g for part in parts for g in part})
    return {g: RFactor.merge(*(part[g] for part in parts if g in part)) for g in keys}


def leave_one_out(parts: Sequence[RFactor]) -> list[RFactor]:
    """The factor of all groups but one, for each group, by prefix and suffix merges
    (:func:`dask_repsim.engine.uncertainty.leave_one_out` of :meth:`RFactor.merge`): about 3 G
    merges of stacked R factors in all.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(30, 2))
    >>> parts = [RFactor.from_chunk([z[i : i + 10]], i) for i in (0, 10, 20)]
    >>> out = leave_one_out(parts)
    >>> [f.count for f in out]
    [20, 20, 20]
    >>> bool(np.allclose(out[1].r.T @ out[1].r, np.cov(np.delete(z, range(10, 20), 0).T) * 19))
    True
    """
    return uncertainty.leave_one_out(parts, RFactor.merge)


def grouped_tsqr(
    layers: Sequence[Layer], groups: int = 1, *, split_every: int = SPLIT_EVERY
) -> tuple[list[RFactor], RFactor]:
    """The :class:`RFactor` of each of ``groups`` contiguous sample groups of the layers side
    by side, and that of all samples (their merge; with one group, the group's factor), by one
    Dask tree of chunk QRs.

    Every chunk of every array is read once; a task holds one row chunk of all layers and
    returns at most one ``P x P`` factor per group its samples fall in (P the total number of
    features); the client ends with the G groups' factors.

    Raises
    ------
    SampleCountError
        The layers have different numbers of samples.
    NonFiniteError
        A layer has NaN or Inf: the error names the layer with the earliest such sample.
    ValueError
        More groups than samples.
    """
    names = [layer.name for layer in layers]
    check_sample_counts(names, [layer.data.shape[0] for layer in layers])
    bounds = group_bounds(int(layers[0].data.shape[0]), groups)
    graph = row_block_reduction(
        layers, _chunk, merge_groups, name="repsim-qr", split_every=split_every, args=(bounds,)
    )
    (found,) = compute(graph)
    parts = [found[g] for g in range(groups)]
    factor = parts[0] if groups == 1 else RFactor.merge(*parts)
    error = first_nonfinite(names, factor.first_nonfinite, factor.nonfinite_is_nan)
    if error is not None:
        raise error
    return parts, factor


def tsqr(layers: Sequence[Layer], *, split_every: int = SPLIT_EVERY) -> RFactor:
    """The :class:`RFactor` of the layers side by side, by a Dask tree of chunk QRs
    (:func:`grouped_tsqr` with one group: what it reads and holds, and its errors).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(1000, 4))
    >>> f = tsqr([as_layer(x.astype("float32"))])
    >>> f.count, f.r.shape
    (1000, (4, 4))
    >>> x[7, 2] = np.inf
    >>> try:
    ...     tsqr([as_layer(x, name="conv1")])
    ... except ValueError as error:
    ...     print(type(error).__name__, str(error).split(";")[0])
    NonFiniteError conv1 has Inf at sample 7 (the first non-finite sample)
    """
    return grouped_tsqr(layers, 1, split_every=split_every)[1]


# ------------------------------------------------------------------------------- measures


@dataclass(frozen=True)
class _Span:
    """One layer's varying units in Q coordinates, ``X_c[:, units] = Q a``, an orthonormal
    basis of their span, and the map that gives that basis as samples:
    ``X_c[:, units] @ transform = Q basis``."""

    name: str
    units: np.ndarray  # the layer's varying units
    mean: np.ndarray  # their means
    constant: int  # how many of its units are constant
    a: np.ndarray  # (k, p'): the R columns of the varying units
    basis: np.ndarray  # (k, r), orthonormal, spans the columns of a
    transform: np.ndarray  # (p', r)

    @cached_property
    def coordinates(self) -> np.ndarray:
        """``basis^T a`` (r x p'): the units in the basis (``a = basis @ coordinates``, up to
        the directions below the rank cut-off)."""
        return self.basis.T @ self.a

    def warn(self) -> None:
        """The warning that constant units are left out, if the layer has any."""
        if self.constant:
            warnings.warn(
                f"{self.name}: {self.constant} of {self.constant + len(self.units)} units are "
                "constant over the samples and are left out of CCA-family measures",
                RepsimWarning,
                stacklevel=4,
            )


def varying_units(factor: RFactor, index: int, name: str, *, warn: bool = True) -> np.ndarray:
    """Indices of the units of layer ``index`` that are not constant over the samples.

    A unit's centred sum of squares is the squared norm of its column of R (``X_c = Q R``);
    with its mean, :func:`~dask_repsim.io.validation.constant_units` decides. A layer without a
    varying unit raises :class:`~dask_repsim.exceptions.NoVarianceError`; constant units are
    reported with a :class:`~dask_repsim.exceptions.RepsimWarning` when ``warn``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 3)) + 1e9
    >>> x[:, 1] = 1e9
    >>> varying_units(tsqr([as_layer(x, name="fc")]), 0, "fc", warn=False).tolist()
    [0, 2]
    """
    span = _span(factor, index, name, SINGULAR_RTOL)
    if warn:
        span.warn()
    return span.units


def _span(factor: RFactor, index: int, name: str, rtol: float) -> _Span:
    s = factor.slices[index]
    sum_sq = np.einsum("ij,ij->j", factor.r[:, s], factor.r[:, s])
    constant = constant_units(sum_sq, factor.mean[s], factor.count)
    if constant.all():
        raise no_variance_error(name, int(constant.size), factor.count)
    units = np.flatnonzero(~constant)
    a = factor.r[:, s][:, units]
    norms = np.linalg.norm(a, axis=0)
    u, sv, vt = svd(a / norms)
    good = sv > rtol * sv[0]
    transform = vt[good].T / sv[good] / norms[:, None]
    return _Span(name, units, factor.mean[s][units], int(constant.sum()), a, u[:, good],
                 transform)


def layer_spans(factor: RFactor, names: Sequence[str],
                singular_rtol: float = SINGULAR_RTOL) -> list[_Span]:
    """Each layer's span in ``factor`` (its varying units, their R columns, an orthonormal basis
    and the map that gives the basis as samples); a layer without a varying unit raises
    :class:`~dask_repsim.exceptions.NoVarianceError`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(100, 4))
    >>> x[:, 3] = x[:, 0] + x[:, 1]  # a unit that adds nothing to the span
    >>> span = layer_spans(tsqr([as_layer(x)]), ["x"])[0]
    >>> span.units.tolist(), span.basis.shape, span.transform.shape
    ([0, 1, 2, 3], (4, 3), (4, 3))
    """
    return [_span(factor, i, name, singular_rtol) for i, name in enumerate(names)]


@dataclass(frozen=True)
class QRPair:
    """What every measure of the CCA family takes on this path: the two layers' spans in the Q
    coordinates of one factor, and ``cross``, the product of their orthonormal bases as
    samples, ``H_x^T H_y`` (``H = X_c[:, units] @ transform``). The canonical correlations are
    its singular values (the cosines of the principal angles, Bjorck & Golub 1973).

    Under a permutation P of y's samples the spans, bases and each side's units do not change
    and ``cross`` becomes ``H_x^T P H_y`` (:meth:`permuted`): each measure's null value is
    the same function of that product.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> pair = QRPair.of(tsqr([as_layer(x), as_layer(x[:, :2] * 3, name="y")]))
    >>> pair.cross.shape, np.round(svd(pair.cross, compute_uv=False), 9).tolist()
    ((3, 2), [1.0, 1.0])
    """

    x: _Span
    y: _Span
    cross: np.ndarray

    @classmethod
    def of(cls, factor: RFactor, names: Sequence[str] = ("x", "y"), *,
           singular_rtol: float = SINGULAR_RTOL) -> QRPair:
        """The pair of the two layers of ``factor``."""
        if len(factor.sizes) != 2:
            raise ValueError(f"expected the factor of two layers, got {len(factor.sizes)}")
        return cls.of_spans(*layer_spans(factor, names, singular_rtol))

    @classmethod
    def of_spans(cls, x: _Span, y: _Span) -> QRPair:
        """The pair of two spans in the Q coordinates of one factor."""
        return cls(x, y, x.basis.T @ y.basis)

    def permuted(self, cross: np.ndarray) -> QRPair:
        """The pair with y's samples permuted: ``cross`` is ``H_x^T P H_y``."""
        return QRPair(self.x, self.y, cross)

    def warn(self, y: bool = True) -> None:
        """The warnings of constant units: x's, and y's when ``y``."""
        self.x.warn()
        if y:
            self.y.warn()


def _angles(cross: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = svd(cross)
    return np.clip(s, 0.0, 1.0), u, vt.T


def canonical_correlations_of(pair: QRPair) -> CCAResult:
    """The canonical correlations of a :class:`QRPair`: the singular values of ``cross``."""
    pair.warn()
    return CCAResult(_angles(pair.cross)[0], method="qr")


def canonical_correlations_from_r(
    factor: RFactor, names: Sequence[str] = ("x", "y"), *, singular_rtol: float = SINGULAR_RTOL
) -> CCAResult:
    """Canonical correlations of the two layers of ``factor``: the cosines of the principal
    angles between the column spaces of ``A`` and ``B`` (Bjorck & Golub 1973).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(500, 3))
    >>> f = tsqr([as_layer(x), as_layer(x @ np.diag([1.0, 1e-6, 1e6]), name="y")])
    >>> np.round(canonical_correlations_from_r(f).rho, 9)
    array([1., 1., 1.])
    """
    return canonical_correlations_of(QRPair.of(factor, names, singular_rtol=singular_rtol))


def cca(x: Layer, y: Layer, *, singular_rtol: float = SINGULAR_RTOL) -> CCAResult:
    """All canonical correlations of two layers from their TSQR factor.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples.
    singular_rtol
        After standardising units, singular values of the centred data below this fraction of
        the largest are taken as exact collinearity.

    Returns
    -------
    CCAResult
        As :func:`dask_repsim.cca`, with ``method="qr"``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 4))
    >>> np.round(cca(as_layer(x), as_layer(x @ rng.normal(size=(4, 4)) + 5, name="y")).rho, 6)
    array([1., 1., 1., 1.])
    """
    factor = tsqr([x, y])
    return canonical_correlations_from_r(factor, (x.name, y.name), singular_rtol=singular_rtol)


def _top(span: _Span, keep: float | int, spectrum: str) -> np.ndarray:
    """The top singular directions of a layer's units, as coordinates in its basis (r x k,
    orthonormal columns): the singular directions of ``X_c = Q a`` are those of
    ``coordinates``, whose left singular vectors are the basis vectors' weights."""
    u, s, _ = svd(span.coordinates)
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


def svcca_of(pair: QRPair, *, keep: float | int = 0.99, spectrum: str = "variance",
             summary: str = "mean") -> Estimate:
    """SVCCA of a :class:`QRPair`: the canonical correlations of each side's top singular
    directions, ``tx^T cross ty`` with ``tx``, ``ty`` from :func:`_top`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(500, 3)) * [10.0, 1.0, 0.01]
    >>> pair = QRPair.of(tsqr([as_layer(x), as_layer(x @ np.diag([1.0, 1.0, 5.0]), name="y")]))
    >>> round(svcca_of(pair, keep=2), 6), round(svcca_of(pair.permuted(0 * pair.cross)), 6)
    (1.0, 0.0)
    """
    if spectrum not in ("variance", "singular_values"):
        raise ValueError(f"spectrum must be 'variance' or 'singular_values', not {spectrum!r}")
    if summary not in ("mean", "r2"):
        raise ValueError(f"summary must be 'mean' or 'r2', not {summary!r}")
    pair.warn()
    tx, ty = _top(pair.x, keep, spectrum), _top(pair.y, keep, spectrum)
    rho = _angles(tx.T @ pair.cross @ ty)[0]
    return Estimate(float(np.mean(rho if summary == "mean" else rho**2)), method="qr")


def svcca_from_r(
    factor: RFactor,
    names: Sequence[str] = ("x", "y"),
    *,
    keep: float | int = 0.99,
    spectrum: str = "variance",
    summary: str = "mean",
    singular_rtol: float = SINGULAR_RTOL,
) -> Estimate:
    """SVCCA (Raghu et al. 2017) of the two layers of ``factor``: the mean (or with
    ``summary="r2"`` the mean square) of the canonical correlations; see :func:`svcca`.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(500, 3)) * [10.0, 1.0, 1e-3]
    >>> round(svcca_from_r(tsqr([as_layer(x), as_layer(2 * x, name="y")]), keep=2), 6)
    1.0
    """
    return svcca_of(QRPair.of(factor, names, singular_rtol=singular_rtol), keep=keep,
                    spectrum=spectrum, summary=summary)


def svcca(
    x: Layer,
    y: Layer,
    *,
    keep: float | int = 0.99,
    spectrum: str = "variance",
    summary: str = "mean",
    singular_rtol: float = SINGULAR_RTOL,
) -> Estimate:
    """SVCCA from the TSQR factor: CCA between each side's top singular directions.

    The singular directions of ``X_c = Q A`` are those of A, so the projections
    ``X_c V_k = Q U_k S_k`` have the orthonormal basis ``U_k`` in Q coordinates. ``keep`` and
    ``spectrum`` as in :func:`dask_repsim.svcca` (centred data).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.normal(size=(2000, 3)) * [10.0, 5.0, 3.0]
    >>> x = np.hstack([signal, rng.normal(size=(2000, 5)) * 0.01])
    >>> y = np.hstack([signal @ rng.normal(size=(3, 3)), rng.normal(size=(2000, 5)) * 0.01])
    >>> round(svcca(as_layer(x), as_layer(y, name="y"), keep=0.99), 4)
    1.0
    """
    return svcca_from_r(
        tsqr([x, y]), (x.name, y.name), keep=keep, spectrum=spectrum, summary=summary,
        singular_rtol=singular_rtol,
    )


def pwcca_of(pair: QRPair) -> Estimate:
    """PWCCA of a :class:`QRPair`: the canonical variates of the side with fewer varying units
    (x on ties) are ``H w_i`` for the singular vectors w_i of ``cross``, and that side's
    centred units are ``H coordinates``, so ``alpha_i = sum_j |w_i^T coordinates_j|`` (a
    permutation of y's samples moves y's variates and units together)."""
    pair.warn()
    rho, u, v = _angles(pair.cross)
    use_x = pair.x.a.shape[1] <= pair.y.a.shape[1]
    span, rotation = (pair.x, u) if use_x else (pair.y, v)
    alpha = np.abs(rotation[:, : len(rho)].T @ span.coordinates).sum(axis=1)
    return Estimate(float(alpha @ rho / alpha.sum()), method="qr")


def pwcca_from_r(
    factor: RFactor, names: Sequence[str] = ("x", "y"), *, singular_rtol: float = SINGULAR_RTOL
) -> Estimate:
    """PWCCA (Morcos et al. 2018, paper definition) of the two layers of ``factor``; see
    :func:`pwcca`."""
    return pwcca_of(QRPair.of(factor, names, singular_rtol=singular_rtol))


def pwcca(x: Layer, y: Layer, *, singular_rtol: float = SINGULAR_RTOL) -> Estimate:
    """Projection-weighted CCA from the TSQR factor (paper definition, as
    :func:`dask_repsim.pwcca`).

    The canonical variates of the side with fewer varying units (x on ties; constant units
    are left out, as from every CCA-family measure) are ``h_i = Q U u_i`` with U its
    orthonormal basis, and its centred units are the columns of ``Q A``, so
    ``alpha_i = sum_j |(U u_i)^T A_j|``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 5))
    >>> round(pwcca(as_layer(x), as_layer(x @ rng.normal(size=(5, 5)), name="y")), 6)
    1.0
    """
    return pwcca_from_r(tsqr([x, y]), (x.name, y.name), singular_rtol=singular_rtol)


def linear_regression_of(pair: QRPair) -> Estimate:
    """Linear-regression R^2 of y from x of a :class:`QRPair`: y's centred units are
    ``H_y coordinates_y``, so the squared norm of their projection on x's span is
    ``||cross @ coordinates_y||_F^2``. y's constant units add nothing to either sum: left
    out without a warning, as on the co-moment path."""
    pair.warn(y=False)
    explained = np.sum((pair.cross @ pair.y.coordinates) ** 2)
    return Estimate(float(explained / np.sum(pair.y.a**2)), method="qr")


def linear_regression_from_r(
    factor: RFactor, names: Sequence[str] = ("x", "y"), *, singular_rtol: float = SINGULAR_RTOL
) -> Estimate:
    """Fraction of y's variance explained by a least-squares fit from x; see
    :func:`linear_regression`."""
    return linear_regression_of(QRPair.of(factor, names, singular_rtol=singular_rtol))


def linear_regression(
    x: Layer, y: Layer, *, singular_rtol: float = SINGULAR_RTOL
) -> Estimate:
    """Linear-regression R^2 of y from x (with intercept) from the TSQR factor.

    With ``X_c = Q A`` and ``Y_c = Q B`` the fitted values are the projection of B on the
    column space of A: ``R^2 = ||U_A^T B||_F^2 / ||B||_F^2`` (U_A an orthonormal basis of A).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 3))
    >>> y = np.hstack([x, rng.normal(size=(1000, 3))])
    >>> round(linear_regression(as_layer(x), as_layer(y, name="y")), 2)
    0.5
    """
    return linear_regression_from_r(tsqr([x, y]), (x.name, y.name), singular_rtol=singular_rtol)


# --------------------------------------------------------------------------- permutations


def _as_basis(block: np.ndarray, units: np.ndarray, mean: np.ndarray,
              transform: np.ndarray) -> np.ndarray:
    z = np.asarray(block, dtype=np.float64).reshape(block.shape[0], -1)
    return (z[:, units] - mean) @ transform


def basis_layer(layer: Layer, span: _Span) -> Layer:
    """A layer as the orthonormal basis of its ``span`` (:func:`layer_spans`),
    ``H = X_c[:, units] @ transform`` (n x r, lazily, one row block at a time): the columns the
    permutation pass correlates, ``H_x^T P H_y`` being each permutation's
    :attr:`QRPair.cross` (with the same spans, so the same basis).

    ``H`` is computed from the data, not from a product of co-moments, so its rounding is about
    ``eps * cond(X_c)``, as the factor's; its co-moments are the identity up to that rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(300, 3)) @ np.diag([1e4, 1.0, 1e-4]) + 7
    >>> span = layer_spans(tsqr([as_layer(x)]), ["x"])[0]
    >>> h = basis_layer(as_layer(x), span).data.compute()
    >>> h.shape, bool(np.allclose(h.T @ h, np.eye(3)))
    ((300, 3), True)
    """
    data = layer.data.reshape(layer.data.shape[0], -1).rechunk({1: -1})
    return Layer(layer.name, data.map_blocks(
        _as_basis, span.units, span.mean, span.transform, dtype=np.float64,
        chunks=(data.chunks[0], (span.transform.shape[1],))))


def permuted_crosses(layers: Sequence[Layer], spans: dict[int, _Span],
                     pairs: Sequence[tuple[int, int]], permutations: int,
                     seed: int) -> dict[tuple[int, int], np.ndarray]:
    """``H_a^T P_k H_b`` (K x r_a x r_b) for each pair (a, b) of ``pairs``, each layer's basis
    from its span (``spans``: layer -> span): the co-moment engine's permuted cross
    statistics (:mod:`dask_repsim.engine.permuted`: the same permutations, within the same
    blocks, as every path's null) over the layers' bases (:func:`basis_layer`), one more pass
    over the data. The memory budget must hold K cross blocks of the pairs' bases.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_repsim.engine.permuted import sample_permutations
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(300, 3)), rng.normal(size=(300, 2))
    >>> layers = [as_layer(x), as_layer(y, name="y")]
    >>> spans = dict(enumerate(layer_spans(tsqr(layers), ["x", "y"])))
    >>> null = permuted_crosses(layers, spans, [(0, 1)], permutations=4, seed=1)[0, 1]
    >>> perm = sample_permutations(300, 1, 4)[2]  # permutation 2 pairs y[perm] with x
    >>> h = [basis_layer(layer, spans[i]).data.compute() for i, layer in enumerate(layers)]
    >>> null.shape, bool(np.allclose(null[2], h[0].T @ h[1][perm]))
    ((4, 3, 2), True)
    """
    used = sorted({i for pair in pairs for i in pair})
    where = {u: k for k, u in enumerate(used)}
    bases = [basis_layer(layers[u], spans[u]) for u in used]
    side_a = sorted({where[a] for a, _ in pairs})
    side_b = sorted({where[b] for _, b in pairs})
    widths = [int(h.data.shape[1]) for h in bases]
    cross = sum(widths[i] for i in side_a) * sum(widths[j] for j in side_b)
    need = least_budget(sum(widths), permutations=permutations, cross=cross)
    check_permutations(permutations, need, sum(widths), cross)
    found = pass_statistics(bases, null=(side_a, side_b, permutations, seed),
                            pairs=[(where[a], where[b]) for a, b in pairs]).permuted
    sa, sb = column_slices(found.sizes_a), column_slices(found.sizes_b)
    return {(a, b): found.cross[:, sa[side_a.index(where[a])], sb[side_b.index(where[b])]]
            for a, b in pairs}


def qr_cells(
    functions: Sequence[Callable[..., Any]],
    layers: Sequence[Layer],
    rows: Sequence[int],
    cols: Sequence[int],
    todo: Positions | None = None,
    groups: int | None = None,
    permutations: int = 0,
    seed: int = 0,
) -> tuple[Cells, dict[str, Any]]:
    """Cells from one tall-skinny QR pass over every layer: ``X_c = Q R[:, a]`` for every layer
    with one Q, so a pair's columns of R are a factor of that pair; each function takes the
    pair's :class:`QRPair`. ``todo``: the (row, column) cells to compute (default every one).
    ``groups``: the cells' delete-a-group jackknife replicates over that many sample groups
    (:func:`leave_one_out`; ``None``: none). ``permutations``: that many permutation null
    values per cell from one more pass (:func:`permuted_crosses`), with ``seed``."""
    parts, factor = grouped_tsqr(list(layers), groups or 1)
    with client_blas(sum(factor.sizes)):
        replicates = leave_one_out(parts) if groups else None
    wanted = grid_cells(rows, cols, todo)
    used = {rows[i] for i, _ in wanted} | {cols[j] for _, j in wanted}
    spans = {u: _span(factor, u, layers[u].name, SINGULAR_RTOL) for u in used}
    nulls = permuted_crosses(layers, spans, sorted({(rows[i], cols[j]) for i, j in wanted}),
                             permutations, seed) if permutations else {}
    cells: Cells = {}
    for i, j in wanted:
        a, b = rows[i], cols[j]
        names = (layers[a].name, layers[b].name)
        with client_blas(factor.sizes[a] + factor.sizes[b]):
            pair = QRPair.of_spans(spans[a], spans[b])
            kept = None if replicates is None else \
                [QRPair.of(r.select(a, b), names) for r in replicates]
            null = [pair.permuted(c) for c in nulls[a, b]] if permutations else None
            for m, function in enumerate(functions):
                cells[m, i, j] = Cell(function(pair), quietly(function, kept),
                                      quietly(function, null))
    return cells, {"n_samples": factor.count, "n_samples_omitted": 0,
                   "n_passes": 2 if permutations else 1}
