"""The Platonic Representation Hypothesis code's feature files into a capture store.

The layout is that of github.com/minyoungg/platonic-rep (commit dcd76ba3,
``extract_features.py`` and ``utils.to_feature_filename``): one file per model,
``<output_dir>/<dataset>/<subset>/<model>_pool-<pool>[_prompt-...][_cid-...].pt``, written by
``torch.save`` of a dict whose ``"feats"`` is a tensor of shape ``[samples, layers,
features]``: for language models the pooled ``hidden_states`` (layer 0 the embeddings,
layer ``i`` the output of block ``i``), beside ``"num_params"``, ``"mask"``, ``"loss"`` and
``"bpb"``; for vision transformers the CLS token after each block (``blocks.<i>.add_1``),
beside ``"num_params"``. Layer ``i`` is stored as ``layer_<i>``; samples are the dataset's
rows, numbered by position. The file is memory-mapped (``torch.load(mmap=True,
weights_only=True)``) and read a chunk of samples at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .common import Rows, Source, shared, torch_dtype, torch_load, torch_numpy, write_store

KEY = "feats"


def _details(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The file's numbers besides the features (parameter count, loss), for provenance."""
    out = {}
    for key, value in saved.items():
        if key in (KEY, "mask"):
            continue
        if hasattr(value, "numel") and value.numel() == 1:
            value = value.item()
        if isinstance(value, int | float | str):
            out[key] = value
    return out


def platonic_source(path: str | os.PathLike) -> Source:
    """The :class:`~dask_repsim.imports.common.Source` of one model's ``.pt`` file."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file {path}")
    saved = torch_load(path)
    if not isinstance(saved, Mapping) or KEY not in saved:
        have = list(saved) if isinstance(saved, Mapping) else type(saved).__name__
        raise ValueError(f"{path} is not a platonic-rep feature file: it holds no {KEY!r} "
                         f"(it holds {have})")
    feats = saved[KEY]
    if len(feats.shape) != 3:
        raise ValueError(f"{path}: {KEY!r} has shape {tuple(feats.shape)}, not [samples, "
                         "layers, features]")
    n, n_layers, width = (int(s) for s in feats.shape)
    dtype, details = torch_dtype(feats, path), _details(saved)
    del feats, saved

    def load(start: int, stop: int) -> dict[str, np.ndarray]:
        rows = torch_numpy(torch_load(path)[KEY][start:stop])
        return {f"layer_{i}": rows[:, i] for i in range(n_layers)}

    of = shared(load)
    layers = {f"layer_{i}": Rows((n, width), dtype, f"{path}:{KEY}[:, {i}]", of(f"layer_{i}"))
              for i in range(n_layers)}
    name = os.path.basename(path)[:-3] if path.endswith(".pt") else os.path.basename(path)
    return Source(tool="platonic-rep", root=os.path.dirname(path), files=[path], layers=layers,
                  model=name, details=details)


def import_platonic(
    path: str | os.PathLike,
    store: Any,
    *,
    layers: Sequence[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_samples: int | None = None,
    dtype: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    preprocessing: Any = None,
    model: str | None = None,
) -> zarr.Group:
    """Import one model's features saved by platonic-rep's ``extract_features.py``.

    Parameters
    ----------
    path
        The model's ``.pt`` file: a dict whose ``"feats"`` has shape ``[samples, layers,
        features]``. Layer ``i`` becomes the array ``layer_<i>``; samples are numbered by
        position (the dataset's rows). Its other numbers (``num_params``, ``loss``,
        ``bpb``) go into the provenance.
    store
        Where the Zarr v3 group goes (see :func:`~dask_repsim.imports.arrays.import_arrays`).
    layers, resume, overwrite, chunk_samples, dtype, storage_options, preprocessing
        As for :func:`~dask_repsim.imports.arrays.import_arrays`.
    model
        The model's name in the provenance (default: the file's stem,
        ``<model>_pool-<pool>``).

    Returns
    -------
    zarr.Group
        The capture store, one array per layer and the ``sample`` positions.

    Examples
    --------
    >>> import pytest, tempfile
    >>> torch = pytest.importorskip("torch")
    >>> path = os.path.join(tempfile.mkdtemp(), "vit_tiny_pool-cls.pt")
    >>> torch.save({"feats": torch.ones(10, 3, 4), "num_params": 5_000_000}, path)
    >>> group = import_platonic(path, path + ".zarr")
    >>> sorted(group.array_keys()), group["layer_2"].shape
    (['layer_0', 'layer_1', 'layer_2', 'sample'], (10, 4))
    """
    return write_store(
        platonic_source(path), store, layers=layers, resume=resume, overwrite=overwrite,
        chunk_samples=chunk_samples, dtype=dtype, storage_options=storage_options,
        preprocessing=preprocessing, model=model)
