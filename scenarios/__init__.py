"""Continual-learning scenarios: Avalanche streams (`streams`) and their configs (`configs`)."""

from hebbedge.scenarios.configs import load_config
from hebbedge.scenarios.streams import SCENARIOS, ScenarioSpec, make_stream

__all__ = ["SCENARIOS", "ScenarioSpec", "load_config", "make_stream"]
