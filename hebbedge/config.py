"""The typed configuration of a run: one dataclass per TOML section, validated when it is loaded.

Stream runs read theirs from `scenarios/configs/<stream>.toml`; i.i.d. runs (`hebbedge train mnist`)
build the same sections from their command-line options. Both take `--set SECTION.KEY=VALUE`
overrides through ``with_overrides`` and record ``as_dict`` in their run folder's config.json.
Each default is written here once; a key the file leaves out has it. An unknown section or key,
or a value of the wrong type, is an error that names the file (or the --set item) and the key.

Nothing here imports torch: the command line reads the defaults for its help.
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from hebbedge import registry


@dataclass(frozen=True)
class StreamSection:
    """How a stream is cut and fed: experiences, epochs per experience, batch sizes."""

    n_experiences: int = 5
    epochs: int = 1  # per experience
    batch_size: int = 64
    eval_batch_size: int = 1000  # evaluation only: no effect on what is learned


@dataclass(frozen=True)
class ModelSection:
    """The architecture: the thesis linear net (hidden `widths`) or its conv net (`width_factor`)."""

    arch: str = "linear"  # linear | conv
    widths: tuple[int, ...] = (2000, 2000, 2000, 2000)
    width_factor: int = 4
    activation: str = "tanh"
    dropout: float = 0.0  # the [hebbian] / [backprop] dropout is the one a learner uses


@dataclass(frozen=True)
class HebbianSection:
    """The Hebbian learner: the optimizer on C, the Hebbian rate eta and the momentum of the local rule."""

    optimizer: str = "adamw"  # on C: adamw | sgd (the thesis's continual-learning runs: SGD with momentum)
    lr: float = 0.03
    sgd_momentum: float = 0.0  # sgd only
    weight_decay: float = 0.003
    dropout: float = 0.0
    eta: float = 1e-3  # linear layers
    eta_conv: float = 1e-4  # conv layers
    momentum: bool = True  # false: M = D (beta 0)
    beta: float = 0.9
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class BackpropSection:
    """The backprop twin and Avalanche's baselines."""

    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    sgd_momentum: float = 0.0  # sgd only (the thesis's continual-learning runs: SGD with momentum)
    weight_decay: float = 0.0
    dropout: float = 0.0
    ewc_lambda: float = 100.0  # ewc
    si_lambda: float = 1.0  # si
    lwf_alpha: float = 1.0  # lwf
    lwf_temperature: float = 2.0
    replay_mem_size: int = 500  # replay
    slda_shrinkage: float = 1e-4  # slda, and the LDA readout without a [readout] section


@dataclass(frozen=True)
class UnsupervisedSection:
    """softhebb / swta / hpca / wta: the hidden rule's rate per learner, the readout's Hebbian-descent rate."""

    eta: dict[str, float] = field(default_factory=lambda: {"softhebb": 0.01, "swta": 0.01, "hpca": 1e-5, "wta": 0.01})
    readout_eta: float = 0.05  # the readout's Hebbian-descent rate (wta: the teacher rule's)
    temperature: float = 1.0  # softhebb, swta
    q: float = 0.5  # softhebb's adaptive-rate power
    radius: float = 3.0  # softhebb's initial row norm
    dropout: float = 0.0


@dataclass(frozen=True)
class HybridSection:
    """Which layers (hidden ones, then the output) of a hybrid stack are Hebbian; the rate of the others."""

    bottom_hebb: tuple[bool, ...] = (True, False, False)
    top_hebb: tuple[bool, ...] = (False, True, True)
    sgd_lr: float = 1e-3


@dataclass(frozen=True)
class ReadoutSection:
    """The LDA readout learners' feature network: one SoftHebb conv block, average-pooled."""

    arch: str = "conv"
    channels: int = 16
    kernel: int = 5
    pool: int = 4  # features: channels * pool^2
    shrinkage: float = 1e-4
    eta: float = 0.08  # SoftHebb's rate, 1 / temperature and Triangle power (Table 3, layer 1)
    inv_tau: float = 1.0
    triangle: float = 0.7
    radius: float = 3.0
    pretrain_epochs: int = 1  # softhebb-lda: label-free epochs on the host data before the stream
    pretrain_batch_size: int = 64
    warmup: float = 0.0  # fraction of the first experience the block also learns from (never summed)
    learn_experiences: int = 0  # experiences during which the block keeps learning
    expand: int = 0  # > 0: a random projection of the pooled features to this many, then ReLU (RanPAC-style); 0: none
    shrinkage_estimator: str = "fixed"  # fixed (`shrinkage`) | oas: estimated from the readout's sums at each solve


