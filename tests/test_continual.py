"""The Avalanche strategy, the two protocols, and resumable stream runs."""

import json

import pytest
import torch
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.training.plugins import EvaluationPlugin
from torch.utils.data import TensorDataset

from hebbedge.continual import StreamRun, run_stream
from hebbedge.learner import HebbianLearner
from hebbedge.metrics import AccuracyMatrixPlugin, OwnClassesAccuracy, own_classes_correct, summarize
from hebbedge.models import thesis_linear
from hebbedge.strategy import FreezeCPlugin, HebbianStrategy


def tiny_benchmark(seed: int = 0):
    """Two experiences of two classes each; each class is noise around its own random prototype."""
    g = torch.Generator().manual_seed(seed)
    prototypes = 2 * torch.randn(4, 1, 4, 4, generator=g)

    def dataset(n):
        y = torch.arange(n) % 4
        x = torch.randn(n, 1, 4, 4, generator=g) + prototypes[y]
        ds = TensorDataset(x, y)
        ds.targets = y
        return ds
    return nc_benchmark(dataset(256), dataset(128), n_experiences=2, task_labels=False, seed=seed)


def tiny_strategy(plugins=(), eta: float = 0.3):
    torch.manual_seed(0)
    model = thesis_linear(in_features=16, widths=(12,), n_classes=4, eta=eta)
    matrix = AccuracyMatrixPlugin()
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), OwnClassesAccuracy(),
                                 forgetting_metrics(experience=False, stream=True), loggers=[])
    strategy = HebbianStrategy(model=model, train_mb_size=16, eval_mb_size=64, plugins=[matrix, *plugins], evaluator=evaluator)
    return strategy, matrix


def test_strategy_trains_two_experiences_through_avalanche():
    bm = tiny_benchmark()
    strategy, matrix = tiny_strategy()
    before = [l.weight.clone() for l in strategy.learner.layers]
    for exp in bm.train_stream:
        strategy.train(exp)
        strategy.eval(bm.test_stream)
    assert strategy.clock.train_iterations == 2 * 128 // 16
    assert all(not torch.equal(b, l.weight) for b, l in zip(before, strategy.learner.layers))
    for protocol, rows in matrix.rows.items():
        assert len(rows) == 2 and all(len(r) == 2 for r in rows), protocol
    # It learned the experience it just saw (chance within two classes is 50%).
    assert matrix.rows["task-aware"][0][0] > 0.75 and matrix.rows["task-aware"][1][1] > 0.75
    # Our forgetting from the matrix equals Avalanche's own StreamForgetting (class-incremental).
    ours = summarize(matrix.rows["class-incremental"])["forgetting"]
    theirs = strategy.evaluator.get_last_metrics()["StreamForgetting/eval_phase/test_stream"]
    assert ours == pytest.approx(theirs)


def test_weights_change_only_through_the_learner(monkeypatch):
    bm = tiny_benchmark()
    strategy, _ = tiny_strategy()
    layers = strategy.learner.layers
    assert {id(p) for g in strategy.optimizer.param_groups for p in g["params"]} == {id(p) for p in strategy.model.parameters()}
    assert all(id(l.weight) not in {id(p) for p in strategy.model.parameters()} for l in layers)
    last = [[l.weight.clone()] for l in layers]
    calls = []
    original = HebbianLearner.local_update

    def watched(self, target):
        # Between two learner updates nothing else may have touched the weights.
        assert all(torch.equal(l.weight, w[0]) for l, w in zip(layers, last))
        out = original(self, target)
        for l, w in zip(layers, last):
            w[0] = l.weight.clone()
        calls.append(1)
        return out

    monkeypatch.setattr(HebbianLearner, "local_update", watched)
    strategy.train(bm.train_stream[0])
    strategy.eval(bm.test_stream)
    assert len(calls) == 128 // 16
    assert all(torch.equal(l.weight, w[0]) for l, w in zip(layers, last))  # eval changed nothing


def test_frozen_c_stays_fixed_and_no_optimizer_step_runs():
    bm = tiny_benchmark()
    strategy, _ = tiny_strategy(plugins=[FreezeCPlugin(after=0)])
    steps = []
    strategy.optimizer.register_step_post_hook(lambda *a: steps.append(1))
    strategy.train(bm.train_stream[0])
    assert len(steps) == 128 // 16 and strategy.learner.frozen
    c_before = [p.detach().clone() for p in strategy.model.parameters()]
    w_before = [l.weight.clone() for l in strategy.learner.layers]
    strategy.train(bm.train_stream[1])
    assert len(steps) == 128 // 16  # no step in the frozen experience
    assert all(torch.equal(a, b) for a, b in zip(c_before, strategy.model.parameters()))
    assert all(p.grad is None for p in strategy.model.parameters())
    assert all(not torch.equal(a, l.weight) for a, l in zip(w_before, strategy.learner.layers))  # still learning


