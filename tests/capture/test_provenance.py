"""Provenance of capture stores: what is recorded, what ``compare`` copies, when it warns."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import xarray as xr
import zarr

import dask_repsim
from dask_repsim.capture.provenance import PROVENANCE_ATTR, check_pair, parameters_hash

torch = pytest.importorskip("torch")


class Images(torch.utils.data.Dataset):
    """Images with a ``transform`` attribute, as torchvision datasets have."""

    def __init__(self, transform):
        self.transform = transform
        self.images = torch.randn(40, 6, generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i])


class Scale:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor

    def __repr__(self):
        return f"Scale(factor={self.factor})"


def model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))


def capture(path, net, transform, **kwargs):
    loader = torch.utils.data.DataLoader(Images(transform), batch_size=16)
    return dask_repsim.capture_activations(net, loader, layers=["1", "2"], store=path,
                                           chunk_samples=16, **kwargs)


def test_capture_records_model_weights_preprocessing_and_ids(tmp_path):
    net = model(0)
    group = capture(tmp_path / "a.zarr", net, Scale(1.0))
    p = group.attrs[PROVENANCE_ATTR]
    assert p["model"] == "torch.nn.modules.container.Sequential"
    assert p["preprocessing"] == "Scale(factor=1.0)"  # the dataset's transform
    assert p["dtype"] == "float32" and p["samples"] == 40
    ids = np.arange(40, dtype="<i8")
    assert p["sample_ids_sha256"] == hashlib.sha256(ids.tobytes()).hexdigest()
    assert p["versions"]["torch"] == torch.__version__
    # the parameter hash: the state_dict's names, dtypes, shapes and bytes, independently
    digest = hashlib.sha256()
    for name, t in net.state_dict().items():
        a = t.numpy()
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode() + a.tobytes())
    assert p["parameters_sha256"] == digest.hexdigest()
    # the caller's words replace the transform's repr
    other = capture(tmp_path / "b.zarr", net, Scale(1.0), preprocessing="6 features, x1")
    assert other.attrs[PROVENANCE_ATTR]["preprocessing"] == "6 features, x1"


def test_parameter_hash_sees_one_changed_weight():
    a, b = model(0), model(0)
    assert parameters_hash(a) == parameters_hash(b)
    with torch.no_grad():
        b[0].weight[2, 3] = torch.nextafter(b[0].weight[2, 3], torch.tensor(10.0))
    assert parameters_hash(a) != parameters_hash(b)
    assert parameters_hash(np.zeros(3)) is None


def test_compare_copies_provenance_and_warns_on_different_preprocessing(tmp_path):
    net = model(0)
    a = capture(tmp_path / "a.zarr", net, Scale(1.0))
    b = capture(tmp_path / "b.zarr", net, Scale(2.0))
    with pytest.warns(dask_repsim.RepsimWarning,
                      match=r"Scale\(factor=1.0\).*Scale\(factor=2.0\).*not be comparable"):
        result = dask_repsim.compare(str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"),
                                     metrics=["cka"])
    pa, pb = (json.loads(result.attrs[f"provenance_{s}"]) for s in "ab")
    assert pa == dict(a.attrs[PROVENANCE_ATTR]) and pb == dict(b.attrs[PROVENANCE_ATTR])
    # the same layer under two preprocessings: similar, not the same representation (the
    # tanh is not scale-equivariant), which is what the warning is about
    same_layer = np.diag(result.cka.values)
    assert (same_layer > 0.9).all() and (same_layer < 0.999).all()
    # opened with xarray, or as zarr groups: the same provenance, the same warning
    opened = [xr.open_zarr(tmp_path / f"{s}.zarr") for s in "ab"]
    with pytest.warns(dask_repsim.RepsimWarning, match="preprocessing differs"):
        again = dask_repsim.compare(*opened, metrics=["cka"])
    assert again.attrs["provenance_b"] == result.attrs["provenance_b"]
    # the result, provenance included, is written to netCDF and read back
    result.to_netcdf(tmp_path / "r.nc")
    back = xr.open_dataset(tmp_path / "r.nc")
    assert json.loads(back.attrs["provenance_a"])["preprocessing"] == "Scale(factor=1.0)"


def test_no_warning_for_same_preprocessing_or_different_weights(tmp_path):
    capture(tmp_path / "a.zarr", model(0), Scale(1.0))
    capture(tmp_path / "b.zarr", model(0), Scale(1.0))
    capture(tmp_path / "c.zarr", model(1), Scale(2.0))  # another training: not flagged
    for other in ("b", "c"):
        result = dask_repsim.compare(str(tmp_path / "a.zarr"), str(tmp_path / f"{other}.zarr"),
                                     metrics=["cka"])  # RepsimWarning is an error in tests
        assert "provenance_b" in result.attrs
    # plain arrays carry no provenance: none recorded, nothing warned
    plain = dask_repsim.compare({"x": np.eye(5)}, {"y": np.eye(5)[::-1]}, metrics=["cka"])
    assert not any(k.startswith("provenance") for k in plain.attrs)


def test_check_pair_rules():
    base = {"model": "m", "parameters_sha256": "h", "preprocessing": "224"}
    with pytest.warns(dask_repsim.RepsimWarning, match="'m'"):
        check_pair(base, {**base, "preprocessing": "256"})
    with pytest.warns(dask_repsim.RepsimWarning):  # one side never said: still different
        check_pair(base, {**base, "preprocessing": None})
    check_pair(base, {**base, "parameters_sha256": "other", "preprocessing": "256"})
    check_pair(base, {**base, "model": "n", "preprocessing": "256"})
    check_pair(None, base)


def test_resumed_capture_keeps_the_first_runs_provenance(tmp_path, monkeypatch):
    from dask_repsim.capture import store as capture_store

    net = model(0)
    calls = {"n": 0}
    original = capture_store.ChunkWriter._write

    def crash_on_second(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(capture_store.ChunkWriter, "_write", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        capture(tmp_path / "a.zarr", net, Scale(1.0), preprocessing="first run")
    monkeypatch.setattr(capture_store.ChunkWriter, "_write", original)
    partial = zarr.open_group(tmp_path / "a.zarr", mode="r").attrs[PROVENANCE_ATTR]
    assert "samples" not in partial  # not complete yet
    group = capture(tmp_path / "a.zarr", net, Scale(1.0), resume=True)
    p = group.attrs[PROVENANCE_ATTR]
    assert p["preprocessing"] == "first run" and p["samples"] == 40
    assert p["created"] == partial["created"]


def test_compare_zoo_records_each_networks_provenance(tmp_path):
    zoo = tmp_path / "zoo.zarr"
    zarr.open_group(zoo, mode="w")
    capture(f"{zoo}/seed0", model(0), Scale(1.0))
    capture(f"{zoo}/seed1", model(1), Scale(1.0))
    capture(f"{zoo}/seed0_big", model(0), Scale(3.0))
    with pytest.warns(dask_repsim.RepsimWarning,
                      match="networks 'seed0' and 'seed0_big' come from the model"):
        result = dask_repsim.compare_zoo(str(zoo), metrics=["cka"])
    recorded = json.loads(result.attrs["provenance_a"])
    assert sorted(recorded) == ["seed0", "seed0_big", "seed1"]
    group = zarr.open_group(f"{zoo}/seed1", mode="r")
    assert recorded["seed1"] == dict(group.attrs[PROVENANCE_ATTR])
    assert recorded["seed0"]["parameters_sha256"] != recorded["seed1"]["parameters_sha256"]
    # a mapping of networks: the same records
    nets = {n: zarr.open_group(f"{zoo}/{n}", mode="r") for n in ("seed0", "seed1")}
    two = dask_repsim.compare_zoo(nets, metrics=["cka"])  # no warning: different weights
    assert json.loads(two.attrs["provenance_a"])["seed0"] == recorded["seed0"]
