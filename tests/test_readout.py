"""The streaming LDA readout: exact statistics, order independence, Avalanche agreement, strategy."""

import math

import numpy as np
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
    precision = torch.linalg.inv(0.9 * sigma + 0.1 * torch.eye(6, dtype=torch.float64))
    m = x.mean(0)  # the centre: the mean of everything seen
    w = precision @ (mu - m).T
    scores = lda(x)
    assert torch.allclose(scores[:, :3], (x - m) @ w - 0.5 * ((mu - m).T * w).sum(0), atol=1e-10)
    # Centring changes every class's score by the same amount: the plain LDA scores rank classes alike.
    plain = x @ precision @ mu.T - 0.5 * ((mu @ precision) * mu).sum(1)
    assert torch.allclose(scores[:, :3] - scores[:, :1], plain - plain[:, :1], atol=1e-8)
    assert (scores[:, 3] == UNSEEN).all()  # class 3 was never seen: never predicted
    assert (scores.argmax(1) == y).double().mean() > 0.9


def test_float32_merge_and_gauss_jordan_equal_the_float64_sums_and_solve():
    """The edge's state (Chan merge of class means and within-class scatter) and its solve (Gauss-Jordan)
    against the float64 sums and torch.linalg.solve, in float64 (exact up to rounding)."""
    from hebbedge.readout import classifier, gauss_jordan_solve, merge

    x, y = data(n=500, d=6, classes=3)
    lda = LDAReadout(6, 4, shrinkage=0.1)
    count, mean, scatter = torch.zeros(4, dtype=torch.float64), torch.zeros(4, 6, dtype=torch.float64), torch.zeros(6, 6, dtype=torch.float64)
    for i in range(0, len(x), 37):  # uneven batches; some miss a class
        lda.accumulate(x[i:i + 37], y[i:i + 37])
        count, mean, scatter = merge(x[i:i + 37], nn.functional.one_hot(y[i:i + 37], 4).double(), count, mean, scatter)
    assert torch.allclose(count, lda.count) and torch.allclose(mean, lda.means(), atol=1e-12)
    assert torch.allclose(scatter, lda.scatter(), atol=1e-10)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)
    a = a @ a.T + 0.1 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(gauss_jordan_solve(a, b), torch.linalg.solve(a, b), atol=1e-10)
    for ours, theirs in zip(classifier(count, mean, scatter, 0.1, solve=gauss_jordan_solve), lda.solve()):
        assert torch.allclose(ours, theirs, atol=1e-9)


@pytest.mark.parametrize("n_features, estimator", [(5, "fixed"), (32, "fixed"), (70, "fixed"), (5, "oas"), (70, "oas")])
def test_the_refresh_graph_equals_the_float64_classifier_on_every_runtime(n_features, estimator, tmp_path):
    """The ONNX refresh (blocked Gauss-Jordan in a Scan, padded to whole blocks) on each runtime against
    the readout's float64 solve; 5 and 70 features exercise the padding, 32 one whole block. With "oas" the
    graph estimates the shrinkage from the state as LDAReadout.solve does (here far from the fixed 0.01)."""
    import onnx

    from hebbedge.export.graphs import refresh_model
    from hebbedge.export.runtimes import available, open_graph

    x, y = data(n=400, d=n_features, classes=6)
    lda = LDAReadout(n_features, 8, shrinkage=0.01, estimator=estimator)
    lda.accumulate(x, y)
    expected = lda.solve()
    assert (lda.shrinkage == 0.01) == (estimator == "fixed")
    path = tmp_path / "refresh.onnx"
    onnx.save(refresh_model(n_features, 8, 0.01, estimator=estimator), str(path))
    feeds = {"count": lda.count.float().numpy(), "mean": lda.means().float().numpy(), "scatter": lda.scatter().float().numpy()}
    for runtime in available():
        weight, bias, centre = open_graph(runtime, path)(feeds)
        assert np.abs(weight - expected[0].numpy()).max() < 1e-4 * np.abs(expected[0].numpy()).max(), runtime
        assert np.allclose(bias[:6], expected[1][:6].numpy(), rtol=1e-4) and (bias[6:] == UNSEEN).all(), runtime
        assert np.allclose(centre, expected[2].numpy(), atol=1e-5), runtime


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


