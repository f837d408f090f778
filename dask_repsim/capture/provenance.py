"""What made a capture store: the model, its parameters, the preprocessing, the versions.

Every writer of a capture store (:func:`~dask_repsim.capture_activations`, the Hugging Face
capture, the importers) records a :func:`describe` dict in the group's attribute
:data:`PROVENANCE_ATTR` before it writes data; the chunk writer adds the number of samples and
a hash of their ids when the capture completes (:func:`finish`). :func:`dask_repsim.compare`
copies both sides' provenance into its result (:func:`of_input`) and warns when two stores
claim the same model with different preprocessing (:func:`check_pair`): activations of one
network that silently came from different image sizes or tokenisations are not comparable.

Provenance is a plain JSON-able dict:

``model``
    the model's class (``"transformers.models.bert.modeling_bert.BertModel"``), or what the
    source file says made it (importers), or None;
``parameters_sha256``
    a hash of the model's parameters and buffers (names, dtypes, shapes and bytes in order), so
    that two stores of one class with different weights differ, or None;
``preprocessing``
    what the caller says was done to the inputs (a string; a dataset's ``transform`` repr, a
    tokenizer's settings), or None when nobody said;
``source``
    for imported stores: the tool (``"thingsvision"``, ``"npy"``) and the files read;
``dtype``, ``versions``, ``created``
    storage dtype, the libraries' versions (python, numpy, zarr, dask_repsim, torch and
    transformers where imported) and the UTC time of writing;
``samples``, ``sample_ids_sha256``
    set when the capture completes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from ..exceptions import RepsimWarning

#: Group attribute holding a capture store's provenance.
PROVENANCE_ATTR = "dask_repsim_provenance"


def parameters_hash(model: Any) -> str | None:
    """sha256 of a PyTorch model's ``state_dict`` (names, dtypes, shapes, bytes, in order);
    None for an object without one.

    Examples
    --------
    >>> import pytest
    >>> torch = pytest.importorskip("torch")
    >>> _ = torch.manual_seed(0)
    >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    >>> parameters_hash(a) == parameters_hash(a), parameters_hash(a) == parameters_hash(b)
    (True, False)
    """
    state = getattr(model, "state_dict", None)
    if state is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in state().items():
        tensor = tensor.detach().to("cpu")
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        data = np.ascontiguousarray(tensor.numpy())
        digest.update(f"{name}|{data.dtype.str}|{data.shape}|".encode())
        digest.update(data.tobytes())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from ..version import __version__

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "zarr": zarr.__version__, "dask_repsim": __version__}
    for name in ("torch", "transformers"):
        module = sys.modules.get(name)  # recorded when in use, never imported for this
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


def describe(*, model: Any = None, preprocessing: Any = None, source: Mapping[str, Any] | None
             = None, dtype: Any = None, model_name: str | None = None) -> dict[str, Any]:
    """A capture's provenance (see the module's text for the fields).

    ``model``: the PyTorch model, whose class and parameter hash are recorded; ``model_name``:
    the model's class or name when there is no model object (importers). ``preprocessing``:
    recorded as given if a string, else as its ``repr`` (a torchvision ``Compose``, a tokenizer
    call's keyword dict). ``source``: for importers, the tool and the files read.

    Examples
    --------
    >>> p = describe(model_name="resnet18", preprocessing="224 px, ImageNet normalisation",
    ...              source={"tool": "npy", "files": ["fc.npy"]}, dtype="float32")
    >>> p["model"], p["preprocessing"], p["dtype"], sorted(p["versions"])[:2]
    ('resnet18', '224 px, ImageNet normalisation', 'float32', ['dask_repsim', 'numpy'])
    """
    if model is not None:
        model_name = model_name or f"{type(model).__module__}.{type(model).__qualname__}"
    if preprocessing is not None and not isinstance(preprocessing, str):
        preprocessing = repr(preprocessing)
    return {
        "model": model_name,
        "parameters_sha256": None if model is None else parameters_hash(model),
        "preprocessing": preprocessing,
        "source": None if source is None else json.loads(json.dumps(dict(source), default=str)),
        "dtype": None if dtype is None else str(np.dtype(dtype)),
        "versions": _versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def record(root: zarr.Group, provenance: Mapping[str, Any]) -> None:
    """Write ``provenance`` into the group's attributes (before any data is written)."""
    root.attrs[PROVENANCE_ATTR] = dict(provenance)


def finish(root: zarr.Group, ids: np.ndarray, dtype: Any = None) -> None:
    """Add the number of samples and a hash of their ids to a completed capture's provenance,
    and the storage ``dtype`` (a str, or a dict per layer) where it had none (a store without
    provenance is left as it is)."""
    provenance = root.attrs.get(PROVENANCE_ATTR)
    if provenance is None:
        return
    ids = np.asarray(ids)
    text = ids.dtype.kind not in "iu"
    data = "\n".join(map(str, ids.tolist())).encode() if text else \
        np.ascontiguousarray(ids, dtype="<i8").tobytes()
    provenance = {**provenance, "samples": int(len(ids)),
                  "sample_ids_sha256": hashlib.sha256(data).hexdigest()}
    if provenance.get("dtype") is None:
        provenance["dtype"] = dtype
    root.attrs[PROVENANCE_ATTR] = provenance


def of_input(obj: Any, storage_options: Mapping[str, Any] | None = None) -> dict | None:
    """The provenance of what :func:`dask_repsim.compare` was given, if it has one: a capture
    group (object, path or URL) or a Dataset opened from one; None for anything else."""
    attrs = getattr(obj, "attrs", None)
    if isinstance(obj, str | os.PathLike):
        kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
        path = os.fspath(obj)
        try:
            attrs = zarr.open_group(store=path, mode="r", **kwargs).attrs
        except (FileNotFoundError, ValueError, TypeError, KeyError, OSError):
            return None  # an array, a netCDF file: no capture store
    if attrs is None:
        return None
    provenance = attrs.get(PROVENANCE_ATTR)
    if isinstance(provenance, str):  # a Dataset written to netCDF holds it as JSON text
        provenance = json.loads(provenance)
    return dict(provenance) if isinstance(provenance, Mapping) else None


def of_networks(zoo: Any, storage_options: Mapping[str, Any] | None = None,
                ) -> dict[str, dict]:
    """The provenance of each network of a zoo (a mapping of names to networks, a zarr group
    or path holding a group per network, a DataTree) that has one, by network name.

    Examples
    --------
    >>> root = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    >>> record(root.create_group("seed0"), describe(model_name="resnet18"))
    >>> _ = root.create_group("seed1")  # nothing recorded: left out
    >>> sorted(of_networks(root)), of_networks(root)["seed0"]["model"]
    (['seed0'], 'resnet18')
    """
    if isinstance(zoo, str | os.PathLike):
        kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
        try:
            zoo = zarr.open_group(store=os.fspath(zoo), mode="r", **kwargs)
        except (FileNotFoundError, ValueError, TypeError, KeyError, OSError):
            return {}
    if isinstance(zoo, zarr.Group):
        items = list(zoo.groups())
    elif hasattr(zoo, "children"):  # an xarray.DataTree
        items = list(zoo.children.items())
    elif isinstance(zoo, Mapping):
        items = list(zoo.items())
    else:
        return {}
    found = {str(name): of_input(net, storage_options) for name, net in items}
    return {name: p for name, p in found.items() if p is not None}


def check_pair(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None,
               what: str = "both inputs") -> None:
    """Warn (:class:`~dask_repsim.RepsimWarning`) when two stores claim the same model (class
    and parameter hash, where both have one) but record different preprocessing."""
    if not a or not b or a.get("model") is None or a.get("model") != b.get("model"):
        return
    ha, hb = a.get("parameters_sha256"), b.get("parameters_sha256")
    if ha is not None and hb is not None and ha != hb:
        return  # two trainings of one architecture: preprocessing may differ on purpose
    pa, pb = a.get("preprocessing"), b.get("preprocessing")
    if pa != pb:
        warnings.warn(
            f"{what} come from the model {a['model']!r} but their preprocessing differs "
            f"({pa!r} vs {pb!r}); their activations may not be comparable",
            RepsimWarning, stacklevel=4)
