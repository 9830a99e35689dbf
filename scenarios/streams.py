"""Avalanche 0.6 benchmarks for the continual-learning streams (docs/continual.md).

The images come from hebbedge's own resolver (`hebbedge.data`), never from Avalanche's or
torchvision's downloaders, so every stream builds offline wherever the data is on the search path.

Common rules, for every stream:
- inputs are standardised with the dataset's mean/std (MNIST / Fashion-MNIST: `data.MEAN_STD`;
  CIFAR-10: per-channel statistics of its training set, `CIFAR10_MEAN_STD`);
- labels keep their original class ids 0..9 (one head over all classes, no remapping);
- the task label is 0 everywhere (split streams: class-incremental; permuted / rotated: domain-
  incremental), so nothing tells the learner which experience a sample came from;
- everything random (class order, permutations, rotations, subsets) follows from `seed` alone.

`make_stream(name)` returns an Avalanche benchmark: `train_stream` / `test_stream` of experiences
with `.dataset` (items `(x, y, task_label)`) and `.classes_in_this_experience`. The benchmark also
carries `spec` (the `ScenarioSpec`), `seed`, and for the domain streams `permutations` (LongTensors
over the flattened pixels) or `rotations` (degrees, counter-clockwise).
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from hebbedge import data

N_CLASSES = 10  # every dataset used here has the classes 0..9
# Per-channel mean / std of the 50 000 CIFAR-10 training images (the std is over all pixels, not the
# often-quoted mean of per-image stds 0.2023, 0.1994, 0.2010).
CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass(frozen=True)
class ScenarioSpec:
    """One stream: its dataset, how experiences are made ("split", "permuted", "rotated")."""

    name: str
    dataset: str  # "mnist", "fashion-mnist" or "cifar10"
    kind: str  # "split": disjoint classes; "permuted" / "rotated": all classes, new input domain
    n_experiences: int  # the default
    description: str
    pretrain: str | None = None  # host data seen before the stream, by the learners that pre-train features

    @property
    def protocol(self) -> str:
        return "class-incremental" if self.kind == "split" else "domain-incremental"


SCENARIOS: "OrderedDict[str, ScenarioSpec]" = OrderedDict((s.name, s) for s in (
    ScenarioSpec("split-mnist", "mnist", "split", 5,
                 "MNIST, 5 experiences of 2 classes each (class order from seed or class_order)"),
    ScenarioSpec("permuted-mnist", "mnist", "permuted", 5,
                 "MNIST, every experience all 10 classes under its own fixed random pixel "
                 "permutation (all experiences permuted, the first one too)"),
    ScenarioSpec("rotated-mnist", "mnist", "rotated", 5,
                 "MNIST, every experience all 10 classes rotated by its own angle; the angles are "
                 "evenly spaced over [0, 180) degrees with a per-seed offset in [0, 180/n)"),
    ScenarioSpec("split-fashion-mnist", "fashion-mnist", "split", 5,
                 "Fashion-MNIST, 5 experiences of 2 classes each"),
    ScenarioSpec("split-cifar10", "cifar10", "split", 5,
                 "CIFAR-10 (python batches must be present), 5 experiences of 2 classes each"),
    ScenarioSpec("split-mnist-from-fmnist", "mnist", "split", 5,
                 "Split-MNIST, after feature pre-training on Fashion-MNIST's training images (host data, no labels)",
                 pretrain="fashion-mnist"),
    ScenarioSpec("split-fmnist-from-mnist", "fashion-mnist", "split", 5,
                 "Split-Fashion-MNIST, after feature pre-training on MNIST's training images (host data, no labels)",
                 pretrain="mnist"),
))

# Independent random streams derived from the seed: changing train_size never changes a permutation.
_TAG_PERMUTE, _TAG_ROTATE, _TAG_TRAIN, _TAG_TEST, _TAG_VALIDATION = 1, 2, 3, 4, 5


class StandardisedImages(Dataset):
    """uint8 images [N, C, H, W] served as standardised float32, optionally pixel-permuted.

    Storing uint8 keeps five permuted/rotated copies of MNIST small; the conversion per item is
    cheap next to Avalanche's own per-item overhead. Items are `(x, y)`; `targets` is what
    Avalanche reads the labels from.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], permutation: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images, self.targets, self.permutation = images, targets, permutation
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].float().div_(255)
        if self.permutation is not None:
            x = x.flatten()[self.permutation].view_as(x)
        return x.sub_(self.mean).div_(self.std), int(self.targets[i])


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag])


