"""One learner on one stream: build the strategy, train experience by experience, evaluate, save.

Every learner of the registry (hebbedge/registry.py) with a `strategy` is an Avalanche strategy
(``STRATEGIES``) around the network hebbedge/nets.py builds from the stream's typed config
(hebbedge/config.py): the Hebbian learner (``HebbianStrategy``), its random-features control, the
unsupervised and hybrid learners, the LDA readouts and Avalanche's own baselines.
After each experience the whole test stream is evaluated and a checkpoint is written atomically,
so an interrupted run resumes where it stopped.

A run folder cannot lie: its `config.json` is written once, when the run starts, with every setting
and the fingerprint of the data files used; a later command on the folder (resume, or the same
command again) must ask for exactly that run, else it is refused with the settings that differ.
`metrics.json` is written last: once it exists the run is finished and is only read back.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import random
import re
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

# First, before anything imports Avalanche: hebbedge.scenarios filters its warnings that say nothing to a user.
from hebbedge.scenarios import SCENARIOS, load_config, make_stream  # isort: skip
from hebbedge.scenarios.streams import default_class_order  # isort: skip

import dill
import numpy as np
import torch
import torch.nn as nn
from avalanche.checkpointing import maybe_load_checkpoint, save_checkpoint
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training import EWC, LwF, Naive, Replay, StreamingLDA, SynapticIntelligence
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised.joint_training import JointTraining
from tqdm import tqdm

import hebbedge.avalanche_fixes  # noqa: F401  (SI on CPU; see the module)
from hebbedge import data, registry
from hebbedge.backprop import make_optimizer
from hebbedge.config import Config, overridden, read_by, with_overrides
from hebbedge.files import BadFileError, atomic_write, load_torch, read_json, remove_temporaries, save_json
from hebbedge.metrics import AccuracyMatrixPlugin, OwnClassesAccuracy
from hebbedge.nets import build_net, readout_features, unsupervised_epoch  # noqa: F401  (readout_features: tests, notebooks)
from hebbedge.readout import LDAReadout
from hebbedge.strategy import FreezeCPlugin, HebbianStrategy, ReadoutStrategy


@dataclass
class StreamRun:
    """What defines one continual run (the stream's config file supplies the rest)."""

    scenario: str
    learner: str = "hebbian"
    seed: int = 0
    freeze_c_after: int | None = None
    epochs: int | None = None  # None: the config's
    class_order: list[int] | None = None
    train_size: int | None = None  # quick runs and tests
    test_size: int | None = None
    validation: int | None = None  # hold out this many training images as the test stream (the test set is not read)
    experiences: int | None = None  # train only the first N experiences (evaluated on the whole test stream)
    overrides: dict[str, dict] | None = None  # {section: {key: value}} replacing values of the stream's config

    def __post_init__(self) -> None:
        """Every setting is checked here, before anything is loaded or written."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}")
        entry = registry.get(self.learner, "stream")
        if self.freeze_c_after is None:
            self.freeze_c_after = entry.freeze_c_after
        n_exp = SCENARIOS[self.scenario].n_experiences
        for option, value, least in (("--seed", self.seed, 0), ("--epochs", self.epochs, 1), ("--train-size", self.train_size, 1),
                                     ("--test-size", self.test_size, 1), ("--validation", self.validation, 1),
                                     ("--experiences", self.experiences, 1)):
            if value is not None and value < least:
                raise ValueError(f"{option} must be at least {least}, got {value}")
        if self.experiences is not None and self.experiences > n_exp:
            raise ValueError(f"--experiences must be at most {n_exp} ({self.scenario} has {n_exp}), got {self.experiences}")
        if self.freeze_c_after is not None:
            if not entry.has_c:  # the others have no C to train
                hebbian = ", ".join(n for n in registry.names("stream") if registry.LEARNERS[n].has_c)
                raise ValueError(f"--freeze-c-after applies to the Hebbian learners ({hebbian}), not {self.learner!r}")
            trained = self.experiences or n_exp
            if not 0 <= self.freeze_c_after < trained:  # any later, C would never be frozen
                raise ValueError(f"--freeze-c-after must be an experience index 0..{trained - 1} (0-based, of the {trained} "
                                 f"trained), got {self.freeze_c_after}")
        cfg = run_config(self)  # the overrides name keys the config has, with values of the same type
        if entry.pretrained and (SCENARIOS[self.scenario].pretrain is None or cfg.readout is None):
            transfer = [name for name, spec in SCENARIOS.items() if spec.pretrain]
            raise ValueError(f"{self.learner!r} pre-trains its features on host data before the stream: use a transfer "
                             f"scenario ({', '.join(transfer)}), not {self.scenario!r}")


def run_config(run: StreamRun) -> Config:
    """The stream's config with the run's overrides (`--set`), each checked against the schema."""
    return with_overrides(load_config(run.scenario), run.overrides)


def settings(run: dict, cfg: dict) -> dict[str, object]:
    """Everything that makes a run what it is, from its fields (`asdict(StreamRun)`) and its config,
    named as the user sets it; a setting the run's learner does not read is left out (``config.READ_ONLY_BY``).
    Values are the effective ones: an option left out and its default spelled out are the same run (and
    a field that older records lack has its default)."""
    run = {**{f.name: f.default for f in fields(StreamRun) if f.default is not MISSING}, **run}
    spec = SCENARIOS.get(run["scenario"])
    split = spec is not None and spec.kind == "split"
    out = {"scenario": run["scenario"], "--learner": run["learner"], "--seed": run["seed"],
           "--freeze-c-after": run["freeze_c_after"], "--epochs": run["epochs"] or cfg["stream"]["epochs"],
           "--experiences": run["experiences"] or (spec and spec.n_experiences),
           "--class-order": (run["class_order"] or default_class_order(run["seed"])) if split else None,
           "--train-size": run["train_size"], "--test-size": run["test_size"], "--validation": run["validation"]}
    out.update({f"{section}.{key}": value for section, values in cfg.items() for key, value in values.items()
                if read_by(run["learner"], section, key)})
    return out


def setting_parts(run: StreamRun) -> list[str]:
    """The settings in which `run` departs from the defaults, as parts of a folder name (the names
    `default_run_dir` and `hebbedge compare` give), e.g. freeze-c-after1, readout.eta=0.02."""
    base = load_config(run.scenario)
    own_freeze = registry.LEARNERS[run.learner].freeze_c_after  # frozen-c's freezing is its name, not a setting
    parts = [f"{option}{value}" for option, value in (("freeze-c-after", None if run.freeze_c_after == own_freeze else run.freeze_c_after),
                                                      ("train-size", run.train_size), ("test-size", run.test_size),
                                                      ("validation", run.validation)) if value is not None]
    if run.epochs is not None and run.epochs != base.stream.epochs:
        parts.append(f"epochs{run.epochs}")
    if run.experiences is not None and run.experiences != SCENARIOS[run.scenario].n_experiences:
        parts.append(f"experiences{run.experiences}")
    if run.class_order is not None:
        parts.append("class-order" + ",".join(map(str, run.class_order)))
    parts += [f"{section}.{key}={json.dumps(value, separators=(',', ':'))}" for section, key, value in overridden(base, run.overrides)]
    return [re.sub(r"[^A-Za-z0-9._,=+-]", "", part) for part in parts]  # nothing a shell or a path would misread


def default_run_dir(run: StreamRun) -> Path:
    """runs/SCENARIO-LEARNER-seedN, then every setting that differs from the default run's, so that
    two different runs never meet in one folder by default."""
    return Path("runs") / "-".join([f"{run.scenario}-{run.learner}-seed{run.seed}", *setting_parts(run)])


def host_images(dataset: str, data_dir: str | None, size: int | None, seed: int) -> torch.Tensor:
    """The host dataset's training images, standardised with its own statistics (labels are not
    used), cut to the first `size` of a per-seed shuffle."""
    x, _ = data.load_standardised(dataset, True, data_dir)
    if size is not None and size < len(x):
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:size]]
    return x


def pretrain_features(features: nn.Sequential, run: StreamRun, cfg: Config, data_dir: str | None, progress: bool) -> None:
    """Label-free Hebbian learning of `features` on the scenario's host data (cut to `run.train_size`
    like the stream, for quick runs), before the stream; the features stay fixed afterwards, so the
    readout's statistics never go stale."""
    host = SCENARIOS[run.scenario].pretrain  # (StreamRun checked there is one)
    epochs = cfg.readout.pretrain_epochs
    if epochs == 0:  # (in-stream learning only, e.g. the warm-up: no host data)
        return
    x = host_images(host, data_dir, run.train_size, run.seed).to(next(features.buffers()).device)
    g = torch.Generator().manual_seed(run.seed)
    for epoch in range(epochs):
        unsupervised_epoch(features, x, g, cfg.readout.pretrain_batch_size, desc=f"pre-train on {host} {epoch + 1}/{epochs}",
                           progress=progress)
    features.eval()


