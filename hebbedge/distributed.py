"""Host training across processes with ``torch.distributed`` (gloo on CPU, NCCL on GPUs), under ``torchrun``.

Each global batch of B samples is cut into R equal shards, one per process (rank). What is reduced:

- the Hebbian learner with C training (``DistributedHebbianLearner``): C's gradients are averaged before
  the optimizer's step, like DDP; after the local rules, each layer's momentum M (and bias momentum) is averaged. Every
  rank held the same M before the step, so mean_r(beta*M + D_r) = beta*M + mean_r D_r: the step takes
  the mean of the ranks' local directions (docs/method.md: M <- beta M + D, with D = mean_r D_r);
- its backprop twin: ``torch.nn.parallel.DistributedDataParallel`` averages the gradients;
- the streaming LDA readout (``DistributedReadout``): its state is sums (counts, class sums, second
  moment), and the all-reduced sums are exactly those of one process that saw every shard.

How this relates to one process on the whole global batch (docs/distributed.md): the cross-entropy
and Hebbian descent (eq. 4.28-4.29) are means over samples, so their distributed step is the
single-process one. The contrastive rule (eq. 4.7-4.9, 4.26-4.27) couples the samples of a batch
through its B x B pairs: the distributed direction is the mean of the rules' directions on the
shards, i.e. the single-process direction under ``ShardMean(rule, R)``. That is R times the gradient
of the global loss's within-shard pairs (cross-shard pairs are absent), with label smoothing's share
alpha / (B/R - 1) instead of alpha / (B - 1).

Run: ``torchrun --nproc-per-node 2 -m hebbedge.distributed mnist --learner hebbian --out runs/dist``.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from hebbedge.backprop import BackpropLearner
from hebbedge.data import DataNotFoundError
from hebbedge.files import save_checkpoint, save_json
from hebbedge.layers import HebbLayer
from hebbedge.learner import HebbianLearner, StepResult
from hebbedge.readout import LDAReadout
from hebbedge.rules import GradientRule
from hebbedge.train import TrainConfig, build, data_record, evaluate, fit, hebbian_learner, holdout, load_normalised, resolve_device, summary

LEARNERS = ("hebbian", "random", "adam", "sgd", "lda")


# -- process group ---------------------------------------------------------------------------------

def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: str = "auto") -> torch.device:
    """Join the process group torchrun set up (NCCL when this rank has a GPU, else gloo); returns this
    rank's device. A no-op for the group when it is already initialised."""
    if not launched():
        raise RuntimeError("hebbedge.distributed expects to be started by torchrun (RANK and WORLD_SIZE unset), "
                           "e.g. torchrun --nproc-per-node 2 -m hebbedge.distributed mnist ...")
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        # (a caller such as `hebbedge train` need not know about the group: it is left at exit)
        atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)
    return dev


def rank() -> int:
    return dist.get_rank()


def world_size() -> int:
    return dist.get_world_size()


def shard_rows(global_batch: int, at_rank: int | None = None, world: int | None = None) -> slice:
    """This rank's rows of a global batch: R equal contiguous shards. Equal shards make the mean of
    the shards' means the global mean, which is what the averaging below relies on."""
    at_rank = rank() if at_rank is None else at_rank
    world = world_size() if world is None else world
    if global_batch % world:
        raise ValueError(f"a global batch of {global_batch} samples cannot be split over {world} processes: "
                         f"expected a multiple of the world size {world}")
    size = global_batch // world
    return slice(at_rank * size, (at_rank + 1) * size)


def _sum_(tensors: list[torch.Tensor]) -> None:
    """All-reduce-sum in place, one call per dtype: the tensors are packed into one flat buffer
    (gloo's and NCCL's latency is per call, and the C gradients are hundreds of small vectors)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        if len(group) == 1:
            dist.all_reduce(group[0])
            continue
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def mean_(tensors: list[torch.Tensor]) -> None:
    """All-reduce-mean in place (gloo has no AVG: a sum, then divided by the world size)."""
    _sum_(tensors)
    for t in tensors:
        t.div_(world_size())


def broadcast_state_(module: nn.Module, src: int = 0) -> None:
    """Every rank takes rank `src`'s parameters and buffers (e.g. after building with different seeds)."""
    for t in module.state_dict().values():
        dist.broadcast(t, src)


