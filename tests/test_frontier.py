"""Issue 18's first part: `randumb` (RanDumb's random Fourier features under the LDA readout), the
shrinkage estimated from the readout's sums (OAS, Ledoit-Wolf) and the RanPAC-style expansion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hebbedge import registry
from hebbedge.cli.app import app
from hebbedge.config import Config, RandumbSection, ReadoutSection
from hebbedge.nets import RandomFourierFeatures, build_net, readout_features, scale_gamma
from hebbedge.readout import (LDAReadout, classifier, identity_shrinkage, ledoit_wolf_shrinkage, oas_shrinkage, scores)
from tinydata import write_tiny_mnist


def randumb_net(seed: int, features: int = 256) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    cfg = Config(randumb=RandumbSection(features=features))
    return build_net(registry.LEARNERS["randumb"], cfg, (1, 28, 28), 10)


def numpy_rff(x: np.ndarray, seed: int, n_features: int, gamma: float) -> np.ndarray:
    """The plain reference: W ~ N(0, 2 gamma) [n_in, D], then b ~ U(0, 2 pi) [D], drawn from the seed's
    generator in that order; z = sqrt(2 / D) cos(x W + b), in float64."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(x.shape[1], n_features, generator=g).double().numpy() * np.sqrt(2 * gamma)
    b = torch.rand(n_features, generator=g).double().numpy() * 2 * np.pi
    return np.sqrt(2.0 / n_features) * np.cos(x @ w + b)


def test_randumb_features_match_a_plain_numpy_reference_with_the_same_seed():
    net = randumb_net(seed=3)
    features, readout = net
    assert isinstance(features, RandomFourierFeatures) and readout.estimator == "oas"
    x = torch.randn(7, 1, 28, 28)
    ours = features(x).double().numpy()
    ref = numpy_rff(x.flatten(1).double().numpy(), 3, 256, 1 / 784)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert torch.equal(randumb_net(seed=3)[0].weight, features.weight)  # the same seed, the same features
    assert not torch.equal(randumb_net(seed=4)[0].weight, features.weight)


def test_randumb_is_sklearns_rbf_sampler_with_gamma_scale_on_standardised_pixels():
    kernel_approximation = pytest.importorskip("sklearn.kernel_approximation")
    x = torch.randn(500, 784, dtype=torch.float64)
    x = (x - x.mean()) / x.std(unbiased=False)  # standardised pixels: variance 1, as the stream's are
    sampler = kernel_approximation.RBFSampler(gamma="scale", n_components=256, random_state=0).fit(x.numpy())
    assert sampler._gamma == pytest.approx(scale_gamma(784), rel=1e-9)
    ours = RandomFourierFeatures(784, 256, scale_gamma(784)).double()
    sampler.random_weights_, sampler.random_offset_ = ours.weight.numpy(), ours.offset.numpy()
    np.testing.assert_allclose(ours(x).numpy(), sampler.transform(x.numpy()), atol=1e-12)
    # the weights' law: N(0, 2 gamma), offsets in [0, 2 pi)
    wide = RandomFourierFeatures(784, 4096, scale_gamma(784), torch.Generator().manual_seed(0))
    assert wide.weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.01)
    assert 0 <= wide.offset.min() and wide.offset.max() < 2 * np.pi


@pytest.mark.parametrize("n", [20, 300])  # fewer and more samples than dimensions
def test_oas_matches_sklearn_in_float64(n):
    covariance_module = pytest.importorskip("sklearn.covariance")
    x = np.random.default_rng(n).normal(size=(n, 40)) @ np.random.default_rng(1).normal(size=(40, 40))
    cov = torch.from_numpy(np.cov(x, rowvar=False, bias=True))
    shrunk, rho = covariance_module.oas(x)
    assert oas_shrinkage(n, cov) == pytest.approx(rho, rel=1e-10, abs=1e-14)
    mu = float(torch.trace(cov)) / 40
    np.testing.assert_allclose((1 - rho) * cov.numpy() + rho * mu * np.eye(40), shrunk, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [20, 300])
