"""SoftHebb on MNIST, seed 0, the paper's schedule, with each layer's Triangle applied before its pooling, as in
the paper's Table 4 and the authors' demo code (pool(activation(conv(bn(x))))), instead of after it as its
appendix A.3 text says and hebbedge does. A layer's own learning does not depend on the order (the rule sees
its input patches), so layer 1 learns the same; the features passed upward, to layers 2-3 and to the head,
differ, and so does the control's. `--batch-size` replaces the paper's label-free batch of 10."""
import argparse
import dataclasses
from pathlib import Path

import torch
from torch import nn
from hebbedge.benchmarks import softhebb
from hebbedge.files import save_json
from hebbedge.plots import plot_probe_curves
from hebbedge.train import load_normalised

parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("--width-factor", type=int, default=1)
parser.add_argument("--batch-size", type=int, default=softhebb.SCHEDULES["paper"].batch_size)
args = parser.parse_args()


def triangle_first_net(*a, **kw):
    net = pool_first_net(*a, **kw)
    blocks = [nn.Sequential(bn, conv, triangle, pool) for bn, conv, pool, triangle in net[:-1]]
    return nn.Sequential(*blocks, net[-1])


pool_first_net, softhebb.softhebb_net = softhebb.softhebb_net, triangle_first_net
# "triangle-first" is the name the batch-64 record (f1-batch64.json) carries for the paper's schedule at its batch
schedule = "paper" if args.batch_size == softhebb.SCHEDULES["paper"].batch_size else "triangle-first"
softhebb.SCHEDULES[schedule] = dataclasses.replace(softhebb.SCHEDULES["paper"], batch_size=args.batch_size)
result = softhebb.run(load_normalised("mnist", torch.device("cpu"), None), args.width_factor, schedule, seed=0)
print(f"F-{args.width_factor}, paper schedule, label-free batch {args.batch_size}, Triangle before pooling: "
      f"{100 * result['softhebb_test_acc']:.2f} (control {100 * result['random_test_acc']:.2f})")
save_json(args.out, result)
plot_probe_curves(result, args.out.with_suffix(".png"))  # the heads' test accuracy per epoch
