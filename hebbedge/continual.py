"""One learner on one stream: build the strategy, train experience by experience, evaluate, save.

Every learner is an Avalanche strategy on the same architecture: the Hebbian learner
(``HebbianStrategy``), its random-features control, and Avalanche's own baselines.
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
from hebbedge import data
from hebbedge.files import BadFileError, atomic_write, load_torch, read_json, remove_temporaries, save_json
from hebbedge.metrics import AccuracyMatrixPlugin, OwnClassesAccuracy
from hebbedge.models import AdaptiveAvgPool, random_features_, softhebb_init_, thesis_conv, thesis_linear
from hebbedge.readout import LDAReadout
from hebbedge.rules import HPCARule, SoftHebbRule, SWTARule, TeacherRule, WTARule
from hebbedge.semisup import unsupervised_epoch
from hebbedge.softhebb import softhebb_block
from hebbedge.strategy import FreezeCPlugin, HebbianStrategy, ReadoutStrategy

HEBBIAN_LEARNERS = ("hebbian", "random")
UNSUPERVISED_LEARNERS = ("softhebb", "swta", "hpca", "wta")  # unsupervised hidden rules + a Hebbian readout
HYBRID_LEARNERS = ("hybrid-bottom-hebb", "hybrid-top-hebb")  # Hebbian and backprop layers in one stack
LDA_LEARNERS = ("slda", "random-lda")  # fixed random features + a streaming LDA readout (Avalanche's, this library's)
PRETRAINED_LDA_LEARNERS = ("softhebb-lda",)  # features pre-trained on the scenario's host data, then the same readout
READOUT_LEARNERS = ("random-lda",) + PRETRAINED_LDA_LEARNERS  # models of (features, LDAReadout): ``readout_model``
BASELINES = ("naive", "ewc", "si", "lwf", "replay", "joint") + LDA_LEARNERS
CL_LEARNERS = HEBBIAN_LEARNERS + UNSUPERVISED_LEARNERS + HYBRID_LEARNERS + BASELINES + PRETRAINED_LDA_LEARNERS


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
    experiences: int | None = None  # train only the first N experiences (evaluated on the whole test stream)
    overrides: dict[str, dict] | None = None  # {section: {key: value}} replacing values of the stream's config

    def __post_init__(self) -> None:
        """Every setting is checked here, before anything is loaded or written."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}")
        if self.learner not in CL_LEARNERS:
            raise ValueError(f"unknown learner {self.learner!r}; valid: {', '.join(CL_LEARNERS)}")
        n_exp = SCENARIOS[self.scenario].n_experiences
        for option, value, least in (("--seed", self.seed, 0), ("--epochs", self.epochs, 1), ("--train-size", self.train_size, 1),
                                     ("--test-size", self.test_size, 1), ("--experiences", self.experiences, 1)):
            if value is not None and value < least:
                raise ValueError(f"{option} must be at least {least}, got {value}")
        if self.experiences is not None and self.experiences > n_exp:
            raise ValueError(f"--experiences must be at most {n_exp} ({self.scenario} has {n_exp}), got {self.experiences}")
        if self.freeze_c_after is not None:
            if self.learner not in HEBBIAN_LEARNERS:  # the others have no C to train
                raise ValueError(f"--freeze-c-after applies to the Hebbian learners ({', '.join(HEBBIAN_LEARNERS)}), not {self.learner!r}")
            trained = self.experiences or n_exp
            if not 0 <= self.freeze_c_after < trained:  # any later, C would never be frozen
                raise ValueError(f"--freeze-c-after must be an experience index 0..{trained - 1} (0-based, of the {trained} "
                                 f"trained), got {self.freeze_c_after}")
        cfg = run_config(self)  # the overrides name keys the config has, with values of the same type
        if self.learner in PRETRAINED_LDA_LEARNERS and (SCENARIOS[self.scenario].pretrain is None or "readout" not in cfg):
            transfer = [name for name, spec in SCENARIOS.items() if spec.pretrain]
            raise ValueError(f"{self.learner!r} pre-trains its features on host data before the stream: use a transfer "
                             f"scenario ({', '.join(transfer)}), not {self.scenario!r}")


