"""The Gamma approximation of HSIC's null distribution (Gretton et al. 2008) on the sample-space
tiles: a p-value without permutations, labelled as an approximation.

Under "x and y are independent", ``n HSIC_b`` (``HSIC_b = tr(K H L H) / n^2``, the biased HSIC of
the kernels K and L) is approximately Gamma distributed with the null's mean and variance
(Gretton, Fukumizu, Teo, Song, Schölkopf & Smola 2008, section 3; their ``hsicTestGamma``)::

    E[HSIC_b]   = (1/n) (mean_i K_ii - mu_K) (mean_i L_ii - mu_L),
                  mu_K = sum_{i != j} K_ij / (n (n - 1))
    Var[HSIC_b] = 2 (n - 4) (n - 5) / (n (n - 1) (n - 2) (n - 3))
                  x sum_{i != j} (Kc_ij Lc_ij)^2 / (n (n - 1)),   Kc = H K H, Lc = H L H
    shape = E^2 / Var,  scale = n Var / E,  p = P(Gamma(shape, scale) >= n HSIC_b)

(the mean is their Theorem 3's ``Tr(C_xx) Tr(C_yy) / n`` with the traces estimated as above;
for kernels with a unit diagonal, such as the RBF kernel, it is the ``(1 + mu_K mu_L - mu_K -
mu_L) / n`` of their code). CKA divides HSIC_b by ``sqrt(HSIC_b(K, K) HSIC_b(L, L))``, which no
permutation of the samples changes, so the p-value is CKA's too and the null's mean and standard
deviation are reported in CKA's units.

Everything but ``sum_{i != j} (Kc_ij Lc_ij)^2`` is in the grid's sums
(:class:`~dask_repsim.measures.hsic.GramSums`); that sum is one more pass over the matrices the
grid saved to scratch (:func:`squared_sums`: each tile centred from the layers' row sums, its
squares multiplied for every pair at once), without reading the activations again. The
approximation needs n >= 6 (the variance's factor ``(n - 4)(n - 5)``) and is coarse for few
samples: Gretton et al. tested it from n = 50.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dask
import numpy as np
from scipy import stats

from ...engine.parallel import compute
from ...io.validation import require_samples
from ...measures.hsic import GramSums
from .permuted import Source
from .tiles import Tile, slabs

#: fewest samples of the Gamma approximation: its variance has the factor (n - 4)(n - 5)
MIN_SAMPLES = 6

DESCRIPTION = ("Gamma approximation of HSIC's null distribution (Gretton et al. 2008), "
               "approximate: moments of the null matched, no permutations")


@dataclass
class Request:
    """The Gamma approximation asked of :func:`~dask_repsim.paths.gram.samplespace.grid_sums`,
    for the linear kernel (``linear``) and the RBF kernels (``rbf``); it fills in
    ``squares[kernel]`` (one value per pair of
    ``pairs``: ``sum_{i != j} (Kc_ij Lc_ij)^2``)."""

    linear: bool = True
    rbf: bool = False
    #: row blocks need no alignment
    block: None = None
    squares: dict = field(default_factory=dict)
    pairs: list = field(default_factory=list)

    def run(self, tiles: Sequence[Tile], source: Source, n_layers: int, pairs, n: int,
            share: tuple[int, int], sums: dict) -> None:
        """The squared sums of ``source``'s kernels, centred with the row sums of the grid's
        ``sums``."""
        self.pairs = list(pairs)
        rows = np.array([[sums[number, a, a].k_rows for a in range(n_layers)]
                         for number in source.numbers])
        found = squared_sums(tiles, source, n_layers, pairs, rows, *share)
        self.squares.update({number: found[k] for k, number in enumerate(source.numbers)})


def squared_slab(tile: Tile, source: Source, n_layers: int, pairs, span: tuple[int, int],
                 rows: np.ndarray) -> np.ndarray:
    """``weight x sum (Kc_a Kc_b)^2`` over the rows ``span`` of ``tile`` (the diagonal
    ``i = j`` left out), (kernels, pairs): each layer's kernel block centred with its row sums
    ``rows`` (kernels, layers, n), squared, and one product of all layers' squares with their
    transpose."""
    r0, r1 = span
    m, n = r1 - r0, rows.shape[2]
    index = tuple(np.array(pairs).T)
    own_rows, own_cols = np.arange(*tile.rows)[r0:r1], np.arange(*tile.cols)
    kernels = source.slab(tile, n_layers, span)
    out = np.zeros((source.kernels, len(pairs)))
    diagonal = tile.same and np.arange(r0, r1)  # the block's own samples: i = j there
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(source.kernels):
            means = rows[k] / n  # (layers, n)
            totals = means.sum(axis=1) / n
            block = kernels[k]
            block -= means[:, own_rows, None]
            block -= means[:, None, own_cols]
            block += totals[:, None, None]
            if tile.same:
                block[:, np.arange(m), diagonal] = 0.0
            np.square(block, out=block)
            flat = block.reshape(n_layers, -1)
            out[k] = (flat @ flat.T)[index]
    return out * tile.weight


def squared_sums(tiles: Sequence[Tile], source: Source, n_layers: int, pairs,
                 rows: np.ndarray, slots: int, limit: int) -> np.ndarray:
    """(kernels, pairs) ``sum_{i != j} (Kc_ij Lc_ij)^2`` over ``tiles``: a task per tile and
    slab of rows (:func:`squared_slab`), added in tile and slab order."""
    spans = [(t, span) for t in tiles
             for span in slabs(t, len(tiles), (source.kernels + 1) * n_layers, slots, limit)]
    parts = compute(*(dask.delayed(squared_slab, pure=False)(t, source, n_layers, pairs, span,
                                                             rows) for t, span in spans))
    return np.sum(parts, axis=0)


@dataclass(frozen=True)
class GammaNull:
    """The Gamma approximation of one pair's null: its p-value and the null's mean and
    variance of ``HSIC_b``, with the Gamma's shape and scale (of ``n HSIC_b``)."""

    pvalue: float
    mean: float
    variance: float
    shape: float
    scale: float


