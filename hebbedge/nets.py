"""Networks built from a run's configuration and its learner's registry entry, final when returned.

Stream runs, i.i.d. runs and the export loader all build here: ``build_net`` is the one place that
turns (learner, config) into a network. The unsupervised learners' hidden rules, SoftHebb's block
and the label-free epoch that pre-trains features live here too (the SoftHebb and semi-supervised
protocols of hebbedge/benchmarks/softhebb.py and semisup.py use them). No Avalanche here.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from hebbedge.config import Config, HebbianSection, ModelSection, conv_lda_settings, randumb_settings
from hebbedge.layers import HebbConv2d, HebbLayer
from hebbedge.learner import HebbianLearner
from hebbedge.models import AdaptiveAvgPool, MaxPool2d, softhebb_init_, thesis_conv, thesis_linear
from hebbedge.readout import LDAReadout
from hebbedge.registry import Learner
from hebbedge.rules import HPCARule, SoftHebbRule, SWTARule, TeacherRule, WTARule

RULES = {"swta": SWTARule, "hpca": HPCARule, "softhebb": SoftHebbRule, "wta": WTARule}


class Triangle(nn.Module):
    """RePU of the input minus its mean over channels (Hebbian Deep Learning Without Feedback, eq. 7): lateral inhibition."""

    def __init__(self, power: float) -> None:
        super().__init__()
        self.power = power

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.relu(u - u.mean(dim=1, keepdim=True)).pow(self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}"


# The paper states the layer's order twice, differently: appendix A.3's text pools, then applies the
# Triangle; Table 4 (and the authors' demo code) applies the Triangle, then pools. A layer's own learning
# is the same either way (its rule sees its input patches); what it passes upward differs.
SOFTHEBB_ORDERS = ("pool-triangle", "triangle-pool")


def softhebb_block(n_in: int, n_out: int, kernel: int, pool: str, inv_tau: float, eta: float, triangle: float,
                   radius: float = 3.0, batchnorm: bool = True, order: str = "pool-triangle",
                   normalise: str = "mean") -> nn.Sequential:
    """BatchNorm without affine (optional) -> SoftHebb conv -> pooling and Triangle in `order`: one
    layer of Table 4. `normalise` is the rule's update scaling (`SoftHebbRule`)."""
    if order not in SOFTHEBB_ORDERS:
        raise ValueError(f"unknown SoftHebb layer order {order!r}; expected one of {', '.join(SOFTHEBB_ORDERS)}")
    conv = HebbConv2d(n_in, n_out, kernel, padding=kernel // 2, activation=None, eta=eta, beta=0.0, post=None,
                      rule=SoftHebbRule(temperature=1.0 / inv_tau, normalise=normalise))
    softhebb_init_(conv.weight, radius)
    pooling = MaxPool2d(4, 2, padding=1) if pool == "max" else nn.AvgPool2d(2, 2)
    tail = [pooling, Triangle(triangle)] if order == "pool-triangle" else [Triangle(triangle), pooling]
    return nn.Sequential(*([nn.BatchNorm2d(n_in, affine=False)] if batchnorm else []), conv, *tail)



@torch.no_grad()
def unsupervised_epoch(module: nn.Module, x: torch.Tensor, generator: torch.Generator, batch_size: int = 64,
                       below: nn.Module | None = None, desc: str = "pretrain", progress: bool = True) -> None:
    """One epoch of label-free Hebbian learning of `module` (fed through the fixed `below`, if any):
    C frozen, so no backprop runs and no labels reach the rules."""
    learner = HebbianLearner(module)
    learner.freeze_c()
    no_labels = torch.zeros(batch_size, dtype=torch.long)
    order = torch.randperm(len(x), generator=generator)
    for i in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[i:i + batch_size]
        module.train()
        module(x[idx] if below is None else below(x[idx]))
        learner.local_update(no_labels[:len(idx)])



