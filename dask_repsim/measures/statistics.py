"""Per-layer statistics compared: the difference of one number that describes each layer on
its own (Klabunde et al. 2023's "statistics" group; ReSi's definitions).

Only the magnitude is a function of the co-moments (each layer's mean); the concentricity and
uniformity need each sample's activations and come from the sample-space tiles
(:mod:`dask_repsim.paths.sample_blocks.distances`). Such a difference does not depend on how
the two layers' samples are paired (:attr:`dask_repsim.registry.Measure.paired`): two layers
with the same statistic are 0 apart however unrelated they are.
"""

from __future__ import annotations

import numpy as np

from ..engine.views import Pair


def magnitude_difference(pair: Pair) -> float:
    """``| ||mean(X)|| - ||mean(Y)|| |``: the difference of the norms of the layers' mean
    activation vectors (ReSi's ``magnitude_difference``).

    Examples
    --------
    >>> from dask_repsim.engine.moments import Statistics
    >>> from dask_repsim.engine.views import pair, sides
    >>> x = np.random.default_rng(0).normal(size=(50, 2))
    >>> x -= x.mean(axis=0)
    >>> stats = Statistics.from_chunk([x + [3.0, 4.0], x])   # means (3, 4) and (0, 0)
    >>> round(magnitude_difference(pair(stats, sides(stats, ["x", "y"]), 0, 1)), 12)
    5.0
    """
    pair.x.require_variance()
    pair.y.require_variance()
    return float(abs(np.linalg.norm(pair.x.mean) - np.linalg.norm(pair.y.mean)))
