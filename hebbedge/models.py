"""The thesis architectures, as Hebbian networks or as their plain-PyTorch backprop twins.

``hebbian=True`` builds HebbLinear/HebbConv2d layers (weights changed only by local rules);
``hebbian=False`` builds the same graph from nn.Linear/nn.Conv2d for end-to-end backprop.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hebbedge.layers import HebbConv2d, HebbLayer, HebbLinear
from hebbedge.rules import ContrastiveRule

_TORCH_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _check_activation(activation: str) -> None:
    if activation not in _TORCH_ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {list(_TORCH_ACTIVATIONS)}")


def _dense(n_in: int, n_out: int, activation: str | None, hebbian: bool, eta: float, beta: float, label_smoothing: float,
           plastic: bool = True) -> list[nn.Module]:
    if hebbian:
        rule = ContrastiveRule(label_smoothing) if activation is not None else None
        return [HebbLinear(n_in, n_out, activation, rule=rule, eta=eta, beta=beta, post="l2", plastic=plastic)]
    layers: list[nn.Module] = [nn.Linear(n_in, n_out, bias=False)]
    return layers + ([_TORCH_ACTIVATIONS[activation]()] if activation else [])


def _conv(n_in: int, n_out: int, kernel: int, activation: str, hebbian: bool, eta: float, beta: float, label_smoothing: float,
          plastic: bool = True) -> list[nn.Module]:
    if hebbian:
        return [HebbConv2d(n_in, n_out, kernel, padding=kernel // 2, activation=activation,
                           rule=ContrastiveRule(label_smoothing), eta=eta, beta=beta, post="clip", plastic=plastic)]
    return [nn.Conv2d(n_in, n_out, kernel, padding=kernel // 2, bias=False), _TORCH_ACTIVATIONS[activation]()]


def thesis_linear(
    in_features: int = 784,
    widths: tuple[int, ...] = (2000, 2000, 2000, 2000),
    n_classes: int = 10,
    activation: str = "tanh",
    dropout: float = 0.0,
    hebbian: bool | tuple[bool, ...] = True,
    eta: float = 1e-3,
    beta: float = 0.9,
    label_smoothing: float = 0.0,
    plastic_hidden: bool = True,
) -> nn.Sequential:
    """The thesis linear net (ch. 5.3.1): hidden tanh layers of 2000, then the output layer.

    `hebbian` may name each layer (hidden ones, then the output): a hybrid stack (*Hebbian learning
    algorithms for training convolutional neural networks*) mixes Hebbian layers with plain ones
    trained by backprop. `plastic_hidden` False builds the random-features control: the hidden
    Hebbian layers never learn, the output layer does.
    """
    _check_activation(activation)
    per_layer = (hebbian,) * (len(widths) + 1) if isinstance(hebbian, bool) else tuple(hebbian)
    if len(per_layer) != len(widths) + 1:
        raise ValueError(f"hebbian needs one flag per layer ({len(widths)} hidden + output), got {len(per_layer)}")
    layers: list[nn.Module] = [nn.Flatten()]
    sizes = (in_features, *widths)
    for n_in, n_out, hebb in zip(sizes[:-1], sizes[1:], per_layer):
        layers += _dense(n_in, n_out, activation, hebb, eta, beta, label_smoothing, plastic_hidden)
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers += _dense(sizes[-1], n_classes, None, per_layer[-1], eta, beta, label_smoothing)
    return nn.Sequential(*layers)


def thesis_conv(
    in_channels: int = 1,
    image_size: int = 28,
    width_factor: int = 4,
    n_classes: int = 10,
    activation: str = "tanh",
    dropout: float = 0.0,
    hebbian: bool = True,
    eta_conv: float = 1e-4,
    eta_linear: float = 1e-3,
    beta: float = 0.9,
    label_smoothing: float = 0.0,
    plastic_hidden: bool = True,
) -> nn.Sequential:
    """The thesis conv net (ch. 6.2): SoftHebb's conv stack without BatchNorm, two hidden FC layers.
    `plastic_hidden` False builds the random-features control (as in ``thesis_linear``).

    Conv stack (SoftHebb, *Hebbian deep learning without feedback*, Table 4): 5x5 conv96 -> 4x4 max-pool /2 -> 3x3 conv(96 f)
    -> 4x4 max-pool /2 -> 3x3 conv(96 f^2) -> 2x2 avg-pool /2, f the width factor. Each hidden FC
    layer divides its input size by 4, capped at 1024 (thesis Fig. 6.9). Dropout, when set, follows
    the conv layers only (thesis 6.2).
    """
    _check_activation(activation)
    if width_factor not in (1, 2, 4):
        raise ValueError(f"width_factor must be 1, 2 or 4, got {width_factor}")
    channels = (in_channels, 96, 96 * width_factor, 96 * width_factor**2)
    kernels = (5, 3, 3)
    pools = (MaxPool2d(4, 2, padding=1), MaxPool2d(4, 2, padding=1), nn.AvgPool2d(2, 2))
    layers: list[nn.Module] = []
    for n_in, n_out, k, pool in zip(channels[:-1], channels[1:], kernels, pools):
        layers += _conv(n_in, n_out, k, activation, hebbian, eta_conv, beta, label_smoothing, plastic_hidden)
        layers.append(pool)
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Flatten())
    with torch.no_grad():
        n_features = nn.Sequential(*layers).eval()(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
    fc1 = min(n_features // 4, 1024)
    fc2 = min(fc1 // 4, 1024)
    for n_in, n_out in ((n_features, fc1), (fc1, fc2)):
        layers += _dense(n_in, n_out, activation, hebbian, eta_linear, beta, label_smoothing, plastic_hidden)
    layers += _dense(fc2, n_classes, None, hebbian, eta_linear, beta, label_smoothing)
    return nn.Sequential(*layers)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed in channels-last memory format on the CPU when no gradient flows
    through it (same values, same output layout): PyTorch's NCHW CPU kernel is far slower for
    overlapping windows, even counting the two layout conversions. With autograd the layout copy would be saved for the backward, so
    backprop (and C training) keep PyTorch's own path, as a plain PyTorch net has it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(out_size)`` for square inputs of a known size, as two matrix products over the
    same windows (rows floor(i*n/m) to ceil((i+1)*n/m)). The op itself has no ONNX export when m does not
    divide n; matrix products always do."""

    matrix: torch.Tensor

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        if not 0 < out_size <= in_size:
            raise ValueError(f"pooling {in_size} positions to {out_size} needs 0 < out_size <= in_size")
        p = torch.zeros(out_size, in_size)
        for i in range(out_size):
            start, end = i * in_size // out_size, -(-(i + 1) * in_size // out_size)
            p[i, start:end] = 1.0 / (end - start)
        self.register_buffer("matrix", p, persistent=False)  # derived from the sizes: not part of the state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.matrix.to(x.dtype)
        return p @ x @ p.T

    def extra_repr(self) -> str:
        return f"in_size={self.matrix.shape[1]}, out_size={self.matrix.shape[0]}"


def random_features_(model: nn.Module) -> nn.Module:
    """Make a built `model` its own random-features control (``plastic_hidden=False`` builds it so):
    every Hebbian layer but the readout stops learning (W_eff = W, and no local rule runs), so the
    hidden weights stay at their random initialisation while the readout learns with the same rule."""
    *hidden, _ = [m for m in model.modules() if isinstance(m, HebbLayer)]
    for layer in hidden:
        layer.plastic = False
    return model


def softhebb_init_(weight: torch.Tensor, radius: float) -> None:
    """SoftHebb's initialisation (*Hebbian deep learning without feedback*, A.1): normal weights whose expected row norm is `radius`
    (E|w| = sigma sqrt(2/pi), so sigma = radius / sqrt(N * 2/pi)); above 2.5 every neuron learns."""
    n = weight[0].numel()
    with torch.no_grad():
        weight.normal_(0.0, radius / math.sqrt(n * 2 / math.pi))
