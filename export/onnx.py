"""Export a trained network to a model directory for the edge (see hebbedge/export/edge.py for the format).

The graphs are built from the same layer, rule and readout code as the PyTorch learner
(hebbedge/export/graphs.py). What the directory holds depends on the learner:

- fixed features under an LDA readout (``random-lda``, ``softhebb-lda``): predict, learn and refresh, with
  the readout's statistics as float32 state (converted from the float64 reference sums);
- a frozen-C Hebbian network: predict and learn, with W_i and M_i as state;
- anything else (a Hebbian run whose C still trains, the backprop baselines): predict with its weights inside.

Reduced-precision copies of the predict graph (``precision.py``) are measured on labelled held-out data
before they are kept.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from hebbedge.export.edge import FORMAT, STATE_FILE, sha256_file, write_state
from hebbedge.export.graphs import OPSET, HebbianLearn, HebbianPredict, Predict, ReadoutLearn, ReadoutPredict, hebbian_layers, refresh_model
from hebbedge.files import atomic_write, save_json
from hebbedge.readout import LDAReadout

# Files an export may write; any of them that the new export does not write is removed (a stale variant
# or a graph of an earlier export must not be served beside the new manifest).
EXPORT_FILES = ("predict.onnx", "predict.int8.onnx", "predict.fp16.onnx", "learn.onnx", "refresh.onnx", STATE_FILE,
                "model.onnx", "model.int8.onnx", "update.onnx", "state.npz", "metadata.json")


def float32_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Python float literals (``clamp_min(1e-12)``) reach the exported graph as float64 Constants that are
    cast to float32 at once; many edge targets have no float64, so they become float32 Constants here."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:
        value = node.attribute[0].t if node.op_type == "Constant" and node.attribute else None
        if value is None or value.data_type != onnx.TensorProto.DOUBLE:
            continue
        users = consumers.get(node.output[0], [])
        if not all(u.op_type == "Cast" and u.attribute[0].i == onnx.TensorProto.FLOAT for u in users):
            raise RuntimeError(f"float64 constant {node.output[0]} feeds {[u.op_type for u in users]}: not an export the edge can run")
        value.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(value).astype(np.float32), value.name))
    return model


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], batch_inputs: list[str]) -> None:
    """torch.onnx.export to a temporary file, float32 only, checked, then renamed onto `path`. Without constant
    folding the state inputs stay inputs and the fixed weights stay initializers under their own names."""
    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the batch-of-one guard is traced as a constant; the runtime skips such batches
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: the dynamo one emits no Scan-free graphs we need
            torch.onnx.export(module, args, tmp, dynamo=False, opset_version=OPSET, input_names=inputs, output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in batch_inputs}, do_constant_folding=False)
        model = float32_constants(onnx.load(tmp))
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)

    atomic_write(path, write)


def _float32(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().to(torch.float32).contiguous().numpy() for k, v in tensors.items()}


@torch.no_grad()
def cycle_graphs(model: nn.Sequential, in_shape: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...],
                 out: Path, learns: bool) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Write the cycle's graphs for `model` into `out`; returns (kind, the manifest's "graphs", initial state)."""
    model = model.cpu().eval()
    example = torch.rand(2, *in_shape)
    labels = torch.arange(2)
    if isinstance(model[-1], LDAReadout):
        features, readout = model[:-1], model[-1]
        weight, bias, centre = readout.solve()
        state = _float32({"count": readout.count, "mean": readout.means(), "scatter": readout.scatter(),
                          "weight": weight, "bias": bias, "centre": centre})
        t = {k: torch.from_numpy(v) for k, v in state.items()}
        head = ["weight", "bias", "centre"]
        learned = ["count", "mean", "scatter"]
        _export(ReadoutPredict(features, mean, std), (example, *(t[k] for k in head)), out / "predict.onnx",
                ["images", *head], ["logits"], ["images", "logits"])
        _export(ReadoutLearn(features, readout.n_classes, mean, std), (example, labels, *(t[k] for k in learned)),
                out / "learn.onnx", ["images", "labels", *learned], [k + "_new" for k in learned], ["images", "labels"])
        atomic_write(out / "refresh.onnx", lambda tmp: onnx.save(refresh_model(
            readout.n_features, readout.n_classes, readout.shrinkage, estimator=readout.estimator), tmp))
        return "readout", {
            "predict": {"file": "predict.onnx", "inputs": ["images", *head], "outputs": ["logits"]},
            "learn": {"file": "learn.onnx", "inputs": ["images", "labels", *learned], "outputs": learned, "min_batch": 1},
            "refresh": {"file": "refresh.onnx", "inputs": learned, "outputs": head},
        }, state
    model = model.float()
    if not learns:
        _export(Predict(model, mean, std), (example,), out / "predict.onnx", ["images"], ["logits"], ["images", "logits"])
        return "fixed", {"predict": {"file": "predict.onnx", "inputs": ["images"], "outputs": ["logits"]}}, {}
    layers = hebbian_layers(model)
    weights = [f"W{i}" for i in range(len(layers))]
    names = weights + [f"M{i}" for i in range(len(layers))]
    state = _float32({**{w: l.weight for w, l in zip(weights, layers)}, **{f"M{i}": l.momentum for i, l in enumerate(layers)}})
    t = [torch.from_numpy(state[k]) for k in names]
    _export(HebbianPredict(model, mean, std), (example, *t[:len(layers)]), out / "predict.onnx", ["images", *weights],
            ["logits"], ["images", "logits"])
    _export(HebbianLearn(model, mean, std), (example, labels, *t), out / "learn.onnx", ["images", "labels", *names],
            [k + "_new" for k in names], ["images", "labels"])
    return "hebbian", {
        "predict": {"file": "predict.onnx", "inputs": ["images", *weights], "outputs": ["logits"]},
        "learn": {"file": "learn.onnx", "inputs": ["images", "labels", *names], "outputs": names, "min_batch": 2},
    }, state