def unsupervised_rule_(layer: HebbLayer, rule: str, eta: float, radius: float = 3.0, **rule_args: float) -> None:
    """`layer` learns by the unsupervised `rule` at rate `eta`, with no momentum and no post-update
    normalisation; SoftHebb's layers start from its initialisation (expected row norm `radius`)."""
    layer.rule, layer.eta, layer.beta, layer.post = RULES[rule](**rule_args), eta, 0.0, None
    if rule == "softhebb":
        softhebb_init_(layer.weight, radius)


def build_model(model: ModelSection, hebbian: HebbianSection | None, in_shape: tuple[int, ...], n_classes: int,
                dropout: float, stack: tuple[bool, ...] | None = None, plastic_hidden: bool = True) -> nn.Sequential:
    """The config's architecture, Hebbian when `hebbian` holds the learner's settings (a linear
    hybrid names which layers are Hebbian in `stack`; `plastic_hidden` False: the random-features
    control, whose hidden layers never learn)."""
    common = dict(n_classes=n_classes, activation=model.activation, dropout=dropout,
                  hebbian=stack if stack is not None else hebbian is not None)
    if hebbian is not None:
        common.update(beta=hebbian.beta if hebbian.momentum else 0.0, label_smoothing=hebbian.label_smoothing,
                      plastic_hidden=plastic_hidden)
    if model.arch == "conv":
        if stack is not None:
            raise ValueError("hybrid stacks are built for the linear architecture; this config uses conv")
        etas = dict(eta_conv=hebbian.eta_conv, eta_linear=hebbian.eta) if hebbian else {}
        return thesis_conv(in_channels=in_shape[0], image_size=in_shape[1], width_factor=model.width_factor, **etas, **common)
    etas = dict(eta=hebbian.eta) if hebbian else {}
    return thesis_linear(in_features=int(np.prod(in_shape)), widths=tuple(model.widths), **etas, **common)


class RandomFourierFeatures(nn.Module):
    """z(x) = sqrt(2 / D) cos(x W + b) of the flattened input: sklearn's RBFSampler (random Fourier
    features of the RBF kernel exp(-gamma |x - x'|^2), Rahimi & Recht 2007), W [n_in, D] ~ N(0, 2 gamma),
    b [D] ~ U(0, 2 pi), drawn from `generator` in that order (W, then b). Never trained."""

    weight: torch.Tensor
    offset: torch.Tensor

    def __init__(self, n_in: int, n_features: int, gamma: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", torch.randn(n_in, n_features, generator=generator) * (2.0 * gamma) ** 0.5)
        self.register_buffer("offset", torch.rand(n_features, generator=generator) * (2.0 * np.pi))
        self.scale = (2.0 / n_features) ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.cos(x.flatten(1) @ self.weight + self.offset)

    def extra_repr(self) -> str:
        return f"n_in={self.weight.shape[0]}, n_features={self.weight.shape[1]}, gamma={self.gamma:.6g}"


class RandomReLUExpansion(nn.Module):
    """relu(x W), W [n_in, n_out] ~ N(0, 1 / n_in): RanPAC's random projection with a non-linearity, never trained."""

    weight: torch.Tensor

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(n_in, n_out) / n_in ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.weight)


def scale_gamma(n_in: int) -> float:
    """sklearn's gamma='scale', 1 / (n_in * X.var()), with X.var() = 1: the stream's pixels are standardised
    with their dataset's mean and std (hebbedge.data.MEAN_STD), so their variance is 1 by construction; no
    training image (of this or of a later experience) is looked at. RanDumb standardises MNIST with
    (0.1307, 0.3081) too, so its fit sees X.var() of about 1 as well."""
    return 1.0 / n_in


def randumb_model(cfg: Config, in_shape: tuple[int, ...], n_classes: int) -> tuple[nn.Module, LDAReadout]:
    """randumb's random Fourier features of the pixels (config [randumb]) and its readout."""
    r = randumb_settings(cfg)
    n_in = int(np.prod(in_shape))
    features = RandomFourierFeatures(n_in, r.features, r.gamma or scale_gamma(n_in))
    return features, LDAReadout(r.features, n_classes, r.shrinkage, r.shrinkage_estimator)


