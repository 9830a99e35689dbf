"""Hebbian layers with neuron-centric plasticity coefficients (thesis 4.2).

A layer owns its weights W and momentum buffer M as buffers (never autograd parameters) and its
coefficients C_pre, C_post (conv: also C_h, C_w) as the only ``nn.Parameter``s, so
``model.parameters()`` is exactly what backprop may tune.

In training mode the forward pass runs with the pending update applied,
W_eff = post(W + eta * C * M) (thesis 4.3, single forward pass), so the task loss reaches C
through it; ``commit()`` then makes W_eff the new W. In eval mode the committed W is used.
With C frozen nothing needs W and W_eff side by side: ``apply_pending_()`` writes W_eff into W
before the forward pass, and the commit has nothing left to do. A linear layer with C frozen keeps
M in a cheaper form: without momentum (beta = 0) as its two factors, M = -g^T x, applied as one
GEMM into W; with momentum as C * M, so that W_eff is a plain add. Reading ``momentum`` writes M
out (see ``HebbLayer.momentum``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

from hebbedge.rules import ContrastiveRule, Direction, GradientRule, HebbianDescent, Rule

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, None: lambda u: u}
ACTIVATIONS_INPLACE = {"tanh": torch.tanh_, "relu": torch.relu_, None: lambda u: u}
POSTS = ("l2", "clip", None)


def _inverse_row_norm(w: torch.Tensor) -> torch.Tensor:
    """1 / |w_o| per output neuron o, shaped to broadcast over w."""
    return w.flatten(1).norm(dim=1).clamp_min(1e-12).reciprocal().view(-1, *([1] * (w.dim() - 1)))


class HebbLayer(nn.Module):
    """Shared machinery: pending update, commit, momentum, post-update normalisation."""

    BLOCK_ELEMENTS = 2**18  # 1 MB of float32 per block of rows (write_pending_): about an L2 cache
    # The C-training op's backward takes G = g^T x in blocks of 8 MB: with K = batch small, a GEMM on a few
    # hundred rows runs far slower than a whole-matrix one (2-core CPU, MKL), one on a thousand rows almost
    # as fast.
    GRAD_BLOCK_ELEMENTS = 2**21

    weight: torch.Tensor
    bias: torch.Tensor | None
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
        # The frozen-C step of a linear layer keeps M in another form (HebbLinear.write_momentum_): as its
        # factors (g, x), M = -g^T x, when beta = 0; else scaled by C, with the (c_post, c_pre) used.
        self._factors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None
        self.c_pre = nn.Parameter(torch.ones(self._n_pre(weight)))
        self.c_post = nn.Parameter(torch.ones(weight.shape[0]))
        with torch.no_grad():
            self.register_buffer("weight", self.normalise_(weight))
        self.register_buffer("momentum", torch.zeros_like(weight))
        self.register_buffer("bias", torch.zeros(weight.shape[0]) if bias else None)
        self.register_buffer("bias_momentum", torch.zeros(weight.shape[0]) if bias else None)
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._applied = False  # the pending update already sits in W (apply_pending_)
        self._workspace: torch.Tensor | None = None  # the spare W-sized buffer of the C-training op
        self._learn_target: torch.Tensor | None = None  # labels to learn from during the forward pass
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None
        self.dropped = False  # the last direction was not finite and was not taken

    # -- layer-specific pieces -------------------------------------------------------------------
    def _n_pre(self, weight: torch.Tensor) -> int:
        return weight.shape[1]

    def coefficient(self, rows: slice = slice(None), out: torch.Tensor | None = None) -> torch.Tensor:
        """C, shaped like W (eq. 4.31; conv: eq. 4.33), or the rows (output neurons) of it named;
        written into `out` when given."""
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
            return w * _inverse_row_norm(w)
        if self.post == "clip":
            return w.clamp(-self.clip_value, self.clip_value)
        return w

    def normalise_(self, w: torch.Tensor) -> torch.Tensor:
        """``normalise`` in place (same values), for tensors outside autograd."""
        self._post_(w)
        return w

    def _post_(self, v: torch.Tensor) -> torch.Tensor | None:
        """``normalise_`` on V (rows of W + eta * C * M); returns 1/|V| per row for L2 normalisation."""
        if self.post == "l2":
            inv = _inverse_row_norm(v)
            v.mul_(inv)
            return inv.view(-1)
        if self.post == "clip":
            v.clamp_(-self.clip_value, self.clip_value)
        return None

    def pending(self, weight: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
        """W_eff = post(W + eta * C * M) as a pure function of W and M (thesis 4.3)."""
        return self.normalise(torch.addcmul(weight, self.coefficient(), momentum, value=self.eta))

    @torch.no_grad()
    def apply_pending_(self, target: torch.Tensor | None = None) -> None:
        """W <- post(W + eta * C * M) in place, for a step with C frozen; the next training-mode
        forward uses W as W_eff and ``commit()`` keeps it. Same values as ``pending``.

        With `target`, that forward also runs the local rule as soon as the layer's output exists
        (``learn``): nothing later needs the activations, so no layer's are kept past its own.
        """
        if self.eta != 0:
            self.write_pending_(self.weight)
            if self.bias is not None:
                self.bias.copy_(self.effective_bias())
        self._pending, self._applied, self._learn_target = (self.weight, self.bias), True, target

    def row_blocks(self, elements: int | None = None) -> list[slice]:
        """Output neurons in blocks of about `elements` (default BLOCK_ELEMENTS) weights each (the last may be shorter)."""
        n = self.weight.shape[0]
        step = max(1, (elements or self.BLOCK_ELEMENTS) // self.weight[0].numel())
        return [slice(start, min(start + step, n)) for start in range(0, n, step)]

    def block_scratch(self, elements: int | None = None) -> torch.Tensor:
        """One block of W's shape, allocated once per pass: allocating a fresh buffer per block would
        cost more (in page faults) than the arithmetic done on it."""
        rows = self.row_blocks(elements)[0]
        return self.weight.new_empty((rows.stop - rows.start, *self.weight.shape[1:]))

    @torch.no_grad()
    def write_pending_(self, out: torch.Tensor) -> torch.Tensor | None:
        """out <- post(W + eta * C * M) (``pending``'s values; `out` may be W itself), a block of rows
        at a time: C is never formed whole, and each block of W and M is read once from memory and
        finished while it sits in cache. Returns 1/|V| per row for L2 normalisation, else None."""
        inverse_norms, scratch, momentum = [], self.block_scratch(), self.momentum
        for rows in self.row_blocks():
            c = self.coefficient(rows, out=scratch[:rows.stop - rows.start])
            inverse_norms.append(self._post_(torch.addcmul(self.weight[rows], c, momentum[rows], value=self.eta, out=out[rows])))
        return torch.cat(inverse_norms) if self.post == "l2" else None

    @property
    def momentum(self) -> torch.Tensor:
        """M, the pending update's direction. While a frozen-C step keeps it in another form
        (``HebbLinear.write_momentum_``) reading it writes M into the buffer first, so every reader
        sees its value (the buffer itself, as ``named_buffers()`` lists it, does not hold M meanwhile)."""
        buffers = self.__dict__.get("_buffers", {})
        if "momentum" not in buffers:  # (before __init__ registered it)
            raise AttributeError("momentum")
        if self.__dict__.get("_factors") is not None or self.__dict__.get("_folded") is not None:
            self.write_momentum_()
        return buffers["momentum"]

    def write_momentum_(self) -> None:
        """Write M into its buffer from the form the frozen-C step keeps it in (linear layers only)."""
        raise NotImplementedError

    # The buffer must hold M before the module is saved, loaded into (shapes are checked) or moved.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.momentum
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, *args, **kwargs):
        self.momentum
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):
        self.momentum
        return super()._apply(fn, recurse)

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
        return self.pending_weight(), self.effective_bias()

    def effective_bias(self) -> torch.Tensor | None:
        """b + eta * c_post * M_b, the bias's pending update (None without a bias)."""
        return None if self.bias is None else self.bias + self.eta * self.c_post * self.bias_momentum

    def pending_op(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """The pre-activation with the pending update applied, and (W_eff, b_eff) for the commit."""
        w, b = self.effective_weight()
        return self.linear_op(x, w, b), (w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.respond(x, self.weight, self.bias)
        if self._applied:  # (C frozen: the activation may overwrite the pre-activation)
            y = ACTIVATIONS_INPLACE[self.activation](self.linear_op(x, *self._pending))
        else:
            u, self._pending = self.pending_op(x)
            y = ACTIVATIONS[self.activation](u)
        self.cached = (x.detach(), y.detach())
        if self._learn_target is not None:
            self.learn(self._learn_target)
            self._learn_target = None
        return y

    @torch.no_grad()
    def learn(self, target: torch.Tensor) -> None:
        """M <- beta*M + D from the cached input and output of this batch (a no-op for eta = 0, the
        random-features control); sets ``dropped`` when D was not finite. Frees the cache."""
        self.dropped = self.eta != 0 and not self.rule.accumulate(self, *self.cached, target)
        self.cached = None

    @torch.no_grad()
    def commit(self) -> None:
        """W <- W_eff.detach(): the pending update becomes part of the weights."""
        if self._pending is None:
            raise RuntimeError("commit() needs a training-mode forward pass first")
        if not self._applied:
            w, b = self._pending
            if w is self._workspace:
                # The fused C-training op wrote W_eff into the spare buffer: swap instead of copying.
                self._workspace, self._buffers["weight"] = self.weight, w
            else:
                self.weight.copy_(w)
            if b is not None:
                self.bias.copy_(b)
        self._pending, self._applied = None, False

    def free_workspace(self) -> None:
        """Drop the buffer that only the C-training step uses (see ``_L2PendingLinear``)."""
        self._workspace = None

    @torch.no_grad()
    def accumulate(self, direction: Direction) -> bool:
        """M <- beta * M + D (beta = 0 is the thesis' "without momentum" variant, M = D).

        A non-finite D (e.g. an overflowing batch) is dropped rather than let into M, where it
        would poison every later step: returns False and M is unchanged.
        """
        if not all(d is None or torch.isfinite(d).all() for d in direction):
            return False
        d_w, d_b = direction
        self.momentum.mul_(self.beta).add_(d_w)
        if d_b is not None:
            self.bias_momentum.mul_(self.beta).add_(d_b)
        return True

    @torch.no_grad()
    def accumulate_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> bool:
        """M <- beta * M - dL/dW from the input x and dL/du (see ``accumulate``)."""
        g_w, g_b = self.local_weight_grad(x, g_u)
        return self.accumulate((-g_w, None if g_b is None else -g_b))

    def extra_repr(self) -> str:
        return (f"activation={self.activation}, rule={self.rule}, eta={self.eta}, beta={self.beta}, "
                f"post={self.post}, bias={self.bias is not None}")


class _L2PendingLinear(torch.autograd.Function):
    """u = x W_eff^T with W_eff = rownorm(W + eta * (c_post c_pre^T) * M): a linear layer's training-
    mode op while C trains, fused. Only x and C get gradients.

    W_eff goes into `w_eff`, a W-sized buffer the layer keeps from step to step (a fresh W-sized
    tensor costs more, in page faults, than the arithmetic on it). Both passes work a block of rows
    at a time so that W, M and W_eff are each read once from memory. With V = W + eta*C*M,
    r = |V| per row and G = dL/dW_eff = g^T x, dL/dV = (G - W_eff rho) / r, where
    rho_o = sum_i G_oi W_eff_oi = sum_b g_bo u_bo comes from the saved u; 1/r, eta and C are folded
    into the two matrix-vector products that give dL/dc_post and dL/dc_pre.
    """

    @staticmethod
    def forward(ctx, x, c_post, c_pre, layer, w_eff):  # c_post, c_pre: the layer's own, named for autograd
        inv = layer.write_pending_(w_eff)
        u = x @ w_eff.T
        ctx.save_for_backward(x, w_eff, layer.momentum, inv, c_post, c_pre, u)
        ctx.eta, ctx.layer = layer.eta, layer
        return u

    @staticmethod
    def backward(ctx, g):
        x, w_eff, m, inv, c_post, c_pre, u = ctx.saved_tensors
        rho = (g * u).sum(0)
        scale = c_post * inv
        g_post, g_pre = torch.empty_like(c_post), torch.zeros_like(c_pre)
        blocks = ctx.layer.GRAD_BLOCK_ELEMENTS
        scratch = ctx.layer.block_scratch(blocks)  # one block of G, reused (W_eff has W's shape)
        for rows in ctx.layer.row_blocks(blocks):
            g_blk = torch.mm(g[:, rows].T, x, out=scratch[:rows.stop - rows.start])  # G's rows
            dv = g_blk.addcmul_(w_eff[rows], rho[rows, None], value=-1).mul_(m[rows])  # (G - W_eff rho) * M
            torch.mv(dv, c_pre, out=g_post[rows])
            g_pre.addmv_(dv.T, scale[rows])
        g_x = g @ w_eff if ctx.needs_input_grad[0] else None
        return g_x, g_post.mul_(ctx.eta * inv), g_pre.mul_(ctx.eta), None, None


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

    def coefficient(self, rows: slice = slice(None), out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.outer(self.c_post[rows], self.c_pre, out=out)

    def pending_op(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        # The fused function only pays off when C is being trained; the plain ops also trace to ONNX.
        if self.post != "l2" or self.eta == 0 or not (torch.is_grad_enabled() and self.c_pre.requires_grad):
            return super().pending_op(x)
        w, spare = self.weight, self._workspace
        if spare is None or (spare.shape, spare.dtype, spare.device) != (w.shape, w.dtype, w.device):
            self._workspace = spare = torch.empty_like(w)
        u = _L2PendingLinear.apply(x, self.c_post, self.c_pre, self, spare)
        b = self.effective_bias()
        return (u if b is None else u + b), (spare, b)

    def linear_op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)

    # -- the frozen-C step's forms of M ----------------------------------------------------------
    # With C constant, C * M need not be formed at every step. beta = 0: M = D = -g^T x has rank B, and
    # W + eta * C * M = W - eta * (g c_post)^T (x c_pre) is one GEMM into W (eq. 4.31); M is never
    # formed and its buffer is released. beta > 0: the buffer holds C * M instead of M, into which the
    # direction goes by one GEMM with C folded into its factors, so that W + eta * C * M is a plain add.

    @torch.no_grad()
    def write_pending_(self, out: torch.Tensor) -> torch.Tensor | None:
        if self._factors is not None:
            g, x = self._factors
            v = out if out is self.weight else out.copy_(self.weight)
            return self._post_(v.addmm_((g * self.c_post).T, x * self.c_pre, alpha=-self.eta))
        # (Only for rules whose direction comes as g and x (accumulate_grad): one that hands a dense D to
        # accumulate would have C * M written back to M at every step.)
        if (out is self.weight and self.beta != 0 and isinstance(self.rule, GradientRule)
                and not (self.c_post.requires_grad or self.c_pre.requires_grad)):
            self._fold_()
        elif self._folded is not None:
            self.momentum  # (C may train from here on: back to M itself)
        if self._folded is None:
            return super().write_pending_(out)
        # Whole-layer ops, not blocks: with nothing to form per block, three passes over W ran faster
        # inside the step (2-core CPU) than the blocks' dozens of small ops, and no W-sized temporary.
        return self._post_(self.weight.add_(self._buffers["momentum"], alpha=self.eta))

    def _fold_(self) -> None:
        """Keep C * M in the buffer (see above), unless it already holds it for this C. Not when some
        coefficient is 0: M could not be recovered from C * M."""
        c_post, c_pre = self.c_post.detach(), self.c_pre.detach()
        if self._folded is not None and torch.equal(self._folded[0], c_post) and torch.equal(self._folded[1], c_pre):
            return
        m = self.momentum  # (M itself, under the C it was folded with, if any)
        if not (bool(c_post.all()) and bool(c_pre.all())):
            return
        for rows in self.row_blocks():
            m[rows].mul_(c_post[rows, None]).mul_(c_pre)
        self._folded = (c_post.clone(), c_pre.clone())

    @torch.no_grad()
    def write_momentum_(self) -> None:
        buffers = self._buffers
        if self._factors is not None:
            g, x = self._factors
            self._factors = None
            if buffers["momentum"].shape != self.weight.shape:  # (released while M was held as factors)
                buffers["momentum"] = torch.empty_like(self.weight)
            # The same GEMM as the dense path's (beta = 0), so M has the values it would have had.
            buffers["momentum"].addmm_(g.T, x, beta=0.0, alpha=-1.0)
        if self._folded is not None:
            c_post, c_pre = self._folded
            self._folded = None
            m = buffers["momentum"]
            for rows in self.row_blocks():
                m[rows].div_(c_post[rows, None]).div_(c_pre)

    def local_weight_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> Direction:
        return g_u.T @ x, (g_u.sum(0) if self.bias is not None else None)

    @torch.no_grad()
    def accumulate_grad(self, x: torch.Tensor, g_u: torch.Tensor) -> bool:
        # dL/dW = g_u^T x has rank B: one GEMM adds it into M in place, never forming D. Every entry of
        # the product is bounded by B * max|g_u| * max|x|, so when that bound is finite (and below
        # half the dtype's range) D is finite too; otherwise fall back to forming and checking D.
        bound = g_u.abs().amax() * x.abs().amax() * x.shape[0]
        if not bool(bound < torch.finfo(x.dtype).max / 2):
            return super().accumulate_grad(x, g_u)
        if self.beta == 0 and self._applied:
            # C frozen, no momentum: M = D stays factored and M's buffer is released until something
            # reads M (the step then holds W alone). x is copied: the first layer's x is the caller's
            # batch, which it may reuse.
            self._factors = (g_u, x.clone())
            self._buffers["momentum"] = self.weight.new_empty(0)
        elif self._folded is not None:  # C * M <- beta * C * M + C * D, C folded into D's factors
            c_post, c_pre = self._folded
            self._buffers["momentum"].addmm_((g_u * c_post).T, x * c_pre, beta=self.beta, alpha=-1.0)
        else:
            self.momentum.addmm_(g_u.T, x, beta=self.beta, alpha=-1.0)
        if self.bias is not None:
            self.bias_momentum.mul_(self.beta).sub_(g_u.sum(0))
        return True


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

    def coefficient(self, rows: slice = slice(None), out: torch.Tensor | None = None) -> torch.Tensor:
        out_per_group = self.out_channels // self.groups
        c_pre = self.c_pre.view(self.groups, 1, -1).expand(-1, out_per_group, -1).reshape(self.out_channels, -1)
        c = self.c_post[rows, None] * c_pre[rows]
        return torch.mul(c[:, :, None, None], torch.outer(self.c_h, self.c_w), out=out)

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