def _same_kind(old: object, new: object) -> bool:
    """Whether an override `new` has the type of the config's value `old` (an integer is a fine float)."""
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, (int, float))
    if isinstance(old, list):
        return isinstance(new, list) and (not old or all(_same_kind(old[0], v) for v in new))
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in old and _same_kind(old[k], v) for k, v in new.items())
    return type(old) is type(new)


def run_config(run: StreamRun) -> dict:
    """The stream's config with the run's overrides; each names a key the config already has and
    gives a value of that key's type. The stream's sizes must be positive integers."""
    cfg = load_config(run.scenario)
    for section, values in (run.overrides or {}).items():
        for key, value in values.items():
            if key not in cfg.get(section, {}):
                known = ", ".join(f"{s}.{k}" for s, v in cfg.items() for k in v)
                raise ValueError(f"{run.scenario}: no config key {section}.{key} to override; expected one of {known}")
            if not _same_kind(cfg[section][key], value):
                raise ValueError(f"--set {section}.{key}={json.dumps(value)}: expected a value like the config's "
                                 f"{json.dumps(cfg[section][key])} ({type(cfg[section][key]).__name__})")
            cfg[section][key] = value
    for key in ("epochs", "batch_size", "eval_batch_size"):
        value = cfg["stream"][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            source = "--set" if key in (run.overrides or {}).get("stream", {}) else cfg.path
            raise ValueError(f"{source}: stream.{key} must be a positive integer, got {value!r}")
    return cfg


def settings(run: dict, cfg: dict) -> dict[str, object]:
    """Everything that makes a run what it is, from its fields (`asdict(StreamRun)`) and its config,
    named as the user sets it. Values are the effective ones: an option left out and its default
    spelled out are the same run (and a field that older records lack has its default)."""
    run = {**{f.name: f.default for f in fields(StreamRun) if f.default is not MISSING}, **run}
    spec = SCENARIOS.get(run["scenario"])
    split = spec is not None and spec.kind == "split"
    out = {"scenario": run["scenario"], "--learner": run["learner"], "--seed": run["seed"],
           "--freeze-c-after": run["freeze_c_after"], "--epochs": run["epochs"] or cfg["stream"]["epochs"],
           "--experiences": run["experiences"] or (spec and spec.n_experiences),
           "--class-order": (run["class_order"] or default_class_order(run["seed"])) if split else None,
           "--train-size": run["train_size"], "--test-size": run["test_size"]}
    out.update({f"{section}.{key}": value for section, values in cfg.items() for key, value in values.items()})
    return out


def setting_parts(run: StreamRun) -> list[str]:
    """The settings in which `run` departs from the defaults, as parts of a folder name (the names
    `default_run_dir` and `hebbedge compare` give), e.g. freeze-c-after1, readout.eta=0.02."""
    base = load_config(run.scenario)
    parts = [f"{option}{value}" for option, value in (("freeze-c-after", run.freeze_c_after), ("train-size", run.train_size),
                                                      ("test-size", run.test_size)) if value is not None]
    if run.epochs is not None and run.epochs != base["stream"]["epochs"]:
        parts.append(f"epochs{run.epochs}")
    if run.experiences is not None and run.experiences != SCENARIOS[run.scenario].n_experiences:
        parts.append(f"experiences{run.experiences}")
    if run.class_order is not None:
        parts.append("class-order" + ",".join(map(str, run.class_order)))
    parts += [f"{section}.{key}={json.dumps(value, separators=(',', ':'))}" for section, values in (run.overrides or {}).items()
              for key, value in values.items() if base[section][key] != value]
    return [re.sub(r"[^A-Za-z0-9._,=+-]", "", part) for part in parts]  # nothing a shell or a path would misread


def default_run_dir(run: StreamRun) -> Path:
    """runs/SCENARIO-LEARNER-seedN, then every setting that differs from the default run's, so that
    two different runs never meet in one folder by default."""
    return Path("runs") / "-".join([f"{run.scenario}-{run.learner}-seed{run.seed}", *setting_parts(run)])


def build_model(model_cfg: dict, hebbian: dict | None, in_shape: tuple[int, ...], n_classes: int, dropout: float,
                stack: tuple[bool, ...] | None = None) -> nn.Sequential:
    """The config's architecture, Hebbian when `hebbian` holds the learner's settings (a linear
    hybrid names which layers are Hebbian in `stack`)."""
    common = dict(n_classes=n_classes, activation=model_cfg.get("activation", "tanh"), dropout=dropout,
                  hebbian=stack if stack is not None else hebbian is not None)
    if hebbian is not None:
        common.update(beta=hebbian["beta"] if hebbian.get("momentum", True) else 0.0, label_smoothing=hebbian.get("label_smoothing", 0.0))
    if model_cfg["arch"] == "conv":
        if stack is not None:
            raise ValueError("hybrid stacks are built for the linear architecture; this stream's config uses conv")
        etas = dict(eta_conv=hebbian.get("eta_conv", 1e-4), eta_linear=hebbian["eta"]) if hebbian else {}
        return thesis_conv(in_channels=in_shape[0], image_size=in_shape[1], width_factor=model_cfg.get("width_factor", 1), **etas, **common)
    etas = dict(eta=hebbian["eta"]) if hebbian else {}
    return thesis_linear(in_features=int(np.prod(in_shape)), widths=tuple(model_cfg["widths"]), **etas, **common)


def readout_features(cfg: dict, in_shape: tuple[int, ...], n_classes: int) -> tuple[nn.Sequential, int]:
    """The feature network under an LDA readout, and its number of features: the config's [readout]
    network (one SoftHebb conv block, average-pooled to pool x pool per channel) or, without that
    section, the hidden layers of [model]. Built with random weights."""
    r = cfg.get("readout")
    if r is None:
        model = build_model(cfg["model"], None, in_shape, n_classes, 0.0)
        return model[:-1], model[-1].in_features
    if r.get("arch") != "conv":
        raise ValueError(f"[readout] arch must be \"conv\" (a SoftHebb conv block), got {r.get('arch')!r}")
    # No BatchNorm: the stream's inputs are already standardised, and a BatchNorm fitted to the host
    # data would be the one part of the features the random control does not share.
    block = softhebb_block(in_shape[0], r["channels"], r["kernel"], "max", r["inv_tau"], r["eta"], r["triangle"],
                           r["radius"], batchnorm=False)
    pool = block[1]  # the max-pool sets the feature map's size (the conv's padding keeps the image's)
    pooled = (in_shape[1] + 2 * pool.padding - pool.kernel_size) // pool.stride + 1
    return nn.Sequential(*block, AdaptiveAvgPool(pooled, r["pool"]), nn.Flatten()), r["channels"] * r["pool"] ** 2


def readout_model(cfg: dict, in_shape: tuple[int, ...], n_classes: int) -> tuple[nn.Sequential, LDAReadout]:
    """The readout learners' features (random weights, see ``readout_features``) and their empty LDA readout."""
    features, width = readout_features(cfg, in_shape, n_classes)
    shrinkage = cfg.get("readout", {}).get("shrinkage", cfg["backprop"].get("slda_shrinkage", 1e-4))
    return features, LDAReadout(width, n_classes, shrinkage)


def host_images(dataset: str, data_dir: str | None, size: int | None, seed: int) -> torch.Tensor:
    """The host dataset's training images, standardised with its own statistics (labels are not
    used), cut to the first `size` of a per-seed shuffle."""
    x, _ = data.load_standardised(dataset, True, data_dir)
    if size is not None and size < len(x):
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:size]]
    return x


