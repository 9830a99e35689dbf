"""`hebbedge tune`: Avalanche's baselines tuned as fairly as our own learners (issue 18).

Every method gets the same budget: K candidate settings of its strength (EWC λ, SI λ, LwF α and
temperature jointly, the replay memory), each one run with seed 0 on a validation stream held out
from the training data (``make_stream(validation=N)``: the test set is never read). The chosen
setting is the one with the best class-incremental final average accuracy on that stream, the
earlier candidate on a tie. Each trial is a run folder OUT/METHOD/trialI, read back when finished,
so an interrupted tuning continues where it stopped; OUT/tuned.json and OUT/report.md record every
trial and the choices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hebbedge.continual import StreamRun, run_all
from hebbedge.files import atomic_write, save_json

CRITERION = "class-incremental final average accuracy on the validation stream"
MIN_TRIALS, MAX_TRIALS = 2, 10  # a choice needs two candidates; beyond ten the ranges below are sampled finer than matters

# The ranges the K candidates are log-spaced over. EWC and SI: six decades each, from the low end
# of the values in use (Avalanche's EWC example 0.4, Hsu et al.'s Split-MNIST EWC 100 to 800, our
# old defaults EWC 100 and SI 1) to far above them, because the class-incremental case wants much
# stronger regularisation than the task-incremental one those values were set for. LwF: Li &
# Hoiem's α = 1 and T = 2, Avalanche's Split-MNIST example raises α to 3.2: α from 1 to 10, and T
# at 1 and 2 when an even budget of 4 or more leaves two α for each (T matters less than α), else
# T = 2. Replay: Avalanche's default memory is 200 samples, 2000 the class-incremental Split-MNIST
# budget of van de Ven et al.'s scenarios; 250 to 2000 gives 250, 500, 1000, 2000 at K = 4.
RANGES = {"ewc": {"ewc_lambda": (1.0, 1e6)}, "si": {"si_lambda": (0.01, 1e4)},
          "lwf": {"lwf_alpha": (1.0, 10.0)}, "replay": {"replay_mem_size": (250, 2000)}}
LWF_TEMPERATURES = (1.0, 2.0)


def _log_spaced(low: float, high: float, k: int) -> list[float]:
    """k values log-spaced over [low, high], to two significant digits (1e4, not 9999.999...)."""
    return [float(f"{v:.2g}") for v in np.geomspace(low, high, k)]


def candidates(method: str, k: int) -> list[dict]:
    """The method's K candidate [backprop] settings, in a fixed order."""
    if method == "lwf":
        temperatures = LWF_TEMPERATURES if k % 2 == 0 and k >= 4 else LWF_TEMPERATURES[-1:]
        alphas = _log_spaced(*RANGES["lwf"]["lwf_alpha"], k // len(temperatures))
        return [{"lwf_alpha": a, "lwf_temperature": t} for a in alphas for t in temperatures]
    (key, (low, high)), = RANGES[method].items()
    values = _log_spaced(low, high, k)
    return [{key: round(v) if isinstance(low, int) else v} for v in values]


def _trials(scenario: str, methods: list[str], k: int, validation: int, seed: int, train_size: int | None,
            epochs: int | None) -> list[tuple[str, int, dict, StreamRun]]:
    """(method, index, setting, run) of every trial; building the runs checks every setting first."""
    return [(method, i, setting, StreamRun(scenario, method, seed, epochs=epochs, train_size=train_size, validation=validation,
                                           overrides={"backprop": setting}))
            for method in methods for i, setting in enumerate(candidates(method, k))]


def tune(scenario: str, methods: list[str], k: int, validation: int, out_dir: str | Path, device: torch.device,
         data_dir: str | None = None, seed: int = 0, train_size: int | None = None, epochs: int | None = None) -> dict:
    """Run the K trials of every method on the validation stream; write and return tuned.json's record."""
    out = Path(out_dir)
    trials = _trials(scenario, methods, k, validation, seed, train_size, epochs)
    done = run_all([(run, out / method / f"trial{i}") for method, i, _, run in trials], device, data_dir, f"tune {scenario}")
    record = {"scenario": scenario, "seed": seed, "validation": validation, "train_size": train_size, "epochs": epochs,
              "trials_per_method": k, "criterion": CRITERION, "methods": {m: {"trials": []} for m in methods}}
    for (method, i, setting, _), metrics in zip(trials, done):
        acc = metrics["protocols"]["class-incremental"]["final_avg_acc"]
        record["methods"][method]["trials"].append({"run": f"{method}/trial{i}", "setting": setting, "validation_acc": acc})
    for entry in record["methods"].values():
        best = max(entry["trials"], key=lambda t: t["validation_acc"])  # max keeps the first of equals
        entry.update(chosen=best["setting"], validation_acc=best["validation_acc"])
    save_json(out / "tuned.json", record)
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(report(record)))
    return record


def _show(setting: dict) -> str:
    return ", ".join(f"{key} = {value:g}" for key, value in setting.items())


def report(record: dict) -> str:
    """tuned.json's record as Markdown: every trial's validation accuracy, the chosen one in bold."""
    size = record["train_size"] or "the remaining"
    lines = [f"# {record['scenario']}: baselines tuned on a validation stream",
             "", f"{record['validation']} training images held out as the validation stream (stratified by class; "
                 f"the test set is not used), training on {size} training images, seed {record['seed']}, "
                 f"{record['trials_per_method']} trials per method; criterion: {record['criterion']}.",
             "", "| method | setting | validation acc (%) |", "| --- | --- | --- |"]
    for method, entry in record["methods"].items():
        for t in entry["trials"]:
            cell = f"{100 * t['validation_acc']:.2f}"
            chosen = t["setting"] == entry["chosen"]
            lines.append(f"| {method} | {'**' * chosen}{_show(t['setting'])}{'**' * chosen} | {cell} |")
    return "\n".join(lines) + "\n"

