"""hebbedge: continual learning and edge deployment with neuron-centric Hebbian plasticity.

The names below are imported on first use, so that `hebbedge.export.edge` (the edge runtime)
runs on a device that has ONNX Runtime and numpy but no PyTorch.
"""

from importlib import import_module

_EXPORTS = {
    "BackpropLearner": "hebbedge.backprop",
    "ContrastiveRule": "hebbedge.rules",
    "GradientRule": "hebbedge.rules",
    "HebbConv2d": "hebbedge.layers",
    "HebbLayer": "hebbedge.layers",
    "HebbLinear": "hebbedge.layers",
    "HebbianDescent": "hebbedge.rules",
    "HebbianLearner": "hebbedge.learner",
    "Rule": "hebbedge.rules",
    "StepResult": "hebbedge.learner",
    "thesis_conv": "hebbedge.models",
    "thesis_linear": "hebbedge.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hebbedge' has no attribute {name!r}")
