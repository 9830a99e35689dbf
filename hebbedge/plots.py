"""PNG figures for results people would rather see than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hebbedge.files import atomic_write  # noqa: E402


def plot_learning_curves(result: dict, path: str | Path) -> Path:
    """Validation (solid) and test (dashed) accuracy per epoch of an i.i.d. run (`hebbedge train`'s
    record) or of every run in a benchmark record (`hebbedge bench accuracy`'s); a run still
    training is drawn as far as it got."""
    runs = result["runs"] if "runs" in result else {result["config"]["learner"]: result}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (name, run) in enumerate(runs.items()):
        epochs = [h["epoch"] for h in run["history"]]
        final = (f"test {100 * run['test_acc']:.2f}%" if run.get("test_acc") is not None
                 else f"epoch {len(epochs)} of {run['config']['epochs']} so far")
        if "val_acc" in run["history"][0]:
            ax.plot(epochs, [100 * h["val_acc"] for h in run["history"]], marker="o", ms=3, color=f"C{k}",
                    label=f"{name} validation ({final})")
        if "test_acc" in run["history"][0]:
            ax.plot(epochs, [100 * h["test_acc"] for h in run["history"]], ls="--", marker="x", ms=3, color=f"C{k}",
                    label=f"{name} test")
    configs = [run["config"] for run in runs.values()]
    cfg = configs[0]
    arch = " and ".join(dict.fromkeys("x".join(map(str, c["widths"])) if c["arch"] == "linear" else f"conv F-{c['width_factor']}"
                                      for c in configs))  # each net once, in the runs' order
    name = result.get("benchmark", f"{cfg['dataset']} {cfg['learner']} seed {cfg['seed']}")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{name}, {arch}, batch {cfg['batch_size']} ({result['device']})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")  # rising curves leave that corner free
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return out


def plot_probe_curves(result: dict, path: str | Path) -> Path:
    """Test accuracy per epoch of the linear head on the SoftHebb features and on the random-weights
    control (`hebbedge softhebb`'s record)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, name in enumerate(("softhebb", "random")):
        curve = [100 * a for a in result[f"{name}_curve"]]
        label = "SoftHebb features" if name == "softhebb" else "random-weights control"
        ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, color=f"C{k}", label=f"{label} (test {curve[-1]:.2f}%)")
    ax.set(xlabel="epoch of the linear head", ylabel="test accuracy (%)",
           title=f"SoftHebb {result['arch']} F-{result['width_factor']}, {result['train_samples']} images, "
                 f"{result['schedule']} schedule, seed {result['seed']}")
    ax.title.set_fontsize(9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return out


def plot_accuracy_matrices(matrices: dict[str, dict[str, list[list[float]]]], path: str | Path) -> Path:
    """Heatmaps of a[i][j] per learner (rows) and protocol (columns); values in percent."""
    learners = list(matrices)
    protocols = list(next(iter(matrices.values())))
    fig, axes = plt.subplots(len(learners), len(protocols), figsize=(3.2 * len(protocols), 2.8 * len(learners)), squeeze=False)
    for r, learner in enumerate(learners):
        for c, protocol in enumerate(protocols):
            ax, m = axes[r][c], [[100 * v for v in row] for row in matrices[learner][protocol]]
            ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
            for i, row in enumerate(m):
                for j, v in enumerate(row):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
            ax.set(title=f"{learner}\n{protocol}", xlabel="evaluated experience", ylabel="after training")
            ax.title.set_fontsize(9)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def plot_experience_curves(matrices: dict[str, list[list[float]]], protocol: str, path: str | Path) -> Path:
    """Accuracy on each experience (one line each) as training moves through the stream, per learner."""
    learners = [name for name, m in matrices.items() if len(m) > 1]  # joint has a single evaluation
    cols = min(3, len(learners)) or 1
    rows = -(-len(learners) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for k, learner in enumerate(learners):
        ax, m = axes[k // cols][k % cols], matrices[learner]
        for j in range(len(m[0])):
            ax.plot(range(j, len(m)), [100 * m[i][j] for i in range(j, len(m))], marker="o", ms=3, label=f"exp {j}")
        ax.set(title=learner, xlabel="after training experience", ylabel="accuracy (%)", ylim=(0, 102))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    for k in range(len(learners), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"accuracy of each experience over time ({protocol})", fontsize=9 if cols == 1 else None)  # one panel: narrow
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def plot_final_accuracy(results: dict[str, list[dict]], path: str | Path) -> Path:
    """Final average accuracy per learner, one panel per protocol: a bar at the mean over seeds and a dot per seed."""
    learners = list(results)
    protocols = list(results[learners[0]][0]["protocols"])
    fig, axes = plt.subplots(1, len(protocols), figsize=(1.2 + 1.1 * len(learners) * len(protocols), 3.4), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        for k, learner in enumerate(learners):
            accs = [100 * r["protocols"][protocol]["final_avg_acc"] for r in results[learner]]
            ax.bar(k, sum(accs) / len(accs), color="C0", alpha=0.5)
            ax.plot([k] * len(accs), accs, "o", ms=3, color="C3")
        low = min(100 * r["protocols"][protocol]["final_avg_acc"] for runs in results.values() for r in runs)
        ax.set(title=protocol, ylabel="final average accuracy (%)", ylim=(max(0, low - 5), 100))
        ax.set_xticks(range(len(learners)), learners, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def plot_scaling(result: dict, path: str | Path, batches: tuple[int, ...], widths: tuple[int, ...], modes: tuple[str, ...]) -> Path:
    """Step time and peak memory of the linear net against batch size and width (the sweeps of
    `hebbedge bench speed`, hebbedge/benchmarks/speed.py), one line per mode."""
    rows = [r for r in result["rows"] if r["arch"] == "linear"]
    quantities = [("ms", "step time (ms)")] + ([("peak_mb", "peak memory (MB)")] if "peak_mb" in rows[0] else [])
    devices = [env["device"] for env in result["environments"]]
    fig, axes = plt.subplots(len(quantities) * len(devices), 2, figsize=(9, 3.2 * len(quantities) * len(devices)), squeeze=False)
    for i, (device, (key, label)) in enumerate((d, q) for d in devices for q in quantities):
        sweeps = (("batch", batches, ("width", result["width"])), ("width", widths, ("batch", result["batch"])))
        for ax, (name, sweep, fixed) in zip(axes[i], sweeps):
            for mode in modes:
                pts = sorted((r[name], r[key]) for r in rows if r["device"] == device and r["mode"] == mode
                             and r[fixed[0]] == fixed[1] and r[name] in sweep)
                ax.plot(*zip(*pts), marker="o", ms=3, label=mode)
            ax.set(xscale="log", yscale="log", xlabel=name, ylabel=label, title=f"{device}, {fixed[0]} {fixed[1]}")
            ax.set_xticks(sweep, [str(v) for v in sweep], minor=False)
            ax.set_xticks([], minor=True)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out
