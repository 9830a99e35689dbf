"""The Hebbian learner as an Avalanche strategy, and the plugin that freezes C.

Avalanche's training loop runs unchanged; three hooks make each minibatch one learner step:
``forward`` (under no_grad once C is frozen), ``backward`` (into C only; skipped when frozen) and
``optimizer_step`` (the optimizer on C, then commit and local rules). Evaluation, loggers and metrics
are Avalanche's own.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Sequence

import torch
import torch.nn as nn
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate

from hebbedge.config import HebbianSection
from hebbedge.learner import HebbianLearner


class HebbianStrategy(SupervisedTemplate):
    """Trains a Hebbian network on a stream; C is the only thing its optimizer sees."""

    def __init__(
        self,
        *,
        model: nn.Module,
        c_optimizer: str = HebbianSection.optimizer,  # C's defaults are the [hebbian] section's
        c_lr: float = HebbianSection.lr,
        c_momentum: float = HebbianSection.sgd_momentum,
        c_weight_decay: float = HebbianSection.weight_decay,
        sgd_lr: float | None = None,
        train_mb_size: int = 64,
        train_epochs: int = 1,
        eval_mb_size: int = 1000,
        device: str | torch.device = "cpu",
        plugins: Sequence[SupervisedPlugin] | None = None,
        evaluator=default_evaluator,
        eval_every: int = -1,
    ) -> None:
        self.learner = HebbianLearner(model.to(device), lr=c_lr, weight_decay=c_weight_decay, sgd_lr=sgd_lr,
                                      optimizer=c_optimizer, momentum=c_momentum)
        super().__init__(model=model, optimizer=self.learner.optimizer, train_mb_size=train_mb_size,
                         train_epochs=train_epochs, eval_mb_size=eval_mb_size, device=device,
                         plugins=plugins, evaluator=evaluator, eval_every=eval_every)

    def freeze_c(self) -> None:
        """From now on every step is backprop-free (the on-device mode)."""
        self.learner.freeze_c()  # the template keeps its optimizer object, but it is never stepped

    def unfreeze_c(self) -> None:
        self.learner.unfreeze_c()
        self.optimizer = self.learner.optimizer

    def make_optimizer(self, **kwargs) -> None:
        # The learner's optimizer already holds exactly its parameters (C, and a hybrid's SGD weights
        # in their own group); Avalanche's first re-targeting would merge the groups into one.
        pass

    def forward(self):
        if self.is_training:
            self.learner.begin_step(self.mb_y)
        with torch.no_grad() if self.learner.frozen else nullcontext():
            return super().forward()

    def backward(self) -> None:
        if not self.learner.frozen:
            super().backward()

    def optimizer_step(self) -> None:
        if not self.learner.frozen:
            self.learner.step_c()
        self.learner.local_update(self.mb_y)


class FreezeCPlugin(SupervisedPlugin):
    """Freezes C after training experience `after` (0-based), so later experiences learn backprop-free."""

    def __init__(self, after: int) -> None:
        super().__init__()
        if after < 0:
            raise ValueError(f"freeze-c-after must be a non-negative experience index, got {after}")
        self.last_trained = after  # (an attribute named after_* would look like a callback to Avalanche)

    def after_training_exp(self, strategy: HebbianStrategy, **kwargs) -> None:
        if strategy.experience.current_experience == self.last_trained:
            strategy.freeze_c()


class _NoOptimizer:
    """Fills the template's optimizer slot for a strategy where nothing is trained by gradients."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ReadoutStrategy(SupervisedTemplate):
    """Features and an `LDAReadout`: each minibatch adds to the readout's sums.

    Overrides forward (features without gradients, then the readout), backward (nothing) and
    optimizer_step (the readout accumulates the minibatch). The features are fixed, except:

    - warm-up: the first minibatches of the first experience, `warmup` of its samples (rounded up to
      whole minibatches), only teach the features (label-free, C frozen) and never reach the readout,
      so no sum is stored over features that change afterwards (in-stream pre-training; each sample
      is still seen once);
    - during the first `plastic_experiences` experiences of the stream their Hebbian layers keep
      learning after each minibatch, and the sums already stored describe features that have since
      changed.
    """

    def __init__(self, *, features: nn.Module, readout: nn.Module, plastic_experiences: int = 0, warmup: float = 0.0,
                 train_mb_size: int = 64, train_epochs: int = 1, eval_mb_size: int = 1000, device: str | torch.device = "cpu",
                 plugins: Sequence[SupervisedPlugin] | None = None, evaluator=default_evaluator, eval_every: int = -1) -> None:
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the first experience in [0, 1), got {warmup}")
        self.features, self.readout = features, readout
        self.plastic_experiences, self.warmup = plastic_experiences, warmup
        self.warmup_left: int | None = None  # samples of the first experience still to warm up on (set when it starts)
        self.feature_learner = HebbianLearner(features) if plastic_experiences > 0 or warmup > 0 else None
        if self.feature_learner is not None:
            self.feature_learner.freeze_c()
        super().__init__(model=nn.Sequential(features, readout), optimizer=_NoOptimizer(), criterion=nn.CrossEntropyLoss(),
                         train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size, device=device,
                         plugins=plugins, evaluator=evaluator, eval_every=eval_every)

    def make_optimizer(self, **kwargs) -> None:
        pass

    def _before_training_exp(self, **kwargs) -> None:
        if self.warmup_left is None and self.experience.current_experience == 0:
            self.warmup_left = math.ceil(self.warmup * len(self.experience.dataset))
        super()._before_training_exp(**kwargs)

    @property
    def warming_up(self) -> bool:
        return self.is_training and bool(self.warmup_left)

    @property
    def features_learn(self) -> bool:
        return self.warming_up or (self.is_training and self.experience.current_experience < self.plastic_experiences)

    def forward(self):
        # Training mode only while the features learn (the Hebbian layers then cache for their rule).
        self.features.train(self.features_learn)
        with torch.no_grad():
            self.mb_features = self.features(self.mb_x)
        return self.readout(self.mb_features)

    def backward(self) -> None:
        pass

    def optimizer_step(self) -> None:
        learn = self.features_learn
        if self.warming_up:
            self.warmup_left = max(0, self.warmup_left - len(self.mb_y))
        else:
            self.readout.accumulate(self.mb_features, self.mb_y)
        if learn:  # label-free: the rules get no labels
            self.feature_learner.local_update(torch.zeros_like(self.mb_y))
