"""Public pairwise function of the topological measure: Representation Topology Divergence
(Barannikov, Trofimov, Balabin & Burnaev 2022).

It compares the two layers' graphs of samples through a persistence barcode
(:mod:`dask_repsim.paths.sample_blocks.topology`), computed by gudhi (the optional extra
``dask-repsim[topology]``) with every sample in memory, on the ``"sample_blocks"`` path. Its
permutation test computes the barcodes again for each permutation, its jackknife interval without
each group of samples (centred on the estimate; conservative).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..options import SampleDims
from ..results import Estimate
from ..runners import measure_estimate
from .samples import run_sample_space, sample_space_documented


@sample_space_documented
def rtd(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Representation Topology Divergence (Barannikov et al. 2022), on all the samples given.

    With ``r1`` and ``r2`` the layers' Euclidean distance matrices between samples, each
    divided by its 0.9 quantile, ``RTD(x, y)`` is the summed length of the one-dimensional
    bars of the Vietoris-Rips filtration of the 2n x 2n matrix ``[[0, r1], [r1, min(r1,
    r2)]]`` (the R-Cross-Barcode), and the value is ``(RTD(x, y) + RTD(y, x)) / 2``.

    Parameters
    ----------
    {inputs}
    {unsupported}

    Returns
    -------
    Estimate
        A float >= 0 (a divergence: 0 when the two layers' normalised distances between
        samples are equal), with ``.method`` ``"sample_blocks"``.

    Notes
    -----
    Needs gudhi (``pip install 'dask-repsim[topology]'``), whose Ripser-based persistence
    computes the barcode in float64. Invariant to rotations, reflections, translations and
    isotropic scaling of either layer, and to permuting units; not to other linear maps. Every
    sample is held in memory, with the 2n x 2n matrix and the persistence computation's tables
    (about 1 KiB per squared sample count,
    :func:`~dask_repsim.paths.sample_blocks.topology.rtd_bytes`); beyond the memory budget
    (dask config ``repsim.memory-budget``) it is an error before anything is read. Its time
    grows faster than n^3: seconds at 500 samples, tens of seconds at 1,000. The authors'
    ``rtd`` averages this value over 10 random subsets of 500 samples; compare such subsets to
    reproduce it.

    References
    ----------
    Barannikov, Trofimov, Balabin, Burnaev (2022). Representation Topology Divergence: A Method
    for Comparing Neural Network Representations. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 8))
    >>> q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    >>> round(float(rtd(x, 5 * x @ q + 2)), 9)   # a rotated, scaled, shifted copy
    0.0
    >>> float(rtd(x, rng.normal(size=(100, 8)))) > 1   # an unrelated layer
    True
    """
    cell, path, options = run_sample_space(
        "rtd", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("rtd", cell, options, path)
