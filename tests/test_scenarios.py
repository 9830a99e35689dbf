"""Tests for hebbedge.scenarios: the Avalanche streams, the CIFAR-10 loader they use, the configs.

MNIST is the copy carried in the package, cut with train_size / test_size to stay fast; Fashion-MNIST
and CIFAR-10 are tiny fake files written into tmp_path.
"""

import pickle
import struct

import numpy as np
from dataclasses import replace

import pytest
import torch
from torch.utils.data import DataLoader

from hebbedge import data
from hebbedge.config import ConfigError, StreamSection, from_dict, with_overrides
from hebbedge.scenarios import SCENARIOS, ScenarioSpec, load_config, make_stream

N_TRAIN, N_TEST = 600, 300


def tensors(dataset):
    """(x, y, task labels) of a whole Avalanche dataset, in order."""
    return next(iter(DataLoader(dataset, batch_size=len(dataset), shuffle=False)))


def exp_classes(stream):
    return [sorted(e.classes_in_this_experience) for e in stream]


@pytest.fixture(scope="module")
def split_mnist():
    return make_stream("split-mnist", seed=0, train_size=N_TRAIN, test_size=N_TEST)


@pytest.fixture(scope="module")
def permuted_mnist():
    return make_stream("permuted-mnist", seed=0, train_size=N_TRAIN, test_size=N_TEST)


def write_cifar(folder, n_per_batch=20, seed=0):
    """A fake `cifar-10-batches-py`: the real pickle format, labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(),
                 b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.permutation(np.arange(n_per_batch) % 10)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        batches[name] = batch
    return batches


def write_fashion(folder, n_train=100, n_test=50):
    """A fake Fashion-MNIST IDX folder, every class present."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.tobytes())


def check_split(bm, n_exp=5, all_classes=range(10)):
    """Experiences partition the classes; each holds exactly its classes, original ids, task 0."""
    assert len(bm.train_stream) == len(bm.test_stream) == n_exp
    seen = []
    for tr, te in zip(bm.train_stream, bm.test_stream):
        classes = sorted(tr.classes_in_this_experience)
        assert len(classes) == len(all_classes) // n_exp
        assert sorted(te.classes_in_this_experience) == classes
        for exp in (tr, te):
            assert sorted(set(exp.dataset.targets)) == classes
            assert set(exp.dataset.targets_task_labels) == {0}
        seen += classes
    assert sorted(seen) == list(all_classes)


# --- registry -------------------------------------------------------------------------------------

def test_registry():
    assert list(SCENARIOS) == ["split-mnist", "permuted-mnist", "rotated-mnist",
                               "split-fashion-mnist", "split-cifar10", "split-mnist-from-fmnist", "split-fmnist-from-mnist"]
    assert [s.pretrain for s in SCENARIOS.values()] == [None] * 5 + ["fashion-mnist", "mnist"]
    for name, spec in SCENARIOS.items():
        assert isinstance(spec, ScenarioSpec) and spec.name == name and spec.n_experiences == 5
        assert spec.protocol == ("class-incremental" if spec.kind == "split" else "domain-incremental")
    with pytest.raises(Exception):
        SCENARIOS["split-mnist"].n_experiences = 3  # frozen


# --- split streams --------------------------------------------------------------------------------

def test_split_mnist(split_mnist):
    bm = split_mnist
    check_split(bm)
    assert bm.spec is SCENARIOS["split-mnist"] and bm.seed == 0
    assert sum(len(e.dataset) for e in bm.train_stream) == N_TRAIN
    x0, y0, t0 = tensors(bm.train_stream[0].dataset)
    assert x0.shape[1:] == (1, 28, 28) and x0.dtype == torch.float32 and y0.dtype == torch.int64
    assert set(t0.tolist()) == {0}
    assert sum(len(e.dataset) for e in bm.test_stream) == N_TEST