def test_readout_run_exports_and_keeps_learning_on_the_edge_like_pytorch(tmp_path):
    """Host: two Split-MNIST experiences; edge: a third through learn.onnx and refresh.onnx. The edge's
    float32 state equals the PyTorch readout's float64 sums after the same data, and so do its predictions."""
    from test_continual import quick

    from hebbedge.continual import run_stream
    from hebbedge.export.edge import EdgeModel, load_arrays
    from hebbedge.export.onnx import export_run, load_run, stream_arrays

    run_stream(quick("random-lda", experiences=2), tmp_path / "run", torch.device("cpu"), progress=False)
    manifest = export_run(tmp_path / "run", tmp_path / "edge")
    assert manifest["kind"] == "readout" and manifest["graphs"]["learn"]["outputs"] == ["count", "mean", "scatter"]
    model, _ = load_run(tmp_path / "run")
    model.eval()
    files = stream_arrays("split-mnist", tmp_path / "data", seed=1, train_size=1500, test_size=500)
    x, y = load_arrays(files[2])  # exp2-train: the third experience, new classes
    edge = EdgeModel(tmp_path / "edge")
    edge_before = edge.accuracy(x, y)
    standardised = (torch.from_numpy(x).float() / 255 - 0.1307) / 0.3081
    before = edge.logits(x[:50])
    expected = model(standardised[:50]).detach().numpy()
    seen = model[1].count.numpy() > 0
    assert np.allclose(before[:, seen], expected[:, seen], rtol=1e-4, atol=1e-3)
    assert edge.learn(x, y, batch_size=64, shuffle_seed=None) == -(-len(x) // 64)
    edge.save()
    with torch.no_grad():
        model[1].accumulate(model[0](standardised), torch.from_numpy(y))
    readout = model[1]
    for name, value in (("count", readout.count), ("mean", readout.means()), ("scatter", readout.scatter())):
        assert np.abs(edge.state[name] - value.numpy()).max() <= 1e-4 * np.abs(value.numpy()).max(), name
    again = EdgeModel(tmp_path / "edge")  # the saved state and classifier, reloaded
    assert np.array_equal(again.state["count"], readout.count.float().numpy())
    xt, yt = load_arrays(files[7])  # exp2-test
    theirs = model(((torch.from_numpy(xt).float() / 255) - 0.1307) / 0.3081).argmax(1).numpy()
    assert (again.predict(xt) == theirs).mean() > 0.99
    assert edge_before == 0.0 and again.accuracy(xt, yt) > 0.8  # classes unseen on the host, learned on the edge


def test_avalanche_slda_runs_are_not_exported(tmp_path):
    from test_continual import quick

    from hebbedge.continual import run_stream
    from hebbedge.export.onnx import export_run

    run_stream(quick("slda", experiences=1), tmp_path / "run", torch.device("cpu"), progress=False)
    with pytest.raises(ValueError, match="exporting 'slda' runs is not supported yet"):
        export_run(tmp_path / "run", tmp_path / "edge")


def test_softhebb_lda_pretrains_on_the_host_data_from_the_controls_start(tmp_path):
    """On a transfer scenario the learner's features are the control's initial features after label-free
    SoftHebb learning on the host dataset; neither changes during the stream."""
    from test_continual import quick
    from test_data import make_dataset

    from hebbedge.continual import StreamRun, run_stream

    make_dataset(tmp_path / "data" / "fashion-mnist", n_train=300, n_test=10)  # a stand-in host dataset
    run = lambda learner, **kw: StreamRun("split-mnist-from-fmnist", learner, seed=1, train_size=1500, test_size=500, **kw)
    weights = {}
    for learner in ("random-lda", "softhebb-lda"):
        results = run_stream(run(learner), tmp_path / learner, torch.device("cpu"), data_dir=str(tmp_path / "data"), progress=False)
        assert min(results["protocols"]["class-incremental"]["matrix"][-1]) > 0.3
        weights[learner] = torch.load(tmp_path / learner / "model.pt")["0.0.weight"]
    # With learn_experiences the same pre-trained block keeps learning during the stream.
    plastic = run("softhebb-lda", overrides={"readout": {"learn_experiences": 5}})
    run_stream(plastic, tmp_path / "plastic", torch.device("cpu"), data_dir=str(tmp_path / "data"), progress=False)
    assert not torch.allclose(torch.load(tmp_path / "plastic" / "model.pt")["0.0.weight"], weights["softhebb-lda"])
    # With warmup the config's fraction of the first experience reaches the strategy (never summed).
    from hebbedge.continual import make_strategy, run_config

    warm = run("softhebb-lda", overrides={"readout": {"warmup": 0.25, "pretrain_epochs": 0}})
    strategy = make_strategy(warm, run_config(warm), (1, 28, 28), 10, torch.device("cpu"), [], None, data_dir="/nonexistent")
    assert strategy.warmup == 0.25 and strategy.plastic_experiences == 0
    torch.manual_seed(1)
    from hebbedge.continual import readout_features
    from hebbedge.scenarios import load_config

    start, width = readout_features(load_config("split-mnist-from-fmnist"), (1, 28, 28), 10)
    assert width == 16 * 4 * 4
    assert torch.equal(weights["random-lda"], start[0].weight)
    assert not torch.allclose(weights["softhebb-lda"], start[0].weight)
    with pytest.raises(ValueError, match="use a transfer scenario .*split-mnist-from-fmnist"):
        run_stream(quick("softhebb-lda"), tmp_path / "plain", torch.device("cpu"), progress=False)

    # The conv features export too (their pooling as matrix products): ONNX Runtime predicts what PyTorch does.
    from hebbedge.export.edge import EdgeModel
    from hebbedge.export.onnx import export_run, load_run

    export_run(tmp_path / "softhebb-lda", tmp_path / "edge")
    model, _ = load_run(tmp_path / "softhebb-lda")
    images = torch.rand(8, 1, 28, 28)
    ours = EdgeModel(tmp_path / "edge").logits(images.numpy())
    assert np.allclose(ours, model.eval()((images - 0.1307) / 0.3081).detach().numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("in_size,out_size", [(14, 4), (14, 5), (7, 7), (28, 3), (5, 1)])
def test_matrix_pooling_equals_adaptive_average_pooling_in_float64(in_size, out_size):
    import torch.nn.functional as F

    from hebbedge.models import AdaptiveAvgPool

    x = torch.randn(2, 3, in_size, in_size, dtype=torch.float64)
    assert torch.allclose(AdaptiveAvgPool(in_size, out_size)(x), F.adaptive_avg_pool2d(x, out_size), atol=1e-12)


def test_features_learn_only_during_the_first_plastic_experiences():
    """plastic_experiences=1: the Hebbian features learn (label-free) during experience 0 and are fixed after it."""
    from hebbedge.layers import HebbLinear
    from hebbedge.rules import SoftHebbRule

    bm = tiny_benchmark()
    torch.manual_seed(0)
    layer = HebbLinear(16, 8, activation=None, rule=SoftHebbRule(), eta=0.05, beta=0.0, post=None)
    strategy = ReadoutStrategy(features=nn.Sequential(nn.Flatten(), layer), readout=LDAReadout(8, 4), plastic_experiences=1,
                               train_mb_size=16, eval_mb_size=64, evaluator=EvaluationPlugin(loggers=[]))
    start = layer.weight.clone()
    strategy.train(bm.train_stream[0])
    after_first = layer.weight.clone()
    strategy.train(bm.train_stream[1])
    assert not torch.equal(after_first, start) and torch.equal(layer.weight, after_first)
    assert strategy.readout.count.sum() == sum(len(e.dataset) for e in bm.train_stream)  # the readout summed every sample


def test_warmup_teaches_the_features_on_the_start_of_the_first_experience_only():
    """warmup=0.5: the first half of experience 0 teaches the features (label-free) and is never summed;
    from then on the features are fixed and the readout sums every sample."""
    from hebbedge.layers import HebbLinear
    from hebbedge.rules import SoftHebbRule

    bm = tiny_benchmark()
    torch.manual_seed(0)
    layer = HebbLinear(16, 8, activation=None, rule=SoftHebbRule(), eta=0.05, beta=0.0, post=None)
    strategy = ReadoutStrategy(features=nn.Sequential(nn.Flatten(), layer), readout=LDAReadout(8, 4), warmup=0.5,
                               train_mb_size=8, eval_mb_size=64, evaluator=EvaluationPlugin(loggers=[]))
    start, weights = layer.weight.clone(), []
    strategy.readout.accumulate = lambda x, y, add=strategy.readout.accumulate: (weights.append(layer.weight.clone()), add(x, y))
    strategy.train(bm.train_stream[0])
    strategy.train(bm.train_stream[1])
    warm = math.ceil(math.ceil(0.5 * len(bm.train_stream[0].dataset)) / 8) * 8  # whole minibatches of 8
    assert strategy.readout.count.sum() == sum(len(e.dataset) for e in bm.train_stream) - warm
    assert not torch.equal(weights[0], start)  # the warm-up changed the features before the first sum ...
    assert all(torch.equal(w, weights[0]) for w in weights) and torch.equal(layer.weight, weights[0])  # ... and nothing after
    with pytest.raises(ValueError, match="fraction of the first experience"):
        ReadoutStrategy(features=nn.Flatten(), readout=LDAReadout(16, 4), warmup=1.0)
