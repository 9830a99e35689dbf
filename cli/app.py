"""The `hebbedge` command line.

Nothing here imports torch at module level: `hebbedge edge ...` must run on a device that has only
ONNX Runtime and numpy. Commands import what they need when they run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NoReturn, Optional

# typer < 0.21 (the newest flwr allows) imports click functions that click >= 8.2 deprecates: nothing a
# user can act on.
warnings.filterwarnings("ignore", message="'click.utils.get_.*_stream' is deprecated", category=DeprecationWarning)
import typer  # noqa: E402

from hebbedge import registry  # noqa: E402  (the learners; no torch)
from hebbedge.config import BackpropSection, HebbianSection, ModelSection  # noqa: E402  (the defaults, written once)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Continual learning and edge deployment with neuron-centric Hebbian plasticity.")
edge_app = typer.Typer(no_args_is_help=True, help="The edge runtime: ONNX graphs + numpy on ONNX Runtime, OpenVINO, tract or onnx.reference; no PyTorch.")
app.add_typer(edge_app, name="edge")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (long runs with their own commands, not tests).")
app.add_typer(bench_app, name="bench")

IID_SCENARIOS = ("mnist", "fashion-mnist")  # i.i.d. training on the whole dataset (= hebbedge.data.DATASETS)


def data_errors() -> tuple[type[Exception], ...]:
    from hebbedge.data import DataNotFoundError

    return DataNotFoundError, ValueError


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def stream_names() -> tuple[str, ...]:
    from hebbedge.scenarios import SCENARIOS

    return tuple(SCENARIOS)


def parse_list(text: str, option: str, kind: type = float) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        fail(f"{option} expects comma-separated {'integers' if kind is int else 'numbers'}, e.g. "
             f"{'2000,2000' if kind is int else '1e-3,3e-3'}; got {text!r}")


def check_scenario(scenario: str) -> None:
    if scenario not in IID_SCENARIOS + stream_names():
        fail(f"unknown scenario {scenario!r}; valid: {', '.join(IID_SCENARIOS)} (i.i.d.) and "
             f"{', '.join(stream_names())} (streams; `hebbedge scenarios` lists them)")


def check_iid(scenario: str) -> None:
    if scenario not in IID_SCENARIOS:
        fail(f"unknown scenario {scenario!r}; valid: {', '.join(IID_SCENARIOS)}")


def check_stream(scenario: str) -> None:
    if scenario not in stream_names():
        fail(f"unknown stream {scenario!r}; valid: {', '.join(stream_names())}")


def pick_device(device: str):
    from hebbedge.train import resolve_device

    try:
        return resolve_device(device)
    except ValueError as err:
        fail(str(err))


def make_config(scenario: str, overrides: dict[str, dict] | None = None, **kw):
    from hebbedge.config import TrainConfig

    widths = parse_list(kw.pop("widths"), "--widths", int)
    try:
        return TrainConfig(dataset=scenario, widths=widths, **kw).with_overrides(overrides)
    except ValueError as err:
        fail(str(err))


_MODEL, _HEBBIAN, _BACKPROP = ModelSection(), HebbianSection(), BackpropSection()


# Options shared by several commands.
ARCH = typer.Option(_MODEL.arch, help="i.i.d.: linear (thesis 4x2000 tanh) or conv (SoftHebb conv stack + 2 FC).")
WIDTHS = typer.Option(",".join(map(str, _MODEL.widths)), help="i.i.d.: hidden widths of the linear net.")
WIDTH_FACTOR = typer.Option(_MODEL.width_factor, help="i.i.d.: conv width factor (1, 2 or 4).")
BATCH = typer.Option(32, help="i.i.d.: batch size (thesis: 32). Streams take theirs from the config.")
SEED = typer.Option(0, help="Seed for initialisation, split, class order and batch order.")
DEVICE = typer.Option("auto", help="auto (CUDA when present), cpu or cuda.")
DATA_DIR = typer.Option(None, help="Folder holding mnist/ or fashion-mnist/ IDX files (else $HEBBEDGE_DATA, cache, ...).")
TRAIN_SIZE = typer.Option(None, help="Train on only this many samples (quick runs).")
CLASS_ORDER = typer.Option(None, help="Split streams: the classes in experience order, e.g. 0,1,2,3,4,5,6,7,8,9 (default: from the seed).")


@app.command()
def scenarios() -> None:
    """List what `hebbedge train` and `hebbedge compare` can run."""
    from hebbedge.scenarios import SCENARIOS

    typer.echo("i.i.d. (hebbedge train):")
    for name in IID_SCENARIOS:
        typer.echo(f"  {name:24s} the whole {name} training set, shuffled")
    typer.echo("streams (hebbedge train / compare):")
    for spec in SCENARIOS.values():
        typer.echo(f"  {spec.name:24s} {spec.n_experiences} experiences; {spec.description}")


@app.command()
def train(
    scenario: str = typer.Argument(..., help="An i.i.d. dataset (mnist, fashion-mnist) or a stream (see `hebbedge scenarios`)."),
    learner: str = typer.Option("hebbian", help=f"i.i.d.: {' | '.join(registry.names('iid'))}. Streams, by family: {registry.help_text('stream')}."),
    freeze_c_after: Optional[int] = typer.Option(None, help="Streams: freeze C after this experience (0-based); later ones learn backprop-free."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (i.i.d. default 1, thesis 100; streams: per experience, default from the config)."),
    arch: str = ARCH,
    widths: str = WIDTHS,
    width_factor: int = WIDTH_FACTOR,
    activation: str = typer.Option(_MODEL.activation, help="i.i.d.: tanh or relu."),
    dropout: float = typer.Option(_MODEL.dropout, help="i.i.d.: dropout rate."),
    batch_size: int = BATCH,
    val_size: int = typer.Option(5000, help="i.i.d.: training samples held out to pick the best epoch."),
    train_size: Optional[int] = TRAIN_SIZE,
    test_size: Optional[int] = typer.Option(None, help="Streams: evaluate on only this many test samples (quick runs)."),
    class_order: Optional[str] = CLASS_ORDER,
    seed: int = SEED,
    eta: float = typer.Option(_HEBBIAN.eta, help="i.i.d.: initial Hebbian rate eta of linear layers."),
    eta_conv: float = typer.Option(_HEBBIAN.eta_conv, help="i.i.d.: initial Hebbian rate eta of conv layers."),
    momentum: bool = typer.Option(_HEBBIAN.momentum, help="i.i.d.: Hebbian momentum buffer (--no-momentum: M = D)."),
    label_smoothing: float = typer.Option(_HEBBIAN.label_smoothing, help="i.i.d.: label smoothing alpha of the contrastive rule."),
    c_lr: float = typer.Option(_HEBBIAN.lr, help="i.i.d.: learning rate on C (of AdamW; --set hebbian.optimizer=\"sgd\" for SGD)."),
    c_weight_decay: float = typer.Option(_HEBBIAN.weight_decay, help="i.i.d.: weight decay on C."),
    lr: float = typer.Option(_BACKPROP.lr, help="i.i.d.: backprop learning rate."),
    device: str = DEVICE,
    data_dir: Optional[str] = DATA_DIR,
    out: Optional[Path] = typer.Option(None, help="Run directory (config, metrics, checkpoint, plots). Default runs/SCENARIO-LEARNER-seedN; for streams followed by every setting that differs from the default, e.g. runs/split-mnist-hebbian-seed0-freeze-c-after1."),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out from its checkpoint (streams: per experience; i.i.d.: per epoch). Same options as the interrupted run."),
    experiences: Optional[int] = typer.Option(None, help="Streams: train only the first N experiences (evaluated on all)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="SECTION.KEY=VALUE (TOML value) replacing a value of the run's config (hebbedge/config.py; streams: scenarios/configs/*.toml), e.g. model.widths=[256]; repeatable."),
    verbose: bool = typer.Option(False, help="Streams: also print Avalanche's per-epoch progress and every metric it computes."),
) -> None:
    """Train one learner on an i.i.d. dataset or a continual-learning stream and print its accuracy.

    A stream run's folder records its settings: the same command again prints the finished run's
    results, --resume continues an interrupted one, and other settings are refused."""
    check_scenario(scenario)
    if epochs is not None and epochs < 1:
        fail(f"--epochs must be at least 1, got {epochs}")
    dev = pick_device(device)
    if scenario in IID_SCENARIOS:
        if freeze_c_after is not None or class_order or experiences or verbose:
            fail("--freeze-c-after, --class-order, --experiences and --verbose apply to streams; an i.i.d. run is one training")
        train_iid(scenario, out or Path("runs") / f"{scenario}-{learner}-seed{seed}", dev, data_dir, resume,
                  learner=learner, arch=arch, widths=widths, width_factor=width_factor,
                  activation=activation, dropout=dropout, epochs=epochs or 1, batch_size=batch_size, val_size=val_size,
                  train_size=train_size, seed=seed, eta=eta, eta_conv=eta_conv, momentum=momentum,
                  label_smoothing=label_smoothing, c_lr=c_lr, c_weight_decay=c_weight_decay, lr=lr,
                  overrides=parse_overrides(set_ or []) or None)
    else:
        train_stream(scenario, out, dev, data_dir, resume, verbose, learner=learner, seed=seed, freeze_c_after=freeze_c_after,
                     epochs=epochs, train_size=train_size, test_size=test_size, experiences=experiences,
                     class_order=class_order and list(parse_list(class_order, "--class-order", int)),
                     overrides=parse_overrides(set_ or []) or None)


def train_iid(scenario: str, out: Path, dev, data_dir: str | None, resume: bool, **kw) -> None:
    from hebbedge import distributed
    from hebbedge.files import save_json
    from hebbedge.plots import plot_learning_curves
    from hebbedge.train import run, run_record

    # Under torchrun (`torchrun --nproc-per-node R --no-python hebbedge train mnist ...`) each process
    # trains its shard of every global batch (docs/distributed.md); rank 0 alone writes and prints.
    across = distributed.launched()
    lead = not across or os.environ["RANK"] == "0"

    def write(result: dict) -> None:
        # After every epoch too, so a long run shows its curve while it trains.
        if lead:
            save_json(out / "result.json", result)
            plot_learning_curves(result, out / "learning_curve.png")

    cfg = make_config(scenario, **kw)
    try:
        result = (distributed.run if across else run)(cfg, str(dev), data_dir, checkpoint=out / "checkpoint.pt",
                                                      resume=resume, on_epoch=write)
    except (*data_errors(), FileExistsError, ValueError) as err:
        fail(str(err))
    write(result)
    if not lead:
        return
    if not (out / "config.json").exists():
        save_json(out / "config.json", run_record(cfg, result))  # the record every run folder has
    typer.echo(f"{scenario} (i.i.d., {cfg.arch}, {cfg.learner}, {cfg.epochs} epoch(s), {result['device']}): "
               f"test accuracy {100 * result['test_acc']:.2f}%")
    typer.echo(f"run directory: {out} (config.json, result.json, checkpoint.pt, learning_curve.png)")


def train_stream(scenario: str, out: Path | None, dev, data_dir: str | None, resume: bool, verbose: bool, **kw) -> None:
    from hebbedge.continual import StreamRun, default_run_dir, describe, run_stream
    from hebbedge.plots import plot_accuracy_matrices, plot_experience_curves

    try:
        run = StreamRun(scenario, **kw)
        out = out or default_run_dir(run)
        finished = (out / "metrics.json").exists()  # then run_stream only reads it back (or refuses another run's)
        results = run_stream(run, out, dev, data_dir, resume=resume, verbose=verbose)
    except (*data_errors(), FileExistsError) as err:
        fail(str(err))
    matrices = {p: r["matrix"] for p, r in results["protocols"].items()}
    # A finished run's plots are there, unless it was stopped between its metrics and its plots.
    if not (out / "accuracy_matrix.png").exists():
        plot_accuracy_matrices({run.learner: matrices}, out / "accuracy_matrix.png")
    if len(matrices["class-incremental"]) > 1 and not (out / "experience_accuracy.png").exists():
        plot_experience_curves({run.learner: matrices["class-incremental"]}, "class-incremental", out / "experience_accuracy.png")
    if finished:
        typer.echo(f"{out} holds this run, finished: its recorded results follow (remove the folder to train it again).")
    if verbose:
        typer.echo("(Avalanche's Top1_Acc_Stream above weighs experiences by their test samples; the final average "
                   "accuracy below is the plain mean over experiences.)")
    typer.echo(f"{scenario} ({run.learner}, seed {run.seed}, {results['device']}):")
    typer.echo(describe(results))
    typer.echo(f"run directory: {out}")


@app.command()
def compare(
    scenario: str = typer.Argument(..., help="A stream (see `hebbedge scenarios`)."),
    learners: str = typer.Option(",".join(registry.names("stream", compare_default=True)),
                                 help=f"Comma-separated learners (`hebbedge train --help` lists them): {', '.join(registry.names('stream'))}."),
    seeds: int = typer.Option(3, help="Seeds 0..N-1 for every learner."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per experience (default from the config)."),
    train_size: Optional[int] = TRAIN_SIZE,
    test_size: Optional[int] = typer.Option(None, help="Evaluate on only this many test samples (quick runs)."),
    class_order: Optional[str] = CLASS_ORDER,
    device: str = DEVICE,
    data_dir: Optional[str] = DATA_DIR,
    out: Optional[Path] = typer.Option(None, help="Report directory. Default runs/compare-SCENARIO, followed by every setting that differs from the default (e.g. -epochs2)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="SECTION.KEY=VALUE (TOML value) replacing a value of the stream's config, e.g. readout.channels=96; repeatable."),
) -> None:
    """Run several learners over seeds on a stream; write a Markdown/JSON/CSV report and PNG plots."""
    from hebbedge.continual import StreamRun
    from hebbedge.report import compare as run_compare
    from hebbedge.report import compare_dir, markdown_table

    check_stream(scenario)
    if seeds < 1:
        fail(f"--seeds must be at least 1, got {seeds}")
    names = [s.strip() for s in learners.split(",")]
    order = class_order and list(parse_list(class_order, "--class-order", int))
    overrides = parse_overrides(set_ or []) or None
    try:
        out = out or compare_dir(StreamRun(scenario, names[0], epochs=epochs, class_order=order, train_size=train_size,
                                           test_size=test_size, overrides=overrides))
        record = run_compare(scenario, names, seeds, out, pick_device(device), data_dir, epochs, train_size, test_size,
                             order, overrides)
    except (*data_errors(), FileExistsError) as err:
        fail(str(err))
    typer.echo(markdown_table(record["summary"], record["seeds"], record["cost"]))
    typer.echo(f"report: {out / 'report.md'} (plus results.json, results.csv, *.png)")


@app.command()
def tune(
    scenario: str = typer.Argument(..., help="A stream (see `hebbedge scenarios`)."),
    learners: str = typer.Option("ewc,si,lwf,replay", help="Comma-separated baselines to tune: ewc, si, lwf, replay."),
    trials: int = typer.Option(4, help="Candidate settings per baseline, the same budget for each (2 to 10)."),
    validation: int = typer.Option(10000, help="Training images held out as the validation stream (the test set is not used)."),
    seed: int = typer.Option(0, help="Seed of every trial and of the hold-out."),
    train_size: Optional[int] = TRAIN_SIZE,
    device: str = DEVICE,
    data_dir: Optional[str] = DATA_DIR,
    out: Optional[Path] = typer.Option(None, help="Output directory (default results/tune-SCENARIO): a run folder per trial, tuned.json, report.md."),
) -> None:
    """Tune the backprop baselines' strengths on a validation stream, with the same number of trials each."""
    from hebbedge.benchmarks.tune import MAX_TRIALS, MIN_TRIALS, RANGES
    from hebbedge.benchmarks.tune import report as tune_report
    from hebbedge.benchmarks.tune import tune as run_tune

    check_stream(scenario)
    names = [s.strip() for s in learners.split(",")]
    unknown = [n for n in names if n not in RANGES]
    if unknown or len(set(names)) != len(names):
        fail(f"--learners expects distinct names among {', '.join(RANGES)} (comma-separated), got {learners!r}")
    if not MIN_TRIALS <= trials <= MAX_TRIALS:
        fail(f"--trials must be from {MIN_TRIALS} to {MAX_TRIALS} (candidate settings per baseline), got {trials}")
    out = out or Path("results") / f"tune-{scenario}"
    try:
        record = run_tune(scenario, names, trials, validation, out, pick_device(device), data_dir, seed, train_size)
    except (*data_errors(), FileExistsError) as err:
        fail(str(err))
    typer.echo(tune_report(record))
    typer.echo(f"record: {out / 'tuned.json'} (and report.md, a run folder per trial)")


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """--set SECTION.KEY=VALUE items as {section: {key: value}}, each value parsed as TOML."""
    from hebbedge.scenarios.configs import tomllib

    out: dict[str, dict] = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        try:
            parsed = tomllib.loads(f"v = {value.strip()}")["v"] if sep and dot and key else None
        except tomllib.TOMLDecodeError:
            parsed = None
        if parsed is None:
            fail(f"--set expects SECTION.KEY=VALUE with a TOML value (e.g. readout.channels=96), got {item!r}")
        out.setdefault(section, {})[key] = parsed
    return out