def test_split_labels_are_the_original_ones(split_mnist):
    """The kept images carry the labels they have in the raw data (no remapping to 0..1)."""
    bm = split_mnist
    x_raw, y_raw = data.load_split("mnist", False)
    mean, std = data.MEAN_STD["mnist"]
    exp = bm.test_stream[2]
    x, y, _ = tensors(exp.dataset)
    raw = (x * std + mean).flatten(1)
    # Find each image in the raw test set and compare its label.
    idx = torch.cdist(raw, x_raw.flatten(1)).argmin(1)
    assert torch.allclose(x_raw.flatten(1)[idx], raw, atol=1e-4)
    assert torch.equal(y_raw[idx], y)


def test_class_order_respected():
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    bm = make_stream("split-mnist", class_order=order, train_size=N_TRAIN, test_size=N_TEST)
    assert exp_classes(bm.train_stream) == [[8, 9], [6, 7], [4, 5], [2, 3], [0, 1]]
    assert list(bm.classes_order) == order
    bm2 = make_stream("split-mnist", class_order=np.array(order), n_experiences=2,
                      train_size=N_TRAIN, test_size=N_TEST)
    check_split(bm2, n_exp=2)
    assert exp_classes(bm2.train_stream) == [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]]


def test_seed_fixes_class_order(split_mnist):
    again = make_stream("split-mnist", seed=0, train_size=N_TRAIN, test_size=N_TEST)
    assert exp_classes(again.train_stream) == exp_classes(split_mnist.train_stream)
    assert torch.equal(tensors(again.train_stream[0].dataset)[0],
                       tensors(split_mnist.train_stream[0].dataset)[0])
    other = make_stream("split-mnist", seed=1, train_size=N_TRAIN, test_size=N_TEST)
    check_split(other)
    assert exp_classes(other.train_stream) != exp_classes(split_mnist.train_stream)


def test_split_fashion_mnist(tmp_path):
    write_fashion(tmp_path / "fashion-mnist")
    bm = make_stream("split-fashion-mnist", data_dir=tmp_path, class_order=range(10))
    check_split(bm)
    assert exp_classes(bm.train_stream) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert sum(len(e.dataset) for e in bm.train_stream) == 100


# --- domain streams -------------------------------------------------------------------------------

def test_permuted_mnist(permuted_mnist):
    bm = permuted_mnist
    assert len(bm.train_stream) == len(bm.test_stream) == 5 and len(bm.permutations) == 5
    xs = [tensors(e.dataset) for e in bm.train_stream]
    for exp in list(bm.train_stream) + list(bm.test_stream):
        assert sorted(exp.classes_in_this_experience) == list(range(10))
        assert set(exp.dataset.targets_task_labels) == {0}
    base = xs[0][0].flatten(1)[:, bm.permutations[0].argsort()]  # undo the permutation
    for (x, y, _), perm in zip(xs, bm.permutations):
        assert torch.equal(y, xs[0][1])  # same images in the same order, original labels
        flat = x.flatten(1)
        assert torch.equal(flat.sort(1).values, xs[0][0].flatten(1).sort(1).values)
        assert torch.equal(flat[:, perm.argsort()], base)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.equal(bm.permutations[i], bm.permutations[j])
            assert not torch.equal(xs[i][0], xs[j][0])
    # All experiences permuted, the first one too.
    assert not torch.equal(bm.permutations[0], torch.arange(784))


def test_permuted_seed(permuted_mnist):
    again = make_stream("permuted-mnist", seed=0, train_size=N_TRAIN, test_size=N_TEST)
    assert all(torch.equal(a, b) for a, b in zip(again.permutations, permuted_mnist.permutations))
    other = make_stream("permuted-mnist", seed=1, n_experiences=3, train_size=N_TRAIN, test_size=N_TEST)
    assert len(other.train_stream) == 3
    assert not torch.equal(other.permutations[0], permuted_mnist.permutations[0])


