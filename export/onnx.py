"""Export a trained network to ONNX: inference, and one backprop-free learning step.

`model.onnx` maps raw images in [0, 1] to logits (the input standardisation is inside the graph).
`update.onnx` is one learning step written as a pure function, built from the same layers, rule
and readout objects as the PyTorch learner:
- a frozen-C Hebbian network: (images, labels, W_1..W_n, M_1..M_n) -> (logits, W_1'..W_n', M_1'..M_n');
- fixed features under an LDA readout: (images, labels, count, total, moment) -> (count', total',
  moment'), the readout's Hebbian sums in float64; the edge solves the classifier from them.
Both torch exporters silently drop in-place updates such as ``W.copy_``, so the old state must be
graph inputs and the new state outputs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from hebbedge.files import atomic_write, save_json, save_npz
from hebbedge.layers import HebbLayer
from hebbedge.readout import LDAReadout

OPSET = 17


class Inference(nn.Module):
    """Standardise, then the network in eval mode (committed weights)."""

    def __init__(self, model: nn.Sequential, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


class FrozenStep(nn.Module):
    """One frozen-C learner step as a pure function of the state (see the module docstring).

    Same order as `HebbianLearner.step` in frozen mode: forward with W_eff = post(W + eta*C*M),
    commit W' = W_eff, then M' = beta*M + D with D from each layer's rule. Dropout is off.
    """

    def __init__(self, model: nn.Sequential, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.inference = Inference(model, mean, std)
        self.layers = [m for m in model if isinstance(m, HebbLayer)]
        for layer in self.layers:
            if layer.bias is not None:
                raise ValueError("the exported learning step supports layers without bias (the thesis nets)")

    def forward(self, images: torch.Tensor, labels: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.layers)
        weights, momenta = state[:n], state[n:]
        h = (images - self.inference.mean) / self.inference.std
        seen = []
        for module in self.inference.model:
            if isinstance(module, HebbLayer):
                w, m = weights[len(seen)], momenta[len(seen)]
                w_eff = module.pending(w, m) if module.eta != 0 else w
                y = module.respond(h, w_eff)
                seen.append((module, h, y, w_eff, m))
                h = y
            elif not isinstance(module, nn.Dropout):
                h = module(h)
        new_w, new_m = [], []
        for module, x, y, w_eff, m in seen:
            new_w.append(w_eff)
            if module.eta != 0:
                d_w, _ = module.rule.direction(module, x, y, labels)
                m = module.beta * m + d_w
            new_m.append(m)
        return (h, *new_w, *new_m)


class ReadoutStep(nn.Module):
    """One on-device step of an LDA readout on fixed features, as a pure function of its sums:
    the same sums as ``LDAReadout.accumulate``, with the labels as a one-hot matrix (a GEMM instead
    of a scatter)."""

    def __init__(self, features: nn.Module, n_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.inference = Inference(features, mean, std)
        self.n_classes = n_classes

    def forward(self, images: torch.Tensor, labels: torch.Tensor, count: torch.Tensor, total: torch.Tensor,
                moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.inference(images).to(torch.float64)
        one_hot = (labels[:, None] == torch.arange(self.n_classes)[None]).to(torch.float64)
        return count + one_hot.sum(0), total + one_hot.T @ f, moment + f.T @ f


def solved_head(model: nn.Sequential) -> nn.Sequential:
    """features -> LDA readout, with the readout replaced by the nn.Linear of its solved classifier (float32)."""
    features, readout = model[:-1], model[-1]
    head = nn.Linear(readout.n_features, readout.n_classes)
    w, b = readout.solve()
    head.weight.data.copy_(w.T)
    head.bias.data.copy_(b)
    return nn.Sequential(*features, head).float()


def state_of(model: nn.Module) -> dict[str, np.ndarray]:
    """W_i and M_i of every Hebbian layer, in order, as float32 arrays."""
    layers = [m for m in model.modules() if isinstance(m, HebbLayer)]
    out = {f"W{i}": l.weight.detach().cpu().float().numpy() for i, l in enumerate(layers)}
    out.update({f"M{i}": l.momentum.detach().cpu().float().numpy() for i, l in enumerate(layers)})
    return out


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict,
            fold: bool = False) -> None:
    # Without constant folding each W stays an initializer under its state-dict name, which the edge
    # runtime rewrites after learning; folding pre-transposes W, which the int8 quantiser needs.
    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the batch-of-one guard is traced as a constant; the runtime skips such batches
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module, args, tmp, dynamo=False, opset_version=OPSET, input_names=inputs,
                              output_names=outputs, dynamic_axes=dynamic, do_constant_folding=fold)
        onnx.checker.check_model(onnx.load(tmp))

    atomic_write(path, write)


def weight_initializers(model_path: Path, model: nn.Sequential) -> list[str]:
    """The initializer names that hold each Hebbian layer's W in the inference graph, in order."""
    names = {init.name for init in onnx.load(str(model_path)).graph.initializer}
    found = []
    for name, module in model.named_modules():
        if isinstance(module, HebbLayer):
            key = f"model.{name}.weight"
            if key not in names:
                raise RuntimeError(f"{model_path}: initializer {key!r} not found; the exporter renamed it")
            found.append(key)
    return found