@bench_app.command("accuracy")
def bench_accuracy(
    scenario: str = typer.Argument("mnist", help=f"Dataset: {', '.join(IID_SCENARIOS)}."),
    arch: str = ARCH,
    widths: str = WIDTHS,
    width_factor: int = WIDTH_FACTOR,
    epochs: int = typer.Option(1, help="Epochs (the thesis schedule is 100)."),
    batch_size: int = BATCH,
    train_size: Optional[int] = TRAIN_SIZE,
    tune_epochs: int = typer.Option(1, help="Epochs per candidate learning rate when tuning backprop."),
    adam_lrs: str = typer.Option("3e-4,1e-3,3e-3", help="Adam learning rates tried."),
    sgd_lrs: str = typer.Option("1e-3,1e-2,3e-2,1e-1", help="SGD-momentum learning rates tried."),
    seed: int = SEED,
    device: str = DEVICE,
    data_dir: Optional[str] = DATA_DIR,
    out: Path = typer.Option(Path("runs/bench-mnist.json"), help="JSON result file (the plot goes beside it)."),
    resume: bool = typer.Option(False, help="Continue the interrupted benchmark of --out (same options) from OUT.state/."),
) -> None:
    """Benchmark the Hebbian learner against backprop (Adam, SGD-momentum; tuned lr), same budget.

    Every run is checkpointed after each epoch in OUT.state/ (removed when the benchmark finishes)."""
    import shutil

    from hebbedge.benchmarks.accuracy import benchmark
    from hebbedge.files import save_json
    from hebbedge.plots import plot_learning_curves

    check_iid(scenario)
    cfg = make_config(scenario, learner="hebbian", arch=arch, widths=widths, width_factor=width_factor,
                      epochs=epochs, batch_size=batch_size, train_size=train_size, seed=seed)
    adam, sgd = parse_list(adam_lrs, "--adam-lrs"), parse_list(sgd_lrs, "--sgd-lrs")
    state_dir = out.with_suffix(".state")
    try:
        result = benchmark(cfg, tune_epochs, adam, sgd, str(pick_device(device)), data_dir, state_dir=state_dir, resume=resume)
    except (*data_errors(), FileExistsError) as err:
        fail(str(err))
    for name, r in result["summary"].items():
        typer.echo(f"{name:8s} test acc {100 * r['test_acc']:.2f}%" + (f"  (lr {r['lr']:g})" if "lr" in r else "") + f"  {r['seconds']:.0f}s")
    typer.echo(f"result written to {save_json(out, result)}")
    shutil.rmtree(state_dir)
    typer.echo(f"learning curves plotted to {plot_learning_curves(result, out.with_suffix('.png'))}")