def test_ledoit_wolf_matches_sklearn_in_float64(n):
    covariance_module = pytest.importorskip("sklearn.covariance")
    x = np.random.default_rng(n).normal(size=(n, 40)) @ np.random.default_rng(2).normal(size=(40, 40))
    centred = x - x.mean(0)
    cov = torch.from_numpy(centred.T @ centred / n)
    fourth = float(((centred ** 2).sum(1) ** 2).sum())
    _, rho = covariance_module.ledoit_wolf(x)
    assert ledoit_wolf_shrinkage(n, cov, fourth) == pytest.approx(rho, rel=1e-10, abs=1e-14)


def test_oas_from_the_readouts_sums_is_oas_of_the_pooled_within_class_covariance():
    """The readout's order-invariant sums give OAS exactly (a numpy reference on the stored samples)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 12)) + np.repeat(rng.normal(size=(3, 12)) * 3, 30, 0), np.repeat(np.arange(3), 30)
    readout = LDAReadout(12, 3)
    for i in rng.permutation(90).reshape(9, 10):
        readout.accumulate(torch.from_numpy(x[i]), torch.from_numpy(y[i]))
    centred = x - np.stack([x[y == c].mean(0) for c in range(3)])[y]
    pooled = centred.T @ centred / 90
    d = 12
    mu, alpha = np.trace(pooled) / d, (pooled ** 2).mean()
    rho = min((alpha + mu ** 2) / ((90 + 1) * (alpha - mu ** 2 / d)), 1.0)
    assert oas_shrinkage(90, readout.covariance()) == pytest.approx(rho, rel=1e-10)


def test_identity_shrinkage_keeps_every_prediction_of_the_shrunk_to_mu_classifier():
    rng = np.random.default_rng(1)
    count = torch.tensor([30.0, 40.0, 50.0], dtype=torch.float64)
    mean = torch.from_numpy(rng.normal(size=(3, 8)))
    a = torch.from_numpy(rng.normal(size=(8, 8)))
    scatter = (a @ a.T + 0.1 * torch.eye(8, dtype=torch.float64)) * 120
    cov, rho = scatter / 120, 0.3
    mu = float(torch.trace(cov)) / 8
    target = ((1 - rho) * cov + rho * mu * torch.eye(8, dtype=torch.float64))
    x = torch.from_numpy(rng.normal(size=(200, 8)))
    centre = (count @ mean) / count.sum()
    w = torch.linalg.solve(target, (mean - centre).T).T
    ref = (x - centre) @ w.T - 0.5 * ((mean - centre) * w).sum(1)
    ours = scores(x, *classifier(count, mean, scatter, identity_shrinkage(rho, cov)))
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    ratio = ours / ref
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()))  # one positive factor on every score
    assert ratio[0, 0] > 0


def test_estimated_shrinkage_readout_sets_its_shrinkage_from_its_sums():
    readout = LDAReadout(16, 4, estimator="oas")
    x, y = torch.randn(64, 16), torch.arange(64) % 4
    readout.accumulate(x, y)
    readout.eval()(x)
    rho = oas_shrinkage(64, readout.covariance())
    assert readout.shrinkage == pytest.approx(identity_shrinkage(rho, readout.covariance()))


def test_ranpac_expansion_widens_the_conv_features():
    cfg = Config(readout=ReadoutSection(channels=2, pool=2, expand=32))
    features, width = readout_features(cfg, (1, 28, 28), 10)
    assert width == 32 and features(torch.randn(3, 1, 28, 28)).shape == (3, 32)
    assert (features(torch.randn(3, 1, 28, 28)) >= 0).all()


def test_randumb_runs_through_compare_on_tiny_data(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    out = tmp_path / "compare"
    result = CliRunner().invoke(app, ["compare", "split-mnist", "--learners", "randumb,random-lda", "--seeds", "1", "--device", "cpu",
                                      "--set", "model.widths=[8]", "--set", "randumb.features=64", "--data-dir", str(data),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "randumb" / "seed0" / "metrics.json").exists()
    assert "randumb" in (out / "report.md").read_text()
