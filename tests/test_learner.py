"""The single-forward-pass learner step, the frozen (on-device) mode and bad batches."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hebbedge.layers import HebbConv2d, HebbLinear
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_conv, thesis_linear


def tiny_linear(**kw) -> nn.Sequential:
    torch.manual_seed(0)
    return thesis_linear(in_features=12, widths=(10, 8), n_classes=3, **kw)


def batch(b: int = 8, features: int = 12, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, features, generator=g), torch.arange(b) % classes


def warm(learner: HebbianLearner, steps: int = 3) -> None:
    """A few steps so that the momentum buffers (the pending update) are non-zero."""
    for s in range(steps):
        learner.step(*batch(seed=s))


@pytest.mark.parametrize("beta", [0.9, 0.0])
@pytest.mark.parametrize("blocks", [None, 24])
@pytest.mark.parametrize("frozen", [False, True])
def test_step_matches_reference_implementation_in_float64(frozen, blocks, beta, monkeypatch):
    if blocks is not None:  # several row blocks per layer, as in a wide net (the backward's last block shorter)
        monkeypatch.setattr(HebbLinear, "BLOCK_ELEMENTS", blocks)
        monkeypatch.setattr(HebbLinear, "GRAD_BLOCK_ELEMENTS", 2 * blocks)
    model = tiny_linear(label_smoothing=0.1, beta=beta).double()
    learner = HebbianLearner(model, lr=0.05, weight_decay=0.01)
    x, t = batch()
    x = x.double()
    warm_x = [(batch(seed=s)[0].double(), batch(seed=s)[1]) for s in range(2)]
    for xb, tb in warm_x:
        learner.step(xb, tb)
    if frozen:  # the on-device step: W_eff written into W in place, D added into M by one GEMM
        learner.freeze_c()
        # From the second frozen step on, M is held as factors (beta = 0: W_eff is one GEMM into W), or
        # the buffer holds C * M (beta > 0: W_eff is a plain add).
        learner.step(batch(seed=7)[0].double(), batch(seed=7)[1])
        assert all(l.held == ("factors" if beta == 0 else "folded") for l in learner.layers)
    layers = learner.layers
    before = copy.deepcopy(model)
    opt_state = None if frozen else copy.deepcopy(learner.optimizer.state_dict())

    learner.step(x, t)

    # Reference: written out by hand, layer by layer, from the equations.
    ref_layers = [m for m in before if isinstance(m, HebbLinear)]
    coeffs = [(l.c_pre.detach().clone().requires_grad_(), l.c_post.detach().clone().requires_grad_()) for l in ref_layers]
    h, cached, w_effs = x, [], []
    for l, (c_pre, c_post) in zip(ref_layers, coeffs):
        v = l.weight + l.eta * torch.outer(c_post, c_pre) * l.momentum
        w_eff = v / v.norm(dim=1, keepdim=True)
        u = h @ w_eff.T
        out = torch.tanh(u) if l.activation == "tanh" else u
        cached.append((h.detach(), out.detach(), u.detach()))
        w_effs.append(w_eff.detach())
        h = out
    if not frozen:
        F.cross_entropy(h, t).backward()
        ref_opt = torch.optim.AdamW([p for c in coeffs for p in c], lr=0.05, weight_decay=0.01)
        ref_opt.load_state_dict(opt_state)
        ref_opt.step()
    for l, new, (c_pre, c_post), w_eff, (xin, out, u) in zip(ref_layers, layers, coeffs, w_effs, cached):
        assert torch.allclose(new.weight, w_eff, atol=1e-12)
        assert torch.allclose(new.c_pre, c_pre, atol=1e-12) and torch.allclose(new.c_post, c_post, atol=1e-12)
        if l.activation is None:
            d = (F.one_hot(t, 3).double() - u.softmax(1)).T @ xin / x.shape[0]
        else:
            w = w_eff.clone().requires_grad_()
            from hebbedge.rules import contrastive_loss

            local = contrastive_loss(torch.tanh(xin @ w.T), t, 0.1)
            d = -torch.autograd.grad(local, w)[0]
        assert torch.allclose(new.momentum, l.beta * l.momentum + d, atol=1e-12)


def test_c_gets_gradients_through_the_pending_update_and_weights_none():
    model = tiny_linear()
    learner = HebbianLearner(model)
    warm(learner)
    x, t = batch(seed=9)
    model.train()
    F.cross_entropy(model(x), t).backward()
    for layer in learner.layers:
        assert layer.c_pre.grad is not None and layer.c_pre.grad.abs().sum() > 0
        assert layer.c_post.grad is not None and layer.c_post.grad.abs().sum() > 0
        assert not layer.weight.requires_grad and layer.weight.grad is None
    assert {id(p) for p in model.parameters()} == {id(p) for l in learner.layers for p in (l.c_pre, l.c_post)}


def test_conv_c_gets_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(HebbConv2d(2, 4, 3, padding=1, groups=2, eta=0.1), nn.Flatten(), HebbLinear(4 * 25, 3, None))
    learner = HebbianLearner(model)
    x, t = torch.randn(6, 2, 5, 5), torch.arange(6) % 3
    for _ in range(2):
        learner.step(x, t)
    model.train()
    F.cross_entropy(model(x), t).backward()
    conv = learner.layers[0]
    for c in (conv.c_pre, conv.c_post, conv.c_h, conv.c_w):
        assert c.grad.abs().sum() > 0


def test_frozen_step_builds_no_graph_and_keeps_c():
    model = tiny_linear()
    learner = HebbianLearner(model)
    warm(learner)
    learner.freeze_c()
    c_before = [p.detach().clone() for p in model.parameters()]
    w_before = [l.weight.clone() for l in learner.layers]
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in model.modules()]
    result = learner.step(*batch(seed=5))
    for h in hooks:
        h.remove()
    assert learner.optimizer is None
    assert seen and all(o.grad_fn is None for o in seen)
    assert result.logits.grad_fn is None
    for layer in learner.layers:
        assert layer.weight.grad_fn is None and layer.momentum.grad_fn is None
    assert all(torch.equal(a, b) for a, b in zip(c_before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    # ... and it still learns: the weights moved.
    assert any(not torch.equal(w, l.weight) for w, l in zip(w_before, learner.layers))


def test_frozen_step_with_bias_and_conv_equals_the_pure_functions():
    """The in-place frozen step (apply_pending_, GEMM into M) against the reference functions that
    update.onnx is built from (hebbedge.plasticity), in float64: conv with clipping and bias, linear
    with L2 and bias."""
    from hebbedge import plasticity

    torch.manual_seed(0)
    model = nn.Sequential(HebbConv2d(2, 4, 3, padding=1, eta=0.1, bias=True), nn.Flatten(),
                          HebbLinear(4 * 25, 6, "tanh", eta=0.05, bias=True), HebbLinear(6, 3, None, eta=0.05)).double()
    learner = HebbianLearner(model)
    x, t = torch.randn(6, 2, 5, 5, dtype=torch.float64), torch.arange(6) % 3
    for _ in range(3):
        learner.step(x, t)
    learner.freeze_c()
    ref = copy.deepcopy(model)
    learner.step(x, t)
    h = x
    for layer, new in zip(ref, model):
        if not isinstance(layer, (HebbConv2d, HebbLinear)):
            h = layer(h)
            continue
        w, b = layer.pending(layer.weight, layer.momentum), layer.pending_bias()
        y = layer.respond(h, w, b)
        layer.weight.copy_(plasticity.commit(w))  # (the rules see the committed W)
        d_w, d_b = layer.direction(h, y, t)
        assert torch.allclose(new.weight, w, atol=1e-12)
        assert torch.allclose(new.momentum, plasticity.momentum_update(layer.momentum, d_w, layer.beta), atol=1e-12)
        if b is not None:
            assert torch.allclose(new.bias, b, atol=1e-12)
            assert torch.allclose(new.bias_momentum, plasticity.momentum_update(layer.bias_momentum, d_b, layer.beta), atol=1e-12)
        h = y


def test_gemm_momentum_update_drops_an_overflowing_direction():
    from hebbedge.layers import GradDirection

    layer = HebbLinear(4, 3, "tanh", eta=0.1)
    layer.momentum.fill_(0.5)
    x, g_u = torch.full((2, 4), 3e38), torch.full((2, 3), 10.0)  # finite factors, infinite product
    assert not layer.update_momentum_(GradDirection(x, g_u))
    assert torch.equal(layer.momentum, torch.full((3, 4), 0.5))
    assert layer.update_momentum_(GradDirection(x / 1e30, g_u))  # a finite product is taken
    assert torch.allclose(layer.momentum, 0.9 * 0.5 - g_u.T @ (x / 1e30))


def test_unfreeze_trains_c_again():
    model = tiny_linear()
    learner = HebbianLearner(model)
    warm(learner)
    learner.freeze_c()
    learner.step(*batch(seed=4))
    learner.unfreeze_c()
    before = [p.detach().clone() for p in model.parameters()]
    learner.step(*batch(seed=6))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sgd_with_momentum_on_c_takes_the_plain_update():
    """optimizer="sgd" (the thesis's continual-learning optimizer, §6.3): each step moves C by
    lr * buf with buf <- momentum * buf + (grad + weight_decay * C), written out here in float64."""
    torch.manual_seed(0)
    model = tiny_linear().double()
    lr, wd, mom = 0.1, 0.01, 0.9
    learner = HebbianLearner(model, lr=lr, weight_decay=wd, optimizer="sgd", momentum=mom)
    assert isinstance(learner.optimizer, torch.optim.SGD)
    params = list(model.parameters())
    buf = [torch.zeros_like(p) for p in params]
    for seed in (1, 2, 3):
        x, y = batch(seed=seed)
        before = [p.detach().clone() for p in params]
        learner.step(x.double(), y)
        for p, b, old in zip(params, buf, before):
            b.mul_(mom).add_(p.grad + wd * old)
            torch.testing.assert_close(p.detach(), old - lr * b, rtol=0, atol=1e-12)
    assert any(p.grad.abs().max() > 0 for p in params)  # (the first step's M is zero: no gradient yet)
    learner.freeze_c()
    learner.unfreeze_c()
    assert isinstance(learner.optimizer, torch.optim.SGD) and learner.optimizer.defaults["momentum"] == mom


def test_an_unknown_optimizer_for_c_is_named():
    with pytest.raises(ValueError, match="unknown optimizer for C 'adam'; expected one of"):
        HebbianLearner(tiny_linear(), optimizer="adam")


def finite(learner: HebbianLearner) -> bool:
    return all(torch.isfinite(t).all() for l in learner.layers for t in (l.weight, l.momentum, l.c_pre, l.c_post))


def test_all_equal_labels_keep_weights_finite():
    learner = HebbianLearner(tiny_linear())
    warm(learner)
    x, _ = batch()
    for _ in range(3):
        learner.step(x, torch.zeros(8, dtype=torch.long))
    assert finite(learner)


def test_batch_of_one_keeps_weights_finite():
    learner = HebbianLearner(tiny_linear(label_smoothing=0.1))
    warm(learner)
    x, t = batch()
    for _ in range(3):
        learner.step(x[:1], t[:1])
    assert finite(learner)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused_without_touching_weights(bad):
    learner = HebbianLearner(tiny_linear())
    warm(learner)
    state = copy.deepcopy(learner.model.state_dict())
    x, t = batch()
    x[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        learner.step(x, t)
    for k, v in learner.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_bad_labels_are_named():
    learner = HebbianLearner(tiny_linear())
    x, _ = batch()
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        learner.step(x, torch.full((8,), 7))
    with pytest.raises(ValueError, match="one label per sample"):
        learner.step(x, torch.zeros(5, dtype=torch.long))


def test_thesis_architectures_build_and_twin_matches():
    conv = thesis_conv(width_factor=1)
    twin = thesis_conv(width_factor=1, hebbian=False)
    x = torch.randn(2, 1, 28, 28)
    assert conv.eval()(x).shape == twin(x).shape == (2, 10)
    assert [type(m).__name__ for m in conv if not isinstance(m, (HebbConv2d, HebbLinear))] == [
        type(m).__name__ for m in twin if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.Flatten))
    ]
    lin = thesis_linear()
    assert [l.weight.shape for l in lin if isinstance(l, HebbLinear)] == [
        l.weight.shape for l in thesis_linear(hebbian=False) if isinstance(l, nn.Linear)
    ]
    with pytest.raises(ValueError, match="width_factor"):
        thesis_conv(width_factor=3)


@pytest.mark.parametrize("bias", [False, True])
def test_fused_l2_pending_linear_matches_generic_autograd(bias):
    """The C-training forward of HebbLinear (one autograd Function that never forms dL/dW_eff)
    against the same layer's generic path, values and gradients in float64, plus gradcheck."""
    from hebbedge.plasticity import L2PendingLinear

    torch.manual_seed(4)
    layer = HebbLinear(9, 6, "tanh", eta=0.3, bias=bias).double()
    layer.momentum.normal_()
    if bias:
        layer.bias_momentum.normal_()
    with torch.no_grad():
        layer.c_pre.uniform_(0.5, 2)
        layer.c_post.uniform_(-1, 2)
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 6, dtype=torch.float64)
    results = []
    for fused in (True, False):
        layer.fast = fused  # (fast False: the reference, plasticity.pending_weight under autograd)
        assert layer.pending_form() == ("fused" if fused else "reference")
        op = layer.pending_op
        layer.zero_grad()
        x.grad = None
        u, (w, b) = op(x)
        assert (w.grad_fn is None) == fused  # the fused path hands the commit a plain tensor
        (u * g).sum().backward()
        results.append((u.detach(), w.detach(), x.grad.clone(), layer.c_pre.grad.clone(), layer.c_post.grad.clone()))
    for fused, generic in zip(*results):
        assert torch.allclose(fused, generic, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda xin, cp, cq: L2PendingLinear.apply(xin, cp, cq, layer.weight, layer.momentum, layer.eta,
                                                  torch.empty_like(layer.weight), 12, 24),
        (x.detach().clone().requires_grad_(), layer.c_post.detach().clone().requires_grad_(),
         layer.c_pre.detach().clone().requires_grad_()),
    )