@dataclass(frozen=True)
class RandumbSection:
    """`randumb` (RanDumb, Prabhu et al. 2024): random Fourier features of the standardised pixels,
    z(x) = sqrt(2 / D) cos(x W + b), W ~ N(0, 2 gamma), b ~ U(0, 2 pi) (sklearn's RBFSampler), under
    the LDA readout with a shared covariance shrunk by OAS (its code's default)."""

    features: int = 2048  # D (RanDumb's code defaults to 10000; issue 18's budget is <= 2048 into the readout)
    gamma: float = 0.0  # the RBF kernel's gamma; 0: 'scale', 1 / (pixels * variance of the standardised pixels)
    shrinkage_estimator: str = "oas"  # oas | fixed
    shrinkage: float = 1e-4  # used when shrinkage_estimator = "fixed"


SECTIONS: dict[str, type] = {"stream": StreamSection, "model": ModelSection, "hebbian": HebbianSection,
                             "backprop": BackpropSection, "unsupervised": UnsupervisedSection, "hybrid": HybridSection,
                             "readout": ReadoutSection, "randumb": RandumbSection, "conv_lda": ReadoutSection}
# Settings that only some learners read: a run of any other learner does not depend on them, so changing one
# (tuning EWC's lambda, say) leaves the records of those runs valid (``hebbedge.continual.settings``).
# A key, or a whole section.
READ_ONLY_BY: dict[str, tuple[str, ...]] = {
    "backprop.ewc_lambda": ("ewc",), "backprop.si_lambda": ("si",), "backprop.lwf_alpha": ("lwf",),
    "backprop.lwf_temperature": ("lwf",), "backprop.replay_mem_size": ("replay",), "randumb": ("randumb",),
    "conv_lda": ("conv-lda",)}
# Only the transfer streams have [readout]; randumb's and conv-lda's defaults serve without their sections.
OPTIONAL_SECTIONS = ("readout", "randumb", "conv_lda")
POSITIVE = ("stream.epochs", "stream.batch_size", "stream.eval_batch_size")
# The optimizers a config may name (hebbedge.learner builds C's, hebbedge.backprop the twin's).
CHOICES = {"hebbian.optimizer": ("adamw", "sgd"), "backprop.optimizer": ("adam", "sgd")}


class ConfigError(ValueError):
    """A config that does not fit the schema; the message names the file (or --set item) and the key."""


@dataclass(frozen=True)
class Config:
    """A run's whole configuration; `source` is the file (or "defaults") it was read from."""

    stream: StreamSection = StreamSection()
    model: ModelSection = ModelSection()
    hebbian: HebbianSection = HebbianSection()
    backprop: BackpropSection = BackpropSection()
    unsupervised: UnsupervisedSection = UnsupervisedSection()
    hybrid: HybridSection = HybridSection()
    readout: ReadoutSection | None = None
    randumb: RandumbSection | None = None  # None: RandumbSection's defaults (``randumb_settings``)
    conv_lda: ReadoutSection | None = None  # None: CONV_LDA (``conv_lda_settings``)
    source: str = field(default="defaults", compare=False)

    def as_dict(self) -> dict[str, dict]:
        """The sections as plain JSON values (what a run folder's config.json records)."""
        return {name: json.loads(json.dumps(asdict(getattr(self, name)))) for name in SECTIONS if getattr(self, name) is not None}


def read_by(learner: str, section: str, key: str) -> bool:
    """Whether a run of `learner` reads the setting `section`.`key` (``READ_ONLY_BY``)."""
    readers = READ_ONLY_BY.get(f"{section}.{key}", READ_ONLY_BY.get(section))
    return readers is None or learner in readers


