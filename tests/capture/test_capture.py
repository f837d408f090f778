"""Capturing PyTorch activations into Zarr: exact values, xarray layout, crash-safe resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import dask_repsim
from dask_repsim.capture.activations import STATE_ATTR, capture_activations

ROOT = Path(__file__).resolve().parents[2]

# The model and data of the crash test, shared by the subprocess script and this process.
MODEL_SOURCE = """
import time
import torch

def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 6 * 6, 7),
    )

def make_data(n=90):
    g = torch.Generator().manual_seed(1)
    # each sample's id: not its position, so that ids written by position would show
    return torch.randn(n, 1, 6, 6, generator=g), 1000 + 7 * torch.arange(n)

class SlowLoader:
    '''(images, ids) batches of 5, with a pause so that a kill lands mid-run.'''

    def __init__(self, pause=0.0, ids=None):
        self.images, self.labels = make_data()
        if ids is not None:
            self.labels = ids
        self.pause, self.forwarded = pause, 0

    def __iter__(self):
        for i in range(0, len(self.images), 5):
            time.sleep(self.pause)
            yield self.images[i : i + 5], self.labels[i : i + 5]
"""


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _namespace() -> dict:
    ns: dict = {}
    exec(MODEL_SOURCE, ns)  # the same definitions the subprocess runs
    return ns


def _small_cnn(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 4 * 4, 10),
    )


def _reference(model, images):
    """Each captured layer computed by calling the modules one after another, in float64."""
    m = model.double()
    with __import__("torch").no_grad():
        x = images.double()
        conv1 = m[0](x)
        conv2 = m[2](m[1](conv1))
        logits = m[5](m[4](m[3](conv2)))
    return {"0": conv1.numpy(), "2": conv2.numpy(), "5": logits.numpy()}


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. (5): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred."""
    x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(0)
    y = y.reshape(len(y), -1) - y.reshape(len(y), -1).mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_capture_equals_forward_pass_and_opens_in_xarray(torch, tmp_path):
    model = _small_cnn(torch)
    images = torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(50))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8)  # 8 does not divide 16 or 50
    store = tmp_path / "acts.zarr"
    model.train()
    layers = ["0", "2", "5"]
    group = capture_activations(model, loader, layers=layers, store=store, chunk_samples=16)
    assert model.training  # training mode restored
    expected = _reference(_small_cnn(torch), images)
    for name, ref in expected.items():
        assert group[name].shape == ref.shape
        assert group[name].chunks == (16,) + ref.shape[1:]
        np.testing.assert_allclose(group[name][...], ref, rtol=0, atol=1e-6)
    state = group.attrs[STATE_ATTR]
    assert state["layers"] == ["0", "2", "5"] and state["dtype"] == "float32"
    assert state["model"] == "torch.nn.modules.container.Sequential"
    assert state["committed"] == 50 and state["complete"] is True

    ds = xr.open_zarr(store)
    assert ds["0"].dims == ("sample", "0.channel", "0.height", "0.width")
    assert ds["2"].dims == ("sample", "2.channel", "2.height", "2.width")
    assert ds["5"].dims == ("sample", "unit")
    assert ds.sizes["sample"] == 50
    result = dask_repsim.compare(ds, metrics=["cka"])
    for a in expected:
        for b in expected:
            want = _linear_cka(expected[a], expected[b])
            got = float(result.cka.sel(layer_a=a, layer_b=b))
            assert got == pytest.approx(want, rel=1e-5)


def test_shared_dimension_names_when_sizes_agree(torch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1)
    )
    loader = [torch.randn(6, 2, 5, 5) for _ in range(3)]  # plain tensors, no labels
    group = capture_activations(
        model, loader, layers=["1", "2"], store=zarr.storage.MemoryStore(), chunk_samples=4
    )
    for name in ("1", "2"):
        assert group[name].metadata.dimension_names == ("sample", "channel", "height", "width")
    # pool="mean" finds the shared spatial dims: each layer becomes (sample, channel)
    ds = xr.open_zarr(group.store)
    x = np.concatenate([b.numpy() for b in loader])
    with torch.no_grad():
        relu = model[1](model[0](torch.from_numpy(x)))
        conv2 = model[2](relu).double().numpy()
        relu = relu.double().numpy()
    result = dask_repsim.compare(ds, metrics=["cka"], pool="mean")
    want = _linear_cka(relu.mean((2, 3)), conv2.mean((2, 3)))
    assert float(result.cka.sel(layer_a="1", layer_b="2")) == pytest.approx(want, rel=1e-5)