def test_random_features_control_never_changes_hidden_weights():
    from hebbedge.train import TrainConfig, build

    model, learner = build(TrainConfig(learner="random", widths=(10, 8)), (1, 3, 4), 3)
    hidden = [l.weight.clone() for l in learner.layers[:-1]]
    readout = learner.layers[-1].weight.clone()
    for s in range(4):
        learner.step(batch(seed=s)[0].view(8, 1, 3, 4), batch(seed=s)[1])
    assert all(torch.equal(a, l.weight) for a, l in zip(hidden, learner.layers[:-1]))
    assert not torch.equal(readout, learner.layers[-1].weight)


@pytest.mark.parametrize("frozen", [False, True])
def test_random_features_flag_builds_the_control_as_eta_zero_did(frozen):
    """plastic_hidden=False builds the random-features control: hidden W bit-exact through C training
    and frozen steps, and every tensor as with the old control (hidden eta = 0)."""
    def run(**kw) -> nn.Sequential:
        model = tiny_linear(**kw)
        if not kw:
            for layer in [m for m in model if isinstance(m, HebbLinear)][:-1]:
                layer.eta = 0.0
        learner = HebbianLearner(model)
        warm(learner)
        if frozen:
            learner.freeze_c()
            warm(learner)
        return model

    start = [l.weight.clone() for l in tiny_linear() if isinstance(l, HebbLinear)]
    flag, eta0 = run(plastic_hidden=False), run()
    hidden = [l for l in flag if isinstance(l, HebbLinear)][:-1]
    assert all(not l.plastic for l in hidden) and all(torch.equal(w, l.weight) for w, l in zip(start, hidden))
    for (key, a), b in zip(flag.state_dict().items(), eta0.state_dict().values()):
        assert torch.equal(a, b), key