def gamma_null(sums: GramSums, square: float) -> GammaNull:
    """The Gamma approximation (module docstring) from a pair's :class:`GramSums` and its
    ``sum_{i != j} (Kc_ij Lc_ij)^2``."""
    n = sums.n
    require_samples(n, MIN_SAMPLES, "the Gamma approximation of the null")
    hsic = sums.hsic(debiased=False)[0] / n**2

    def trace(rows: np.ndarray, diag: np.ndarray) -> float:
        off = (rows.sum() - diag.sum()) / (n * (n - 1))
        return float(diag.mean() - off)

    mean = trace(sums.k_rows, sums.k_diag) * trace(sums.l_rows, sums.l_diag) / n
    variance = (2.0 * (n - 4) * (n - 5) / (n * (n - 1) * (n - 2) * (n - 3))
                * square / (n * (n - 1)))
    if not (mean > 0 and variance > 0):
        raise ValueError(f"the Gamma approximation of the null is undefined here (null mean "
                         f"{mean:.3g}, variance {variance:.3g}): a layer without variance")
    shape, scale = mean**2 / variance, n * variance / mean
    pvalue = float(stats.gamma.sf(n * hsic, shape, scale=scale))
    return GammaNull(pvalue, float(mean), float(variance), float(shape), float(scale))


def gamma_fields(sums: GramSums, square: float) -> dict:
    """A CKA cell's null fields from the Gamma approximation: ``pvalue``, the null's
    ``null_mean`` and ``null_std`` in CKA's units (HSIC's over the normalisation, which no
    permutation changes) and ``null_method``."""
    found = gamma_null(sums, square)
    _, kk, ll = sums.hsic(debiased=False)
    norm = np.sqrt(kk * ll) / sums.n**2
    return {"pvalue": found.pvalue, "null_mean": float(found.mean / norm),
            "null_std": float(np.sqrt(found.variance) / norm), "null_method": "gamma"}
