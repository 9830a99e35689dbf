"""Hebbian layers with neuron-centric plasticity coefficients (thesis 4.2).

A layer owns its weights W and momentum buffer M as buffers (never autograd parameters) and its
coefficients C_pre, C_post (conv: also C_h, C_w) as the only ``nn.Parameter``s, so
``model.parameters()`` is exactly what backprop may tune.

In training mode the forward pass runs with the pending update applied,
W_eff = post(W + eta * C * M) (thesis 4.3, single forward pass), so the task loss reaches C
through it; ``commit()`` then makes W_eff the new W. In eval mode the committed W is used.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

from hebbedge.rules import ContrastiveRule, Direction, HebbianDescent, Rule

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, None: lambda u: u}
POSTS = ("l2", "clip", None)


class HebbLayer(nn.Module):
    """Shared machinery: pending update, commit, momentum, post-update normalisation."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    momentum: torch.Tensor
    bias_momentum: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor,
        bias: bool,
        activation: str | None,
        rule: Rule,
        eta: float,
        beta: float,
        post: str | None,
        clip_value: float,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")
        if post not in POSTS:
            raise ValueError(f"unknown post-update normalisation {post!r}; expected one of {list(POSTS)}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"momentum beta must be in [0, 1), got {beta}")
        self.activation, self.rule = activation, rule
        self.eta, self.beta, self.post, self.clip_value = eta, beta, post, clip_value
        self.c_pre = nn.Parameter(torch.ones(self._n_pre(weight)))
        self.c_post = nn.Parameter(torch.ones(weight.shape[0]))
        with torch.no_grad():
            self.register_buffer("weight", self.normalise(weight))
        self.register_buffer("momentum", torch.zeros_like(weight))
        self.register_buffer("bias", torch.zeros(weight.shape[0]) if bias else None)
        self.register_buffer("bias_momentum", torch.zeros(weight.shape[0]) if bias else None)
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- layer-specific pieces -------------------------------------------------------------------
    def _n_pre(self, weight: torch.Tensor) -> int:
        return weight.shape[1]

    def coefficient(self) -> torch.Tensor:
        """C, shaped like W (eq. 4.31; conv: eq. 4.33)."""
        raise NotImplementedError

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def local_weight_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> Direction:
        """dL/dW and dL/db from the input x and dL/du at the pre-activation (eq. 4.21-4.24)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def normalise(self, w: torch.Tensor) -> torch.Tensor:
        """Post-update normalisation: unit L2 norm per output neuron, or clipping."""
        if self.post == "l2":
            # Multiplying by the reciprocal is cheaper to differentiate than a division.
            inv = w.flatten(1).norm(dim=1).clamp_min(1e-12).reciprocal()
            return w * inv.view(-1, *([1] * (w.dim() - 1)))
        if self.post == "clip":
            return w.clamp(-self.clip_value, self.clip_value)
        return w

    def pending(self, weight: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
        """W_eff = post(W + eta * C * M) as a pure function of W and M (thesis 4.3)."""
        return self.normalise(torch.addcmul(weight, self.coefficient(), momentum, value=self.eta))

    def pending_weight(self) -> torch.Tensor:
        """The layer's own weights with the pending update applied."""
        return self.pending(self.weight, self.momentum)

    def respond(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """y = phi(op(x; w, b)): the layer's output for given weights."""
        return ACTIVATIONS[self.activation](self.linear_op(x, w, b))

    def effective_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pending weight and bias, differentiable with respect to C."""
        if self.eta == 0:  # no plasticity: W stays bit-exact (the random-features control)
            return self.weight, self.bias
        w = self.pending_weight()
        b = None
        if self.bias is not None:
            b = self.bias + self.eta * self.c_post * self.bias_momentum
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            w, b = self._pending = self.effective_weight()
        else:
            w, b = self.weight, self.bias
        y = self.respond(x, w, b)
        if self.training:
            self.cached = (x.detach(), y.detach())
        return y

    @torch.no_grad()
    def commit(self) -> None:
        """W <- W_eff.detach(): the pending update becomes part of the weights."""
        if self._pending is None:
            raise RuntimeError("commit() needs a training-mode forward pass first")
        w, b = self._pending
        self.weight.copy_(w)
        if b is not None:
            self.bias.copy_(b)
        self._pending = None

    @torch.no_grad()
    def accumulate(self, direction: Direction) -> None:
        """M <- beta * M + D (beta = 0 is the thesis' "without momentum" variant, M = D)."""
        d_w, d_b = direction
        self.momentum.mul_(self.beta).add_(d_w)
        if d_b is not None:
            self.bias_momentum.mul_(self.beta).add_(d_b)

    def extra_repr(self) -> str:
        return (f"activation={self.activation}, rule={self.rule}, eta={self.eta}, beta={self.beta}, "
                f"post={self.post}, bias={self.bias is not None}")


class _L2PendingUpdate(torch.autograd.Function):
    """W_eff = rownorm(W + eta * (c_post c_pre^T) * M) for linear layers, fused.

    Same value and C-gradients as the generic autograd path (the tests check both in float64),
    with about half the passes over the [out, in] matrices, which dominate a CPU step.
    """

    @staticmethod
    def forward(ctx, w, m, c_post, c_pre, eta):
        v = m * c_pre
        v.mul_(c_post[:, None] * eta).add_(w)
        inv = v.norm(dim=1, keepdim=True).clamp_min_(1e-12).reciprocal_()
        v.mul_(inv)
        ctx.save_for_backward(v, inv, m, c_post, c_pre)
        ctx.eta = eta
        return v

    @staticmethod
    def backward(ctx, g):
        w_eff, inv, m, c_post, c_pre = ctx.saved_tensors
        # d(V/|V|) = (g - W_eff (g . W_eff)) / |V| per row; then dV/dC = eta * M, split over the outer product.
        row_dot = torch.einsum("oi,oi->o", g, w_eff)[:, None]
        dv_m = torch.addcmul(g, w_eff, row_dot, value=-1).mul_(inv).mul_(m)
        return None, None, ctx.eta * (dv_m @ c_pre), ctx.eta * (c_post @ dv_m), None


class HebbLinear(HebbLayer):
    """y = phi(x W^T + b); W is [out_features, in_features] as in ``nn.Linear``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | None = "tanh",
        rule: Rule | None = None,
        eta: float = 1e-3,
        beta: float = 0.9,
        post: str | None = "l2",
        clip_value: float = 10.0,
        bias: bool = False,
    ) -> None:
        w = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Linear's initialisation
        if rule is None:
            rule = HebbianDescent() if activation is None else ContrastiveRule()
        super().__init__(w, bias, activation, rule, eta, beta, post, clip_value)
        self.in_features, self.out_features = in_features, out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + super().extra_repr()

    def coefficient(self) -> torch.Tensor:
        return torch.outer(self.c_post, self.c_pre)

    def pending(self, weight: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
        # The fused function only pays off when C is being trained; the plain ops also trace to ONNX.
        if self.post == "l2" and torch.is_grad_enabled() and self.c_pre.requires_grad:
            return _L2PendingUpdate.apply(weight, momentum, self.c_post, self.c_pre, self.eta)
        return super().pending(weight, momentum)

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)

    def local_weight_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> Direction:
        return g_u.T @ x, (g_u.sum(0) if self.bias is not None else None)


class HebbConv2d(HebbLayer):
    """y = phi(conv2d(x, W) + b) with C = C_pre x C_post x C_h x C_w (eq. 4.33).

    With groups > 1, C_pre still has one entry per input channel: weight[o, i] connects output
    channel o to input channel (o // (out/groups)) * (in/groups) + i.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        activation: str | None = "tanh",
        rule: Rule | None = None,
        eta: float = 1e-4,
        beta: float = 0.9,
        post: str | None = "clip",
        clip_value: float = 10.0,
        bias: bool = False,
    ) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        pair = nn.modules.utils._pair
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation, self.groups = pair(padding), pair(dilation), groups
        self.in_channels, self.out_channels = in_channels, out_channels
        w = torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Conv2d's initialisation
        super().__init__(w, bias, activation, rule or ContrastiveRule(), eta, beta, post, clip_value)
        self.c_h = nn.Parameter(torch.ones(self.kernel_size[0]))
        self.c_w = nn.Parameter(torch.ones(self.kernel_size[1]))

    def _n_pre(self, weight: torch.Tensor) -> int:
        return weight.shape[1] * self.groups

    def coefficient(self) -> torch.Tensor:
        out_per_group = self.out_channels // self.groups
        c_pre = self.c_pre.view(self.groups, 1, -1).expand(-1, out_per_group, -1).reshape(self.out_channels, -1)
        c = self.c_post[:, None] * c_pre
        return c[:, :, None, None] * self.c_h[None, None, :, None] * self.c_w[None, None, None, :]

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def local_weight_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> Direction:
        # Thesis 4.1.2: conv2d_weight honours stride, padding, dilation and groups. It calls an op the
        # ONNX exporter cannot trace, so an export takes the equivalent im2col form instead.
        if torch.onnx.is_in_onnx_export():
            g_w = self._weight_grad_unfold(x, g_u)
        else:
            g_w = conv2d_weight(x, self.weight.shape, g_u, self.stride, self.padding, self.dilation, self.groups)
        return g_w, (g_u.sum((0, 2, 3)) if self.bias is not None else None)

    def _weight_grad_unfold(self, x: torch.Tensor, g_u: torch.Tensor) -> torch.Tensor:
        """dL/dW = sum over batch and positions of g_u[b, o, l] * patch[b, (i, kh, kw), l], per group."""
        b, g = x.shape[0], self.groups
        patches = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # [B, I*kh*kw, L]
        patches = patches.view(b, g, patches.shape[1] // g, -1)
        grads = g_u.flatten(2).view(b, g, self.out_channels // g, -1)  # [B, G, O/G, L]
        return torch.einsum("bgol,bgkl->gok", grads, patches).reshape(self.weight.shape)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, " + super().extra_repr())
