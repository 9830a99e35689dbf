"""Why the CH conv net does not learn a new pair (issue 21, docs/seeds.md section 3): trains the thesis conv
net at width factor 1 on the pairs given, one epoch each at batch 64 (the Table 6.10 protocol, without
Avalanche: the same learner step), and prints after each pair
- the pair's training accuracy over the last 60 steps, restricted to its two classes (task-aware; chance 0.5),
- the mean |C| of each Hebbian layer,
- for each hidden FC layer, on 500 training images of each class of the next pair (of the last pair at the
  end): the fraction of tanh units at |h| > 0.95 (saturated), and the distance between the two classes'
  mean features against the spread within a class (norm of the per-unit std).

    python results/seeds/table-6.10-conv-ch-f1/probe.py --optimizer adamw --lr 0.1 --pairs 01,23
"""

from __future__ import annotations

import argparse

import torch

from hebbedge.data import load_standardised
from hebbedge.layers import HebbLayer, HebbLinear
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_conv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9, help="sgd only")
    p.add_argument("--weight-decay", type=float, default=0.001)
    p.add_argument("--eta", type=float, default=1e-3, help="Hebbian rate of the linear layers")
    p.add_argument("--eta-conv", type=float, default=1e-4)
    p.add_argument("--pairs", default="01,23", help="comma-separated pairs of digits, trained in this order")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    pairs = [(int(s[0]), int(s[1])) for s in args.pairs.split(",")]

    torch.manual_seed(args.seed)
    x, y = load_standardised("mnist", True)
    model = thesis_conv(width_factor=1, eta_conv=args.eta_conv, eta_linear=args.eta)
    learner = HebbianLearner(model, lr=args.lr, weight_decay=args.weight_decay, optimizer=args.optimizer, momentum=args.momentum)
    hidden = [m for m in model if isinstance(m, HebbLinear) and m.activation is not None]
    for n, pair in enumerate(pairs):
        idx = torch.nonzero((y == pair[0]) | (y == pair[1])).flatten()
        idx = idx[torch.randperm(len(idx))]
        hits = []
        for i in range(0, len(idx), 64):
            b = idx[i:i + 64]
            logits = learner.step(x[b], y[b]).logits
            hits.append((logits[:, list(pair)].argmax(1) == (y[b] - pair[0]).long()).float().mean().item())
        c = " ".join(f"{(l.c_pre.abs().mean() + l.c_post.abs().mean()).item() / 2:.2f}" for l in model if isinstance(l, HebbLayer))
        print(f"after {pair}: training accuracy over the last 60 steps {100 * sum(hits[-60:]) / 60:.1f}; mean |C| per layer {c}")
        features = {}
        hooks = [m.register_forward_hook(lambda m, i, out, k=k: features.__setitem__(k, out.detach())) for k, m in enumerate(hidden)]
        model.eval()
        per_class = {}
        probed = pairs[min(n + 1, len(pairs) - 1)]
        with torch.no_grad():
            for digit in probed:
                model(x[y == digit][:500])
                per_class[digit] = dict(features)
        for h in hooks:
            h.remove()
        for k, layer in enumerate(hidden):
            a, b = (per_class[d][k] for d in probed)
            both = torch.cat([a, b])
            print(f"  hidden layer {k + 1} ({layer.out_features} units): saturated {100 * (both.abs() > 0.95).float().mean():.0f}%, "
                  f"|mean {probed[0]} - mean {probed[1]}| {(a.mean(0) - b.mean(0)).norm():.2f}, within-class spread {a.std(0).norm():.2f}")


if __name__ == "__main__":
    main()
