"""The `hebbedge` command line: a tiny real run, bad input, missing data, safe saving."""

import json

import pytest
import torchvision
from typer.testing import CliRunner

from hebbedge.cli.app import app
from hebbedge.files import save_json
from tinydata import write_tiny_mnist

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
        (["bench", "accuracy", "mnist", "--adam-lrs", "fast"], "comma-separated numbers"),
    ],
)
def test_bad_input_names_what_was_expected(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_data_offline_names_the_search_path(isolated, monkeypatch):
    empty = isolated
    write_tiny_mnist(empty / "mine", name="fashion-mnist")  # a data folder, without MNIST
    monkeypatch.setenv("HEBBEDGE_DATA", str(empty / "env"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    result = runner.invoke(app, ["train", "mnist", "--data-dir", str(empty / "mine"), "--device", "cpu", "--out", str(empty / "run")])
    assert result.exit_code == 2
    for place in ("mine", "env", "xdg", "system", "package"):
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
    result = runner.invoke(app, ["bench", "accuracy", "mnist", "--widths", "32", "--train-size", "2000", "--epochs", "2",
                                 "--adam-lrs", "1e-3,1e-2", "--sgd-lrs", "1e-2", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert set(record["summary"]) == {"hebbian", "random", "adam", "sgd"}
    assert set(record["runs"]["adam"]["tuning"]["val_acc_by_lr"]) == {"0.001", "0.01"}
    best = record["runs"]["adam"]["tuning"]
    assert best["val_acc_by_lr"][str(best["lr"])] == max(best["val_acc_by_lr"].values())
    assert all(len(r["history"]) == 2 for r in record["runs"].values())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scenarios_lists_streams_and_iid():
    result = runner.invoke(app, ["scenarios"])
    assert result.exit_code == 0
    for name in ("mnist", "split-mnist", "permuted-mnist", "rotated-mnist", "split-fashion-mnist", "split-cifar10"):
        assert name in result.output


def test_train_split_mnist_prints_both_protocols(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "split-mnist", "--train-size", "1000", "--test-size", "300", "--freeze-c-after", "2",
                                 "--class-order", "9,8,7,6,5,4,3,2,1,0", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "class-incremental: final average accuracy" in result.output
    assert "task-aware       : final average accuracy" in result.output
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.json", "checkpoint.pt", "model.pt", "accuracy_matrix.png", "experience_accuracy.png"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["protocols"]["class-incremental"]["matrix"]) == 5
    assert metrics["classes_per_experience"] == [[8, 9], [6, 7], [4, 5], [2, 3], [0, 1]]
    again = runner.invoke(app, ["train", "split-mnist", "--train-size", "1000", "--out", str(out)])
    assert again.exit_code == 2 and "holds another run" in again.output
    assert all(f"{option} " in again.output for option in ("--freeze-c-after", "--class-order", "--test-size"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "split-mnist", "--learner", "magic"], "valid: hebbian, frozen-c, random, softhebb, swta, hpca, wta, hybrid-bottom-hebb, hybrid-top-hebb, naive, ewc, si, lwf, replay, joint, slda"),
        (["train", "split-mnist", "--learner", "ewc", "--freeze-c-after", "1"], "applies to the Hebbian learners"),
        (["train", "mnist", "--freeze-c-after", "1"], "apply to streams"),
        (["train", "split-mnist", "--class-order", "1,2,3"], "a permutation of the classes 0..9"),
        (["compare", "mnist"], "unknown stream 'mnist'"),
        (["compare", "split-mnist", "--learners", "naive,bogus"], "unknown learner 'bogus'"),
    ],
)
def test_stream_bad_input(args, message, tmp_path):
    result = runner.invoke(app, args + ["--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_compare_writes_report(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "split-mnist", "--learners", "hebbian,slda", "--seeds", "2", "--train-size", "600", "--test-size", "200",
            "--device", "cpu", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| hebbian |" in result.output and "| slda |" in result.output
    record = json.loads((out / "results.json").read_text())
    assert record["seeds"] == 2 and set(record["summary"]) == {"hebbian", "slda"}
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # header + learners x seeds x protocols
    assert "task-aware: final avg acc" in (out / "report.md").read_text()
    for png in ("accuracy_matrices.png", "final_accuracy.png", "experience_accuracy_class-incremental.png", "experience_accuracy_task-aware.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # Finished runs are read back, not trained again.
    before = (out / "hebbian" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert runner.invoke(app, args).exit_code == 0
    assert (out / "hebbian" / "seed0" / "metrics.json").stat().st_mtime_ns == before


def test_compare_set_overrides_a_config_value_and_rejects_unknown_keys(tmp_path):
    args = ["compare", "split-mnist", "--learners", "random-lda", "--seeds", "1", "--train-size", "600", "--test-size", "200",
            "--device", "cpu", "--out", str(tmp_path / "c")]
    result = runner.invoke(app, args + ["--set", "model.widths=[64]"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "c" / "random-lda" / "seed0" / "config.json").read_text())
    assert config["config"]["model"]["widths"] == [64] and config["run"]["overrides"] == {"model": {"widths": [64]}}
    for bad, message in (("model.widths", "SECTION.KEY=VALUE"), ("model.depth=3", "unknown key model.depth")):
        result = runner.invoke(app, args[:-1] + [str(tmp_path / "d"), "--set", bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_report_plots_the_seed_mean_matrix_and_says_so():
    """A multi-seed report's heatmaps and curves show the mean over seeds, named as such, not the first seed."""
    from hebbedge.report import seed_mean_matrices

    def run(seed, a):
        return {"run": {"seed": seed}, "protocols": {"task-aware": {"matrix": [[a, 0.0], [a / 2, 1.0]]}}}

    means = seed_mean_matrices({"naive": [run(0, 0.8), run(1, 0.4)], "ewc": [run(3, 0.5)]})
    assert list(means) == ["naive, mean of 2 seeds", "ewc, seed 3"]
    assert [pytest.approx(row) for row in means["naive, mean of 2 seeds"]["task-aware"]] == [[0.6, 0.0], [0.3, 1.0]]
    assert means["ewc, seed 3"]["task-aware"] == [[0.5, 0.0], [0.25, 1.0]]
