"""The JavaScript edge client (export/js) against the Python one (hebbedge/export/edge.py): the same
logits, the same learned state, and the same refusals of bad input, which leave the saved state as it was."""

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.numpy import load_file, save_file

from hebbedge.export.edge import EdgeModel
from hebbedge.export.onnx import export_model
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_linear
from hebbedge.readout import LDAReadout

JS = Path(__file__).resolve().parent.parent / "export" / "js"
CLI = JS / "cli.mjs"
MEAN, STD = (0.1307,), (0.3081,)
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "onnxruntime-node").is_dir(),
    reason="needs node and export/js/node_modules (npm install --ignore-scripts --prefix export/js)")


def run_js(*args) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, str(CLI), *map(str, args)], capture_output=True, text=True, timeout=60)


def refresh_ir_workaround(out: Path) -> None:
    """refresh_model (export/graphs.py) keeps onnx's newest IR version (14 with onnx 1.23), which
    onnxruntime-node 1.30 refuses ("max supported IR version: 13"); the torch-exported graphs are IR 8.
    Rewritten here to IR 8, with the manifest's checksum, until the exporter pins it."""
    import onnx

    path = out / "refresh.onnx"
    model = onnx.load(path)
    if model.ir_version <= 8:
        return
    model.ir_version = 8
    onnx.save(model, path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["refresh.onnx"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))


def hebbian_dir(out: Path) -> Path:
    torch.manual_seed(0)
    model = thesis_linear(widths=(32, 16))
    learner = HebbianLearner(model)
    for _ in range(3):
        learner.step((torch.rand(16, 1, 28, 28) - MEAN[0]) / STD[0], torch.arange(16) % 10)
    learner.freeze_c()
    export_model(model, (1, 28, 28), MEAN, STD, out, list(range(10)), learns=True)
    return out


def readout_dir(out: Path) -> Path:
    """With int8 and fp16 predict variants (kept whatever their accuracy: the test compares runtimes)."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh())
    readout = LDAReadout(16, 10)
    with torch.no_grad():
        for _ in range(3):
            readout.accumulate(features((torch.rand(20, 1, 28, 28) - MEAN[0]) / STD[0]), torch.arange(20) % 10)
    calibration = (np.random.default_rng(0).integers(0, 256, (20, 1, 28, 28), dtype=np.uint8), np.arange(20) % 10)
    export_model(nn.Sequential(features, readout), (1, 28, 28), MEAN, STD, out, list(range(10)), learns=True,
                 precisions=("int8", "fp16"), calibration=calibration, force=True)
    refresh_ir_workaround(out)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The two kinds of model directory that learn, exported once; tests work on copies."""
    root = tmp_path_factory.mktemp("exported")
    return {"hebbian": hebbian_dir(root / "hebbian"), "readout": readout_dir(root / "readout")}


def data(path: Path, n: int, seed: int, labels: bool = True, **arrays) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {"x": rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)}
    if labels:
        tensors["y"] = rng.integers(0, 10, n).astype(np.int64)
    save_file({**tensors, **arrays}, str(path))
    return path


