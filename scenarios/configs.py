"""Per-stream hyperparameters, one TOML file per stream in `configs/` (named like SCENARIOS)."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from hebbedge.files import BadFileError
from hebbedge.scenarios.streams import SCENARIOS

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigTable(dict):
    """A config table (or the whole config) that names its file and the key when a key is missing,
    instead of a bare KeyError deep inside the code that reads it."""

    def __init__(self, values: dict, path: Path, section: str | None = None) -> None:
        super().__init__(values)
        self.path, self.section = path, section

    def __missing__(self, key: str):
        where = f"no key {key!r} in [{self.section}]" if self.section else f"no [{key}] section"
        raise BadFileError(self.path, f"{where} (a stream config; see the others in {self.path.parent})")


def load_config(name: str) -> dict:
    """The parsed `configs/<name>.toml`: sections stream, model, hebbian, backprop (and optional ones).

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
    merged = {} if base is None else load_config(base)
    for section, values in cfg.items():
        if not isinstance(values, dict):
            raise BadFileError(path, f"{section} = {values!r}: expected a [{section}] table")
        merged[section] = {**merged.get(section, {}), **values}
    return ConfigTable({s: ConfigTable(v, path, s) for s, v in merged.items()}, path)
