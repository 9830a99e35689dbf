"""Saving without losing what was there (write to a temporary file, then rename over the target),
and reading back with one kind of error: `BadFileError`, a one-line "FILE: what was expected"."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable


class BadFileError(ValueError):
    """A file that is missing, unreadable or not what it should be; the message names the file."""

    def __init__(self, path: str | Path, expected: str) -> None:
        super().__init__(f"{path}: {expected}")


def _create_temporary(path: Path) -> str:
    """A new empty file beside `path`. Created with mode 0666 so that the kernel applies the umask,
    as for any file the user writes (tempfile.mkstemp would make it 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file onto `path` (atomic on POSIX). The file and
    then its folder are flushed to disk, so after a power loss `path` holds the old or the new bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: str | Path, obj: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    return atomic_write(path, write)


def save_checkpoint(path: str | Path, state: dict) -> Path:
    import torch  # here, not at the top: the edge runtime uses atomic_write without torch

    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_json(path: str | Path, what: str) -> Any:
    """The parsed JSON file `path`, `what` naming its role in a BadFileError."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except OSError as err:
        raise BadFileError(path, f"cannot read {what} ({err.strerror or err})") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        raise BadFileError(path, f"expected {what} in JSON, but it does not parse ({err})") from None


def load_torch(path: str | Path, what: str, map_location: Any = None) -> Any:
    """`torch.load` with weights_only=True (tensors and plain containers, never code), `what` naming
    the file's role in a BadFileError instead of torch's advice to retry with weights_only=False."""
    import pickle

    import torch

    expected = f"expected {what} (a PyTorch file of tensors)"
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise BadFileError(path, f"cannot read {what} ({err.strerror or err})") from None
    except pickle.UnpicklingError:
        raise BadFileError(path, f"{expected}, but it is damaged or holds other Python objects "
                                 "(not loaded: unpickling those could run code)") from None
    except Exception as err:  # RuntimeError, EOFError, ... depending on where the damage is
        reason = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__
        raise BadFileError(path, f"{expected}, but it does not load ({reason})") from None


def remove_temporaries(folder: str | Path, name: str = "*") -> None:
    """Delete the temporary files `atomic_write` leaves in `folder` (for the file `name` only, if given)
    when its process is killed while writing. Only call it when no other process can be writing them."""
    for tmp in Path(folder).glob(f".{name}.*.tmp" if name != "*" else ".*.tmp"):
        tmp.unlink(missing_ok=True)
