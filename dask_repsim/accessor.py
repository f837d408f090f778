"""The ``.repsim`` accessor on xarray objects: thin forwards to the package's functions.

Importing this module (``import dask_repsim`` does) registers ``Dataset.repsim`` and
``DataArray.repsim``. Every method passes the object as the first input and everything else
unchanged, so the functions' documentation applies as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import xarray as xr

from . import grid, zoo
from .pairwise import (
    cca,
    cka,
    distances,
    outputs,
    predictivity,
    samples,
    shape,
    statistics,
    topology,
    units,
)
from .results import CCAResult, Estimate

__all__ = ["DataArrayRepsimAccessor", "DatasetRepsimAccessor"]


@xr.register_dataset_accessor("repsim")
class DatasetRepsimAccessor:
    """``ds.repsim``: a Dataset holds one layer per variable.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> import dask_repsim.accessor
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 5))
    >>> ds = xr.Dataset({"fc1": (("sample", "u1"), x), "fc2": (("sample", "u2"), 2 * x)})
    >>> round(float(ds.repsim.compare(metrics=["cka"]).cka.sel(layer_a="fc1", layer_b="fc2")), 6)
    1.0
    """

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    def compare(self, other: Any = None, **kwargs: Any) -> xr.Dataset:
        """Every layer of this Dataset against every layer of ``other`` (itself when ``None``).

        Same as :func:`dask_repsim.compare` with this Dataset as ``a``.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(300, 5))
        >>> a = xr.Dataset({"fc1": (("sample", "u1"), x)})
        >>> b = xr.Dataset({"fc1": (("sample", "u1"), x @ np.diag([1.0, 2, 3, 4, 5]))})
        >>> round(a.repsim.compare(b, metrics=["mean_cca"]).mean_cca.item(), 6)
        1.0
        """
        return grid.compare(self._obj, other, **kwargs)

    def unstack_zoo(self) -> xr.Dataset:
        """This :func:`dask_repsim.compare_zoo` result over (network_a, layer_a, network_b,
        layer_b): :func:`dask_repsim.unstack_zoo`.

        Examples
        --------
        >>> import numpy as np
        >>> import dask_repsim as dr
        >>> x = np.random.default_rng(0).normal(size=(200, 4))
        >>> ds = dr.compare_zoo({"s0": {"fc": x}, "s1": {"fc": -x}}, metrics=["cka"])
        >>> ds.repsim.unstack_zoo().cka.shape
        (2, 1, 2, 1)
        """
        return zoo.unstack_zoo(self._obj)

    def select_zoo(self, **kwargs: Any) -> xr.Dataset:
        """Some networks and layers of this :func:`dask_repsim.compare_zoo` result:
        :func:`dask_repsim.select_zoo`.

        Examples
        --------
        >>> import numpy as np
        >>> import dask_repsim as dr
        >>> x = np.random.default_rng(0).normal(size=(200, 4))
        >>> ds = dr.compare_zoo({"s0": {"fc": x}, "s1": {"fc": -x}}, metrics=["cka"])
        >>> [str(v) for v in ds.repsim.select_zoo(network_b="s1").b.values]
        ['s1/fc']
        """
        return zoo.select_zoo(self._obj, **kwargs)

    def best_matches(self, metric: str = "cka") -> xr.Dataset:
        """Each layer's best match in every other network: :func:`dask_repsim.best_matches`.

        Examples
        --------
        >>> import numpy as np
        >>> import dask_repsim as dr
        >>> x = np.random.default_rng(0).normal(size=(200, 4))
        >>> ds = dr.compare_zoo({"s0": {"fc": x}, "s1": {"g": -x}}, metrics=["cka"])
        >>> str(ds.repsim.best_matches("cka").match.sel(a="s0/fc", network_b="s1").item())
        'g'
        """
        return zoo.best_matches(self._obj, metric)

    def network_similarity(self, metric: str = "cka", summary: str = "max") -> xr.DataArray:
        """One number per pair of networks: :func:`dask_repsim.network_similarity`.

        Examples
        --------
        >>> import numpy as np
        >>> import dask_repsim as dr
        >>> x = np.random.default_rng(0).normal(size=(200, 4))
        >>> ds = dr.compare_zoo({"s0": {"fc": x}, "s1": {"fc": -x}}, metrics=["cka"])
        >>> ds.repsim.network_similarity("cka").round(6).values.tolist()
        [[1.0, 1.0], [1.0, 1.0]]
        """
        return zoo.network_similarity(self._obj, metric, summary)


@xr.register_dataarray_accessor("repsim")
class DataArrayRepsimAccessor:
    """``da.repsim``: a DataArray is one layer; its ``sample_dims`` index samples.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> import dask_repsim.accessor
    >>> rng = np.random.default_rng(0)
    >>> a = xr.DataArray(rng.normal(size=(400, 6)), dims=("sample", "unit"))
    >>> b = 3 * a[:, ::-1]
    >>> round(a.repsim.cka(b), 6), round(a.repsim.procrustes(b), 6)
    (1.0, 1.0)
    """

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    def cka(self, other: Any, **kwargs: Any) -> Estimate:
        """Linear CKA with ``other``: :func:`dask_repsim.cka` (this DataArray as ``x``).

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 6)), dims=("sample", "u"))
        >>> round(a.repsim.cka(a * 2 + 1), 6)
        1.0
        """
        return cka.cka(self._obj, other, **kwargs)

    def cca(self, other: Any, **kwargs: Any) -> CCAResult:
        """Canonical correlations with ``other``: :func:`dask_repsim.cca`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 3)), dims=("sample", "u"))
        >>> np.round(a.repsim.cca(a.cumsum("u")).rho, 6)
        array([1., 1., 1.])
        """
        return cca.cca(self._obj, other, **kwargs)

    def svcca(self, other: Any, **kwargs: Any) -> Estimate:
        """SVCCA with ``other``: :func:`dask_repsim.svcca`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 4)), dims=("sample", "u"))
        >>> round(a.repsim.svcca(a.cumsum("u"), keep=4), 6)
        1.0
        """
        return cca.svcca(self._obj, other, **kwargs)

    def pwcca(self, other: Any, **kwargs: Any) -> Estimate:
        """Projection-weighted CCA with ``other``: :func:`dask_repsim.pwcca`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 4)), dims=("sample", "u"))
        >>> round(a.repsim.pwcca(a.cumsum("u")), 6)
        1.0
        """
        return cca.pwcca(self._obj, other, **kwargs)

    def linear_regression(self, other: Any, **kwargs: Any) -> Estimate:
        """R^2 of ``other`` fitted linearly from this layer: :func:`dask_repsim.linear_regression`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 4)), dims=("sample", "u"))
        >>> round(a.repsim.linear_regression(a[:, :2]), 6)
        1.0
        """
        return cca.linear_regression(self._obj, other, **kwargs)

    def procrustes(self, other: Any, **kwargs: Any) -> Estimate:
        """Orthogonal Procrustes similarity with ``other``: :func:`dask_repsim.procrustes`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 4)), dims=("sample", "u"))
        >>> round(a.repsim.procrustes(-a), 6)
        1.0
        """
        return shape.procrustes(self._obj, other, **kwargs)

    def compare(self, other: Any = None, **kwargs: Any) -> xr.Dataset:
        """Several measures with ``other`` at once: :func:`dask_repsim.compare`.

        A named DataArray gives its name to its layer in the result.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> rng = np.random.default_rng(0)
        >>> a = xr.DataArray(rng.normal(size=(400, 4)), dims=("sample", "u"), name="fc1")
        >>> result = a.repsim.compare(metrics=["cka", "procrustes"])
        >>> result.cka.dims, [str(v) for v in result.layer_a.values]
        (('layer_a', 'layer_b'), ['fc1'])
        """
        return grid.compare(self._obj, other, **kwargs)

    def unit_correlation(self, other: Any, **kwargs: Any) -> xr.DataArray:
        """Unit-by-unit Pearson correlations with ``other``: :func:`dask_repsim.unit_correlation`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 3)), dims=("sample", "u"))
        >>> a.repsim.unit_correlation(-a).shape
        (3, 3)
        """
        return units.unit_correlation(self._obj, other, **kwargs)

    def match_units(self, other: Any, **kwargs: Any) -> Any:
        """One-to-one or semi-matching of units with ``other``: :func:`dask_repsim.match_units`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 3)), dims=("sample", "u"))
        >>> matched = a.repsim.match_units(a[:, ::-1])
        >>> matched.sizes["pair"]
        3
        """
        return units.match_units(self._obj, other, **kwargs)

    def sparse_prediction(self, other: Any, **kwargs: Any) -> Any:
        """Lasso prediction of ``other``'s units from this layer's:
        :func:`dask_repsim.sparse_prediction`."""
        return units.sparse_prediction(self._obj, other, **kwargs)

    def cluster_units(self, other: Any, **kwargs: Any) -> Any:
        """Spectral clustering of both layers' units: :func:`dask_repsim.cluster_units`."""
        return units.cluster_units(self._obj, other, **kwargs)

    def hsic(self, other: Any, **kwargs: Any) -> Estimate:
        """Linear HSIC with ``other``: :func:`dask_repsim.hsic`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 3)), dims=("sample", "u"))
        >>> bool(a.repsim.hsic(a) > 0)
        True
        """
        return cka.hsic(self._obj, other, **kwargs)

    def shape_metric(self, other: Any, **kwargs: Any) -> Estimate:
        """Angular shape distance to ``other``: :func:`dask_repsim.shape_metric`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(400, 3)), dims=("sample", "u"))
        >>> round(a.repsim.shape_metric(-a), 6)
        0.0
        """
        return shape.shape_metric(self._obj, other, **kwargs)


    def rsa(self, other: Any, **kwargs: Any) -> Estimate:
        """RSA with ``other``: :func:`dask_repsim.rsa`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(200, 6)), dims=("sample", "u"))
        >>> round(a.repsim.rsa(3 * a), 6)
        1.0
        """
        return samples.rsa(self._obj, other, **kwargs)

    def mutual_knn(self, other: Any, **kwargs: Any) -> Estimate:
        """Mutual k-nearest-neighbour alignment with ``other``: :func:`dask_repsim.mutual_knn`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(200, 6)), dims=("sample", "u"))
        >>> float(a.repsim.mutual_knn(2 * a, k=5))
        1.0
        """
        return samples.mutual_knn(self._obj, other, **kwargs)

    def cknna(self, other: Any, **kwargs: Any) -> Estimate:
        """CKNNA with ``other``: :func:`dask_repsim.cknna`.

        Examples
        --------
        >>> import numpy as np
        >>> import xarray as xr
        >>> import dask_repsim.accessor
        >>> a = xr.DataArray(np.random.default_rng(0).normal(size=(200, 6)), dims=("sample", "u"))
        >>> round(a.repsim.cknna(2 * a, k=5), 9)
        1.0
        """
        return samples.cknna(self._obj, other, **kwargs)


