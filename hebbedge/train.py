"""I.i.d. training: build a model and its learner from a config, fit with progress, evaluate.

One loop serves the Hebbian learner and the backprop twin: both expose ``step(x, target)``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from hebbedge.backprop import BackpropLearner
from hebbedge.data import load_standardised
from hebbedge.files import save_checkpoint
from hebbedge.learner import HebbianLearner
from hebbedge.models import random_features_, thesis_conv, thesis_linear

# hebbian: the learner; random: its random-features control (hidden weights never change, same
# readout and rule); adam / sgd: the backprop twin.
LEARNERS = ("hebbian", "random", "adam", "sgd")
ARCHS = ("linear", "conv")


@dataclass
class TrainConfig:
    """Everything that defines one i.i.d. run. Defaults are the thesis' MNIST linear setting (6.1)."""

    dataset: str = "mnist"
    learner: str = "hebbian"  # one of LEARNERS
    arch: str = "linear"
    widths: tuple[int, ...] = (2000, 2000, 2000, 2000)
    width_factor: int = 4
    activation: str = "tanh"
    dropout: float = 0.0
    epochs: int = 100
    batch_size: int = 32
    val_size: int = 5000  # held out of the training set to pick the best epoch (thesis ch. 6)
    train_size: int | None = None  # use only this many training samples (quick runs); None = all
    seed: int = 0
    # Hebbian learner
    eta: float = 1e-3  # linear layers
    eta_conv: float = 1e-4
    momentum: bool = True
    beta: float = 0.9
    label_smoothing: float = 0.0
    c_lr: float = 0.03
    c_weight_decay: float = 0.003
    # backprop twin
    lr: float = 1e-3
    weight_decay: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.learner not in LEARNERS:
            raise ValueError(f"unknown learner {self.learner!r}; expected one of {list(LEARNERS)}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; expected one of {list(ARCHS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        self.widths = tuple(self.widths)


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device)


def build(cfg: TrainConfig, in_shape: tuple[int, int, int], n_classes: int, device: torch.device | str = "cpu") -> tuple[nn.Module, HebbianLearner | BackpropLearner]:
    """The model, on `device`, and the learner that trains it."""
    hebbian = cfg.learner in ("hebbian", "random")
    beta = cfg.beta if cfg.momentum else 0.0
    common = dict(n_classes=n_classes, activation=cfg.activation, dropout=cfg.dropout, hebbian=hebbian,
                  beta=beta, label_smoothing=cfg.label_smoothing)
    if cfg.arch == "linear":
        model = thesis_linear(in_features=in_shape[0] * in_shape[1] * in_shape[2], widths=cfg.widths, eta=cfg.eta, **common)
    else:
        model = thesis_conv(in_channels=in_shape[0], image_size=in_shape[1], width_factor=cfg.width_factor,
                            eta_conv=cfg.eta_conv, eta_linear=cfg.eta, **common)
    model.to(device)
    if hebbian:
        learner = HebbianLearner(model, lr=cfg.c_lr, weight_decay=cfg.c_weight_decay)
        if cfg.learner == "random":
            random_features_(model)
        return model, learner
    return model, BackpropLearner(model, cfg.learner, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy in [0, 1] with the committed weights (eval mode: nothing learns)."""
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item() for i in range(0, len(x), batch_size))
    return correct / len(x)


def load_normalised(dataset: str, device: torch.device, data_dir: str | None = None) -> tuple[torch.Tensor, ...]:
    """Train and test images standardised with the dataset's mean/std, on the device."""
    return tuple(t.to(device) for train in (True, False) for t in load_standardised(dataset, train, data_dir))


def fit(
    learner: HebbianLearner | BackpropLearner,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
) -> list[dict]:
    """Train for `epochs`; with `val`, keep the weights of the best validation epoch (thesis ch. 6).

    Returns one record per epoch: mean training loss, validation accuracy, seconds.
    """
    g = torch.Generator().manual_seed(seed)
    history, best = [], (-1.0, None)
    for epoch in range(1, epochs + 1):
        start, losses = time.time(), []
        order = torch.randperm(len(x), generator=g).to(x.device)
        bar = tqdm(range(0, len(x), batch_size), desc=f"{desc} {epoch}/{epochs}", disable=not progress, leave=False)
        for i in bar:
            idx = order[i:i + batch_size]
            losses.append(learner.step(x[idx], y[idx]).loss)
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
        record = {"epoch": epoch, "train_loss": sum(losses) / len(losses), "seconds": time.time() - start}
        if val is not None:
            record["val_acc"] = evaluate(learner.model, *val)
            if record["val_acc"] > best[0]:
                best = (record["val_acc"], copy.deepcopy(learner.model.state_dict()))
        history.append(record)
        if progress:
            tqdm.write(f"{desc} epoch {epoch}/{epochs}: loss {record['train_loss']:.4f}"
                       + (f", val acc {100 * record['val_acc']:.2f}%" if val is not None else "")
                       + f" ({record['seconds']:.0f}s)")
    if best[1] is not None:
        learner.model.load_state_dict(best[1])
    return history


def run(cfg: TrainConfig, device: str = "auto", data_dir: str | None = None, progress: bool = True,
        data: tuple[torch.Tensor, ...] | None = None, checkpoint: str | Path | None = None) -> dict:
    """Train one config on its i.i.d. dataset; returns config, history and test accuracy.

    With `checkpoint`, the trained model and learner state are saved there (atomically) with the config.
    """
    dev = resolve_device(device)
    x_train, y_train, x_test, y_test = data if data is not None else load_normalised(cfg.dataset, dev, data_dir)
    torch.manual_seed(cfg.seed)
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed)).to(dev)
    val_idx, train_idx = perm[:cfg.val_size], perm[cfg.val_size:][:cfg.train_size]
    model, learner = build(cfg, tuple(x_train.shape[1:]), int(y_train.max()) + 1, dev)
    val = (x_train[val_idx], y_train[val_idx]) if cfg.val_size else None
    start = time.time()
    history = fit(learner, x_train[train_idx], y_train[train_idx], cfg.epochs, cfg.batch_size, val, cfg.seed, progress, desc=cfg.learner)
    if checkpoint:
        save_checkpoint(checkpoint, {"config": asdict(cfg), "learner": learner.state_dict()})
    return {
        "config": asdict(cfg),
        "device": str(dev),
        "history": history,
        "best_val_acc": max((h["val_acc"] for h in history), default=None) if val else None,
        "test_acc": evaluate(model, x_test, y_test),
        "seconds": time.time() - start,
    }
