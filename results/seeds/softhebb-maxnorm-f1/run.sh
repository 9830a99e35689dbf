#!/bin/bash
# Diagnostic for issue 21 (docs/seeds.md section 4): SoftHebb at F-1, seed 0, the paper's schedule,
# with each batch's update divided by its largest absolute entry before the rate is applied, as the
# authors' code does, instead of hebbedge's mean over the batch's patches. Not a package option yet.
# Run from the repository root with HEBBEDGE_DATA set; about 20 minutes on one core.
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python - "${OUT:-results/seeds/softhebb-maxnorm-f1}/paper-maxnorm.json" <<'PY'
import sys
from pathlib import Path
import torch
from hebbedge.benchmarks import softhebb
from hebbedge.files import save_json
from hebbedge.layers import HebbLayer
from hebbedge.rules import SoftHebbRule
from hebbedge.train import load_normalised


class MaxNormSoftHebb(SoftHebbRule):
    def update(self, c, w, target=None):
        u = c @ w.T
        y = torch.softmax(u / self.temperature, dim=1)
        winner = torch.nn.functional.one_hot(u.argmax(1), u.shape[1]).to(y.dtype)
        y = y * (2 * winner - 1)
        dw = y.T @ c - (y * u).sum(0)[:, None] * w
        return self.adaptive_rate(w)[:, None] * dw / (dw.abs().amax() + 1e-30)


def maxnorm_net(*args, **kwargs):
    net = mean_net(*args, **kwargs)
    for layer in net.modules():
        if isinstance(layer, HebbLayer):
            layer.rule = MaxNormSoftHebb(layer.rule.temperature, layer.rule.q)
    return net


mean_net, softhebb.softhebb_net = softhebb.softhebb_net, maxnorm_net
result = softhebb.run(load_normalised("mnist", torch.device("cpu"), None), 1, "paper", seed=0)
print(f"paper schedule, max-normalised update: {100 * result['softhebb_test_acc']:.2f} (control {100 * result['random_test_acc']:.2f})")
save_json(Path(sys.argv[1]), result)
PY
