"""The backprop baseline with the same ``step(x, target)`` interface as ``HebbianLearner``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hebbedge.config import CHOICES
from hebbedge.learner import StepResult

OPTIMIZERS = CHOICES["backprop.optimizer"]


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The backprop optimizer by its config name (``backprop.optimizer``): Adam, or SGD with `momentum`;
    the one place both the i.i.d. learner and the stream baselines pick it."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


class BackpropLearner:
    """End-to-end backprop on a plain PyTorch model: Adam, or SGD with momentum 0.9."""

    def __init__(self, model: nn.Module, optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        self.model = model
        self.optimizer = make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)

    def step(self, x: torch.Tensor, target: torch.Tensor) -> StepResult:
        if not torch.isfinite(x).all():
            raise ValueError("inputs contain NaN or Inf; the step was refused and no weight changed")
        self.model.train()
        logits = self.model(x)
        loss = F.cross_entropy(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepResult(loss.item(), logits.detach())

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
