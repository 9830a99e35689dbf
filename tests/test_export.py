"""The on-device learning cycle in ONNX: equal to PyTorch on every runtime, float32 throughout, bad input refused."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from hebbedge.export.edge import STATE_FILE, EdgeError, EdgeModel, read_state
from hebbedge.export.onnx import export_model
from hebbedge.export.runtimes import available
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_conv, thesis_linear
from hebbedge.readout import LDAReadout

MEAN, STD = (0.1307,), (0.3081,)
RUNTIMES = available()


def standardise(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(x) - MEAN[0]) / STD[0]


def trained_hebbian(model, steps=3):
    torch.manual_seed(0)
    learner = HebbianLearner(model)
    for _ in range(steps):
        learner.step(standardise(np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)), torch.arange(16) % 10)
    learner.freeze_c()
    return learner


def readout_model(n_features=16, seen=(0, 1, 2, 3)):
    """Fixed random tanh features and an LDA readout that has seen some classes."""
    torch.manual_seed(1)
    features = nn.Sequential(nn.Flatten(), nn.Linear(784, n_features), nn.Tanh())
    readout = LDAReadout(n_features, 10, shrinkage=1e-3)
    x = np.random.default_rng(5).random((200, 1, 28, 28), dtype=np.float32)
    y = torch.tensor(seen)[torch.arange(200) % len(seen)]
    with torch.no_grad():
        readout.accumulate(features(standardise(x)), y)
    return nn.Sequential(features, readout)


@pytest.fixture(params=["hebbian", "readout"])
def exported(request, tmp_path):
    if request.param == "hebbian":
        torch.manual_seed(1)
        learner = trained_hebbian(thesis_linear(widths=(64, 32)))
        export_model(learner.model, (1, 28, 28), MEAN, STD, tmp_path / "edge", list(range(10)), learns=True)
        return learner, tmp_path / "edge"
    model = readout_model()
    export_model(model, (1, 28, 28), MEAN, STD, tmp_path / "edge", list(range(10)), learns=True)
    return model, tmp_path / "edge"


def pytorch_logits(reference, x: np.ndarray) -> np.ndarray:
    model = reference.model if isinstance(reference, HebbianLearner) else reference
    with torch.no_grad():
        return model.eval()(standardise(x)).numpy()


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_predict_equals_pytorch_on_every_runtime(exported, runtime):
    reference, path = exported
    x = np.random.default_rng(3).random((9, 1, 28, 28), dtype=np.float32)
    edge = EdgeModel(path, runtime)
    expected = pytorch_logits(reference, x)
    if isinstance(reference, nn.Sequential):  # unseen classes score UNSEEN in both; compare the seen ones
        seen = reference[-1].count > 0
        assert (edge.logits(x)[:, ~seen.numpy()] < -1e29).all()
        expected, got = expected[:, seen.numpy()], edge.logits(x)[:, seen.numpy()]
    else:
        got = edge.logits(x)
    assert relative(got, expected) < 1e-4


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fifty_learning_steps_and_a_refresh_equal_the_pytorch_reference(exported, runtime):
    """Hebbian: the learner's own frozen steps (float32). Readout: the float64 LDAReadout (the reference),
    whose sums give the same state and classifier within 1e-4 relative."""
    reference, path = exported
    edge = EdgeModel(path, runtime)
    before = {k: v.copy() for k, v in edge.state.items()}
    rng = np.random.default_rng(0)
    batches = [(rng.random((12, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 12)) for _ in range(50)]
    x, y = np.concatenate([b for b, _ in batches]), np.concatenate([c for _, c in batches])
    assert edge.learn(x, y, batch_size=12, shuffle_seed=None) == 50
    if isinstance(reference, HebbianLearner):
        for xb, yb in batches:
            reference.step(standardise(xb), torch.from_numpy(yb))
        layers = [m for m in reference.model.modules() if hasattr(m, "momentum")]
        expected = {f"W{i}": l.weight for i, l in enumerate(layers)} | {f"M{i}": l.momentum for i, l in enumerate(layers)}
    else:
        features, readout = reference
        with torch.no_grad():
            readout.accumulate(features(standardise(x)), torch.from_numpy(y))
        weight, bias, centre = readout.solve()
        expected = {"count": readout.count, "mean": readout.means(), "scatter": readout.scatter(),
                    "weight": weight, "bias": bias, "centre": centre}
    for name, value in expected.items():
        assert relative(edge.state[name], value.detach().numpy()) < 1e-4, name
    assert any(relative(edge.state[k], v) > 1e-3 for k, v in before.items())  # it learned
    edge.save()
    again = EdgeModel(path, runtime)
    assert all(np.array_equal(again.state[k], v) for k, v in edge.state.items())


def float64_anywhere(model: onnx.ModelProto) -> list[str]:
    """Names of everything typed float64 in a graph (and its subgraphs)."""
    found = []
    def graph_walk(graph):
        for t in graph.initializer:
            if t.data_type == onnx.TensorProto.DOUBLE:
                found.append(t.name)
        for v in [*graph.input, *graph.output, *graph.value_info]:
            if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE:
                found.append(v.name)
        for node in graph.node:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.DOUBLE:
                    found.append(node.name)
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.DOUBLE:
                    found.append(node.name)
                if attr.type == onnx.AttributeProto.GRAPH:
                    graph_walk(attr.g)
    graph_walk(onnx.shape_inference.infer_shapes(model).graph)
    return found


def test_no_float64_in_any_graph_or_state(exported):
    _, path = exported
    manifest = json.loads((path / "manifest.json").read_text())
    for name in manifest["files"]:
        assert float64_anywhere(onnx.load(str(path / name))) == [], name
    from safetensors.numpy import load_file

    assert {str(v.dtype) for v in load_file(str(path / STATE_FILE)).values()} == {"float32"}


def test_the_manifest_names_the_cycle_and_checks_every_file(exported):
    _, path = exported
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "hebbedge-edge/2" and manifest["kind"] in ("hebbian", "readout")
    for spec in manifest["graphs"].values():
        graph = onnx.load(str(path / spec["file"])).graph
        assert [i.name for i in graph.input] == spec["inputs"]
        assert len(graph.output) == len(spec["outputs"])
    assert sorted(manifest["state"]) == sorted(read_state(path / STATE_FILE, manifest["model_id"]))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_input_is_named_and_leaves_the_saved_state(exported, runtime):
    _, path = exported
    saved = (path / STATE_FILE).read_bytes()
    edge = EdgeModel(path, runtime)
    good = np.zeros((4, 1, 28, 28), dtype=np.uint8)
    cases = [
        (lambda: edge.predict(np.zeros((2, 3, 28, 28), dtype=np.float32)), r"shape \[N, 1, 28, 28\]"),
        (lambda: edge.predict(np.zeros((2, 1, 28, 28), dtype=np.int32)), "uint8 .* or float"),
        (lambda: edge.predict(np.full((2, 1, 28, 28), np.nan, dtype=np.float32)), "NaN or Inf"),
        (lambda: edge.predict(np.full((2, 1, 28, 28), 255.0, dtype=np.float32)), r"float images must be in \[0, 1\]"),
        (lambda: edge.predict(np.zeros((0, 1, 28, 28), dtype=np.uint8)), "no images"),
        (lambda: edge.learn(good, np.array([0, 1, 12, 3])), r"labels must be 4 integers in \[0, 10\)"),
        (lambda: edge.learn(good, np.array([0, 1, 2])), r"labels must be 4 integers"),
        (lambda: edge.learn(good, np.zeros(4)), "labels must be 4 integers"),
        (lambda: edge.learn(good, np.arange(4), batch_size=0), "batch size must be at least"),
        (lambda: edge.learn(good[:0], np.arange(0)), "need at least"),
    ]
    for call, message in cases:
        with pytest.raises(EdgeError, match=message):
            call()
    assert (path / STATE_FILE).read_bytes() == saved


def test_damaged_files_give_one_line_errors(exported, tmp_path):
    import shutil

    _, path = exported
    manifest = json.loads((path / "manifest.json").read_text())
    for name, damage, message in [
        (STATE_FILE, lambda b: b[: len(b) // 2], "not a readable safetensors state"),
        (STATE_FILE, lambda b: b[:-4] + b"\x00\x00\x00\x01", "checksum mismatch"),
        ("predict.onnx", lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "checksum differs from manifest.json"),
        ("manifest.json", lambda b: b[:20], "not readable JSON"),
    ]:
        copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(path, copy)
        (copy / name).write_bytes(damage((copy / name).read_bytes()))
        with pytest.raises(EdgeError, match=message):
            EdgeModel(copy)
    other = tmp_path / "other"
    shutil.copytree(path, other)
    meta = json.loads((other / "manifest.json").read_text())
    meta["model_id"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(meta))
    with pytest.raises(EdgeError, match="state of another model"):
        EdgeModel(other)
    with pytest.raises(EdgeError, match="manifest.json: missing"):
        EdgeModel(tmp_path / "nowhere")
    assert manifest["model_id"] != "0" * 64


def test_a_failed_step_keeps_the_state(exported):
    _, path = exported
    saved = (path / STATE_FILE).read_bytes()
    edge = EdgeModel(path)
    state = {k: v.copy() for k, v in edge.state.items()}
    real, calls = edge._learn, []

    def overflowing(feeds):  # the second step returns non-finite state
        calls.append(1)
        return [o * np.float32("nan") for o in real(feeds)] if len(calls) == 2 else real(feeds)

    edge._learn = overflowing
    with pytest.raises(EdgeError, match="non-finite"):
        edge.learn(np.random.default_rng(3).random((8, 1, 28, 28), dtype=np.float32), np.arange(8), batch_size=4)
    assert all(np.array_equal(edge.state[k], v) for k, v in state.items())  # nothing of the pass was kept
    assert (path / STATE_FILE).read_bytes() == saved


def test_edge_runtime_runs_where_torch_cannot_be_imported(exported):
    from safetensors.numpy import save_file

    _, path = exported
    save_file({"x": np.random.default_rng(2).integers(0, 256, (30, 1, 28, 28), dtype=np.uint8),
               "y": (np.arange(30) % 10).astype(np.int64)}, str(path / "batch.safetensors"))
    before = (path / STATE_FILE).read_bytes()
    batch = str(path / "batch.safetensors")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from hebbedge.cli.app import main\n"
            f"sys.argv = ['hebbedge', 'edge', 'adapt', {str(path)!r}, '--data', {batch!r}, '--eval', {batch!r}]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "learning steps; state saved" in done.stdout and "batch.safetensors: accuracy" in done.stdout
    assert (path / STATE_FILE).read_bytes() != before
    code = "import sys; sys.modules['torch'] = None\nimport hebbedge.models\n"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0  # the guard works


def test_conv_hebbian_net_exports_and_learns_like_pytorch(tmp_path):
    torch.manual_seed(1)
    learner = trained_hebbian(thesis_conv(width_factor=1))
    export_model(learner.model, (1, 28, 28), MEAN, STD, tmp_path, list(range(10)), learns=True)
    edge = EdgeModel(tmp_path)
    x = np.random.default_rng(1).random((6, 1, 28, 28), dtype=np.float32)
    assert relative(edge.logits(x), pytorch_logits(learner, x)) < 1e-4
    y = np.arange(6) % 10
    edge.learn(x, y, batch_size=6, shuffle_seed=None)
    learner.step(standardise(x), torch.from_numpy(y))
    layers = [m for m in learner.model.modules() if hasattr(m, "momentum")]
    assert max(relative(edge.state[f"W{i}"], l.weight.detach().numpy()) for i, l in enumerate(layers)) < 1e-4


def test_edge_predict_reads_png_npy_and_labelled_files(exported, tmp_path):
    from PIL import Image
    from safetensors.numpy import save_file
    from typer.testing import CliRunner

    from hebbedge.cli.app import app

    _, path = exported
    digit = np.random.default_rng(4).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    np.save(tmp_path / "two.npy", np.stack([digit, digit]))
    save_file({"x": np.stack([digit] * 4), "y": np.zeros(4, dtype=np.int64)}, str(tmp_path / "set.safetensors"))
    expected = int(EdgeModel(path).predict(digit[None])[0])
    result = CliRunner().invoke(app, ["edge", "predict", str(path), str(tmp_path / "digit.png"), str(tmp_path / "two.npy"),
                                      str(tmp_path / "set.safetensors")])
    assert result.exit_code == 0, result.output
    assert f"digit.png: class {expected}" in result.output
    assert f"two.npy: classes [{expected}, {expected}]" in result.output
    assert "set.safetensors: 4 predictions, accuracy" in result.output
    bad = CliRunner().invoke(app, ["edge", "predict", str(path), str(tmp_path / "nothing.npy")])
    assert bad.exit_code == 2 and "not a readable .npy" in bad.output
    (tmp_path / "short.safetensors").write_bytes((tmp_path / "set.safetensors").read_bytes()[:50])
    bad = CliRunner().invoke(app, ["edge", "predict", str(path), str(tmp_path / "short.safetensors")])
    assert bad.exit_code == 2 and "not a readable .safetensors file" in bad.output


def test_export_command_on_stream_and_iid_runs(tmp_path):
    from typer.testing import CliRunner

    from hebbedge.cli.app import app
    from hebbedge.export.onnx import load_run

    runner = CliRunner()
    quick = ["--train-size", "600", "--test-size", "200", "--device", "cpu"]
    assert runner.invoke(app, ["train", "split-mnist", "--experiences", "2", "--freeze-c-after", "1", *quick,
                               "--out", str(tmp_path / "frozen")]).exit_code == 0
    result = runner.invoke(app, ["export", str(tmp_path / "frozen")])
    assert result.exit_code == 0, result.output
    edge = EdgeModel(tmp_path / "frozen" / "edge")
    assert edge.can_learn and edge.manifest["learner"] == "hebbian"
    model, info = load_run(tmp_path / "frozen")
    x = np.random.default_rng(5).random((6, 1, 28, 28), dtype=np.float32)
    assert relative(edge.logits(x), pytorch_logits(model, x)) < 1e-4

    assert runner.invoke(app, ["train", "split-mnist", "--experiences", "1", *quick, "--out", str(tmp_path / "plain")]).exit_code == 0
    result = runner.invoke(app, ["export", str(tmp_path / "plain")])
    assert result.exit_code == 0 and "pass --freeze-c" in result.output
    assert not (tmp_path / "plain" / "edge" / "learn.onnx").exists()

    assert runner.invoke(app, ["train", "mnist", "--widths", "16", "--train-size", "500", "--val-size", "100", "--device", "cpu",
                               "--out", str(tmp_path / "iid")]).exit_code == 0
    assert runner.invoke(app, ["export", str(tmp_path / "iid"), "--freeze-c"]).exit_code == 0
    assert EdgeModel(tmp_path / "iid" / "edge").can_learn

    bad = runner.invoke(app, ["export", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "expected a run directory" in bad.output
    bad = runner.invoke(app, ["export", str(tmp_path / "frozen"), "--int8"])
    assert bad.exit_code == 2 and "pass --calibration" in bad.output


def test_every_runtime_the_readme_installs_is_here():
    """The README's set-up installs all five runtimes; the runtime tests above run on each (none skipped)."""
    from hebbedge.export import node
    from hebbedge.export.runtimes import RUNTIMES

    assert RUNTIMES.keys() == {"onnxruntime", "openvino", "tract", "onnx-reference"}
    assert available() == list(RUNTIMES), "install with pip install -e '.[dev]' (the runtimes extra)"
    assert node.available(), "install the JavaScript client: npm ci --ignore-scripts --prefix export/js"


