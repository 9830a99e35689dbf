"""Multilayer SoftHebb (Hebbian Deep Learning Without Feedback): its conv network, greedy layer-wise training, and a linear head.

Each layer is BatchNorm without trained affine parameters -> a HebbConv2d learning by
`SoftHebbRule` (soft WTA with soft anti-Hebbian plasticity and the norm-dependent rate) -> pooling
-> Triangle activation (appendix A.3's order; Table 4's, Triangle then pooling, is `order="triangle-pool"`;
all three columns of Table 4; hyperparameters of Table 3). Layers are trained
one after the other, one epoch each, without labels; a linear classifier on the last layer's
output is then trained by backprop with cross-entropy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from hebbedge.layers import HebbLayer
from hebbedge.nets import SOFTHEBB_ORDERS, Triangle, softhebb_block, unsupervised_epoch  # noqa: F401  (Triangle: part of the protocol's API)
from hebbedge.rules import SoftHebbRule
from hebbedge.benchmarks.semisup import embed, linear_probe

# One row per layer of Table 4: (kernel, pooling). Pooling "max" is 4x4 stride 2, "avg" is 2x2 stride 2.
ARCHITECTURES = {
    "mnist-cifar": ((5, "max"), (3, "max"), (3, "avg")),
    "stl10": ((5, "max"), (3, "max"), (3, "max"), (3, "avg")),
    "imagenet": ((5, "max"), (3, "max"), (3, "max"), (3, "max"), (5, "avg")),
}
FIRST_WIDTH = {"mnist-cifar": 96, "stl10": 96, "imagenet": 48}  # appendix A.3: 48 kernels for ImageNet only
# Per layer (1/temperature, eta, Triangle power), Table 3. The paper searched three layers only; deeper
# layers reuse the third row, as the authors' STL-10 preset does for its fourth layer.
HYPERPARAMETERS = ((1.0, 0.08, 0.7), (0.65, 0.005, 1.4), (0.25, 0.01, 1.0))


@dataclass(frozen=True)
class Schedule:
    """The batch of the label-free epochs and how the linear head is trained (Adam, batch 64)."""
    batch_size: int
    probe_epochs: int
    probe_lr: float
    probe_dropout: float
    halve_at: tuple[float, ...]  # fractions of the head's epochs at which its rate is halved


SCHEDULES = {
    # Appendix A.6.1-A.6.2: label-free batch 10 (MNIST); the head 50 epochs from 1e-3, halved at 20, 35,
    # 50, ... 90 % of them; dropout 0.5 on its input (A.4, and the authors' demo.py).
    "paper": Schedule(10, 50, 1e-3, 0.5, (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)),
    # The shorter CPU setting this repository ran first: about half the paper's time.
    "quick": Schedule(64, 20, 1e-2, 0.0, ()),
}


def layer_widths(arch: str, width_factor: int) -> list[int]:
    """#F_l = f_w · #F_(l-1) (appendix A.5), from the first layer's width."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown SoftHebb architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    return [FIRST_WIDTH[arch] * width_factor**k for k in range(len(ARCHITECTURES[arch]))]


def softhebb_net(in_channels: int = 1, width_factor: int = 4, radius: float = 3.0, arch: str = "mnist-cifar",
                 order: str = "pool-triangle", normalise: str = "mean") -> nn.Sequential:
    """The SoftHebb feature network of one Table 4 column (without the classifier), as one Sequential of
    blocks; `order` and `normalise` as in `softhebb_block`."""
    blocks, n_in = [], in_channels
    for k, (n_out, (kernel, pool)) in enumerate(zip(layer_widths(arch, width_factor), ARCHITECTURES[arch])):
        blocks.append(softhebb_block(n_in, n_out, kernel, pool, *HYPERPARAMETERS[min(k, len(HYPERPARAMETERS) - 1)], radius,
                                     order=order, normalise=normalise))
        n_in = n_out
    return nn.Sequential(*blocks, nn.Flatten())


