"""Whitened RDM comparisons (Diedrichsen et al. 2021) and noise-whitened (Mahalanobis) RDMs
for :mod:`dask_repsim.paths.sample_blocks.rsa`, over the same row-block tiles.

Whitened comparisons
--------------------
``compare="cosine_cov"`` and ``"corr_cov"`` are rsatoolbox's (``compare``, version 0.3, with its
default ``sigma_k=None``: independent, equal noise on every condition). The paper's definition is
the cosine ``v1' V^-1 v2 / sqrt(v1' V^-1 v1 v2' V^-1 v2)`` of the two vectors of dissimilarities
``d_ij, i < j``, whitened by their covariance under noise, ``V = (C C') o (C C')`` (``C`` the
pairwise contrasts, ``o`` the elementwise product); ``"corr_cov"`` takes each vector less its
mean first. rsatoolbox computes it without ``V`` (``_cov_weighting``): each vector becomes the
second-moment matrix ``G = -1/2 H D H`` (``D`` the full symmetric RDM, zero diagonal, ``H = I -
11'/n``), its off-diagonal entries (times ``sqrt(2)``, being there once for two) followed by its
diagonal, so the inner product of two such vectors is ``2 sum_{i<j} G1_ij G2_ij + sum_k G1_kk
G2_kk = <G1, G2>_F``. The comparison is the cosine of the double-centred matrices ``A = H D H``
(the ``-1/2`` cancels)::

    cosine_cov = <A1, A2> / sqrt(<A1, A1> <A2, A2>)

As for distance correlation (:mod:`dask_repsim.paths.sample_blocks.distances`), ``<HTH, HUH> =
<T, U> - (2/n) r_T . r_U + (1' r_T)(1' r_U) / n^2`` with the row sums ``r_T = T 1``: one pass
suffices. Subtracting the mean ``m`` of the entries ``d_ij, i < j`` from every off-diagonal entry
(``T = D - m (11' - I)``, the ``"corr_cov"`` vector as a matrix) changes ``H D H`` by ``m H``
(``H (11' - I) H = -H``): ``H T H = A + m H``. ``T`` has zero diagonal and ``1' T 1 = 0``, so
``tr(H T H) = 0`` and

- ``corr_cov = P12 / sqrt(P11 P22)`` with ``P_st = <T_s, T_t> - (2/n) r_s . r_t``, where ``<T1,
  T2> = 2 sum_{i<j} (d1_ij - m1)(d2_ij - m2)`` is twice the centred cross product of the entries
  (:class:`~dask_repsim.paths.sample_blocks.rsa.EntryMoments`, merged exactly);
- ``cosine_cov = (P12 + (n - 1) m1 m2) / sqrt((P11 + (n - 1) m1^2)(P22 + (n - 1) m2^2))``, as
  ``A = H T H - m H`` and ``<H, H> = n - 1``.

Each tile adds to the moments its rows' sums of ``d_ij - c`` (``j != i``), ``c`` the tile's own
mean entry; the client corrects them by ``c - m`` times the entries summed. Nothing cancels
when dissimilarities have a large mean, and every term is exact up to rounding. ``P11 = 0``
only for an RDM with one dissimilarity (``H T H = 0`` with zero diagonal forces ``T = 0``), whose
``"corr_cov"`` is refused; ``"cosine_cov"`` needs an RDM that is not all zero.

Mahalanobis RDM
---------------
``rdm="mahalanobis"`` with a noise precision ``P`` per layer: ``d_ij = (x_i - x_j)' P (x_i -
x_j) / p`` (rsatoolbox's ``calc_rdm(method="mahalanobis", noise=P)``: over the number of
features ``p``). With ``P = L L'``, it is the euclidean RDM of the rows ``x L``, so each row block
is multiplied by ``L`` before the euclidean tile code. ``L`` comes from ``eigh``: ``P`` must be
symmetric (to ``1e-10`` of its largest entry) and positive semidefinite (eigenvalues below
``-1e-10`` times the largest are an error; those above are kept, those within taken as zero), so
a rank-deficient precision (a noise model restricted to a subspace) is allowed.

References
----------
Diedrichsen, Berlot, Mur, Schütt, Shahbazi, Kriegeskorte (2021). Comparing representational
geometries using whitened unbiased-distance-matrix similarity. Neurons, Behavior, Data analysis
and Theory 5(3). Walther, Nili, Ejaz, Alink, Kriegeskorte, Diedrichsen (2016). Reliability of
dissimilarity measures for multi-voxel pattern analysis. NeuroImage 137, 188-200.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...exceptions import InputError, NonFiniteError
from ...io.inputs import Layer

WHITENED = ("cosine_cov", "corr_cov")
#: relative tolerance of a precision matrix's asymmetry and negative eigenvalues
PRECISION_TOLERANCE = 1e-10


def tile_row_sums(blocks: Sequence[np.ndarray], same: bool, centres: Sequence[float],
                  in_place: bool) -> tuple:
    """Per RDM block, the sums over ``j != i`` of ``d_ij - centre``: along the rows (block I)
    and, for ``I != J``, along the columns (block J, else None). ``in_place``: the blocks may be
    overwritten."""
    rows, cols = [], []
    for d, centre in zip(blocks, centres, strict=True):
        dev = np.subtract(d, centre, out=d if in_place else None)
        if same:
            np.fill_diagonal(dev, 0.0)
        rows.append(dev.sum(axis=1))
        cols.append(None if same else dev.sum(axis=0))
    return tuple(rows), None if same else tuple(cols)


def centred_row_sums(parts: list, pairs: Sequence[tuple[int, int]],
                     bounds: Sequence[tuple[int, int]], means: tuple[float, float]) -> list:
    """Each layer's row sums of ``d_ij - m`` over ``j != i`` (``m``: its mean entry) from the
    tiles' ``[moments, ..., (rows, cols)]``: each tile's sums about its own mean, corrected."""
    n = bounds[-1][1]
    out = [np.zeros(n), np.zeros(n)]
    for (i, j), part in zip(pairs, parts, strict=True):
        moments, (rows, cols) = part[0], part[3]
        (si, ei), (sj, ej) = bounds[i], bounds[j]
        for side, tile_mean in enumerate((moments.mean1, moments.mean2)):
            shift = tile_mean - means[side]
            if i == j:
                out[side][si:ei] += rows[side] + shift * (ei - si - 1)
            else:
                out[side][si:ei] += rows[side] + shift * (ej - sj)
                out[side][sj:ej] += cols[side] + shift * (ei - si)
    return out


def whitened_values(parts: list, pairs: Sequence[tuple[int, int]],
                    bounds: Sequence[tuple[int, int]], total: Any, compares: Sequence[str],
                    null: tuple[np.ndarray, Iterable[np.ndarray]] | None = None,
                    ) -> dict[str, Any]:
    """``cosine_cov`` and ``corr_cov`` (those in ``compares``) from the tiles and the merged
    :class:`~dask_repsim.paths.sample_blocks.rsa.EntryMoments` ``total`` (module docstring).

    ``null``: the centred cross product of all entries under each permutation of y's samples
    and the permutations (n indices each, :mod:`~dask_repsim.paths.sample_blocks.rsa_null`):
    also ``"null"``, each comparison under them, with y's row sums permuted."""
    n = bounds[-1][1]
    means = (total.mean1, total.mean2)
    r = centred_row_sums(parts, pairs, bounds, means)
    central = {"11": total.m11, "22": total.m22, "12": total.m12}
    dots = {k: float(r[int(k[0]) - 1] @ r[int(k[1]) - 1]) for k in central}
    out: dict[str, Any] = whitened_comparisons(central, dots, means, n, compares)
    if null is not None:
        rows = [whitened_comparisons({**central, "12": float(cross)},
                                     {**dots, "12": float(r[0] @ r[1][perm])}, means, n,
                                     compares)
                for cross, perm in zip(*null, strict=True)]
        out["null"] = {c: [row[c] for row in rows] for c in compares if c in WHITENED}
    return out


