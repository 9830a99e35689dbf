"""FastHebb forms equal their per-patch references (*Scalable bio-inspired training of Deep Neural
Networks with FastHebb*, Section 3.3)."""

import pytest
import torch

from hebbedge.fasthebb import (conv_patches, conv_patches_reference, hpca_fast, hpca_reference, swta_fast,
                               swta_reference)

TOL = 1e-5


def close(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() < TOL


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (1, 2)])
def test_conv_patches_match_the_patch_by_patch_cut(stride, padding):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    assert torch.allclose(conv_patches(x, 3, stride, padding), conv_patches_reference(x, 3, stride, padding))


@pytest.mark.parametrize("source", ["linear", "conv"])
def test_swta_fast_equals_per_patch_reference(source):
    torch.manual_seed(0)
    if source == "linear":
        c = torch.randn(40, 12, dtype=torch.float64)
    else:
        c = conv_patches(torch.randn(2, 3, 7, 7, dtype=torch.float64), 3, stride=2, padding=1)
    b = torch.randn(6, c.shape[1], dtype=torch.float64) * 0.3
    for temperature in (0.5, 2.0):
        assert close(swta_fast(c, b, 0.01, temperature), swta_reference(c, b, 0.01, temperature))


@pytest.mark.parametrize("source", ["linear", "conv"])
def test_hpca_fast_equals_per_patch_reference(source):
    torch.manual_seed(1)
    if source == "linear":
        c = torch.randn(30, 10, dtype=torch.float64)
    else:
        c = conv_patches(torch.randn(2, 2, 6, 6, dtype=torch.float64), 3, stride=1, padding=1)
    b = torch.randn(5, c.shape[1], dtype=torch.float64) * 0.3
    assert close(hpca_fast(c, b, 0.01), hpca_reference(c, b, 0.01))


