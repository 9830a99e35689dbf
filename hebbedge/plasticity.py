"""The Hebbian layer step as pure functions of tensors: the reference, and its fast forms.

Equation numbers are those of the thesis *Backpropagation meets contrastive neuron-centric Hebbian
learning* (chapter 4; see docs/method.md). One step of a layer with weights W, momentum M and
plasticity coefficients C (one per neuron, their outer product shaped like W) is

    W_eff = post(W + eta * C ⊙ M)      the pending weight (thesis 4.3), used by the forward pass
    W     <- W_eff                     the commit
    M     <- beta * M + D              the momentum update, D the local rule's direction

The first part of this module is the reference: out-of-place functions, differentiable where C
must be trained through them, and nothing else. The second part holds the fast forms, the way
torch.optim keeps ``_single_tensor_sgd`` beside ``_multi_tensor_sgd``/fused kernels: each gives the
reference's values (tests/test_plasticity.py checks every one against it in float64), and
``hebbedge.layers.HebbLayer.pending_form`` is the one place that picks among them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

Direction = tuple[torch.Tensor, torch.Tensor | None]  # (D for W, D for the bias or None)
POSTS = ("l2", "clip", None)


# -- the reference ---------------------------------------------------------------------------------

def inverse_row_norm(w: torch.Tensor) -> torch.Tensor:
    """1 / |w_o| per output neuron o, shaped to broadcast over w."""
    return w.flatten(1).norm(dim=1).clamp_min(1e-12).reciprocal().view(-1, *([1] * (w.dim() - 1)))


def post_update(w: torch.Tensor, post: str | None, clip_value: float) -> torch.Tensor:
    """The post-update normalisation: unit L2 norm per output neuron (linear layers) or clipping to
    [-clip_value, clip_value] (conv layers), or none."""
    if post == "l2":
        return w * inverse_row_norm(w)  # (a product by the reciprocal is cheaper to differentiate than a division)
    if post == "clip":
        return w.clamp(-clip_value, clip_value)
    return w


def linear_coefficient(c_post: torch.Tensor, c_pre: torch.Tensor, rows: slice = slice(None),
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """C = c_post c_pre^T, shaped like a linear layer's W (eq. 4.31), or the rows (output neurons) named."""
    return torch.outer(c_post[rows], c_pre, out=out)