@torch.no_grad()
def export_model(model: nn.Sequential, in_shape: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...],
                 out_dir: str | Path, classes: list[int], with_update: bool, int8: bool = False, extra: dict | None = None) -> dict:
    """Write model.onnx (+ update.onnx, state.npz) and metadata.json into `out_dir`; returns the metadata.

    A model ending in an `LDAReadout` is exported with its solved classifier as the last layer, and its
    update step (always written: the features are fixed, only the readout learns) takes its sums.
    """
    out = Path(out_dir)
    model = model.cpu().eval()
    lda = isinstance(model[-1], LDAReadout)
    net = solved_head(model) if lda else model.float()
    example = torch.rand(2, *in_shape)
    _export(Inference(net, mean, std), (example,), out / "model.onnx", ["images"], ["logits"],
            {"images": {0: "batch"}, "logits": {0: "batch"}})
    head = f"model.{len(net) - 1}"
    meta = {
        "format": "hebbedge-edge/1",
        "input_shape": list(in_shape), "input_range": [0.0, 1.0], "mean": list(mean), "std": list(std),
        "classes": classes, "opset": OPSET, "torch": torch.__version__, "onnx": onnx.__version__,
        "weights": [f"{head}.weight", f"{head}.bias"] if lda else weight_initializers(out / "model.onnx", net),
        "update": None, "int8": None, **(extra or {}),
    }
    labels = torch.arange(2) % len(classes)
    dynamic = {"images": {0: "batch"}, "labels": {0: "batch"}}
    if lda:
        readout = model[-1]
        state = {"count": readout.count, "total": readout.total, "moment": readout.moment}
        _export(ReadoutStep(net[:-1], readout.n_classes, mean, std), (example, labels, *state.values()), out / "update.onnx",
                ["images", "labels", *state], [k + "_new" for k in state], dynamic)
        save_npz(out / "state.npz", **{k: v.numpy() for k, v in state.items()})
        meta["update"] = {"file": "update.onnx", "state": "state.npz", "kind": "lda", "names": list(state),
                          "shrinkage": readout.shrinkage}
    elif with_update:
        step = FrozenStep(net, mean, std)
        state = state_of(net)
        n = len(step.layers)
        names = [f"W{i}" for i in range(n)] + [f"M{i}" for i in range(n)]
        _export(step, (example, labels, *(torch.from_numpy(state[k]) for k in names)), out / "update.onnx",
                ["images", "labels", *names], ["logits", *(k + "_new" for k in names)], {**dynamic, "logits": {0: "batch"}})
        save_npz(out / "state.npz", **state)
        meta["update"] = {"file": "update.onnx", "state": "state.npz", "kind": "hebbian", "names": names, "layers": n}
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        folded = out / ".model.folded.onnx"
        _export(Inference(net, mean, std), (example,), folded, ["images"], ["logits"],
                {"images": {0: "batch"}, "logits": {0: "batch"}}, fold=True)
        try:
            atomic_write(out / "model.int8.onnx", lambda tmp: quantize_dynamic(str(folded), tmp, weight_type=QuantType.QInt8))
        finally:
            folded.unlink()
        meta["int8"] = "model.int8.onnx"  # a snapshot of the exported weights; `edge adapt` updates model.onnx
    save_json(out / "metadata.json", meta)
    return meta


def read_metadata(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "metadata.json").read_text())


