"""Tests for hebbedge.data: IDX parsing, the search path, error messages, the carried MNIST copy."""

import gzip
import hashlib
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hebbedge import data

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx(path: Path, arr: np.ndarray, type_code: int = 0x08) -> Path:
    """Write arr as an IDX file (gzip when path ends in .gz)."""
    raw = struct.pack(">BBBB", 0, 0, type_code, arr.ndim)
    raw += struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def make_dataset(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = True) -> Path:
    """A tiny but well-formed MNIST-style folder."""
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}",
                  rng.integers(0, 10, n, dtype=np.uint8))
    return folder


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    t = data.read_idx(write_idx(tmp_path / f"x-idx3-ubyte{suffix}", arr))
    assert t.dtype == torch.uint8 and tuple(t.shape) == (2, 3, 4)
    assert torch.equal(t, torch.from_numpy(arr))


def test_read_idx_big_endian_int32(tmp_path):
    arr = np.array([1, -2, 70000], dtype=np.int32)
    t = data.read_idx(write_idx(tmp_path / "x-idx1-int", arr, type_code=0x0C))
    assert t.dtype == torch.int32 and t.tolist() == [1, -2, 70000]


def test_read_idx_bad_magic(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\0" * 20)
    with pytest.raises(ValueError, match="bad-idx3-ubyte.*not an IDX file"):
        data.read_idx(bad)


def test_read_idx_truncated(tmp_path):
    path = write_idx(tmp_path / "short-idx1-ubyte", np.zeros(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="short-idx1-ubyte.*truncated"):
        data.read_idx(path)


def test_search_path_order(isolated, monkeypatch):
    monkeypatch.setenv("HEBBEDGE_DATA", str(isolated / "env"))
    assert data.search_path(isolated / "explicit") == [
        isolated / "explicit", isolated / "env", isolated / "xdg" / "hebbedge",
        isolated / "system", isolated / "package"]
    monkeypatch.delenv("HEBBEDGE_DATA")
    assert data.search_path()[0] == isolated / "xdg" / "hebbedge"


def test_explicit_beats_env_beats_cache(isolated, monkeypatch):
    explicit = make_dataset(isolated / "explicit" / "mnist")
    env = make_dataset(isolated / "env" / "mnist")
    cache = make_dataset(isolated / "xdg" / "hebbedge" / "mnist")
    monkeypatch.setenv("HEBBEDGE_DATA", str(isolated / "env"))
    assert data.find_dataset("mnist", isolated / "explicit") == explicit
    assert data.find_dataset("mnist") == env
    monkeypatch.delenv("HEBBEDGE_DATA")
    assert data.find_dataset("mnist") == cache


def test_torchvision_layout_and_bare_explicit_dir(isolated):
    raw = make_dataset(isolated / "xdg" / "hebbedge" / "FashionMNIST" / "raw", gz=False)
    assert data.find_dataset("fashion-mnist") == raw
    bare = make_dataset(isolated / "bare")
    assert data.find_dataset("mnist", bare) == bare
    # A bare folder of files is only accepted as the explicit data_dir, not via other roots.
    make_dataset(isolated / "system")
    with pytest.raises(data.DataNotFoundError):
        data.find_dataset("mnist")


def test_incomplete_folder_is_skipped(isolated):
    partial = make_dataset(isolated / "explicit" / "mnist")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    full = make_dataset(isolated / "system" / "mnist")
    assert data.find_dataset("mnist", isolated / "explicit") == full


def test_not_found_message(isolated, monkeypatch):
    make_dataset(isolated / "explicit" / "mnist")  # a data folder, but without the dataset asked for
    monkeypatch.setenv("HEBBEDGE_DATA", str(isolated / "env"))
    with pytest.raises(data.DataNotFoundError) as info:
        data.resolve("fashion-mnist", isolated / "explicit", download=False)
    msg = str(info.value)
    for root in data.search_path(isolated / "explicit"):
        assert str(root) in msg
    assert "HEBBEDGE_DATA" in msg and "--data-dir" in msg and "fashion-mnist" in msg


def test_download_failure_is_chained_and_restores_timeout(isolated, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        assert socket.getdefaulttimeout() == 20
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    before = socket.getdefaulttimeout()
    with pytest.raises(data.DataNotFoundError, match="(?s)failed.*HEBBEDGE_DATA") as info:
        data.resolve("mnist")
    assert isinstance(info.value.__cause__, OSError)
    assert socket.getdefaulttimeout() == before


def test_download_success_lands_in_cache(isolated, monkeypatch):
    import torchvision

    def fake_download(root, download, **kwargs):
        make_dataset(Path(root) / "MNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_download)
    assert data.resolve("mnist") == isolated / "xdg" / "hebbedge" / "MNIST" / "raw"


def test_unknown_name():
    with pytest.raises(ValueError, match="mnist.*fashion-mnist"):
        data.find_dataset("cifar10")
    with pytest.raises(ValueError, match="cifar10"):
        data.load_split("cifar10", train=True, download=False)


def test_load_split_small(isolated):
    make_dataset(isolated / "d" / "mnist", n_train=4, n_test=2, gz=False)
    x, y = data.load_split("mnist", train=False, data_dir=isolated / "d", download=False)
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_load_split_carried_mnist(monkeypatch):
    # Read the copy shipped in the package, whatever else is on this machine.
    monkeypatch.setenv("HEBBEDGE_DATA", str(data.PACKAGE_ROOT))
    for train, n in ((True, 60000), (False, 10000)):
        x, y = data.load_split("mnist", train=train, download=False)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99
        assert sorted(y.unique().tolist()) == list(range(10))


def test_mean_std_matches_carried_mnist():
    mean, std = data.MEAN_STD["mnist"]
    x, _ = data.load_split("mnist", train=True, data_dir=data.PACKAGE_ROOT, download=False)
    assert abs(x.mean().item() - mean) < 1e-3 and abs(x.std().item() - std) < 1e-3


def damaged(raw: bytes, n: int = 40) -> list[tuple[str, bytes]]:
    """`raw` cut short at n offsets, and with one byte flipped at n offsets, spread over the whole file."""
    offsets = sorted({int(k * (len(raw) - 1) / (n - 1)) for k in range(n)})
    return ([(f"cut at {o}", raw[:o]) for o in offsets]
            + [(f"flipped at {o}", raw[:o] + bytes([raw[o] ^ 0x5A]) + raw[o + 1:]) for o in offsets])


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_a_damaged_idx_file_is_a_one_line_error_naming_it(tmp_path, suffix):
    good = write_idx(tmp_path / f"good-idx3-ubyte{suffix}", np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28))
    path = tmp_path / f"bad-idx3-ubyte{suffix}"
    for how, raw in damaged(good.read_bytes()):
        path.write_bytes(raw)
        try:
            data.read_idx(path)  # a flipped pixel, or a flipped size that still fits the data, is not detectable
        except data.BadFileError as err:
            assert str(err).startswith(f"{path}: ") and "\n" not in str(err), (how, err)


def test_a_gz_that_is_not_gzip_names_what_was_expected(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"\0\0\x08\x01\0\0\0\x01\x07")  # plain IDX under a .gz name
    with pytest.raises(data.BadFileError, match="x-idx1-ubyte.gz: expected a gzip-compressed IDX file"):
        data.read_idx(path)


def test_labels_shorter_than_images_name_the_labels_file(isolated):
    folder = make_dataset(isolated / "d" / "mnist", n_train=5, n_test=3)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(data.BadFileError, match=r"train-labels-idx1-ubyte.gz: expected 5 unsigned-byte labels, one per image"):
        data.load_split("mnist", True, isolated / "d", download=False)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(5, 10, dtype=np.uint8))
    with pytest.raises(data.BadFileError, match="train-labels-idx1-ubyte.gz: expected labels 0..9; got 10"):
        data.load_split("mnist", True, isolated / "d", download=False)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28), dtype=np.float32), type_code=0x0D)
    with pytest.raises(data.BadFileError, match="train-images-idx3-ubyte.gz: expected unsigned-byte images"):
        data.load_split("mnist", True, isolated / "d", download=False)