def test_edge_check_prints_the_runtime_by_precision_matrix_and_latency_runs(exported, tmp_path):
    """`hebbedge edge check` learns on a copy per runtime (the model directory itself is untouched) and
    every runtime agrees with ONNX Runtime; `hebbedge latency` reports each stage."""
    from safetensors.numpy import save_file
    from typer.testing import CliRunner

    from hebbedge.cli.app import app
    from hebbedge.export.check import all_runtimes

    _, path = exported
    rng = np.random.default_rng(6)
    for name in ("train", "test"):
        save_file({"x": rng.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8), "y": (np.arange(40) % 10).astype(np.int64)},
                  str(tmp_path / f"{name}.safetensors"))
    saved = (path / STATE_FILE).read_bytes()
    result = CliRunner().invoke(app, ["edge", "check", str(path), "--data", str(tmp_path / "train.safetensors"),
                                      "--eval", str(tmp_path / "test.safetensors"), "--no-latency", "--out", str(tmp_path / "check")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "check" / "check.json").read_text())["rows"]
    assert [r["runtime"] for r in rows] == all_runtimes() and all(r["agreement"] == 1.0 for r in rows)
    assert (path / STATE_FILE).read_bytes() == saved
    result = CliRunner().invoke(app, ["latency", str(path), "--runtime", "onnxruntime", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    assert "| onnxruntime | fp32 " in result.output and "state.safetensors" in result.output


def test_every_edge_file_truncated_or_corrupted_anywhere_is_an_edge_error(exported, tmp_path):
    """Fuzz: each file the edge reads, cut or with a byte flipped at many offsets, loads fine (a flip the
    format cannot see, e.g. inside a float of a data file) or raises EdgeError; never another exception."""
    import shutil

    from safetensors.numpy import save_file

    from hebbedge.export.edge import load_arrays

    _, path = exported
    rng = np.random.default_rng(7)
    save_file({"x": rng.integers(0, 256, (4, 1, 28, 28), dtype=np.uint8), "y": np.arange(4, dtype=np.int64)}, str(tmp_path / "d.safetensors"))
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (4, 1, 28, 28), dtype=np.uint8), y=np.arange(4))
    copy = tmp_path / "copy"
    checks = 0
    for name in ("manifest.json", STATE_FILE, "predict.onnx", "learn.onnx"):
        original = (path / name).read_bytes()
        for offset in sorted({int(o) for o in rng.integers(0, len(original), 12)} | {0, 8, len(original) - 1}):
            for damaged in (original[:offset], original[:offset] + bytes([original[offset] ^ 0x5A]) + original[offset + 1:]):
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(path, copy)
                (copy / name).write_bytes(damaged)
                try:
                    EdgeModel(copy).predict(np.zeros((1, 1, 28, 28), dtype=np.uint8))
                except EdgeError:
                    checks += 1
    assert checks > 100  # nearly every damage is caught (checksums), by an EdgeError
    for source in (tmp_path / "d.safetensors", tmp_path / "d.npz"):
        original = source.read_bytes()
        for offset in range(0, len(original), max(1, len(original) // 40)):
            for damaged in (original[:offset], original[:offset] + bytes([original[offset] ^ 0x5A]) + original[offset + 1:]):
                target = tmp_path / f"damaged{source.suffix}"
                target.write_bytes(damaged)
                try:
                    load_arrays(target)
                except EdgeError:
                    pass
