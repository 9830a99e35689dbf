"""Every learner, declared once: what the command line offers, what `compare` runs by default,
what `export` writes, and how each network and strategy is built all read this table.

``net`` names how its network is built (``hebbedge.nets.build_net``); ``strategy`` how it trains on
a stream (``hebbedge.continual.STRATEGIES``); ``optimizer`` the backprop twin's optimizer of an
i.i.d. run. Nothing here imports torch or Avalanche.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = {
    "hebbian": "neuron-centric Hebbian learner (C by backprop, W by local rules)",
    "unsupervised": "unsupervised hidden rule under a Hebbian readout, no backprop",
    "hybrid": "Hebbian and backprop layers in one stack",
    "backprop": "backprop baseline",
    "readout": "fixed features under a streaming LDA readout",
}


@dataclass(frozen=True)
class Learner:
    name: str
    family: str  # a key of FAMILIES
    help: str
    net: str  # hebbian | unsupervised | hybrid | plain | readout | conv-readout | rff: how nets.build_net builds it
    strategy: str | None = None  # how it trains on a stream (continual.STRATEGIES); None: i.i.d. only
    iid: bool = False  # `hebbedge train mnist` trains it
    exports: bool = False  # `hebbedge export` writes its run's model directory
    compare_default: bool = False  # in `hebbedge compare`'s default list
    plastic: bool = True  # False: the random-features control, built with hidden layers that never learn
    rule: str | None = None  # unsupervised: the hidden layers' rule
    optimizer: str | None = None  # i.i.d. backprop twin: adam | sgd
    pretrained: bool = False  # readout: features pre-trained on the transfer scenario's host data
    freeze_c_after: int | None = None  # stream runs freeze C after this experience unless told otherwise

    @property
    def stream(self) -> bool:
        return self.strategy is not None

    @property
    def has_c(self) -> bool:
        """Whether C trains (and so can be frozen with --freeze-c-after)."""
        return self.family == "hebbian"


_UNSUPERVISED = {"softhebb": "SoftHebb (soft winner-take-all)", "swta": "soft winner-take-all",
                 "hpca": "Hebbian PCA (Oja-like)", "wta": "hard winner-take-all, teacher-neuron readout"}
_BASELINES = {"naive": "fine-tuning, no protection from forgetting", "ewc": "elastic weight consolidation",
              "si": "synaptic intelligence", "lwf": "learning without forgetting", "replay": "experience replay",
              "joint": "the whole stream at once (upper bound)"}

LEARNERS: dict[str, Learner] = {entry.name: entry for entry in (
    Learner("hebbian", "hebbian", "the Hebbian learner", "hebbian", "hebbian", iid=True, exports=True, compare_default=True),
    Learner("frozen-c", "hebbian", "the Hebbian learner with C frozen after the first experience: the later ones "
            "learn backprop-free, as on the device", "hebbian", "hebbian", exports=True, freeze_c_after=0),
    Learner("random", "hebbian", "its random-features control: hidden weights never learn, the readout does",
            "hebbian", "hebbian", iid=True, exports=True, compare_default=True, plastic=False),
    *(Learner(name, "unsupervised", text, "unsupervised", "unsupervised", rule=name) for name, text in _UNSUPERVISED.items()),
    Learner("hybrid-bottom-hebb", "hybrid", "Hebbian hidden layers under backprop ones", "hybrid", "hybrid"),
    Learner("hybrid-top-hebb", "hybrid", "backprop hidden layers under Hebbian ones", "hybrid", "hybrid"),
    Learner("adam", "backprop", "the backprop twin, Adam", "plain", iid=True, exports=True, optimizer="adam"),
    Learner("sgd", "backprop", "the backprop twin, SGD", "plain", iid=True, exports=True, optimizer="sgd"),
    *(Learner(name, "backprop", text, "plain", name, exports=True, compare_default=True) for name, text in _BASELINES.items()),
    Learner("slda", "readout", "Avalanche's streaming LDA on random features", "readout", "slda", compare_default=True),
    Learner("random-lda", "readout", "this library's LDA readout on random features", "readout", "readout", exports=True),
    Learner("softhebb-lda", "readout", "the same readout on SoftHebb features pre-trained on host data (transfer scenarios)",
            "readout", "readout", exports=True, pretrained=True),
    Learner("randumb", "readout", "RanDumb: the same readout (OAS shrinkage) on random Fourier features of the pixels",
            "rff", "readout", exports=True),
    Learner("conv-lda", "readout", "the same readout (OAS shrinkage) on a wide random conv bank: 128 5x5 channels pooled to "
            "4x4, 2048 features (docs/frontier.md)", "conv-readout", "readout", exports=True),
)}


def get(name: str, where: str = "stream") -> Learner:
    """The learner `name` offered for `where` (stream, iid or any); ValueError listing the valid ones."""
    valid = names(where)
    if name not in valid:
        raise ValueError(f"unknown learner {name!r}; valid: {', '.join(valid)}")
    return LEARNERS[name]


def names(where: str = "any", **flags: object) -> tuple[str, ...]:
    """The learners for `where` (stream, iid or any) whose fields equal `flags`, e.g. names(exports=True)."""
    picked = [e for e in LEARNERS.values() if where == "any" or getattr(e, where)]
    return tuple(e.name for e in picked if all(getattr(e, k) == v for k, v in flags.items()))


def help_text(where: str) -> str:
    """One line per family for the command line's --learner help."""
    groups: dict[str, list[str]] = {}
    for name in names(where):
        groups.setdefault(LEARNERS[name].family, []).append(name)
    return "; ".join(f"{family}: {' | '.join(group)}" for family, group in groups.items())