def test_protocols_on_a_hand_made_example():
    logits = torch.tensor([[5.0, 1.0, 9.0, 0.0],   # overall argmax 2; within {0, 1}: 0
                           [0.0, 2.0, 9.0, 1.0],   # overall 2; within {0, 1}: 1
                           [3.0, 4.0, 0.0, 0.0]])  # overall 1; within {0, 1}: 1
    target = torch.tensor([0, 1, 0])
    assert own_classes_correct(logits, target, [0, 1]) == 2
    assert (logits.argmax(1) == target).sum().item() == 0  # class-incremental: none right
    matrix = [[1.0, 0.0, 0.0],
              [0.6, 0.9, 0.0],
              [0.2, 0.5, 0.8]]
    s = summarize(matrix)
    assert s["final_avg_acc"] == pytest.approx(0.5)
    assert s["forgetting"] == pytest.approx(((1.0 - 0.2) + (0.9 - 0.5)) / 2)
    assert s["bwt"] == pytest.approx(-0.6)
    assert summarize([[0.7, 0.9]]) == {"final_avg_acc": pytest.approx(0.8), "forgetting": None, "bwt": None}


def quick(learner: str = "hebbian", **kw) -> StreamRun:
    return StreamRun("split-mnist", learner, seed=1, train_size=1500, test_size=500, **kw)


@pytest.mark.parametrize("learner", ["hebbian", "naive"])
def test_resume_gives_the_same_final_weights(tmp_path, learner):
    device = torch.device("cpu")
    whole = run_stream(quick(learner), tmp_path / "whole", device, progress=False)
    assert run_stream(quick(learner), tmp_path / "cut", device, progress=False, stop_after=2) == {}
    assert not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        run_stream(quick(learner), tmp_path / "cut", device, progress=False)
    resumed = run_stream(quick(learner), tmp_path / "cut", device, progress=False, resume=True)
    assert resumed["protocols"] == whole["protocols"]
    a = torch.load(tmp_path / "whole" / "model.pt")
    b = torch.load(tmp_path / "cut" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["protocols"] == whole["protocols"]
    assert [p.name for p in (tmp_path / "cut").iterdir() if p.name.endswith(".tmp")] == []


def test_freeze_c_after_is_only_for_hebbian_learners():
    with pytest.raises(ValueError, match="freeze-c-after"):
        quick("ewc", freeze_c_after=1)
    with pytest.raises(ValueError, match="valid: hebbian, frozen-c, random, softhebb, swta, hpca, wta, hybrid-bottom-hebb, hybrid-top-hebb, naive"):
        quick("magic")


def test_synaptic_intelligence_importance_is_not_zero_on_cpu():
    """Avalanche 0.6 aliases SI's old/new weights on CPU (SI == Naive); hebbedge.avalanche_fixes copies them."""
    import hebbedge.continual  # noqa: F401  (applies the fix)
    from avalanche.training import SynapticIntelligence

    torch.manual_seed(0)
    model = thesis_linear(in_features=16, widths=(12,), n_classes=4, hebbian=False)
    strategy = SynapticIntelligence(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                    criterion=torch.nn.CrossEntropyLoss(), si_lambda=1.0, train_mb_size=16,
                                    evaluator=EvaluationPlugin(loggers=[]))
    strategy.train(tiny_benchmark().train_stream[0])
    si = next(p for p in strategy.plugins if type(p).__name__ == "SynapticIntelligencePlugin")
    assert all(w.data.abs().sum() > 0 for w in si.ewc_data[1].values())


def test_split_cifar10_conv_stream_runs_end_to_end(tmp_path):
    """The conv configuration through the Hebbian strategy, on a tiny made-up CIFAR-10."""
    from test_scenarios import write_cifar

    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=20)
    run = StreamRun("split-cifar10", "hebbian", seed=0, freeze_c_after=0)
    results = run_stream(run, tmp_path / "run", torch.device("cpu"), data_dir=str(tmp_path / "data"), progress=False)
    matrix = results["protocols"]["task-aware"]["matrix"]
    assert len(matrix) == 5 and all(len(r) == 5 for r in matrix)
    assert all(0.0 <= v <= 1.0 for r in matrix for v in r)


