"""The `hebbedge` command line."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn, Optional

import typer

from hebbedge.data import DATASETS, DataNotFoundError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Continual learning and edge deployment with neuron-centric Hebbian plasticity.")

IID_SCENARIOS = DATASETS  # i.i.d. training on the whole dataset


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        fail(f"{option} expects comma-separated numbers, e.g. 1e-3,3e-3; got {text!r}")


def make_config(scenario: str, **kw):
    from hebbedge.train import TrainConfig

    if scenario not in IID_SCENARIOS:
        fail(f"unknown scenario {scenario!r}; valid: {', '.join(IID_SCENARIOS)}")
    try:
        widths = tuple(int(w) for w in kw.pop("widths").split(","))
    except ValueError:
        fail("--widths expects comma-separated integers, e.g. 2000,2000,2000,2000")
    try:
        return TrainConfig(dataset=scenario, widths=widths, **kw)
    except ValueError as err:
        fail(str(err))


# Options shared by `train` and `bench`.
ARCH = typer.Option("linear", help="linear (thesis 4x2000 tanh) or conv (SoftHebb conv stack + 2 FC).")
WIDTHS = typer.Option("2000,2000,2000,2000", help="Hidden widths of the linear net.")
WIDTH_FACTOR = typer.Option(4, help="Conv width factor (1, 2 or 4).")
EPOCHS = typer.Option(1, help="Epochs (the thesis schedule is 100).")
BATCH = typer.Option(32, help="Batch size (thesis: 32).")
SEED = typer.Option(0, help="Seed for initialisation, split and batch order.")
DEVICE = typer.Option("auto", help="auto (CUDA when present), cpu or cuda.")
DATA_DIR = typer.Option(None, help="Folder holding mnist/ or fashion-mnist/ IDX files (else $HEBBEDGE_DATA, cache, ...).")


@app.command()
def train(
    scenario: str = typer.Argument(..., help=f"What to train on: {', '.join(IID_SCENARIOS)} (i.i.d.)."),
    learner: str = typer.Option("hebbian", help="hebbian; random (its random-features control); or the backprop twin: adam | sgd."),
    arch: str = ARCH,
    widths: str = WIDTHS,
    width_factor: int = WIDTH_FACTOR,
    activation: str = typer.Option("tanh", help="tanh or relu."),
    dropout: float = typer.Option(0.0, help="Dropout rate."),
    epochs: int = EPOCHS,
    batch_size: int = BATCH,
    val_size: int = typer.Option(5000, help="Training samples held out to pick the best epoch."),
    train_size: Optional[int] = typer.Option(None, help="Train on only this many samples (quick runs)."),
    seed: int = SEED,
    eta: float = typer.Option(1e-3, help="Initial Hebbian rate eta of linear layers."),
    eta_conv: float = typer.Option(1e-4, help="Initial Hebbian rate eta of conv layers."),
    momentum: bool = typer.Option(True, help="Hebbian momentum buffer (--no-momentum: M = D)."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing alpha of the contrastive rule."),
    c_lr: float = typer.Option(0.03, help="AdamW learning rate on C."),
    c_weight_decay: float = typer.Option(0.003, help="AdamW weight decay on C."),
    lr: float = typer.Option(1e-3, help="Backprop learning rate."),
    device: str = DEVICE,
    data_dir: Optional[str] = DATA_DIR,
    out: Optional[Path] = typer.Option(None, help="Write the result (config, history, accuracy) as JSON here."),
    checkpoint: Optional[Path] = typer.Option(None, help="Save the trained model and learner state here (torch.save)."),
) -> None:
    """Train on an i.i.d. dataset with the Hebbian learner or its backprop twin; print test accuracy."""
    from hebbedge.files import save_json
    from hebbedge.train import run

    cfg = make_config(scenario, learner=learner, arch=arch, widths=widths, width_factor=width_factor, activation=activation,
                      dropout=dropout, epochs=epochs, batch_size=batch_size, val_size=val_size, train_size=train_size, seed=seed, eta=eta,
                      eta_conv=eta_conv, momentum=momentum, label_smoothing=label_smoothing, c_lr=c_lr,
                      c_weight_decay=c_weight_decay, lr=lr)
    try:
        result = run(cfg, device, data_dir, checkpoint=checkpoint)
    except (DataNotFoundError, ValueError) as err:
        fail(str(err))
    typer.echo(f"{scenario} ({arch}, {learner}, {epochs} epoch(s), {result['device']}): "
               f"test accuracy {100 * result['test_acc']:.2f}%")
    if out:
        typer.echo(f"result written to {save_json(out, result)}")


@app.command()
def bench(
    scenario: str = typer.Argument("mnist", help=f"Dataset: {', '.join(IID_SCENARIOS)}."),
    arch: str = ARCH,
    widths: str = WIDTHS,
    width_factor: int = WIDTH_FACTOR,
    epochs: int = EPOCHS,
    batch_size: int = BATCH,
    train_size: Optional[int] = typer.Option(None, help="Train on only this many samples (quick runs)."),
    tune_epochs: int = typer.Option(1, help="Epochs per candidate learning rate when tuning backprop."),
    adam_lrs: str = typer.Option("3e-4,1e-3,3e-3", help="Adam learning rates tried."),
    sgd_lrs: str = typer.Option("1e-3,1e-2,3e-2,1e-1", help="SGD-momentum learning rates tried."),
    seed: int = SEED,
    device: str = DEVICE,
    data_dir: Optional[str] = DATA_DIR,
    out: Path = typer.Option(Path("runs/bench-mnist.json"), help="JSON result file."),
) -> None:
    """Benchmark the Hebbian learner against backprop (Adam, SGD-momentum; tuned lr), same budget."""
    from hebbedge.bench import benchmark
    from hebbedge.files import save_json
    from hebbedge.plots import plot_learning_curves

    cfg = make_config(scenario, learner="hebbian", arch=arch, widths=widths, width_factor=width_factor,
                      epochs=epochs, batch_size=batch_size, train_size=train_size, seed=seed)
    try:
        result = benchmark(cfg, tune_epochs, parse_floats(adam_lrs, "--adam-lrs"), parse_floats(sgd_lrs, "--sgd-lrs"), device, data_dir)
    except (DataNotFoundError, ValueError) as err:
        fail(str(err))
    for name, r in result["summary"].items():
        typer.echo(f"{name:8s} test acc {100 * r['test_acc']:.2f}%" + (f"  (lr {r['lr']:g})" if "lr" in r else "") + f"  {r['seconds']:.0f}s")
    typer.echo(f"result written to {save_json(out, result)}")
    typer.echo(f"learning curves plotted to {plot_learning_curves(result, out.with_suffix('.png'))}")


def main() -> None:
    app()
