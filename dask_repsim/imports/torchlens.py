"""TorchLens' saved activations into a capture store.

Two of TorchLens 2.36.1's on-disk forms are read, from their JSON manifests and safetensors
files, without importing TorchLens:

- the artifact of ``torchlens.dataset_extraction.extract_dataset(model, stimuli, layers,
  output_dir=D, stimulus_ids=...)``: ``D/manifest.json`` (schema ``tl_extract_manifest_v2``;
  ``status`` ``"complete"``, ``layers`` maps each output key to its per-stimulus shape and
  stored dtype, in layer-plan order), ``D/ledger.jsonl`` (one line per committed shard:
  ``file``, ``row_start``, ``n_rows``), ``D/stimulus_ids.json`` (``{"ids": [...]}``, the
  sample ids) and ``D/batch_XXXXX.safetensors`` shards, batch-major, one tensor per output
  key (``.pt`` shards are refused: they cannot be read in parts without unpickling);
- portable trace bundles of ``torchlens.save(trace, "x.tlspec")``: ``manifest.json`` lists
  each saved tensor (``kind`` ``"out"``, ``label`` ``"<layer>:<pass>"``, ``shape``,
  ``relative_path`` of a safetensors blob holding it as ``"data"``). A bundle is one batch;
  several bundles (one per batch) are read one after the other, samples numbered by
  position. Layers are named by label, a first pass's ``:1`` left out (``linear_1_1``),
  later passes kept (``linear_1_1:2``); by default the layers are the tensors whose first
  axis is the batch (the length of the first tensor's, the input's).

Each layer is read a chunk of rows at a time with ``safetensors.safe_open(...).get_slice``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .common import Rows, Source, concat, read_ids, torch_numpy, write_store

MANIFEST = "manifest.json"
EXTRACTION_SCHEMA = "tl_extract_manifest_v2"
# safetensors dtypes as read (bfloat16 as float32, which holds it exactly)
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "float32",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool"}


def safetensors_rows(path: str, key: str, where: str) -> Rows:
    """The rows of tensor ``key`` of a safetensors file, read by slices."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            if key not in f.keys():
                raise ValueError(f"{path} holds no tensor {key!r} ({where})")
            part = f.get_slice(key)
            shape, dtype = tuple(part.get_shape()), part.get_dtype()
    except OSError as err:
        raise OSError(f"cannot read {path} ({err})") from None
    if dtype not in _DTYPES:
        raise TypeError(f"{where} holds {dtype} data; activations must be real numbers")
    dtype = np.dtype(_DTYPES[dtype])

    def fetch(start: int, stop: int) -> np.ndarray:
        with safe_open(path, framework="pt") as f:
            return torch_numpy(f.get_slice(key)[start:stop])

    return Rows(shape, dtype, where, fetch)


def _json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path} ({err})") from None


def _extraction(folder: str, manifest: Mapping[str, Any]) -> Source:
    """An ``extract_dataset`` artifact: its shards, layer by layer, and its stimulus ids."""
    if manifest.get("status") != "complete":
        raise ValueError(f"{folder}: the TorchLens extraction is {manifest.get('status')!r}, "
                         "not complete; finish it with extract_dataset(..., resume=True)")
    with open(os.path.join(folder, "ledger.jsonl")) as f:
        shards = sorted((json.loads(line) for line in f if line.strip()),
                        key=lambda row: row["row_start"])
    files, expected = [], 0
    for row in shards:
        if row["row_start"] != expected:
            raise ValueError(f"{folder}/ledger.jsonl: shard {row['file']} starts at row "
                             f"{row['row_start']}, not {expected}")
        if not row["file"].endswith(".safetensors"):
            raise ValueError(f"{folder}/{row['file']}: only safetensors shards can be read in "
                             "parts; extract again with shard_format='safetensors'")
        expected += row["n_rows"]
        files.append(os.path.join(folder, row["file"]))
    if not files:
        raise ValueError(f"{folder}/ledger.jsonl lists no shards")
    layers = {str(key): concat([safetensors_rows(f, key, f"{f}:{key}") for f in files],
                               f"{folder}:{key}") for key in manifest.get("layers") or {}}
    ids_path = os.path.join(folder, "stimulus_ids.json")
    ids = _json(ids_path).get("ids") if os.path.isfile(ids_path) else None
    model = (manifest.get("signature") or {}).get("model_identity") or {}
    return Source(tool="torchlens", root=folder, files=[os.path.join(folder, MANIFEST), *files],
                  layers=layers, ids=None if ids is None else read_ids(ids, ids_path),
                  ids_from="position" if ids is None else "stimulus_ids.json",
                  details={"model_identity": model.get("digest")})


