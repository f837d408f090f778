"""Distance correlation (Székely, Rizzo & Bakirov 2007) and the RSM norm difference (Shahbazi
et al. 2021) of two layers' Euclidean distance matrices over samples, over row-block tiles,
without ever holding an n x n matrix.

With ``D`` and ``E`` the two layers' n x n matrices of Euclidean distances between samples
(``d_ij = ||x_i - x_j||``, as ReSi's ``pairwise_distances``):

- ``distance_correlation``: ``sqrt(dCov^2(D, E) / sqrt(dCov^2(D, D) dCov^2(E, E)))`` with
  ``dCov^2(D, E) = mean_ij A_ij B_ij`` of the double-centred matrices ``A = H D H`` and
  ``B = H E H`` (``H = I - 11'/n``): the V-statistic of Székely et al., ReSi's definition.
- ``rsm_norm_difference``: ``||D - E||_F``, over the whole matrix (both triangles).
- ``cka_laplace``: CKA (Kornblith et al. 2019) of the Laplace kernels
  ``K_ij = exp(-d_ij / (sigma m_x))`` and ``L_ij = exp(-e_ij / (sigma m_y))``, each layer's
  ``m`` the square root of its median squared distance over all n^2 pairs, the zero diagonal
  included (the bandwidth rule of RBF CKA, :mod:`dask_repsim.engine.medians`):
  ``<HKH, HLH> / sqrt(<HKH, HKH> <HLH, HLH>)``.

One pass over the tiles suffices. A double-centred matrix has zero row and column sums, so
``<A, B> = <A, E> = <D, E> - (2/n) r_D · r_E + (1' r_D)(1' r_E) / n^2`` with the row sums
``r_D = D 1`` and ``r_E = E 1``: each pair of row blocks ``I <= J`` is one task, returning the
sums of products of its blocks and the row sums of both (its transpose's too); the client adds
the row sums of each block and combines. Double centring ignores a constant added to a whole
matrix, so each layer's distances are taken less a constant near their mean (the root mean
square distance, from the columns' variances), which keeps the three terms from cancelling
when distances concentrate around their mean, as they do in many dimensions. Distances are
computed from activations less about their column means (:func:`~dask_repsim.paths.
sample_blocks.rsa.exact_shift`), which does not change them and keeps them exact for
integer-valued activations. The Laplace kernels are double-centred the same way, from their
products and row sums over the tiles, each less its value at the median distance,
``exp(-1 / sigma)``; several bandwidths share the pass. Their medians must be known before it:
:func:`laplace_medians` finds each layer's exactly by narrowing passes over its squared-distance
tiles (histograms of the values' leading bits, :class:`~dask_repsim.engine.medians.Range`;
usually two passes) up to :data:`~dask_repsim.engine.medians.MEDIAN_EXACT_MAX` samples, and over
a seeded subset of samples beyond; a grid finds each layer's once (:func:`distance_cells`).
The tiles' sums are combined on the client, with the permutation nulls and jackknife replicates
that the same pass gives, by :mod:`~dask_repsim.paths.sample_blocks.distances_inference`.

References
----------
Székely, Rizzo, Bakirov (2007). Measuring and testing dependence by correlation of distances.
Ann. Statist. 35, 2769-2794. Shahbazi, Shirali, Aghajan, Nili (2021). Using distance on the
Riemannian manifold to compare representations in brain and in models. NeuroImage 239.
Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations Revisited.
ICML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from ...engine.columns import Columns, checked_columns, row_blocks
from ...engine.medians import (
    MEDIAN_EXACT_MAX,
    MEDIAN_SAMPLE,
    Range,
    in_range,
    prefix_counts,
    sampled_median_sq_distance,
    sq_distances,
)
from ...engine.parallel import compute
from ...exceptions import InputError
from ...io.inputs import Layer
from ...io.validation import require_samples
from ...results import Cell, Cells, Positions, grid_cells
from . import distances_inference as inference
from . import tiles as row_tiles
from .rsa import exact_shift
from .rsa_null import null_rows
from .tiles import Blocks, block_pairs

DISTANCE_MEASURES = ("distance_correlation", "rsm_norm_difference", "uniformity_difference",
                     "concentricity_difference")
#: Laplace CKA's bandwidth when none is given: RBF CKA's (``options.DEFAULTS["sigma"]``)
DEFAULT_SIGMA = 0.8
#: the kernel measures of the same tiles, whose bandwidths (``sigma``) need each layer's median
KERNEL_MEASURES = ("cka_laplace",)
#: every measure of the tiles
TILE_MEASURES = DISTANCE_MEASURES + KERNEL_MEASURES
#: what each measure needs of a tile (:func:`_tile`)
_NEEDS = {"distance_correlation": "distances", "rsm_norm_difference": "distances",
          "uniformity_difference": "uniformity", "concentricity_difference": "concentricity",
          "cka_laplace": "laplace"}
# float64 b x b matrices a task holds at once: two distance blocks, their difference and the
# temporaries of a distance block; two kernel blocks more for Laplace CKA.
_MATRICES = 6
_KERNEL_MATRICES = 2


def _tile(same: bool, xi, xj, yi, yj, shifts: tuple, offsets: tuple, means: tuple,
          wanted: frozenset, scales: tuple = ((), ()), extra: inference.TileExtra | None = None
          ) -> dict:
    """Sums over one pair of row blocks (counted twice when they differ: the matrices are
    symmetric): of the distance matrices' products and difference and the row sums of the
    offset distances (``"distances"`` in ``wanted``), of ``exp(-2 d^2)`` per layer
    (``"uniformity"``), on a diagonal block each sample's ``<x_i, mean> / ||x_i||`` per
    layer (``"concentricity"``), and per bandwidth the Laplace kernels' products and row sums
    (``"laplace"``; ``scales``: per layer, each bandwidth's ``(sigma m, exp(-1 / sigma))``);
    with ``extra``'s permutations or groups, what they need of each
    (:mod:`~dask_repsim.paths.sample_blocks.distances_inference`)."""
    weight = 1.0 if same else 2.0
    extra = extra or inference.TileExtra(same, (0, 0), (0, 0))
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
            out[f"concentric_groups{side}"] = extra.unit_sums(raw, norms)
        a = raw - shifts[side]
        b = a if same else np.asarray(bj, dtype=np.float64) - shifts[side]
        d = sq_distances(a, b, same)
        if "uniformity" in wanted:
            u = np.exp(-2.0 * d)
            out[f"uniform{side}"] = weight * float(np.sum(u))
            out[f"uniform_groups{side}"] = extra.blocks(u)
        blocks.append(np.sqrt(d, out=d))
    dx, dy = blocks
    if "laplace" in wanted:
        out["laplace"] = [inference.tile_products(_kernel(dx, *kx), _kernel(dy, *ky), weight,
                                                  extra) for kx, ky in zip(*scales, strict=True)]
    if "distances" not in wanted:
        return out
    diff = (dx - dy) ** 2
    out["diff"], out["diff_groups"] = weight * float(np.sum(diff)), extra.blocks(diff)
    dx -= offsets[0]
    dy -= offsets[1]
    out.update(inference.tile_products(dx, dy, weight, extra))
    return out


def _kernel(d: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``exp(-d / scale) - offset``: a Laplace kernel block less a constant."""
    k = np.exp(d * (-1.0 / scale))
    k -= offset
    return k


def distance_values(x: Layer, y: Layer, *,
                    measures: Sequence[str] = DISTANCE_MEASURES,
                    block_rows: int | None = None, sigma: float | Sequence[float] | None = None,
                    medians: tuple[float, float] | None = None, seed: int = 0,
                    columns: Sequence[Columns] | None = None,
                    null: tuple[int, int] | None = None,
                    groups: int | None = None) -> dict[str, Any]:
    """Distance correlation, RSM norm difference, uniformity and concentricity differences and
    Laplace CKA of two layers from one pass over the tiles.

    Parameters
    ----------
    x, y
        Layers (:func:`~dask_repsim.io.inputs.as_layer`) with the same samples; checked by
        :func:`~dask_repsim.engine.columns.checked_columns` (NaN or Inf, constant layers,
        sample counts).
    measures
        Which of :data:`TILE_MEASURES` to compute (default: :data:`DISTANCE_MEASURES`).
    block_rows
        Samples per row block; default :func:`~dask_repsim.paths.sample_blocks.tiles.block_rows`
        (from the memory budget).
    sigma
        ``cka_laplace``'s bandwidth as a fraction of each layer's median distance (default
        0.8), or a sequence of them, which gives ``cka_laplace_<sigma>`` keys.
    medians
        The two layers' median squared distances (default: :func:`laplace_medians`, a pass of
        its own, its subsample beyond the exact limit seeded with ``seed``).
    columns
        The two layers' :func:`~dask_repsim.engine.columns.checked_columns`, when known.
    null
        ``(count, seed)``: also the paired measures under ``count`` permutations of y's
        samples, from the same pass; ``block_rows`` is then n or a multiple of the
        permutation block (:func:`~dask_repsim.paths.sample_blocks.rsa_null.null_rows`).
    groups
        Also each measure with each of ``groups`` contiguous groups of samples left out (the
        jackknife replicates), from the same pass
        (:mod:`~dask_repsim.paths.sample_blocks.distances_inference`).

    Returns
    -------
    dict
        Measure name -> value; with ``null``, ``"null"``: name -> its ``count`` values under
        the permutations; with ``groups``, ``"replicates"``: name -> its ``groups`` values.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 5))
    >>> q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    >>> v = distance_values(as_layer(x), as_layer(x @ q + 3, name="y"), block_rows=16)
    >>> round(v["distance_correlation"], 12), round(v["rsm_norm_difference"], 9)
    (1.0, 0.0)
    >>> v = distance_values(as_layer(x), as_layer(2 * x @ q, name="y"),
    ...                     measures=("cka_laplace",), sigma=[0.5, 1.0])
    >>> {k: round(c, 12) for k, c in v.items()}
    {'cka_laplace_0.5': 1.0, 'cka_laplace_1': 1.0}
    """
    several = sigma is not None and np.ndim(sigma) > 0
    sigmas = _check_sigmas(sigma)
    out = _pass(x, y, measures, block_rows, sigmas, medians, seed, columns, null=null,
                groups=groups)
    for found in (out, *(out[k] for k in ("null", "replicates") if k in out)):
        laplace = found.pop("cka_laplace", None)
        if laplace is not None:
            found.update({f"cka_laplace_{s:g}": v for s, v in zip(sigmas, laplace, strict=True)}
                         if several else {"cka_laplace": laplace[0]})
    return out


def _check_sigmas(sigma: float | Sequence[float] | None) -> list[float]:
    """The bandwidths of ``sigma`` (default :data:`DEFAULT_SIGMA`), each finite and > 0."""
    values = [DEFAULT_SIGMA] if sigma is None else list(np.atleast_1d(sigma))
    if not values or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"sigma must be > 0 and finite (a fraction of the median distance), "
                         f"not {sigma!r}")
    return [float(s) for s in values]