# -- the Hebbian learner -------------------------------------------------------------------------------

class ShardMean(GradientRule):
    """The single-process equivalent of a distributed step: `rule`'s dL/du computed on each of R equal
    shards of the batch separately, divided by R. A layer's weight gradient (-g_u^T x, or the conv's)
    is a sum over samples, so the direction it gives is the mean over shards of the directions the
    shards would give alone: what the ranks' all-reduced M holds. For a rule that is a mean over
    samples (Hebbian descent) this is the rule itself; for the contrastive rule it drops the
    cross-shard pairs (module docstring)."""

    def __init__(self, rule: GradientRule, world: int) -> None:
        if not isinstance(rule, GradientRule):
            raise TypeError(f"ShardMean takes a GradientRule (its direction is a sum over samples), got {rule!r}")
        if world < 1:
            raise ValueError(f"world must be a positive number of processes, got {world}")
        self.rule, self.world = rule, world

    def output_grad(self, out: torch.Tensor, target: torch.Tensor, activation: str | None) -> torch.Tensor:
        parts = [self.rule.output_grad(out[rows], target[rows], activation)
                 for rows in (shard_rows(len(target), r, self.world) for r in range(self.world))]
        return torch.cat(parts).div_(self.world)

    def __repr__(self) -> str:
        return f"ShardMean({self.rule!r}, world={self.world})"


def _learns(layer: HebbLayer) -> bool:
    """Whether the layer's M can change (the random-features control's hidden layers: never)."""
    return bool(getattr(layer, "learns", layer.eta != 0))


def _momentum_state(layer: HebbLayer) -> dict[str, torch.Tensor]:
    """M and the bias momentum (when the layer has a bias), as the layer's state_dict holds them."""
    return {k: v for k, v in layer.state_dict().items() if k in ("momentum", "bias_momentum") and v is not None}


def _reduce_momenta_(layers: list[HebbLayer], reduce: Callable[[list[list[torch.Tensor]]], None]) -> None:
    """Apply `reduce` to each layer's [M, bias M] as its state_dict holds them, then load them back.

    Through the state dict because a linear layer with C frozen may hold M in another form between steps
    (multiplied by C when beta > 0, as its two factors -g^T x when beta = 0): saving a layer gives M
    itself whatever the form, and loading M puts the layer back in the plain form. So the reduction
    is always of M, never of a held form (which would also be linear for C * M with the same C on
    every rank, but not for the factors); the next frozen step folds or factors again.
    """
    states = [_momentum_state(layer) for layer in layers]
    reduce([list(state.values()) for state in states])
    for layer, state in zip(layers, states):
        layer.load_state_dict(state, strict=False)


class DistributedHebbianLearner(HebbianLearner):
    """``HebbianLearner`` whose step, on this rank's shard, makes every rank take the same update:
    C's gradients averaged before the optimizer's step, each layer's M averaged after the local rules (module
    docstring). Ranks start from rank 0's model and stay identical (up to reduction order: bit-equal
    across ranks, since every rank receives the same reduced values).

    A direction dropped as non-finite on one rank is dropped on all: that rank kept M unchanged, and
    it broadcasts that M to the others in place of the mean.
    """

    def __init__(self, model: nn.Module, *args, **kwargs) -> None:
        super().__init__(model, *args, **kwargs)
        broadcast_state_(model)

    def step_c(self) -> None:
        # The ranks' losses are means over equal shards, so the mean of their gradients is the gradient
        # of the global batch's mean loss. A non-finite gradient on any rank makes the mean non-finite on
        # all, so the parent's finiteness check skips the step on every rank alike.
        mean_([p.grad for p in self.model.parameters() if p.grad is not None])
        super().step_c()

    @torch.no_grad()
    def local_update(self, target: torch.Tensor) -> int:
        """The parent's commit and local rules on this shard, then M reduced; returns how many layers
        dropped their direction on some rank (and so on every rank)."""
        super().local_update(target)
        learning = [layer for layer in self.layers if _learns(layer)]
        if not learning:
            return 0
        # Per layer, the lowest rank that dropped its direction, or the world size when none did.
        dropped_at = torch.tensor([rank() if layer.dropped else world_size() for layer in learning],
                                  device=learning[0].weight.device)
        dist.all_reduce(dropped_at, op=dist.ReduceOp.MIN)
        sources = dropped_at.tolist()

        def reduce(momenta: list[list[torch.Tensor]]) -> None:
            averaged = []
            for tensors, src in zip(momenta, sources):
                if src < world_size():  # that rank kept M as it was before the step: every rank takes it
                    for t in tensors:
                        dist.broadcast(t, src)
                else:
                    averaged += tensors
            mean_(averaged)

        _reduce_momenta_(learning, reduce)
        for layer, src in zip(learning, sources):
            layer.dropped = src < world_size()
        return sum(src < world_size() for src in sources)


