"""Every file the host side reads, damaged at many places: the only error is a one-line
"FILE: what was expected" (a ValueError, which the CLI prints as `error: ...` with exit 2)."""

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hebbedge.cli.app import app
from hebbedge.continual import RunMismatchError, StreamRun, read_run_checkpoint, run_stream
from hebbedge.files import BadFileError, load_torch
from hebbedge.scenarios import configs
from tinydata import idx_bytes, write_tiny_mnist


def damaged(raw: bytes, n: int = 30) -> list[tuple[str, bytes]]:
    """`raw` cut short at n offsets, and with one byte flipped at n offsets, spread over the whole file."""
    offsets = sorted({int(k * (len(raw) - 1) / (n - 1)) for k in range(n)})
    return ([(f"cut at {o}", raw[:o]) for o in offsets]
            + [(f"flipped at {o}", raw[:o] + bytes([raw[o] ^ 0x5A]) + raw[o + 1:]) for o in offsets])


def one_line_naming(err: Exception, path) -> None:
    assert str(err).startswith(f"{path}: ") and "\n" not in str(err), err


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A copy of the stream configs that a test may damage."""
    folder = tmp_path / "configs"
    shutil.copytree(configs.CONFIG_DIR, folder)
    monkeypatch.setattr(configs, "CONFIG_DIR", folder)
    return folder


def test_a_damaged_stream_config_is_a_one_line_error_naming_it(config_dir):
    path = config_dir / "split-mnist.toml"
    good = path.read_bytes()
    for how, raw in damaged(good):
        path.write_bytes(raw)
        try:
            StreamRun("split-mnist")  # loads and checks the config
        except BadFileError as err:
            one_line_naming(err, path)
        except ValueError as err:  # a value changed into another valid one, checked by name
            assert "stream." in str(err) and "\n" not in str(err), (how, err)


def test_a_config_key_the_schema_lacks_names_the_file_and_the_key(config_dir):
    path = config_dir / "split-mnist.toml"
    good = path.read_text()
    path.write_text(good.replace("eval_batch_size = 1000\n", ""))  # a key left out has the schema's default
    assert configs.load_config("split-mnist").stream.eval_batch_size == 1000 and configs.load_config("split-mnist").readout is None
    path.write_text(good.replace("eval_batch_size = 1000\n", "eval_batch = 1000\n"))
    with pytest.raises(BadFileError, match=f"^{path}: unknown key stream.eval_batch; \\[stream\\] has n_experiences"):
        configs.load_config("split-mnist")
    path.write_text(good.replace("eval_batch_size = 1000\n", "eval_batch_size = 1e3\n"))
    with pytest.raises(BadFileError, match=f"^{path}: stream.eval_batch_size: expected int, got 1000.0"):
        configs.load_config("split-mnist")
    path.write_text(good.replace("[hybrid]", "[hybird]"))
    with pytest.raises(BadFileError, match=f"^{path}: unknown section \\[hybird\\]"):
        configs.load_config("split-mnist")
    path.write_text(good)
    (config_dir / "split-mnist-from-fmnist.toml").write_text('base = "nope"\n')
    with pytest.raises(BadFileError, match="split-mnist-from-fmnist.toml: base = 'nope' names no stream"):
        configs.load_config("split-mnist-from-fmnist")


CPU = torch.device("cpu")
W16 = {"model": {"widths": [16]}}
runner = CliRunner()


def quick() -> StreamRun:
    return StreamRun("split-mnist", overrides=W16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny) -> dict[str, Path]:
    """An interrupted and a finished run folder, to be copied before damaging."""
    root = tmp_path_factory.mktemp("runs")
    run_stream(quick(), root / "cut", CPU, str(tiny), progress=False, stop_after=2)
    run_stream(quick(), root / "done", CPU, str(tiny), progress=False)
    return {"cut": root / "cut", "done": root / "done"}


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_a_damaged_checkpoint_is_refused_before_anything_is_unpickled(runs, tmp_path):
    good = (runs["cut"] / "checkpoint.pt").read_bytes()
    reference = read_run_checkpoint(runs["cut"] / "checkpoint.pt")
    path, refused = tmp_path / "checkpoint.pt", 0
    for how, raw in damaged(good):
        path.write_bytes(raw)
        try:
            state = read_run_checkpoint(path)
        except BadFileError as err:
            one_line_naming(err, path)
            refused += 1
        else:  # the flip hit bytes that torch's zip reader never looks at
            assert state["avalanche"] == reference["avalanche"] and state["next_experience"] == reference["next_experience"], how
    assert refused > len(damaged(good)) * 0.8


class Boom:
    """Unpickling this would create a file: the proof that code ran."""

    marker = ""

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_runs_no_code_unless_its_checksum_matches(runs, tmp_path, tiny):
    import io

    import dill

    from hebbedge.continual import CHECKPOINT_FORMAT

    out = copy_of(runs["cut"], tmp_path)
    Boom.marker = str(tmp_path / "ran")
    payload = io.BytesIO()
    torch.save({"avalanche": dill.dumps(Boom()), "rng": None, "next_experience": 1}, payload)
    forged = [({"format": CHECKPOINT_FORMAT, "sha256": "0" * 64, "payload": payload.getvalue()}, "its sha256 is not the one recorded"),
              ({"format": CHECKPOINT_FORMAT, "sha256": "0" * 64, "payload": Boom()}, "not loaded: unpickling those could run code"),
              ({"avalanche": b"x", "rng": {"numpy": np.random.get_state()}, "next_experience": 1}, "could run code"),  # main's old format
              ({"avalanche": b"x", "next_experience": 1}, f"expected a stream checkpoint in format {CHECKPOINT_FORMAT!r}")]
    for state, message in forged:
        torch.save(state, out / "checkpoint.pt")
        with pytest.raises(BadFileError, match=re.escape(message)):
            run_stream(quick(), out, CPU, str(tiny), progress=False, resume=True)
    assert not (tmp_path / "ran").exists()
    (out / "checkpoint.pt").unlink()
    (out / "checkpoint.pt").symlink_to(runs["cut"] / "checkpoint.pt")
    with pytest.raises(BadFileError, match="a symbolic link"):
        run_stream(quick(), out, CPU, str(tiny), progress=False, resume=True)


def test_a_damaged_run_record_is_a_one_line_error_naming_it(runs, tmp_path, tiny):
    out = copy_of(runs["cut"], tmp_path)
    path = out / "config.json"
    for how, raw in damaged((runs["cut"] / "config.json").read_bytes()):
        path.write_bytes(raw)
        try:
            run_stream(quick(), out, CPU, str(tiny), progress=False)
        except BadFileError as err:
            one_line_naming(err, path)
        except RunMismatchError as err:  # a setting or a data checksum changed into another value
            assert "holds another run" in str(err) and "\n" not in str(err), how
        except FileExistsError as err:  # the same run, e.g. only the recorded device or a data folder changed
            assert "pass --resume" in str(err), how
    path.write_text('{"config": {}}')
    with pytest.raises(BadFileError, match=re.escape(f"{path}: expected a run record of `hebbedge train` (run, config and data); no key 'run'")):
        run_stream(quick(), out, CPU, str(tiny), progress=False)


def test_damaged_metrics_and_weights_are_one_line_errors_naming_them(runs, tmp_path, tiny):
    out = copy_of(runs["done"], tmp_path)
    path = out / "metrics.json"
    for how, raw in damaged((runs["done"] / "metrics.json").read_bytes()):
        path.write_bytes(raw)
        try:
            run_stream(quick(), out, CPU, str(tiny), progress=False)  # a finished run: read back
        except BadFileError as err:
            one_line_naming(err, path)
    path = out / "model.pt"
    for how, raw in damaged((runs["done"] / "model.pt").read_bytes()):
        path.write_bytes(raw)
        try:
            load_torch(path, "model weights")
        except BadFileError as err:
            one_line_naming(err, path)


def error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


def test_the_cli_prints_one_line_for_each_bad_file(runs, tmp_path, tiny):
    args = ["train", "split-mnist", "--set", "model.widths=[16]", "--device", "cpu"]
    out = copy_of(runs["cut"], tmp_path)
    (out / "checkpoint.pt").write_bytes(b"garbage" * 100)
    line = error_line(runner.invoke(app, args + ["--data-dir", str(tiny), "--out", str(out), "--resume"]).output)
    assert f"{out / 'checkpoint.pt'}: expected a stream checkpoint" in line
    (out / "config.json").write_text("{")
    line = error_line(runner.invoke(app, args + ["--data-dir", str(tiny), "--out", str(out), "--resume"]).output)
    assert f"{out / 'config.json'}: expected a run record in JSON" in line
    data_root = Path(shutil.copytree(tiny, tmp_path / "data"))
    gz = data_root / "mnist" / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-20])
    line = error_line(runner.invoke(app, args + ["--data-dir", str(data_root), "--out", str(tmp_path / "new")]).output)
    assert f"{gz}: expected a gzip-compressed IDX file" in line
    labels = data_root / "mnist" / "train-labels-idx1-ubyte.gz"
    shutil.copy(tiny / "mnist" / gz.name, gz)
    labels.write_bytes(gzip.compress(idx_bytes(np.arange(99) % 10)))
    line = error_line(runner.invoke(app, args + ["--data-dir", str(data_root), "--out", str(tmp_path / "new")]).output)
    assert f"{labels}: expected 100 unsigned-byte labels, one per image" in line
    assert not (tmp_path / "new").exists()
