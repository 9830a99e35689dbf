"""The `hebbedge` command line: a tiny real run, bad input, missing data, safe saving."""

import json

import pytest
import torchvision
from typer.testing import CliRunner

from hebbedge import data
from hebbedge.cli.app import app
from hebbedge.files import save_json

runner = CliRunner()


def test_train_mnist_tiny_run_learns_and_writes_json(tmp_path):
    out, ckpt = tmp_path / "result.json", tmp_path / "checkpoint.pt"
    result = runner.invoke(app, ["train", "mnist", "--widths", "64,64", "--train-size", "3000", "--val-size", "500",
                                 "--epochs", "2", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    record = json.loads(out.read_text())
    assert record["config"]["learner"] == "hebbian" and len(record["history"]) == 2
    assert record["test_acc"] > 0.5  # chance is 0.1
    # The checkpoint restores a model with the same test accuracy.
    import torch
    from hebbedge.train import TrainConfig, build, evaluate, load_normalised

    state = torch.load(ckpt)
    cfg = TrainConfig(**state["config"])
    model, learner = build(cfg, (1, 28, 28), 10)
    learner.load_state_dict(state["learner"])
    _, _, x_test, y_test = load_normalised("mnist", torch.device("cpu"))
    assert evaluate(model, x_test, y_test) == record["test_acc"]


def test_train_backprop_twin(tmp_path):
    result = runner.invoke(app, ["train", "mnist", "--learner", "sgd", "--lr", "0.05", "--widths", "32", "--train-size", "2000",
                                 "--val-size", "200", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "sgd" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "cifar-100"], "valid: mnist, fashion-mnist (i.i.d.) and split-mnist"),
        (["train", "mnist", "--learner", "magic"], "expected one of ['hebbian', 'random', 'adam', 'sgd']"),
        (["train", "mnist", "--arch", "rnn"], "unknown architecture"),
        (["train", "mnist", "--widths", "20x20"], "comma-separated integers"),
        (["train", "mnist", "--device", "tpu"], "expected auto, cpu or cuda"),
        (["bench", "mnist", "--adam-lrs", "fast"], "comma-separated numbers"),
    ],
)
def test_bad_input_names_what_was_expected(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_data_offline_names_the_search_path(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(data, "PACKAGE_ROOT", empty / "pkg")
    monkeypatch.setattr(data, "SYSTEM_ROOT", empty / "sys")
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty / "cache"))
    monkeypatch.setenv("HEBBEDGE_DATA", str(empty / "env"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    result = runner.invoke(app, ["train", "mnist", "--data-dir", str(empty / "mine"), "--device", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    for place in ("mine", "env", "cache", "sys", "pkg"):
        assert str(empty / place) in result.output
    assert "HEBBEDGE_DATA" in result.output and "Downloading it failed" in result.output
    assert "Traceback" not in result.output


def test_save_json_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "r.json"
    save_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        save_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_bench_writes_json_and_plot(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "mnist", "--widths", "32", "--train-size", "2000", "--epochs", "2",
                                 "--adam-lrs", "1e-3,1e-2", "--sgd-lrs", "1e-2", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert set(record["summary"]) == {"hebbian", "random", "adam", "sgd"}
    assert set(record["runs"]["adam"]["tuning"]["val_acc_by_lr"]) == {"0.001", "0.01"}
    best = record["runs"]["adam"]["tuning"]
    assert best["val_acc_by_lr"][str(best["lr"])] == max(best["val_acc_by_lr"].values())
    assert all(len(r["history"]) == 2 for r in record["runs"].values())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
