"""I.i.d. training: build a model and its learner from a config, fit with progress, evaluate.

One loop serves the Hebbian learner and the backprop twin: both expose ``step(x, target)``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from hebbedge import registry
from hebbedge.backprop import BackpropLearner
from hebbedge.config import TrainConfig
from hebbedge.data import fingerprint, load_standardised, split_files
from hebbedge.files import load_torch, save_checkpoint
from hebbedge.learner import HebbianLearner
from hebbedge.nets import build_net


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
    """The model, on `device` (``nets.build_net``, by the learner's registry entry), and the learner that trains it."""
    entry = registry.get(cfg.learner, "iid")
    model = build_net(entry, cfg.config(), in_shape, n_classes, device)
    if entry.optimizer is None:
        return model, hebbian_learner(model, cfg)
    return model, BackpropLearner(model, entry.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)


def hebbian_learner(model: nn.Module, cfg: TrainConfig, kind: type[HebbianLearner] = HebbianLearner) -> HebbianLearner:
    """`kind` (HebbianLearner or a subclass) on `model`, C trained as `cfg` says."""
    return kind(model, lr=cfg.c_lr, weight_decay=cfg.c_weight_decay, optimizer=cfg.c_optimizer, momentum=cfg.c_momentum)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy in [0, 1] with the committed weights (eval mode: nothing learns)."""
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item() for i in range(0, len(x), batch_size))
    return correct / len(x)


def load_normalised(dataset: str, device: torch.device, data_dir: str | None = None) -> tuple[torch.Tensor, ...]:
    """Train and test images standardised with the dataset's mean/std, on the device."""
    return tuple(t.to(device) for train in (True, False) for t in load_standardised(dataset, train, data_dir))


def data_record(dataset: str, data_dir: str | None) -> list[dict]:
    """What a run records of the data it read: path, size and sha256 of the dataset's files."""
    return fingerprint([*split_files(dataset, True, data_dir), *split_files(dataset, False, data_dir)])


def holdout(cfg: TrainConfig, x_train: torch.Tensor, y_train: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The seed's shuffle of the training set: its first ``cfg.val_size`` samples held out for validation
    (None without), the next ``cfg.train_size`` (all by default) the indices to train on."""
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed)).to(x_train.device)
    val = (x_train[perm[:cfg.val_size]], y_train[perm[:cfg.val_size]]) if cfg.val_size else None
    return perm[cfg.val_size:][:cfg.train_size], val


def _rng_state(shuffle: torch.Generator) -> dict:
    """Every random stream a training epoch draws from, as tensors (the batch order, dropout's global
    generator, CUDA's), so a resumed run continues exactly where the uninterrupted one would."""
    state = {"shuffle": shuffle.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, shuffle: torch.Generator) -> None:
    shuffle.set_state(state["shuffle"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


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
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    state: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train for `epochs`; with `val`, keep the weights of the best validation epoch (thesis ch. 6).

    Returns one record per epoch: mean training loss, seconds, validation accuracy (with `val`) and
    test accuracy (with `test`; recorded for the learning curve only, never used to choose).
    After every epoch `on_epoch` gets the fit state: the learner, the history, the best
    validation weights and the RNG state, all tensors and plain values. Passing such a state back
    as `state` continues from it, to the same result as a run that was never interrupted.
    """
    g = torch.Generator().manual_seed(seed)
    history, best = [], None  # best: {"epoch", "val_acc", "model"} of the best validation epoch so far
    if state is not None:
        learner.load_state_dict(state["learner"])
        history, best = list(state["history"]), state["best"]
        _set_rng_state(state["rng"], g)
    for epoch in range(len(history) + 1, epochs + 1):
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
            if best is None or record["val_acc"] > best["val_acc"]:
                best = {"epoch": epoch, "val_acc": record["val_acc"], "model": copy.deepcopy(learner.model.state_dict())}
        if test is not None:
            record["test_acc"] = evaluate(learner.model, *test)
        history.append(record)
        if on_epoch is not None:
            on_epoch({"history": history, "best": best, "rng": _rng_state(g), "learner": learner.state_dict()})
        if progress:
            tqdm.write(f"{desc} epoch {epoch}/{epochs}: loss {record['train_loss']:.4f}"
                       + (f", val acc {100 * record['val_acc']:.2f}%" if val is not None else "")
                       + (f", test acc {100 * record['test_acc']:.2f}%" if test is not None else "")
                       + f" ({record['seconds']:.0f}s)")
    if best is not None:
        learner.model.load_state_dict(best["model"])
    return history


def summary(cfg: TrainConfig, device: torch.device, history: list[dict], test_acc: float | None) -> dict:
    """The JSON record of a run; `test_acc` None while it is still training.

    `test_acc` is the test accuracy of the best validation epoch (of the last epoch without a validation split).
    """
    best = max(history, key=lambda h: h["val_acc"]) if history and "val_acc" in history[0] else None
    return {
        "config": asdict(cfg),
        "device": str(device),
        "finished": test_acc is not None,
        "epochs_done": len(history),
        "history": history,
        "best_epoch": best["epoch"] if best else None,
        "best_val_acc": best["val_acc"] if best else None,
        "test_acc": test_acc,
        "seconds": sum(h["seconds"] for h in history),  # training time over all epochs, across resumes
    }


def run_record(cfg: TrainConfig, result: dict) -> dict:
    """A finished i.i.d. run's config.json, in the stream runs' format (``continual.run_record``): the
    run's own fields, its config in the shared schema's sections, the data files it read, the device."""
    fields = {k: v for k, v in asdict(cfg).items() if k in ("learner", "seed", "val_size", "train_size")}
    return {"run": {"scenario": cfg.dataset, **fields}, "config": cfg.config().as_dict(), "data": result.get("data"),
            "device": result["device"]}


def run(cfg: TrainConfig, device: str = "auto", data_dir: str | None = None, progress: bool = True,
        data: tuple[torch.Tensor, ...] | None = None, checkpoint: str | Path | None = None, resume: bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train one config on its i.i.d. dataset; returns the record of `summary`.

    With `checkpoint`, the run is saved there (atomically) after every epoch; the finished run's
    checkpoint holds the best validation epoch's weights under "learner" (what export loads), an
    unfinished one the last epoch's. `resume` continues from an existing checkpoint of the same
    config; without it an existing checkpoint is an error, so a run is never overwritten by mistake.
    `on_epoch` gets the partial record (`test_acc` None) after every epoch.
    """
    dev = resolve_device(device)
    state = None
    if checkpoint is not None and Path(checkpoint).exists():
        if not resume:
            raise FileExistsError(f"{checkpoint} exists: pass --resume to continue that run, or choose another --out")
        state = load_torch(checkpoint, "the checkpoint.pt of a `hebbedge train` i.i.d. run", map_location=dev)
        if state["config"] != asdict(cfg):
            changed = sorted(k for k in asdict(cfg) if state["config"].get(k) != asdict(cfg)[k])
            raise ValueError(f"{checkpoint} is a run with other settings ({', '.join(changed)} differ); "
                             "resume it with the same options, or choose another --out")
    x_train, y_train, x_test, y_test = data if data is not None else load_normalised(cfg.dataset, dev, data_dir)
    # What a run records of the data it read (path, size, sha256); data handed in is the caller's to record.
    used = None if data is not None else data_record(cfg.dataset, data_dir)
    torch.manual_seed(cfg.seed)
    train_idx, val = holdout(cfg, x_train, y_train)
    model, learner = build(cfg, tuple(x_train.shape[1:]), int(y_train.max()) + 1, dev)

    final = state  # the latest fit state: the loaded one, then each epoch's

    def epoch_done(fit_state: dict) -> None:
        nonlocal final
        final = fit_state
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"config": asdict(cfg), **fit_state})
        if on_epoch is not None:
            on_epoch(summary(cfg, dev, fit_state["history"], None))

    history = fit(learner, x_train[train_idx], y_train[train_idx], cfg.epochs, cfg.batch_size, val, cfg.seed, progress,
                  desc=cfg.learner, test=(x_test, y_test), state=state, on_epoch=epoch_done)
    if checkpoint is not None and final["best"] is not None:
        # fit has loaded the best epoch's weights: they become the run's weights, with nothing left to
        # choose from, so resuming the finished run only evaluates it.
        save_checkpoint(checkpoint, {"config": asdict(cfg), **final, "best": None, "learner": learner.state_dict()})
    record = summary(cfg, dev, history, evaluate(model, x_test, y_test))
    return record if used is None else {**record, "data": used}