def pretrain_features(features: nn.Sequential, run: StreamRun, cfg: dict, data_dir: str | None, progress: bool) -> None:
    """Label-free Hebbian learning of `features` on the scenario's host data (cut to `run.train_size`
    like the stream, for quick runs), before the stream; the features stay fixed afterwards, so the
    readout's statistics never go stale."""
    host = SCENARIOS[run.scenario].pretrain  # (StreamRun checked there is one)
    r = cfg["readout"]
    if r["pretrain_epochs"] == 0:  # (in-stream learning only, e.g. the warm-up: no host data)
        return
    x = host_images(host, data_dir, run.train_size, run.seed).to(next(features.buffers()).device)
    g = torch.Generator().manual_seed(run.seed)
    for epoch in range(r["pretrain_epochs"]):
        unsupervised_epoch(features, x, g, r["pretrain_batch_size"], desc=f"pre-train on {host} {epoch + 1}/{r['pretrain_epochs']}",
                           progress=progress)
    features.eval()


def unsupervised_strategy(run: StreamRun, cfg: dict, in_shape: tuple[int, ...], n_classes: int, plugins: list, common: dict):
    """softhebb / swta / hpca / wta: hidden layers learn by their unsupervised rule, the readout by
    Hebbian descent (cross-entropy's own local rule) or, for wta, the teacher-neuron classifier
    (seed 002); no backprop at all, C stays 1 (frozen)."""
    u = cfg["unsupervised"]
    rule = {"softhebb": lambda: SoftHebbRule(u["temperature"], u["q"]), "swta": lambda: SWTARule(u["temperature"]),
            "hpca": HPCARule, "wta": WTARule}[run.learner]
    model = build_model(cfg["model"], cfg["hebbian"], in_shape, n_classes, u.get("dropout", 0.0))
    strategy = HebbianStrategy(model=model, plugins=plugins, **common)
    strategy.freeze_c()
    *hidden, readout = strategy.learner.layers
    for layer in hidden:
        layer.rule, layer.eta, layer.beta, layer.post = rule(), u["eta"][run.learner], 0.0, None
        if run.learner == "softhebb":
            softhebb_init_(layer.weight, u["radius"])
    readout.eta = u["readout_eta"]
    if run.learner == "wta":
        readout.rule, readout.beta, readout.post = TeacherRule(), 0.0, None
    return strategy


