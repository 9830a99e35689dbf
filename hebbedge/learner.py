"""The learner: one single-forward-pass step per batch (thesis 4.3).

    forward with W_eff (each layer caches its input and output)
    -> cross-entropy -> backward -> AdamW (or SGD) on C only
    -> commit W <- W_eff.detach() -> each layer's rule gives D -> M <- beta*M + D

Each layer's part of it is ``hebbedge.layers.HebbLayer`` (forward, commit, learn), whose arithmetic is
``hebbedge.plasticity`` and ``hebbedge.rules``.

After ``freeze_c()`` the same step runs under ``torch.no_grad()`` with no optimizer: the
on-device mode, whose memory is W + M + one batch of activations.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hebbedge.config import CHOICES, HebbianSection
from hebbedge.layers import HebbLayer

# What trains C: AdamW (the thesis's i.i.d. runs, §6.1) or SGD with momentum (its continual-learning runs, §6.3).
C_OPTIMIZERS = CHOICES["hebbian.optimizer"]


@dataclass
class StepResult:
    """What one step measured: the task loss on the batch (with W_eff) and the logits."""

    loss: float
    logits: torch.Tensor
    skipped_layers: int = 0


class HebbianLearner:
    """Trains C by backprop and W by local rules; ``freeze_c()`` switches to backprop-free steps."""

    def __init__(
        self,
        model: nn.Module,
        lr: float = HebbianSection.lr,
        weight_decay: float = HebbianSection.weight_decay,
        betas: tuple[float, float] = (0.9, 0.999),
        sgd_lr: float | None = None,
        fast: bool = True,
        optimizer: str = HebbianSection.optimizer,
        momentum: float = HebbianSection.sgd_momentum,
    ) -> None:
        """`optimizer` trains C: "adamw" (with `betas`) or "sgd" (with `momentum`); `weight_decay` is
        AdamW's decoupled decay or SGD's L2 term, both lr * weight_decay * C per step without momentum.
        `fast` False makes every layer take the reference forms of ``hebbedge.plasticity`` (same values;
        see ``HebbLayer.pending_form``)."""
        if optimizer not in C_OPTIMIZERS:
            raise ValueError(f"unknown optimizer for C {optimizer!r}; expected one of {list(C_OPTIMIZERS)}")
        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, HebbLayer)]
        if not self.layers:
            raise ValueError("the model has no Hebbian layers (HebbLinear / HebbConv2d)")
        for layer in self.layers:
            layer.fast = fast
        self.optimizer_class, own = (torch.optim.AdamW, {"betas": betas}) if optimizer == "adamw" else (torch.optim.SGD, {"momentum": momentum})
        self.optimizer_config = dict(lr=lr, weight_decay=weight_decay, **own)
        # A hybrid stack also has plain layers trained by backprop: their weights get their own group.
        c_ids = {id(p) for layer in self.layers for p in layer.parameters()}
        self.sgd_params = [p for p in model.parameters() if id(p) not in c_ids]
        self.sgd_lr = lr if sgd_lr is None else sgd_lr
        self.optimizer: torch.optim.Optimizer | None = None
        self.unfreeze_c()

    @property
    def frozen(self) -> bool:
        return self.optimizer is None

    def freeze_c(self) -> None:
        """C becomes a constant; steps run without autograd and without optimizer state."""
        if self.sgd_params:
            raise ValueError("a hybrid network's plain layers learn by backprop, so its C cannot be frozen for backprop-free steps")
        self.optimizer = None
        for p in self.model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for layer in self.layers:
            layer.free_workspace()

    def unfreeze_c(self) -> None:
        """C is trained again, with a fresh optimizer state."""
        for p in self.model.parameters():
            p.requires_grad_(True)
        sgd_ids = {id(p) for p in self.sgd_params}
        groups = [{"params": [p for p in self.model.parameters() if id(p) not in sgd_ids]}]
        if self.sgd_params:
            groups.append({"params": self.sgd_params, "lr": self.sgd_lr, "weight_decay": 0.0})
        self.optimizer = self.optimizer_class(groups, **self.optimizer_config)

    def _check_batch(self, x: torch.Tensor, target: torch.Tensor) -> None:
        if x.shape[0] != target.shape[0] or x.shape[0] == 0:
            raise ValueError(f"expected a non-empty batch with one label per sample, got inputs {tuple(x.shape)} and labels {tuple(target.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("inputs contain NaN or Inf; the step was refused and no weight changed")
        n_classes = self.layers[-1].weight.shape[0]
        if target.dtype not in (torch.int64, torch.int32) or target.min() < 0 or target.max() >= n_classes:
            raise ValueError(f"labels must be integers in [0, {n_classes}), got {target.dtype} in [{target.min()}, {target.max()}]")

    def step(self, x: torch.Tensor, target: torch.Tensor) -> StepResult:
        """One learning step on a batch; returns the batch loss before the local updates."""
        self._check_batch(x, target)
        target = target.long()
        self.model.train()
        self.begin_step(target)
        with torch.no_grad() if self.frozen else nullcontext():
            logits = self.model(x)
            loss = F.cross_entropy(logits, target)
        self.update_c(loss)
        skipped = self.local_update(target)
        return StepResult(loss.item(), logits.detach(), skipped)

    def begin_step(self, target: torch.Tensor) -> None:
        """Before a training-mode forward pass on a batch labelled `target`. With C frozen, each layer
        writes W_eff into W in place and learns during the forward pass (HebbLayer.apply_pending_):
        the step never holds two copies of the weights, nor more than one layer's activations."""
        if self.frozen:
            for layer in self.layers:
                layer.apply_pending_(target)

    def update_c(self, loss: torch.Tensor) -> None:
        """Backprop the task loss into C through the pending update; the optimizer steps C. No-op when frozen."""
        if self.frozen:
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.step_c()

    def step_c(self) -> None:
        """The optimizer's step on C from the gradients already in .grad; skipped when they are not finite."""
        if all(p.grad is None or torch.isfinite(p.grad).all() for p in self.model.parameters()):
            self.optimizer.step()

    @torch.no_grad()
    def local_update(self, target: torch.Tensor) -> int:
        """Commit W <- W_eff, then each layer's rule gives D and M <- beta*M + D (``HebbLayer.learn``, whose
        every momentum update goes through ``HebbLayer.update_momentum_``).

        Needs the training-mode forward of this batch (each layer cached its input and output).
        Returns how many layers dropped a non-finite direction. A distributed learner may all-reduce
        each layer's M after this (``layer.materialise_momentum_()`` first when C is frozen).
        """
        for layer in self.layers:
            layer.commit()
            if layer.cached is not None:  # (with C frozen, the layer already learned during the forward)
                layer.learn(target)
        return sum(layer.dropped for layer in self.layers)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": None if self.frozen else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if state["optimizer"] is None:
            self.freeze_c()
        else:
            self.unfreeze_c()
            self.optimizer.load_state_dict(state["optimizer"])
