"""Aligned cosine similarity (Hamilton, Leskovec & Jurafsky 2016, as ReSi computes it): the
mean cosine similarity of each sample's activations in y with its activations in x after x is
rotated onto y by orthogonal Procrustes.

With X and Y the activations as given (not centred) and the narrower layer padded with zero
units to the wider's width, ``Q = U V^T`` from the SVD ``X^T Y = U S V^T`` minimises
``||X Q - Y||_F`` over orthogonal Q, and::

    aligned_cosine = (1/n) sum_i cos(x_i Q, y_i)

Two passes over the rows of both layers: the first sums ``X^T Y`` (p x q), the client forms Q,
the second sums each sample's ``<x_i W, y_i> / (||x_i|| ||y_i||)`` with ``W`` the p x q block of
Q that the zero padding leaves (``||x_i Q|| = ||x_i||``: Q is orthogonal). A sample whose
activations are all zero in either layer has no cosine: it is left out, with a warning that
says how many (as ReSi), and an error when every sample is. Its permutation null and jackknife
replicates: :mod:`~dask_repsim.paths.sample_blocks.aligned_inference`.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np

from ...engine.columns import checked_columns
from ...engine.parallel import compute
from ...exceptions import InputError, RepsimWarning
from ...io.inputs import Layer


def rotation(cross: np.ndarray) -> np.ndarray:
    """The p x q block of the orthogonal Procrustes rotation of ``X^T Y = cross`` (p x q), the
    narrower side padded with zero units.

    Examples
    --------
    >>> q = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    >>> x = np.random.default_rng(1).normal(size=(20, 3))
    >>> bool(np.allclose(rotation(x.T @ (x @ q)), q))
    True
    """
    p, q = cross.shape
    size = max(p, q)
    padded = np.zeros((size, size))
    padded[:p, :q] = cross
    u, _, vt = np.linalg.svd(padded)
    return (u @ vt)[:p, :q]


def _rows(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per block: the sum of the cosines of the rows with a direction, and their count."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    kept = norms > 0
    cosines = np.einsum("ij,ij->i", (a @ w)[kept], b[kept]) / norms[kept]
    return np.array([[cosines.sum(), kept.sum()]])


def aligned_cosine(x: Layer, y: Layer) -> float:
    """The aligned cosine similarity of two layers (see the module's text).

    Examples
    --------
    >>> from dask_repsim.io.inputs import as_layer
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(100, 4))
    >>> q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    >>> round(aligned_cosine(as_layer(a), as_layer(3 * a @ q, name="y")), 12)
    1.0
    """
    checked_columns([x, y])  # sample counts, NaN and Inf, constant layers: the usual errors
    a = x.data.rechunk({1: -1})
    b = y.data.rechunk({0: a.chunks[0], 1: -1})
    (cross,) = compute(da.dot(a.astype(np.float64).T, b.astype(np.float64)))
    w = rotation(np.asarray(cross))
    parts = da.map_blocks(_rows, a, b, w, dtype=np.float64, chunks=(a.numblocks[0] * (1,), (2,)))
    (sums,) = compute(parts.sum(axis=0))
    total, kept = float(sums[0]), int(round(sums[1]))
    check_kept(kept, int(x.data.shape[0]), x.name, y.name)
    return total / kept


def check_kept(kept: int, n: int, x: str, y: str) -> None:
    """An error when none of the ``n`` samples of layers ``x`` and ``y`` has a cosine (all zero
    in either), a warning saying how many are left out when some have none."""
    if kept == 0:
        raise InputError(f"aligned cosine similarity is undefined: every sample is all zeros in "
                         f"{x} or {y}")
    if kept < n:
        warnings.warn(f"aligned cosine similarity leaves out {n - kept} of {n} samples whose "
                      f"activations are all zero in {x} or {y} (no cosine)",
                      RepsimWarning, stacklevel=3)
