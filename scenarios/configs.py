"""Per-stream hyperparameters, one TOML file per stream in `configs/` (named like SCENARIOS)."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from hebbedge.scenarios.streams import SCENARIOS

CONFIG_DIR = Path(__file__).parent / "configs"


def load_config(name: str) -> dict:
    """The parsed `configs/<name>.toml`: sections stream, model, hebbian, backprop (and optional ones).

    A file with `base = "<stream>"` at its top starts from that stream's config; each of its own
    sections replaces keys of the base's section of the same name.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown stream {name!r}; valid names: {', '.join(SCENARIOS)}")
    path = CONFIG_DIR / f"{name}.toml"
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    merged = load_config(base)
    for section, values in cfg.items():
        merged[section] = {**merged.get(section, {}), **values}
    return merged
