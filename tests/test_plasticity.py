"""Every fast form of the layer step (hebbedge.plasticity) against the reference functions, in float64,
and whole learner steps with the fast forms against the same steps with the reference forms."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from hebbedge import plasticity as P
from hebbedge.layers import HebbConv2d, HebbLinear
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_linear

D = torch.float64


def tensors(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=D) for s in shapes]


@pytest.mark.parametrize("post", ["l2", "clip", None])
@pytest.mark.parametrize("elements", [7, 30, 10**6])  # one row per block, several rows with a shorter last block, one block
def test_pending_weight_by_row_blocks_equals_the_reference(post, elements):
    w, m, c_post, c_pre = tensors((9, 5), (9, 5), (9,), (5,))
    expected = P.pending_weight(w, m, P.linear_coefficient(c_post, c_pre), 0.3, post, 0.5)
    out = torch.empty_like(w)
    inv = P.pending_weight_blocks_(out, w, m, lambda rows, o: P.linear_coefficient(c_post, c_pre, rows, o), 0.3, post, 0.5, elements)
    assert torch.allclose(out, expected, atol=1e-12)
    if post == "l2":  # the inverse norms the fused op's backward uses
        assert torch.allclose(inv, (w + 0.3 * torch.outer(c_post, c_pre) * m).norm(dim=1).reciprocal(), atol=1e-12)
    in_place = w.clone()  # out may be W itself
    P.pending_weight_blocks_(in_place, in_place, m, lambda rows, o: P.linear_coefficient(c_post, c_pre, rows, o), 0.3, post, 0.5, elements)
    assert torch.allclose(in_place, expected, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_coefficient_by_rows_and_pending_blocks(groups):
    w, m = tensors((4, 6 // groups, 3, 2), (4, 6 // groups, 3, 2))
    c_post, c_pre, c_h, c_w = tensors((4,), (6,), (3,), (2,), seed=1)
    c = P.conv_coefficient(c_post, c_pre, c_h, c_w, groups)
    for o in range(4):  # eq. 4.33, entry by entry
        g = o // (4 // groups)
        for i in range(6 // groups):
            expected = c_post[o] * c_pre[g * (6 // groups) + i] * torch.outer(c_h, c_w)
            assert torch.allclose(c[o, i], expected, atol=1e-12)
    out = torch.empty_like(w)
    coefficient = lambda rows, o: P.conv_coefficient(c_post, c_pre, c_h, c_w, groups, rows, o)  # noqa: E731
    P.pending_weight_blocks_(out, w, m, coefficient, 0.2, "clip", 1.0, elements=20)
    assert torch.allclose(out, P.pending_weight(w, m, c, 0.2, "clip", 1.0), atol=1e-12)


@pytest.mark.parametrize("post", ["l2", "clip", None])
def test_pending_weight_from_factors_and_folded_equal_the_reference(post):
    w, g_u, x, c_post, c_pre, m = tensors((6, 5), (3, 6), (3, 5), (6,), (5,), (6, 5))
    c = P.linear_coefficient(c_post, c_pre)
    held = P.momentum_from_factors(g_u, x)
    assert torch.allclose(held, -g_u.T @ x, atol=1e-12)
    factored = w.clone()
    P.pending_weight_factored_(factored, g_u, x, c_post, c_pre, 0.4, post, 0.7)
    assert torch.allclose(factored, P.pending_weight(w, held, c, 0.4, post, 0.7), atol=1e-12)
    cm = m.clone()
    P.fold_(cm, c_post, c_pre, elements=10)
    assert torch.allclose(cm, c * m, atol=1e-12)
    folded = w.clone()
    P.pending_weight_folded_(folded, cm, 0.4, post, 0.7)
    assert torch.allclose(folded, P.pending_weight(w, m, c, 0.4, post, 0.7), atol=1e-12)
    P.unfold_(cm, c_post, c_pre, elements=10)
    assert torch.allclose(cm, m, atol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_momentum_update_by_gemm_and_folded_equal_the_reference(beta):
    m, g_u, x, c_post, c_pre = tensors((6, 5), (3, 6), (3, 5), (6,), (5,))
    d, _ = P.linear_weight_grad(x, g_u, bias=False)
    expected = P.momentum_update(m, -d, beta)
    gemm = m.clone()
    P.momentum_update_gemm_(gemm, g_u, x, beta)
    assert torch.allclose(gemm, expected, atol=1e-12)
    cm = torch.outer(c_post, c_pre) * m
    P.momentum_update_folded_(cm, g_u, x, c_post, c_pre, beta)
    assert torch.allclose(cm, torch.outer(c_post, c_pre) * expected, atol=1e-12)


@pytest.mark.parametrize("blocks", [(6, 12), (10**6, 10**6)])
def test_fused_c_training_op_equals_autograd_through_the_reference(blocks):
    w, m, x, g = tensors((7, 4), (7, 4), (5, 4), (5, 7))
    c_post, c_pre = [t.abs() + 0.5 for t in tensors((7,), (4,), seed=2)]
    grads = []
    for fused in (True, False):
        xs, cp, cq = (t.clone().requires_grad_() for t in (x, c_post, c_pre))
        if fused:
            u = P.L2PendingLinear.apply(xs, cp, cq, w, m, 0.3, torch.empty_like(w), *blocks)
        else:
            u = xs @ P.pending_weight(w, m, P.linear_coefficient(cp, cq), 0.3, "l2", 0.0).T
        (u * g).sum().backward()
        grads.append((u.detach(), xs.grad, cp.grad, cq.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    args = (x.clone().requires_grad_(), c_post.clone().requires_grad_(), c_pre.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda xs, cp, cq: P.L2PendingLinear.apply(xs, cp, cq, w, m, 0.3, torch.empty_like(w), *blocks), args)


def nets() -> dict:
    torch.manual_seed(0)
    return {
        "linear": thesis_linear(in_features=12, widths=(10, 8), n_classes=3, label_smoothing=0.1),
        "conv-bias": nn.Sequential(HebbConv2d(2, 4, 3, padding=1, eta=0.1, bias=True), nn.Flatten(),
                                   HebbLinear(4 * 9, 6, "tanh", eta=0.05, bias=True), HebbLinear(6, 3, None, eta=0.05)),
    }


@pytest.mark.parametrize("net", ["linear", "conv-bias"])
@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_learner_with_fast_forms_equals_the_reference_forms(net, beta):
    """The same steps (C training, frozen, C training again), once with every fast form and once with
    ``fast=False`` (plasticity's reference functions only): every state tensor agrees in float64, and
    the held forms were taken."""
    shape = (12,) if net == "linear" else (2, 3, 3)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, *shape, generator=g, dtype=D), torch.arange(8) % 3) for _ in range(7)]
    learners = []
    for fast in (True, False):
        model = nets()[net].double()
        for layer in model:
            if hasattr(layer, "beta"):
                layer.beta = beta
        learner = HebbianLearner(model, lr=0.05, fast=fast)
        for i, (x, t) in enumerate(batches):
            if i == 2:
                learner.freeze_c()
            if i == 5:
                if fast and net == "linear":
                    assert all(l.held == ("factors" if beta == 0 else "folded") for l in learner.layers)
                learner.unfreeze_c()
            learner.step(x, t)
        learners.append(learner)
    fast, reference = (l.model.state_dict() for l in learners)
    for key in reference:
        assert torch.allclose(fast[key], reference[key], rtol=1e-9, atol=1e-12), key


def test_rules_take_tensors_and_import_no_layer():
    """No import cycle: the rules and the reference import neither the layers nor the learner."""
    code = ("import sys, hebbedge.rules, hebbedge.plasticity; "
            "assert not {'hebbedge.layers', 'hebbedge.learner'} & set(sys.modules), sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