def _read(dataset: str, train: bool, data_dir) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """(uint8 images, int64 labels, mean, std) of one split of the dataset."""
    if dataset == "cifar10":
        x, y = data.load_cifar10(train, data_dir)
        mean, std = CIFAR10_MEAN_STD
    else:
        x, y = data.load_split(dataset, train, data_dir)
        mean, std = data.MEAN_STD[dataset]
    # The resolver's floats are k/255 exactly: back to uint8 without loss.
    return x.mul_(255).round_().to(torch.uint8), y, np.atleast_1d(mean), np.atleast_1d(std)


def _cut(x: torch.Tensor, y: torch.Tensor, size: int | None, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size` samples of a shuffle by `rng`, in their original order (all without `size`)."""
    if size is None or size >= len(y):
        return x, y
    keep = torch.from_numpy(np.sort(rng.permutation(len(y))[:size]))
    return x[keep], y[keep]


def hold_out(y: torch.Tensor, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): sorted indices of `y`, `size` of them held out, stratified by class.

    After a per-seed shuffle, each sample's position within its class, as a fraction of the class,
    orders the whole set; the first `size` in that order are held out. So each class gives its
    share to within one sample, and every class of a split stream is in the validation stream.
    """
    perm = _rng(seed, _TAG_VALIDATION).permutation(len(y))
    labels = y.numpy()[perm]
    position = np.empty(len(perm))
    for c in np.unique(labels):
        mine = labels == c
        position[mine] = (np.arange(mine.sum()) + 0.5) / mine.sum()
    order = perm[np.argsort(position, kind="stable")]
    return np.sort(order[size:]), np.sort(order[:size])


def _load(dataset: str, data_dir, seed: int, train_size: int | None, test_size: int | None, validation: int | None):
    """(train images, train labels, test images, test labels, mean, std): the training set cut to the
    first `train_size` of a per-seed shuffle, the test set to `test_size`. With `validation`, that
    many training images (`hold_out`) take the test set's place, which is never read, and the
    training stream is cut from the rest."""
    x, y, mean, std = _read(dataset, True, data_dir)
    if validation is None:
        xte, yte, _, _ = _read(dataset, False, data_dir)
        xte, yte = _cut(xte, yte, test_size, _rng(seed, _TAG_TEST))
    else:
        if validation >= len(y):
            raise ValueError(f"validation must leave training images: at most {len(y) - 1} of the {len(y)}, got {validation}")
        kept, held = (torch.from_numpy(i) for i in hold_out(y, validation, seed))
        x, y, xte, yte = x[kept], y[kept], x[held], y[held]
    x, y = _cut(x, y, train_size, _rng(seed, _TAG_TRAIN))
    return x, y, xte, yte, mean, std


def _rotate(images: torch.Tensor, angle: float, chunk: int = 10000) -> torch.Tensor:
    """uint8 [N, C, H, W] rotated counter-clockwise by `angle` degrees (bilinear, zero fill)."""
    from torchvision.transforms.functional import InterpolationMode, rotate  # slow import: lazy

    return torch.cat([rotate(images[i:i + chunk], angle, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
                      for i in range(0, len(images), chunk)])


def _check_int(label: str, value, minimum: int, expected: str) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{label} must be {expected}, got {value!r}") from None
    if n < minimum:
        raise ValueError(f"{label} must be {expected}, got {n}")
    return n


def _check_size(label: str, value) -> int | None:
    return None if value is None else _check_int(label, value, 1, "a positive integer or None")


def _check_class_order(class_order) -> list[int]:
    expected = f"a permutation of the classes 0..{N_CLASSES - 1} (each exactly once)"
    try:
        order = [operator.index(c) for c in class_order]
    except TypeError:
        raise ValueError(f"class_order must be {expected}; got {class_order!r}") from None
    if sorted(order) != list(range(N_CLASSES)):
        raise ValueError(f"class_order must be {expected}; got {order}")
    return order


def default_class_order(seed: int) -> list[int]:
    """The class order used when class_order is None: Avalanche's `nc_benchmark(shuffle=True,
    seed=seed)` order (torch.randperm after manual_seed(seed)), without touching the global RNG."""
    return torch.randperm(N_CLASSES, generator=torch.Generator().manual_seed(seed)).tolist()


def make_stream(name: str, *, seed: int = 0, class_order: Sequence[int] | None = None,
                n_experiences: int | None = None, data_dir: str | Path | None = None,
                train_size: int | None = None, test_size: int | None = None, validation: int | None = None):
    """The Avalanche benchmark for stream `name` (a key of SCENARIOS); see the module docstring.

    class_order: split streams only; the classes in experience order (experience k gets
    class_order[k*m:(k+1)*m], m = 10 / n_experiences). None: `default_class_order(seed)`.
    n_experiences: default from SCENARIOS; split streams need a divisor of 10.
    train_size / test_size: keep only the first N samples of a per-seed shuffle (no stratification;
    the split streams need every class present). Permuted / rotated experiences all hold the same
    kept images. Missing data raises the resolver's DataNotFoundError.
    validation: hold out that many training images, stratified by class (`hold_out`, its own random
    stream), as the test stream; the test set is then never read (test_size does not apply) and
    train_size cuts what is left of the training set.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown stream {name!r}; valid names: {', '.join(SCENARIOS)}")
    spec = SCENARIOS[name]
    seed = _check_int("seed", seed, 0, "a non-negative integer")
    n_exp = spec.n_experiences if n_experiences is None else _check_size("n_experiences", n_experiences)
    train_size, test_size = _check_size("train_size", train_size), _check_size("test_size", test_size)
    validation = _check_size("validation", validation)
    if validation is not None and test_size is not None:
        raise ValueError(f"test_size does not apply with validation: the validation stream replaces the test set "
                         f"(got test_size={test_size}, validation={validation})")
    if spec.kind == "split":
        if N_CLASSES % n_exp:
            raise ValueError(f"{name}: n_experiences must divide the {N_CLASSES} classes "
                             f"(1, 2, 5 or 10), got {n_exp}")
        order = default_class_order(seed) if class_order is None else _check_class_order(class_order)
    elif class_order is not None:
        raise ValueError(f"class_order applies to the split streams only; {name} puts all "
                         f"{N_CLASSES} classes in every experience")

    # Import here: Avalanche takes seconds to import, and SCENARIOS / configs should not pay that.
    from avalanche.benchmarks.scenarios.deprecated.generators import dataset_benchmark, nc_benchmark

    xtr, ytr, xte, yte, mean, std = _load(spec.dataset, data_dir, seed, train_size, test_size, validation)

    if spec.kind == "split":
        held = [("validation", yte, f"validation={validation}")] if validation else []
        for part, labels, size in [("training", ytr, f"train_size={train_size}"), *held]:
            missing = sorted(set(range(N_CLASSES)) - set(labels.tolist()))
            if missing:
                raise ValueError(f"{name}: classes {missing} have no {part} sample ({size} too small?)")
        bm = nc_benchmark(StandardisedImages(xtr, ytr, mean, std), StandardisedImages(xte, yte, mean, std),
                          n_experiences=n_exp, task_labels=False, shuffle=False,
                          fixed_class_order=order)
    elif spec.kind == "permuted":
        rng = _rng(seed, _TAG_PERMUTE)
        n_pixels = xtr[0].numel()
        perms = [torch.from_numpy(rng.permutation(n_pixels)) for _ in range(n_exp)]
        bm = dataset_benchmark([StandardisedImages(xtr, ytr, mean, std, p) for p in perms],
                               [StandardisedImages(xte, yte, mean, std, p) for p in perms])
        bm.permutations = perms
    elif spec.kind == "rotated":
        step = 180.0 / n_exp
        angles = [float(_rng(seed, _TAG_ROTATE).uniform(0, step)) + k * step for k in range(n_exp)]
        bm = dataset_benchmark([StandardisedImages(_rotate(xtr, a), ytr, mean, std) for a in angles],
                               [StandardisedImages(_rotate(xte, a), yte, mean, std) for a in angles])
        bm.rotations = angles
    else:  # a new ScenarioSpec kind without code
        raise NotImplementedError(f"{name}: stream kind {spec.kind!r}")
    bm.spec, bm.seed = spec, seed
    return bm
