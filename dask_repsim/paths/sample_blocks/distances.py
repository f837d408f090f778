"""Distance correlation (Székely, Rizzo & Bakirov 2007) and the RSM norm difference (Shahbazi
et al. 2021) of two layers' Euclidean distance matrices over samples, over row-block tiles,
without ever holding an n x n matrix.

With ``D`` and ``E`` the two layers' n x n matrices of Euclidean distances between samples
(``d_ij = ||x_i - x_j||``, as ReSi's ``pairwise_distances``):

- ``distance_correlation``: ``sqrt(dCov^2(D, E) / sqrt(dCov^2(D, D) dCov^2(E, E)))`` with
  ``dCov^2(D, E) = mean_ij A_ij B_ij`` of the double-centred matrices ``A = H D H`` and
  ``B = H E H`` (``H = I - 11'/n``): the V-statistic of Székely et al., ReSi's definition.
- ``rsm_norm_difference``: ``||D - E||_F``, over the whole matrix (both triangles).

One pass suffices. A double-centred matrix has zero row and column sums, so
``<A, B> = <A, E> = <D, E> - (2/n) r_D · r_E + (1' r_D)(1' r_E) / n^2`` with the row sums
``r_D = D 1`` and ``r_E = E 1``: each pair of row blocks ``I <= J`` is one task, returning the
sums of products of its blocks and the row sums of both (its transpose's too); the client adds
the row sums of each block and combines. Double centring ignores a constant added to a whole
matrix, so each layer's distances are taken less a constant near their mean (the root mean
square distance, from the columns' variances), which keeps the three terms from cancelling
when distances concentrate around their mean, as they do in many dimensions. Distances are
computed from activations less about their column means (:func:`~dask_repsim.paths.
sample_blocks.rsa.exact_shift`), which does not change them and keeps them exact for
integer-valued activations.

References
----------
Székely, Rizzo, Bakirov (2007). Measuring and testing dependence by correlation of distances.
Ann. Statist. 35, 2769-2794. Shahbazi, Shirali, Aghajan, Nili (2021). Using distance on the
Riemannian manifold to compare representations in brain and in models. NeuroImage 239.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask
import numpy as np

from ...engine.columns import checked_columns
from ...engine.medians import sq_distances
from ...engine.parallel import compute
from ...exceptions import InputError
from ...io.inputs import Layer
from ...io.validation import require_samples
from . import tiles as row_tiles
from .rsa import exact_shift
from .tiles import Blocks, block_pairs

DISTANCE_MEASURES = ("distance_correlation", "rsm_norm_difference", "uniformity_difference",
                     "concentricity_difference")
#: what each measure needs of a tile (:func:`_tile`)
_NEEDS = {"distance_correlation": "distances", "rsm_norm_difference": "distances",
          "uniformity_difference": "uniformity", "concentricity_difference": "concentricity"}
# float64 b x b matrices a task holds at once: two distance blocks, their difference and the
# temporaries of a distance block.
_MATRICES = 6


def _tile(same: bool, xi, xj, yi, yj, shifts: tuple, offsets: tuple, means: tuple,
          wanted: frozenset) -> dict:
    """Sums over one pair of row blocks (counted twice when they differ: the matrices are
    symmetric): of the distance matrices' products and difference and the row sums of the
    offset distances (``"distances"`` in ``wanted``), of ``exp(-2 d^2)`` per layer
    (``"uniformity"``), and on a diagonal block each sample's ``<x_i, mean> / ||x_i||`` per
    layer (``"concentricity"``)."""
    weight = 1.0 if same else 2.0
    out: dict = {}
    blocks = []
    for side, (bi, bj) in enumerate(((xi, xj), (yi, yj))):
        raw = np.asarray(bi, dtype=np.float64)
        if same and "concentricity" in wanted:
            norms = np.sqrt(np.einsum("ij,ij->i", raw, raw))
            dots = raw @ means[side]
            # a sample of all-zero activations has no direction: it counts 0, as
            # scikit-learn's cosine gives it
            out[f"concentric{side}"] = float(np.sum(
                np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)))
        a = raw - shifts[side]
        b = a if same else np.asarray(bj, dtype=np.float64) - shifts[side]
        d = sq_distances(a, b, same)
        if "uniformity" in wanted:
            out[f"uniform{side}"] = weight * float(np.sum(np.exp(-2.0 * d)))
        blocks.append(np.sqrt(d, out=d))
    if "distances" not in wanted:
        return out
    dx, dy = blocks
    out["diff"] = weight * float(np.sum((dx - dy) ** 2))
    dx -= offsets[0]
    dy -= offsets[1]
    out.update(xy=weight * float(np.sum(dx * dy)), xx=weight * float(np.sum(dx * dx)),
               yy=weight * float(np.sum(dy * dy)),
               rows_i=(dx.sum(axis=1), dy.sum(axis=1)),
               rows_j=None if same else (dx.sum(axis=0), dy.sum(axis=0)))
    return out


def _centred_products(parts: list[dict], pairs: list[tuple[int, int]], count: int,
                      n: int) -> dict[str, float]:
    """``<A, B>``, ``<A, A>`` and ``<B, B>`` of the double-centred matrices from the tiles."""
    rows = [[0.0, 0.0] for _ in range(count)]
    for (i, j), part in zip(pairs, parts, strict=True):
        for side in (0, 1):
            rows[i][side] = rows[i][side] + part["rows_i"][side]
            if part["rows_j"] is not None:
                rows[j][side] = rows[j][side] + part["rows_j"][side]
    r = [np.concatenate([np.atleast_1d(block[side]) for block in rows]) for side in (0, 1)]
    totals = {key: sum(p[key] for p in parts) for key in ("xy", "xx", "yy")}
    sums = (float(r[0].sum()), float(r[1].sum()))
    out = {}
    for key, (s, t) in {"xy": (0, 1), "xx": (0, 0), "yy": (1, 1)}.items():
        out[key] = totals[key] - 2.0 * float(r[s] @ r[t]) / n + sums[s] * sums[t] / n**2
    return out


def distance_values(x: Layer, y: Layer, *,
                    measures: Sequence[str] = DISTANCE_MEASURES,
                    block_rows: int | None = None) -> dict[str, float]:
    """Distance correlation and RSM norm difference of two layers from one pass over the tiles.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples; checked by
        :func:`~dask_repsim.engine.columns.checked_columns` (NaN or Inf, constant layers,
        sample counts).
    measures
        Which of :data:`DISTANCE_MEASURES` to compute.
    block_rows
        Samples per row block; default :func:`~dask_repsim.paths.sample_blocks.tiles.block_rows`
        (from the memory budget).

    Returns
    -------
    dict
        Measure name -> value.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 5))
    >>> q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    >>> v = distance_values(as_layer(x), as_layer(x @ q + 3, name="y"), block_rows=16)
    >>> round(v["distance_correlation"], 12), round(v["rsm_norm_difference"], 9)
    (1.0, 0.0)
    """
    unknown = [m for m in measures if m not in DISTANCE_MEASURES]
    if unknown or not measures:
        raise ValueError(f"measures must be among {DISTANCE_MEASURES}, not {measures!r}")
    columns = checked_columns([x, y])
    n = columns[0].count
    require_samples(n, 2, " and ".join(m.replace("_", " ") for m in measures))
    means = tuple(np.asarray(c.mean, dtype=np.float64) for c in columns)
    if "concentricity_difference" in measures:
        for layer, mean, c in zip((x, y), means, columns, strict=True):
            # the samples' root mean square norm: a mean this much smaller is rounding
            typical = np.sqrt(np.sum(c.sum_sq) / n + mean @ mean)
            if np.linalg.norm(mean) <= 1e-10 * typical:
                raise InputError(f"{layer.name}: the mean of its activations is the zero "
                                 "vector (to rounding), so the cosine of a sample with it "
                                 "(the concentricity) is undefined")
    shifts = tuple(exact_shift(c.mean, c.sum_sq, c.count) for c in columns)
    # the root mean square distance between samples: sqrt(2 * total variance)
    offsets = tuple(float(np.sqrt(2.0 * np.sum(c.sum_sq) / n)) for c in columns)
    rows = block_rows or row_tiles.block_rows(
        n, int(x.data.shape[1] + y.data.shape[1]), _MATRICES)
    blocks = Blocks(x, y, rows)
    pairs = block_pairs(len(blocks))
    wanted = frozenset(_NEEDS[m] for m in measures)
    parts = compute(*(
        dask.delayed(_tile, pure=True)(i == j, blocks.x[i], blocks.x[j], blocks.y[i],
                                       blocks.y[j], shifts, offsets, means, wanted)
        for i, j in pairs
    ))
    return _values(list(parts), pairs, len(blocks), n, means, measures)


def _values(parts: list[dict], pairs: list, count: int, n: int, means: tuple,
            measures: Sequence[str]) -> dict[str, float]:
    """The measures from the tiles' sums."""
    out = {}
    if "rsm_norm_difference" in measures:
        out["rsm_norm_difference"] = float(np.sqrt(sum(p["diff"] for p in parts)))
    if "distance_correlation" in measures:
        c = _centred_products(parts, pairs, count, n)
        # a V-statistic: <A, B> >= 0 exactly; rounding can leave it a hair below
        out["distance_correlation"] = float(np.sqrt(max(c["xy"], 0.0) / np.sqrt(c["xx"] * c["yy"])))
    if "uniformity_difference" in measures:
        # log(sum_ij exp(-2 d_ij^2) / n^2) per layer; the n^2 cancels in the difference
        sums = [sum(p[f"uniform{side}"] for p in parts) for side in (0, 1)]
        out["uniformity_difference"] = float(abs(np.log(sums[0]) - np.log(sums[1])))
    if "concentricity_difference" in measures:
        level = [sum(p.get(f"concentric{side}", 0.0) for p in parts)
                 / (n * np.linalg.norm(means[side])) for side in (0, 1)]
        out["concentricity_difference"] = float(abs(level[0] - level[1]))
    return {m: out[m] for m in measures}