def _name(label: str) -> str:
    layer, _, passes = label.rpartition(":")
    return layer if layer and passes == "1" else label


def _bundles(paths: list[str]) -> Source:
    """Trace bundles (``.tlspec``), one batch each, read one after the other."""
    per_layer: dict[str, list[Rows]] = {}
    for path in paths:
        manifest = _json(os.path.join(path, MANIFEST))
        outs = [t for t in manifest.get("tensors", []) if t.get("kind") == "out"]
        if not outs:
            raise ValueError(f"{path} holds no saved outputs; save the trace with its outs")
        batch = outs[0]["shape"][0]  # the input's rows; the last batch may be smaller
        found = {_name(t["label"]): t for t in outs if t["shape"] and t["shape"][0] == batch}
        if per_layer and set(found) != set(per_layer):
            raise ValueError(f"{path} holds other layers than {paths[0]}: "
                             f"{sorted(set(found) ^ set(per_layer))}")
        for name, t in found.items():
            blob = os.path.join(path, t["relative_path"])
            per_layer.setdefault(name, []).append(safetensors_rows(blob, "data", f"{path}:{name}"))
    layers = {name: concat(parts, f"{paths[0]}:{name}") for name, parts in per_layer.items()}
    files = [os.path.join(p, MANIFEST) for p in paths]
    return Source(tool="torchlens", root=os.path.dirname(paths[0]), files=files, layers=layers)


def torchlens_source(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Source:
    """The :class:`~dask_repsim.imports.common.Source` of an extraction folder, a trace
    bundle, or a list of trace bundles."""
    many = not isinstance(path, str | os.PathLike)
    paths = [os.path.abspath(os.fspath(p)) for p in (path if many else [path])]
    if not paths:
        raise ValueError("no TorchLens folders given")
    for p in paths:
        if not os.path.isfile(os.path.join(p, MANIFEST)):
            raise FileNotFoundError(f"{p} is not a TorchLens folder (no {MANIFEST})")
    manifest = _json(os.path.join(paths[0], MANIFEST))
    if manifest.get("schema") == EXTRACTION_SCHEMA:
        if many:
            raise ValueError("give one extract_dataset folder (it holds all batches)")
        return _extraction(paths[0], manifest)
    if manifest.get("kind") != "trace":
        raise ValueError(f"{paths[0]}/{MANIFEST} is neither an extract_dataset manifest "
                         f"(schema {EXTRACTION_SCHEMA}) nor a saved trace")
    return _bundles(paths)


def import_torchlens(
    path: str | os.PathLike | Sequence[str | os.PathLike],
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
    """Import TorchLens' saved activations into a capture store, chunk by chunk.

    Parameters
    ----------
    path
        The ``output_dir`` of ``torchlens.dataset_extraction.extract_dataset`` (complete,
        with safetensors shards; its ``stimulus_ids`` become the sample ids and its output
        keys the layers), or a ``torchlens.save`` trace bundle, or a list of bundles (one
        batch each, in order; samples numbered by position, layers named by label).
    store
        Where the Zarr v3 group goes (see :func:`~dask_repsim.imports.arrays.import_arrays`).
    layers, resume, overwrite, chunk_samples, dtype, storage_options, preprocessing, model
        As for :func:`~dask_repsim.imports.arrays.import_arrays`.

    Returns
    -------
    zarr.Group
        The capture store, one array per layer and the ``sample`` ids.

    Examples
    --------
    >>> import pytest, tempfile
    >>> torch = pytest.importorskip("torch")
    >>> tl = pytest.importorskip("torchlens.dataset_extraction")
    >>> net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU())
    >>> out = os.path.join(tempfile.mkdtemp(), "run")
    >>> _ = tl.extract_dataset(net, torch.randn(10, 5), layers=["relu_1_2"], batch_size=4,
    ...                        output_dir=out, progress=False,
    ...                        stimulus_ids=[f"s{i}" for i in range(10)])
    >>> group = import_torchlens(out, out + ".zarr")
    >>> group["relu_1_2"].shape, group["sample"][:2].tolist()
    ((10, 4), ['s0', 's1'])
    """
    return write_store(
        torchlens_source(path), store, layers=layers, resume=resume, overwrite=overwrite,
        chunk_samples=chunk_samples, dtype=dtype, storage_options=storage_options,
        preprocessing=preprocessing, model=model)
