"""ONNX export and the edge runtime: equal to PyTorch, learns like PyTorch, runs without torch."""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hebbedge.export.edge import EdgeError, EdgeModel
from hebbedge.export.onnx import export_model, state_of
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_conv, thesis_linear

MEAN, STD = (0.1307,), (0.3081,)


def trained(model, steps=3, frozen=True):
    torch.manual_seed(0)
    learner = HebbianLearner(model)
    for _ in range(steps):
        x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
        learner.step((x - MEAN[0]) / STD[0], y)
    if frozen:
        learner.freeze_c()
    return learner


@pytest.fixture(params=["linear", "conv"])
def exported(request, tmp_path):
    torch.manual_seed(1)
    # The thesis rates. With rates ~50x larger, float32 rounding differences between the two runtimes
    # grow over tens of steps (sign(S) in the contrastive rule makes the step discontinuous).
    model = thesis_linear(widths=(64, 32)) if request.param == "linear" else thesis_conv(width_factor=1)
    learner = trained(model)
    export_model(model, (1, 28, 28), MEAN, STD, tmp_path, list(range(10)), with_update=True)
    return learner, tmp_path


def test_onnx_inference_equals_pytorch(exported):
    learner, path = exported
    x = torch.rand(9, 1, 28, 28)
    learner.model.eval()
    with torch.no_grad():
        expected = learner.model((x - MEAN[0]) / STD[0]).numpy()
    got = ort.InferenceSession(str(path / "model.onnx")).run(None, {"images": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_update_graph_takes_and_returns_the_state(exported):
    _, path = exported
    graph = onnx.load(str(path / "update.onnx")).graph
    n = len(np.load(path / "state.npz").files) // 2
    assert [i.name for i in graph.input] == ["images", "labels"] + [f"W{i}" for i in range(n)] + [f"M{i}" for i in range(n)]
    assert [o.name for o in graph.output] == ["logits"] + [f"W{i}_new" for i in range(n)] + [f"M{i}_new" for i in range(n)]


def test_onnx_learning_steps_equal_pytorch_frozen_steps(exported):
    learner, path = exported
    edge = EdgeModel(path)
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.random((12, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 12)
        edge.adapt(x, y, batch_size=12, shuffle_seed=None)
        learner.step((torch.from_numpy(x) - MEAN[0]) / STD[0], torch.from_numpy(y))
    expected = state_of(learner.model)
    assert max(np.abs(edge.state[k] - expected[k]).max() for k in expected) < 1e-4
    assert any(np.abs(edge.state[k] - v).max() > 1e-3 for k, v in np.load(path / "state.npz").items())  # it learned


def test_an_export_from_before_readouts_still_learns(exported):
    """metadata.json of earlier exports has no update "names" (nor "kind"): W_i then M_i are assumed."""
    _, path = exported
    meta = json.loads((path / "metadata.json").read_text())
    reference = EdgeModel(path)
    for key in ("names", "kind"):
        del meta["update"][key]
    (path / "metadata.json").write_text(json.dumps(meta))
    old = EdgeModel(path)
    x, y = np.random.default_rng(2).random((8, 1, 28, 28), dtype=np.float32), np.arange(8) % 10
    old.adapt(x, y, batch_size=8)
    reference.adapt(x, y, batch_size=8)
    assert not old.learns_readout and all(np.array_equal(old.state[k], v) for k, v in reference.state.items())


def test_save_writes_new_weights_into_the_inference_model(exported):
    learner, path = exported
    edge = EdgeModel(path)
    x, y = np.random.default_rng(1).random((20, 1, 28, 28), dtype=np.float32), np.arange(20) % 10
    edge.adapt(x, y, batch_size=10)
    edge.save()
    again = EdgeModel(path)
    for k, v in edge.state.items():
        assert np.array_equal(again.state[k], v)
    step_logits = edge.step.run(None, {"images": x[:4], "labels": y[:4], **{k: v for k, v in edge.state.items() if k.startswith("W")},
                                       **{k: np.zeros_like(v) for k, v in edge.state.items() if k.startswith("M")}})[0]
    assert np.abs(again.logits(x[:4]) - step_logits).max() < 1e-4  # M = 0: W_eff = W, the saved weights


def test_bad_input_is_named(exported, tmp_path):
    _, path = exported
    edge = EdgeModel(path)
    with pytest.raises(EdgeError, match=r"shape \[N, 1, 28, 28\]"):
        edge.predict(np.zeros((2, 3, 28, 28), dtype=np.float32))
    with pytest.raises(EdgeError, match="uint8 .* or float"):
        edge.predict(np.zeros((2, 1, 28, 28), dtype=np.int32))
    with pytest.raises(EdgeError, match=r"labels must be 3 integers in \[0, 10\)"):
        edge.adapt(np.zeros((3, 28, 28), dtype=np.uint8), np.array([0, 1, 12]))
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "metadata.json").write_text((path / "metadata.json").read_text())
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(EdgeError, match="not a loadable ONNX model"):
        EdgeModel(bad)
    with pytest.raises(EdgeError, match="metadata.json"):
        EdgeModel(tmp_path / "nowhere")


def test_a_failed_step_keeps_the_saved_state(exported):
    _, path = exported
    before = (path / "state.npz").read_bytes()
    edge = EdgeModel(path)
    state = {k: v.copy() for k, v in edge.state.items()}
    real = edge.step

    class Overflowing:  # the second step returns non-finite weights
        calls = 0

        def run(self, names, feeds):
            Overflowing.calls += 1
            outs = real.run(names, feeds)
            return [o * np.float32("nan") for o in outs] if Overflowing.calls == 2 else outs

    edge.step = Overflowing()
    with pytest.raises(EdgeError, match="non-finite"):
        edge.adapt(np.random.default_rng(3).random((8, 1, 28, 28), dtype=np.float32), np.arange(8), batch_size=4)
    assert all(np.array_equal(edge.state[k], v) for k, v in state.items())  # nothing of the pass was kept
    assert (path / "state.npz").read_bytes() == before


def test_edge_runtime_runs_where_torch_cannot_be_imported(exported):
    _, path = exported
    np.savez(path / "batch.npz", x=np.random.default_rng(2).integers(0, 256, (30, 1, 28, 28), dtype=np.uint8), y=np.arange(30) % 10)
    model_before = (path / "model.onnx").read_bytes()
    code = ("import sys; sys.modules['torch'] = None\n"
            "from hebbedge.cli.app import main\n"
            f"sys.argv = ['hebbedge', 'edge', 'adapt', {str(path)!r}, '--data', {str(path / 'batch.npz')!r}, '--eval', {str(path / 'batch.npz')!r}]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Hebbian steps; weights saved" in done.stdout and "batch.npz: accuracy" in done.stdout
    assert (path / "model.onnx").read_bytes() != model_before  # the learned weights were saved into the model
    code = "import sys; sys.modules['torch'] = None\nimport hebbedge.models\n"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0  # the guard works


def test_int8_accuracy_within_one_point_of_fp32(tmp_path):
    from hebbedge.data import load_split
    from hebbedge.train import TrainConfig, build, fit

    torch.manual_seed(0)
    x, y = load_split("mnist", True)
    xt, yt = load_split("mnist", False)
    cfg = TrainConfig(learner="sgd", widths=(128, 128), lr=0.05)
    model, learner = build(cfg, (1, 28, 28), 10)
    fit(learner, ((x[:6000] - MEAN[0]) / STD[0]), y[:6000], epochs=1, batch_size=32, progress=False)
    export_model(model, (1, 28, 28), MEAN, STD, tmp_path, list(range(10)), with_update=False, int8=True)
    fp32, int8 = EdgeModel(tmp_path), EdgeModel(tmp_path, int8=True)
    images, labels = xt[:3000].numpy(), yt[:3000].numpy()
    a32, a8 = fp32.accuracy(images, labels), int8.accuracy(images, labels)
    assert a32 > 0.85
    assert abs(a32 - a8) < 0.01
    assert (tmp_path / "model.int8.onnx").stat().st_size < (tmp_path / "model.onnx").stat().st_size / 2


def test_edge_predict_reads_png_npy_and_npz(exported, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from hebbedge.cli.app import app

    _, path = exported
    digit = np.random.default_rng(4).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    np.save(tmp_path / "two.npy", np.stack([digit, digit]))
    np.savez(tmp_path / "set.npz", x=np.stack([digit] * 4), y=np.zeros(4, dtype=np.int64))
    expected = int(EdgeModel(path).predict(digit[None])[0])
    result = CliRunner().invoke(app, ["edge", "predict", str(path), str(tmp_path / "digit.png"), str(tmp_path / "two.npy"),
                                      str(tmp_path / "set.npz")])
    assert result.exit_code == 0, result.output
    assert f"digit.png: class {expected}" in result.output
    assert f"two.npy: classes [{expected}, {expected}]" in result.output
    assert "set.npz: 4 predictions, accuracy" in result.output
    bad = CliRunner().invoke(app, ["edge", "predict", str(path), str(tmp_path / "nothing.npy")])
    assert bad.exit_code == 2 and "not a readable .npy" in bad.output


def test_export_command_on_stream_and_iid_runs(tmp_path):
    from typer.testing import CliRunner

    from hebbedge.cli.app import app

    runner = CliRunner()
    quick = ["--train-size", "600", "--test-size", "200", "--device", "cpu"]
    assert runner.invoke(app, ["train", "split-mnist", "--experiences", "2", "--freeze-c-after", "1", *quick,
                               "--out", str(tmp_path / "frozen")]).exit_code == 0
    result = runner.invoke(app, ["export", str(tmp_path / "frozen"), "--int8"])
    assert result.exit_code == 0, result.output
    edge = EdgeModel(tmp_path / "frozen" / "edge")
    assert edge.can_learn and edge.meta["learner"] == "hebbian" and edge.meta["int8"] == "model.int8.onnx"
    # The exported model predicts what the trained PyTorch model predicts.
    from hebbedge.export.onnx import load_run

    model, info = load_run(tmp_path / "frozen")
    x = np.random.default_rng(5).random((6, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = model.eval()((torch.from_numpy(x) - MEAN[0]) / STD[0]).numpy()
    assert np.abs(edge.logits(x) - expected).max() < 1e-4

    assert runner.invoke(app, ["train", "split-mnist", "--experiences", "1", *quick, "--out", str(tmp_path / "plain")]).exit_code == 0
    result = runner.invoke(app, ["export", str(tmp_path / "plain")])
    assert result.exit_code == 0 and "pass --freeze-c" in result.output
    assert not (tmp_path / "plain" / "edge" / "update.onnx").exists()

    assert runner.invoke(app, ["train", "mnist", "--widths", "16", "--train-size", "500", "--val-size", "100", "--device", "cpu",
                               "--out", str(tmp_path / "iid")]).exit_code == 0
    assert runner.invoke(app, ["export", str(tmp_path / "iid"), "--freeze-c"]).exit_code == 0
    assert EdgeModel(tmp_path / "iid" / "edge").can_learn

    bad = runner.invoke(app, ["export", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "expected a run directory" in bad.output