def test_standardised(permuted_mnist):
    x = tensors(permuted_mnist.train_stream[0].dataset)[0]
    assert abs(x.mean().item()) < 0.1 and 0.85 < x.std().item() < 1.15
    mean, std = data.MEAN_STD["mnist"]
    assert torch.isclose(x.min(), torch.tensor(-mean / std), atol=1e-5)  # background pixels


def test_rotated_mnist():
    bm = make_stream("rotated-mnist", seed=0, train_size=200, test_size=100)
    assert len(bm.train_stream) == len(bm.test_stream) == 5
    angles = np.array(bm.rotations)
    assert np.all((angles >= 0) & (angles < 180)) and np.allclose(np.diff(angles), 36.0)
    xs = [tensors(e.dataset) for e in bm.test_stream]
    for x, y, t in xs:
        assert torch.equal(y, xs[0][1]) and set(t.tolist()) == {0}
    for i in range(5):
        for j in range(i + 1, 5):
            assert (xs[i][0] - xs[j][0]).abs().mean() > 0.1
    again = make_stream("rotated-mnist", seed=0, train_size=200, test_size=100)
    assert again.rotations == bm.rotations
    assert torch.equal(tensors(again.test_stream[3].dataset)[0], xs[3][0])
    assert make_stream("rotated-mnist", seed=1, n_experiences=2, train_size=20,
                       test_size=10).rotations != bm.rotations[:2]


# --- errors ---------------------------------------------------------------------------------------

def test_unknown_name():
    with pytest.raises(ValueError, match="split-mnist.*permuted-mnist.*split-cifar10"):
        make_stream("split-kmnist")
    with pytest.raises(ValueError, match="valid names"):
        load_config("nope")


@pytest.mark.parametrize("order", [[0, 1, 2], [0] * 10, list(range(1, 11)), [0.5] * 10, "0123456789"])
def test_bad_class_order(order):
    with pytest.raises(ValueError, match=r"permutation of the classes 0\.\.9"):
        make_stream("split-mnist", class_order=order)


def test_bad_options():
    with pytest.raises(ValueError, match="split streams only"):
        make_stream("permuted-mnist", class_order=range(10))
    with pytest.raises(ValueError, match="divide"):
        make_stream("split-mnist", n_experiences=3)
    with pytest.raises(ValueError, match="train_size"):
        make_stream("split-mnist", train_size=0)
    with pytest.raises(ValueError, match="seed"):
        make_stream("split-mnist", seed=-1)


# --- CIFAR-10 -------------------------------------------------------------------------------------

def test_load_cifar10(tmp_path):
    batches = write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    assert data.find_cifar10(tmp_path) == tmp_path / "cifar10" / "cifar-10-batches-py"
    x, y = data.load_cifar10(train=True, data_dir=tmp_path)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    raw = batches["data_batch_2"][b"data"][3]  # 5th..: the 24th image overall
    assert torch.allclose(x[23], torch.from_numpy(raw.reshape(3, 32, 32)).float() / 255)
    assert x[23, 1, 4, 5] * 255 == raw[1024 + 4 * 32 + 5]  # G plane, row 4, column 5
    assert y[:20].tolist() == batches["data_batch_1"][b"labels"]
    x, y = data.load_cifar10(train=False, data_dir=tmp_path)
    assert len(x) == 20 and y.tolist() == batches["test_batch"][b"labels"]


def test_split_cifar10(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    bm = make_stream("split-cifar10", data_dir=tmp_path, seed=3)
    check_split(bm)
    assert sum(len(e.dataset) for e in bm.train_stream) == 100
    assert sum(len(e.dataset) for e in bm.test_stream) == 20
    x = torch.cat([tensors(e.dataset)[0] for e in bm.train_stream])
    assert x.shape[1:] == (3, 32, 32)
    # Uniform random bytes standardised with CIFAR's statistics: mean 0.5 -> (0.5 - m) / s per channel.
    expected = (0.5 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2470, 0.2435, 0.2616])
    assert torch.allclose(x.mean((0, 2, 3)), expected, atol=0.05)