def readout_features(cfg: Config, in_shape: tuple[int, ...], n_classes: int) -> tuple[nn.Sequential, int]:
    """The feature network under an LDA readout, and its number of features: the config's [readout]
    network (one SoftHebb conv block, average-pooled to pool x pool per channel) or, without that
    section, the hidden layers of [model]. Built with random weights."""
    r = cfg.readout
    if r is None:
        model = build_model(cfg.model, None, in_shape, n_classes, 0.0)
        return model[:-1], model[-1].in_features
    if r.arch != "conv":
        raise ValueError(f"[readout] arch must be \"conv\" (a SoftHebb conv block), got {r.arch!r}")
    # No BatchNorm: the stream's inputs are already standardised, and a BatchNorm fitted to the host
    # data would be the one part of the features the random control does not share.
    block = softhebb_block(in_shape[0], r.channels, r.kernel, "max", r.inv_tau, r.eta, r.triangle, r.radius, batchnorm=False)
    pool = block[1]  # the max-pool sets the feature map's size (the conv's padding keeps the image's)
    pooled = (in_shape[1] + 2 * pool.padding - pool.kernel_size) // pool.stride + 1
    width = r.channels * r.pool ** 2
    if r.expand > 0:  # RanPAC-style random non-linear expansion of the pooled features
        return nn.Sequential(*block, AdaptiveAvgPool(pooled, r.pool), nn.Flatten(), RandomReLUExpansion(width, r.expand)), r.expand
    return nn.Sequential(*block, AdaptiveAvgPool(pooled, r.pool), nn.Flatten()), width


def readout_model(cfg: Config, in_shape: tuple[int, ...], n_classes: int) -> tuple[nn.Sequential, LDAReadout]:
    """The readout learners' features (random weights, see ``readout_features``) and their empty LDA readout."""
    features, width = readout_features(cfg, in_shape, n_classes)
    shrinkage = cfg.readout.shrinkage if cfg.readout is not None else cfg.backprop.slda_shrinkage
    estimator = cfg.readout.shrinkage_estimator if cfg.readout is not None else "fixed"
    return features, LDAReadout(width, n_classes, shrinkage, estimator)


def build_net(learner: Learner, cfg: Config, in_shape: tuple[int, ...], n_classes: int,
              device: torch.device | str = "cpu") -> nn.Sequential:
    """`learner`'s network on `device`, final: its rules, rates and initialisation set. A readout
    learner's is Sequential(features, LDAReadout)."""
    if learner.net == "readout":
        return nn.Sequential(*readout_model(cfg, in_shape, n_classes)).to(device)
    if learner.net == "conv-readout":  # the readout learners' network with [conv_lda] as its [readout] block
        return nn.Sequential(*readout_model(replace(cfg, readout=conv_lda_settings(cfg)), in_shape, n_classes)).to(device)
    if learner.net == "rff":
        return nn.Sequential(*randumb_model(cfg, in_shape, n_classes)).to(device)
    if learner.net == "plain":
        return build_model(cfg.model, None, in_shape, n_classes, cfg.backprop.dropout).to(device)
    if learner.net == "hybrid":
        stack = getattr(cfg.hybrid, learner.name.removeprefix("hybrid-").replace("-", "_"))
        return build_model(cfg.model, cfg.hebbian, in_shape, n_classes, cfg.hebbian.dropout, stack=stack).to(device)
    if learner.net == "unsupervised":
        u = cfg.unsupervised
        model = build_model(cfg.model, cfg.hebbian, in_shape, n_classes, u.dropout).to(device)
        *hidden, readout = [m for m in model.modules() if isinstance(m, HebbLayer)]
        args = {"softhebb": dict(temperature=u.temperature, q=u.q), "swta": dict(temperature=u.temperature)}.get(learner.rule, {})
        for layer in hidden:
            unsupervised_rule_(layer, learner.rule, u.eta[learner.rule], u.radius, **args)
        readout.eta = u.readout_eta
        if learner.rule == "wta":  # the teacher-neuron classifier (Hebbian WTA learning paper)
            readout.rule, readout.beta, readout.post = TeacherRule(), 0.0, None
        return model
    return build_model(cfg.model, cfg.hebbian, in_shape, n_classes, cfg.hebbian.dropout, plastic_hidden=learner.plastic).to(device)
