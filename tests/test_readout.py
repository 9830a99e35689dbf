"""The streaming LDA readout: exact statistics, order independence, Avalanche agreement, strategy."""

import pytest
import torch
import torch.nn as nn
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import StreamingLDA as AvalancheSLDA
from avalanche.training.plugins import EvaluationPlugin

from hebbedge.metrics import AccuracyMatrixPlugin, OwnClassesAccuracy
from hebbedge.readout import UNSEEN, LDAReadout
from hebbedge.strategy import ReadoutStrategy
from test_continual import tiny_benchmark


def data(n: int = 300, d: int = 6, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 2 * torch.randn(classes, d, generator=g, dtype=torch.float64)[y]
    return x, y


def test_statistics_and_classifier_equal_the_plain_formulas_in_float64():
    x, y = data()
    lda = LDAReadout(6, 4, shrinkage=0.1)
    for i in range(0, len(x), 64):
        lda.accumulate(x[i:i + 64], y[i:i + 64])
    mu = torch.stack([x[y == c].mean(0) for c in range(3)])
    centred = x - mu[y]
    sigma = centred.T @ centred / len(x)
    assert torch.allclose(lda.covariance(), sigma, atol=1e-12)
    w = torch.linalg.inv(0.9 * sigma + 0.1 * torch.eye(6, dtype=torch.float64)) @ mu.T
    scores = lda(x)
    assert torch.allclose(scores[:, :3], x @ w - 0.5 * (mu.T * w).sum(0), atol=1e-10)
    assert (scores[:, 3] == UNSEEN).all()  # class 3 was never seen: never predicted
    assert (scores.argmax(1) == y).double().mean() > 0.9


def test_any_order_and_batching_of_the_stream_gives_the_same_readout():
    """The sums do not depend on data order: a class-incremental stream cannot make it forget."""
    x, y = data()
    by_class, shuffled = LDAReadout(6, 3), LDAReadout(6, 3)
    for c in range(3):  # one class after the other, in batches of 7
        xc = x[y == c]
        for i in range(0, len(xc), 7):
            by_class.accumulate(xc[i:i + 7], y[y == c][i:i + 7])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    shuffled.accumulate(x[perm], y[perm])
    for a, b in zip(by_class.solve(), shuffled.solve()):
        assert torch.allclose(a, b, atol=1e-10)


def test_bad_input_names_what_was_expected():
    lda = LDAReadout(6, 3)
    with pytest.raises(ValueError, match=r"expected features \[B, 6\]"):
        lda.accumulate(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        lda.accumulate(torch.zeros(2, 6), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shrinkage"):
        LDAReadout(6, 3, shrinkage=0.0)


def test_strategy_matches_avalanche_streaming_lda_on_a_tiny_stream():
    """Same fixed features, same stream: this readout and Avalanche's per-sample SLDA predict alike."""
    bm = tiny_benchmark()
    torch.manual_seed(0)
    features = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh())
    accuracies = []
    for make in (lambda plugins, ev: ReadoutStrategy(features=features, readout=LDAReadout(32, 4), train_mb_size=16,
                                                       eval_mb_size=64, plugins=plugins, evaluator=ev),
                 lambda plugins, ev: AvalancheSLDA(slda_model=features, criterion=nn.CrossEntropyLoss(), input_size=32,
                                                   num_classes=4, train_mb_size=16, eval_mb_size=64, plugins=plugins, evaluator=ev)):
        matrix = AccuracyMatrixPlugin()
        strategy = make([matrix], EvaluationPlugin(accuracy_metrics(experience=True), OwnClassesAccuracy(), loggers=[]))
        for exp in bm.train_stream:
            strategy.train(exp)
            strategy.eval(bm.test_stream)
        accuracies.append(matrix.rows["class-incremental"][-1])
    ours, theirs = accuracies
    assert min(ours) > 0.8  # both experiences are remembered after the second one
    assert ours == pytest.approx(theirs, abs=0.03)


def test_random_lda_runs_a_split_mnist_stream_and_is_not_exported(tmp_path):
    from test_continual import quick

    from hebbedge.continual import run_stream
    from hebbedge.export.onnx import export_run

    results = run_stream(quick("random-lda"), tmp_path / "run", torch.device("cpu"), progress=False)
    matrix = results["protocols"]["class-incremental"]["matrix"]
    assert len(matrix) == 5 and min(matrix[-1]) > 0.5  # every pair of digits kept, one head (chance 0.1)
    with pytest.raises(ValueError, match="exporting 'random-lda' runs is not supported yet"):
        export_run(tmp_path / "run", tmp_path / "edge")