def _pass(x: Layer, y: Layer, measures: Sequence[str], block_rows: int | None,
          sigmas: Sequence[float], medians: tuple | None, seed: int,
          columns: Sequence[Columns] | None, *, null: tuple[int, int] | None = None,
          groups: int | None = None) -> dict[str, Any]:
    """:func:`distance_values`, with ``cka_laplace`` a list (a value per bandwidth; its null
    and replicates a list of those)."""
    unknown = [m for m in measures if m not in TILE_MEASURES]
    if unknown or not measures:
        raise ValueError(f"measures must be among {TILE_MEASURES}, not {measures!r}")
    columns = checked_columns([x, y]) if columns is None else columns
    n = columns[0].count
    what = " and ".join(m.replace("_", " ") for m in measures)
    require_samples(n, 2, what)
    spec, bounds = inference.check_inference(measures, null, groups, n)
    means = tuple(np.asarray(c.mean, dtype=np.float64) for c in columns)
    if "concentricity_difference" in measures:
        _check_means((x, y), means, columns, n)
    shifts = tuple(exact_shift(c.mean, c.sum_sq, c.count) for c in columns)
    # the root mean square distance between samples: sqrt(2 * total variance)
    offsets = tuple(float(np.sqrt(2.0 * np.sum(c.sum_sq) / n)) for c in columns)
    laplace = "cka_laplace" in measures
    scales: tuple = ((), ())
    if laplace:
        if medians is None:
            medians, _ = laplace_medians([x, y], columns, seed=seed, block_rows=block_rows)
        # each kernel less its value at the median distance, exp(-1 / sigma)
        scales = tuple(tuple((s * float(np.sqrt(m)), float(np.exp(-1.0 / s))) for s in sigmas)
                       for m in medians)
    width, matrices = int(x.data.shape[1] + y.data.shape[1]), _MATRICES + _KERNEL_MATRICES * laplace
    rows = null_rows(n, width, matrices, block_rows, spec.block, what) if spec else \
        block_rows or row_tiles.block_rows(n, width, matrices)
    blocks = Blocks(x, y, rows)
    pairs = block_pairs(len(blocks))
    wanted = frozenset(_NEEDS[m] for m in measures)
    parts = list(compute(*(
        dask.delayed(_tile, pure=True)(
            i == j, blocks.x[i], blocks.x[j], blocks.y[i], blocks.y[j], shifts, offsets, means,
            wanted, scales, inference.TileExtra(i == j, blocks.bounds[i], blocks.bounds[j],
                                                spec, bounds))
        for i, j in pairs
    )))
    return inference.combine(parts, inference.Request(
        n, len(blocks), pairs, tuple(measures), len(sigmas), means, (x.name, y.name), spec,
        bounds))