def test_an_explicit_data_dir_must_hold_data_and_is_never_a_reason_to_download(isolated, monkeypatch):
    import torchvision

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_download)
    make_dataset(isolated / "system" / "mnist")  # what the search would otherwise fall back to
    with pytest.raises(data.DataDirError, match=f"{isolated / 'missing'}: no such folder"):
        data.resolve("mnist", isolated / "missing")
    (isolated / "empty").mkdir()
    with pytest.raises(data.DataDirError, match=f"{isolated / 'empty'}: holds no dataset"):
        data.resolve("mnist", isolated / "empty")
    with pytest.raises(data.DataDirError, match="holds no dataset"):
        data.find_cifar10(isolated / "empty")


def test_split_files_and_their_fingerprint(isolated):
    folder = make_dataset(isolated / "d" / "mnist")
    images, labels = data.split_files("mnist", False, isolated / "d", download=False)
    assert (images.name, labels.name) == ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    record = data.fingerprint([images])
    assert record == [{"file": str(images.resolve()), "bytes": images.stat().st_size,
                       "sha256": hashlib.sha256((folder / images.name).read_bytes()).hexdigest()}]


class Boom:
    marker = ""

    def __reduce__(self):
        return open, (self.marker, "w")


def test_cifar_batches_are_unpickled_as_arrays_only(tmp_path):
    import pickle

    from test_scenarios import write_cifar

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, n_per_batch=10)
    x, y = data.load_cifar10(False, tmp_path)
    assert x.shape == (10, 3, 32, 32) and y.shape == (10,)
    Boom.marker = str(tmp_path / "ran")
    good = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Boom(), b"labels": [0]}))
    with pytest.raises(data.BadFileError, match="test_batch: expected a CIFAR-10 python batch .*holds a io.open object"):
        data.load_cifar10(False, tmp_path)
    assert not (tmp_path / "ran").exists()
    for how, raw in damaged(good, n=25):
        (folder / "test_batch").write_bytes(raw)
        try:
            data.load_cifar10(False, tmp_path)
        except data.BadFileError as err:
            assert str(err).startswith(f"{folder / 'test_batch'}: ") and "\n" not in str(err), (how, err)