def _readout(run, entry, cfg, model, common, data_dir, pretrain, progress):
    """random-lda / softhebb-lda: fixed features (softhebb-lda's pre-trained on the host data first,
    unless `pretrain` is False: a resumed run) under this library's LDA readout."""
    features, readout = model[0].eval(), model[1]
    if entry.pretrained and pretrain:
        pretrain_features(features, run, cfg, data_dir, progress)
    r = cfg.readout if entry.pretrained else None  # random-lda is the floor: the same readout on never-trained features
    return ReadoutStrategy(features=features, readout=readout, plastic_experiences=r.learn_experiences if r else 0,
                           warmup=r.warmup if r else 0.0, **common)


def _slda(run, entry, cfg, model, common, *_):
    """Avalanche's per-sample streaming LDA, on the same fixed random features as random-lda."""
    features, readout = model[0].eval(), model[1]
    return StreamingLDA(slda_model=features, criterion=nn.CrossEntropyLoss(), input_size=readout.n_features,
                        num_classes=readout.n_classes, shrinkage_param=readout.shrinkage, **common)


def _hebbian(run, entry, cfg, model, common, *_):
    """hebbian / random / hybrids: C by the [hebbian] optimizer (a hybrid's backprop layers at sgd_lr), W by local rules."""
    if run.freeze_c_after is not None:
        common = {**common, "plugins": common["plugins"] + [FreezeCPlugin(run.freeze_c_after)]}
    sgd_lr = cfg.hybrid.sgd_lr if entry.family == "hybrid" else None
    h = cfg.hebbian
    return HebbianStrategy(model=model, c_optimizer=h.optimizer, c_lr=h.lr, c_momentum=h.sgd_momentum,
                           c_weight_decay=h.weight_decay, sgd_lr=sgd_lr, **common)


