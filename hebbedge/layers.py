"""Hebbian layers with neuron-centric plasticity coefficients (thesis 4.2).

A layer owns its tensors: the weights W and momentum M (buffers, never autograd parameters), and
its coefficients C_pre, C_post (conv: also C_h, C_w), the only ``nn.Parameter``s, so
``model.parameters()`` is exactly what backprop may tune. The arithmetic of a step is in
``hebbedge.plasticity`` (the reference and its fast forms) and ``hebbedge.rules`` (the directions);
``HebbLayer.pending_form`` is the one place that chooses a form.

In training mode the forward pass runs with the pending update applied, W_eff = post(W + eta*C⊙M),
so the task loss reaches C through it; ``commit()`` then makes W_eff the new W, and ``learn()``
updates M from the cached input and output. With C frozen, ``apply_pending_()`` writes W_eff into W
before the forward pass, which then also learns: nothing needs W and W_eff side by side.

The frozen step of a linear layer may hold M in another form (``held``): as its two factors,
M = -g^T x, when beta = 0 (W_eff is then one GEMM into W and M's buffer is released), or multiplied
by C when beta > 0 (W_eff is then a plain add). ``momentum`` reads M from any form without changing
the layer; ``materialise_momentum_()`` turns the held form back into M.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hebbedge import plasticity as P
from hebbedge.fasthebb import conv_patches
from hebbedge.plasticity import Direction
from hebbedge.rules import ContrastiveRule, GradientRule, HebbianDescent, PatchRule, Rule

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, None: lambda u: u}
ACTIVATIONS_INPLACE = {"tanh": torch.tanh_, "relu": torch.relu_, None: lambda u: u}
POSTS = P.POSTS


class GradDirection(NamedTuple):
    """D = -dL/dW given by the layer's input x and dL/du at its pre-activation, not yet formed: a linear
    layer adds the rank-B product -g_u^T x into M by one GEMM."""

    x: torch.Tensor
    g_u: torch.Tensor


def _momentum_state_hook(module: "HebbLayer", state_dict: dict, prefix: str, local_metadata: dict) -> None:
    # A saved layer holds M itself whatever form the frozen step keeps it in, so run folders and
    # checkpoints read the same; computed here, not written back, so that saving changes nothing.
    if module.held != "dense":
        state_dict[prefix + "momentum"] = module.dense_momentum()


def _momentum_load_hook(module: "HebbLayer", state_dict: dict, prefix: str, *args) -> None:
    # Loading replaces M: drop the held form first, so that M's buffer has W's shape for the load's checks.
    module.drop_held_form()


class HebbLayer(nn.Module):
    """Shared machinery: the step's state and the choice of its form."""

    BLOCK_ELEMENTS = P.BLOCK_ELEMENTS  # (class attributes, so that tests can make blocks small)
    GRAD_BLOCK_ELEMENTS = P.GRAD_BLOCK_ELEMENTS

    weight: torch.Tensor
    bias: torch.Tensor | None
    bias_momentum: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: bool, activation: str | None, rule: Rule, eta: float, beta: float,
                 post: str | None, clip_value: float, plastic: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")
        if post not in POSTS:
            raise ValueError(f"unknown post-update normalisation {post!r}; expected one of {list(POSTS)}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"momentum beta must be in [0, 1), got {beta}")
        self.activation, self.rule = activation, rule
        self.eta, self.beta, self.post, self.clip_value = eta, beta, post, clip_value
        self.plastic = plastic  # False: the random-features control, W never changes
        self.fast = True  # False: every step takes the reference forms (HebbianLearner(fast=...))
        self.c_pre = nn.Parameter(torch.ones(self._n_pre(weight)))
        self.c_post = nn.Parameter(torch.ones(weight.shape[0]))
        self.held = "dense"  # the form M is in: "dense" (the buffer holds M), "factors" or "folded" (see held_form)
        self.register_buffer("weight", P.post_update(weight, post, clip_value).detach())
        self.register_buffer("momentum", torch.zeros_like(weight))
        self.register_buffer("bias", torch.zeros(weight.shape[0]) if bias else None)
        self.register_buffer("bias_momentum", torch.zeros(weight.shape[0]) if bias else None)
        # The held forms' tensors: buffers (so .to() moves them with M), not saved (the state holds M).
        for name in ("factor_g", "factor_x", "fold_c_post", "fold_c_pre"):
            self.register_buffer(name, None, persistent=False)
        self._register_state_dict_hook(_momentum_state_hook)
        self._register_load_state_dict_pre_hook(_momentum_load_hook, with_module=True)
        # The state of the step in progress:
        self.step_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None  # (W_eff, b_eff) of the forward, for commit
        self.in_place = False  # W_eff already sits in W (apply_pending_)
        self.learn_target: torch.Tensor | None = None  # labels to learn from during the forward pass (C frozen)
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, output) for learn()
        self.workspace: torch.Tensor | None = None  # the spare W-sized buffer of the fused C-training op
        self.dropped = False  # the last direction was not finite and was not taken

    # -- layer-specific pieces -------------------------------------------------------------------
    def _n_pre(self, weight: torch.Tensor) -> int:
        return weight.shape[1]

    def coefficient(self, rows: slice = slice(None), out: torch.Tensor | None = None) -> torch.Tensor:
        """C, shaped like W (eq. 4.31; conv: eq. 4.33), or the rows (output neurons) named."""
        raise NotImplementedError

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def weight_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> Direction:
        """dL/dW and dL/db from the input x and dL/du at the pre-activation (eq. 4.21-4.24)."""
        raise NotImplementedError

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The patches a ``PatchRule`` learns from, one per row."""
        raise NotImplementedError

    # -- the reference step, on this layer's tensors ---------------------------------------------
    @property
    def learns(self) -> bool:
        """Whether W changes: not for the random-features control (plastic False), nor with eta = 0."""
        return self.plastic and self.eta != 0

    def pending(self, weight: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
        """W_eff = post(W + eta * C ⊙ M) for a given W and M (thesis 4.3)."""
        return P.pending_weight(weight, momentum, self.coefficient(), self.eta, self.post, self.clip_value)

    def pending_bias(self) -> torch.Tensor | None:
        return P.pending_bias(self.bias, self.bias_momentum, self.c_post, self.eta)

    def respond(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """y = phi(op(x; w, b)): the layer's output for given weights."""
        return ACTIVATIONS[self.activation](self.linear_op(x, w, b))

    def direction(self, x: torch.Tensor, out: torch.Tensor, target: torch.Tensor | None) -> Direction:
        """The rule's D (and D_b) from the layer's input x and output `out` (a pure function of them and W)."""
        if isinstance(self.rule, GradientRule):
            g_w, g_b = self.weight_grad(x, self.rule.output_grad(out, target, self.activation))
            return -g_w, (None if g_b is None else -g_b)
        if isinstance(self.rule, PatchRule):
            return self.rule.update(self.patches(x), self.weight.flatten(1), target).view_as(self.weight), None
        raise TypeError(f"unknown kind of rule {self.rule!r}")

    # -- M and its held forms --------------------------------------------------------------------
    @property
    def momentum(self) -> torch.Tensor:
        """M. Reading never changes the layer: in the dense form this is M's buffer; while the frozen step
        holds M in another form, a tensor computed from it (to write into M, ``materialise_momentum_()`` first)."""
        buffers = self.__dict__.get("_buffers", {})
        if "momentum" not in buffers:  # (before __init__ registered it)
            raise AttributeError("momentum")
        return buffers["momentum"] if self.held == "dense" else self.dense_momentum()

    def dense_momentum(self) -> torch.Tensor:
        """M computed from its held form, as a new tensor."""
        if self.held == "factors":
            return P.momentum_from_factors(self.factor_g, self.factor_x)
        if self.held == "folded":
            return self._buffers["momentum"].div(self.fold_c_post[:, None]).div(self.fold_c_pre)
        return self._buffers["momentum"].clone()

    @torch.no_grad()
    def materialise_momentum_(self) -> None:
        """Turn the held form back into M in its buffer (a no-op in the dense form)."""
        if self.held == "factors":
            m = self._buffers["momentum"]
            if m.shape != self.weight.shape:  # (released while M was held as factors)
                self._buffers["momentum"] = m = torch.empty_like(self.weight)
            P.momentum_from_factors(self.factor_g, self.factor_x, out=m)
        elif self.held == "folded":
            P.unfold_(self._buffers["momentum"], self.fold_c_post, self.fold_c_pre, self.BLOCK_ELEMENTS)
        self.drop_held_form()

    def drop_held_form(self) -> None:
        """Forget the held form's tensors (M's buffer must already hold M, or be about to be overwritten)."""
        if self._buffers["momentum"].shape != self.weight.shape:
            self._buffers["momentum"] = torch.zeros_like(self.weight)
        self.factor_g = self.factor_x = self.fold_c_post = self.fold_c_pre = None
        self.held = "dense"

    # -- choosing the form ------------------------------------------------------------------------
    def pending_form(self) -> str:
        """How this step writes W_eff: the one place where a fast form is chosen (as torch.optim's
        ``foreach``/``fused`` flags choose the implementation of one update).

        "none"       the layer does not learn: W_eff is W itself, bit-exact
        "reference"  ``plasticity.pending_weight`` (always when ``fast`` is False)
        "fused"      C trains, linear layer with L2 post: ``plasticity.L2PendingLinear``
        "blocks"     C frozen (in place into W): ``plasticity.pending_weight_blocks_``
        "factors"    C frozen, M held as factors (linear, beta = 0): ``pending_weight_factored_``
        "folded"     C frozen, M's buffer holds C ⊙ M (linear, beta > 0): ``pending_weight_folded_``

        The momentum update's form follows from it (``update_momentum_``): held factors are made
        only by an in-place step with beta = 0, and C ⊙ M stays folded only while C is the one folded.
        """
        if not self.learns:
            return "none"
        c_trains = self.c_post.requires_grad or self.c_pre.requires_grad
        if not self.fast:
            return "reference"
        if not self.in_place:
            fused = isinstance(self, HebbLinear) and self.post == "l2" and torch.is_grad_enabled() and self.c_pre.requires_grad
            return "fused" if fused else "reference"
        if self.held == "factors":
            return "factors"
        # C ⊙ M only pays off for rules whose direction comes as factors: one that hands a dense D to
        # update_momentum_ would have C ⊙ M turned back into M at every step.
        # Not when some coefficient is 0: M could not be recovered from C ⊙ M.
        if (isinstance(self, HebbLinear) and self.beta != 0 and isinstance(self.rule, GradientRule) and not c_trains
                and bool(self.c_post.all()) and bool(self.c_pre.all())):
            return "folded"
        return "blocks"

    @torch.no_grad()
    def fold_momentum_(self) -> None:
        """Keep C ⊙ M in M's buffer (the "folded" form), unless it already holds it for this C."""
        c_post, c_pre = self.c_post.detach(), self.c_pre.detach()
        if self.held == "folded":
            if torch.equal(self.fold_c_post, c_post) and torch.equal(self.fold_c_pre, c_pre):
                return
            self.materialise_momentum_()
        P.fold_(self._buffers["momentum"], c_post, c_pre, self.BLOCK_ELEMENTS)
        self.fold_c_post, self.fold_c_pre, self.held = c_post.clone(), c_pre.clone(), "folded"

    # -- the step ---------------------------------------------------------------------------------
    def pending_op(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """The pre-activation with the pending update applied, and (W_eff, b_eff) for the commit."""
        form = self.pending_form()
        if form == "none":
            return self.linear_op(x, self.weight, self.bias), (self.weight, self.bias)
        self.materialise_momentum_()  # (C trains from here on: M in its plain form)
        b = self.pending_bias()
        if form == "fused":
            w, spare = self.weight, self.workspace
            if spare is None or (spare.shape, spare.dtype, spare.device) != (w.shape, w.dtype, w.device):
                self.workspace = spare = torch.empty_like(w)
            u = P.L2PendingLinear.apply(x, self.c_post, self.c_pre, w, self.momentum, self.eta, spare,
                                        self.BLOCK_ELEMENTS, self.GRAD_BLOCK_ELEMENTS)
            return (u if b is None else u + b), (spare, b)
        w_eff = self.pending(self.weight, self.momentum)
        return self.linear_op(x, w_eff, b), (w_eff, b)

    @torch.no_grad()
    def apply_pending_(self, target: torch.Tensor | None = None) -> None:
        """W <- post(W + eta * C ⊙ M) in place, for a step with C frozen; the next training-mode forward
        uses W as W_eff and ``commit()`` keeps it.

        With `target`, that forward also runs the local rule as soon as the layer's output exists
        (``learn``): nothing later needs the activations, so no layer's are kept past its own.
        """
        self.in_place = True
        form = self.pending_form()
        w, post, clip = self.weight, self.post, self.clip_value
        if form == "factors":
            P.pending_weight_factored_(w, self.factor_g, self.factor_x, self.c_post, self.c_pre, self.eta, post, clip)
        elif form == "folded":
            self.fold_momentum_()
            P.pending_weight_folded_(w, self._buffers["momentum"], self.eta, post, clip)
        elif form == "blocks":
            self.materialise_momentum_()
            P.pending_weight_blocks_(w, w, self.momentum, self.coefficient, self.eta, post, clip, self.BLOCK_ELEMENTS)
        elif form == "reference":
            self.materialise_momentum_()
            w.copy_(self.pending(w, self.momentum))
        if form != "none" and self.bias is not None:
            self.bias.copy_(self.pending_bias())
        self.step_weights, self.learn_target = (self.weight, self.bias), target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.respond(x, self.weight, self.bias)
        if self.in_place:  # (C frozen: the activation may overwrite the pre-activation)
            y = ACTIVATIONS_INPLACE[self.activation](self.linear_op(x, self.weight, self.bias))
        else:
            u, self.step_weights = self.pending_op(x)
            y = ACTIVATIONS[self.activation](u)
        self.cached = (x.detach(), y.detach())
        if self.learn_target is not None:
            self.learn(self.learn_target)
            self.learn_target = None
        return y

    @torch.no_grad()
    def commit(self) -> None:
        """W <- W_eff.detach(): the pending update becomes part of the weights."""
        if self.step_weights is None:
            raise RuntimeError("commit() needs a training-mode forward pass first")
        if not self.in_place:
            w, b = self.step_weights
            if w is self.workspace:
                # The fused op wrote W_eff into the spare buffer: swap instead of copying.
                self.workspace, self._buffers["weight"] = self.weight, w
            elif w is not self.weight:
                self.weight.copy_(P.commit(w))
            if b is not None and b is not self.bias:
                self.bias.copy_(P.commit(b))
        self.step_weights, self.in_place = None, False

    @torch.no_grad()
    def learn(self, target: torch.Tensor | None) -> None:
        """M <- beta * M + D from the cached input and output of this batch (nothing when the layer does
        not learn); sets ``dropped`` when D was not finite. Frees the cache."""
        x, out = self.cached
        self.cached = None
        if not self.learns:
            self.dropped = False
            return
        if isinstance(self.rule, GradientRule):
            direction = GradDirection(x, self.rule.output_grad(out, target, self.activation))
        else:
            direction = self.direction(x, out, target)
        self.dropped = not self.update_momentum_(direction)

    @torch.no_grad()
    def update_momentum_(self, direction: Direction | GradDirection) -> bool:
        """M <- beta * M + D (``plasticity.momentum_update``, in place): every momentum update of the layer
        goes through here. A non-finite D is dropped rather than let into M: returns False, M unchanged."""
        if isinstance(direction, GradDirection):
            g_w, g_b = self.weight_grad(*direction)
            direction = (-g_w, None if g_b is None else -g_b)
        if not P.is_finite(direction):
            return False
        self.materialise_momentum_()
        d_w, d_b = direction
        self._buffers["momentum"].mul_(self.beta).add_(d_w)  # (in place: the values of momentum_update)
        if d_b is not None:
            self.bias_momentum.mul_(self.beta).add_(d_b)
        return True

    def row_blocks(self, elements: int | None = None) -> list[slice]:
        """W's output neurons in blocks of about `elements` (default BLOCK_ELEMENTS) weights each."""
        return P.row_blocks(self.weight, elements or self.BLOCK_ELEMENTS)

    def free_workspace(self) -> None:
        """Drop the buffer that only the C-training step uses."""
        self.workspace = None

    def extra_repr(self) -> str:
        return (f"activation={self.activation}, rule={self.rule}, eta={self.eta}, beta={self.beta}, "
                f"post={self.post}, bias={self.bias is not None}, plastic={self.plastic}")


class HebbLinear(HebbLayer):
    """y = phi(x W^T + b); W is [out_features, in_features] as in ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, activation: str | None = "tanh", rule: Rule | None = None,
                 eta: float = 1e-3, beta: float = 0.9, post: str | None = "l2", clip_value: float = 10.0,
                 bias: bool = False, plastic: bool = True) -> None:
        w = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Linear's initialisation
        if rule is None:
            rule = HebbianDescent() if activation is None else ContrastiveRule()
        super().__init__(w, bias, activation, rule, eta, beta, post, clip_value, plastic)
        self.in_features, self.out_features = in_features, out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + super().extra_repr()

    def coefficient(self, rows: slice = slice(None), out: torch.Tensor | None = None) -> torch.Tensor:
        return P.linear_coefficient(self.c_post, self.c_pre, rows, out)

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)

    def weight_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> Direction:
        return P.linear_weight_grad(x, g_u, self.bias is not None)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def update_momentum_(self, direction: Direction | GradDirection) -> bool:
        # D = -g_u^T x has rank B: added into M (or C ⊙ M) by one GEMM, never formed. Every entry of the
        # product is bounded by B * max|g_u| * max|x|, so when that bound is finite (and below half the
        # dtype's range) D is finite too; otherwise D is formed and checked.
        if not (self.fast and isinstance(direction, GradDirection)):
            return super().update_momentum_(direction)
        x, g_u = direction
        bound = g_u.abs().amax() * x.abs().amax() * x.shape[0]
        if not bool(bound < torch.finfo(x.dtype).max / 2):
            return super().update_momentum_(direction)
        if self.beta == 0 and self.in_place:
            # C frozen, no momentum: M = D stays as its factors and M's buffer is released (the step then
            # holds W alone). x is copied: the first layer's x is the caller's batch, which it may reuse.
            self.factor_g, self.factor_x, self.held = g_u, x.clone(), "factors"
            self._buffers["momentum"] = self.weight.new_empty(0)
        elif self.held == "folded":
            P.momentum_update_folded_(self._buffers["momentum"], g_u, x, self.fold_c_post, self.fold_c_pre, self.beta)
        else:
            self.materialise_momentum_()
            P.momentum_update_gemm_(self._buffers["momentum"], g_u, x, self.beta)
        if self.bias is not None:
            self.bias_momentum.mul_(self.beta).sub_(g_u.sum(0))
        return True


class HebbConv2d(HebbLayer):
    """y = phi(conv2d(x, W) + b) with C = C_pre x C_post x C_h x C_w (eq. 4.33).

    With groups > 1, C_pre still has one entry per input channel: weight[o, i] connects output
    channel o to input channel (o // (out/groups)) * (in/groups) + i.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, activation: str | None = "tanh",
                 rule: Rule | None = None, eta: float = 1e-4, beta: float = 0.9, post: str | None = "clip",
                 clip_value: float = 10.0, bias: bool = False, plastic: bool = True) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        pair = nn.modules.utils._pair
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation, self.groups = pair(padding), pair(dilation), groups
        self.in_channels, self.out_channels = in_channels, out_channels
        w = torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Conv2d's initialisation
        super().__init__(w, bias, activation, rule or ContrastiveRule(), eta, beta, post, clip_value, plastic)
        self.c_h = nn.Parameter(torch.ones(self.kernel_size[0]))
        self.c_w = nn.Parameter(torch.ones(self.kernel_size[1]))

    def _n_pre(self, weight: torch.Tensor) -> int:
        return weight.shape[1] * self.groups

    def coefficient(self, rows: slice = slice(None), out: torch.Tensor | None = None) -> torch.Tensor:
        return P.conv_coefficient(self.c_post, self.c_pre, self.c_h, self.c_w, self.groups, rows, out)

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def weight_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> Direction:
        return P.conv_weight_grad(x, g_u, self.weight.shape, self.stride, self.padding, self.dilation, self.groups,
                                  self.bias is not None)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups != 1:
            raise ValueError(f"{type(self.rule).__name__} supports conv layers with groups=1")
        return conv_patches(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, " + super().extra_repr())