# -- the backprop twin -------------------------------------------------------------------------------

def distributed_backprop(model: nn.Module, optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0) -> BackpropLearner:
    """``BackpropLearner`` on the model wrapped in DDP, which broadcasts rank 0's parameters once and
    averages the gradients during the backward pass: the step on R equal shards is the one of one
    process on the global batch (the cross-entropy is a mean over samples)."""
    dev = next(model.parameters()).device
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
    return BackpropLearner(ddp, optimizer, lr=lr, weight_decay=weight_decay)


# -- the readout ----------------------------------------------------------------------------------------

class DistributedReadout:
    """Fixed features and an ``LDAReadout``; each rank adds its shards to sums of its own, and ``sync()``
    all-reduces those into the readout. Sums of sums are exact: after ``sync()`` every rank holds the
    state of one process that accumulated every shard (float64, up to the order of the additions)."""

    def __init__(self, features: nn.Module, readout: LDAReadout) -> None:
        self.features, self.readout = features.eval(), readout
        broadcast_state_(features)
        # What this rank accumulated since the last sync.
        self.pending = LDAReadout(readout.n_features, readout.n_classes, readout.shrinkage, readout.estimator).to(readout.count.device)
        self.model = nn.Sequential(self.features, self.readout)

    @torch.no_grad()
    def step(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """Add this rank's shard (already cut) to its pending sums; no communication."""
        self.pending.accumulate(self.features(x).flatten(1), target)

    @torch.no_grad()
    def sync(self) -> None:
        """Reduce every rank's pending sums into the readout (the only collective); pending starts again at 0."""
        sums = list(self.pending.buffers())
        _sum_(sums)
        for mine, added in zip(self.readout.buffers(), sums):
            mine.add_(added)  # (an in-place add: the readout sees that its sums changed and solves again)
            added.zero_()


# -- bytes -----------------------------------------------------------------------------------------------

def reduced_bytes(learner: HebbianLearner | BackpropLearner | DistributedReadout) -> int:
    """Bytes each rank contributes to the reductions of one step (of one ``sync`` for the readout):
    the payload of the collectives, not the wire traffic, which depends on the algorithm (a ring
    all-reduce sends and receives about 2 (R-1)/R times the payload per rank)."""
    def size(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    if isinstance(learner, DistributedReadout):
        return size(learner.pending.buffers())
    if isinstance(learner, BackpropLearner):
        return size(p for p in learner.model.parameters() if p.requires_grad)
    grads = [] if learner.frozen else [p for p in learner.model.parameters() if p.requires_grad]
    learning = [layer for layer in learner.layers if _learns(layer)]
    momenta = [t for layer in learning for t in _momentum_state(layer).values()]
    return size(grads) + size(momenta) + 8 * len(learning)  # (+ the int64 dropped-at vector)


# -- training ----------------------------------------------------------------------------------------------

class ShardedLearner:
    """Gives ``hebbedge.train.fit`` a learner whose ``step`` takes the global batch (the same on every rank:
    same seed, same order) and steps the distributed learner on this rank's shard. The returned loss
    is the global batch's (the ranks' shard losses averaged), for the log."""

    def __init__(self, learner: HebbianLearner | BackpropLearner, model: nn.Module) -> None:
        self.learner, self.model = learner, model  # model: the plain module (not the DDP wrapper)

    def step(self, x: torch.Tensor, target: torch.Tensor) -> StepResult:
        rows = shard_rows(len(target))
        result = self.learner.step(x[rows], target[rows])
        loss = torch.tensor([result.loss], dtype=torch.float64, device=x.device)
        mean_([loss])
        return StepResult(loss.item(), result.logits, result.skipped_layers)

    def state_dict(self) -> dict:
        """The single-process learner's state: the plain model's keys, without DDP's "module." prefix."""
        return {**self.learner.state_dict(), "model": self.model.state_dict()}


def _cut(n: int, world: int) -> int:
    """The largest multiple of the world size not above n: then every global batch of an epoch, the
    last, shorter one included, splits evenly (n - k*B is a multiple of R when B is)."""
    return n - n % world


def run(cfg: TrainConfig, device: str = "auto", data_dir: str | None = None, progress: bool = True,
        data: tuple[torch.Tensor, ...] | None = None, checkpoint: str | Path | None = None, resume: bool = False,
        on_epoch: Callable[[dict], None] | None = None, learner: str | None = None) -> dict:
    """``hebbedge.train.run`` across the processes torchrun started, each on its shard of every global
    batch of ``cfg.batch_size``; every rank returns the same record. The training set is cut to a
    multiple of the world size (at most R - 1 samples left out). `learner` "lda" (not a TrainConfig
    learner) trains the LDA readout on the random hidden features of ``cfg``'s network in one pass;
    by default ``cfg.learner``. Only rank 0 calls `on_epoch` and writes `checkpoint` (at the end)."""
    learner = learner or cfg.learner
    if learner not in LEARNERS:
        raise ValueError(f"unknown learner {learner!r}; expected one of {list(LEARNERS)}")
    if resume or (checkpoint is not None and Path(checkpoint).exists()):
        raise FileExistsError(f"a distributed run does not resume: {checkpoint} exists or --resume was given; choose another --out")
    dev = init(device)
    if cfg.batch_size % world_size():
        raise ValueError(f"the batch size {cfg.batch_size} is the global batch: expected a multiple of the "
                         f"world size {world_size()}")
    if learner in ("hebbian", "random") and cfg.batch_size // world_size() < 2:
        raise ValueError(f"the contrastive rule needs pairs: expected at least 2 samples per process, got a global "
                         f"batch of {cfg.batch_size} over {world_size()} processes")
    x_train, y_train, x_test, y_test = data if data is not None else load_normalised(cfg.dataset, dev, data_dir)
    torch.manual_seed(cfg.seed)
    train_idx, val = holdout(cfg, x_train, y_train)
    train_idx = train_idx[:_cut(len(train_idx), world_size())]
    lead = rank() == 0
    # "lda" reads the hidden layers of the random-features control, in eval mode (they never learn).
    built = TrainConfig(**{**asdict(cfg), "learner": "random" if learner == "lda" else learner})
    model, single = build(built, tuple(x_train.shape[1:]), int(y_train.max()) + 1, dev)
    extra = {"learner": learner, "world_size": world_size(), "train_samples": len(train_idx)}
    if data is None:  # what the run read (path, size, sha256), as hebbedge.train.run records it
        extra["data"] = data_record(cfg.dataset, data_dir)
    if learner == "lda":
        history, model, extra["reduced_bytes_per_sync"] = _fit_readout(model, x_train[train_idx], y_train[train_idx], cfg, val, (x_test, y_test))
        state = {"model": model.state_dict()}
    else:
        if isinstance(single, HebbianLearner):  # (build's own learner is not used: this one reduces)
            distributed = hebbian_learner(model, cfg, DistributedHebbianLearner)
        else:
            distributed = distributed_backprop(model, learner, lr=cfg.lr, weight_decay=cfg.weight_decay)
        extra["reduced_bytes_per_step"] = reduced_bytes(distributed)
        sharded = ShardedLearner(distributed, model)
        epoch_done = None if on_epoch is None or not lead else (
            lambda fit_state: on_epoch({**summary(built, dev, fit_state["history"], None), **extra}))
        history = fit(sharded, x_train[train_idx], y_train[train_idx], cfg.epochs, cfg.batch_size, val, cfg.seed,
                      progress and lead, desc=learner, test=(x_test, y_test), on_epoch=epoch_done)
        state = sharded.state_dict()
    if lead and checkpoint is not None:
        save_checkpoint(checkpoint, {"config": asdict(built), "history": history, "learner": state})
    return {**summary(built, dev, history, evaluate(model, x_test, y_test)), **extra}


def _fit_readout(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, val, test) -> tuple[list[dict], nn.Module, int]:
    """One pass of the LDA readout over the training set (later epochs would only count each sample
    again), synced once at the end. Returns (history, the features-and-readout model, bytes per sync)."""
    start = time.time()
    hidden = model[:-1]
    width = [m for m in hidden.modules() if isinstance(m, HebbLayer)][-1].weight.shape[0]
    learner = DistributedReadout(hidden, LDAReadout(width, int(y.max()) + 1).to(x.device))
    for i in range(0, len(x), cfg.batch_size):
        xb, yb = x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]
        rows = shard_rows(len(yb))
        learner.step(xb[rows], yb[rows])
    learner.sync()
    record = {"epoch": 1, "train_loss": float("nan"), "seconds": time.time() - start}
    if val is not None:
        record["val_acc"] = evaluate(learner.model, *val)
    record["test_acc"] = evaluate(learner.model, *test)
    return [record], learner.model, reduced_bytes(learner)


def main(argv: list[str] | None = None) -> None:
    """``torchrun --nproc-per-node R -m hebbedge.distributed mnist --learner hebbian|random|adam|sgd|lda ...``"""
    d = TrainConfig()  # the defaults, written once in the shared schema
    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node R -m hebbedge.distributed",
                                description="i.i.d. training across processes; --batch-size is the global batch.")
    p.add_argument("dataset", choices=("mnist", "fashion-mnist"))
    p.add_argument("--learner", default="hebbian", choices=LEARNERS)
    p.add_argument("--arch", default=d.arch, choices=("linear", "conv"))
    p.add_argument("--widths", type=int, nargs="+", default=list(d.widths), help="linear: hidden widths")
    p.add_argument("--width-factor", type=int, default=d.width_factor, help="conv: the width factor f (1, 2 or 4)")
    p.add_argument("--epochs", type=int, default=1, help="as hebbedge train mnist; the thesis schedule is 100")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="the global batch, split evenly over the processes")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--val-size", type=int, default=d.val_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eta", type=float, default=d.eta)
    p.add_argument("--no-momentum", action="store_true")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--c-lr", type=float, default=d.c_lr)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (each rank takes cuda:LOCAL_RANK)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, required=True, help="folder for result.json and checkpoint.pt (written by rank 0)")
    a = p.parse_args(argv)
    if not launched():
        sys.exit("error: start it with torchrun, e.g. torchrun --nproc-per-node 2 -m hebbedge.distributed mnist --out DIR")
    cfg = TrainConfig(dataset=a.dataset, learner="random" if a.learner == "lda" else a.learner, arch=a.arch,
                      widths=tuple(a.widths), width_factor=a.width_factor,
                      epochs=a.epochs, batch_size=a.batch_size, train_size=a.train_size, val_size=a.val_size,
                      seed=a.seed, eta=a.eta, momentum=not a.no_momentum, label_smoothing=a.label_smoothing,
                      c_lr=a.c_lr, lr=a.lr)
    try:
        record = run(cfg, a.device, a.data_dir, checkpoint=a.out / "checkpoint.pt", learner=a.learner,
                     on_epoch=lambda r: save_json(a.out / "result.json", r))
        if rank() == 0:
            save_json(a.out / "result.json", record)
            print(f"{a.dataset} ({a.learner}, {world_size()} processes, global batch {cfg.batch_size}): test accuracy "
                  f"{100 * record['test_acc']:.2f}%; {a.out / 'result.json'}")
    except (ValueError, FileExistsError, DataNotFoundError) as err:
        sys.exit(f"error: {err}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