def _check_means(layers: Sequence[Layer], means: tuple, columns: Sequence[Columns],
                 n: int) -> None:
    """An error for a layer whose mean activation vector is zero: its concentricity (the
    cosine of each sample with it) is undefined."""
    for layer, mean, c in zip(layers, means, columns, strict=True):
        # the samples' root mean square norm: a mean this much smaller is rounding
        typical = np.sqrt(np.sum(c.sum_sq) / n + mean @ mean)
        if np.linalg.norm(mean) <= 1e-10 * typical:
            raise InputError(f"{layer.name}: the mean of its activations is the zero "
                             "vector (to rounding), so the cosine of a sample with it "
                             "(the concentricity) is undefined")


def laplace_medians(layers: Sequence[Layer], columns: Sequence[Columns] | None = None, *,
                    seed: int = 0, block_rows: int | None = None) -> tuple[list[float], bool]:
    """Each layer's median squared distance between samples, over all n^2 pairs with the zero
    diagonal (``gram_rbf``'s rule, as RBF CKA), and whether the medians are exact.

    Exact up to :data:`~dask_repsim.engine.medians.MEDIAN_EXACT_MAX` samples: narrowed
    down over the layer's squared-distance tiles, formed again in each pass
    (:func:`_exact_medians`); beyond, over a seeded subset of
    :data:`~dask_repsim.engine.medians.MEDIAN_SAMPLE` samples
    (:func:`~dask_repsim.engine.medians.sampled_median_sq_distance`). ``columns``: the layers'
    :func:`~dask_repsim.engine.columns.checked_columns`, computed here when not given.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> x = np.random.default_rng(0).normal(size=(101, 3))
    >>> d2 = ((x[:, None] - x[None]) ** 2).sum(axis=2)
    >>> meds, exact = laplace_medians([as_layer(x)], block_rows=20)
    >>> bool(np.isclose(meds[0], np.median(d2), rtol=1e-13)), exact
    (True, True)
    """
    columns = checked_columns(layers) if columns is None else columns
    n = columns[0].count
    shifts = [exact_shift(c.mean, c.sum_sq, c.count) for c in columns]
    exact = n <= MEDIAN_EXACT_MAX
    if exact:
        meds = _exact_medians(layers, shifts, n, block_rows)
    else:
        meds = [sampled_median_sq_distance(x, size=MEDIAN_SAMPLE, seed=seed, mean=m)
                for x, m in zip(layers, shifts, strict=True)]
    for x, m in zip(layers, meds, strict=True):
        if not m > 0:
            raise InputError(f"{x.name}: the median squared distance between samples is {m}; "
                             "at least half of the pairs of samples coincide, so the Laplace "
                             "kernel's bandwidth is undefined")
    return meds, exact


