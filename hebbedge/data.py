"""Find, fetch and load MNIST / Fashion-MNIST from their IDX files.

The data is looked up in a fixed search path (see `search_path`) before anything is downloaded, so
offline machines, Debian dataset packages and the copy shipped inside the package all just work.
"""

from __future__ import annotations

import gzip
import os
import socket
from pathlib import Path

import numpy as np
import torch

DATASETS = ("mnist", "fashion-mnist")
MEAN_STD = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}

# Module-level so tests (and odd installs) can repoint them.
SYSTEM_ROOT = Path("/usr/share/datasets")  # Debian's dataset packages, e.g. .../fashion-mnist/
PACKAGE_ROOT = Path(__file__).parent / "datasets"  # the copy carried inside the package

# torchvision's folder names: it downloads into <root>/<Name>/raw/.
_TV_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# IDX type byte -> numpy dtype (data is big-endian).
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataNotFoundError(RuntimeError):
    """A dataset is in none of the searched places (and could not be downloaded)."""


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


def find_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """The first folder on the search path holding all four IDX files; DataNotFoundError if none."""
    _check_name(name)
    for folder in _candidates(name, data_dir):
        if all(_idx_file(folder, f) for f in _FILES):
            return folder
    raise _not_found(name, data_dir, "No folder there holds all four IDX files.")


def resolve(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """`find_dataset`, falling back to a torchvision download into the user cache."""
    try:
        return find_dataset(name, data_dir)
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
    """Parse an IDX file (gzip-compressed when it ends in .gz) into a tensor."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (expected magic 00 00 <type> <ndim>, "
                         f"type one of {sorted(_IDX_DTYPES)}; got {data[:4].hex(' ')!r})")
    ndim, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header (expected {ndim} dimension sizes, "
                         f"file has {len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    count = int(np.prod(dims))
    if len(data) < header + count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX data (expected {'x'.join(map(str, dims))} {dtype} "
                         f"values after the header, file has {len(data)} bytes)")
    arr = np.frombuffer(data, dtype, count, header).reshape(dims)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("=")))  # native-order, writable copy


def load_split(name: str, train: bool, data_dir: str | Path | None = None,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and labels as int64 [N]."""
    folder = resolve(name, data_dir, download)
    prefix = "train" if train else "t10k"
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"{folder}: unexpected shapes images {tuple(images.shape)}, "
                         f"labels {tuple(labels.shape)}")
    return images.unsqueeze(1).float().div_(255), labels.long()