def test_hpca_first_neuron_follows_oja():
    # For q = 1 the rule is Oja's: db = alpha a (c - a b), averaged.
    torch.manual_seed(2)
    c, b = torch.randn(20, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    a = c @ b[0]
    oja = 0.1 * (a[:, None] * (c - a[:, None] * b[0])).mean(0)
    assert torch.allclose(hpca_fast(c, b, 0.1)[0], oja)


def test_two_phase_baselines_equal_the_references():
    from hebbedge.fasthebb import hpca_two_phase, swta_two_phase

    torch.manual_seed(3)
    c = conv_patches(torch.randn(2, 3, 6, 6, dtype=torch.float64), 3, padding=1)
    b = torch.randn(4, c.shape[1], dtype=torch.float64) * 0.3
    assert close(swta_two_phase(c, b, 0.01, 1.0, chunk=7), swta_reference(c, b, 0.01, 1.0))
    assert close(hpca_two_phase(c, b, 0.01, chunk=7), hpca_reference(c, b, 0.01))


def test_fasthebb_bench_command_writes_both_rules(tmp_path):
    import json

    from typer.testing import CliRunner

    from hebbedge.cli.app import app

    out = tmp_path / "fh.json"
    result = CliRunner().invoke(app, ["bench", "fasthebb", "--batches", "1", "--batch-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    for rule in ("swta", "hpca"):
        r = record["rules"][rule]
        assert r["per_patch_epoch_seconds"] > 0 and r["fasthebb_epoch_seconds"] > 0
        assert r["speedup"] == r["per_patch_epoch_seconds"] / r["fasthebb_epoch_seconds"]


def test_softhebb_update_equals_eq2_on_a_hand_checked_case():
    from hebbedge.layers import HebbLinear
    from hebbedge.rules import SoftHebbRule

    # Two neurons, two inputs, one sample; weights on the unit circle scaled to norm 2 (rate (2-1)^q = 1).
    layer = HebbLinear(2, 2, "tanh", rule=SoftHebbRule(temperature=1.0, q=0.5, anti_hebbian=False), post=None).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64))
    x = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    u = torch.tensor([2.0, 1.0], dtype=torch.float64)  # w_k . x
    y = torch.exp(u) / torch.exp(u).sum()
    expected = torch.stack([y[k] * (x[0] - u[k] * layer.weight[k]) for k in range(2)])  # eq. 2 with eta = 1
    d_w, _ = layer.direction(x, None, None)
    assert torch.allclose(d_w, expected)
    layer.rule.anti_hebbian = True  # the winner (neuron 0) keeps its update, the other is negated
    d_w, _ = layer.direction(x, None, None)
    assert torch.allclose(d_w, expected * torch.tensor([[1.0], [-1.0]], dtype=torch.float64))


def test_softhebb_adaptive_rate_vanishes_at_unit_norm():
    from hebbedge.rules import SoftHebbRule

    rule = SoftHebbRule(q=0.5)
    norms = torch.tensor([3.0, 2.0, 1.5, 1.1, 1.01, 1.0], dtype=torch.float64)
    w = torch.diag(norms)
    rates = rule.adaptive_rate(w)
    assert torch.allclose(rates, (norms - 1).pow(0.5))
    assert rates[-1] == 0 and (rates[:-1].diff() < 0).all()
    c = torch.randn(10, 6, dtype=torch.float64)
    assert rule.update(c, w)[-1].abs().max() == 0  # a neuron on the unit sphere no longer moves


@pytest.mark.parametrize("rule_name", ["SWTARule", "HPCARule", "SoftHebbRule"])
def test_patch_rules_on_a_conv_layer_use_its_receptive_fields(rule_name):
    import hebbedge.rules as rules
    from hebbedge.layers import HebbConv2d

    torch.manual_seed(5)
    layer = HebbConv2d(3, 4, 3, stride=2, padding=1, rule=getattr(rules, rule_name)(), post=None).double()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    d_w, _ = layer.direction(x, None, None)
    c = conv_patches_reference(x, 3, stride=2, padding=1)
    assert torch.allclose(d_w.flatten(1), layer.rule.update(c, layer.weight.flatten(1)))


def test_wta_and_teacher_rules_on_a_hand_checked_case():
    from hebbedge.layers import HebbLinear
    from hebbedge.rules import TeacherRule, WTARule

    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    c = torch.tensor([[2.0, 0.1], [0.2, 3.0]], dtype=torch.float64)  # winners: neuron 0, then neuron 1
    expected = torch.stack([c[0] - w[0], c[1] - w[1], torch.zeros(2, dtype=torch.float64)]) / 2
    assert torch.allclose(WTARule().update(c, w), expected)
    layer = HebbLinear(2, 3, None, rule=TeacherRule(), post=None).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    d_w, _ = layer.direction(c, None, torch.tensor([2, 2]))  # the teacher picks class 2 twice
    assert torch.allclose(d_w, torch.stack([torch.zeros(2), torch.zeros(2), (c - w[2]).sum(0) / 2]).double())


def test_semisup_command_probes_hebbian_and_random_features(tmp_path):
    import json

    from typer.testing import CliRunner

    from hebbedge.cli.app import app

    out = tmp_path / "semi.json"
    result = CliRunner().invoke(app, ["semisup", "mnist", "--rule", "hpca", "--fractions", "0.1,1", "--widths", "32",
                                      "--train-size", "1000", "--probe-epochs", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert {(r["features"], r["fraction"]) for r in rows} == {(f, p) for f in ("hebbian", "random") for p in (0.1, 1.0)}
    assert [r["labelled"] for r in rows if r["features"] == "hebbian"] == [100, 1000]
    assert all(r["test_acc"] > 0.5 for r in rows if r["fraction"] == 1.0)  # a linear classifier learns on either (chance 0.1)
    bad = CliRunner().invoke(app, ["semisup", "mnist", "--rule", "magic"])
    assert bad.exit_code == 2 and "valid: swta, hpca, softhebb, wta" in bad.output


def test_softhebb_network_layers_and_greedy_training():
    from hebbedge.layers import HebbConv2d
    from hebbedge.benchmarks.softhebb import Triangle, softhebb_net, train_greedy

    u = torch.tensor([[[[1.0]], [[3.0]], [[5.0]]]])  # channel mean 3
    assert torch.allclose(Triangle(2.0)(u), torch.tensor([[[[0.0]], [[0.0]], [[4.0]]]]))
    torch.manual_seed(0)
    net = softhebb_net(1, width_factor=1)
    assert all(not bn.affine for bn in net.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    convs = [m for m in net.modules() if isinstance(m, HebbConv2d)]
    assert [c.out_channels for c in convs] == [96, 96, 96]
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 96 * 3 * 3)
    before = [c.weight.clone() for c in convs]
    train_greedy(net, torch.randn(128, 1, 28, 28), batch_size=64, progress=False)
    assert all(not torch.equal(b, c.weight) for b, c in zip(before, convs))  # every layer learned
    assert all(torch.isfinite(c.weight).all() for c in convs)


def test_softhebb_layer_order_changes_what_passes_upward_not_what_a_layer_learns():
    """Appendix A.3's text pools before the Triangle, Table 4 after it. A layer's rule sees its input
    patches, so the first layer learns the same weights either way; the layers above see different inputs."""
    from hebbedge.layers import HebbConv2d
    from hebbedge.benchmarks.softhebb import Triangle, softhebb_net, train_greedy

    x = torch.randn(96, 1, 28, 28)
    nets = {}
    for order in ("pool-triangle", "triangle-pool"):
        torch.manual_seed(0)
        nets[order] = softhebb_net(1, width_factor=1, order=order)
        triangle_at = 2 if order == "triangle-pool" else 3  # after BatchNorm and the conv
        assert all(isinstance(block[triangle_at], Triangle) and isinstance(block[5 - triangle_at], (torch.nn.MaxPool2d, torch.nn.AvgPool2d))
                   for block in nets[order][:-1])
        train_greedy(nets[order], x, batch_size=32, progress=False)
    convs = {order: [m.weight for m in net.modules() if isinstance(m, HebbConv2d)] for order, net in nets.items()}
    assert torch.equal(convs["pool-triangle"][0], convs["triangle-pool"][0])
    assert not torch.allclose(convs["pool-triangle"][1], convs["triangle-pool"][1])
    with pytest.raises(ValueError, match="expected one of pool-triangle, triangle-pool"):
        softhebb_net(1, width_factor=1, order="triangle")


def test_softhebb_max_normalised_update_against_a_per_patch_loop():
    """normalise="max" (the authors' code): the batch's summed eq.-2 update divided by its largest
    absolute entry, then the norm-dependent rate; checked in float64 against a loop over patches."""
    from hebbedge.rules import SoftHebbRule

    g = torch.Generator().manual_seed(0)
    c, w = torch.randn(20, 6, generator=g, dtype=torch.float64), 2 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    rule = SoftHebbRule(temperature=0.7, normalise="max")
    total = torch.zeros_like(w)
    for x in c:  # eq. 2 per patch, anti-Hebbian for every neuron but the winner
        u = w @ x
        y = torch.softmax(u / 0.7, dim=0) * torch.where(u == u.max(), 1.0, -1.0)
        total += torch.stack([y[k] * (x - u[k] * w[k]) for k in range(len(w))])
    expected = rule.adaptive_rate(w)[:, None] * total / total.abs().max()
    assert torch.allclose(rule.update(c, w), expected)
    mean = SoftHebbRule(temperature=0.7).update(c, w)
    assert torch.allclose(mean, rule.adaptive_rate(w)[:, None] * total / len(c))  # the default: the mean over patches
    with pytest.raises(ValueError, match="expected one of mean, max"):
        SoftHebbRule(normalise="sum")


def test_softhebb_table4_columns():
    from hebbedge.layers import HebbConv2d
    from hebbedge.benchmarks.softhebb import layer_widths, softhebb_net

    # the channel counts printed in Table 4 (width factor 4)
    assert layer_widths("mnist-cifar", 4) == [96, 384, 1536]
    assert layer_widths("stl10", 4) == [96, 384, 1536, 6144]
    assert layer_widths("imagenet", 4) == [48, 192, 768, 3072, 12288]
    with pytest.raises(ValueError, match="expected one of mnist-cifar, stl10, imagenet"):
        layer_widths("cifar100", 4)
    for arch, side, out_side, kernels in (("stl10", 96, 6, [5, 3, 3, 3]), ("imagenet", 160, 5, [5, 3, 3, 3, 5])):
        net = softhebb_net(3, width_factor=1, arch=arch).eval()
        convs = [m for m in net.modules() if isinstance(m, HebbConv2d)]
        assert [c.kernel_size[0] for c in convs] == kernels
        width = layer_widths(arch, 1)[-1]
        assert net(torch.zeros(1, 3, side, side)).shape == (1, width * out_side**2)  # each pooling halves the side


def test_softhebb_command_reports_the_random_weights_control(tmp_path):
    import json

    from typer.testing import CliRunner

    from hebbedge.cli.app import app

    out = tmp_path / "sh.json"
    result = CliRunner().invoke(app, ["softhebb", "mnist", "--width-factor", "1", "--train-size", "300", "--probe-epochs", "3",
                                      "--batch-size", "25", "--order", "triangle-pool", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert 0 <= record["softhebb_test_acc"] <= 1 and 0 <= record["random_test_acc"] <= 1
    assert "random-weights control" in result.output
    # the paper's schedule by default (appendix A.6) with the label-free batch and layer order asked for,
    # and the head's curve ends at the reported accuracy
    assert (record["schedule"], record["probe_dropout"], record["probe_epochs"]) == ("paper", 0.5, 3)
    assert (record["batch_size"], record["order"], record["normalise"], record["radius"]) == (25, "triangle-pool", "mean", 3.0)
    for name in ("softhebb", "random"):
        assert len(record[f"{name}_curve"]) == 3 and record[f"{name}_curve"][-1] == record[f"{name}_test_acc"]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(app, ["softhebb", "mnist", "--arch", "cifar100"])
    assert bad.exit_code == 2 and "valid: mnist-cifar, stl10, imagenet" in bad.output
    bad = CliRunner().invoke(app, ["softhebb", "mnist", "--schedule", "slow"])
    assert bad.exit_code == 2 and "valid: paper, quick" in bad.output
    bad = CliRunner().invoke(app, ["softhebb", "mnist", "--order", "triangle"])
    assert bad.exit_code == 2 and "valid: pool-triangle, triangle-pool" in bad.output
    bad = CliRunner().invoke(app, ["softhebb", "mnist", "--normalise", "sum"])
    assert bad.exit_code == 2 and "valid: mean, max" in bad.output
    bad = CliRunner().invoke(app, ["softhebb", "mnist", "--batch-size", "0"])
    assert bad.exit_code == 2 and "--batch-size must be a positive" in bad.output
    bad = CliRunner().invoke(app, ["softhebb", "mnist", "--radius", "0"])
    assert bad.exit_code == 2 and "--radius must be positive" in bad.output


@pytest.mark.parametrize("setting, message", [({"batch_size": 0}, "--batch-size must be a positive number of images, got 0"),
                                              ({"radius": float("nan")}, "--radius must be positive"),
                                              ({"schedule": "slow"}, "unknown --schedule 'slow'; valid: paper, quick")])
def test_softhebb_run_refuses_bad_settings_before_training(setting, message):
    """The library checks what the command checks: a caller of `run` gets the same errors."""
    import torch

    from hebbedge.benchmarks.softhebb import run

    x = torch.zeros(4, 1, 28, 28)
    with pytest.raises(ValueError, match=message):
        run((x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long)), width_factor=1, progress=False, **setting)


def test_linear_probe_halves_its_rate_at_the_given_fractions(monkeypatch):
    """The SoftHebb paper's head: the rate starts at lr and is halved at 20, 35, ... 90 % of the epochs."""
    import torch

    from hebbedge.benchmarks import semisup

    rates, step = [], torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))  # one batch per epoch
    semisup.linear_probe((x, y), (x, y), 20, 1e-3, 0, n_classes=3, dropout=0.5, halve_at=(0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9))
    halvings = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]  # at epochs 4, 7, 10, 12, 14, 16, 18
    assert rates == pytest.approx([1e-3 * 0.5**k for k in halvings])
