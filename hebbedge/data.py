"""Find, fetch and load MNIST / Fashion-MNIST from their IDX files (and CIFAR-10's python batches).

The data is looked up in a fixed search path (see `search_path`) before anything is downloaded, so
offline machines, Debian dataset packages and the copy shipped inside the package all just work.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import socket
import zlib
from pathlib import Path

import numpy as np
import torch

from hebbedge.files import BadFileError

DATASETS = ("mnist", "fashion-mnist")
MEAN_STD = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}

# Module-level so tests (and odd installs) can repoint them.
SYSTEM_ROOT = Path("/usr/share/datasets")  # Debian's dataset packages, e.g. .../fashion-mnist/
PACKAGE_ROOT = Path(__file__).parent / "datasets"  # the copy carried inside the package

# torchvision's folder names: it downloads into <root>/<Name>/raw/.
_TV_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# CIFAR-10, "python version": the folder the official tarball (and torchvision) extracts to.
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
# IDX type byte -> numpy dtype (data is big-endian).
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataNotFoundError(RuntimeError):
    """A dataset is in none of the searched places (and could not be downloaded)."""


class DataDirError(DataNotFoundError):
    """The folder named explicitly (--data-dir) does not exist or holds no dataset: never a reason to download."""


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def cache_root() -> Path:
    """The per-user cache, `$XDG_CACHE_HOME/hebbedge` (default `~/.cache/hebbedge`)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hebbedge"


def search_path(data_dir: str | Path | None = None) -> list[Path]:
    """Roots searched for datasets, in order: data_dir, $HEBBEDGE_DATA, user cache, system, package."""
    roots = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get("HEBBEDGE_DATA"):
        roots.append(Path(os.environ["HEBBEDGE_DATA"]).expanduser())
    roots += [cache_root(), SYSTEM_ROOT, PACKAGE_ROOT]
    return list(dict.fromkeys(roots))  # drop duplicates, keep order


def _candidates(name: str, data_dir: str | Path | None) -> list[Path]:
    """Every folder that may hold the four files, in search order."""
    out = []
    for root in search_path(data_dir):
        out += [root / name, root / _TV_NAMES[name] / "raw"]
        # A bare folder of IDX files is only trusted when the user named it explicitly.
        if data_dir is not None and root == Path(data_dir).expanduser():
            out.append(root)
    return out