def train_greedy(net: nn.Sequential, x: torch.Tensor, batch_size: int = 64, seed: int = 0, progress: bool = True) -> None:
    """Layer by layer, one epoch each, no labels: only the current block learns (and its BatchNorm
    statistics); the blocks below it are fixed."""
    g = torch.Generator().manual_seed(seed)
    for k in range(len(net) - 1):
        unsupervised_epoch(net[k], x, g, batch_size, below=net[:k].eval(), desc=f"SoftHebb layer {k + 1}", progress=progress)
    net.eval()


def n_parameters(net: nn.Module) -> int:
    return sum(m.weight.numel() for m in net.modules() if isinstance(m, HebbLayer))


@torch.no_grad()
def fit_batchnorm(net: nn.Sequential, x: torch.Tensor, batch_size: int = 500) -> None:
    """Running statistics of every BatchNorm on x, with no plasticity: what the random-weights
    control needs so that it differs from the trained net only in its weights."""
    net.train()
    for layer in net.modules():
        if isinstance(layer, HebbLayer):
            layer.training = False  # eval mode for the Hebbian layers: committed weights, no caching
    for i in range(0, len(x), batch_size):
        net(x[i:i + batch_size])
    net.eval()


def check_settings(schedule: str = "paper", arch: str = "mnist-cifar", order: str = "pool-triangle",
                   normalise: str = "mean", batch_size: int | None = None, radius: float = 3.0) -> None:
    """ValueError naming what was expected for the first of `run`'s settings that is invalid, so that a
    caller can refuse them before loading any data."""
    for flag, value, valid in (("--schedule", schedule, SCHEDULES), ("--arch", arch, ARCHITECTURES),
                               ("--order", order, SOFTHEBB_ORDERS), ("--normalise", normalise, SoftHebbRule.NORMALISE)):
        if value not in valid:
            raise ValueError(f"unknown {flag} {value!r}; valid: {', '.join(valid)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be a positive number of images, got {batch_size}")
    if not radius > 0:  # (NaN too)
        raise ValueError(f"--radius must be positive (the initial weights' expected row norm), got {radius}")


def run(data: tuple[torch.Tensor, ...], width_factor: int = 4, schedule: str = "paper", seed: int = 0,
        progress: bool = True, arch: str = "mnist-cifar", probe_epochs: int | None = None, batch_size: int | None = None,
        order: str = "pool-triangle", normalise: str = "mean", radius: float = 3.0) -> dict:
    """Greedy SoftHebb training, then a linear head; the same head on the random-weights net is the
    control. `probe_epochs` and `batch_size` (label-free) override the schedule's; `order`, `normalise`
    and `radius` build the net (`softhebb_net`). The record holds each head's test accuracy per epoch
    (`*_curve`)."""
    check_settings(schedule, arch, order, normalise, batch_size, radius)
    s = SCHEDULES[schedule]
    epochs = s.probe_epochs if probe_epochs is None else probe_epochs
    batch_size = s.batch_size if batch_size is None else batch_size
    x, y, x_test, y_test = data
    torch.manual_seed(seed)
    net = softhebb_net(x.shape[1], width_factor, radius, arch, order, normalise)
    control = copy.deepcopy(net)
    train_greedy(net, x, batch_size=batch_size, seed=seed, progress=progress)
    fit_batchnorm(control, x)
    out = {"arch": arch, "width_factor": width_factor, "train_samples": len(x), "schedule": schedule,
           "batch_size": batch_size, "order": order, "normalise": normalise, "radius": radius, "probe_epochs": epochs,
           "probe_lr": s.probe_lr, "probe_dropout": s.probe_dropout, "halve_at": list(s.halve_at), "seed": seed,
           "hebbian_weights": n_parameters(net)}
    for name, model in (("softhebb", net), ("random", control)):
        curve: list[float] = []
        features = [embed(model, images, desc=f"{name} features", progress=progress) for images in (x, x_test)]
        out[f"{name}_test_acc"] = linear_probe((features[0], y), (features[1], y_test), epochs, s.probe_lr, seed,
                                               dropout=s.probe_dropout, halve_at=s.halve_at, curve=curve, progress=progress)
        out[f"{name}_curve"] = curve
    return out
