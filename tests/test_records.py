"""Run records that cannot lie: settings fixed when a run folder is made, other settings refused by
name, finished runs read back, default folders named after every setting, validated options."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hebbedge.cli.app import app
from hebbedge.continual import RunMismatchError, StreamRun, default_run_dir, run_stream
from hebbedge.files import BadFileError
from hebbedge.report import compare_dir
from tinydata import tiny_options, write_tiny_mnist

runner = CliRunner()
CPU = torch.device("cpu")
W16 = {"model": {"widths": [16]}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


def test_other_settings_on_a_finished_or_interrupted_run_are_refused_by_name(tmp_path, tiny):
    finished, cut = tmp_path / "finished", tmp_path / "cut"
    base = ["train", "split-mnist", *tiny_options(tiny)]
    assert runner.invoke(app, base + ["--out", str(finished)]).exit_code == 0
    run_stream(StreamRun("split-mnist", overrides=W16), cut, CPU, str(tiny), progress=False, stop_after=2)
    for out in (finished, cut):
        before = files_of(out)
        for extra, named in ((["--resume", "--learner", "random", "--seed", "3"], ["--learner", "--seed"]),
                             (["--freeze-c-after", "1", "--resume"], ["--freeze-c-after"]),
                             (["--epochs", "2", "--resume"], ["--epochs"]),
                             (["--set", "hebbian.lr=0.5"], ["hebbian.lr"])):
            result = runner.invoke(app, base + extra + ["--out", str(out)])
            assert result.exit_code == 2, result.output
            line = error_line(result.output)
            assert "holds another run" in line and all(f"{name} " in line for name in named), line
        assert files_of(out) == before  # the record, the metrics and the weights untouched


def test_the_same_command_again_prints_the_finished_runs_results(tmp_path, tiny):
    args = ["train", "split-mnist", *tiny_options(tiny), "--out", str(tmp_path / "run")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before = files_of(tmp_path / "run")
    for extra in ([], ["--resume"]):
        again = runner.invoke(app, args + extra)
        assert again.exit_code == 0, again.output
        assert "holds this run, finished" in again.output
        assert again.stdout.split("split-mnist (hebbian")[1].strip() == first.stdout.split("split-mnist (hebbian")[1].strip()
    assert files_of(tmp_path / "run") == before


def test_an_interrupted_run_needs_resume_and_then_completes(tmp_path, tiny):
    args = ["train", "split-mnist", *tiny_options(tiny), "--out", str(tmp_path / "run")]
    run_stream(StreamRun("split-mnist", overrides=W16), tmp_path / "run", CPU, str(tiny), progress=False, stop_after=2)
    assert "pass --resume" in error_line(runner.invoke(app, args).output)
    result = runner.invoke(app, args + ["--resume"])
    assert result.exit_code == 0 and "class-incremental: final average accuracy" in result.output, result.output


def test_default_run_folders_name_every_setting_that_changes_the_run():
    assert default_run_dir(StreamRun("split-mnist")) == Path("runs/split-mnist-hebbian-seed0")
    # The default spelled out is the same run, in the same folder.
    assert default_run_dir(StreamRun("split-mnist", epochs=1, experiences=5)) == Path("runs/split-mnist-hebbian-seed0")
    assert default_run_dir(StreamRun("split-mnist", freeze_c_after=1)) == Path("runs/split-mnist-hebbian-seed0-freeze-c-after1")
    runs = [StreamRun("split-mnist"), StreamRun("split-mnist", freeze_c_after=1), StreamRun("split-mnist", freeze_c_after=2),
            StreamRun("split-mnist", "ewc", 1), StreamRun("split-mnist", seed=1), StreamRun("split-mnist", epochs=2),
            StreamRun("split-mnist", experiences=2), StreamRun("split-mnist", class_order=list(range(10))),
            StreamRun("split-mnist", train_size=100), StreamRun("split-mnist", test_size=100),
            StreamRun("split-mnist", overrides=W16), StreamRun("split-mnist", overrides={"hebbian": {"lr": 0.5}}),
            StreamRun("permuted-mnist")]
    folders = [default_run_dir(run) for run in runs]
    assert len(set(folders)) == len(folders), folders
    assert compare_dir(StreamRun("split-mnist", "naive")) == Path("runs/compare-split-mnist")
    assert compare_dir(StreamRun("split-mnist", "naive", epochs=2, train_size=600)) == Path("runs/compare-split-mnist-train-size600-epochs2")


def test_the_readme_commands_run_in_sequence_twice(tmp_path, tiny, monkeypatch):
    """README's continual-learning block (on made-up data, with a small net and fewer learners)."""
    monkeypatch.chdir(tmp_path)
    opts = tiny_options(tiny)
    commands = [["scenarios"], ["train", "split-mnist", *opts], ["train", "split-mnist", "--learner", "ewc", "--seed", "1", *opts],
                ["train", "split-mnist", "--freeze-c-after", "1", *opts],
                ["compare", "split-mnist", "--learners", "hebbian,naive", "--seeds", "1", *opts]]
    for round in range(2):
        for command in commands:
            result = runner.invoke(app, command)
            assert result.exit_code == 0, (round, command, result.output)
            if round and command[0] == "train":
                assert "holds this run, finished" in result.output
    assert len(list((tmp_path / "runs").glob("split-mnist-*"))) == 3
    # The same report folder with other settings: refused by name before anything trains.
    other = runner.invoke(app, commands[-1] + ["--set", "hebbian.lr=0.5", "--out", "runs/compare-split-mnist-model.widths=16"])
    assert other.exit_code == 2 and "hebbian.lr 0.01 (recorded) vs 0.5 (asked)" in error_line(other.output)


