"""The i.i.d. benchmark: the Hebbian learner against its backprop twin, same architecture and budget.

The Hebbian learner also runs as its random-features control (hidden weights never trained, same
readout), which shows what the hidden-layer rule adds.

Backprop gets a tuned learning rate per optimizer (Adam, SGD with momentum): each candidate is
trained for `tune_epochs` and scored on the validation split (never on the test set); the best one
then gets the full budget. The Hebbian learner runs with the thesis' settings (6.1).
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace

import torch

from hebbedge.train import TrainConfig, load_normalised, resolve_device, run

ADAM_LRS = (3e-4, 1e-3, 3e-3)
SGD_LRS = (1e-3, 1e-2, 3e-2, 1e-1)


def tune_lr(cfg: TrainConfig, lrs: tuple[float, ...], tune_epochs: int, data: tuple, device: str, progress: bool) -> dict:
    """Validation accuracy of each learning rate after `tune_epochs`; picks the best."""
    scores = {}
    for lr in lrs:
        result = run(replace(cfg, lr=lr, epochs=tune_epochs), device, progress=progress, data=data)
        scores[lr] = result["best_val_acc"]
        if progress:
            print(f"  tune {cfg.learner} lr={lr:g}: val acc {100 * scores[lr]:.2f}%")
    best = max(scores, key=scores.get)
    return {"lr": best, "val_acc_by_lr": {str(k): v for k, v in scores.items()}}


def benchmark(
    base: TrainConfig,
    tune_epochs: int = 1,
    adam_lrs: tuple[float, ...] = ADAM_LRS,
    sgd_lrs: tuple[float, ...] = SGD_LRS,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Run hebbian, adam and sgd on `base`'s dataset/architecture/budget; returns the JSON record."""
    dev = resolve_device(device)
    data = load_normalised(base.dataset, dev, data_dir)
    start = time.time()
    results = {name: run(replace(base, learner=name), device, progress=progress, data=data) for name in ("hebbian", "random")}
    for name, lrs in (("adam", adam_lrs), ("sgd", sgd_lrs)):
        cfg = replace(base, learner=name)
        tuning = tune_lr(cfg, lrs, tune_epochs, data, device, progress)
        results[name] = run(replace(cfg, lr=tuning["lr"]), device, progress=progress, data=data)
        results[name]["tuning"] = tuning
    return {
        "benchmark": f"iid-{base.dataset}",
        "protocol": "i.i.d. training; best validation epoch evaluated on the test set",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tune_epochs": tune_epochs,
        "seconds": time.time() - start,
        "summary": {name: {"test_acc": r["test_acc"], "best_val_acc": r["best_val_acc"], "seconds": r["seconds"],
                           **({"lr": r["tuning"]["lr"]} if "tuning" in r else {})} for name, r in results.items()},
        "runs": results,
    }