def whitened_comparisons(central: dict, dots: dict, means: tuple[float, float], n: int,
                         compares: Sequence[str]) -> dict[str, float]:
    """The whitened comparisons of ``n`` samples from the entries' centred sums of products
    ``central`` and the row sums' products ``dots`` ("11", "22", "12"; the row sums of ``d_ij
    - m``), ``means`` the mean entries ``m`` (module docstring)."""
    p = {k: 2.0 * central[k] - 2.0 * dots[k] / n for k in central}
    out = {}
    if "corr_cov" in compares:
        out["corr_cov"] = p["12"] / np.sqrt(max(p["11"], 0.0) * max(p["22"], 0.0))
    if "cosine_cov" in compares:
        level = {k: (n - 1) * means[int(k[0]) - 1] * means[int(k[1]) - 1] for k in p}
        out["cosine_cov"] = (p["12"] + level["12"]) / np.sqrt(
            (max(p["11"], 0.0) + level["11"]) * (max(p["22"], 0.0) + level["22"]))
    return {c: float(np.clip(v, -1.0, 1.0)) for c, v in out.items()}


def noise_factor(name: str, precision: Any, width: int) -> np.ndarray:
    """``L`` (``width x width``) with ``L L' = precision``, from ``eigh``; an error naming layer
    ``name`` for a precision of the wrong shape, with NaN or Inf, not symmetric or not positive
    semidefinite (module docstring)."""
    try:
        p = np.asarray(precision, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: the noise precision must be a {width} x {width} array of "
                         f"numbers, not {type(precision).__name__}") from None
    if p.shape != (width, width):
        raise InputError(f"{name}: the noise precision matrix has shape {p.shape}, but the "
                         f"layer has {width} features: it must be {width} x {width}")
    if not np.isfinite(p).all():
        raise NonFiniteError(f"{name}: the noise precision matrix has NaN or Inf")
    scale = float(np.abs(p).max())
    if scale == 0:
        raise InputError(f"{name}: the noise precision matrix is zero: every Mahalanobis "
                         "distance would be 0")
    asymmetry = float(np.abs(p - p.T).max())
    if asymmetry > PRECISION_TOLERANCE * scale:
        raise InputError(f"{name}: the noise precision matrix is not symmetric (largest "
                         f"|P - P'| entry {asymmetry:.3g}, largest |P| entry {scale:.3g})")
    w, v = np.linalg.eigh((p + p.T) / 2.0)
    if w[0] < -PRECISION_TOLERANCE * max(w[-1], 0.0) or w[-1] <= 0:
        raise InputError(f"{name}: the noise precision matrix is not positive semidefinite "
                         f"(eigenvalue {w[0]:.3g}, largest {w[-1]:.3g})")
    return v * np.sqrt(np.clip(w, 0.0, None))