def _median_tile(bi, bj, same: bool, shift: np.ndarray, weight: int, state: tuple):
    """A tile's squared distances counted by key prefix in ``[lo, hi)``, or gathered with
    their weights (``state``: ``(lo, hi, shift, gather)`` of a
    :class:`~dask_repsim.engine.medians.Range`)."""
    lo, hi, bits, gather = state
    a = np.asarray(bi, dtype=np.float64) - shift
    d2 = sq_distances(a, a if same else np.asarray(bj, dtype=np.float64) - shift, same)
    if gather:
        return in_range(d2, weight, lo, hi)
    return prefix_counts(d2, weight, lo, hi, bits)


def _exact_medians(layers: Sequence[Layer], shifts: Sequence[np.ndarray], n: int,
                   block_rows: int | None) -> list[float]:
    """The exact medians, by :class:`~dask_repsim.engine.medians.Range`'s narrowing: each
    pass over the tiles counts every layer's values by bit prefix within its range (15 bits,
    then 16 more), or gathers them once few enough are left; layers share the passes."""
    width = max(int(x.data.shape[1]) for x in layers)
    rows = block_rows or row_tiles.block_rows(n, width, 4)
    blocks = [row_blocks(x, rows) for x in layers]
    pairs = block_pairs(len(blocks[0]))
    ranges = [Range(n) for _ in layers]
    meds: dict[int, float] = {}
    while len(meds) < len(layers):
        todo = [k for k in range(len(layers)) if k not in meds]
        states = {k: (ranges[k].lo, ranges[k].hi, ranges[k].shift, ranges[k].gather)
                  for k in todo}
        done = compute(*(
            dask.delayed(_median_tile, pure=True)(blocks[k][i], blocks[k][j], i == j,
                                                  shifts[k], 1 if i == j else 2, states[k])
            for k in todo for i, j in pairs))
        for t, k in enumerate(todo):
            got = done[t * len(pairs):(t + 1) * len(pairs)]
            if states[k][3]:
                meds[k] = ranges[k].median(np.concatenate([v for v, _ in got]),
                                           np.concatenate([w for _, w in got]))
            else:
                ranges[k].narrow(np.sum(got, axis=0))
    return [meds[k] for k in range(len(layers))]


