"""PNG figures for results people would rather see than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402

from hebbedge.files import atomic_write  # noqa: E402


def plot_learning_curves(result: dict, path: str | Path) -> Path:
    """Validation accuracy per epoch of every run in a benchmark record."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in result["runs"].items():
        epochs = [h["epoch"] for h in run["history"]]
        ax.plot(epochs, [100 * h["val_acc"] for h in run["history"]], marker="o", ms=3,
                label=f"{name} (test {100 * run['test_acc']:.2f}%)")
    cfg = next(iter(result["runs"].values()))["config"]
    arch = "x".join(map(str, cfg["widths"])) if cfg["arch"] == "linear" else f"conv F-{cfg['width_factor']}"
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
           title=f"{result['benchmark']}, {arch}, batch {cfg['batch_size']} ({result['device']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return out