def _unsupervised(run, entry, cfg, model, common, *_):
    """softhebb / swta / hpca / wta: the network (``nets.build_net``) learns by its local rules alone;
    no backprop at all, C stays 1 (frozen)."""
    strategy = HebbianStrategy(model=model, **common)
    strategy.freeze_c()
    return strategy


def _backprop(run, entry, cfg, model, common, *_):
    """Avalanche's baselines, trained by backprop with the config's optimizer."""
    b = cfg.backprop
    optimizer = make_optimizer(b.optimizer, model.parameters(), b.lr, b.sgd_momentum)
    args = dict(model=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), **common)
    extra = {"naive": {}, "joint": {}, "ewc": dict(ewc_lambda=b.ewc_lambda), "si": dict(si_lambda=b.si_lambda),
             "lwf": dict(alpha=b.lwf_alpha, temperature=b.lwf_temperature), "replay": dict(mem_size=b.replay_mem_size)}
    kind = {"naive": Naive, "ewc": EWC, "si": SynapticIntelligence, "lwf": LwF, "replay": Replay, "joint": JointTraining}
    return kind[entry.strategy](**args, **extra[entry.strategy])


# registry.Learner.strategy -> the function that builds its Avalanche strategy around its network.
STRATEGIES = {"readout": _readout, "slda": _slda, "hebbian": _hebbian, "hybrid": _hebbian, "unsupervised": _unsupervised,
              **{name: _backprop for name in ("naive", "ewc", "si", "lwf", "replay", "joint")}}


