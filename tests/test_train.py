"""Per-epoch checkpoints of i.i.d. runs and of the accuracy benchmark: an interrupted run, resumed,
ends exactly where the uninterrupted one does."""

import json

import pytest
import torch
from typer.testing import CliRunner

from hebbedge.benchmarks import accuracy as bench
from hebbedge.backprop import BackpropLearner
from hebbedge.cli.app import app
from hebbedge.learner import HebbianLearner
from hebbedge.train import TrainConfig, build, run


def tiny_data() -> tuple[torch.Tensor, ...]:
    """4 classes of 8x8 images whose class shows in four pixels: learnable in a few epochs."""
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(400, 1, 8, 8, generator=g), torch.randn(100, 1, 8, 8, generator=g)
    y, yt = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (100,), generator=g)
    x[:, 0, 0, :4] += 2 * torch.nn.functional.one_hot(y, 4)
    xt[:, 0, 0, :4] += 2 * torch.nn.functional.one_hot(yt, 4)
    return x, y, xt, yt


def interrupt_at_step(monkeypatch, learner_class: type, n: int) -> None:
    """The n-th training step raises KeyboardInterrupt, as a killed process would stop there."""
    step, calls = learner_class.step, [0]

    def counted(self, *args):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(learner_class, "step", counted)


def without_seconds(obj):
    """A record with the wall-clock times taken out (the only thing a resumed run may change)."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


# dropout draws from the global RNG, so it checks that the RNG state travels with the checkpoint.
@pytest.mark.parametrize("learner, learner_class", [("hebbian", HebbianLearner), ("sgd", BackpropLearner)])
def test_resumed_run_equals_uninterrupted(tmp_path, monkeypatch, learner, learner_class):
    data = tiny_data()
    cfg = TrainConfig(learner=learner, widths=(16, 16), epochs=3, batch_size=16, val_size=50, dropout=0.2, lr=0.05)
    whole = run(cfg, "cpu", data=data, progress=False, checkpoint=tmp_path / "whole.pt")

    steps_per_epoch = -(-(400 - 50) // 16)
    with monkeypatch.context() as patch:  # stopped in the middle of epoch 2: epoch 1's checkpoint is what is left
        interrupt_at_step(patch, learner_class, steps_per_epoch + 5)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, "cpu", data=data, progress=False, checkpoint=tmp_path / "cut.pt")
    cut = torch.load(tmp_path / "cut.pt", weights_only=True)  # tensors and plain values only
    assert len(cut["history"]) == 1 and cut["best"]["epoch"] == 1

    with pytest.raises(FileExistsError, match="--resume"):
        run(cfg, "cpu", data=data, progress=False, checkpoint=tmp_path / "cut.pt")
    resumed = run(cfg, "cpu", data=data, progress=False, checkpoint=tmp_path / "cut.pt", resume=True)

    assert without_seconds(resumed) == without_seconds(whole)
    assert [h["test_acc"] for h in whole["history"]][whole["best_epoch"] - 1] == whole["test_acc"]
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["learner"]
    b = torch.load(tmp_path / "cut.pt", weights_only=True)["learner"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # A finished run resumed again only evaluates its chosen weights.
    assert without_seconds(run(cfg, "cpu", data=data, progress=False, checkpoint=tmp_path / "cut.pt", resume=True)) == without_seconds(whole)


def test_resume_refuses_other_settings(tmp_path):
    cfg = TrainConfig(widths=(8,), epochs=1, batch_size=32, val_size=50)
    run(cfg, "cpu", data=tiny_data(), progress=False, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="batch_size differ"):
        run(TrainConfig(widths=(8,), epochs=1, batch_size=16, val_size=50), "cpu", data=tiny_data(), progress=False,
            checkpoint=tmp_path / "c.pt", resume=True)


def test_resumed_benchmark_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "load_normalised", lambda *args: tiny_data())
    cfg = TrainConfig(widths=(16,), epochs=2, batch_size=32, val_size=50)
    args = dict(tune_epochs=1, adam_lrs=(1e-3, 1e-2), sgd_lrs=(1e-2,), device="cpu", progress=False)
    whole = bench.benchmark(cfg, **args, state_dir=tmp_path / "whole")

    steps_per_epoch = -(-(400 - 50) // 32)
    with monkeypatch.context() as patch:  # backprop steps: 2 tuning epochs, then epoch 2 of the tuned Adam run
        interrupt_at_step(patch, BackpropLearner, 3 * steps_per_epoch + 3)
        with pytest.raises(KeyboardInterrupt):
            bench.benchmark(cfg, **args, state_dir=tmp_path / "cut")
    assert {p.name for p in (tmp_path / "cut").iterdir()} == {
        "hebbian.json", "random.json", "adam-tune-lr0.001.json", "adam-tune-lr0.01.json", "adam.pt"}
    with pytest.raises(FileExistsError, match="--resume"):
        bench.benchmark(cfg, **args, state_dir=tmp_path / "cut")
    resumed = bench.benchmark(cfg, **args, state_dir=tmp_path / "cut", resume=True)
    def as_saved(record: dict) -> dict:  # some of the resumed runs were read back from JSON (tuples as lists)
        return without_seconds(json.loads(json.dumps(record)))

    assert as_saved(resumed) == as_saved(whole)


def test_train_command_resumes_and_plots(tmp_path):
    args = ["train", "mnist", "--widths", "16", "--train-size", "500", "--val-size", "100", "--epochs", "2",
            "--device", "cpu", "--out", str(tmp_path)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["finished"] and [h["epoch"] for h in record["history"]] == [1, 2]
    assert all("val_acc" in h and "test_acc" in h for h in record["history"])
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = CliRunner().invoke(app, args + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"test accuracy {100 * record['test_acc']:.2f}%" in resumed.output


def test_an_iid_config_is_the_shared_schema_and_takes_set():
    from hebbedge.config import ConfigError

    cfg = TrainConfig(widths=(16, 8), c_lr=0.1)
    sections = cfg.config()
    assert sections.model.widths == (16, 8) and sections.hebbian.lr == 0.1 and sections.stream.batch_size == 32
    changed = cfg.with_overrides({"hebbian": {"eta": 2e-3, "momentum": False}, "model": {"widths": [4]}})
    assert (changed.eta, changed.momentum, changed.widths) == (2e-3, False, (4,))
    sgd = cfg.with_overrides({"hebbian": {"optimizer": "sgd", "sgd_momentum": 0.9}})
    assert sgd.config().hebbian.optimizer == "sgd" and sgd.config().hebbian.sgd_momentum == 0.9
    _, learner = build(sgd, (1, 4, 4), 3)  # the learner trains C by the optimizer the config names
    assert isinstance(learner.optimizer, torch.optim.SGD) and learner.optimizer.defaults["momentum"] == 0.9
    for overrides, message in (({"unsupervised": {"q": 1.0}}, "--set unsupervised.q: not a setting of an i.i.d. run"),
                               ({"hebbian": {"eta": "fast"}}, "--set: hebbian.eta: expected float")):
        with pytest.raises(ConfigError, match=message):
            cfg.with_overrides(overrides)


def test_the_backprop_learner_names_a_bad_optimizer():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw'; expected one of \['adam', 'sgd'\]"):
        BackpropLearner(torch.nn.Linear(4, 2), "adamw")