# conv-lda (issue 18, docs/frontier.md): the readout's random conv bank, widened to the feature budget
# (128 channels x 4 x 4 = 2048 features), its shrinkage estimated by OAS. Never trained.
CONV_LDA = ReadoutSection(channels=128, shrinkage_estimator="oas")


def conv_lda_settings(cfg: Config) -> ReadoutSection:
    """The config's [conv_lda] section, or CONV_LDA when the config has none."""
    return cfg.conv_lda if cfg.conv_lda is not None else CONV_LDA


def randumb_settings(cfg: Config) -> RandumbSection:
    """The config's [randumb] section, or its defaults when the config has none."""
    return cfg.randumb if cfg.randumb is not None else RandumbSection()


def _convert(value: object, hint: object, where: str) -> object:
    """`value` as the schema's type `hint` (an integer is a fine float); ConfigError naming `where` otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(_convert(v, args[0], where) for v in value)
    elif origin is dict:
        if isinstance(value, dict):
            return {_convert(k, args[0], where): _convert(v, args[1], where) for k, v in value.items()}
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, hint) and not isinstance(value, bool):  # int, str
        return value
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    raise ConfigError(f"{where}: expected {name}, got {json.dumps(value, default=str)}")


def section(name: str, values: dict, source: str, base: object | None = None) -> object:
    """The section `name` from `values`, over `base` (the section's defaults when None)."""
    if name not in SECTIONS:
        raise ConfigError(f"{source}: unknown section [{name}]; expected one of {', '.join(SECTIONS)}")
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {name} = {values!r}: expected a [{name}] table")
    kind = SECTIONS[name]
    hints = typing.get_type_hints(kind)
    known = [f.name for f in fields(kind)]
    converted = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {name}.{key}; [{name}] has {', '.join(known)}")
        converted[key] = _convert(value, hints[key], f"{source}: {name}.{key}")
    return replace(base, **converted) if base is not None else kind(**converted)


def _check(cfg: Config, source: str) -> Config:
    for dotted in POSITIVE:
        name, key = dotted.split(".")
        if getattr(getattr(cfg, name), key) < 1:
            raise ConfigError(f"{source}: {dotted} must be a positive integer, got {getattr(getattr(cfg, name), key)}")
    for dotted, choices in CHOICES.items():
        name, key = dotted.split(".")
        if (value := getattr(getattr(cfg, name), key)) not in choices:
            raise ConfigError(f"{source}: {dotted} = {value!r}; expected one of {', '.join(choices)}")
    return cfg


def from_dict(values: dict, source: str | Path = "defaults", complete: bool = True) -> Config:
    """A Config from parsed TOML sections; each missing key has the schema's default. `complete`:
    every section but the optional ones must be there (a stream config); a run record of an older
    version may lack sections added since, which then have their defaults."""
    source = str(source)
    sections = {name: section(name, v, source) for name, v in values.items()}
    missing = [name for name in SECTIONS if name not in sections and name not in OPTIONAL_SECTIONS]
    if missing and complete:
        raise ConfigError(f"{source}: no [{missing[0]}] section; a config has {', '.join(SECTIONS)} ([readout] optional)")
    return _check(Config(**sections, source=source), source)


def with_overrides(cfg: Config, overrides: dict[str, dict] | None, source: str = "--set") -> Config:
    """`cfg` with {section: {key: value}} replacing its values, each checked against the schema."""
    changed = {}
    for name, values in (overrides or {}).items():
        if name in SECTIONS and getattr(cfg, name) is None:
            raise ConfigError(f"{source} {name}.{next(iter(values), '')}: this config has no [{name}] section ({cfg.source})")
        changed[name] = section(name, values, source, getattr(cfg, name, None))
    return _check(replace(cfg, **changed), source) if changed else cfg


def overridden(cfg: Config, overrides: dict[str, dict] | None) -> list[tuple[str, str, object]]:
    """The (section, key, value) of `overrides` that change `cfg`'s values."""
    base = cfg.as_dict()
    return [(name, key, value) for name, values in (overrides or {}).items() for key, value in values.items()
            if base.get(name, {}).get(key) != json.loads(json.dumps(value))]


IID_LEARNERS = registry.names("iid")  # hebbian, its random-features control, the backprop twin (adam, sgd)
ARCHS = ("linear", "conv")
_MODEL, _HEBBIAN, _BACKPROP = ModelSection(), HebbianSection(), BackpropSection()

# The shared schema's keys (hebbedge/config.py) that an i.i.d. run has, and the TrainConfig field of each:
# what `--set SECTION.KEY=VALUE` changes and what ``TrainConfig.config`` fills in.
SCHEMA_FIELDS = {"stream.epochs": "epochs", "stream.batch_size": "batch_size",
                 **{f"model.{k}": k for k in ("arch", "widths", "width_factor", "activation", "dropout")},
                 "hebbian.optimizer": "c_optimizer", "hebbian.lr": "c_lr", "hebbian.sgd_momentum": "c_momentum",
                 "hebbian.weight_decay": "c_weight_decay", "hebbian.dropout": "dropout",
                 **{f"hebbian.{k}": k for k in ("eta", "eta_conv", "momentum", "beta", "label_smoothing")},
                 "backprop.lr": "lr", "backprop.weight_decay": "weight_decay", "backprop.dropout": "dropout"}


@dataclass
class TrainConfig:
    """Everything that defines one i.i.d. run, flat; ``config()`` is the same run in the shared schema
    of hebbedge/config.py, whose defaults these are. Epochs, batch and widths are the thesis' MNIST
    linear setting (6.1)."""

    dataset: str = "mnist"
    learner: str = "hebbian"  # one of IID_LEARNERS
    arch: str = _MODEL.arch
    widths: tuple[int, ...] = _MODEL.widths
    width_factor: int = _MODEL.width_factor
    activation: str = _MODEL.activation
    dropout: float = _MODEL.dropout
    epochs: int = 100
    batch_size: int = 32
    val_size: int = 5000  # held out of the training set to pick the best epoch (thesis ch. 6)
    train_size: int | None = None  # use only this many training samples (quick runs); None = all
    seed: int = 0
    # Hebbian learner
    eta: float = _HEBBIAN.eta  # linear layers
    eta_conv: float = _HEBBIAN.eta_conv
    momentum: bool = _HEBBIAN.momentum
    beta: float = _HEBBIAN.beta
    label_smoothing: float = _HEBBIAN.label_smoothing
    c_optimizer: str = _HEBBIAN.optimizer
    c_lr: float = _HEBBIAN.lr
    c_momentum: float = _HEBBIAN.sgd_momentum
    c_weight_decay: float = _HEBBIAN.weight_decay
    # backprop twin
    lr: float = _BACKPROP.lr
    weight_decay: float = _BACKPROP.weight_decay
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.learner not in IID_LEARNERS:
            raise ValueError(f"unknown learner {self.learner!r}; expected one of {list(IID_LEARNERS)}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; expected one of {list(ARCHS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        self.widths = tuple(self.widths)

    def config(self) -> Config:
        """This run in the shared schema (what the network is built from and config.json records)."""
        values: dict[str, dict] = {}
        for dotted, name in SCHEMA_FIELDS.items():
            sec, key = dotted.split(".")
            values.setdefault(sec, {})[key] = getattr(self, name)
        values["stream"]["n_experiences"] = 1
        values["backprop"]["optimizer"] = registry.LEARNERS[self.learner].optimizer or _BACKPROP.optimizer
        return Config(stream=StreamSection(**values["stream"]), model=ModelSection(**values["model"]),
                      hebbian=HebbianSection(**values["hebbian"]), backprop=BackpropSection(**values["backprop"]),
                      source="i.i.d. options")

    def with_overrides(self, overrides: dict[str, dict] | None) -> TrainConfig:
        """This config with `--set` {section: {key: value}} applied, each checked against the shared schema."""
        changed = {}
        for sec, values in (overrides or {}).items():
            for key, value in values.items():
                if f"{sec}.{key}" not in SCHEMA_FIELDS:
                    raise ConfigError(f"--set {sec}.{key}: not a setting of an i.i.d. run; it has {', '.join(SCHEMA_FIELDS)}")
                typed = section(sec, {key: value}, "--set")
                changed[SCHEMA_FIELDS[f"{sec}.{key}"]] = getattr(typed, key)
        return replace(self, **changed)