@pytest.mark.parametrize("learner", ["softhebb", "swta", "hpca", "wta"])
def test_unsupervised_learners_run_two_split_mnist_experiences(tmp_path, learner):
    run = StreamRun("split-mnist", learner, seed=0, train_size=1500, test_size=500, experiences=2)
    results = run_stream(run, tmp_path, torch.device("cpu"), progress=False)
    matrix = results["protocols"]["task-aware"]["matrix"]
    assert len(matrix) == 2 and len(matrix[0]) == 5
    assert matrix[0][0] > 0.6 and matrix[1][1] > 0.6  # each learned the experience it just saw (chance 0.5)
    state = torch.load(tmp_path / "model.pt")
    assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("learner", ["hybrid-bottom-hebb", "hybrid-top-hebb"])
def test_hybrid_stacks_learn_by_both_rules(tmp_path, learner):
    from hebbedge.continual import make_strategy
    from hebbedge.layers import HebbLayer
    from hebbedge.scenarios import load_config, make_stream

    run = StreamRun("split-mnist", learner, seed=0, train_size=1500, test_size=500, experiences=2)
    results = run_stream(run, tmp_path, torch.device("cpu"), progress=False)
    assert results["protocols"]["task-aware"]["matrix"][1][1] > 0.6
    # Both kinds of layer are in the stack the config names, and both learn.
    cfg = load_config("split-mnist")
    stack = list(getattr(cfg.hybrid, learner.removeprefix("hybrid-").replace("-", "_")))
    strategy = make_strategy(run, cfg, (1, 28, 28), 10, torch.device("cpu"), [], EvaluationPlugin(loggers=[]))
    layers = [m for m in strategy.model if isinstance(m, (HebbLayer, torch.nn.Linear))]
    assert [isinstance(m, HebbLayer) for m in layers] == stack
    before = [m.weight.detach().clone() for m in layers]
    strategy.train(make_stream("split-mnist", seed=0, train_size=600, test_size=200).train_stream[0])
    assert all(not torch.equal(b, m.weight) for b, m in zip(before, layers))


def test_the_hebbian_section_names_the_optimizer_on_c():
    from hebbedge.config import with_overrides
    from hebbedge.continual import make_strategy
    from hebbedge.scenarios import load_config

    run = StreamRun("split-mnist", "hebbian", seed=0)
    cfg = with_overrides(load_config("split-mnist"), {"hebbian": {"optimizer": "sgd", "sgd_momentum": 0.9, "lr": 0.1}})
    strategy = make_strategy(run, cfg, (1, 28, 28), 10, torch.device("cpu"), [], EvaluationPlugin(loggers=[]))
    assert isinstance(strategy.optimizer, torch.optim.SGD) and strategy.optimizer is strategy.learner.optimizer
    assert (strategy.optimizer.defaults["momentum"], strategy.optimizer.defaults["lr"]) == (0.9, 0.1)


@pytest.mark.parametrize("name, cls, momentum", [("adam", torch.optim.Adam, None), ("sgd", torch.optim.SGD, 0.9)])
def test_the_backprop_section_names_the_baselines_optimizer(name, cls, momentum):
    from hebbedge.config import with_overrides
    from hebbedge.continual import make_strategy
    from hebbedge.scenarios import load_config

    cfg = with_overrides(load_config("split-mnist"), {"backprop": {"optimizer": name, "sgd_momentum": 0.9, "lr": 0.02}})
    strategy = make_strategy(StreamRun("split-mnist", "ewc", seed=0), cfg, (1, 28, 28), 10, torch.device("cpu"), [],
                             EvaluationPlugin(loggers=[]))
    assert type(strategy.optimizer) is cls and strategy.optimizer.defaults["lr"] == 0.02
    assert strategy.optimizer.defaults.get("momentum") == momentum


def test_hybrid_cannot_freeze_c_and_needs_linear():
    from hebbedge.learner import HebbianLearner

    model = thesis_linear(in_features=16, widths=(8,), n_classes=4, hebbian=(True, False))
    learner = HebbianLearner(model, sgd_lr=0.1)
    assert [g["lr"] for g in learner.optimizer.param_groups] == [0.03, 0.1]
    with pytest.raises(ValueError, match="cannot be frozen"):
        learner.freeze_c()
    with pytest.raises(ValueError, match="one flag per layer"):
        thesis_linear(in_features=16, widths=(8,), n_classes=4, hebbian=(True,))