def distance_cells(outputs: Sequence[tuple[str, float | None]], layers: Sequence[Layer],
                   rows: Sequence[int], cols: Sequence[int], *, todo: Positions | None = None,
                   seed: int = 0, block_rows: int | None = None, permutations: int = 0,
                   groups: int | None = None) -> tuple[Cells, dict[str, Any]]:
    """Cells of the measures of :data:`TILE_MEASURES`, each pair's from one pass over its tiles
    (with their nulls under ``permutations`` seeded by ``seed`` and their jackknife
    replicates over ``groups``, when asked for: :func:`distance_values`).

    ``outputs``: per output, its measure and, for ``cka_laplace``, its bandwidth (``None``:
    the default). Each layer's column statistics and median (for Laplace CKA,
    :func:`laplace_medians`; ``seed`` seeds its subsample) are found once for the grid.
    ``todo``: the (row, column) cells to compute (default every one). A Laplace CKA cell's
    fields hold its row and column layers' medians (``median``), ``median_exact``,
    ``approximate`` and ``sigma``; the attrs hold each layer's median
    (``median_sq_distance``) and ``median_exact``.
    """
    wanted = grid_cells(rows, cols, todo)
    used = sorted({rows[i] for i, _ in wanted} | {cols[j] for _, j in wanted})
    measures = tuple(dict.fromkeys(m for m, _ in outputs))
    sigmas = sorted({_check_sigmas(s)[0] for m, s in outputs if m == "cka_laplace"})
    columns = dict(zip(used, checked_columns([layers[u] for u in used]), strict=True))
    n = columns[used[0]].count
    attrs: dict[str, Any] = {"n_samples": n, "n_samples_omitted": 0}
    meds: dict[int, float] = {}
    if sigmas:
        found, exact = laplace_medians([layers[u] for u in used], [columns[u] for u in used],
                                       seed=seed, block_rows=block_rows)
        meds = dict(zip(used, found, strict=True))
        attrs.update(_median_attrs(layers, rows, cols, meds, exact, n))
    cells: Cells = {}
    for i, j in wanted:
        a, b = rows[i], cols[j]
        values = _pass(layers[a], layers[b], measures, block_rows, sigmas,
                       (meds.get(a), meds.get(b)), seed, (columns[a], columns[b]),
                       null=(permutations, seed) if permutations else None, groups=groups)
        for m, (name, s) in enumerate(outputs):
            fields: dict[str, Any] = {"method": "sample_blocks"}
            found = [values[name], *(values.get(k, {}).get(name) for k in ("replicates", "null"))]
            if name == "cka_laplace":
                s = _check_sigmas(s)[0]
                found = [None if v is None else v[sigmas.index(s)] for v in found]
                fields.update(median=(meds[a], meds[b]), median_exact=bool(attrs["median_exact"]),
                              approximate=attrs.get("approximate"), sigma=s)
            cells[m, i, j] = Cell(*found, fields=fields)
    return cells, attrs


def _median_attrs(layers: Sequence[Layer], rows: Sequence[int], cols: Sequence[int],
                  meds: dict[int, float], exact: bool, n: int) -> dict[str, Any]:
    """The grid's attrs of the medians: each layer's (``"name: median"``, ``" of a"`` or
    ``" of b"`` after the name of a layer on one side only), whether they are exact (1 or 0),
    and what approximates them when they are not."""
    def side(u: int) -> str:
        return "" if u in rows and u in cols else " of a" if u in rows else " of b"

    out: dict[str, Any] = {
        "median_sq_distance": "; ".join(f"{layers[u].name}{side(u)}: {m!r}"
                                        for u, m in meds.items()),
        "median_exact": int(exact)}
    if not exact:
        out["approximate"] = (
            "cka_laplace: Laplace bandwidths from each layer's median squared distance among a "
            f"seeded random subset of {min(MEDIAN_SAMPLE, n)} samples (n > {MEDIAN_EXACT_MAX})")
    return out
