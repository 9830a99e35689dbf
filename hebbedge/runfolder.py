"""Read a finished run folder of `hebbedge train` back into its trained network, without the
training drivers (no Avalanche): what `hebbedge export` and other readers of runs use.

Stream runs hold config.json (run fields, config sections, data fingerprints) + model.pt; i.i.d. runs
hold result.json (the TrainConfig) + checkpoint.pt (the learner's state, best epoch's weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from hebbedge import registry
from hebbedge.config import ConfigError, TrainConfig, from_dict
from hebbedge.files import BadFileError, load_torch, read_json
from hebbedge.nets import build_net


@dataclass(frozen=True)
class TrainedRun:
    """A run's network with its trained weights and what a reader needs to know of it."""

    model: nn.Sequential
    learner: registry.Learner
    dataset: str
    in_shape: tuple[int, ...]
    classes: list[int]
    frozen: bool  # C was frozen during the run (its learning step is backprop-free)


def load_trained(run_dir: str | Path) -> TrainedRun:
    """The trained network of a `hebbedge train` run folder; ValueError for a folder that is none."""
    from hebbedge.scenarios import SCENARIOS

    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists() and (run_dir / "model.pt").exists():
        info = read_json(run_dir / "config.json", "the config.json of a `hebbedge train` stream run")
        run = info["run"]
        try:
            cfg = from_dict(info["config"], run_dir / "config.json", complete=False)
        except ConfigError as err:
            raise BadFileError(run_dir / "config.json", str(err)) from None
        entry, dataset = registry.get(run["learner"], "stream"), SCENARIOS[run["scenario"]].dataset
        in_shape, frozen = (3, 32, 32) if dataset == "cifar10" else (1, 28, 28), run["freeze_c_after"] is not None
        state = load_torch(run_dir / "model.pt", "the model.pt of a `hebbedge train` stream run")
    elif (run_dir / "result.json").exists() and (run_dir / "checkpoint.pt").exists():
        train = TrainConfig(**read_json(run_dir / "result.json", "the result.json of a `hebbedge train` i.i.d. run")["config"])
        entry, dataset, in_shape, frozen, cfg = registry.get(train.learner, "iid"), train.dataset, (1, 28, 28), False, train.config()
        state = load_torch(run_dir / "checkpoint.pt", "the checkpoint.pt of a `hebbedge train` i.i.d. run")["learner"]["model"]
    else:
        raise ValueError(f"{run_dir}: expected a run directory of `hebbedge train` "
                         "(config.json + model.pt for a stream, result.json + checkpoint.pt for i.i.d.)")
    if not entry.exports:
        raise ValueError(f"{run_dir}: exporting {entry.name!r} runs is not supported yet; export works for "
                         f"{', '.join(registry.names(exports=True))}")
    model = build_net(entry, cfg, in_shape, 10)
    model.load_state_dict(state)
    return TrainedRun(model, entry, dataset, in_shape, list(range(10)), frozen)
