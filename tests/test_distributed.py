"""hebbedge.distributed under torchrun (2 processes, gloo, float64) against one process on the same global batches.

One torchrun launch runs every scenario (this file is also the worker: ``python -m torch.distributed.run
--nproc-per-node 2 tests/test_distributed.py OUT``); each rank saves its states after every step, and the
tests compare them with a single process stepping through the same global batches:

- Hebbian descent and the cross-entropy are means over samples: equal to the single-process step;
- the contrastive rule: equal to the single-process step under ``ShardMean(rule, 2)`` (the stated relation),
  and measurably different from the plain single-process step;
- the backprop twin (DDP) and the LDA readout's sums: equal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hebbedge.backprop import BackpropLearner
from hebbedge.distributed import ShardMean, shard_rows
from hebbedge.layers import HebbLayer
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_linear
from hebbedge.readout import LDAReadout
from hebbedge.rules import ContrastiveRule, GradientRule, contrastive_masks
from tinydata import write_tiny_mnist

WORLD, BATCH, STEPS, IN, CLASSES = 2, 8, 4, 12, 3
POISON_STEP = 2  # the step at which one sample of rank 1's shard carries the value that PoisonRule refuses
TOL = 1e-6


# -- shared by the workers and the tests --------------------------------------------------------------

class PoisonRule(GradientRule):
    """`rule`, except that dL/du is NaN when some output is saturated at exactly +-1 (only the poisoned
    sample's is): a non-finite direction on one shard only."""

    def __init__(self, rule: GradientRule) -> None:
        self.rule = rule

    def output_grad(self, out, target, activation):
        g = self.rule.output_grad(out, target, activation)
        return g * float("nan") if bool((out.abs() == 1.0).any()) else g


def batches(poison: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for step in range(STEPS):
        x = torch.randn(BATCH, IN, generator=g, dtype=torch.float64)
        y = torch.randint(0, CLASSES, (BATCH,), generator=g)
        if poison and step == POISON_STEP:
            x[-1] = 1000.0  # the last sample, in rank 1's shard: saturates the first layer's tanh
        out.append((x, y))
    return out


def hebbian_model(widths=(6, 5), beta=0.9) -> torch.nn.Module:
    torch.manual_seed(0)
    return thesis_linear(in_features=IN, widths=widths, n_classes=CLASSES, eta=0.05, beta=beta, label_smoothing=0.1)


def backprop_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return thesis_linear(in_features=IN, widths=(6, 5), n_classes=CLASSES, hebbian=False)


def features_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return thesis_linear(in_features=IN, widths=(6,), n_classes=CLASSES)[:-1].eval()  # (fixed: eval mode never learns)


def snapshot(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_hebbian(learner, steps, shard: slice = slice(None), frozen=False) -> list[dict]:
    if frozen:
        learner.freeze_c()
    states = []
    for x, y in steps:
        skipped = learner.step(x[shard], y[shard]).skipped_layers
        states.append({**snapshot(learner.model), "skipped": skipped})
    return states


def wrap_rules(model, make, only: int | None = None) -> torch.nn.Module:
    """Each Hebbian layer's rule r replaced by make(r) (only the layer at index `only` of the model, if given)."""
    for i, layer in enumerate(model):
        if isinstance(layer, HebbLayer) and only in (None, i):
            layer.rule = make(layer.rule)
    return model


# -- the worker (run by torchrun) ---------------------------------------------------------------------

def worker(out: Path, data_dir: str) -> None:
    from hebbedge import distributed as hd
    from hebbedge.train import TrainConfig

    torch.set_default_dtype(torch.float64)
    hd.init("cpu")
    rank, shard = hd.rank(), hd.shard_rows(BATCH)
    steps = batches()
    result = {
        "hebbian": run_hebbian(hd.DistributedHebbianLearner(hebbian_model()), steps, shard),
        "output": run_hebbian(hd.DistributedHebbianLearner(hebbian_model(widths=())), steps, shard),
        "frozen": run_hebbian(hd.DistributedHebbianLearner(hebbian_model()), steps, shard, frozen=True),
        "frozen-no-momentum": run_hebbian(hd.DistributedHebbianLearner(hebbian_model(beta=0.0)), steps, shard, frozen=True),
        # Without the reductions: the plain learner on each rank's shard.
        "unreduced": run_hebbian(HebbianLearner(hebbian_model()), steps, shard),
        "dropped": run_hebbian(hd.DistributedHebbianLearner(wrap_rules(hebbian_model(), PoisonRule, only=1)), batches(poison=True), shard),
    }
    model = backprop_model()
    learner = hd.distributed_backprop(model)
    result["backprop"] = []
    for x, y in steps:
        learner.step(x[shard], y[shard])
        result["backprop"].append(snapshot(model))
    readout = hd.DistributedReadout(features_model(), LDAReadout(6, CLASSES))
    result["lda"] = []
    for i, (x, y) in enumerate(steps):
        readout.step(x[shard], y[shard])
        if i in (1, STEPS - 1):  # synced twice: pending sums must not be counted again
            readout.sync()
    result["lda"] = {**snapshot(readout.readout), "predictions": readout.model.eval()(steps[0][0]).argmax(1)}
    result["bytes"] = hd.reduced_bytes(hd.DistributedHebbianLearner(hebbian_model()))
    # The entry point on made-up MNIST files (float32, like a real run): the run for two learners,
    # then the command line, whose rank 0 writes the record (main ends the process group).
    torch.set_default_dtype(torch.float32)
    for learner in ("adam", "lda"):
        cfg = TrainConfig(learner="adam", widths=(16,), epochs=1, batch_size=8, train_size=41, val_size=20)
        result[f"run-{learner}"] = hd.run(cfg, "cpu", data_dir, progress=False, learner=learner)
    torch.save(result, out / f"rank{rank}.pt")
    hd.main(["mnist", "--learner", "hebbian", "--widths", "16", "--epochs", "2", "--batch-size", "8", "--train-size", "41",
             "--val-size", "20", "--device", "cpu", "--data-dir", data_dir, "--out", str(out / "cli")])


# -- launching ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD), "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The one torchrun launch of every scenario: (its output folder, the finished process)."""
    out = tmp_path_factory.mktemp("dist")
    data_dir = write_tiny_mnist(tmp_path_factory.mktemp("data"))
    proc = torchrun(__file__, str(out), str(data_dir))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@pytest.fixture(scope="module")
def ranks(launch) -> list[dict]:
    return [torch.load(launch[0] / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def relative_error(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-30)) if torch.is_tensor(a[k]) else float(a[k] != b[k])
               for k in a)


def assert_same_steps(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) == STEPS
    for step, (g, w) in enumerate(zip(got, want)):
        assert relative_error(g, w) <= TOL, f"step {step}: relative error {relative_error(g, w):.2e}"


# -- tests ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["hebbian", "frozen", "frozen-no-momentum"])
def test_contrastive_step_equals_single_process_step_under_shard_mean(ranks, scenario):
    beta = 0.0 if scenario == "frozen-no-momentum" else 0.9
    frozen = scenario != "hebbian"
    reference = run_hebbian(HebbianLearner(wrap_rules(hebbian_model(beta=beta), lambda r: ShardMean(r, WORLD))), batches(), frozen=frozen)
    for r in range(WORLD):
        assert_same_steps(ranks[r][scenario], reference)
    # The relation is not a formality: the plain single-process step on the global batch differs.
    plain = run_hebbian(HebbianLearner(hebbian_model(beta=beta)), batches(), frozen=frozen)
    assert relative_error(ranks[0][scenario][-1], plain[-1]) > 1e-3


def test_hebbian_descent_and_c_training_equal_single_process_step(ranks):
    # An output layer alone: Hebbian descent and the cross-entropy are means over samples.
    reference = run_hebbian(HebbianLearner(hebbian_model(widths=())), batches())
    for r in range(WORLD):
        assert_same_steps(ranks[r]["output"], reference)
    assert relative_error(reference[-1], {**snapshot(hebbian_model(widths=())), "skipped": 0}) > 1e-3  # it did learn


def test_without_reduction_ranks_diverge(ranks):
    reference = run_hebbian(HebbianLearner(wrap_rules(hebbian_model(), lambda r: ShardMean(r, WORLD))), batches())
    assert relative_error(ranks[0]["unreduced"][-1], ranks[1]["unreduced"][-1]) > 1e-3
    assert relative_error(ranks[0]["unreduced"][-1], reference[-1]) > 1e-3


def test_direction_dropped_on_one_rank_is_dropped_on_all(ranks):
    states = [ranks[r]["dropped"] for r in range(WORLD)]
    for step in range(STEPS):
        assert relative_error(states[0][step], states[1][step]) == 0.0  # the ranks stay bit-identical
    before, after = states[0][POISON_STEP - 1], states[0][POISON_STEP]
    first = "1.momentum"  # the first hidden layer: the only one that sees the poisoned input
    assert torch.equal(after[first], before[first])
    assert not torch.equal(after["2.momentum"], before["2.momentum"])
    assert all(s[POISON_STEP]["skipped"] == 1 for s in states)
    # And the same as one process whose shard-mean direction (NaN) is dropped.
    model = wrap_rules(wrap_rules(hebbian_model(), PoisonRule, only=1), lambda r: ShardMean(r, WORLD))
    reference = run_hebbian(HebbianLearner(model), batches(poison=True))
    assert_same_steps(states[1], reference)


def test_backprop_twin_equals_single_process_step(ranks):
    model = backprop_model()
    learner, reference = BackpropLearner(model), []
    for x, y in batches():
        learner.step(x, y)
        reference.append(snapshot(model))
    for r in range(WORLD):
        assert_same_steps(ranks[r]["backprop"], reference)


def test_readout_sums_equal_one_process_on_the_union(ranks):
    features, readout = features_model().eval(), LDAReadout(6, CLASSES)
    with torch.no_grad():
        for x, y in batches():
            readout.accumulate(features(x), y)
        predictions = torch.nn.Sequential(features, readout).eval()(batches()[0][0]).argmax(1)
    for r in range(WORLD):
        got = dict(ranks[r]["lda"])
        assert torch.equal(got.pop("predictions"), predictions)
        assert relative_error(got, snapshot(readout)) <= TOL
    assert float(readout.count.sum()) == BATCH * STEPS


def test_shard_mean_is_world_times_the_within_shard_part_of_the_global_loss():
    """The stated relation for the contrastive rule, via autograd: the mean of the shards' directions is
    -R d/dW of the global loss (a mean over the B x B pairs) restricted to pairs within one shard, with
    label smoothing's share alpha / (B/R - 1); the global direction, with every pair, differs."""
    alpha = 0.1
    x, y = batches()[0]
    w = hebbian_model(widths=(6,))[1].weight.clone().requires_grad_(True)
    out = torch.tanh(x @ w.T)
    yn = out / (out.norm(dim=1, keepdim=True) + 1e-8)
    s = yn @ yn.T
    m_pos, m_neg = torch.zeros(BATCH, BATCH), torch.zeros(BATCH, BATCH)
    for r in range(WORLD):
        rows = shard_rows(BATCH, r, WORLD)
        m_pos[rows, rows], m_neg[rows, rows] = contrastive_masks(y[rows], alpha, x.dtype)
    within = (m_pos * (1 - s) + m_neg * s.abs()).sum() / BATCH**2
    expected = -WORLD * torch.autograd.grad(within, w)[0]

    def direction(rule):  # D = -(dL/du)^T x, a linear layer's (eq. 4.21)
        return -rule.output_grad(out.detach(), y, "tanh").T @ x

    rule = ContrastiveRule(alpha)
    assert torch.allclose(direction(ShardMean(rule, WORLD)), expected, rtol=1e-10, atol=1e-14)
    assert not torch.allclose(direction(rule), expected, rtol=1e-3)


def test_uneven_global_batch_is_refused_with_the_world_size():
    with pytest.raises(ValueError, match="multiple of the world size 3"):
        shard_rows(10, 0, 3)


def test_reduced_bytes_counts_c_gradients_momenta_and_flags(ranks):
    model = hebbian_model()
    c = sum(p.numel() for p in model.parameters())
    m = sum(v.numel() for k, v in model.state_dict().items() if k.endswith("momentum"))
    assert ranks[0]["bytes"] == 8 * (c + m) + 8 * 3  # float64; one int64 flag per learning layer


def test_command_line_trains_mnist_and_rank_0_writes_the_record(launch):
    out, proc = launch
    record = json.loads((out / "cli" / "result.json").read_text())
    assert proc.stdout.count("test accuracy") == 1  # rank 0 only
    assert record["world_size"] == WORLD and record["learner"] == "hebbian" and record["finished"]
    assert record["train_samples"] == 40  # 41 cut to a multiple of the world size
    assert record["epochs_done"] == 2 and 0.0 <= record["test_acc"] <= 1.0
    assert record["reduced_bytes_per_step"] > 0 and len(record["data"]) == 4  # the four IDX files read
    state = torch.load(out / "cli" / "checkpoint.pt")
    assert "1.momentum" in state["learner"]["model"]
    assert sorted(p.name for p in (out / "cli").iterdir()) == ["checkpoint.pt", "result.json"]  # no temporaries left


def test_hebbedge_train_under_torchrun_trains_across_processes(tmp_path):
    """The user's command: `torchrun --no-python hebbedge train mnist ...`; rank 0 alone writes and prints."""
    data_dir = write_tiny_mnist(tmp_path / "data")
    out = tmp_path / "run"
    proc = torchrun("--no-python", str(Path(sys.executable).with_name("hebbedge")), "train", "mnist", "--widths", "16",
                    "--batch-size", "8", "--val-size", "20", "--device", "cpu", "--data-dir", str(data_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("test accuracy") == 1
    record = json.loads((out / "result.json").read_text())
    assert record["world_size"] == WORLD and record["train_samples"] == 80 and record["finished"]
    assert json.loads((out / "config.json").read_text())["run"]["learner"] == "hebbian"


@pytest.mark.parametrize("learner", ["adam", "lda"])
def test_run_gives_every_rank_the_same_record(ranks, learner):
    records = [ranks[r][f"run-{learner}"] for r in range(WORLD)]
    assert records[0]["test_acc"] == records[1]["test_acc"]
    assert records[0]["world_size"] == WORLD and records[0]["learner"] == learner
    bytes_key = "reduced_bytes_per_sync" if learner == "lda" else "reduced_bytes_per_step"
    assert records[0][bytes_key] > 0
    if learner == "lda":  # one pass over 40 samples of well-separated made-up classes (chance: 0.1)
        assert records[0]["test_acc"] > 0.5


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2])
