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
    """The parsed `configs/<name>.toml`: sections stream, model, hebbian, backprop."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown stream {name!r}; valid names: {', '.join(SCENARIOS)}")
    path = CONFIG_DIR / f"{name}.toml"
    with open(path, "rb") as f:
        return tomllib.load(f)