def make_strategy(run: StreamRun, cfg: dict, in_shape: tuple[int, ...], n_classes: int, device: torch.device, plugins: list, evaluator,
                  data_dir: str | None = None, pretrain: bool = True, progress: bool = False):
    """The Avalanche strategy for `run.learner`, on the config's architecture. A learner that pre-trains
    its features does so here, on the scenario's host data (unless `pretrain` is False: a resumed run)."""
    stream = cfg["stream"]
    common = dict(train_mb_size=stream["batch_size"], train_epochs=run.epochs or stream["epochs"],
                  eval_mb_size=stream["eval_batch_size"], device=device, evaluator=evaluator)
    b = cfg["backprop"]
    if run.learner in LDA_LEARNERS + PRETRAINED_LDA_LEARNERS:
        # Built first, so that at equal seeds the control and the pre-trained learner start from the same weights.
        features, readout = readout_model(cfg, in_shape, n_classes)
        features = features.to(device).eval()
        if run.learner == "slda":  # Avalanche's per-sample streaming LDA, on the same fixed features
            return StreamingLDA(slda_model=features, criterion=nn.CrossEntropyLoss(), input_size=readout.n_features,
                                num_classes=n_classes, shrinkage_param=readout.shrinkage, plugins=plugins, **common)
        if run.learner in PRETRAINED_LDA_LEARNERS and pretrain:
            pretrain_features(features, run, cfg, data_dir, progress)
        # random-lda is the floor: the same readout on never-trained features.
        r = cfg["readout"] if run.learner in PRETRAINED_LDA_LEARNERS else {}
        return ReadoutStrategy(features=features, readout=readout, plastic_experiences=r.get("learn_experiences", 0),
                               warmup=r.get("warmup", 0.0), plugins=plugins, **common)
    if run.learner in UNSUPERVISED_LEARNERS:
        return unsupervised_strategy(run, cfg, in_shape, n_classes, plugins, common)
    if run.learner in HYBRID_LEARNERS:
        h, hybrid = cfg["hebbian"], cfg["hybrid"]
        stack = tuple(hybrid[run.learner.removeprefix("hybrid-").replace("-", "_")])
        model = build_model(cfg["model"], h, in_shape, n_classes, h.get("dropout", 0.0), stack=stack)
        return HebbianStrategy(model=model, c_lr=h["lr"], c_weight_decay=h["weight_decay"], sgd_lr=hybrid["sgd_lr"],
                               plugins=plugins, **common)
    if run.learner in HEBBIAN_LEARNERS:
        h = cfg["hebbian"]
        model = build_model(cfg["model"], h, in_shape, n_classes, h.get("dropout", 0.0))
        if run.freeze_c_after is not None:
            plugins = plugins + [FreezeCPlugin(run.freeze_c_after)]
        strategy = HebbianStrategy(model=model, c_lr=h["lr"], c_weight_decay=h["weight_decay"], plugins=plugins, **common)
        if run.learner == "random":
            random_features_(model)
        return strategy
    model = build_model(cfg["model"], None, in_shape, n_classes, b.get("dropout", 0.0)).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[b["optimizer"]](model.parameters(), lr=b["lr"])
    args = dict(model=model, optimizer=optimizer, criterion=criterion, plugins=plugins, **common)
    if run.learner == "naive":
        return Naive(**args)
    if run.learner == "ewc":
        return EWC(ewc_lambda=b["ewc_lambda"], **args)
    if run.learner == "si":
        return SynapticIntelligence(si_lambda=b["si_lambda"], **args)
    if run.learner == "lwf":
        return LwF(alpha=b["lwf_alpha"], temperature=b["lwf_temperature"], **args)
    if run.learner == "replay":
        return Replay(mem_size=b["replay_mem_size"], **args)
    return JointTraining(**args)


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


