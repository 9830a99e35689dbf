"""The i.i.d. benchmark: the Hebbian learner against its backprop twin, same architecture and budget.

The Hebbian learner also runs as its random-features control (hidden weights never trained, same
readout), which shows what the hidden-layer rule adds.

Backprop gets a tuned learning rate per optimizer (Adam, SGD with momentum): each candidate is
trained for `tune_epochs` and scored on the validation split (never on the test set); the best one
then gets the full budget. The Hebbian learner runs with the thesis' settings (6.1).

Every run can be checkpointed after each epoch, so an interrupted benchmark resumes to the same record.
"""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path

import torch

from hebbedge import registry
from hebbedge.files import save_json
from hebbedge.train import TrainConfig, load_normalised, resolve_device, run

ADAM_LRS = (3e-4, 1e-3, 3e-3)
SGD_LRS = (1e-3, 1e-2, 3e-2, 1e-1)


def _run(cfg: TrainConfig, name: str, data: tuple, device: str, progress: bool, state_dir: Path | None) -> dict:
    """One run of the benchmark; with `state_dir`, a finished run is read back from NAME.json and an
    interrupted one continues from its per-epoch checkpoint NAME.pt."""
    if state_dir is None:
        return run(cfg, device, progress=progress, data=data)
    done = state_dir / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    checkpoint = state_dir / f"{name}.pt"
    result = run(cfg, device, progress=progress, data=data, checkpoint=checkpoint, resume=True)
    save_json(done, result)
    checkpoint.unlink()  # the JSON is all the benchmark reads back; the weights are not kept
    return result


def tune_lr(cfg: TrainConfig, lrs: tuple[float, ...], tune_epochs: int, data: tuple, device: str, progress: bool,
            state_dir: Path | None = None) -> dict:
    """Validation accuracy of each learning rate after `tune_epochs`; picks the best."""
    scores, seconds = {}, 0.0
    for lr in lrs:
        result = _run(replace(cfg, lr=lr, epochs=tune_epochs), f"{cfg.learner}-tune-lr{lr:g}", data, device, progress, state_dir)
        scores[lr], seconds = result["best_val_acc"], seconds + result["seconds"]
        if progress:
            print(f"  tune {cfg.learner} lr={lr:g}: val acc {100 * scores[lr]:.2f}%")
    best = max(scores, key=scores.get)
    return {"lr": best, "val_acc_by_lr": {str(k): v for k, v in scores.items()}, "seconds": seconds}


def benchmark(
    base: TrainConfig,
    tune_epochs: int = 1,
    adam_lrs: tuple[float, ...] = ADAM_LRS,
    sgd_lrs: tuple[float, ...] = SGD_LRS,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool = True,
    state_dir: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """Run every i.i.d. learner of the registry (hebbian, random, adam, sgd) on `base`'s dataset,
    architecture and budget; returns the JSON record.

    With `state_dir`, every run is checkpointed there after each epoch and kept there as JSON once it
    has finished, so `resume` continues an interrupted benchmark to the same record; without `resume`
    an existing `state_dir` is an error. The caller removes `state_dir` once the record is saved.
    """
    state = None if state_dir is None else Path(state_dir)
    if state is not None and state.exists() and not resume:
        raise FileExistsError(f"{state} holds an interrupted benchmark: pass --resume to continue it, or remove it")
    dev = resolve_device(device)
    data = load_normalised(base.dataset, dev, data_dir)
    candidates = {"adam": adam_lrs, "sgd": sgd_lrs}
    results = {}
    for name in registry.names("iid"):  # the Hebbian learners with the thesis' settings, backprop with a tuned lr
        cfg = replace(base, learner=name)
        optimizer = registry.LEARNERS[name].optimizer
        if optimizer is None:
            results[name] = _run(cfg, name, data, device, progress, state)
            continue
        tuning = tune_lr(cfg, candidates[optimizer], tune_epochs, data, device, progress, state)
        results[name] = {**_run(replace(cfg, lr=tuning["lr"]), name, data, device, progress, state), "tuning": tuning}
    return {
        "benchmark": f"iid-{base.dataset}",
        "protocol": "i.i.d. training; best validation epoch evaluated on the test set",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tune_epochs": tune_epochs,
        "seconds": sum(r["seconds"] + r.get("tuning", {}).get("seconds", 0.0) for r in results.values()),
        "summary": {name: {"test_acc": r["test_acc"], "best_val_acc": r["best_val_acc"], "seconds": r["seconds"],
                           **({"lr": r["tuning"]["lr"]} if "tuning" in r else {})} for name, r in results.items()},
        "runs": results,
    }