def export_model(model: nn.Sequential, in_shape: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...],
                 out_dir: str | Path, classes: list[int], learns: bool, precisions: tuple[str, ...] = (),
                 calibration: tuple[np.ndarray, np.ndarray] | None = None, force: bool = False,
                 extra: dict | None = None) -> dict:
    """Write a model directory into `out_dir` and return its manifest (the file written last).

    `learns`: a Hebbian network also gets its frozen-C learning step (readouts always learn).
    `precisions` ("int8", "fp16"): reduced-precision predict graphs, each measured on `calibration`
    (uint8 or [0, 1] images, labels) against fp32; one more than ``precision.MAX_DROP`` below is refused
    (``precision.PrecisionRefused``, after the rest is written) unless `force`.
    """
    from hebbedge.export.precision import PrecisionRefused, make_variant

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # from here until the new manifest, the directory is not valid
    kind, graphs, state = cycle_graphs(model, in_shape, mean, std, out, learns)
    written = [g["file"] for g in graphs.values()]
    files = {name: sha256_file(out / name) for name in written}
    model_id = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    if state:
        write_state(out / STATE_FILE, state, model_id)
    variants, refused = {}, []
    for precision in precisions:
        result = make_variant(precision, out, kind, graphs, state, calibration, force)
        if result.get("refused"):
            refused.append(result)
            continue
        variants[precision] = result
        files[result["file"]] = sha256_file(out / result["file"])
    for name in EXPORT_FILES:
        if name not in files and not (name == STATE_FILE and state):
            (out / name).unlink(missing_ok=True)
    manifest = {
        "format": FORMAT, "kind": kind, "model_id": model_id,
        "input_shape": list(in_shape), "input_range": [0.0, 1.0], "classes": classes,
        "graphs": graphs, "state": sorted(state), "variants": variants, "files": files,
        "opset": OPSET, "torch": torch.__version__, "onnx": onnx.__version__, **(extra or {}),
    }
    save_json(out / "manifest.json", manifest)
    if refused:
        raise PrecisionRefused(refused)
    return manifest


def dataset_mean_std(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std that the streams and i.i.d. runs standardise with."""
    from hebbedge.data import MEAN_STD
    from hebbedge.scenarios.streams import CIFAR10_MEAN_STD

    if dataset == "cifar10":
        return CIFAR10_MEAN_STD
    return (MEAN_STD[dataset][0],), (MEAN_STD[dataset][1],)


def load_run(run_dir: str | Path) -> tuple[nn.Sequential, dict]:
    """The trained model of a `hebbedge train` run directory (``hebbedge.runfolder``), and what an export needs to know."""
    from hebbedge.runfolder import load_trained

    run = load_trained(run_dir)
    mean, std = dataset_mean_std(run.dataset)
    return run.model, {"in_shape": run.in_shape, "mean": tuple(mean), "std": tuple(std), "classes": run.classes,
                       "hebbian": run.learner.has_c, "frozen": run.frozen, "learner": run.learner.name, "dataset": run.dataset}


def export_run(run_dir: str | Path, out_dir: str | Path, freeze_c: bool = False, precisions: tuple[str, ...] = (),
               calibration: tuple[np.ndarray, np.ndarray] | None = None, force: bool = False) -> dict:
    """`hebbedge export`: the model directory of a run (see ``export_model``); a Hebbian run learns on the
    edge when its C was frozen (or with `freeze_c`, C as it is now)."""
    model, info = load_run(run_dir)
    learns = info["hebbian"] and (info["frozen"] or freeze_c)
    extra = {"source_run": str(run_dir), "learner": info["learner"], "dataset": info["dataset"]}
    return export_model(model, info["in_shape"], info["mean"], info["std"], out_dir, info["classes"], learns, precisions,
                        calibration, force, extra)


def stream_arrays(scenario: str, out_dir: str | Path, seed: int = 0, data_dir: str | None = None,
                  train_size: int | None = None, test_size: int | None = None) -> list[Path]:
    """Each experience of a stream as raw uint8 images x [N, C, H, W] + int64 labels y
    (expK-train.safetensors / expK-test.safetensors), the edge's input in any language."""
    from safetensors.numpy import save

    from hebbedge.scenarios import SCENARIOS, make_stream

    bm = make_stream(scenario, seed=seed, data_dir=data_dir, train_size=train_size, test_size=test_size)
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) for v in dataset_mean_std(SCENARIOS[scenario].dataset))
    written = []
    for split, stream in (("train", bm.train_stream), ("test", bm.test_stream)):
        for k, exp in enumerate(stream):
            loader = torch.utils.data.DataLoader(exp.dataset, batch_size=4096)
            xs, ys = zip(*[(b[0], b[1]) for b in loader])
            x = torch.cat(xs).numpy() * std + mean  # back to [0, 1]: the streams hold standardised images
            arrays = {"x": np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), "y": torch.cat(ys).numpy().astype(np.int64)}
            path = Path(out_dir) / f"exp{k}-{split}.safetensors"
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(save(arrays)))
            written.append(path)
    return written