def data_files(run: StreamRun, cfg: dict, data_dir: str | None) -> list[Path]:
    """The data files the run reads: its stream's, and the host data its features pre-train on."""
    spec = SCENARIOS[run.scenario]
    files = [f for train in (True, False)
             for f in (data.cifar10_files(train, data_dir) if spec.dataset == "cifar10" else data.split_files(spec.dataset, train, data_dir))]
    if run.learner in PRETRAINED_LDA_LEARNERS and spec.pretrain and cfg.get("readout", {}).get("pretrain_epochs"):
        files += data.split_files(spec.pretrain, True, data_dir)
    return files


def run_record(run: StreamRun, device: torch.device, data_dir: str | None) -> dict:
    """What a run folder's config.json holds: the run's fields, its config, its data files' fingerprints."""
    cfg = run_config(run)
    return {"run": asdict(run), "config": cfg, "data": data.fingerprint(data_files(run, cfg, data_dir)), "device": str(device)}


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
    cfg = record["config"]
    if check_record(out, record) and done.exists():
        return read_metrics(done)  # finished: read back, never trained again
    if ckpt.is_symlink():  # the pickled strategy is read from the run's own folder only
        raise BadFileError(ckpt, "a symbolic link; a checkpoint is only read from the run's own folder")
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{ckpt} exists: the run in {out} was interrupted; pass --resume to continue it")
    seed_everything(run.seed)
    bm = make_stream(run.scenario, seed=run.seed, class_order=run.class_order, data_dir=data_dir,
                     train_size=run.train_size, test_size=run.test_size)
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
        start = time.time()
        if run.learner == "joint":
            if start_exp == 0:
                strategy.train(bm.train_stream)
                strategy.eval(bm.test_stream)
                save_run_checkpoint(ckpt, strategy, len(bm.train_stream))
        else:
            for i in range(start_exp, n_train):
                if stop_after is not None and i >= stop_after:
                    return {}
                strategy.train(bm.train_stream[i])
                strategy.eval(bm.test_stream)
                save_run_checkpoint(ckpt, strategy, i + 1)
        results = {"run": asdict(run), "device": str(device), "seconds": time.time() - start,
                   "classes_per_experience": [sorted(e.classes_in_this_experience) for e in bm.test_stream],
                   "protocols": matrix.results()}
        model_file = out / "model.pt"  # the final weights alone, for export and inspection
        atomic_write(model_file, lambda tmp: torch.save(strategy.model.state_dict(), tmp))
        save_json(done, results)  # last: from now on the run is finished
    return results


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