def conv_coefficient(c_post: torch.Tensor, c_pre: torch.Tensor, c_h: torch.Tensor, c_w: torch.Tensor, groups: int,
                     rows: slice = slice(None), out: torch.Tensor | None = None) -> torch.Tensor:
    """C = C_post x C_pre x C_h x C_w, shaped like a conv layer's W (eq. 4.33). With groups > 1, C_pre has
    one entry per input channel: weight[o, i] connects output channel o to input channel
    (o // (out/groups)) * (in/groups) + i."""
    out_channels = c_post.shape[0]
    c_pre = c_pre.view(groups, 1, -1).expand(-1, out_channels // groups, -1).reshape(out_channels, -1)
    c = c_post[rows, None] * c_pre[rows]
    return torch.mul(c[:, :, None, None], torch.outer(c_h, c_w), out=out)


def pending_weight(w: torch.Tensor, m: torch.Tensor, c: torch.Tensor, eta: float, post: str | None,
                   clip_value: float) -> torch.Tensor:
    """W_eff = post(W + eta * C ⊙ M) (thesis 4.3): the weights the forward pass uses, so that the task
    loss reaches C through them."""
    return post_update(torch.addcmul(w, c, m, value=eta), post, clip_value)


def pending_bias(b: torch.Tensor | None, m_b: torch.Tensor | None, c_post: torch.Tensor, eta: float) -> torch.Tensor | None:
    """b + eta * c_post ⊙ M_b, the bias's pending update (None without a bias)."""
    return None if b is None else b + eta * c_post * m_b


def commit(w_eff: torch.Tensor) -> torch.Tensor:
    """W <- W_eff: the pending update becomes part of the weights (no gradient flows into W)."""
    return w_eff.detach()


def momentum_update(m: torch.Tensor, d: torch.Tensor, beta: float) -> torch.Tensor:
    """M <- beta * M + D (beta = 0 is the thesis's variant without momentum: M = D)."""
    return m * beta + d


def linear_weight_grad(x: torch.Tensor, g_u: torch.Tensor, bias: bool) -> Direction:
    """dL/dW = g_u^T x and dL/db from a linear layer's input x and dL/du at its pre-activation
    (eq. 4.21-4.22)."""
    return g_u.T @ x, (g_u.sum(0) if bias else None)


def conv_weight_grad(x: torch.Tensor, g_u: torch.Tensor, w_shape: torch.Size, stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int], groups: int, bias: bool) -> Direction:
    """dL/dW and dL/db of a convolution (thesis 4.1.2), with its stride, padding, dilation and groups.

    ``conv2d_weight`` calls an op that the ONNX exporter cannot trace, so an export takes the equal
    im2col form: the sum over batch and positions of g_u[b, o, l] * patch[b, (i, kh, kw), l], per group.
    """
    if torch.onnx.is_in_onnx_export():
        b = x.shape[0]
        patches = F.unfold(x, w_shape[2:], dilation, padding, stride)  # [B, I*kh*kw, L]
        patches = patches.view(b, groups, patches.shape[1] // groups, -1)
        grads = g_u.flatten(2).view(b, groups, w_shape[0] // groups, -1)  # [B, G, O/G, L]
        g_w = torch.einsum("bgol,bgkl->gok", grads, patches).reshape(w_shape)
    else:
        g_w = conv2d_weight(x, w_shape, g_u, stride, padding, dilation, groups)
    return g_w, (g_u.sum((0, 2, 3)) if bias else None)


def is_finite(direction: Direction) -> bool:
    """A non-finite D (e.g. an overflowing batch) must not enter M, where it would poison every later step."""
    return all(d is None or bool(torch.isfinite(d).all()) for d in direction)


# -- the fast forms --------------------------------------------------------------------------------
# Each writes the reference's values into existing storage. They exist because a step that forms C,
# C ⊙ M, W + eta C ⊙ M and D as whole W-sized temporaries reads and writes W-sized memory many times
# over; the step is bound by that traffic, not by arithmetic.

BLOCK_ELEMENTS = 2**18  # weights per block of rows (1 MB of float32, about a core's L2 cache)
# The fused op's backward forms G = g^T x a block of rows at a time. A GEMM with inner dimension B (the
# batch) on few rows is inefficient, so its blocks are larger.
GRAD_BLOCK_ELEMENTS = 2**21


def row_blocks(w: torch.Tensor, elements: int) -> list[slice]:
    """W's output neurons in blocks of about `elements` weights each (the last may be shorter)."""
    n = w.shape[0]
    step = max(1, elements // w[0].numel())
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def block_scratch(w: torch.Tensor, elements: int) -> torch.Tensor:
    """One block of W's shape, allocated once per pass (a fresh buffer per block would cost more in page
    faults than the arithmetic done on it)."""
    rows = row_blocks(w, elements)[0]
    return w.new_empty((rows.stop - rows.start, *w.shape[1:]))


def post_update_(v: torch.Tensor, post: str | None, clip_value: float) -> torch.Tensor | None:
    """``post_update`` in place; returns 1/|V| per row for L2 normalisation (the fused op's backward needs it)."""
    if post == "l2":
        inv = inverse_row_norm(v)
        v.mul_(inv)
        return inv.view(-1)
    if post == "clip":
        v.clamp_(-clip_value, clip_value)
    return None


def pending_weight_blocks_(out: torch.Tensor, w: torch.Tensor, m: torch.Tensor,
                           coefficient: Callable[[slice, torch.Tensor], torch.Tensor], eta: float, post: str | None,
                           clip_value: float, elements: int = BLOCK_ELEMENTS) -> torch.Tensor | None:
    """out <- pending_weight(W, M, C, ...) a block of rows at a time (`out` may be W itself): C is never
    formed whole, and each block of W and M is finished while it sits in cache. `coefficient(rows, out)`
    writes C's rows. Returns 1/|V| per row for L2 normalisation, else None."""
    inverse_norms, scratch = [], block_scratch(w, elements)
    for rows in row_blocks(w, elements):
        c = coefficient(rows, scratch[:rows.stop - rows.start])
        inverse_norms.append(post_update_(torch.addcmul(w[rows], c, m[rows], value=eta, out=out[rows]), post, clip_value))
    return torch.cat(inverse_norms) if post == "l2" else None


def pending_weight_factored_(w: torch.Tensor, g_u: torch.Tensor, x: torch.Tensor, c_post: torch.Tensor,
                             c_pre: torch.Tensor, eta: float, post: str | None, clip_value: float) -> torch.Tensor | None:
    """W <- post(W + eta * C ⊙ M) in place for a linear layer whose M = -g_u^T x is held as its factors
    (beta = 0, C frozen): C ⊙ M = -(g_u c_post)^T (x c_pre) has rank B, so this is one GEMM into W."""
    return post_update_(w.addmm_((g_u * c_post).T, x * c_pre, alpha=-eta), post, clip_value)


def pending_weight_folded_(w: torch.Tensor, cm: torch.Tensor, eta: float, post: str | None,
                           clip_value: float) -> torch.Tensor | None:
    """W <- post(W + eta * CM) in place, CM = C ⊙ M kept already multiplied out (C frozen, beta > 0). Whole-
    layer ops: with nothing to form per block, blocks would only add small ops."""
    return post_update_(w.add_(cm, alpha=eta), post, clip_value)


def momentum_update_gemm_(m: torch.Tensor, g_u: torch.Tensor, x: torch.Tensor, beta: float) -> None:
    """M <- beta * M + D in place for D = -g_u^T x (a linear layer's gradient rule): one GEMM, D never formed."""
    m.addmm_(g_u.T, x, beta=beta, alpha=-1.0)


def momentum_update_folded_(cm: torch.Tensor, g_u: torch.Tensor, x: torch.Tensor, c_post: torch.Tensor,
                            c_pre: torch.Tensor, beta: float) -> None:
    """C⊙M <- beta * C⊙M + C⊙D in place, for D = -g_u^T x: C folded into D's factors, one GEMM."""
    cm.addmm_((g_u * c_post).T, x * c_pre, beta=beta, alpha=-1.0)


def momentum_from_factors(g_u: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """M = -g_u^T x from its factors, by the same GEMM as ``momentum_update_gemm_`` with beta = 0 (same values)."""
    out = g_u.new_empty((g_u.shape[1], x.shape[1])) if out is None else out
    return out.addmm_(g_u.T, x, beta=0.0, alpha=-1.0)


def fold_(m: torch.Tensor, c_post: torch.Tensor, c_pre: torch.Tensor, elements: int = BLOCK_ELEMENTS) -> None:
    """M <- C ⊙ M in place (linear layers), by blocks of rows."""
    for rows in row_blocks(m, elements):
        m[rows].mul_(c_post[rows, None]).mul_(c_pre)


def unfold_(cm: torch.Tensor, c_post: torch.Tensor, c_pre: torch.Tensor, elements: int = BLOCK_ELEMENTS) -> None:
    """C ⊙ M <- M in place (``fold_`` undone; C has no zero)."""
    for rows in row_blocks(cm, elements):
        cm[rows].div_(c_post[rows, None]).div_(c_pre)


class L2PendingLinear(torch.autograd.Function):
    """u = x W_eff^T with W_eff = rownorm(W + eta * (c_post c_pre^T) ⊙ M): a linear layer's training-mode
    op while C trains, fused. Only x and C get gradients.

    W_eff goes into `w_eff`, a W-sized buffer the layer keeps from step to step. Both passes work a
    block of rows at a time so that W, M and W_eff are each read once from memory. With
    V = W + eta*C⊙M, r = |V| per row and G = dL/dW_eff = g^T x, dL/dV = (G - W_eff rho) / r, where
    rho_o = sum_i G_oi W_eff_oi = sum_b g_bo u_bo comes from the saved u; 1/r, eta and C are folded into
    the two matrix-vector products that give dL/dc_post and dL/dc_pre. dL/dW_eff is never formed.
    """

    @staticmethod
    def forward(ctx, x, c_post, c_pre, w, m, eta, w_eff, blocks, grad_blocks):
        coefficient = lambda rows, out: linear_coefficient(c_post, c_pre, rows, out)  # noqa: E731
        inv = pending_weight_blocks_(w_eff, w, m, coefficient, eta, "l2", 0.0, blocks)
        u = x @ w_eff.T
        ctx.save_for_backward(x, w_eff, m, inv, c_post, c_pre, u)
        ctx.eta, ctx.grad_blocks = eta, grad_blocks
        return u

    @staticmethod
    def backward(ctx, g):
        x, w_eff, m, inv, c_post, c_pre, u = ctx.saved_tensors
        rho = (g * u).sum(0)
        scale = c_post * inv
        g_post, g_pre = torch.empty_like(c_post), torch.zeros_like(c_pre)
        scratch = block_scratch(w_eff, ctx.grad_blocks)  # one block of G, reused
        for rows in row_blocks(w_eff, ctx.grad_blocks):
            g_blk = torch.mm(g[:, rows].T, x, out=scratch[:rows.stop - rows.start])  # G's rows
            dv = g_blk.addcmul_(w_eff[rows], rho[rows, None], value=-1).mul_(m[rows])  # (G - W_eff rho) ⊙ M
            torch.mv(dv, c_pre, out=g_post[rows])
            g_pre.addmv_(dv.T, scale[rows])
        g_x = g @ w_eff if ctx.needs_input_grad[0] else None
        return g_x, g_post.mul_(ctx.eta * inv), g_pre.mul_(ctx.eta), None, None, None, None, None, None
