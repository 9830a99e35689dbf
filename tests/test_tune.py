"""`hebbedge tune`: the validation stream held out from the training data, and the baselines' trials on it."""

import json
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from hebbedge import continual, data
from hebbedge.benchmarks import tune
from hebbedge.cli.app import app
from hebbedge.continual import StreamRun, run_stream
from hebbedge.scenarios import make_stream
from tinydata import write_tiny_mnist

runner = CliRunner()


def images(stream) -> list[bytes]:
    return [x.numpy().tobytes() for exp in stream for x, *_ in exp.dataset]


def labels(stream) -> Counter:
    return Counter(int(y) for exp in stream for _, y, *_ in exp.dataset)


def test_validation_is_held_out_of_the_training_images_stratified(tmp_path):
    root = write_tiny_mnist(tmp_path, n_train=100)
    bm = make_stream("split-mnist", seed=0, data_dir=root, validation=20)
    train, val = images(bm.train_stream), images(bm.test_stream)
    assert len(val) == 20 and len(train) == 80
    assert not set(train) & set(val) and len(set(train) | set(val)) == 100  # a partition of the training set
    assert labels(bm.test_stream) == {c: 2 for c in range(10)}  # every class, its share
    # train_size cuts what is left: the same images are held out.
    cut = make_stream("split-mnist", seed=0, data_dir=root, validation=20, train_size=50)
    assert images(cut.test_stream) == val and len(images(cut.train_stream)) == 50 and set(images(cut.train_stream)) < set(train)
    assert images(make_stream("split-mnist", seed=1, data_dir=root, validation=20).test_stream) != val  # per seed
    with pytest.raises(ValueError, match="test_size does not apply"):
        make_stream("split-mnist", data_dir=root, validation=20, test_size=10)
    with pytest.raises(ValueError, match="at most 99"):
        make_stream("split-mnist", data_dir=root, validation=100)


def test_a_validation_run_never_reads_the_test_set(tmp_path, monkeypatch):
    root = write_tiny_mnist(tmp_path / "data", n_train=100)
    read = []
    load_split = data.load_split
    monkeypatch.setattr(data, "load_split", lambda name, train, *a, **k: read.append(train) or load_split(name, train, *a, **k))
    run = StreamRun("split-mnist", "naive", validation=20, overrides={"model": {"widths": [16]}})
    results = run_stream(run, tmp_path / "run", torch.device("cpu"), str(root), progress=False)
    assert read == [True] and len(results["protocols"]["class-incremental"]["matrix"]) == 5
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["validation"] == 20


def test_the_chosen_setting_is_the_argmax_of_the_trials(tmp_path, monkeypatch):
    root = write_tiny_mnist(tmp_path / "data", n_train=100)
    accuracy = {1.0: 0.2, 100.0: 0.5, 1e4: 0.5, 1e6: 0.1, 250: 0.3, 500: 0.4, 1000: 0.6, 2000: 0.6}  # ties: the first wins

    def fake_run(run, *args, **kw):
        (value,) = run.overrides["backprop"].values()
        return {"protocols": {"class-incremental": {"final_avg_acc": accuracy[value]}}}
    monkeypatch.setattr(continual, "run_stream", fake_run)  # what continual.run_all calls
    record = tune.tune("split-mnist", ["ewc", "replay"], 4, 20, tmp_path / "out", torch.device("cpu"), str(root))
    assert record == json.loads((tmp_path / "out" / "tuned.json").read_text())
    assert [t["setting"] for t in record["methods"]["ewc"]["trials"]] == tune.candidates("ewc", 4)
    assert record["methods"]["ewc"]["chosen"] == {"ewc_lambda": 100.0} and record["methods"]["ewc"]["validation_acc"] == 0.5
    assert record["methods"]["replay"]["chosen"] == {"replay_mem_size": 1000}
    assert record["validation"] == 20 and record["trials_per_method"] == 4 and record["seed"] == 0
    assert "| ewc | **ewc_lambda = 100** | 50.00 |" in (tmp_path / "out" / "report.md").read_text()


def test_every_method_gets_the_same_budget_of_distinct_candidates():
    for k in (2, 3, 4, 7):
        for method in tune.RANGES:
            settings = tune.candidates(method, k)
            assert len(settings) == k and len({json.dumps(s) for s in settings}) == k
    assert tune.candidates("replay", 4) == [{"replay_mem_size": n} for n in (250, 500, 1000, 2000)]


def test_tune_command_runs_each_trial_in_its_own_resumable_folder(tmp_path, monkeypatch):
    root = write_tiny_mnist(tmp_path / "data", n_train=100)
    calls = []

    def fake_run(run, out, device, data_dir, resume, progress):
        calls.append((run, out, resume))
        return {"protocols": {"class-incremental": {"final_avg_acc": 0.1 * len(calls)}}}
    monkeypatch.setattr(continual, "run_stream", fake_run)  # what continual.run_all calls
    result = runner.invoke(app, ["tune", "split-mnist", "--learners", "lwf,si", "--trials", "2", "--validation", "20",
                                 "--device", "cpu", "--data-dir", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert [(r.learner, r.validation, r.seed, r.overrides) for r, _, _ in calls] == [
        ("lwf", 20, 0, {"backprop": s}) for s in tune.candidates("lwf", 2)] + [("si", 20, 0, {"backprop": s}) for s in tune.candidates("si", 2)]
    assert [out for _, out, _ in calls] == [tmp_path / "out" / m / f"trial{i}" for m in ("lwf", "si") for i in (0, 1)]
    assert all(resume for *_, resume in calls)  # an interrupted tuning continues; finished trials are read back
    record = json.loads((tmp_path / "out" / "tuned.json").read_text())
    assert record["methods"]["si"]["chosen"] == tune.candidates("si", 2)[1] and "| si | **si_lambda = 10000** | 40.00 |" in result.output


@pytest.mark.parametrize("args, message", [
    (["--trials", "1"], "--trials must be from 2 to 10"),
    (["--trials", "11"], "--trials must be from 2 to 10"),
    (["--learners", "ewc,naive"], "--learners expects distinct names among ewc, si, lwf, replay"),
    (["--learners", "ewc,ewc"], "--learners expects distinct names among ewc, si, lwf, replay"),
    (["--validation", "0"], "--validation must be at least 1"),
])
def test_tune_rejects_bad_input_naming_what_was_expected(tmp_path, args, message):
    result = runner.invoke(app, ["tune", "split-mnist", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
