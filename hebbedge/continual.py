"""One learner on one stream: build the strategy, train experience by experience, evaluate, save.

Every learner is an Avalanche strategy on the same architecture: the Hebbian learner
(``HebbianStrategy``), its random-features control, and Avalanche's own baselines.
After each experience the whole test stream is evaluated and a checkpoint is written atomically,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import dill
import numpy as np
import torch
import torch.nn as nn
from avalanche.checkpointing import maybe_load_checkpoint, save_checkpoint
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training import EWC, LwF, Naive, Replay, StreamingLDA, SynapticIntelligence
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised.joint_training import JointTraining

import hebbedge.avalanche_fixes  # noqa: F401  (SI on CPU; see the module)
from hebbedge.files import atomic_write, save_json
from hebbedge.metrics import AccuracyMatrixPlugin, OwnClassesAccuracy
from hebbedge import data
from hebbedge.models import AdaptiveAvgPool, random_features_, softhebb_init_, thesis_conv, thesis_linear
from hebbedge.rules import HPCARule, SoftHebbRule, SWTARule, TeacherRule, WTARule
from hebbedge.scenarios import SCENARIOS, load_config, make_stream
from hebbedge.readout import LDAReadout
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
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}")
        if self.learner not in CL_LEARNERS:
            raise ValueError(f"unknown learner {self.learner!r}; valid: {', '.join(CL_LEARNERS)}")
        if self.experiences is not None and self.experiences < 1:
            raise ValueError(f"--experiences must be at least 1, got {self.experiences}")
        if self.freeze_c_after is not None and self.learner not in HEBBIAN_LEARNERS:  # the others have no C to train
            raise ValueError(f"--freeze-c-after applies to the Hebbian learners ({', '.join(HEBBIAN_LEARNERS)}), not {self.learner!r}")


def run_config(run: StreamRun) -> dict:
    """The stream's config with the run's overrides; each names a key the config already has."""
    cfg = load_config(run.scenario)
    for section, values in (run.overrides or {}).items():
        for key, value in values.items():
            if key not in cfg.get(section, {}):
                known = ", ".join(f"{s}.{k}" for s, v in cfg.items() for k in v)
                raise ValueError(f"{run.scenario}: no config key {section}.{key} to override; expected one of {known}")
            cfg[section][key] = value
    return cfg


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
    host = SCENARIOS[run.scenario].pretrain
    if host is None or "readout" not in cfg:
        transfer = [name for name, spec in SCENARIOS.items() if spec.pretrain]
        raise ValueError(f"{run.learner!r} pre-trains its features on host data before the stream: use a transfer "
                         f"scenario ({', '.join(transfer)}), not {run.scenario!r}")
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
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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


def save_run_checkpoint(path: Path, strategy, next_experience: int) -> None:
    """Avalanche's strategy checkpoint plus the RNG state, in one file written then renamed."""
    blob = io.BytesIO()
    with _dill_by_reference():
        save_checkpoint(strategy, blob)
    state = {"avalanche": blob.getvalue(), "rng": _rng_state(), "next_experience": next_experience}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_run_checkpoint(path: Path, strategy, device: torch.device):
    state = torch.load(path, weights_only=False)
    strategy, _ = maybe_load_checkpoint(strategy, io.BytesIO(state["avalanche"]), map_location=device)
    _set_rng_state(state["rng"])
    return strategy, state["next_experience"]


def run_stream(run: StreamRun, out_dir: str | Path, device: torch.device, data_dir: str | None = None,
               resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train `run` on its stream and write config, metrics and checkpoint under `out_dir`.

    `stop_after` ends the run after that many experiences (as an interruption would) without
    writing the final metrics; `resume` continues from the checkpoint.
    """
    out = Path(out_dir)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{ckpt} exists: pass --resume to continue that run, or choose another --out")
    cfg = run_config(run)
    seed_everything(run.seed)
    bm = make_stream(run.scenario, seed=run.seed, class_order=run.class_order, data_dir=data_dir,
                     train_size=run.train_size, test_size=run.test_size)
    in_shape = tuple(bm.train_stream[0].dataset[0][0].shape)
    n_classes = max(c for e in bm.train_stream for c in e.classes_in_this_experience) + 1  # one head, original ids
    matrix = AccuracyMatrixPlugin()
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), OwnClassesAccuracy(),
                                 loggers=[InteractiveLogger()] if progress else [])
    strategy = make_strategy(run, cfg, in_shape, n_classes, device, [matrix], evaluator, data_dir,
                             pretrain=not (resume and ckpt.exists()), progress=progress)
    save_json(out / "config.json", {"run": asdict(run), "config": cfg, "device": str(device)})
    start_exp = 0
    if resume and ckpt.exists():
        strategy, start_exp = load_run_checkpoint(ckpt, strategy, device)
        matrix = next(p for p in strategy.plugins if isinstance(p, AccuracyMatrixPlugin))
    start = time.time()
    if run.learner == "joint":
        if start_exp == 0:
            strategy.train(bm.train_stream)
            strategy.eval(bm.test_stream)
            save_run_checkpoint(ckpt, strategy, len(bm.train_stream))
    else:
        for i in range(start_exp, min(len(bm.train_stream), run.experiences or len(bm.train_stream))):
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
    save_json(out / "metrics.json", results)
    return results


def describe(results: dict) -> str:
    """A few lines with both protocols' accuracy and forgetting, each named."""
    lines = []
    for protocol, r in results["protocols"].items():
        f = "n/a" if r["forgetting"] is None else f"{100 * r['forgetting']:.2f}"
        lines.append(f"{protocol:17s}: final average accuracy {100 * r['final_avg_acc']:.2f}%, forgetting {f}")
    return "\n".join(lines)