def _idx_file(folder: Path, stem: str) -> Path | None:
    for p in (folder / stem, folder / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def _not_found(name: str, data_dir: str | Path | None, reason: str) -> DataNotFoundError:
    places = "\n".join(f"  {p}" for p in _candidates(name, data_dir))
    return DataNotFoundError(
        f"dataset {name!r} not found. Searched, in order:\n{places}\n{reason}\n"
        f"Point hebbedge at the data with `--data-dir DIR` or `export HEBBEDGE_DATA=DIR`, where DIR "
        f"holds {name}/ with the four IDX files ({', '.join(_FILES)}; each plain or .gz).")


def _check_data_dir(data_dir: str | Path | None) -> None:
    """An explicit data folder must exist and hold some dataset: a mistyped --data-dir is an error,
    not a silent fall-back to whatever else is on the search path."""
    if data_dir is None:
        return
    root = Path(data_dir).expanduser()
    expected = (f"expected a data folder holding {', '.join(f'{n}/' for n in DATASETS)} or {CIFAR10_FOLDER}/ "
                f"(or the files themselves: {', '.join(_FILES)}, each plain or .gz)")
    if not root.is_dir():
        raise DataDirError(f"{root}: no such folder (--data-dir); {expected}")
    folders = [root, root / CIFAR10_FOLDER, root / "cifar10" / CIFAR10_FOLDER]
    folders += [f for n in DATASETS for f in (root / n, root / _TV_NAMES[n] / "raw")]
    names = [*_FILES, *(f"{f}.gz" for f in _FILES), *_CIFAR10_FILES]
    if not any((f / n).is_file() for f in folders for n in names):
        raise DataDirError(f"{root}: holds no dataset (--data-dir); {expected}")


def find_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """The first folder on the search path holding all four IDX files; DataNotFoundError if none."""
    _check_name(name)
    _check_data_dir(data_dir)
    for folder in _candidates(name, data_dir):
        if all(_idx_file(folder, f) for f in _FILES):
            return folder
    raise _not_found(name, data_dir, "No folder there holds all four IDX files.")


def resolve(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """`find_dataset`, falling back to a torchvision download into the user cache."""
    try:
        return find_dataset(name, data_dir)
    except DataDirError:
        raise
    except DataNotFoundError:
        if not download:
            raise
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # an offline machine should fail fast, not hang
    try:
        import torchvision  # imported lazily: slow, and only needed here

        getattr(torchvision.datasets, _TV_NAMES[name])(root=str(cache_root()), download=True)
    except Exception as err:
        raise _not_found(name, data_dir, f"Downloading it failed: {err!r}") from err
    finally:
        socket.setdefaulttimeout(old_timeout)
    return find_dataset(name, data_dir)  # torchvision put it in <cache>/<Name>/raw/


def read_idx(path: Path) -> torch.Tensor:
    """Parse an IDX file (gzip-compressed when it ends in .gz) into a tensor; BadFileError if it is not one."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # not gzip, cut short, or damaged inside
        raise BadFileError(path, f"expected a gzip-compressed IDX file, but it does not decompress ({err})") from None
    except OSError as err:
        raise BadFileError(path, f"cannot read the IDX file ({err.strerror or err})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise BadFileError(path, f"not an IDX file (expected magic 00 00 <type> <ndim>, "
                                 f"type one of {sorted(_IDX_DTYPES)}; got {data[:4].hex(' ')!r})")
    ndim, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BadFileError(path, f"truncated IDX header (expected {ndim} dimension sizes, "
                                 f"file has {len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    count = math.prod(dims)  # exact: garbage sizes must not wrap around as int64 would
    if len(data) < header + count * dtype.itemsize:
        raise BadFileError(path, f"truncated IDX data (expected {'x'.join(map(str, dims))} {dtype} "
                                 f"values after the header, file has {len(data)} bytes)")
    arr = np.frombuffer(data, dtype, count, header).reshape(dims)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("=")))  # native-order, writable copy


def split_files(name: str, train: bool, data_dir: str | Path | None = None,
                download: bool = True) -> tuple[Path, Path]:
    """The images and labels files `load_split` reads."""
    folder = resolve(name, data_dir, download)
    prefix = "train" if train else "t10k"
    return _idx_file(folder, f"{prefix}-images-idx3-ubyte"), _idx_file(folder, f"{prefix}-labels-idx1-ubyte")


def load_split(name: str, train: bool, data_dir: str | Path | None = None,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and labels as int64 [N]."""
    images_file, labels_file = split_files(name, train, data_dir, download)
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.dtype != torch.uint8 or images.shape[1:] != (28, 28) or len(images) == 0:
        raise BadFileError(images_file, f"expected unsigned-byte images [N, 28, 28], N > 0; "
                                        f"got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != torch.uint8 or labels.shape != images.shape[:1]:
        raise BadFileError(labels_file, f"expected {len(images)} unsigned-byte labels, one per image of "
                                        f"{images_file.name}; got {labels.dtype} {tuple(labels.shape)}")
    if labels.max() >= 10:
        raise BadFileError(labels_file, f"expected labels 0..9; got {int(labels.max())}")
    return images.unsqueeze(1).float().div_(255), labels.long()


def fingerprint(paths: list[Path]) -> list[dict]:
    """Each file's path, size and sha256: what a run records of the data it used."""
    out = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out.append({"file": str(Path(path).resolve()), "bytes": path.stat().st_size, "sha256": digest.hexdigest()})
    return out


def load_standardised(name: str, train: bool, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``load_split``'s images standardised with the dataset's mean/std (MEAN_STD), and its labels."""
    x, y = load_split(name, train, data_dir)
    mean, std = MEAN_STD[name]
    return (x - mean) / std, y


def _cifar10_candidates(data_dir: str | Path | None) -> list[Path]:
    """Every folder that may hold CIFAR-10's six python batches, in search order."""
    out = []
    for root in search_path(data_dir):
        out += [root / CIFAR10_FOLDER, root / "cifar10" / CIFAR10_FOLDER]
        if data_dir is not None and root == Path(data_dir).expanduser():
            out.append(root)  # the batches themselves, named explicitly
    return out


def find_cifar10(data_dir: str | Path | None = None) -> Path:
    """The first `cifar-10-batches-py` folder on the search path; DataNotFoundError if none.

    Never downloads: CIFAR-10 is 170 MB and these machines are often offline.
    """
    _check_data_dir(data_dir)
    candidates = _cifar10_candidates(data_dir)
    for folder in candidates:
        if all((folder / f).is_file() for f in _CIFAR10_FILES):
            return folder
    places = "\n".join(f"  {p}" for p in candidates)
    raise DataNotFoundError(
        f"dataset 'cifar10' not found. Searched, in order:\n{places}\n"
        f"No folder there holds all six python batches ({', '.join(_CIFAR10_FILES)}). CIFAR-10 is "
        f"not downloaded automatically here (machines may be offline): fetch and extract "
        f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, then point "
        f"hebbedge at it with `--data-dir DIR` or `export HEBBEDGE_DATA=DIR`, where DIR holds "
        f"{CIFAR10_FOLDER}/.")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays, and nothing that could run code."""

    # An ndarray pickles as numpy.ndarray, numpy.dtype and a reconstructor (protocol <= 4: _reconstruct,
    # 5: _frombuffer), under numpy.core in numpy 1 and numpy._core in numpy 2.
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype")} | {
        (f"{core}.{module}", name) for core in ("numpy.core", "numpy._core")
        for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"holds a {module}.{name} object, not only arrays")
        return super().find_class(module, name)


def cifar10_files(train: bool, data_dir: str | Path | None = None) -> list[Path]:
    """The python batches `load_cifar10` reads."""
    folder = find_cifar10(data_dir)
    return [folder / name for name in (_CIFAR10_FILES[:5] if train else _CIFAR10_FILES[5:])]


def load_cifar10(train: bool, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images as float32 [N, 3, 32, 32] in [0, 1] and labels as int64 [N].

    Reads the python pickle batches directly. torchvision's CIFAR10 reads the same files but
    insists on their MD5 sums, which files made by tests (or re-packed copies) cannot pass.
    The batches are pickles, so they are read by an unpickler that builds arrays and nothing else.
    """
    images, labels = [], []
    for path in cifar10_files(train, data_dir):
        expected = "expected a CIFAR-10 python batch (a pickled dict with b'data' uint8 [N, 3072] and N b'labels')"
        try:
            with open(path, "rb") as f:
                batch = _ArraysOnly(f, encoding="bytes").load()
            x = np.asarray(batch[b"data"], dtype=np.uint8)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except OSError as err:
            raise BadFileError(path, f"cannot read the CIFAR-10 batch ({err.strerror or err})") from None
        except Exception as err:  # unpickling fails in many ways on a damaged file
            raise BadFileError(path, f"{expected}; {type(err).__name__}: {err}") from None
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != x.shape[:1] or len(y) == 0:
            raise BadFileError(path, f"{expected}; got data {x.shape}, labels {y.shape}")
        if y.min() < 0 or y.max() >= 10:
            raise BadFileError(path, f"expected labels 0..9; got {int(y.min())}..{int(y.max())}")
        images.append(x.reshape(-1, 3, 32, 32))  # rows are R (1024), G, B planes, row-major
        labels.append(y)
    x = torch.from_numpy(np.concatenate(images))
    return x.float().div_(255), torch.from_numpy(np.concatenate(labels))
