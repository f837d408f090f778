"""Public pairwise functions of two output layers' predictions, sample by sample: prediction
disagreement and the Jensen-Shannon divergence of their softmax outputs (functional measures,
as ReSi and Klabunde et al.'s survey define them).

They compare what two networks *output* for each sample, not how they represent it: use them on
the logits of classifiers over the same classes (in the same order). One pass over row blocks of
both layers (:mod:`dask_repsim.paths.sample_blocks.outputs`), on the ``"sample_blocks"`` path;
jackknife intervals and permutation tests from the same pass
(:mod:`dask_repsim.paths.sample_blocks.outputs_inference`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..options import SampleDims
from ..results import Estimate
from ..runners import measure_estimate
from .samples import run_sample_space, sample_space_documented


@sample_space_documented
def disagreement(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Prediction disagreement: the share of samples whose two output layers predict different
    classes, ``mean_i [argmax x_i != argmax y_i]`` (ReSi's ``Disagreement``).

    Parameters
    ----------
    {inputs}
    {unsupported}

    Returns
    -------
    Estimate
        A float in [0, 1] (a distance: 0 when the predictions always agree), with
        ``.method`` ``"sample_blocks"``.

    Notes
    -----
    The two layers must have the same number of units (the same classes, in the same order;
    a different count is an error). Of equal largest logits the first counts, as
    ``numpy.argmax``. Invariant to any increasing map of the logits applied to every unit
    alike; not to permuting units.

    References
    ----------
    Klabunde, Schumacher, Strohmaier, Lemmerich (2023). Similarity of Neural Network Models: A
    Survey of Functional and Representational Measures. ACM Computing Surveys (2025).

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.random.default_rng(0).normal(size=(1000, 10))
    >>> float(disagreement(logits, 2 * logits + 1))
    0.0
    """
    cell, path, options = run_sample_space(
        "disagreement", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("disagreement", cell, options, path)


@sample_space_documented
def jensen_shannon(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """The Jensen-Shannon divergence of the two output layers' softmax distributions, in bits,
    averaged over samples: ``mean_i JSD(softmax(x_i), softmax(y_i))`` (ReSi's ``JSD``).

    Parameters
    ----------
    {inputs}
    {unsupported}

    Returns
    -------
    Estimate
        A float in [0, 1] (a distance: 0 when the predicted distributions are equal), with
        ``.method`` ``"sample_blocks"``.

    Notes
    -----
    ``JSD(p, q) = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``, base-2 logarithms
    (so at most 1), the softmax in float64. The two layers must have the same number of units.
    Invariant to adding a constant to all of a sample's logits (the softmax is); not to
    scaling them (a temperature).

    References
    ----------
    Lin (1991). Divergence measures based on the Shannon entropy. IEEE Transactions on
    Information Theory 37, 145-151.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.random.default_rng(0).normal(size=(1000, 10))
    >>> round(float(jensen_shannon(logits, logits + 3.0)), 12)
    0.0
    """
    cell, path, options = run_sample_space(
        "jensen_shannon", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("jensen_shannon", cell, options, path)