def double_batch(seed: int):
    x, t = batch(seed=seed)
    return x.double(), t


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_held_momentum_is_written_out_for_every_reader(beta):
    """With C frozen a linear layer keeps M as factors (beta = 0) or as C * M (beta > 0): reading M,
    saving, loading and converting the module see the value M would have had, and the steps' results
    do not depend on whether M was written out in between, nor on the caller reusing its input batch,
    nor on C being changed by hand while M is held."""
    def run(read_between: bool) -> HebbianLearner:
        learner = HebbianLearner(tiny_linear(beta=beta).double())
        learner.step(*double_batch(9))
        learner.freeze_c()
        xb = torch.empty(8, 12, dtype=torch.float64)
        for s in range(3):
            x, t = batch(seed=s)
            learner.step(xb.copy_(x), t)  # the same input buffer, overwritten for each batch
            if read_between:
                for l in learner.layers:
                    l.materialise_momentum_()
        return learner

    def held_form(learner: HebbianLearner) -> list[bool]:
        return [l.held == ("factors" if beta == 0 else "folded") for l in learner.layers]

    def same_state(a: HebbianLearner, b: HebbianLearner) -> None:
        for (key, u), v in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.allclose(u, v, atol=1e-12), key

    held, written = run(False), run(True)
    assert all(held_form(held)) and not any(held_form(written))
    if beta == 0:
        assert all(l._buffers["momentum"].numel() == 0 for l in held.layers)  # the step holds W alone
    saved = held.model.state_dict()
    assert all(held_form(held))  # saving computes M and changes nothing
    same_state(held, written)
    assert all(torch.allclose(l.momentum, w.momentum, atol=1e-12) for l, w in zip(held.layers, written.layers))
    held.step(*double_batch(5))
    assert all(held_form(held))
    held.model.load_state_dict(saved)  # loading replaces the held form along with the buffer
    assert not any(held_form(held)) and all(torch.equal(l.momentum, saved[f"{name}.momentum"])
                                            for name, l in held.model.named_modules() if isinstance(l, HebbLinear))
    held.step(*double_batch(5))
    float_model = copy.deepcopy(held.model).float()  # converting converts the held form's tensors too
    for l, f in zip(held.layers, [m for m in float_model if isinstance(m, HebbLinear)]):
        assert f.momentum.dtype == torch.float32 and torch.allclose(f.momentum.double(), l.momentum, atol=1e-6)
    # C changed by hand while M is held, then C training at once (the step starts from the held form).
    held, written = run(False), run(True)
    for learner in (held, written):
        for l in learner.layers:
            l.c_post.data.mul_(0.5)
        learner.unfreeze_c()
        learner.step(*double_batch(8))
    same_state(held, written)
    # C changed by hand while M is held; a frozen step, then C training again.
    held, written = run(False), run(True)
    for learner in (held, written):
        for l in learner.layers:
            l.c_pre.data.mul_(1.5)
        learner.step(*double_batch(6))
    same_state(held, written)
    for learner in (held, written):
        learner.unfreeze_c()
        learner.step(*double_batch(7))
    same_state(held, written)


