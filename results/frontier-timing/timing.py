"""Per-sample update time of a readout learner against a backprop step of the same network (issue 18).

The network: the learner's features as `hebbedge compare split-mnist` builds them (randumb: 784 -> D random
Fourier features; conv-lda: a 5x5 conv bank, max-pool, Triangle, average-pool to 4x4) and a D -> 10
linear head. Timed,
--batch samples per update (1: one at a time; times are per sample), float32 unless said, median over repeats, on this machine's CPU:

- readout, edge form: features + ``hebbedge.readout.merge`` (count, class means, pooled scatter; float32);
- readout, reference form: features + ``LDAReadout.accumulate`` (float64 sums, one rank-1 update);
- readout refresh: solving the classifier from the sums (``classifier``, float32), needed before the
  next prediction; a device runs it once per batch of updates, not per sample;
- backprop, head only: forward, cross-entropy, backward and an SGD step of the head (features fixed);
- backprop, whole network: the same with the features' weights (Fourier or conv) trainable too.

Usage: python results/frontier-timing/timing.py [--learner randumb] [--batch 1] [--threads 1] [--out results/frontier-timing/timing.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn as nn

from hebbedge import registry
from hebbedge.nets import RandomFourierFeatures, build_net
from hebbedge.readout import LDAReadout, classifier, merge
from hebbedge.scenarios import load_config


class TrainableFourier(nn.Module):
    """The random Fourier features with W a parameter (for the whole-network backprop step)."""

    def __init__(self, rff: RandomFourierFeatures) -> None:
        super().__init__()
        self.weight, self.offset, self.scale = nn.Parameter(rff.weight.clone()), rff.offset, rff.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.cos(x.flatten(1) @ self.weight + self.offset)


def trainable(features: nn.Module) -> nn.Module:
    """The same features with their weights trainable: the Fourier weights, or the conv bank's as an nn.Conv2d."""
    if isinstance(features, RandomFourierFeatures):
        return TrainableFourier(features)
    conv = features[0]
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=False)
    plain.weight.data.copy_(conv.weight)
    return nn.Sequential(plain, *features[1:])


def median_time(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learner", default="randumb", choices=["randumb", "conv-lda"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features, readout_module = build_net(registry.LEARNERS[args.learner], load_config("split-mnist"), (1, 28, 28), 10)
    d, c = readout_module.n_features, 10
    x, y = torch.randn(args.batch, 1, 28, 28), torch.arange(args.batch) % c
    one_hot = torch.nn.functional.one_hot(y, c).float()

    count, mean, scatter = torch.ones(c), torch.zeros(c, d), torch.eye(d)
    readout = LDAReadout(d, c)

    def edge_update():
        with torch.no_grad():
            merge(features(x), one_hot, count, mean, scatter)

    def reference_update():
        with torch.no_grad():
            readout.accumulate(features(x), y)

    def refresh():
        classifier(count, mean, scatter, 1e-4)

    head = nn.Linear(d, c)
    head_opt = torch.optim.SGD(head.parameters(), lr=0.01)

    def backprop_head():
        with torch.no_grad():
            f = features(x)
        loss = nn.functional.cross_entropy(head(f), y)
        head_opt.zero_grad()
        loss.backward()
        head_opt.step()

    whole = trainable(features)
    full_opt = torch.optim.SGD([*whole.parameters(), *head.parameters()], lr=0.01)

    def backprop_full():
        f = whole(x)
        loss = nn.functional.cross_entropy(head(f), y)
        full_opt.zero_grad()
        loss.backward()
        full_opt.step()

    per_sample = {"readout update, edge form (features + merge, float32)": median_time(edge_update, args.repeats),
            "readout update, reference form (features + accumulate, float64)": median_time(reference_update, args.repeats),
            "backprop step, head only (features fixed)": median_time(backprop_head, args.repeats),
            "backprop step, whole network": median_time(backprop_full, args.repeats)}
    rows = {name: t / args.batch for name, t in per_sample.items()}
    rows["readout refresh (solve the classifier, float32; per call, once per batch of updates)"] = median_time(refresh, 10, warmup=1)
    state_bytes = 4 * (c + c * d + d * d)
    report = {"learner": args.learner, "features": d, "batch": args.batch, "per": "sample (refresh: per call)", "threads": args.threads, "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_average": os.getloadavg(), "median_seconds": rows,
              "readout_state_bytes_float32": state_bytes, "head_parameters_bytes_float32": 4 * (d * c + c),
              "whole_network_parameters_bytes_float32": 4 * (sum(p.numel() for p in whole.parameters()) + d * c + c)}
    for name, t in rows.items():
        print(f"{name:75s} {1e3 * t:9.3f} ms")
    print(f"readout state (count, means, scatter; float32): {state_bytes} bytes; load average {os.getloadavg()}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
