"""Continual-learning metrics in two protocols, as Avalanche metrics and plugins.

- class-incremental: one head over all classes, no task labels — Avalanche's own
  ``Top1_Acc_Exp`` (``accuracy_metrics(experience=True)``).
- task-aware: the prediction is restricted to the classes of the evaluated experience
  (``OwnClassesAccuracy`` below). This is the protocol that the thesis' Table 6.10 figures match.

``AccuracyMatrixPlugin`` collects a[i][j] (after training experience i, accuracy on test experience
j) for both protocols; being plugin state, it travels inside Avalanche checkpoints.
"""

from __future__ import annotations

import re

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name

PROTOCOLS = {"class-incremental": "Top1_Acc_Exp", "task-aware": "Top1_OwnClasses_Acc_Exp"}


def own_classes_correct(logits: torch.Tensor, target: torch.Tensor, classes: list[int]) -> int:
    """Correct predictions when argmax runs only over `classes` (the task-aware protocol)."""
    idx = torch.as_tensor(sorted(classes), device=logits.device)
    return (idx[logits[:, idx].argmax(1)] == target).sum().item()


class OwnClassesAccuracy(PluginMetric[float]):
    """Accuracy on each evaluated experience with the prediction restricted to its own classes."""

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self._correct, self._total = 0, 0

    def result(self) -> float:
        return self._correct / self._total if self._total else 0.0

    def before_eval_exp(self, strategy) -> None:
        self.reset()

    def after_eval_iteration(self, strategy) -> None:
        classes = strategy.experience.classes_in_this_experience
        self._correct += own_classes_correct(strategy.mb_output, strategy.mb_y, classes)
        self._total += len(strategy.mb_y)

    def after_eval_exp(self, strategy) -> list[MetricValue]:
        name = get_metric_name(self, strategy, add_experience=True)
        return [MetricValue(self, name, self.result(), strategy.clock.train_iterations)]

    def __str__(self) -> str:
        return PROTOCOLS["task-aware"]


def summarize(matrix: list[list[float]]) -> dict:
    """Final average accuracy, forgetting and BWT of an accuracy matrix a[i][j].

    Forgetting follows Avalanche: for each experience j but the last, the accuracy right after
    training on it, a[j][j], minus the final one, a[T-1][j]; averaged. BWT is its negative
    (Lopez-Paz & Ranzato). A single-row matrix (joint training) has neither. A run that trained
    only the first T experiences has T rows; its final accuracy still averages every column.
    """
    final = matrix[-1]
    out = {"final_avg_acc": sum(final) / len(final), "forgetting": None, "bwt": None}
    if 1 < len(matrix) <= len(final):  # rows: the experiences trained so far
        drops = [matrix[j][j] - final[j] for j in range(len(matrix) - 1)]
        out["forgetting"] = sum(drops) / len(drops)
        out["bwt"] = -out["forgetting"]
    return out


class AccuracyMatrixPlugin(SupervisedPlugin):
    """Records one row per evaluation of the whole test stream, for every protocol."""

    _EXP = re.compile(r"/Exp(\d+)$")

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[float]]] = {p: [] for p in PROTOCOLS}

    def after_eval(self, strategy, **kwargs) -> None:
        last = strategy.evaluator.get_last_metrics()
        for protocol, prefix in PROTOCOLS.items():
            values = {int(self._EXP.search(k).group(1)): v for k, v in last.items()
                      if k.startswith(prefix + "/eval_phase/test_stream")}
            if not values:
                raise RuntimeError(f"no {prefix} values after evaluation; is the metric in the evaluator?")
            self.rows[protocol].append([values[j] for j in sorted(values)])

    def results(self) -> dict:
        return {p: {"matrix": rows, **summarize(rows)} for p, rows in self.rows.items()}
