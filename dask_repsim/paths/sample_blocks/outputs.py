"""Functional measures of two output layers (logits over the same classes), sample by sample:
prediction disagreement and the Jensen-Shannon divergence of the softmax outputs (as ReSi and
Klabunde et al.'s survey define them).

Both compare, for each sample, what the two networks output for it, and average over samples:

- ``disagreement``: the share of samples whose predicted class (``argmax``, the first of equal
  largest logits) differs;
- ``jensen_shannon``: ``mean_i JSD(softmax(x_i), softmax(y_i))``, the Jensen-Shannon
  divergence in bits (base-2 logarithms, so in [0, 1]) of the two predicted distributions.

They need each sample's whole row of logits, not sample x sample matrices: one pass over row
blocks of both layers (cost ``n (p + q)``), each block reduced to its sum. The two layers must
have the same number of units, the same classes in the same order; a different count is an
error. Their permutation nulls and jackknife replicates come from the same pass
(:mod:`~dask_repsim.paths.sample_blocks.outputs_inference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
from scipy import special

from ...engine.columns import checked_columns
from ...engine.parallel import compute
from ...io.inputs import Layer
from . import outputs_inference

OUTPUT_MEASURES = ("disagreement", "jensen_shannon")


def _softmax(z: np.ndarray) -> np.ndarray:
    return special.softmax(np.asarray(z, dtype=np.float64), axis=1)


def _argmax(z: np.ndarray) -> np.ndarray:
    return np.argmax(z, axis=1)


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each row's Jensen-Shannon divergence (bits) of two blocks of distributions."""
    m = (p + q) / 2.0
    js = (special.rel_entr(p, m).sum(axis=1) + special.rel_entr(q, m).sum(axis=1)) / 2.0
    return np.clip(js / np.log(2.0), 0.0, 1.0)


def _disagree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).astype(np.float64)


#: per measure: what each layer's rows are reduced to (their predicted class, or distribution),
#: and each sample's value from the two reductions
ROWS = {"disagreement": (_argmax, _disagree), "jensen_shannon": (_softmax, _jensen_shannon)}


def _with_entropy(z: np.ndarray) -> np.ndarray:
    """Each row's softmax distribution and, in a last column, its entropy (nats)."""
    p = _softmax(z)
    return np.concatenate([p, -special.xlogy(p, p).sum(axis=1, keepdims=True)], axis=1)


def _jensen_shannon_from_entropies(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row's Jensen-Shannon divergence (bits) of rows of :func:`_with_entropy`, as
    ``H(m) - (H(p) + H(q)) / 2``: one logarithm per entry."""
    m = (a[:, :-1] + b[:, :-1]) / 2.0
    js = -special.xlogy(m, m).sum(axis=1) - (a[:, -1] + b[:, -1]) / 2.0
    return np.clip(js / np.log(2.0), 0.0, 1.0)


#: :data:`ROWS` for the permutation nulls, which pair the reduced rows anew many times: the
#: divergence from each distribution's entropy, computed once (a third of the time a pairing
#: takes by :data:`ROWS`, the same values to rounding)
PERMUTED_ROWS = {"disagreement": ROWS["disagreement"],
                 "jensen_shannon": (_with_entropy, _jensen_shannon_from_entropies)}


def sample_values(measure: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each sample's value of ``measure`` from two blocks of logits (rows: samples)."""
    reduce, compare = ROWS[measure]
    return compare(reduce(a), reduce(b))


def _rows(measure: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return sample_values(measure, a, b)[:, None]


def output_values(x: Layer, y: Layer, *, measures: Sequence[str] = OUTPUT_MEASURES,
                  null: tuple[int, int] | None = None,
                  groups: int | None = None) -> dict[str, Any]:
    """Prediction disagreement and Jensen-Shannon divergence of two output layers.

    With ``null=(count, seed)``, also ``"null"``: measure -> its ``count`` values under the
    permutations of y's samples; with ``groups=G``, ``"replicates"``: measure -> its G
    leave-a-group-out values (:mod:`~dask_repsim.paths.sample_blocks.outputs_inference`, the
    same one pass).

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> a = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    >>> v = output_values(as_layer(a), as_layer(a[:, ::-1], name="y"))
    >>> v["disagreement"], round(v["jensen_shannon"], 6)
    (1.0, 0.368643)
    """
    unknown = [m for m in measures if m not in OUTPUT_MEASURES]
    if unknown or not measures:
        raise ValueError(f"measures must be among {OUTPUT_MEASURES}, not {measures!r}")
    checked_columns([x, y])  # sample counts, NaN and Inf, constant layers: the usual errors
    p, q = int(x.data.shape[1]), int(y.data.shape[1])
    if p != q:
        raise ValueError(
            f"{' and '.join(measures)} compare{'s' if len(measures) == 1 else ''} two output "
            f"layers over the same classes: {x.name} has {p} units, {y.name} {q}")
    if null or groups:
        return outputs_inference.output_inference(
            x, y, {m: (ROWS[m], PERMUTED_ROWS[m]) for m in measures}, null, groups)
    a = x.data.rechunk({1: -1})
    b = y.data.rechunk({0: a.chunks[0], 1: -1})
    sums = [da.map_blocks(partial(_rows, m), a, b, dtype=np.float64,
                          chunks=(a.chunks[0], (1,))).sum() for m in measures]
    totals = compute(*sums)
    n = int(x.data.shape[0])
    return {m: float(t) / n for m, t in zip(measures, totals, strict=True)}