@pytest.mark.parametrize("kind, form, precision", [
    ("hebbian", "uint8 [N, 1, 28, 28]", "fp32"), ("readout", "float32 [N, 28, 28]", "fp32"),
    ("readout", "uint8 [N, 1, 28, 28]", "int8"), ("readout", "uint8 [N, 1, 28, 28]", "fp16"),
])
def test_predict_logits_equal_python(exported, kind, form, precision, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (37, 1, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 37).astype(np.int64)
    given = x if form.startswith("uint8") else (x[:, 0].astype(np.float32) / 255)
    save_file({"x": given, "y": y}, str(tmp_path / "data.safetensors"))
    done = run_js("predict", exported[kind], tmp_path / "data.safetensors", "--precision", precision,
                  "--out", tmp_path / "logits.safetensors")
    assert done.returncode == 0, done.stderr
    py = EdgeModel(exported[kind], precision=precision)
    expected = py.logits(x).astype(np.float32)  # the fp16 variant's logits are float16 in Python; the JS client widens them
    got = load_file(str(tmp_path / "logits.safetensors"))["logits"]
    assert got.shape == expected.shape == (37, 10) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    assert f"37 predictions, accuracy {100 * py.accuracy(x, y):.2f}%" in done.stdout


@pytest.mark.parametrize("kind", ["hebbian", "readout"])
def test_learn_equals_python(exported, kind, tmp_path):
    """Two files, 50 batches of 4 and one image left over (skipped by the Hebbian learner, whose
    contrastive rule needs pairs; a step of its own for the readout), then the refresh and an atomic save."""
    js, py_dir = tmp_path / "js", tmp_path / "py"
    shutil.copytree(exported[kind], js)
    shutil.copytree(exported[kind], py_dir)
    first, second = data(tmp_path / "a.safetensors", 100, seed=2), data(tmp_path / "b.safetensors", 101, seed=3)
    test = data(tmp_path / "test.safetensors", 30, seed=4)
    orphan = js / ".state.safetensors.0badf00d.tmp"
    orphan.write_bytes(b"left by a writer that was killed")

    done = run_js("learn", js, first, second, "--batch-size", 4, "--eval", test)
    assert done.returncode == 0, done.stderr

    py = EdgeModel(py_dir)
    arrays = {f: load_file(str(f)) for f in (first, second, test)}
    before = py.accuracy(arrays[test]["x"], arrays[test]["y"])
    steps = sum(py.learn(arrays[f]["x"], arrays[f]["y"], batch_size=4, shuffle_seed=None) for f in (first, second))
    assert steps == (50 if kind == "hebbian" else 51)
    assert f"{steps} learning steps" in done.stdout
    assert f"accuracy {100 * before:.2f}% -> {100 * py.accuracy(arrays[test]['x'], arrays[test]['y']):.2f}%" in done.stdout

    saved = load_file(str(js / "state.safetensors"))
    assert sorted(saved) == sorted(py.state)
    for name, expected in py.state.items():
        assert saved[name].dtype == np.float32 and saved[name].shape == expected.shape, name
        assert np.abs(saved[name] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), name
    learned = "W0" if kind == "hebbian" else "scatter"
    assert not np.array_equal(saved[learned], load_file(str(exported[kind] / "state.safetensors"))[learned])
    again = EdgeModel(js)  # the Python reader accepts what the JS client wrote: format, model id, checksum
    assert all(np.array_equal(again.state[k], saved[k]) for k in saved)
    assert sorted(p.name for p in js.iterdir() if p.name.startswith(".")) == []  # the orphan removed, no temporary file left


def test_library_runs_without_the_node_layer(exported, tmp_path):
    """What a browser page does: files from memory, Web Crypto's sha256, the state handed back as bytes.
    Python accepts the state it wrote (format, model id and the checksum of tensors_digest)."""
    model = tmp_path / "model"
    shutil.copytree(exported["readout"], model)
    script = f"""
import {{ readdirSync, readFileSync, writeFileSync }} from 'node:fs';
import * as ort from 'onnxruntime-node';
import {{ EdgeModel }} from {json.dumps((JS / 'hebbedge-edge.mjs').as_uri())};
const dir = {json.dumps(str(model))};
const files = new Map(readdirSync(dir).map((name) => [name, new Uint8Array(readFileSync(dir + '/' + name))]));
const store = {{ location: 'memory', read: async (name) => files.get(name) ?? null,
                 writeState: async (bytes) => writeFileSync(dir + '/state.safetensors', bytes) }};
const model = await EdgeModel.open({{ ort, store }});
const x = {{ dtype: 'uint8', shape: [10, 1, 28, 28], data: new Uint8Array(7840).map((_, i) => (i * 7) % 256) }};
const y = {{ dtype: 'int64', shape: [10], data: BigInt64Array.from({{ length: 10 }}, (_, i) => BigInt(i)) }};
console.log(await model.learn(x, y, {{ batchSize: 4 }}));
await model.save();
"""
    done = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60, cwd=JS)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr
    py = EdgeModel(exported["readout"])
    x = (np.arange(7840) * 7 % 256).astype(np.uint8).reshape(10, 1, 28, 28)
    py.learn(x, np.arange(10), batch_size=4, shuffle_seed=None)
    again = EdgeModel(model)
    for name, expected in py.state.items():
        assert np.abs(again.state[name] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), name


def bad_file(tmp_path, **arrays) -> Path:
    save_file(arrays, str(tmp_path / "bad.safetensors"))
    return tmp_path / "bad.safetensors"


def images(n, shape=(1, 28, 28), dtype=np.uint8):
    return np.random.default_rng(5).integers(0, 256, (n, *shape)).astype(dtype)


LABELS = np.arange(8, dtype=np.int64) % 10


def truncated_data(tmp_path, model, exported):
    path = data(tmp_path / "cut.safetensors", 8, seed=6)
    path.write_bytes(path.read_bytes()[:-100])
    return [path], "cut.safetensors: not a readable .safetensors file (truncated"


