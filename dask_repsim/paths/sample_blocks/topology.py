"""Representation Topology Divergence (Barannikov, Trofimov, Balabin & Burnaev 2022): how much the
two layers' graphs of samples differ in their cluster structure across scales, from the
persistence barcode of a graph on 2n vertices (the R-Cross-Barcode), as the authors' code
builds it.

With ``r1`` and ``r2`` the two layers' n x n Euclidean distance matrices between samples, each
divided by its 0.9 quantile (``numpy.quantile`` over all n^2 entries, the zero diagonal included:
the authors' ``norm="quantile"``), the symmetric 2n x 2n matrix::

    m(x, y) = [[0,   r1         ],
               [r1,  min(r1, r2)]]

(the first n vertices all at distance 0 from each other) defines a Vietoris-Rips filtration.
``RTD(x, y)`` is the sum of the lengths of its one-dimensional persistence bars (coefficients in
Z/2, as the authors' Ripser++), and the measure is ``(RTD(x, y) + RTD(y, x)) / 2``, their
``rtd1``: at least 0, and 0 when the two layers' normalised distances are equal.

The barcode is gudhi's (``gudhi.sklearn.RipsPersistence``, its fork of Ripser, in float64),
from the optional extra ``dask-repsim[topology]``. Everything is held in memory at once: both
layers' activations and distance matrices, the 2n x 2n matrix, and the persistence computation's
own tables; :func:`check_rtd_size` compares that need (:func:`rtd_bytes`) with the memory budget
before anything is read. The barcode's time grows faster than n^3 (2.4 s at 500 random
samples, 39 s at 1,000): it is a measure of a few thousand samples at most. A permutation test
computes the barcodes again for each permutation of y's samples (:func:`rtd_value`).

A jackknife interval's replicates are RTD recomputed on the samples outside each of the G
contiguous groups of :func:`~dask_repsim.engine.stream.group_bounds`: each layer's distances
between the kept n' samples, divided by their own 0.9 quantile (over the n'^2 entries), and the
barcodes computed again, G times the value's cost (:func:`leave_one_out_values`). The summed bar
length grows with the number of samples, so a replicate is smaller for having fewer samples
alone, and the jackknife's bias correction would extrapolate that growth as if it were bias:
the interval is centred on the estimate (the registry's ``bias_corrected=False``), an interval
for the expected RTD of samples of this size, which is what two pairs compared at the same n
share. It is conservative: the jackknife standard error overstated the spread of RTD 1.3 to
1.5 times at n = 40 to 100 (20 groups).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dask.utils import format_bytes
from scipy.spatial.distance import pdist, squareform

from ...engine.columns import checked_columns
from ...engine.parallel import compute, memory_budget
from ...engine.permuted import permutation_series
from ...engine.stream import group_bounds
from ...exceptions import InputError
from ...io.inputs import Layer
from ...io.validation import check_sample_counts

#: the quantile of each layer's distances that they are divided by (the authors' default)
QUANTILE = 0.9
#: bytes held per squared sample count: the two n x n distance matrices and their temporaries
#: (pdist's condensed vector, the quantile's copy), the 2n x 2n float64 matrix (32 bytes per
#: n^2) and gudhi's own tables. The whole call's peak resident memory grew by 390 to 880 bytes
#: per n^2 over 300 and 600 samples of random, ReLU, uniform planar and noisy-circle activations
#: (more for low-dimensional data, whose barcodes hold more bars)
BYTES_PER_SQUARE = 1024
#: what to install for the barcode
EXTRA = "pip install 'dask-repsim[topology]'"


def rtd_bytes(n: int, p: int, q: int, permuted: bool = False, grouped: bool = False) -> int:
    """About the most bytes :func:`rtd_value` holds at once for ``n`` samples of ``p`` and
    ``q`` units: both layers in float64 and :data:`BYTES_PER_SQUARE` per ``n^2``, 8 more with
    a permutation null (y's permuted distances beside its own), 16 more with jackknife
    replicates (both layers' distances between the kept samples beside their own; the
    replicate's smaller 2n' x 2n' matrix and barcode counted as the value's). The null and the
    replicates are computed one after the other, so the larger of the two counts.

    Examples
    --------
    >>> round(rtd_bytes(1000, 64, 32) / 2**30, 3)   # 1,000 samples: about 1 GiB
    0.954
    """
    extra = max(8 * permuted, 16 * grouped)
    return 8 * n * (p + q) + (BYTES_PER_SQUARE + extra) * n * n


def check_rtd_size(n: int, p: int, q: int, permuted: bool = False,
                   grouped: bool = False) -> None:
    """An error, before any work, when :func:`rtd_bytes` exceeds the memory budget."""
    need, budget = rtd_bytes(n, p, q, permuted, grouped), memory_budget()
    if need > budget:
        raise ValueError(
            f"rtd holds all {n:,} samples in memory, with the persistence barcode of a "
            f"{2 * n:,}-point Rips filtration: about {format_bytes(need)}, over the memory "
            f"budget ({format_bytes(budget)}, dask config 'repsim.memory-budget'); compare a "
            "subset of the samples (the authors average rtd over random subsets of 500)"
        )


def rips_persistence() -> Any:
    """gudhi's ``RipsPersistence`` class, or an ImportError that says what to install."""
    try:
        from gudhi.sklearn.rips_persistence import RipsPersistence
    except ImportError as error:
        raise ImportError(
            "rtd needs gudhi (>= 3.11) and scikit-learn, which compute its persistence "
            f"barcode: {EXTRA}"
        ) from error
    return RipsPersistence


def normalised_distances(a: np.ndarray, name: str) -> np.ndarray:
    """The n x n Euclidean distances between the rows of ``a``, divided by their 0.9 quantile
    (all n^2 entries, the zero diagonal included).

    Examples
    --------
    >>> a = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    >>> normalised_distances(a, "x").round(4).tolist()
    [[0.0, 0.5, 1.0], [0.5, 0.0, 0.5], [1.0, 0.5, 0.0]]
    """
    r = squareform(pdist(a, "euclidean"))
    scale = float(np.quantile(r, QUANTILE))
    if not scale > 0:
        raise InputError(
            f"{name}: at least {QUANTILE:.0%} of its distances between samples are 0 (most "
            "samples have equal activations), so rtd's normalisation by their "
            f"{QUANTILE} quantile is undefined"
        )
    r /= scale
    return r


def h1_length(m: np.ndarray, persistence: Any) -> float:
    """The summed lengths of the one-dimensional bars of the Rips filtration of the distance
    matrix ``m`` (Z/2 coefficients; ``persistence``: :func:`rips_persistence`).

    Examples
    --------
    >>> square = np.array([[0, 1, 1.5, 1], [1, 0, 1, 1.5], [1.5, 1, 0, 1], [1, 1.5, 1, 0]])
    >>> h1_length(square, rips_persistence())   # the square's hole, from 1 to its diagonal
    0.5
    """
    rips = persistence(1, input_type="full distance matrix", homology_coeff_field=2, n_jobs=1)
    bars = np.asarray(rips.fit_transform([m])[0], dtype=np.float64).reshape(-1, 2)
    return float(np.sum(bars[:, 1] - bars[:, 0]))


def cross_barcode_lengths(r1: np.ndarray, r2: np.ndarray, persistence: Any) -> tuple[float, float]:
    """``(RTD(x, y), RTD(y, x))`` from the normalised distance matrices (the module's text),
    one 2n x 2n matrix formed and refilled."""
    n = r1.shape[0]
    m = np.zeros((2 * n, 2 * n))
    np.minimum(r1, r2, out=m[n:, n:])
    out = []
    for r in (r1, r2):
        m[n:, :n] = r
        m[:n, n:] = r
        out.append(h1_length(m, persistence))
    return out[0], out[1]


def kept_distances(r: np.ndarray, keep: np.ndarray, name: str, left_out: str) -> np.ndarray:
    """The normalised distances ``r`` between the samples ``keep``, divided again by their own
    0.9 quantile (over the kept n'^2 entries): the normalised distances of the kept samples,
    as the normalisation does not depend on the distances' scale; ``left_out`` names the
    samples left out in the error when that quantile is 0."""
    sub = r[np.ix_(keep, keep)]
    scale = float(np.quantile(sub, QUANTILE))
    if not scale > 0:
        raise InputError(
            f"{name}: without {left_out}, at least {QUANTILE:.0%} of its distances between "
            f"the {len(keep)} samples left are 0, so rtd's normalisation by their {QUANTILE} "
            "quantile is undefined for that jackknife replicate; ask for fewer groups"
        )
    sub /= scale
    return sub


def leave_one_out_values(r1: np.ndarray, r2: np.ndarray, groups: int, names: tuple[str, str],
                         persistence: Any) -> list[float]:
    """RTD of the samples outside each of ``groups`` contiguous groups
    (:func:`~dask_repsim.engine.stream.group_bounds`), in group order, from the two layers'
    normalised distances ``r1`` and ``r2`` (:func:`kept_distances`); each replicate costs
    what the value does, for n' samples."""
    n = r1.shape[0]
    bounds = group_bounds(n, groups)
    out = []
    for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        keep = np.r_[0:lo, hi:n]
        left_out = f"samples {lo} to {hi - 1} (jackknife group {g + 1} of {groups})"
        s1 = kept_distances(r1, keep, names[0], left_out)
        s2 = kept_distances(r2, keep, names[1], left_out)
        out.append(sum(cross_barcode_lengths(s1, s2, persistence)) / 2.0)
        del s1, s2
    return out


def rtd_value(x: Layer, y: Layer, null: tuple[int, int] | None = None,
              groups: int | None = None) -> Any:
    """Representation Topology Divergence of two layers, ``(RTD(x, y) + RTD(y, x)) / 2``
    (the module's text), on all their samples; with ``null=(count, seed)`` or ``groups=G``,
    a dict of the value (``"rtd"``) with, as asked, its ``count`` values with y's samples
    permuted (``"null"``: ``{"rtd": [...]}``) and its G jackknife replicates
    (``"replicates"``: ``{"rtd": [...]}``, groups in order).

    The permutations are the other paths' (:func:`~dask_repsim.engine.permuted.
    permutation_series`, within blocks of ``PERMUTATION_BLOCK`` samples): y's normalised
    distances permuted, ``r2[P][:, P]`` (its 0.9 quantile does not change), and the barcodes
    computed again, each permutation costing what the value does. Replicate g is RTD of the
    samples outside group g, each layer's distances normalised again over those samples
    (:func:`leave_one_out_values`): G times the value's cost.

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> a = np.random.default_rng(0).normal(size=(60, 4))
    >>> round(rtd_value(as_layer(a), as_layer(3 * a[:, ::-1] + 1, name="y")), 10)
    0.0
    """
    persistence = rips_persistence()
    n = check_sample_counts([x.name, y.name], [x.data.shape[0], y.data.shape[0]])
    if groups:
        group_bounds(n, groups)  # more groups than samples: an error before any reading
    check_rtd_size(n, int(x.data.shape[1]), int(y.data.shape[1]), permuted=bool(null),
                   grouped=bool(groups))
    checked_columns([x, y])  # NaN and Inf, constant layers: the usual errors
    a, b = compute(x.data.astype(np.float64), y.data.astype(np.float64))
    r1 = normalised_distances(np.asarray(a), x.name)
    del a
    r2 = normalised_distances(np.asarray(b), y.name)
    del b
    value = sum(cross_barcode_lengths(r1, r2, persistence)) / 2.0
    if not (null or groups):
        return value
    out: dict[str, Any] = {"rtd": value}
    if null:
        out["null"] = {"rtd": [sum(cross_barcode_lengths(r1, r2[perm][:, perm], persistence))
                               / 2.0 for perm in permutation_series(n, null[1], null[0])]}
    if groups:
        out["replicates"] = {"rtd": leave_one_out_values(r1, r2, groups, (x.name, y.name),
                                                         persistence)}
    return out
