"""Hypothesis strategies for activations and the transforms the measures should ignore.

Data are drawn as (sizes, seed) and generated with numpy: hypothesis then explores shapes, chunk
sizes and correlation strengths, while every example stays well conditioned (n well above
p + q, so no measure is degenerate).
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from hypothesis import strategies as st

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@dataclass(frozen=True)
class Activations:
    """Two layers' activations over the same samples, and a row chunk size for dask."""

    x: np.ndarray
    y: np.ndarray
    rows: int

    def dask(self, a: np.ndarray) -> da.Array:
        """``a`` (x, y or a transform of them) as a dask array in this example's row chunks."""
        return da.from_array(a, chunks=(self.rows, -1))


@st.composite
def activations(
    draw: st.DrawFn,
    min_features: int = 1,
    max_features: int = 8,
    same_width: bool | None = None,
) -> Activations:
    """Correlated activations: shared latent factors plus noise, units of varied scale and mean.

    ``same_width``: True forces p == q, False forces p != q, None lets either happen.
    """
    p = draw(st.integers(min_features, max_features))
    if same_width:
        q = p
    elif same_width is False:
        q = draw(st.integers(min_features, max_features).filter(lambda v: v != p))
    else:
        q = draw(st.integers(min_features, max_features))
    n = draw(st.integers(4 * (p + q) + 40, 240))
    rows = draw(st.integers(max(1, n // 6), n))
    coupling = draw(st.floats(0.2, 3.0))
    rng = np.random.default_rng(draw(seeds))
    latent = rng.normal(size=(n, max(p, q)))
    x = coupling * latent[:, :p] @ rng.normal(size=(p, p)) + rng.normal(size=(n, p))
    y = coupling * latent[:, :q] @ rng.normal(size=(q, q)) + rng.normal(size=(n, q))
    # units on different scales and means, as real layers have
    x = x * rng.lognormal(sigma=1.0, size=p) + rng.normal(scale=10.0, size=p)
    y = y * rng.lognormal(sigma=1.0, size=q) + rng.normal(scale=10.0, size=q)
    return Activations(x, y, rows)


def _haar_orthogonal(size: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix, with R's signs fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(size, size)))
    return q * np.sign(np.diagonal(r))


def orthogonal_matrices(size: int) -> st.SearchStrategy[np.ndarray]:
    """Random orthogonal (size x size) matrices, reflections included."""
    return seeds.map(lambda seed: _haar_orthogonal(size, seed))


@st.composite
def well_conditioned_matrices(draw: st.DrawFn, size: int, max_condition: float = 4.0) -> np.ndarray:
    """Invertible matrices U diag(s) V^T with singular values in [1, max_condition], scaled."""
    u = draw(orthogonal_matrices(size))
    v = draw(orthogonal_matrices(size))
    s = np.array(draw(st.lists(st.floats(1.0, max_condition), min_size=size, max_size=size)))
    return draw(isotropic_scales) * (u * s) @ v.T


#: nonzero scalars spanning several orders of magnitude, either sign
isotropic_scales = st.builds(
    lambda magnitude, sign: sign * magnitude,
    st.floats(1e-2, 1e2),
    st.sampled_from([-1.0, 1.0]),
)


def offsets(size: int) -> st.SearchStrategy[np.ndarray]:
    """A constant per unit, up to 1e3 in magnitude (large next to the units' spread)."""
    return st.lists(st.floats(-1e3, 1e3), min_size=size, max_size=size).map(np.array)


def permutations(size: int) -> st.SearchStrategy[np.ndarray]:
    """A permutation of range(size), as an index array."""
    return st.permutations(range(size)).map(np.array)


def data_kinds(seed: int, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs of layers of the kinds every measure is checked on: Gaussian (a tanh of it beside
    it), low-rank, heavy-tailed, offset by 1e4, ReLU-quantised integers (tied distances) and
    n < p (40 samples of 300 units; the others ``n`` samples), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 12))
    related = np.tanh(z @ rng.normal(size=(12, 9))) + 0.4 * rng.normal(size=(n, 9))
    low_rank = rng.normal(size=(n, 2)) @ rng.normal(size=(2, 30))
    heavy = rng.standard_t(2.5, size=(n, 10))
    quantised = np.floor(np.maximum(4 * z[:, :8], 0))  # ReLU, integer: many tied distances
    wide = rng.normal(size=(40, 300))  # n < p
    return {
        "gaussian": (z, related),
        "low_rank": (low_rank, related),
        "heavy_tailed": (heavy, heavy[:, :6] ** 2 + rng.normal(size=(n, 6))),
        "offset": (z + 1e4, related - 1e4),
        "quantised": (quantised, np.floor(np.maximum(4 * related, 0))),
        "n_below_p": (wide, np.tanh(wide[:, :50]) + 0.2 * rng.normal(size=(40, 50))),
    }