def test_rules_handing_a_dense_direction_keep_m_itself():
    """C * M is kept only for rules whose direction comes as factors (GradDirection); a rule that
    hands a dense D (here SoftHebb's) would have it written back at every step."""
    from hebbedge.rules import SoftHebbRule

    torch.manual_seed(0)
    layer = HebbLinear(12, 6, None, rule=SoftHebbRule(), eta=0.05, beta=0.9, post=None)
    learner = HebbianLearner(nn.Sequential(layer))
    learner.freeze_c()
    folded = []
    fold = layer.fold_momentum_
    layer.fold_momentum_ = lambda: (folded.append(1), fold())
    for s in range(3):
        x, _ = batch(seed=s)
        learner.step(x, torch.zeros(8, dtype=torch.long))  # (SoftHebb ignores the labels)
        assert layer.held == "dense"
    assert not folded
    assert torch.isfinite(layer.momentum).all() and layer.momentum.abs().sum() > 0


def test_channels_last_max_pool_equals_torch_max_pool():
    """The conv nets' max-pool runs in channels-last layout on the CPU when no gradient flows through
    it: the same values as nn.MaxPool2d, in the same layout; with autograd it is PyTorch's own op."""
    from hebbedge.models import MaxPool2d

    x = torch.randn(5, 7, 13, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, theirs = MaxPool2d(4, 2, padding=1), nn.MaxPool2d(4, 2, padding=1)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert torch.equal(a, b) and a.is_contiguous()
    x.requires_grad_()
    a, b = ours(x), theirs(x)
    assert torch.equal(a, b) and a.grad_fn.name() == b.grad_fn.name()