def test_missing_cifar10(isolated):
    write_fashion(isolated / "explicit" / "fashion-mnist")  # a data folder, without CIFAR-10
    with pytest.raises(data.DataNotFoundError) as err:
        make_stream("split-cifar10", data_dir=isolated / "explicit")
    msg = str(err.value)
    for root in data.search_path(isolated / "explicit"):
        assert str(root / "cifar-10-batches-py") in msg
    assert "not downloaded" in msg and "--data-dir" in msg and "HEBBEDGE_DATA" in msg


# --- configs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SCENARIOS))
def test_load_config(name):
    cfg = load_config(name)
    transfer = SCENARIOS[name].pretrain is not None
    randumb = SCENARIOS[name].dataset in ("mnist", "fashion-mnist") and name.startswith("split")  # the split streams
    assert set(cfg.as_dict()) == ({"stream", "model", "hebbian", "backprop", "unsupervised", "hybrid"}
                                  | ({"readout"} if transfer else set()) | ({"randumb", "conv_lda"} if randumb else set()))
    assert set(cfg.unsupervised.eta) == {"softhebb", "swta", "hpca", "wta"}
    assert cfg.stream == StreamSection(n_experiences=SCENARIOS[name].n_experiences, epochs=1, batch_size=64, eval_batch_size=1000)
    assert cfg.model.arch == ("conv" if name == "split-cifar10" else "linear")
    if name != "split-cifar10":
        assert cfg.model.widths == (1000, 1000) and cfg.model.activation == "tanh"
        h = cfg.hebbian
        assert (h.optimizer, h.lr, h.weight_decay, h.dropout, h.eta) == ("adamw", 0.01, 0.003, 0.3, 1e-4)
        assert (cfg.backprop.optimizer, cfg.backprop.lr, cfg.backprop.dropout) == ("adam", 1e-4, 0.1)
    else:
        assert cfg.model.width_factor == 1


def test_a_transfer_config_is_its_base_stream_config_plus_a_readout_section():
    for name, base in (("split-mnist-from-fmnist", "split-mnist"), ("split-fmnist-from-mnist", "split-fashion-mnist")):
        cfg = load_config(name)
        assert replace(cfg, readout=None) == load_config(base) and SCENARIOS[name].dataset == SCENARIOS[base].dataset
        assert cfg.readout.arch == "conv" and cfg.readout.channels > 0


def test_a_config_is_checked_against_the_schema():
    cfg = load_config("split-mnist")
    assert with_overrides(cfg, {"hebbian": {"eta": 1}}).hebbian.eta == 1.0  # an integer is a fine float
    for overrides, message in (({"model": {"depth": 3}}, "--set: unknown key model.depth; [model] has arch, widths"),
                               ({"hebbian": {"momentum": 1}}, "--set: hebbian.momentum: expected bool, got 1"),
                               ({"model": {"widths": ["a"]}}, "--set: model.widths: expected int, got \"a\""),
                               ({"stream": {"batch_size": 0}}, "--set: stream.batch_size must be a positive integer, got 0"),
                               ({"hebbian": {"optimizer": "adam"}}, "--set: hebbian.optimizer = 'adam'; expected one of adamw, sgd"),
                               ({"backprop": {"optimizer": "adamw"}}, "--set: backprop.optimizer = 'adamw'; expected one of adam, sgd"),
                               ({"readout": {"channels": 4}}, "this config has no [readout] section"),
                               ({"nope": {"x": 1}}, "--set: unknown section [nope]")):
        with pytest.raises(ConfigError) as err:
            with_overrides(cfg, overrides)
        assert message in str(err.value)
    assert from_dict({**cfg.as_dict()}, "x.toml") == cfg
