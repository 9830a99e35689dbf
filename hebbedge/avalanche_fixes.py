"""Fixes for Avalanche 0.6 bugs that change baseline results; imported by `hebbedge.continual`.

Synaptic Intelligence on CPU: ``SynapticIntelligencePlugin.extract_weights`` stores
``param.detach().cpu().flatten()``. On a CPU tensor ``.cpu()`` and ``.flatten()`` return views of
the live parameter, so the "old" and "new" weights it compares are the same memory, the path
integral (trajectory) is always zero, and SI silently behaves exactly like Naive. On CUDA the
``.cpu()`` copy hides the bug. Storing a copy restores the intended behaviour on every device.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins.synaptic_intelligence import SynapticIntelligencePlugin


@torch.no_grad()
def _extract_weights_copy(model, target, excluded_parameters) -> None:
    for name, param in SynapticIntelligencePlugin.allowed_parameters(model, excluded_parameters):
        target[name].data = param.detach().cpu().flatten().clone()


SynapticIntelligencePlugin.extract_weights = staticmethod(_extract_weights_copy)
