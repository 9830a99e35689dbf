"""Edge-grade numbers: the float32 readout over long streams against the float64 reference, and every
reduced-precision variant of every exportable learner within 1 point of fp32 or refused."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from hebbedge.export.edge import EdgeModel, load_arrays
from hebbedge.export.onnx import export_model, export_run, stream_arrays
from hebbedge.export.precision import MAX_DROP, PrecisionRefused
from hebbedge.readout import LDAReadout

PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]  # Split-MNIST with the thesis's fixed class order


def test_float32_readout_equals_the_float64_reference_over_the_whole_stream_and_ten_passes(tmp_path):
    """Class-incremental Split-MNIST (all 60,000 training images, one head over 10 classes) learned through
    learn.onnx and refresh.onnx in float32, against LDAReadout's float64 sums: the final average accuracy
    over the five test experiences within 0.1 point after one pass over the stream and after ten
    (a device that runs for long: 600,000 samples)."""
    from hebbedge.data import load_split

    x, y = load_split("mnist", True)
    xt, yt = load_split("mnist", False)
    torch.manual_seed(0)
    features = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Tanh())  # small random features: a fast test
    reference = LDAReadout(64, 10, shrinkage=1e-4)
    export_model(nn.Sequential(features, reference), (1, 28, 28), (0.1307,), (0.3081,), tmp_path, list(range(10)), learns=True)
    edge = EdgeModel(tmp_path)
    uint8 = lambda images: np.rint(images.numpy() * 255).astype(np.uint8)  # the device's images, as stored
    stream = [(uint8(x[(y == a) | (y == b)]), y[(y == a) | (y == b)].numpy()) for a, b in PAIRS]
    tests = [(uint8(xt[(yt == a) | (yt == b)]), yt[(yt == a) | (yt == b)].numpy()) for a, b in PAIRS]
    standardised = lambda images: (torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081
    with torch.no_grad():
        train_features = [features(standardised(images)) for images, _ in stream]
        test_features = [features(standardised(images)) for images, _ in tests]

    def final_accuracies() -> tuple[float, float]:
        ours = np.mean([edge.accuracy(images, labels) for images, labels in tests])
        with torch.no_grad():
            theirs = np.mean([(reference(f).argmax(1).numpy() == labels).mean() for f, (_, labels) in zip(test_features, tests)])
        return float(ours), float(theirs)

    for n_pass in range(1, 11):
        for (images, labels), f in zip(stream, train_features):
            edge.learn(images, labels, batch_size=64, shuffle_seed=None)
            with torch.no_grad():
                reference.accumulate(f, torch.from_numpy(labels))
        if n_pass in (1, 10):
            ours, theirs = final_accuracies()
            assert theirs > 0.8  # the floor of random features under LDA: a meaningful number to match
            assert abs(ours - theirs) <= 0.001, (n_pass, ours, theirs)
    assert edge.state["count"].sum() == 10 * len(x)


@pytest.fixture(scope="module")
def stream_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream")
    return stream_arrays("split-mnist", out, seed=1, train_size=1500, test_size=1000)


def held_out(files):
    tests = [load_arrays(p) for p in files if "test" in p.name]
    return np.concatenate([x for x, _ in tests]), np.concatenate([y for _, y in tests])


def trained_run(learner: str, tmp_path):
    from test_data import make_dataset

    from hebbedge.continual import StreamRun, run_stream

    if learner == "softhebb-lda":  # a transfer scenario: pre-training on a stand-in host dataset
        make_dataset(tmp_path / "data" / "fashion-mnist", n_train=300, n_test=10)
        run = StreamRun("split-mnist-from-fmnist", learner, seed=1, train_size=1500, test_size=500)
        run_stream(run, tmp_path / "run", torch.device("cpu"), data_dir=str(tmp_path / "data"), progress=False)
    else:
        extra = {"freeze_c_after": 0} if learner == "hebbian" else {}
        run_stream(StreamRun("split-mnist", learner, seed=1, train_size=1500, test_size=500, **extra), tmp_path / "run",
                   torch.device("cpu"), progress=False)
    return tmp_path / "run"


@pytest.mark.parametrize("learner", ["hebbian", "random-lda", "softhebb-lda"])
def test_every_precision_variant_is_within_one_point_of_fp32_or_refused(learner, tmp_path, stream_files):
    run = trained_run(learner, tmp_path)
    calibration = load_arrays(stream_files[-1])  # the last test experience: held out from training
    refused = []
    try:
        export_run(run, tmp_path / "edge", precisions=("int8", "fp16"), calibration=calibration)
    except PrecisionRefused as err:
        refused = err.refused
    manifest = json.loads((tmp_path / "edge" / "manifest.json").read_text())
    images, labels = held_out(stream_files)
    fp32 = EdgeModel(tmp_path / "edge").accuracy(images, labels)
    for precision in ("int8", "fp16"):
        if precision in manifest["variants"]:
            variant = manifest["variants"][precision]
            assert variant["fp32_accuracy"] - variant["accuracy"] <= MAX_DROP
            ours = EdgeModel(tmp_path / "edge", precision=precision).accuracy(images, labels)
            assert fp32 - ours <= MAX_DROP + 0.005, (precision, ours, fp32)  # on all held-out data, not only the calibration
            assert (tmp_path / "edge" / variant["file"]).exists()
        else:
            entry = next(r for r in refused if r["precision"] == precision)
            assert entry["fp32_accuracy"] - entry["accuracy"] > MAX_DROP
            assert not (tmp_path / "edge" / f"predict.{precision}.onnx").exists()


def test_a_variant_past_the_bar_is_refused_with_its_figure_unless_forced(tmp_path, stream_files, monkeypatch):
    from typer.testing import CliRunner

    import hebbedge.export.precision as precision
    from hebbedge.cli.app import app

    run = trained_run("random-lda", tmp_path)
    monkeypatch.setattr(precision, "MAX_DROP", -1.0)  # every variant is "too far below" fp32
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(run), "--int8", "--calibration", str(stream_files[-1])])
    assert result.exit_code == 2
    assert "int8 refused:" in result.output and "% against fp32" in result.output and "--force" in result.output
    assert not (run / "edge" / "predict.int8.onnx").exists()
    assert EdgeModel(run / "edge").manifest["variants"] == {}  # the fp32 export stands, without the variant
    result = runner.invoke(app, ["export", str(run), "--int8", "--calibration", str(stream_files[-1]), "--force"])
    assert result.exit_code == 0, result.output
    assert "int8: accuracy" in result.output and (run / "edge" / "predict.int8.onnx").exists()
    # Exporting again without the variant removes the stale file: the directory holds what the manifest lists.
    assert runner.invoke(app, ["export", str(run)]).exit_code == 0
    assert not (run / "edge" / "predict.int8.onnx").exists()


def test_an_int8_variant_with_nothing_to_quantise_is_not_written(tmp_path):
    """Features without a weight (only the readout's float32 classifier multiplies): no int8 copy that is float32."""
    features = nn.Sequential(nn.Flatten(), nn.Tanh())
    readout = LDAReadout(784, 10, shrinkage=0.1)
    x = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28), dtype=np.uint8)
    y = np.arange(40) % 10
    readout.accumulate(features(torch.from_numpy(x).float() / 255), torch.from_numpy(y))
    with pytest.raises(ValueError, match="no operator of the predict graph could be quantised"):
        export_model(nn.Sequential(features, readout), (1, 28, 28), (0.0,), (1.0,), tmp_path, list(range(10)), learns=True,
                     precisions=("int8",), calibration=(x, y))
    assert not (tmp_path / "predict.int8.onnx").exists()