@dataclass(frozen=True)
class Noise:
    """The noise precision matrices of a call's two sides (layers x: side 0, y: side 1), each
    one matrix for every layer of the side or a mapping of the layers' arrays (the dask array
    name, ``layer.data.name``) to matrices, with the user's layer names for messages.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> noise = Noise((np.eye(2), 2 * np.eye(3)))
    >>> noise.of(1, as_layer(np.zeros((4, 3)), name="y")).tolist()[0]
    [2.0, 0.0, 0.0]
    """

    sides: tuple[Any, Any]
    names: tuple[Mapping[str, str], Mapping[str, str]] = ({}, {})

    def of(self, side: int, layer: Layer) -> np.ndarray:
        """The precision of ``layer`` on ``side``."""
        found = self.sides[side]
        if not isinstance(found, Mapping):
            return found
        if layer.data.name not in found:
            raise ValueError(f"rdm_noise has no noise precision matrix for layer "
                             f"{self.names[side].get(layer.data.name, layer.name)!r}")
        return found[layer.data.name]


def pair_noise(noise: Any) -> Noise | None:
    """A pairwise call's ``noise=``: ``(P_x, P_y)``, or one matrix for both layers."""
    if noise is None:
        return None
    if isinstance(noise, tuple | list) and len(noise) == 2:
        return Noise((noise[0], noise[1]))
    if getattr(noise, "ndim", None) == 2:
        return Noise((noise, noise))
    raise ValueError("noise= takes the noise precision matrices of x and y, (P_x, P_y), or one "
                     f"matrix for both, not {type(noise).__name__}")


