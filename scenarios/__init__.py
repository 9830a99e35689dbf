"""Continual-learning scenarios: Avalanche streams (`streams`) and their configs (`configs`)."""

import warnings

# Third-party warnings that tell a user of this package nothing, filtered here because every stream
# goes through this package before Avalanche is imported: qpsolvers' (imported by Avalanche for GEM,
# which no learner here uses), printed on every command; and Avalanche's when an evaluator has no
# loggers, which hebbedge.continual does on purpose (its own progress bars and tables replace them).
warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
warnings.filterwarnings("ignore", message="No loggers specified", category=UserWarning)

from hebbedge.scenarios.configs import load_config  # noqa: E402
from hebbedge.scenarios.streams import SCENARIOS, ScenarioSpec, make_stream  # noqa: E402

__all__ = ["SCENARIOS", "ScenarioSpec", "load_config", "make_stream"]