def make_strategy(run: StreamRun, cfg: Config, in_shape: tuple[int, ...], n_classes: int, device: torch.device, plugins: list,
                  evaluator, data_dir: str | None = None, pretrain: bool = True, progress: bool = False):
    """The Avalanche strategy for `run.learner` (``STRATEGIES``, by its registry entry), around the
    network ``nets.build_net`` builds from the config. A learner that pre-trains its features does
    so here, on the scenario's host data (unless `pretrain` is False: a resumed run)."""
    entry = registry.get(run.learner, "stream")
    common = dict(train_mb_size=cfg.stream.batch_size, train_epochs=run.epochs or cfg.stream.epochs,
                  eval_mb_size=cfg.stream.eval_batch_size, device=device, evaluator=evaluator, plugins=plugins)
    model = build_net(entry, cfg, in_shape, n_classes, device)
    return STRATEGIES[entry.strategy](run, entry, cfg, model, common, data_dir, pretrain, progress)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every RNG's state in tensors, numbers and tuples only: what torch.load(weights_only=True) reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    kind, keys, pos, has_gauss, cached = state["numpy"]
    torch.set_rng_state(state["torch"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def _dill_by_reference():
    """dill pickles classes by value by default, which fails on a typing_extensions sentinel that
    torch >= 2.14 optimizers reach; by reference is what plain pickle does, and it round-trips."""
    old = dill.settings["byref"]
    dill.settings["byref"] = True
    try:
        with warnings.catch_warnings():  # dill reports AdamW "by reference" as a warning; it round-trips
            warnings.simplefilter("ignore", dill.PicklingWarning)
            yield
    finally:
        dill.settings["byref"] = old


CHECKPOINT_FORMAT = "hebbedge stream checkpoint 2"


def save_run_checkpoint(path: Path, strategy, next_experience: int) -> None:
    """Avalanche's strategy checkpoint (dill) plus the RNG state, in one file written then renamed.

    The file is a PyTorch file of plain values (read with weights_only=True) holding the payload's
    bytes and their sha256: the pickled strategy is unpickled only once the checksum matches, so
    a damaged checkpoint is refused rather than fed to dill.
    """
    blob = io.BytesIO()
    with _dill_by_reference():
        save_checkpoint(strategy, blob)
    payload = io.BytesIO()
    torch.save({"avalanche": blob.getvalue(), "rng": _rng_state(), "next_experience": next_experience}, payload)
    payload = payload.getvalue()
    state = {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_run_checkpoint(path: Path) -> dict:
    """A run's checkpoint, verified: {"avalanche": pickled strategy bytes, "rng", "next_experience"}."""
    state = load_torch(path, "a stream checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("payload"), bytes):
        raise BadFileError(path, f"expected a stream checkpoint in format {CHECKPOINT_FORMAT!r} (one of another hebbedge "
                                 "version cannot be resumed: start the run again in another folder)")
    if hashlib.sha256(state["payload"]).hexdigest() != state.get("sha256"):
        raise BadFileError(path, "damaged stream checkpoint: its sha256 is not the one recorded when it was written")
    try:
        inner = torch.load(io.BytesIO(state["payload"]), weights_only=True)
        inner["avalanche"], inner["rng"], int(inner["next_experience"])
    except Exception as err:  # a checksummed payload that does not load was written by other code
        raise BadFileError(path, f"expected a stream checkpoint's payload (strategy, rng, next_experience): {err}") from None
    return inner


def restore_run_checkpoint(state: dict, strategy, device: torch.device):
    """The strategy and RNGs as `read_run_checkpoint`'s state has them, and the next experience's index.
    The strategy is unpickled by dill: only ever pass a state read from the run's own folder."""
    strategy, _ = maybe_load_checkpoint(strategy, io.BytesIO(state["avalanche"]), map_location=device)
    _set_rng_state(state["rng"])
    return strategy, state["next_experience"]


class ExperienceProgress(SupervisedPlugin):
    """One progress bar per training experience (on stderr), in place of Avalanche's per-epoch bars
    and metric dumps; it stays open through the evaluation that follows."""

    def __init__(self, n_experiences: int, joint: bool = False) -> None:
        super().__init__()
        self.n_experiences, self.joint, self.bar = n_experiences, joint, None

    def before_training_exp(self, strategy, **kwargs) -> None:
        exp = strategy.experience
        classes = ",".join(map(str, sorted(exp.classes_in_this_experience)))
        desc = ("the whole stream at once (joint training)" if self.joint
                else f"experience {exp.current_experience + 1}/{self.n_experiences} (classes {classes})")
        total = len(strategy.dataloader) * strategy.train_epochs if hasattr(strategy.dataloader, "__len__") else None
        self.bar = tqdm(total=total, unit="batch", leave=True, dynamic_ncols=True, desc=desc)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        if self.bar is not None:
            self.bar.update()

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str("evaluating")

    def after_eval(self, strategy, **kwargs) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str("evaluated", refresh=False)
            self.bar.close()
        self.bar = None  # no open bar in the checkpoint that follows


def data_files(run: StreamRun, cfg: Config, data_dir: str | None) -> list[Path]:
    """The data files the run reads: its stream's, and the host data its features pre-train on."""
    spec = SCENARIOS[run.scenario]
    files = [f for train in (True, False)
             for f in (data.cifar10_files(train, data_dir) if spec.dataset == "cifar10" else data.split_files(spec.dataset, train, data_dir))]
    if registry.LEARNERS[run.learner].pretrained and spec.pretrain and cfg.readout and cfg.readout.pretrain_epochs:
        files += data.split_files(spec.pretrain, True, data_dir)
    return files


def run_record(run: StreamRun, device: torch.device, data_dir: str | None) -> dict:
    """What a run folder's config.json holds: the run's fields, its config, its data files' fingerprints."""
    cfg = run_config(run)
    return {"run": asdict(run), "config": cfg.as_dict(), "data": data.fingerprint(data_files(run, cfg, data_dir)), "device": str(device)}


class RunMismatchError(ValueError):
    """A run folder holds another run than the one asked for."""


def _malformed(err: Exception) -> str:
    """What a KeyError, TypeError, ... met while reading a JSON record says about the record."""
    return f"no key {err.args[0]!r}" if isinstance(err, KeyError) else f"a value of the wrong kind ({err})"


def _show(value: object) -> str:
    return "unset" if value is None else json.dumps(value)


def _differences(recorded: dict, record: dict) -> list[str]:
    """Each setting and data file where the recorded run differs from `record`, in words. A config
    key that only one of them has was added to (or dropped from) the stream's config file between
    the two, not set by the user (--set only replaces keys the config has): it is not compared."""
    ours, theirs = settings(record["run"], record["config"]), settings(recorded["run"], recorded["config"])
    out = [f"{key} {_show(theirs[key])} (recorded) vs {_show(ours[key])} (asked)"
           for key in theirs if key in ours and theirs[key] != ours[key]]
    if "data" in recorded:  # (records of older versions did not fingerprint the data)
        old = {Path(f["file"]).name: f["sha256"] for f in recorded["data"]}
        new = {Path(f["file"]).name: f["sha256"] for f in record["data"]}
        out += [f"data {name}: sha256 {old.get(name, 'none')[:12]} (recorded) vs {new.get(name, 'none')[:12]} (found)"
                for name in dict.fromkeys([*old, *new]) if old.get(name) != new.get(name)]
    return out


def check_record(out: Path, record: dict) -> bool:
    """Whether `out` already holds the run `record` describes (False: no run there yet).
    RunMismatchError when it holds another run, BadFileError when its record is damaged."""
    path = out / "config.json"
    if not path.exists():
        if (out / "checkpoint.pt").exists() or (out / "metrics.json").exists():
            raise BadFileError(path, "missing, beside a checkpoint or metrics: this folder's run cannot be "
                                     "checked, so it is neither resumed nor overwritten; choose another --out")
        return False
    recorded = read_json(path, "a run record")
    try:
        differences = _differences(recorded, record)
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError, OverflowError) as err:  # (a damaged record's values)
        raise BadFileError(path, f"expected a run record of `hebbedge train` (run, config and data); {_malformed(err)}") from None
    if differences:
        raise RunMismatchError(f"{out} holds another run: {'; '.join(differences)}. Choose another --out, or "
                               f"leave --out out (the default folder is named after the settings)")
    return True


def read_metrics(path: Path) -> dict:
    """A finished run's metrics.json, checked for what the reports read."""
    results = read_json(path, "a run's metrics")
    try:
        for r in results["protocols"].values():
            r["matrix"], r["final_avg_acc"], r["forgetting"], r["bwt"]
        results["run"]["seed"], results["device"], results["classes_per_experience"]
    except (KeyError, TypeError, AttributeError) as err:
        raise BadFileError(path, f"expected a run's metrics (run, device, classes_per_experience and protocols with "
                                 f"matrix, final_avg_acc, forgetting, bwt); {_malformed(err)}") from None
    return results


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Only one process works in a run folder at a time (the kernel drops the lock if it dies). A
    run that fails before its record is written leaves no folder behind that it made."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with open(out / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunMismatchError(f"{out}: another hebbedge process is working in this run folder") from None
            yield
    except BaseException:
        if created and not (out / "config.json").exists():
            (out / ".lock").unlink(missing_ok=True)
            if not any(out.iterdir()):
                out.rmdir()
        raise


class Timed:
    """Trains a strategy on experiences and sums the time spent in training (evaluation left out) and the
    samples trained on (times the epochs), in this process: the learner's update cost as run."""

    def __init__(self) -> None:
        self.seconds, self.samples = 0.0, 0

    def __call__(self, strategy, experiences) -> None:
        start = time.perf_counter()
        strategy.train(experiences)
        self.seconds += time.perf_counter() - start
        experiences = [experiences] if hasattr(experiences, "dataset") else experiences  # one, or a whole stream (joint)
        self.samples += sum(len(e.dataset) for e in experiences) * strategy.train_epochs


def net_size(strategy) -> dict[str, int | None]:
    """The width of the features the output layer reads, and for an LDA readout the bytes of its learned
    state on the edge (float32 counts, class means and pooled scatter: 4 (C + C d + d^2)); None otherwise."""
    model = strategy.model
    if isinstance(strategy, StreamingLDA):  # Avalanche keeps the LDA's state in the strategy, the features in the model
        d, c = strategy.input_size, len(strategy.cK)
    elif isinstance(model, nn.Sequential) and isinstance(model[-1], LDAReadout):
        d, c = model[-1].n_features, model[-1].n_classes
    else:
        return {"features": [m for m in model.modules() if hasattr(m, "in_features")][-1].in_features, "readout_state_bytes": None}
    return {"features": d, "readout_state_bytes": 4 * (c + c * d + d * d)}


def run_stream(run: StreamRun, out_dir: str | Path, device: torch.device, data_dir: str | None = None,
               resume: bool = False, progress: bool = True, stop_after: int | None = None, verbose: bool = False) -> dict:
    """Train `run` on its stream and write config, metrics and checkpoint under `out_dir`.

    A folder that already holds this run finished returns its recorded metrics; one that holds it
    interrupted needs `resume` to continue from the checkpoint; one that holds another run raises
    RunMismatchError. `stop_after` ends the run after that many experiences (as an interruption
    would) without writing the final metrics. `progress`: a bar per experience; `verbose`:
    Avalanche's own logs too.
    """
    out = Path(out_dir)
    ckpt, done = out / "checkpoint.pt", out / "metrics.json"
    record = run_record(run, device, data_dir)
    cfg = run_config(run)
    if check_record(out, record) and done.exists():
        return read_metrics(done)  # finished: read back, never trained again
    if ckpt.is_symlink():  # the pickled strategy is read from the run's own folder only
        raise BadFileError(ckpt, "a symbolic link; a checkpoint is only read from the run's own folder")
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{ckpt} exists: the run in {out} was interrupted; pass --resume to continue it")
    seed_everything(run.seed)
    bm = make_stream(run.scenario, seed=run.seed, class_order=run.class_order, data_dir=data_dir,
                     train_size=run.train_size, test_size=run.test_size, validation=run.validation)
    in_shape = tuple(bm.train_stream[0].dataset[0][0].shape)
    n_classes = max(c for e in bm.train_stream for c in e.classes_in_this_experience) + 1  # one head, original ids
    n_train = min(len(bm.train_stream), run.experiences or len(bm.train_stream))
    matrix, bars = AccuracyMatrixPlugin(), ExperienceProgress(n_train, joint=run.learner == "joint")
    loggers = [InteractiveLogger()] if verbose else []
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), OwnClassesAccuracy(), loggers=loggers)
    with _locked(out):
        remove_temporaries(out)  # left by a process killed while writing; none can be in progress now
        state = read_run_checkpoint(ckpt) if ckpt.exists() else None  # verified before anything is built
        if progress:
            tqdm.write(f"{run.scenario}: {run.learner}, seed {run.seed}, {device}; run folder {out}", file=sys.stderr)
        strategy = make_strategy(run, cfg, in_shape, n_classes, device, [matrix] + ([bars] if progress else []), evaluator,
                                 data_dir, pretrain=state is None, progress=progress)
        if not (out / "config.json").exists():
            save_json(out / "config.json", record)  # the run's settings, fixed from here on
        start_exp = 0
        if state is not None:
            strategy, start_exp = restore_run_checkpoint(state, strategy, device)
            matrix = next(p for p in strategy.plugins if isinstance(p, AccuracyMatrixPlugin))
            # This command's choice of output, not the interrupted one's.
            strategy.plugins = [p for p in strategy.plugins if not isinstance(p, ExperienceProgress)] + ([bars] if progress else [])
            strategy.evaluator.loggers = loggers
        start, trained = time.time(), Timed()
        if run.learner == "joint":
            if start_exp == 0:
                trained(strategy, bm.train_stream)
                strategy.eval(bm.test_stream)
                save_run_checkpoint(ckpt, strategy, len(bm.train_stream))
        else:
            for i in range(start_exp, n_train):
                if stop_after is not None and i >= stop_after:
                    return {}
                trained(strategy, bm.train_stream[i])
                strategy.eval(bm.test_stream)
                save_run_checkpoint(ckpt, strategy, i + 1)
        results = {"run": asdict(run), "device": str(device), "seconds": time.time() - start,
                   "train_seconds": trained.seconds, "train_samples": trained.samples, **net_size(strategy),
                   "classes_per_experience": [sorted(e.classes_in_this_experience) for e in bm.test_stream],
                   "protocols": matrix.results()}
        model_file = out / "model.pt"  # the final weights alone, for export and inspection
        atomic_write(model_file, lambda tmp: torch.save(strategy.model.state_dict(), tmp))
        save_json(done, results)  # last: from now on the run is finished
    return results


def run_all(jobs: list[tuple[StreamRun, Path]], device: torch.device, data_dir: str | None, desc: str) -> list[dict]:
    """Each (run, folder) in order, with a progress bar; every folder is checked first, so one that holds
    another run is refused before anything trains, and a finished run is read back, not trained again."""
    for run, out in jobs:
        check_record(out, run_record(run, device, data_dir))
    return [run_stream(run, out, device, data_dir, resume=True, progress=False) for run, out in tqdm(jobs, desc=desc, unit="run")]


def matrix_table(matrix: list[list[float]], classes: list[list[int]]) -> str:
    """a[i][j] in percent as a small text table: a row per trained experience, a column per test one."""
    head = ["", *(",".join(map(str, c)) for c in classes)]
    rows = [[f"after {i + 1}", *(f"{100 * v:.1f}" for v in row)] for i, row in enumerate(matrix)]
    width = max(len(cell) for row in [head, *rows] for cell in row)
    first = max(len(row[0]) for row in [head, *rows])
    return "\n".join(f"  {row[0]:<{first}}" + "".join(f" {cell:>{width}}" for cell in row[1:]) for row in [head, *rows])


def describe(results: dict) -> str:
    """Each protocol's accuracy matrix as a table, then its final average accuracy and forgetting, with units."""
    lines = []
    classes = results["classes_per_experience"]
    for protocol, r in results["protocols"].items():
        lines += [f"{protocol} accuracy (%): row i after training experience i, column j the test experience of "
                  f"those classes", matrix_table(r["matrix"], classes)]
    n = len(classes)
    for protocol, r in results["protocols"].items():
        f = ("n/a (a single training phase)" if r["forgetting"] is None
             else f"{100 * r['forgetting'] + 0.0:.2f} percentage points (BWT {100 * r['bwt'] + 0.0:+.2f})")  # (+ 0.0: a zero is 0.00, not -0.00)
        lines.append(f"{protocol:17s}: final average accuracy {100 * r['final_avg_acc']:.2f}% (mean over the {n} test "
                     f"experiences), forgetting {f}")
    return "\n".join(lines)