def test_unknown_length_grows_and_fsspec_url(torch):
    pytest.importorskip("fsspec")
    ns = _namespace()
    images, _ = ns["make_data"]()
    known = capture_activations(
        ns["make_model"](),
        torch.utils.data.DataLoader(images, batch_size=11),  # len(loader.dataset) is known
        layers=["1", "3"],
        store=zarr.storage.MemoryStore(),
        chunk_samples=20,
    )
    url = f"memory://capture-{os.getpid()}-{time.monotonic_ns()}.zarr"
    grown = capture_activations(
        ns["make_model"](),
        (images[i : i + 11] for i in range(0, len(images), 11)),  # a generator: no length
        layers=["1", "3"],
        store=url,
        chunk_samples=20,
        dtype="float64",
    )
    assert grown["1"].dtype == np.float64
    for name in ("1", "3"):
        assert grown[name].shape == known[name].shape
        np.testing.assert_array_equal(grown[name][...], known[name][...].astype(np.float64))
    assert xr.open_zarr(url).sizes["sample"] == len(images)


def test_existing_store_and_resume_rules(torch, tmp_path):
    ns = _namespace()
    store = tmp_path / "acts.zarr"
    # resume=True where nothing exists yet simply starts
    first = capture_activations(
        ns["make_model"](), ns["SlowLoader"](), layers=["3"], store=store, resume=True
    )
    data = first["3"][...]
    with pytest.raises(FileExistsError, match="resume=True"):
        capture_activations(ns["make_model"](), ns["SlowLoader"](), layers=["3"], store=store)
    with pytest.raises(ValueError, match="layers"):
        capture_activations(
            ns["make_model"](), ns["SlowLoader"](), layers=["1"], store=store, resume=True
        )
    # resuming a complete capture changes nothing
    again = capture_activations(
        ns["make_model"](), ns["SlowLoader"](), layers=["3"], store=store, resume=True
    )
    np.testing.assert_array_equal(again["3"][...], data)
    replaced = capture_activations(
        ns["make_model"](), ns["SlowLoader"](), layers=["1"], store=store, overwrite=True
    )
    assert sorted(replaced.array_keys()) == ["1", "sample"]  # the layer and its sample ids
    with pytest.raises(ValueError, match="no module"):
        capture_activations(ns["make_model"](), ns["SlowLoader"](), layers=["9"], store=store)


class _Crash(RuntimeError):
    pass


def _interrupted_then_resumed(torch, tmp_path, monkeypatch, target, after):
    """Fail ``target`` of the writer on its ``after``-th call, resume, compare with a clean run."""
    from dask_repsim.capture import store as capture_store

    ns = _namespace()
    clean = capture_activations(
        ns["make_model"](),
        ns["SlowLoader"](),
        layers=["0", "3"],
        store=tmp_path / "clean.zarr",
        chunk_samples=12,
    )
    original = getattr(capture_store.ChunkWriter, target)
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == after:
            raise _Crash
        return original(self, *args, **kwargs)

    store = tmp_path / "crashed.zarr"
    with monkeypatch.context() as patch:
        patch.setattr(capture_store.ChunkWriter, target, failing)
        with pytest.raises(_Crash):
            capture_activations(
                ns["make_model"](), ns["SlowLoader"](), layers=["0", "3"], store=store,
                chunk_samples=12,
            )
    state = zarr.open_group(store).attrs[STATE_ATTR]
    assert not state["complete"] and 0 < state["committed"] < 90
    resumed = capture_activations(
        ns["make_model"](), ns["SlowLoader"](), layers=["0", "3"], store=store, resume=True
    )
    for name in ("0", "3"):
        np.testing.assert_array_equal(resumed[name][...], clean[name][...])
    return state["committed"]


def test_crash_after_chunk_written_before_commit(torch, tmp_path, monkeypatch):
    # the fourth chunk's data is in the store, its count is not: it must be written once
    committed = _interrupted_then_resumed(torch, tmp_path, monkeypatch, "_commit", after=4)
    assert committed == 36


def test_resume_checks_the_committed_sample_ids(torch, tmp_path, monkeypatch):
    from dask_repsim.capture import store as capture_store

    ns = _namespace()
    store = tmp_path / "ids.zarr"
    calls = {"n": 0}
    original = capture_store.ChunkWriter._commit

    def failing(self, **changes):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Crash
        return original(self, **changes)

    with monkeypatch.context() as patch:
        patch.setattr(capture_store.ChunkWriter, "_commit", failing)
        with pytest.raises(_Crash):
            capture_activations(ns["make_model"](), ns["SlowLoader"](), layers=["3"],
                                store=store, chunk_samples=12, sample_ids=1)
    assert zarr.open_group(store).attrs[STATE_ATTR]["committed"] == 24
    ids = 1000 + 7 * np.arange(90)
    ids[17] = -5  # another sample among the committed ones
    with pytest.raises(ValueError, match="sample 17 is -5 now, 1119 in the store"):
        capture_activations(ns["make_model"](), ns["SlowLoader"](ids=ids), layers=["3"],
                            store=store, sample_ids=1, resume=True)
    with pytest.raises(ValueError, match=r"sample ids batch\[1\] != position"):
        capture_activations(ns["make_model"](), ns["SlowLoader"](), layers=["3"],
                            store=store, resume=True)
    done = capture_activations(ns["make_model"](), ns["SlowLoader"](), layers=["3"],
                               store=store, sample_ids=1, resume=True)
    np.testing.assert_array_equal(done["sample"][...], 1000 + 7 * np.arange(90))


