"""What measures see of a pass: one layer's marginal statistics (:class:`Side`) and a pair's
(:class:`Pair`), with the decompositions several measures share computed once.

:func:`sides`, :func:`pair` and :func:`permuted_pairs` cut them out of the engine's
:class:`~dask_repsim.engine.moments.Statistics` and :class:`~dask_repsim.engine.permuted.Permuted`;
nothing
here touches the data. A unit is constant by :func:`dask_repsim.io.validation.constant_units`, the
rule every path shares.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..exceptions import RepsimWarning
from ..io.validation import constant_units, no_variance_error
from .moments import Statistics, column_slices
from .permuted import Permuted

# After standardising units, directions whose variance is below this fraction of the largest are
# treated as exact collinearity (duplicated units, float32 rounding of linear combinations).
RANK_RTOL = 1e-10


@dataclass(frozen=True)
class Whitener:
    """A basis W (p x r) of a layer's non-degenerate directions with W^T M W = I."""

    basis: np.ndarray
    #: indices of the units that are not constant
    kept: np.ndarray
    n_constant: int


@dataclass(eq=False)
class Side:
    """One layer's marginal statistics, with the decompositions measures share (computed once).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 2)) + [1e9, 0.0]  # offset, not constant
    >>> m = x.mean(axis=0)
    >>> Side("x", 50, m, (x - m).T @ (x - m)).constant.tolist()
    [False, False]
    """

    name: str
    count: int
    mean: np.ndarray
    comoment: np.ndarray

    @property
    def n_features(self) -> int:
        return self.comoment.shape[0]

    @cached_property
    def spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (descending, >= 0) and eigenvectors of the co-moment matrix.

        The eigenvalues are the squared singular values of the centred data, the eigenvectors
        its right singular vectors.
        """
        values, vectors = np.linalg.eigh(self.comoment)
        return np.clip(values[::-1], 0, None), vectors[:, ::-1]

    @cached_property
    def constant(self) -> np.ndarray:
        """Mask of the units that do not vary over the samples (dead units)."""
        return constant_units(np.diagonal(self.comoment), self.mean, self.count)

    def require_variance(self) -> None:
        """Raise :class:`~dask_repsim.exceptions.NoVarianceError` when every unit is constant."""
        if self.constant.all():
            raise no_variance_error(self.name, self.n_features, self.count)

    @cached_property
    def varying(self) -> np.ndarray:
        """Indices of the units CCA-family measures use; warns (once) about the constant ones."""
        self.require_variance()
        kept = np.flatnonzero(~self.constant)
        if kept.size < self.n_features:
            warnings.warn(
                f"{self.name}: {self.n_features - kept.size} of {self.n_features} units are "
                "constant over the samples and are left out of CCA-family measures",
                RepsimWarning,
                stacklevel=5,
            )
        return kept

    @cached_property
    def whitener(self) -> Whitener:
        """Whitening basis after dropping constant units and exactly collinear directions
        (:attr:`basis`); warns about the constant units (:attr:`varying`)."""
        return Whitener(self.basis, self.varying, int(self.constant.sum()))

    @cached_property
    def basis(self) -> np.ndarray:
        """W (p x r) with ``W^T M W = I``: the layer's centred directions with variance, from
        the correlation matrix of its units that are not constant (so that units on very
        different scales all count), directions of eigenvalue at most
        :data:`RANK_RTOL` times the largest dropped; ``X_c W`` is an orthonormal basis of the
        centred activations' column space."""
        self.require_variance()
        kept = np.flatnonzero(~self.constant)
        scale = np.sqrt(np.diagonal(self.comoment)[kept])
        corr = self.comoment[np.ix_(kept, kept)] / np.outer(scale, scale)
        values, vectors = np.linalg.eigh(corr)
        good = values > RANK_RTOL * values[-1]
        basis = np.zeros((self.n_features, int(good.sum())))
        basis[kept] = vectors[:, good][:, ::-1] / np.sqrt(values[good][::-1]) / scale[:, None]
        return basis


@dataclass(eq=False)
class Pair:
    """The statistics of two layers x and y that every pairwise measure is a function of."""

    x: Side
    y: Side
    #: cross co-moment M_xy (p x q)
    cross: np.ndarray
    #: sum_i r_xi r_yi, sum_i r_xi^2, sum_i r_yi^2 (centred squared row norms; debiased CKA)
    norm_xy: float
    norm_xx: float
    norm_yy: float
    #: decompositions several measures share, computed by the first that needs them
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return self.x.count


def sides(stats: Statistics, names: Sequence[str]) -> list[Side]:
    """One :class:`Side` per layer of ``stats``."""
    return [
        Side(name, stats.count, stats.mean[s], stats.comoment[s, s])
        for name, s in zip(names, stats.slices, strict=True)
    ]


def pair(stats: Statistics, layer_sides: Sequence[Side], a: int, b: int) -> Pair:
    """The :class:`Pair` of layers ``a`` and ``b`` of ``stats``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(20, 3))
    >>> stats = Statistics.from_chunk([x, 2 * x])
    >>> p = pair(stats, sides(stats, ["x", "y"]), 0, 1)
    >>> p.count, bool(np.allclose(p.cross, 2 * p.x.comoment))
    (20, True)
    """
    if not stats.has_pair(a, b):
        raise ValueError(f"the statistics hold no cross block of layers {a} and {b}")
    sa, sb = stats.slices[a], stats.slices[b]
    g = stats.norm_product
    return Pair(layer_sides[a], layer_sides[b], stats.comoment[sa, sb], g[a, b], g[a, a], g[b, b])


def permuted_pairs(
    stats: Statistics,
    layer_sides: Sequence[Side],
    permuted: Permuted,
    a: int,
    b: int,
    ia: int,
    jb: int,
) -> list[Pair]:
    """The :class:`Pair` of layers ``a`` and ``b`` of ``stats`` under each permutation.

    ``ia``, ``jb``: the positions of ``a`` among the permuted statistics' A layers and of
    ``b`` among its B layers. ``permuted`` must cover the same samples as ``stats``.
    """
    sa, sb = column_slices(permuted.sizes_a)[ia], column_slices(permuted.sizes_b)[jb]
    g = stats.norm_product
    return [
        Pair(layer_sides[a], layer_sides[b], cross[sa, sb], float(nc[ia, jb]), g[a, a], g[b, b])
        for cross, nc in zip(permuted.cross, permuted.norm_cross, strict=True)
    ]
