"""hebbedge: continual learning and edge deployment with neuron-centric Hebbian plasticity."""

from hebbedge.backprop import BackpropLearner
from hebbedge.layers import HebbConv2d, HebbLayer, HebbLinear
from hebbedge.learner import HebbianLearner, StepResult
from hebbedge.models import thesis_conv, thesis_linear
from hebbedge.rules import ContrastiveRule, HebbianDescent, Rule

__all__ = [
    "BackpropLearner", "ContrastiveRule", "HebbConv2d", "HebbLayer", "HebbLinear", "HebbianDescent",
    "HebbianLearner", "Rule", "StepResult", "thesis_conv", "thesis_linear",
]