def test_the_data_used_is_recorded_and_other_data_refused(tmp_path, tiny):
    out = tmp_path / "run"
    run_stream(StreamRun("split-mnist", overrides=W16), out, CPU, str(tiny), progress=False, stop_after=1)
    record = json.loads((out / "config.json").read_text())
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert [Path(f["file"]).name for f in record["data"]] == names
    assert all(f["file"].startswith(str(tiny.resolve())) and len(f["sha256"]) == 64 for f in record["data"])
    other = write_tiny_mnist(tmp_path / "other", seed=1)
    with pytest.raises(RunMismatchError, match="data train-images-idx3-ubyte.gz: sha256"):
        run_stream(StreamRun("split-mnist", overrides=W16), out, CPU, str(other), progress=False, resume=True)


@pytest.mark.parametrize("epochs", ["0", "-1"])
@pytest.mark.parametrize("command", [["train", "split-mnist"], ["train", "mnist"], ["compare", "split-mnist", "--learners", "naive"]])
def test_epochs_below_one_are_refused(tmp_path, command, epochs):
    result = runner.invoke(app, command + ["--epochs", epochs, "--device", "cpu", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "--epochs must be at least 1" in error_line(result.output)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("make, message", [(lambda d: None, "no such folder"), (lambda d: d.mkdir(), "holds no dataset"),
                                           (lambda d: (d / "notes").mkdir(parents=True), "holds no dataset")])
def test_a_data_dir_without_data_is_an_error_not_a_fallback(tmp_path, make, message):
    make(tmp_path / "data")
    result = runner.invoke(app, ["train", "split-mnist", "--data-dir", str(tmp_path / "data"), "--train-size", "100",
                                 "--test-size", "50", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'data'}: {message}" in error_line(result.output)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad, message", [('stream.batch_size="big"', "stream.batch_size: expected int, got \"big\""),
                                          ("stream.batch_size=0", "stream.batch_size must be a positive integer"),
                                          ('model.widths=["a"]', "model.widths"), ("hebbian.momentum=1", "hebbian.momentum")])
def test_compare_set_of_a_wrong_value_is_refused_before_any_folder(tmp_path, bad, message):
    result = runner.invoke(app, ["compare", "split-mnist", "--learners", "hebbian", "--seeds", "1", "--set", bad,
                                 "--device", "cpu", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert message in error_line(result.output)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args, message", [
    (["--freeze-c-after", "5"], "--freeze-c-after must be an experience index 0..4"),
    (["--freeze-c-after", "2", "--experiences", "2"], "--freeze-c-after must be an experience index 0..1"),
    (["--experiences", "6"], "--experiences must be at most 5"),
    (["--train-size", "0"], "--train-size must be at least 1"),
    (["--seed", "-1"], "--seed must be at least 0"),
])
def test_stream_options_out_of_range_are_refused(tmp_path, args, message):
    result = runner.invoke(app, ["train", "split-mnist", *args, "--device", "cpu", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and message in error_line(result.output)
    assert not (tmp_path / "x").exists()


def test_a_run_that_fails_before_it_starts_leaves_no_folder(tmp_path, tiny):
    # Three training samples cannot hold all ten classes: refused once the data is loaded.
    with pytest.raises(ValueError, match="no training sample"):
        run_stream(StreamRun("split-mnist", train_size=3, overrides=W16), tmp_path / "run", CPU, str(tiny), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_folder_with_a_checkpoint_but_no_record_is_neither_resumed_nor_overwritten(tmp_path, tiny):
    out = tmp_path / "run"
    run_stream(StreamRun("split-mnist", overrides=W16), out, CPU, str(tiny), progress=False, stop_after=1)
    (out / "config.json").unlink()
    with pytest.raises(BadFileError, match="config.json: missing, beside a checkpoint"):
        run_stream(StreamRun("split-mnist", overrides=W16), out, CPU, str(tiny), progress=False, resume=True)


def test_the_main_jobs_output_and_files(tmp_path, tiny):
    """`hebbedge train split-mnist` as a user runs it (a fresh process, so import-time warnings show):
    a bar per experience, the matrices as tables, the summary with units; nothing else."""
    args = [sys.executable, "-c", "from hebbedge.cli.app import main; main()", "train", "split-mnist", *tiny_options(tiny)]
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # what a user's shell shows (pytest would hide some)
    done = subprocess.run(args + ["--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=lambda: os.umask(0o022))
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn" not in done.stderr, done.stderr
    assert [f"experience {k}/5" in done.stderr for k in range(1, 6)] == [True] * 5
    out = done.stdout
    assert "Top1_Acc" not in out + done.stderr
    assert "class-incremental accuracy (%)" in out and "task-aware accuracy (%)" in out and "after 5" in out
    assert "final average accuracy" in out and "% (mean over the 5 test experiences), forgetting" in out
    assert "percentage points" in out
    assert len(out.splitlines()) < 25
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    verbose = runner.invoke(app, ["train", "split-mnist", *tiny_options(tiny), "--verbose", "--out", str(tmp_path / "v")])
    assert verbose.exit_code == 0 and "Top1_Acc_Stream" in verbose.output and "plain mean over experiences" in verbose.output


def test_a_record_of_an_older_version_is_read_back(tmp_path, tiny):
    """Records written before the data fingerprint, or before a field or config key existed (as
    under results/), still match the run that made them."""
    args = ["train", "split-mnist", *tiny_options(tiny), "--out", str(tmp_path / "run")]
    assert runner.invoke(app, args).exit_code == 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    del record["data"], record["run"]["experiences"], record["config"]["hybrid"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "holds this run, finished" in again.output, again.output


def test_an_iid_run_records_its_data_and_a_damaged_checkpoint_is_one_line(tmp_path, tiny):
    """i.i.d. runs too: result.json names the data files read (path, size, sha256); a damaged
    checkpoint.pt is refused in one line naming it, before anything trains."""
    out = tmp_path / "iid"
    args = ["train", "mnist", "--widths", "16", "--train-size", "60", "--val-size", "20", "--data-dir", str(tiny), "--device", "cpu",
            "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    record = json.loads((out / "result.json").read_text())
    assert [Path(f["file"]).name for f in record["data"]][0] == "train-images-idx3-ubyte.gz"
    assert all(len(f["sha256"]) == 64 for f in record["data"])
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:100])
    result = runner.invoke(app, args + ["--resume"])
    assert result.exit_code == 2 and "checkpoint.pt: expected the checkpoint.pt" in error_line(result.output)


def test_a_setting_that_only_another_learner_reads_leaves_a_record_valid(tmp_path, tiny):
    """Tuning EWC's lambda must not invalidate the runs of the learners that never read it (config.READ_ONLY_BY),
    while the learner that reads it is refused by name."""
    for learner in ("random-lda", "ewc"):
        out = tmp_path / learner
        base = ["train", "split-mnist", *tiny_options(tiny), "--learner", learner, "--out", str(out)]
        assert runner.invoke(app, base).exit_code == 0
        again = runner.invoke(app, base + ["--set", "backprop.ewc_lambda=7.0"])
        if learner == "ewc":
            assert again.exit_code == 2 and "backprop.ewc_lambda " in error_line(again.output)
        else:
            assert again.exit_code == 0 and "holds this run, finished" in again.output, again.output


def test_frozen_c_freezes_after_the_first_experience_unless_told_otherwise():
    assert StreamRun("split-mnist", "frozen-c").freeze_c_after == 0
    assert StreamRun("split-mnist", "frozen-c", freeze_c_after=2).freeze_c_after == 2
    assert StreamRun("split-mnist", "hebbian").freeze_c_after is None
    assert default_run_dir(StreamRun("split-mnist", "frozen-c")).name == "split-mnist-frozen-c-seed0"
    assert default_run_dir(StreamRun("split-mnist", "frozen-c", freeze_c_after=1)).name == "split-mnist-frozen-c-seed0-freeze-c-after1"
