"""Per-stream hyperparameters, one TOML file per stream in `configs/` (named like SCENARIOS), read into
the typed schema of hebbedge/config.py."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from hebbedge.config import Config, ConfigError, from_dict
from hebbedge.files import BadFileError
from hebbedge.scenarios.streams import SCENARIOS

CONFIG_DIR = Path(__file__).parent / "configs"


def _read(name: str) -> tuple[Path, dict]:
    """The path of `configs/<name>.toml` and its parsed sections.

    A file with `base = "<stream>"` at its top starts from that stream's config; each of its own
    sections replaces keys of the base's section of the same name.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown stream {name!r}; valid names: {', '.join(SCENARIOS)}")
    path = CONFIG_DIR / f"{name}.toml"
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except OSError as err:
        raise BadFileError(path, f"cannot read the stream config ({err.strerror or err})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadFileError(path, f"expected a stream config in TOML, but it does not parse ({err})") from None
    base = cfg.pop("base", None)
    if base is not None and base not in SCENARIOS:
        raise BadFileError(path, f"base = {base!r} names no stream; expected one of {', '.join(SCENARIOS)}")
    merged = {} if base is None else _read(base)[1]
    for section, values in cfg.items():
        if not isinstance(values, dict):
            raise BadFileError(path, f"{section} = {values!r}: expected a [{section}] table")
        merged[section] = {**merged.get(section, {}), **values}
    return path, merged


def load_config(name: str) -> Config:
    """The typed `configs/<name>.toml`: sections stream, model, hebbian, backprop, unsupervised,
    hybrid (and readout for the transfer streams); BadFileError naming the file and the key when a
    section or key is unknown or a value has the wrong type."""
    path, merged = _read(name)
    try:
        return from_dict(merged, path)
    except ConfigError as err:
        raise BadFileError(path, str(err).removeprefix(f"{path}: ")) from None
