"""SoftHebb at F-1, seed 0, the paper's schedule, with each batch's update divided by its largest absolute
entry before the norm-dependent rate is applied, as the authors' code does (hebbedge: mean over the
batch's patches). `--row-norm` sets the initial row norm of every layer's weights (default: hebbedge's
initialisation, radius 3 in the paper's A.1.2 parametrisation, row norm about 3.8); the authors' demo
code draws 25/sqrt(N) * randn, a row norm of about 25. Not a package option yet (issue 21 diagnostic)."""
import argparse
import math
from pathlib import Path

import torch
from hebbedge.benchmarks import softhebb
from hebbedge.files import save_json
from hebbedge.layers import HebbLayer
from hebbedge.rules import SoftHebbRule
from hebbedge.train import load_normalised

parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("--row-norm", type=float, default=None)
args = parser.parse_args()


class MaxNormSoftHebb(SoftHebbRule):
    def update(self, c, w, target=None):
        u = c @ w.T
        y = torch.softmax(u / self.temperature, dim=1)
        winner = torch.nn.functional.one_hot(u.argmax(1), u.shape[1]).to(y.dtype)
        y = y * (2 * winner - 1)
        dw = y.T @ c - (y * u).sum(0)[:, None] * w
        return self.adaptive_rate(w)[:, None] * dw / (dw.abs().amax() + 1e-30)


def maxnorm_net(*a, **kw):
    if args.row_norm is not None:
        kw["radius"] = args.row_norm * math.sqrt(2 / math.pi)  # softhebb_init_'s radius is sqrt(N) E|w| (A.1.2, eq. 4)
    net = mean_net(*a, **kw)
    for layer in net.modules():
        if isinstance(layer, HebbLayer):
            layer.rule = MaxNormSoftHebb(layer.rule.temperature, layer.rule.q)
    return net


mean_net, softhebb.softhebb_net = softhebb.softhebb_net, maxnorm_net
result = softhebb.run(load_normalised("mnist", torch.device("cpu"), None), 1, "paper", seed=0)
result["initial_row_norm"] = args.row_norm
print(f"paper schedule, max-normalised update, row norm {args.row_norm or 'hebbedge default'}: "
      f"{100 * result['softhebb_test_acc']:.2f} (control {100 * result['random_test_acc']:.2f})")
save_json(args.out, result)