def truncated_state(tmp_path, model, exported):
    state = model / "state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    return [data(tmp_path / "ok.safetensors", 8, seed=6)], "state.safetensors: not a readable safetensors state (truncated"


def flipped_predict_byte(tmp_path, model, exported):
    graph = bytearray((model / "predict.onnx").read_bytes())
    graph[len(graph) // 2] ^= 0x01
    (model / "predict.onnx").write_bytes(bytes(graph))
    return [data(tmp_path / "ok.safetensors", 8, seed=6)], "predict.onnx: checksum differs from manifest.json"


def state_of_another_model(tmp_path, model, exported):
    shutil.copyfile(exported["readout"] / "state.safetensors", model / "state.safetensors")
    return [data(tmp_path / "ok.safetensors", 8, seed=6)], "state.safetensors: state of another model"


CASES = {
    "wrong shape": lambda t, m, e: ([bad_file(t, x=images(8, (1, 27, 27)), y=LABELS)],
                                 "images must have shape [N, 1, 28, 28] (1 channel(s) of 28x28); got [8, 1, 27, 27]"),
    "uint16 images": lambda t, m, e: ([bad_file(t, x=images(8, dtype=np.uint16), y=LABELS)],
                                   "images must be uint8 (0..255) or float (0..1), got dtype uint16"),
    "NaN in float images": lambda t, m, e: ([bad_file(t, x=np.where(images(8) > 250, np.nan, 0.5).astype(np.float32), y=LABELS)],
                                         "images contain NaN or Inf"),
    "float images over 1": lambda t, m, e: ([bad_file(t, x=images(8, dtype=np.float32), y=LABELS)], "float images must be in [0, 1]"),
    "label out of range": lambda t, m, e: ([bad_file(t, x=images(8), y=LABELS + 3)],
                                        "labels must be 8 integers in [0, 10), one per image; got shape [8], dtype int64, range [3, 10]"),
    "fewer labels than images": lambda t, m, e: ([bad_file(t, x=images(8), y=LABELS[:7])], "8 images but 7 labels"),
    "no labels": lambda t, m, e: ([bad_file(t, x=images(8))], "learning needs labels (array 'y')"),
    "no images": lambda t, m, e: ([bad_file(t, x=images(0), y=LABELS[:0])], "need at least 2 labelled images to learn from, got 0"),
    "truncated data file": truncated_data,
    "truncated state": truncated_state,
    "flipped byte in predict.onnx": flipped_predict_byte,
    "state of another model": state_of_another_model,
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_and_keeps_the_state(exported, case, tmp_path):
    """Each refusal: exit status 2, one line `error: <what was expected>`, and state.safetensors as it
    was, byte for byte. Bad data comes after a good file: every file is checked before the first step."""
    model = tmp_path / "hebbian"
    shutil.copytree(exported["hebbian"], model)
    files, expected = CASES[case](tmp_path, model, exported)
    state = (model / "state.safetensors").read_bytes()
    good = data(tmp_path / "good.safetensors", 64, seed=7)
    done = run_js("learn", model, good, *files, "--batch-size", 4)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr  # no stack trace
    assert expected in done.stderr
    assert (model / "state.safetensors").read_bytes() == state
    assert not [p for p in model.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_state_write_leaves_no_temporary_file(tmp_path):
    """The rename onto the target fails (here the target is a non-empty directory): the target stays,
    and the fsynced temporary file is removed."""
    target = tmp_path / "state.safetensors"
    (target / "kept").mkdir(parents=True)
    script = (f"import {{ writeAtomic }} from {json.dumps((JS / 'node.mjs').as_uri())};\n"
              f"await writeAtomic({json.dumps(str(target))}, new Uint8Array(8));")
    done = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "state.safetensors: cannot write (EISDIR); the old file is kept" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"] and (target / "kept").is_dir()


def test_usage_errors_exit_2(exported, tmp_path):
    path = data(tmp_path / "d.safetensors", 8, seed=8)
    for args, expected in [
        (("learn", exported["hebbian"], path, "--batch-size", 1), "batch size must be at least 2 for this learner, got 1"),
        (("predict", exported["hebbian"], path, "--precision", "int8"), "no int8 variant; this export has fp32 (export with --int8)"),
        (("predict", tmp_path / "nowhere", path), "manifest.json: missing"),
        (("predict", exported["hebbian"], tmp_path / "none.safetensors"), "none.safetensors: no such file"),
        (("bench", exported["hebbian"], "--repeats", "zero"), "--repeats expects a positive integer"),
        (("fly",), 'unknown command "fly"; expected predict, learn or bench'),
    ]:
        done = run_js(*args)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and expected in done.stderr, (args, done.stderr)
        assert not re.search(r"^\s+at ", done.stderr, re.M), done.stderr


def test_bench_reports_each_stage(exported):
    done = run_js("bench", exported["readout"], "--repeats", 2)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the keys hebbedge.export.check reads
    assert sorted(result["predict_ms"]) == ["fp16", "fp32", "int8"] and all(v > 0 for v in result["predict_ms"].values())
    assert all(result[k] > 0 for k in ("learn_ms", "refresh_ms", "peak_rss_mb"))
