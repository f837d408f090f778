"""Public pairwise functions of per-layer statistics compared: the magnitude, uniformity and
concentricity differences (ReSi's definitions, from Klabunde et al.'s survey).

Each describes each layer on its own by one number and returns the absolute difference: 0 for
two layers alike in that respect, however unrelated their samples' representations are. The
magnitude comes from the co-moment pass (each layer's mean; jackknife intervals available); the
uniformity and concentricity from the ``"sample_blocks"`` path's pass over the Euclidean
distance tiles (:mod:`dask_repsim.paths.sample_blocks.distances`; jackknife intervals from the
same pass). None depends on how the
samples of the two layers are paired, so a permutation test of them is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..options import Options, SampleDims
from ..results import Estimate
from ..runners import measure_estimate, pair_estimate
from .samples import run_sample_space, sample_space_documented


def magnitude_difference(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, method: str = "auto", join: str = "exact",
) -> Estimate:
    """Magnitude difference: ``| ||mean(X)|| - ||mean(Y)|| |``, the difference of the norms of
    the two layers' mean activation vectors (ReSi's ``magnitude_difference``).

    Parameters
    ----------
    x, y, sample_dims, storage_options, nan_policy, join
        As for :func:`dask_repsim.cka`.
    interval, level, groups, seed
        As for :func:`dask_repsim.cka`: a delete-a-group jackknife interval from the same pass.
    permutations
        Refused (an error): the value does not depend on how the samples are paired.
    method
        ``"auto"`` or ``"covariance"``, the co-moment pass (the only path).

    Returns
    -------
    Estimate
        A float >= 0 (a distance: smaller is more alike), with ``.method`` ``"covariance"``.

    Notes
    -----
    Invariant to rotations and reflections of either layer, not to translations (the mean is
    what it measures) or scaling. Adding units of zero mean changes nothing.

    References
    ----------
    Klabunde, Schumacher, Strohmaier, Lemmerich (2023). Similarity of Neural Network Models: A
    Survey of Functional and Representational Measures. ACM Computing Surveys (2025).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(400, 2))
    >>> x -= x.mean(axis=0)
    >>> round(float(magnitude_difference(x + [3.0, 4.0], x)), 12)   # ||(3, 4)|| - 0
    5.0
    """
    options = Options(sample_dims=sample_dims, storage_options=storage_options,
                      nan_policy=nan_policy, interval=interval, level=level, groups=groups,
                      permutations=permutations, seed=seed)
    return pair_estimate("magnitude_difference", x, y, options, method=method, join=join)


@sample_space_documented
def uniformity_difference(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Uniformity difference: ``|U(X) - U(Y)|`` with each layer's uniformity
    ``U(X) = log((1/n²) sum_ij exp(-2 ||x_i - x_j||²))`` (Wang & Isola 2020, with ``t = 2``;
    ReSi's ``uniformity_difference``).

    The uniformity is lower the more evenly the samples spread out (on the sphere, for the
    normalised embeddings Wang & Isola study); the difference compares how spread out the two
    layers are, not where each sample lies.

    Parameters
    ----------
    {inputs}
    interval, level, groups
        As for :func:`dask_repsim.cka`: a delete-a-group jackknife interval from the same pass
        over the tiles (each layer's statistic of the samples outside each group).
    permutations, seed
        Refused (an error): the value does not depend on how the samples are paired.

    Returns
    -------
    Estimate
        A float >= 0 (a distance), with ``.method`` ``"sample_blocks"``.

    Notes
    -----
    Over all ordered pairs of samples, the sample itself included, as ReSi. Invariant to
    rotations, reflections and translations, not to scaling: the squared distances are in the
    layers' own units (compare normalised activations, as the paper does, when the layers'
    scales differ). Pairs at squared distance beyond about 370 add 0 (``exp`` underflows), in
    the reference code too. One pass over the distance tiles with the other distance-matrix
    measures of a grid.

    References
    ----------
    Wang, Isola (2020). Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> round(float(uniformity_difference(x, x[:, ::-1] + 7.0)), 12)
    0.0
    """
    cell, path, options = run_sample_space(
        "uniformity_difference", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("uniformity_difference", cell, options, path)


@sample_space_documented
def concentricity_difference(
    x: Any, y: Any, *, sample_dims: SampleDims = None,
    storage_options: Mapping[str, Any] | None = None, nan_policy: str = "raise",
    interval: str | None = None, level: float | None = None, groups: int | None = None,
    permutations: int = 0, seed: int | None = None, join: str = "exact",
) -> Estimate:
    """Concentricity difference: ``|C(X) - C(Y)|`` with each layer's concentricity
    ``C(X) = (1/n) sum_i cos(x_i, mean(X))``, the mean cosine similarity of the samples with
    the layer's mean activation vector (ReSi's ``concentricity_difference``).

    Parameters
    ----------
    {inputs}
    interval, level, groups
        As for :func:`dask_repsim.cka`: a delete-a-group jackknife interval from the same pass
        over the tiles (each layer's statistic of the samples outside each group).
    permutations, seed
        Refused (an error): the value does not depend on how the samples are paired.

    Returns
    -------
    Estimate
        A float >= 0 (a distance), with ``.method`` ``"sample_blocks"``.

    Notes
    -----
    A sample whose activations are all zero has no direction and counts 0, as scikit-learn's
    cosine gives it (and so ReSi); a layer whose mean vector is zero leaves the concentricity
    undefined: an error. Invariant to rotations, reflections and isotropic scaling of either
    layer, not to translations. One pass over the sample tiles with the distance-matrix
    measures of a grid.

    References
    ----------
    Klabunde, Schumacher, Strohmaier, Lemmerich (2023). Similarity of Neural Network Models: A
    Survey of Functional and Representational Measures. ACM Computing Surveys (2025).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.abs(np.random.default_rng(0).normal(size=(200, 3)))
    >>> round(float(concentricity_difference(x, 3 * x[:, ::-1])), 12)
    0.0
    """
    cell, path, options = run_sample_space(
        "concentricity_difference", x, y, {}, join, sample_dims=sample_dims,
        storage_options=storage_options, nan_policy=nan_policy, interval=interval, level=level,
        groups=groups, permutations=permutations, seed=seed)
    return measure_estimate("concentricity_difference", cell, options, path)