def dataset_mean_std(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std that the streams and i.i.d. runs standardise with."""
    from hebbedge.data import MEAN_STD
    from hebbedge.scenarios.streams import CIFAR10_MEAN_STD

    if dataset == "cifar10":
        return CIFAR10_MEAN_STD
    return (MEAN_STD[dataset][0],), (MEAN_STD[dataset][1],)


def load_run(run_dir: str | Path) -> tuple[nn.Sequential, dict]:
    """The trained model of a `hebbedge train` run directory, and what an export needs to know.

    Stream runs hold config.json + model.pt; i.i.d. runs hold result.json + checkpoint.pt.
    """
    from hebbedge.continual import HEBBIAN_LEARNERS, READOUT_LEARNERS, UNSUPERVISED_LEARNERS, build_model, readout_model
    from hebbedge.models import random_features_
    from hebbedge.scenarios import SCENARIOS
    from hebbedge.train import TrainConfig, build

    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists() and (run_dir / "model.pt").exists():
        info = json.loads((run_dir / "config.json").read_text())
        run, cfg = info["run"], info["config"]
        if run["learner"] in UNSUPERVISED_LEARNERS + ("slda",):
            raise ValueError(f"{run_dir}: exporting {run['learner']!r} runs is not supported yet; export works for "
                             f"{', '.join(HEBBIAN_LEARNERS + READOUT_LEARNERS)} and the backprop baselines trained by gradients")
        dataset = SCENARIOS[run["scenario"]].dataset
        hebbian = run["learner"] in HEBBIAN_LEARNERS
        section = cfg["hebbian"] if hebbian else cfg["backprop"]
        in_shape = (3, 32, 32) if dataset == "cifar10" else (1, 28, 28)
        if run["learner"] in READOUT_LEARNERS:  # fixed features and the LDA readout's sums
            model = nn.Sequential(*readout_model(cfg, in_shape, 10))
        else:
            model = build_model(cfg["model"], section if hebbian else None, in_shape, 10, section.get("dropout", 0.0))
        model.load_state_dict(torch.load(run_dir / "model.pt"))
        learner, frozen = run["learner"], run["freeze_c_after"] is not None
    elif (run_dir / "result.json").exists() and (run_dir / "checkpoint.pt").exists():
        cfg = TrainConfig(**json.loads((run_dir / "result.json").read_text())["config"])
        dataset, in_shape, learner, frozen = cfg.dataset, (1, 28, 28), cfg.learner, False
        hebbian = learner in HEBBIAN_LEARNERS
        model, _ = build(cfg, in_shape, 10)
        model.load_state_dict(torch.load(run_dir / "checkpoint.pt")["learner"]["model"])
    else:
        raise ValueError(f"{run_dir}: expected a run directory of `hebbedge train` "
                         "(config.json + model.pt for a stream, result.json + checkpoint.pt for i.i.d.)")
    if learner == "random":
        random_features_(model)  # the control's hidden weights never learn, on the edge either
    mean, std = dataset_mean_std(dataset)
    return model, {"in_shape": in_shape, "mean": tuple(mean), "std": tuple(std), "classes": list(range(10)),
                   "hebbian": hebbian, "frozen": frozen, "learner": learner, "dataset": dataset}


def export_run(run_dir: str | Path, out_dir: str | Path, freeze_c: bool = False, int8: bool = False) -> dict:
    """`hebbedge export`: model.onnx always; update.onnx for a Hebbian run whose C is frozen (or `freeze_c`)."""
    model, info = load_run(run_dir)
    with_update = info["hebbian"] and (info["frozen"] or freeze_c)
    extra = {"source_run": str(run_dir), "learner": info["learner"], "dataset": info["dataset"]}
    return export_model(model, info["in_shape"], info["mean"], info["std"], out_dir, info["classes"], with_update, int8, extra)


def stream_arrays(scenario: str, out_dir: str | Path, seed: int = 0, data_dir: str | None = None,
                  train_size: int | None = None, test_size: int | None = None) -> list[Path]:
    """Each experience of a stream as raw uint8 images + labels (expK-train.npz / expK-test.npz), for the edge."""
    from hebbedge.scenarios import SCENARIOS, make_stream

    bm = make_stream(scenario, seed=seed, data_dir=data_dir, train_size=train_size, test_size=test_size)
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) for v in dataset_mean_std(SCENARIOS[scenario].dataset))
    written = []
    for split, stream in (("train", bm.train_stream), ("test", bm.test_stream)):
        for k, exp in enumerate(stream):
            loader = torch.utils.data.DataLoader(exp.dataset, batch_size=4096)
            xs, ys = zip(*[(b[0], b[1]) for b in loader])
            x = torch.cat(xs).numpy() * std + mean  # back to [0, 1]: the streams hold standardised images
            images = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
            path = Path(out_dir) / f"exp{k}-{split}.npz"
            save_npz(path, x=images, y=torch.cat(ys).numpy())
            written.append(path)
    return written
