"""`hebbedge edge merge`: K devices' readout states merge into the state of one device that saw all their data."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_export import MEAN, STD, readout_model, standardise, trained_hebbian
from typer.testing import CliRunner

from hebbedge.cli.app import app
from hebbedge.export.edge import STATE_FILE, EdgeError, EdgeModel, read_state, write_state
from hebbedge.export.merge import merge_dirs
from hebbedge.export.onnx import export_model
from hebbedge.models import thesis_linear
from hebbedge.readout import LDAReadout

K = 3


def device_data(k: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Device k's images: its own two classes (4 + 2k, 5 + 2k), none of which the exported readout saw."""
    x = np.random.default_rng(10 + k).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    return x, 4 + 2 * k + np.arange(n) % 2


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture(params=["trained", "empty"])
def fleet(request, tmp_path):
    """An exported readout (trained on classes 0-3, or empty), K devices that each learned their own data,
    and the PyTorch model whose float64 sums are the reference."""
    if request.param == "trained":
        model = readout_model()
    else:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh()), LDAReadout(16, 10, shrinkage=1e-3))
    export_model(model, (1, 28, 28), MEAN, STD, tmp_path / "export", list(range(10)), learns=True)
    devices = []
    for k in range(K):
        shutil.copytree(tmp_path / "export", tmp_path / f"device{k}")
        edge = EdgeModel(tmp_path / f"device{k}")
        edge.learn(*device_data(k))
        edge.save()
        devices.append(tmp_path / f"device{k}")
    return request.param, model, tmp_path, devices


def test_merged_states_equal_one_device_trained_on_the_union(fleet):
    which, model, tmp_path, devices = fleet
    base = tmp_path / "export" if which == "trained" else None  # every device counts the exported state
    merged = merge_dirs(devices, tmp_path / "merged", base=base)
    assert merged.exact
    union = EdgeModel(tmp_path / "export")  # one device that learns every device's data
    xs, ys = zip(*(device_data(k) for k in range(K)))
    union.learn(np.concatenate(xs), np.concatenate(ys))
    readout = model[-1]  # the float64 reference: the exported sums plus every device's features
    with torch.no_grad():
        for x, y in zip(xs, ys):
            readout.accumulate(model[0](standardise(x.astype(np.float32) / 255)), torch.from_numpy(y))
    reference = {"count": readout.count.numpy(), "mean": readout.means().numpy(), "scatter": readout.scatter().numpy()}
    got = EdgeModel(tmp_path / "merged")
    errors = {name: (relative(got.state[name], ref), relative(union.state[name], ref)) for name, ref in reference.items()}
    print(which, {k: f"merged {a:.1e}, one device {b:.1e}" for k, (a, b) in errors.items()})
    assert all(merged_error <= 1e-6 for merged_error, _ in errors.values()), errors
    assert np.array_equal(got.state["count"], union.state["count"])
    test = np.random.default_rng(99).integers(0, 256, (300, 1, 28, 28), dtype=np.uint8)
    assert np.array_equal(got.predict(test), union.predict(test))
    assert np.array_equal(got.predict(xs[1]), union.predict(xs[1]))
    assert got.manifest == union.manifest  # a copy of the first directory: the same model


def test_merge_into_an_existing_directory_of_the_model_replaces_its_state(fleet):
    which, _, tmp_path, devices = fleet
    base = tmp_path / "export" if which == "trained" else None
    new = merge_dirs(devices, tmp_path / "merged", base=base)
    merge_dirs(devices, devices[0], base=base)
    assert all(np.array_equal(EdgeModel(devices[0]).state[k], EdgeModel(tmp_path / "merged").state[k]) for k in new.state)


def test_mismatched_states_are_refused(tmp_path):
    a = readout_model()
    export_model(a, (1, 28, 28), MEAN, STD, tmp_path / "a", list(range(10)), learns=True)
    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    torch.manual_seed(7)  # other features: another model
    b = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh()), LDAReadout(16, 10, shrinkage=1e-3))
    export_model(b, (1, 28, 28), MEAN, STD, tmp_path / "b", list(range(10)), learns=True)
    with pytest.raises(EdgeError, match="states of different models"):
        merge_dirs([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    export_model(trained_hebbian(thesis_linear(widths=(32,))).model, (1, 28, 28), MEAN, STD, tmp_path / "h", list(range(10)), learns=True)
    with pytest.raises(EdgeError, match="a hebbian model; .* is a readout model"):
        merge_dirs([tmp_path / "a", tmp_path / "h"], tmp_path / "out")
    manifest = json.loads((tmp_path / "a2" / "manifest.json").read_text())
    state = read_state(tmp_path / "a2" / STATE_FILE, manifest["model_id"])
    del state["scatter"]
    write_state(tmp_path / "a2" / STATE_FILE, state, manifest["model_id"])
    with pytest.raises(EdgeError, match="no tensor.*scatter"):
        merge_dirs([tmp_path / "a", tmp_path / "a2"], tmp_path / "out")
    with pytest.raises(EdgeError, match="holds model"):
        merge_dirs([tmp_path / "a", tmp_path / "a"], tmp_path / "b")
    assert not (tmp_path / "out").exists()


def test_hebbian_states_average_and_say_it_is_approximate(tmp_path):
    export_model(trained_hebbian(thesis_linear(widths=(32,))).model, (1, 28, 28), MEAN, STD, tmp_path / "h0", list(range(10)), learns=True)
    shutil.copytree(tmp_path / "h0", tmp_path / "h1")
    edge = EdgeModel(tmp_path / "h1")
    edge.learn(*device_data(0))
    edge.save()
    before = [EdgeModel(tmp_path / f"h{k}").state for k in range(2)]
    result = CliRunner().invoke(app, ["edge", "merge", str(tmp_path / "h0"), str(tmp_path / "h1"), "--out", str(tmp_path / "m"),
                                      "--weights", "1,3"])
    assert result.exit_code == 0, result.output
    assert "APPROXIMATE" in result.output and "weights 1, 3" in result.output
    merged = EdgeModel(tmp_path / "m").state
    assert np.allclose(merged["W0"], 0.25 * before[0]["W0"] + 0.75 * before[1]["W0"], atol=1e-6)
    result = CliRunner().invoke(app, ["edge", "merge", str(tmp_path / "h0"), str(tmp_path / "h1"), "--out", str(tmp_path / "m2")])
    assert result.exit_code == 0 and "equal weights" in result.output


def test_cli_merge_reports_and_refuses(fleet):
    which, _, tmp_path, devices = fleet
    args = ["edge", "merge", *map(str, devices), "--out", str(tmp_path / "merged")]
    if which == "trained":
        args += ["--base", str(tmp_path / "export")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "exact" in result.output
    result = CliRunner().invoke(app, ["edge", "merge", str(devices[0]), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "manifest.json: missing" in result.output
