"""Per-sample update time of randumb's readout against a backprop step of the same network (issue 18).

The network: randumb's features (784 -> D random Fourier features) and a D -> 10 linear head. Timed,
--batch samples per update (1: one at a time; times are per sample), float32 unless said, median over repeats, on this machine's CPU:

- readout, edge form: features + ``hebbedge.readout.merge`` (count, class means, pooled scatter; float32);
- readout, reference form: features + ``LDAReadout.accumulate`` (float64 sums, one rank-1 update);
- readout refresh: solving the classifier from the sums (``classifier``, float32), needed before the
  next prediction; a device runs it once per batch of updates, not per sample;
- backprop, head only: forward, cross-entropy, backward and an SGD step of the head (features fixed);
- backprop, whole network: the same with the random Fourier weights trainable too.

Usage: python results/frontier-timing/timing.py [--features 2048] [--batch 1] [--threads 1] [--out results/frontier-timing/timing.json]
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

from hebbedge.nets import RandomFourierFeatures, scale_gamma
from hebbedge.readout import LDAReadout, classifier, merge


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
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, c = args.features, 10
    features = RandomFourierFeatures(784, d, scale_gamma(784))
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

    w = nn.Parameter(features.weight.clone())
    full_opt = torch.optim.SGD([w, *head.parameters()], lr=0.01)

    def backprop_full():
        f = features.scale * torch.cos(x.flatten(1) @ w + features.offset)
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
    report = {"features": d, "batch": args.batch, "per": "sample (refresh: per call)", "threads": args.threads, "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_average": os.getloadavg(), "median_seconds": rows,
              "readout_state_bytes_float32": state_bytes, "head_parameters_bytes_float32": 4 * (d * c + c),
              "whole_network_parameters_bytes_float32": 4 * (784 * d + d + d * c + c)}
    for name, t in rows.items():
        print(f"{name:75s} {1e3 * t:9.3f} ms")
    print(f"readout state (count, means, scatter; float32): {state_bytes} bytes; load average {os.getloadavg()}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
