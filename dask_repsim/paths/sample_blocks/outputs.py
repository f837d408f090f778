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
error.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
from scipy import special

from ...engine.columns import checked_columns
from ...engine.parallel import compute
from ...io.inputs import Layer

OUTPUT_MEASURES = ("disagreement", "jensen_shannon")


def _softmax(z: np.ndarray) -> np.ndarray:
    return special.softmax(np.asarray(z, dtype=np.float64), axis=1)


def _jensen_shannon_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row's Jensen-Shannon divergence (bits) of the softmax of two blocks of logits."""
    p, q = _softmax(a), _softmax(b)
    m = (p + q) / 2.0
    js = (special.rel_entr(p, m).sum(axis=1) + special.rel_entr(q, m).sum(axis=1)) / 2.0
    return np.clip(js / np.log(2.0), 0.0, 1.0)[:, None]


def _disagree_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.argmax(a, axis=1) != np.argmax(b, axis=1)).astype(np.float64)[:, None]


def output_values(x: Layer, y: Layer, *,
                  measures: Sequence[str] = OUTPUT_MEASURES) -> dict[str, float]:
    """Prediction disagreement and Jensen-Shannon divergence of two output layers.

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
    a = x.data.rechunk({1: -1})
    b = y.data.rechunk({0: a.chunks[0], 1: -1})
    rows = {"disagreement": _disagree_rows, "jensen_shannon": _jensen_shannon_rows}
    sums = [da.map_blocks(rows[m], a, b, dtype=np.float64, chunks=(a.chunks[0], (1,))).sum()
            for m in measures]
    totals = compute(*sums)
    n = int(x.data.shape[0])
    return {m: float(t) / n for m, t in zip(measures, totals, strict=True)}