def layer_noise(noise: Any, x: Layer, y: Layer) -> tuple | None:
    """The precisions ``(P_x, P_y)`` of a cell's layers: ``x`` of side a, ``y`` of side b, from
    a :class:`Noise` (:func:`grid_noise`) or a pairwise call's ``noise=`` (:func:`pair_noise`)."""
    if noise is None:
        return None
    found = noise if isinstance(noise, Noise) else pair_noise(noise)
    return found.of(0, x), found.of(1, y)


def grid_noise(noise: Any, names: Sequence[Sequence[str]], layers: Sequence[Layer],
               positions: Sequence[Sequence[int]]) -> Noise | None:
    """``compare``'s ``rdm_noise``: a mapping of layer names to precision matrices for both
    sides, or a pair of such mappings (side a, side b), as a :class:`Noise`; an error naming a
    layer that has none, or a name that is no layer."""
    if noise is None:
        return None
    pair = isinstance(noise, tuple | list) and len(noise) == 2
    given = list(noise) if pair else [noise, noise]
    sides: list = []
    labels: list = []
    for side, (mapping, side_names, where) in enumerate(zip(given, names, positions,
                                                            strict=True)):
        if not isinstance(mapping, Mapping):
            raise ValueError("rdm_noise= takes a mapping of layer names to noise precision "
                             "matrices, or a pair of them (side a, side b), not "
                             f"{type(mapping).__name__}")
        what = f"side {'ab'[side]}'s " if pair else ""
        unknown = [k for k in mapping if k not in side_names and (pair or k not in names[1 - side])]
        if unknown:
            raise ValueError(f"rdm_noise names {unknown[0]!r}, which is none of {what}layers "
                             f"({', '.join(map(str, side_names))})")
        missing = [k for k in side_names if k not in mapping]
        if missing:
            raise ValueError(f"rdm_noise has no noise precision matrix for {what}layer "
                             f"{missing[0]!r} (rdm='mahalanobis' needs one per layer)")
        keys = [layers[i].data.name for i in where]
        chosen: dict = {}
        label: dict = {}
        for key, k in zip(keys, side_names, strict=True):
            if key in chosen and not np.array_equal(np.asarray(chosen[key]),
                                                    np.asarray(mapping[k])):
                raise ValueError(f"{what}layers {label[key]!r} and {k!r} are the same array "
                                 "with different noise precision matrices: give one matrix")
            chosen[key], label[key] = mapping[k], k
        sides.append(chosen)
        labels.append(label)
    return Noise((sides[0], sides[1]), (labels[0], labels[1]))


def check_noise_choice(rdm: str, noise: Any) -> None:
    """An error for noise precisions without ``rdm="mahalanobis"``, or that RDM without them."""
    if rdm == "mahalanobis" and noise is None:
        raise ValueError("rdm='mahalanobis' needs the noise precision matrix of each layer: "
                         "noise=(P_x, P_y) (rsa) or rdm_noise={layer: P} (compare)")
    if rdm != "mahalanobis" and noise is not None:
        raise ValueError(f"noise precision matrices apply to rdm='mahalanobis' only, not "
                         f"rdm={rdm!r}")