@bench_app.command("speed")
def bench_speed(
    device: str = typer.Option("all", help="cpu, cuda, or all (CPU, and CUDA when present)."),
    archs: str = typer.Option("linear,conv-f1,conv-f4", help="Nets: linear (784-2000x4-10), conv-f1, conv-f4 (thesis conv net)."),
    width: int = typer.Option(2000, help="Hidden width of the linear net (thesis: 2000)."),
    batch: int = typer.Option(64, help="Batch size (the sweeps vary it for the linear net)."),
    repeats: int = typer.Option(20, help="Timed steps per setting (the median is reported)."),
    warmup: int = typer.Option(3, help="Untimed steps first."),
    rounds: int = typer.Option(3, help="Times each setting is timed, in turn with the others (the median is reported)."),
    max_seconds: float = typer.Option(5.0, help="A slow setting stops after this many seconds of timed steps per round (at least 3 steps)."),
    scaling: bool = typer.Option(True, help="Also sweep the linear net's batch (16-512) and width (500-4000)."),
    memory: bool = typer.Option(True, help="Also measure each setting's peak memory (CPU: one fresh interpreter each)."),
    compare: Optional[Path] = typer.Option(None, help="A speed.json of an earlier run: print this run's time and memory as ratios to it."),
    out: Path = typer.Option(Path("runs/speed"), help="Folder for speed.json, speed.md and speed.png."),
) -> None:
    """Step time and peak memory: Hebbian (C training, C frozen) vs backprop (SGD, Adam), one run."""
    import json

    import torch

    from hebbedge.files import atomic_write, save_json
    from hebbedge.plots import plot_scaling
    from hebbedge.benchmarks.speed import ARCHS, BATCHES, SCALING_MODES, WIDTHS, benchmark, markdown
    from hebbedge.benchmarks.speed import compare as compare_runs

    chosen = parse_list(archs, "--archs", str)
    if not set(chosen) <= set(ARCHS):
        fail(f"unknown --archs {archs!r}; valid: {', '.join(ARCHS)}")
    if min(repeats, rounds, width) < 1 or warmup < 0 or batch < 2:
        fail(f"--repeats, --rounds and --width must be positive, --batch at least 2 and --warmup non-negative; "
             f"got {repeats}, {rounds}, {width}, {batch} and {warmup}")
    if device not in ("all", "cpu", "cuda"):
        fail(f"unknown --device {device!r}; valid: all, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked for, but no CUDA device is available")
    devices = {"all": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []), "cpu": ["cpu"], "cuda": ["cuda"]}[device]
    baseline = None
    if compare is not None:
        try:
            baseline = json.loads(compare.read_text())
            baseline["rows"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            fail(f"--compare expects a speed.json written by `hebbedge bench speed`; {compare}: {err}")
    result = benchmark(devices, chosen, scaling, memory, warmup, repeats, width, batch, rounds, max_seconds,
                       progress=lambda msg: typer.echo(f"  {msg}", err=True))
    if baseline is not None:
        result["compare"] = {"baseline": str(compare), "rows": compare_runs(result, baseline)}
    table = markdown(result)
    typer.echo(table)
    for d, r in result["ratios"].items():
        typer.echo(f"{d}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    if baseline is not None:
        for r in result["compare"]["rows"]:
            typer.echo(f"{r['arch']} width {r['width']} batch {r['batch']} {r['device']} {r['mode']}: time x{r['time_ratio']:.2f}"
                       + (f", memory x{r['memory_ratio']:.2f}" if "memory_ratio" in r else "") + " of the baseline")
    save_json(out / "speed.json", result)
    atomic_write(out / "speed.md", lambda tmp: Path(tmp).write_text(table))
    if scaling:
        plot_scaling(result, out / "speed.png", BATCHES, WIDTHS, SCALING_MODES)
    typer.echo(f"written to {out}/speed.json, speed.md" + (", speed.png" if scaling else ""))


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory of `hebbedge train`."),
    out: Optional[Path] = typer.Option(None, help="Model directory to write. Default RUN_DIR/edge."),
    freeze_c: bool = typer.Option(False, help="Also export the learning step for a run whose C was not frozen (C as it is now)."),
    int8: bool = typer.Option(False, help="Also write an int8 predict graph (needs --calibration)."),
    fp16: bool = typer.Option(False, help="Also write a float16 predict graph (needs --calibration)."),
    calibration: Optional[Path] = typer.Option(None, help="Labelled held-out images (.safetensors/.npz with x, y; e.g. from "
                                                          "`hebbedge stream-data`) on which each variant is measured against fp32."),
    force: bool = typer.Option(False, help="Keep a variant even when it falls more than 1 point below fp32."),
) -> None:
    """Write a model directory for the edge: the predict/learn/refresh graphs, the float32 state, manifest.json."""
    from hebbedge.export.edge import EdgeError, load_arrays
    from hebbedge.export.onnx import export_run
    from hebbedge.export.precision import PrecisionRefused

    out = out or run_dir / "edge"
    precisions = tuple(p for p, on in (("int8", int8), ("fp16", fp16)) if on)
    try:
        cal = None
        if calibration is not None:
            cal = load_arrays(calibration)
            if cal[1] is None:
                fail(f"{calibration}: calibration data needs labels (array 'y')")
        manifest = export_run(run_dir, out, freeze_c, precisions, cal, force)
    except PrecisionRefused as err:
        typer.echo(f"exported to {out} without the refused variant(s)")
        fail(str(err))
    except (ValueError, FileNotFoundError, EdgeError) as err:
        fail(str(err))
    typer.echo(f"exported to {out}: {', '.join(manifest['files'])}" + (", state.safetensors" if manifest["state"] else ""))
    for precision, v in manifest["variants"].items():
        typer.echo(f"  {precision}: accuracy {100 * v['accuracy']:.2f}% against fp32 {100 * v['fp32_accuracy']:.2f}% "
                   f"on {v['samples']} calibration samples")
    if "learn" not in manifest["graphs"] and registry.LEARNERS[manifest["learner"]].has_c:
        typer.echo("no learn.onnx: C was not frozen in this run; pass --freeze-c to export the learning step anyway")


@app.command("latency")
def latency(
    model_dir: Path = typer.Argument(..., help="A model directory of `hebbedge export`."),
    runtime: Optional[list[str]] = typer.Option(None, help="Runtimes to measure (default: every one installed)."),
    repeats: int = typer.Option(50, help="Timed repeats per measurement (the median is reported)."),
) -> None:
    """Batch-1 predict per precision, batch-64 learning step, classifier refresh and peak memory on each runtime; file sizes."""
    from hebbedge.export.check import all_runtimes
    from hebbedge.export.latency import file_sizes, measure

    edge_model(model_dir)  # a clear error for a bad directory before any runtime starts
    typer.echo("| runtime | predict b1 (ms) per precision | learn b64 (ms) | refresh (ms) | peak RSS (MB) |")
    typer.echo("| --- | --- | --- | --- | --- |")
    for name in runtime or all_runtimes():
        try:
            r = measure(model_dir, name, repeats)
        except RuntimeError as err:
            typer.echo(f"| {name} | error: {err} | | | |")
            continue
        predict = ", ".join(f"{p} {ms:.3f}" for p, ms in r["predict_ms"].items())
        typer.echo(f"| {name} | {predict} | {r.get('learn_ms', float('nan')):.2f} | {r.get('refresh_ms', float('nan')):.1f} | "
                   f"{r['peak_rss_mb']:.0f} |")
    typer.echo("files: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in file_sizes(model_dir).items()))


@bench_app.command("fasthebb")
def bench_fasthebb(
    batches: int = typer.Option(5, help="Batches timed per rule (the epoch time is extrapolated from them)."),
    batch_size: int = typer.Option(32, help="Images per batch."),
    out: Path = typer.Option(Path("runs/fasthebb-bench.json"), help="JSON result file."),
) -> None:
    """Epoch time of the per-patch SWTA/HPCA rules vs their FastHebb forms (the single-layer setting of the FastHebb paper, Scalable bio-inspired training of Deep Neural Networks with FastHebb)."""
    from hebbedge.fasthebb import benchmark
    from hebbedge.files import save_json

    if batches < 1 or batch_size < 1:
        fail(f"--batches and --batch-size must be positive, got {batches} and {batch_size}")
    result = benchmark(batches, batch_size)
    typer.echo(f"{result['setting']}, batch {batch_size}, epoch of {result['epoch_images']} images (extrapolated):")
    for name, r in result["rules"].items():
        typer.echo(f"  {name}: per-patch {r['per_patch_epoch_seconds']:.1f} s, FastHebb {r['fasthebb_epoch_seconds']:.1f} s, "
                   f"speed-up {r['speedup']:.1f}x")
    typer.echo(f"written to {save_json(out, result)}")


@app.command()
def semisup(
    scenario: str = typer.Argument("mnist", help=f"Dataset: {', '.join(IID_SCENARIOS)}."),
    rule: str = typer.Option("hpca", help="Unsupervised rule of the hidden layers: swta | hpca | softhebb | wta."),
    fractions: str = typer.Option("0.01,0.1,1", help="Labelled fractions of the training set for the classifier."),
    widths: str = typer.Option("1000", help="Hidden widths."),
    eta: float = typer.Option(_HEBBIAN.eta, help="Hebbian rate of the hidden layers."),
    pretrain_epochs: int = typer.Option(1, help="Unsupervised epochs over all training images."),
    probe_epochs: int = typer.Option(20, help="Epochs of the linear classifier on each labelled fraction."),
    train_size: Optional[int] = TRAIN_SIZE,
    seed: int = SEED,
    data_dir: Optional[str] = DATA_DIR,
    out: Path = typer.Option(Path("runs/semisup.json"), help="JSON result file."),
) -> None:
    """The semi-supervised protocol of Scalable bio-inspired training of Deep Neural Networks with FastHebb: Hebbian pre-training without labels, then a linear
    classifier on a labelled fraction; the same classifier on random features is the control."""
    import torch

    from hebbedge.files import save_json
    from hebbedge.benchmarks.semisup import run as run_semisup
    from hebbedge.train import load_normalised

    check_iid(scenario)
    try:
        x, y, xt, yt = load_normalised(scenario, torch.device("cpu"), data_dir)
        result = run_semisup(rule, (x[:train_size], y[:train_size], xt, yt), parse_list(fractions, "--fractions"),
                             parse_list(widths, "--widths", int), eta, pretrain_epochs, probe_epochs, seed=seed)
    except data_errors() as err:
        fail(str(err))
    typer.echo(f"{scenario}, {rule}, hidden {widths}, test accuracy of a linear classifier:")
    typer.echo("| labelled | Hebbian features | random features |\n| --- | --- | --- |")
    by = {(r["features"], r["fraction"]): r for r in result["results"]}
    for f in parse_list(fractions, "--fractions"):
        h, r = by[("hebbian", f)], by[("random", f)]
        typer.echo(f"| {100 * f:g}% ({h['labelled']}) | {100 * h['test_acc']:.2f}% | {100 * r['test_acc']:.2f}% |")
    typer.echo(f"written to {save_json(out, result)}")


@app.command("softhebb")
def softhebb_cmd(
    scenario: str = typer.Argument("mnist", help=f"Dataset: {', '.join(IID_SCENARIOS)}."),
    width_factor: int = typer.Option(4, help="Width factor f_w: each layer has f_w times the channels of the one below (paper: 4)."),
    arch: str = typer.Option("mnist-cifar", help="Column of the paper's Table 4: mnist-cifar (3 layers), stl10 (4), imagenet (5)."),
    schedule: str = typer.Option("paper", help="paper: label-free batch 10; head 50 epochs, Adam 1e-3 halved 7 times, dropout 0.5 (appendix A.6). "
                                                "quick: batch 64; head 20 epochs at 1e-2, no dropout."),
    train_size: Optional[int] = TRAIN_SIZE,
    probe_epochs: Optional[int] = typer.Option(None, help="Epochs of the linear head (default: the schedule's)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch of the label-free epochs (default: the schedule's)."),
    order: str = typer.Option("pool-triangle", help="Each layer's pooling and Triangle: pool-triangle (the paper's appendix A.3 text) "
                                                    "or triangle-pool (its Table 4 and the authors' code)."),
    normalise: str = typer.Option("mean", help="The rule's batch update: mean over patches (eq. 2) or max (divided by its largest entry, the authors' code)."),
    radius: float = typer.Option(3.0, help="Initial weights' expected row norm in the paper's A.1.2 parametrisation (sqrt(N) E|w|)."),
    seed: int = SEED,
    data_dir: Optional[str] = DATA_DIR,
    out: Path = typer.Option(Path("runs/softhebb.json"), help="JSON result file; the head's per-epoch test accuracy is plotted beside it (.png)."),
) -> None:
    """Multilayer SoftHebb (Hebbian Deep Learning Without Feedback): greedy unsupervised layers, then a linear head; random-weights control."""
    import torch

    from hebbedge.files import save_json
    from hebbedge.benchmarks.softhebb import check_settings
    from hebbedge.benchmarks.softhebb import run as run_softhebb
    from hebbedge.plots import plot_probe_curves
    from hebbedge.train import load_normalised

    check_iid(scenario)
    try:
        check_settings(schedule, arch, order, normalise, batch_size, radius)  # before any data is loaded
        x, y, xt, yt = load_normalised(scenario, torch.device("cpu"), data_dir)
        result = run_softhebb((x[:train_size], y[:train_size], xt, yt), width_factor, schedule, seed=seed, arch=arch,
                              probe_epochs=probe_epochs, batch_size=batch_size, order=order, normalise=normalise, radius=radius)
    except data_errors() as err:
        fail(str(err))
    typer.echo(f"{scenario}, SoftHebb {arch} F-{width_factor}, {schedule} schedule (label-free batch {result['batch_size']}, "
               f"{order}, {normalise} update), {result['train_samples']} training images: "
               f"test accuracy {100 * result['softhebb_test_acc']:.2f}% "
               f"(random-weights control {100 * result['random_test_acc']:.2f}%)")
    typer.echo(f"written to {save_json(out, result)}; head's curve plotted to {plot_probe_curves(result, out.with_suffix('.png'))}")


@app.command("stream-data")
def stream_data(
    scenario: str = typer.Argument(..., help="A stream (see `hebbedge scenarios`)."),
    out: Path = typer.Option(..., help="Folder for expK-train.safetensors / expK-test.safetensors (uint8 images x, int64 labels y)."),
    seed: int = SEED,
    train_size: Optional[int] = TRAIN_SIZE,
    test_size: Optional[int] = typer.Option(None, help="Keep only this many test samples."),
    data_dir: Optional[str] = DATA_DIR,
) -> None:
    """Write each experience of a stream as .safetensors files, the input of `hebbedge edge adapt` (any language reads them)."""
    from hebbedge.export.onnx import stream_arrays

    check_stream(scenario)
    try:
        paths = stream_arrays(scenario, out, seed, data_dir, train_size, test_size)
    except data_errors() as err:
        fail(str(err))
    typer.echo(f"wrote {len(paths)} files to {out}")


def edge_model(model_dir: Path, runtime: str = "onnxruntime", precision: str = "fp32"):
    from hebbedge.export.edge import EdgeError, EdgeModel

    try:
        return EdgeModel(model_dir, runtime, precision)
    except EdgeError as err:
        fail(str(err))


RUNTIME = typer.Option("onnxruntime", help="onnxruntime, openvino, tract or onnx-reference (Node: export/js/cli.mjs).")


@edge_app.command("predict")
def edge_predict(
    model_dir: Path = typer.Argument(..., help="A model directory of `hebbedge export`."),
    inputs: list[Path] = typer.Argument(..., help="Images (PNG/JPEG), .npy image arrays, or .safetensors/.npz files with images x (and labels y)."),
    precision: str = typer.Option("fp32", help="fp32, or a variant the export wrote (int8, fp16)."),
    runtime: str = RUNTIME,
) -> None:
    """Predict classes; with labelled input, also print the accuracy."""
    from hebbedge.export.edge import EdgeError, load_arrays, load_image, load_npy

    model = edge_model(model_dir, runtime, precision)
    try:
        for path in inputs:
            if path.suffix in (".npz", ".safetensors"):
                x, y = load_arrays(path)
                pred = model.predict(x)
                acc = f", accuracy {100 * float((pred == model.labels(y, len(pred))).mean()):.2f}%" if y is not None else ""
                typer.echo(f"{path}: {len(pred)} predictions{acc}")
            elif path.suffix == ".npy":
                typer.echo(f"{path}: classes {model.predict(load_npy(path)).tolist()}")
            else:
                typer.echo(f"{path}: class {int(model.predict(load_image(path))[0])}")
    except EdgeError as err:
        fail(str(err))


@edge_app.command("adapt")
def edge_adapt(
    model_dir: Path = typer.Argument(..., help="A model directory of `hebbedge export` with learn.onnx."),
    data: list[Path] = typer.Option(..., help="Labelled .safetensors/.npz files (x, y) to learn from, in order."),
    eval_data: Optional[list[Path]] = typer.Option(None, "--eval", help="Labelled files to report accuracy on before and after."),
    batch_size: int = typer.Option(64, help="Samples per learning step."),
    seed: int = typer.Option(0, help="Shuffle seed for the sample order."),
    runtime: str = RUNTIME,
) -> None:
    """Keep learning on-device (backprop-free); the new state is saved atomically once every step has succeeded."""
    from hebbedge.export.edge import EdgeError, load_arrays

    model = edge_model(model_dir, runtime)
    try:
        evals = [(p, *load_arrays(p)) for p in eval_data or []]
        before = [model.accuracy(x, y) for _, x, y in evals]
        steps = 0
        for path in data:
            x, y = load_arrays(path)
            if y is None:
                fail(f"{path}: adapt needs labels (array 'y')")
            steps += model.learn(x, y, batch_size, seed)
        model.save()  # only once every step has succeeded
        after = [model.accuracy(x, y) for _, x, y in evals]
    except EdgeError as err:
        fail(str(err))
    typer.echo(f"{steps} learning steps; state saved to {model_dir}")
    for (path, _, _), a, b in zip(evals, before, after):
        typer.echo(f"  {path.name}: accuracy {100 * a:.2f}% -> {100 * b:.2f}%")


@edge_app.command("check")
def edge_check(
    model_dir: Path = typer.Argument(..., help="A model directory of `hebbedge export`."),
    data: Optional[list[Path]] = typer.Option(None, help="Labelled files each runtime learns from, in order (a copy of the directory learns)."),
    eval_data: Optional[list[Path]] = typer.Option(None, "--eval", help="Labelled files every runtime and precision predicts after learning."),
    runtime: Optional[list[str]] = typer.Option(None, help="Runtimes (default: every one installed, Node's client included)."),
    latency: bool = typer.Option(True, help="Also measure latency and peak memory."),
    repeats: int = typer.Option(20, help="Timed repeats per latency measurement."),
    out: Optional[Path] = typer.Option(None, help="Also write the matrix as check.json and check.md into this folder."),
) -> None:
    """The learning cycle on every runtime and precision: agreement, accuracy, latency, memory, size."""
    from hebbedge.export.check import check, markdown
    from hebbedge.export.edge import EdgeError
    from hebbedge.files import atomic_write, save_json

    edge_model(model_dir)
    if not eval_data:
        fail("--eval: give at least one labelled file to predict (e.g. the test files of `hebbedge stream-data`)")
    try:
        result = check(model_dir, data or [], eval_data, runtime, latency, repeats, progress=lambda m: typer.echo(m, err=True))
    except EdgeError as err:
        fail(str(err))
    table = markdown(result)
    typer.echo(table)
    if out is not None:
        save_json(out / "check.json", result)
        atomic_write(out / "check.md", lambda tmp: Path(tmp).write_text(table + "\n"))
    if any("error" in r for r in result["rows"]):
        raise typer.Exit(1)


# What `edge serve` sends for each suffix; .wasm must be application/wasm for streaming compilation.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".css": "text/css",
                 ".wasm": "application/wasm", ".json": "application/json", ".png": "image/png"}


def page_routes(model_dir: Path, test_data: Path | None) -> dict[str, Path]:
    """URL prefix (or whole path) -> folder (or file) for `edge serve`: the page, the JS client,
    ONNX Runtime Web's files, the model directory and the test subset, and nothing else. The URL
    layout mirrors export/, so the page's relative imports hold on any static server too."""
    import hebbedge.export

    export = Path(hebbedge.export.__file__).resolve().parent
    routes = {"/web/": export / "web", "/js/hebbedge-edge.mjs": export / "js" / "hebbedge-edge.mjs",
              "/js/node_modules/onnxruntime-web/dist/": export / "js" / "node_modules" / "onnxruntime-web" / "dist",
              "/model/": model_dir}
    if test_data is not None:
        routes["/test-data.safetensors"] = test_data
    return routes


@edge_app.command("serve")
def edge_serve(
    model_dir: Path = typer.Argument(..., help="A model directory of `hebbedge export`; the server only reads it."),
    port: int = typer.Option(8000, help="Port on 127.0.0.1; 0 picks a free one."),
    test_data: Optional[Path] = typer.Option(None, help="A small labelled .safetensors file (x, y; `hebbedge stream-data` writes them): the page's accuracy matrix."),
) -> None:
    """Serve the in-browser learning page for MODEL_DIR on 127.0.0.1 (the learning runs in the page)."""
    import shutil
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote, urlsplit

    from hebbedge.export.edge import EdgeError, load_arrays, read_manifest

    try:
        read_manifest(model_dir)
        if test_data is not None and test_data.suffix != ".safetensors":
            fail(f"{test_data}: --test-data expects a .safetensors file (the page reads no other format)")
        if test_data is not None and load_arrays(test_data)[1] is None:
            fail(f"{test_data}: --test-data needs labels (array 'y')")
    except EdgeError as err:
        fail(str(err))
    routes = page_routes(model_dir.resolve(), test_data and test_data.resolve())
    if not routes["/js/node_modules/onnxruntime-web/dist/"].is_dir():
        fail(f"{routes['/js/node_modules/onnxruntime-web/dist/']}: missing; the page needs ONNX Runtime Web: "
             "npm ci --ignore-scripts --prefix export/js")

    class Handler(BaseHTTPRequestHandler):
        def file(self) -> Path | None:
            path = unquote(urlsplit(self.path).path)
            if path == "/web/":
                path = "/web/index.html"
            for prefix, target in routes.items():
                if path == prefix and target.is_file():
                    return target
                name = path[len(prefix):]
                # One plain file name inside the folder: no subfolders, no '..', no dot files (temporary states).
                if prefix.endswith("/") and path.startswith(prefix) and name and "/" not in name and not name.startswith("."):
                    return target / name if (target / name).is_file() else None
            return None

        def do_GET(self) -> None:
            self.respond(body=True)

        def do_HEAD(self) -> None:
            self.respond(body=False)

        def respond(self, body: bool) -> None:
            # A name other than the loopback one is a DNS-rebinding page of another site reaching this server.
            if self.headers.get("Host", "").rsplit(":", 1)[0] not in ("127.0.0.1", "localhost"):
                self.send_error(403, "only 127.0.0.1 is served")
                return
            if urlsplit(self.path).path == "/":
                self.send_response(302)
                self.send_header("Location", "/web/")
                self.end_headers()
                return
            path = self.file()
            if path is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("Cache-Control", "no-store")  # a model exported again is read anew
            self.end_headers()
            if body:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, self.wfile)

        def log_message(self, format: str, *args) -> None:
            pass  # one line per file would bury the URL; errors reach the page

    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as err:
        fail(f"cannot listen on 127.0.0.1:{port} ({err.strerror}); pick another --port, or 0 for a free one")
    typer.echo(f"serving {model_dir} at http://127.0.0.1:{server.server_port}/web/ (Ctrl+C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@edge_app.command("merge")
def edge_merge(
    model_dirs: list[Path] = typer.Argument(..., help="Model directories of one export, each with the state a device learned."),
    out: Path = typer.Option(..., help="New directory (a copy of the first, with the merged state), or a directory of the same model whose state is replaced."),
    base: Optional[Path] = typer.Option(None, help="Readouts: the directory as exported, whose state every device started from (counted once, not once per device)."),
    weights: Optional[str] = typer.Option(None, help="Hebbian: comma-separated sample counts, one per directory (default: equal weights)."),
) -> None:
    """Merge devices' learned states: exact for LDA readouts (then the classifier is solved again), a weighted average (approximate) for frozen-C Hebbian weights."""
    from hebbedge.export.edge import EdgeError
    from hebbedge.export.merge import merge_dirs

    try:
        merged = merge_dirs(model_dirs, out, base, list(parse_list(weights, "--weights")) if weights else None)
    except EdgeError as err:
        fail(str(err))
    typer.echo(f"merged {len(model_dirs)} states into {out}: {merged.how}")


@app.command("fleet")
def fleet(
    scenario: str = typer.Argument(..., help="A class-incremental stream (see `hebbedge scenarios`), e.g. split-mnist."),
    method: str = typer.Option("readout", help="readout: the exported readout, merged exactly; fedavg: the baseline, a backprop network averaged by Flower's FedAvg; centralised: that network trained on the union of the clients' data (ROUNDS x EPOCHS epochs), one-device: the readout learning the union (no Flower)."),
    model: Optional[Path] = typer.Option(None, help="readout: an exported LDA readout model directory (random-lda or softhebb-lda run, `hebbedge export`), the fixed features every client shares."),
    clients: int = typer.Option(5, help="Clients; client i learns experience i mod E (its classes only), clients of one experience split it."),
    rounds: int = typer.Option(1, help="Rounds; each client learns a new part of its data in each round."),
    out: Path = typer.Option(..., help="Folder for model/ (the fleet's model directory) and fleet.json (accuracy, samples, bytes per round)."),
    data: Optional[Path] = typer.Option(None, help="Files of `hebbedge stream-data` for SCENARIO (default: written into OUT/data)."),
    from_scratch: bool = typer.Option(True, "--from-scratch/--keep-state", help="readout: start the global readout empty, or from the export's state."),
    join_every: int = typer.Option(0, help="readout: clients join over time, client i in round 1 + i x JOIN_EVERY (0: all in round 1)."),
    hidden: int = typer.Option(256, help="fedavg: hidden units of the network."),
    epochs: int = typer.Option(1, help="fedavg: local epochs per round (each client trains on all its data every round)."),
    lr: float = typer.Option(0.05, help="fedavg: SGD learning rate (momentum 0.9)."),
    seed: int = SEED,
    train_size: Optional[int] = TRAIN_SIZE,
    test_size: Optional[int] = typer.Option(None, help="Keep only this many test samples."),
    data_dir: Optional[str] = DATA_DIR,
) -> None:
    """Federated learning with Flower's simulation engine: clients learn with the exported cycle, the server merges their readout statistics exactly (or the FedAvg baseline)."""
    try:
        from hebbedge.export.fleet import load_experiences, run_centralised, run_fedavg, run_fleet, run_one_device, save_fleet
    except ImportError as err:
        fail(f"{err}; the fleet needs Flower: pip install 'hebbedge[fleet]'")
    from hebbedge.export.edge import EdgeError
    from hebbedge.files import save_json

    check_stream(scenario)
    if clients < 1 or rounds < 1:
        fail(f"--clients and --rounds must be at least 1, got {clients} and {rounds}")
    if method not in ("readout", "fedavg", "centralised", "one-device"):
        fail(f"--method must be readout, fedavg, centralised or one-device, got {method!r}")
    if method in ("readout", "one-device") and model is None:
        fail(f"--model: --method {method} needs an exported LDA readout model directory")
    if join_every and method != "readout":
        fail(f"--join-every is for --method readout, not {method}")
    if data is None:
        from hebbedge.export.onnx import stream_arrays

        data = out / "data"
        try:
            stream_arrays(scenario, data, seed, data_dir, train_size, test_size)
        except data_errors() as err:
            fail(str(err))
    try:
        experiences, test = load_experiences(data)
        out.mkdir(parents=True, exist_ok=True)
        if method in ("fedavg", "centralised"):
            run = run_fedavg if method == "fedavg" else run_centralised
            rounds_done = run(experiences, test, clients, rounds, hidden, epochs, lr, seed)
            save_json(out / "fleet.json", rounds_done)
        else:
            result = (run_fleet(model, experiences, test, clients, rounds, from_scratch, join_every=join_every) if method == "readout"
                      else run_one_device(model, experiences, test, clients, from_scratch))
            save_fleet(model, result, out)
            rounds_done = result.rounds
    except EdgeError as err:
        fail(str(err))
    for r in rounds_done[1:]:
        typer.echo(f"round {r['round']}: accuracy {100 * r['accuracy']:.2f}% on every test experience, "
                   f"{r['bytes_sent_per_client']} bytes sent per client")
    typer.echo(f"written to {out / 'fleet.json'}" + (f" and {out / 'model'}" if method in ("readout", "one-device") else ""))


def main() -> None:
    app()
