"""A made-up MNIST small enough for runs of a fraction of a second, and the CLI options that use it."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def idx_bytes(arr: np.ndarray) -> bytes:
    """An unsigned-byte IDX file's content."""
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_tiny_mnist(root: Path, n_train: int = 100, n_test: int = 50, seed: int = 0, name: str = "mnist") -> Path:
    """root/NAME/ with the four .gz IDX files; every class in both splits, each class a noisy
    prototype so that a run has something to learn."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (10, 28, 28))
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.clip(prototypes[labels] + rng.normal(0, 40, (n, 28, 28)), 0, 255)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return root


def tiny_options(root: Path) -> list[str]:
    """`hebbedge train` / `compare` options for a quick split-mnist run on `write_tiny_mnist(root)`."""
    return ["--data-dir", str(root), "--set", "model.widths=[16]", "--device", "cpu"]