#: the other measures' public functions, each a method forwarding to it as the ones above do
FORWARDED = {
    cka: ("ensd",),
    cca: ("eigenspace_overlap", "gulp"),
    shape: ("permutation_distance", "bures_distance", "aligned_cosine"),
    distances: ("distance_correlation", "rsm_norm_difference"),
    statistics: ("magnitude_difference", "uniformity_difference", "concentricity_difference"),
    outputs: ("disagreement", "jensen_shannon"),
    samples: ("jaccard_knn", "rank_similarity", "joint_rank_jaccard", "second_order_cosine"),
    predictivity: ("ridge_predictivity", "pls_predictivity"),
    topology: ("rtd",),
}


def _forward(function: Callable[..., Any]) -> Callable[..., Any]:
    """A method calling ``function`` with the DataArray as ``x``."""
    name = function.__name__

    def method(self: DataArrayRepsimAccessor, other: Any, **kwargs: Any) -> Any:
        return function(self._obj, other, **kwargs)

    method.__name__, method.__qualname__ = name, f"DataArrayRepsimAccessor.{name}"
    first = " ".join((function.__doc__ or name).strip().split("\n\n")[0].split())
    method.__doc__ = f"{first}\n\n:func:`dask_repsim.{name}` with this DataArray as ``x``."
    return method


for _module, _names in FORWARDED.items():
    for _name in _names:
        setattr(DataArrayRepsimAccessor, _name, _forward(getattr(_module, _name)))