def test_crash_with_rows_buffered(torch, tmp_path, monkeypatch):
    # stopped after 9 batches of 5 (45 samples): 9 rows of the fourth chunk were only buffered
    committed = _interrupted_then_resumed(torch, tmp_path, monkeypatch, "append", after=10)
    assert committed == 36


def _committed(store: Path) -> int:
    try:
        meta = json.loads((store / "zarr.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return meta.get("attributes", {}).get(STATE_ATTR, {}).get("committed", 0)


SCRIPT = """
import sys
from dask_repsim.capture.activations import capture_activations
{model}
loader = SlowLoader(pause=float(sys.argv[2]))
model = make_model()
calls = []
model.register_forward_hook(lambda m, a, o: calls.append(len(a[0])))
capture_activations(
    model, loader, layers=["0", "3"], store=sys.argv[1], chunk_samples=10,
    resume=sys.argv[3] == "resume", sample_ids=1,
)
print("forwarded", sum(calls))
"""


def test_sigkill_then_resume_equals_uninterrupted(torch, tmp_path):
    script = tmp_path / "capture_script.py"
    script.write_text(SCRIPT.format(model=textwrap.dedent(MODEL_SOURCE)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store), "0.15", "new"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while _committed(store) < 20 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    committed = _committed(store)
    assert 20 <= committed < 90  # killed mid-run, after some chunks were committed
    assert committed % 10 == 0

    resumed = subprocess.run(
        [sys.executable, str(script), str(store), "0", "resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    # the committed samples were skipped, not run through the model again (batches of 5)
    assert int(resumed.stdout.split()[-1]) == 90 - committed

    ns = _namespace()
    clean = capture_activations(
        ns["make_model"](), ns["SlowLoader"](), layers=["0", "3"],
        store=tmp_path / "clean.zarr", chunk_samples=10, sample_ids=1,
    )
    group = zarr.open_group(store, mode="r")
    assert group.attrs[STATE_ATTR]["complete"]
    assert group.attrs[STATE_ATTR]["sample_ids"] == "batch[1]"
    for name in ("0", "3", "sample"):
        np.testing.assert_array_equal(group[name][...], clean[name][...])
    # the loader's ids survived the kill and the resume, and xarray reads them as labels
    np.testing.assert_array_equal(group["sample"][...], 1000 + 7 * np.arange(90))
    np.testing.assert_array_equal(xr.open_zarr(store).sample.values, 1000 + 7 * np.arange(90))
    # a capture of the same data by another loader order is paired by id, not position
    order = np.random.default_rng(0).permutation(90)
    images, ids = ns["make_data"]()
    shuffled = [(images[order[i:i + 9]], ids[order[i:i + 9]]) for i in range(0, 90, 9)]
    other = capture_activations(ns["make_model"](), shuffled, layers=["3"], sample_ids=1,
                                store=tmp_path / "shuffled.zarr", chunk_samples=10)
    assert not np.array_equal(other["3"][...], clean["3"][...])  # stored in another order
    grid = dask_repsim.compare(str(store), str(tmp_path / "shuffled.zarr"), metrics=["cka"])
    want = _linear_cka(clean["0"][...].astype(float), clean["3"][...].astype(float))
    assert float(grid.cka.sel(layer_a="0", layer_b="3")) == pytest.approx(want, abs=1e-6)
    assert float(grid.cka.sel(layer_a="3", layer_b="3")) == pytest.approx(1.0, abs=1e-9)


def test_importing_the_package_does_not_import_torch():
    code = (
        "import sys\n"
        "class NoTorch:\n"  # makes `import torch` fail, as where it is not installed
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('no torch here')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import dask_repsim, dask_repsim.capture.activations\n"
        "assert 'torch' not in sys.modules\n"
        "from dask_repsim.capture.activations import capture_activations\n"
        "try:\n"
        "    capture_activations(None, [], layers=['a'], store='memory://x')\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert "pip install dask-repsim[torch]" in out.stdout


#: Kornblith et al. 2019, Table 2: the paper column layer_identification.py prints
KORNBLITH_TABLE_2 = {
    "CCA (rho-bar)": 1.4,
    "CCA (R2_CCA)": 10.6,
    "SVCCA (rho-bar)": 9.9,
    "SVCCA (R2_CCA)": 15.1,
    "PWCCA": 11.1,
    "Linear Reg.": 45.4,
    "Linear HSIC": 22.2,
    "CKA (Linear)": 99.3,
    "CKA (RBF 0.2)": 80.6,
    "CKA (RBF 0.4)": 99.1,
    "CKA (RBF 0.8)": 99.3,
}
NOT_IN_DASK_REPSIM: set[str] = set()  # every row of Table 2 is computed


def _check_layer_identification(text: str) -> None:
    rows = {}
    for line in text.splitlines():
        label = next((k for k in KORNBLITH_TABLE_2 if line.startswith(k + " ")), None)
        if label is not None:
            rows[label] = line[len(label) :].split()
    assert set(rows) == set(KORNBLITH_TABLE_2), text
    for label, (ours, paper, *_) in rows.items():
        assert float(paper) == KORNBLITH_TABLE_2[label], (label, paper)
        if label in NOT_IN_DASK_REPSIM:
            assert ours == "-", (label, ours)
        else:  # a share of layers identified, in percent (quick: no finding is asserted)
            assert 0.0 <= float(ours) <= 100.0, (label, ours)
    assert "Kornblith et al. 2019, Table 2" in text
    beyond = ("RSA (corr. RDM)", "Mutual 10-NN", "10-NN Jaccard", "Rank sim. (10-NN)",
              "Joint rank-Jacc.", "ENSD")
    for label in beyond:  # beyond the table: no paper figure
        line = next(x for x in text.splitlines() if x.startswith(label + " "))
        ours, paper = line[len(label):].split()[:2]
        assert 0.0 <= float(ours) <= 100.0 and paper == "-", line


def _check_width_and_labels(text: str) -> None:
    lines = text.splitlines()
    widths = [line.split() for line in lines if line.split()[:1] in (["8"], ["64"])]
    assert [row[0] for row in widths] == ["8", "64"], text  # the quick run's widths
    groups = {
        name: line[len(name) :].split()
        for line in lines
        for name in ("true labels", "shuffled labels", "true vs shuffled")
        if line.startswith(name + " ")
    }
    assert len(groups) == 3, text
    # width rows: train acc, test acc, PWCCA of each hidden layer, chance of each
    for values in [row[1:] for row in widths] + list(groups.values()):
        assert all(0.0 <= float(v) <= 1.0 for v in values), values
    assert len(widths[0]) == 7 and len(groups["true vs shuffled"]) == 4
    assert any(line.startswith("Morcos et al. 2018") for line in lines)
    assert sum(line.startswith("This run") for line in lines) == 2


@pytest.mark.large  # the default run's docs build runs the script (its gallery)
@pytest.mark.parametrize(
    ("script", "check"),
    [
        ("layer_identification.py", _check_layer_identification),
        ("width_and_labels.py", _check_width_and_labels),
    ],
)
def test_examples_run_quick(torch, tmp_path, script, check):
    """The paper-reproduction examples run in their --quick form (about 20 s each on two
    cores) and write a PNG and a table with every row filled in."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    stem = script.removesuffix(".py")
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / f"{stem}.txt").read_text()
    assert text.strip() in result.stdout  # the table printed is the table written
    check(text)


def test_captured_layers_come_back_in_network_order(torch, tmp_path):
    """Layer names that sort differently from the network ("2" > "10" as text) keep the order
    they were captured in, through compare() on the group and on the Dataset xarray opens."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        *[torch.nn.Linear(5, 5) if i % 2 == 0 else torch.nn.Tanh() for i in range(11)]
    )
    images = torch.randn(40, 5, generator=torch.Generator().manual_seed(3))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=10)
    layers = ["2", "6", "10"]
    store = tmp_path / "acts.zarr"
    capture_activations(model, loader, layers=layers, store=store, chunk_samples=16)
    by_group = dask_repsim.compare(str(store), metrics=["cka"])
    by_dataset = dask_repsim.compare(xr.open_zarr(store), metrics=["cka"])
    for grid in (by_group, by_dataset):
        assert list(grid.layer_a.values) == layers and list(grid.layer_b.values) == layers
    group = zarr.open_group(store, mode="r")
    ref = _linear_cka(group["2"][...].astype(float), group["10"][...].astype(float))
    assert float(by_group.cka.sel(layer_a="2", layer_b="10")) == pytest.approx(ref, abs=1e-9)
    # another group with the same arrays but no capture record: sorted by name
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    for name in layers:
        plain.create_array(name, data=group[name][...])
    assert list(dask_repsim.compare(plain, metrics=["cka"]).layer_a.values) == ["10", "2", "6"]
