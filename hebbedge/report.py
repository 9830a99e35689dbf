"""`hebbedge compare`: several learners x seeds on one stream, and the report they make.

Each run lives in OUT/<learner>/seed<k>/ (config, metrics, checkpoint); a finished run is read back
rather than trained again, so an interrupted comparison continues where it stopped (and a folder
holding runs of other settings is refused, see `hebbedge.continual.check_record`).
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import torch

from hebbedge import registry
from hebbedge.continual import StreamRun, run_all, setting_parts
from hebbedge.files import atomic_write, save_json
from hebbedge.plots import plot_accuracy_matrices, plot_experience_curves, plot_final_accuracy

METRICS = ("final_avg_acc", "forgetting", "bwt")


def compare(scenario: str, learners: list[str], seeds: int, out_dir: str | Path, device: torch.device,
            data_dir: str | None = None, epochs: int | None = None, train_size: int | None = None,
            test_size: int | None = None, class_order: list[int] | None = None, overrides: dict | None = None) -> dict:
    """Run every learner with seeds 0..seeds-1 and write the report; returns its JSON record."""
    out = Path(out_dir)
    runs = [StreamRun(scenario, learner, seed, epochs=epochs, class_order=class_order, train_size=train_size, test_size=test_size,
                      overrides=overrides)
            for learner in learners for seed in range(seeds)]  # validates names before any training
    metrics = run_all([(run, out / run.learner / f"seed{run.seed}") for run in runs], device, data_dir, f"compare {scenario}")
    results: dict[str, list[dict]] = {learner: [] for learner in learners}
    for run, m in zip(runs, metrics):
        results[run.learner].append(m)
    return write_report(scenario, results, out)


def compare_dir(run: StreamRun) -> Path:
    """runs/compare-SCENARIO, then every setting in which the comparison's runs (`run` is one of
    them) depart from the defaults: comparisons of different settings never share a folder by default."""
    return Path("runs") / "-".join([f"compare-{run.scenario}", *setting_parts(run)])


def _mean_std(values: list[float | None]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(results: dict[str, list[dict]]) -> dict:
    """mean and std over seeds of every metric, per learner and protocol."""
    table = {}
    for learner, runs in results.items():
        protocols = runs[0]["protocols"]
        table[learner] = {p: {m: _mean_std([r["protocols"][p][m] for r in runs]) for m in METRICS} for p in protocols}
    return table


def costs(results: dict[str, list[dict]]) -> dict:
    """Per learner: the feature width, the readout state bytes and the training time per sample (ms, as run,
    mean and std over the runs that recorded it; records of older versions lack it)."""
    table = {}
    for learner, runs in results.items():
        per_sample = [1000 * r["train_seconds"] / r["train_samples"] for r in runs if r.get("train_samples")]
        table[learner] = {"features": runs[0].get("features"), "readout_state_bytes": runs[0].get("readout_state_bytes"),
                          "ms_per_sample": _mean_std(per_sample), "timed_runs": len(per_sample)}
    return table


def _cell(stat: tuple[float, float] | None) -> str:
    return "n/a" if stat is None else f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"


def _cost_cells(cost: dict) -> list[str]:
    state, per_sample = cost["readout_state_bytes"], cost["ms_per_sample"]
    return [str(cost["features"] or "n/a"), "n/a" if state is None else f"{state / 1e6:.2f}",
            "n/a" if per_sample is None else f"{per_sample[0]:.3f} ± {per_sample[1]:.3f} ({cost['timed_runs']} run(s) timed)"]


def markdown_table(table: dict, seeds: int, cost: dict) -> str:
    protocols = list(next(iter(table.values())))
    header = ("| learner | family | " + " | ".join(f"{p}: {m.replace('_', ' ')}" for p in protocols for m in METRICS)
              + " | features | readout state (MB) | training (ms/sample) |")
    lines = [header, "|" + " --- |" * (5 + len(protocols) * len(METRICS))]
    for learner, row in table.items():
        lines.append(f"| {learner} | {registry.LEARNERS[learner].family} | " + " | ".join(_cell(row[p][m]) for p in protocols for m in METRICS)
                     + " | " + " | ".join(_cost_cells(cost[learner])) + " |")
    lines.append(f"\nMean ± std over {seeds} seed(s), in percent. final avg acc: mean accuracy over all test experiences "
                 "after the last one; forgetting: accuracy right after training an experience minus the final one "
                 "(Avalanche's definition), averaged over all but the last; BWT = −forgetting. Joint trains once on "
                 "the whole stream, so it has neither. features: the width the output layer (or readout) reads; readout "
                 "state: an LDA readout's learned float32 state on the edge, 4 (C + C d + d²) bytes; training: seconds spent "
                 "in training (evaluation left out) per training sample, as run on this machine (mean ± std over seeds; "
                 "shared CPUs make it noisy).")
    return "\n".join(lines)


def write_report(scenario: str, results: dict[str, list[dict]], out: Path) -> dict:
    table, cost = aggregate(results), costs(results)
    seeds = max(len(r) for r in results.values())
    record = {"scenario": scenario, "seeds": seeds, "families": {learner: registry.LEARNERS[learner].family for learner in results},
              "summary": table, "cost": cost, "runs": results}
    save_json(out / "results.json", record)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["learner", "seed", "protocol", *METRICS])
    for learner, runs in results.items():
        for r in runs:
            for p, vals in r["protocols"].items():
                writer.writerow([learner, r["run"]["seed"], p, *(vals[m] for m in METRICS)])
    atomic_write(out / "results.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
    md = f"# {scenario}: forgetting versus backprop\n\n{markdown_table(table, seeds, cost)}\n"
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(md))
    plot_report(results, out)
    return record


def mean_matrix(runs: list[dict], protocol: str) -> list[list[float]]:
    """The runs' (seeds') accuracy matrices a[i][j] under `protocol`, averaged entry by entry."""
    return [[statistics.fmean(v) for v in zip(*rows)] for rows in zip(*(r["protocols"][protocol]["matrix"] for r in runs))]


def seed_mean_matrices(results: dict[str, list[dict]]) -> dict[str, dict[str, list[list[float]]]]:
    """Per learner, named with its seeds ("naive, mean of 5 seeds" or "naive, seed 0"), and per protocol: its
    `mean_matrix`."""
    out = {}
    for learner, runs in results.items():
        name = f"{learner}, mean of {len(runs)} seeds" if len(runs) > 1 else f"{learner}, seed {runs[0]['run']['seed']}"
        out[name] = {p: mean_matrix(runs, p) for p in runs[0]["protocols"]}
    return out


def plot_report(results: dict[str, list[dict]], out: Path) -> None:
    """The report's PNGs: heatmaps and per-experience curves of each learner's mean over seeds (a single seed's
    curves would pass for the report's figures), and the final accuracy of every seed."""
    matrices = seed_mean_matrices(results)
    plot_accuracy_matrices(matrices, out / "accuracy_matrices.png")
    plot_final_accuracy(results, out / "final_accuracy.png")
    for p in next(iter(matrices.values())):
        plot_experience_curves({learner: m[p] for learner, m in matrices.items()}, p, out / f"experience_accuracy_{p}.png")
