"""Merge the learned states of several devices that run one exported model (`hebbedge edge merge`; no torch).

The LDA readout's learned state (per class: count, mean; one pooled within-class scatter) is a set of
sufficient statistics, so merging is exact: the merged state is the state of one device that learned
all the devices' data. Per class c over devices k, with n_c = sum_k n_k,c and mu_c the count-weighted mean,

    scatter = sum_k scatter_k + sum_k sum_c n_k,c (mu_k,c - mu_c)(mu_k,c - mu_c)^T,

computed here as repeated pairwise Chan merges in float64 (``chan_merge``), each term a sum of squares of
centred values, and rounded to float32 once at the end: the merged float32 state is the float64 merge of
the inputs, correctly rounded. Devices that all started from one exported state each count it; ``base``
(that state) is then removed from each device's state before the merge (``chan_split``) so it counts once.

A frozen-C Hebbian network has no such statistics: its weights are the end of a trajectory, and the
average of trajectories is not the trajectory of the union. ``merge_states`` averages W and M weighted by
sample counts (which the state does not record, so they come from the caller, or are equal) and says
that the result is approximate.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hebbedge.export.edge import STATE_FILE, EdgeError, EdgeModel, read_manifest, read_state

READOUT_LEARNED = ("count", "mean", "scatter")

Stats = tuple[np.ndarray, np.ndarray, np.ndarray]  # count [C], mean [C, d], scatter [d, d], float64


def chan_merge(a: Stats, b: Stats) -> Stats:
    """The statistics of the union of two disjoint sets of samples (Chan, Golub & LeVeque, per class)."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    safe = np.maximum(n, 1)  # a class neither saw keeps count 0 and mean 0
    delta = mb - ma
    mean = ma + (nb / safe)[:, None] * delta
    scatter = sa + sb + delta.T @ ((na * nb / safe)[:, None] * delta)
    return n, mean, scatter


def chan_split(total: Stats, part: Stats) -> Stats:
    """The statistics of `total` less the samples of `part` (a subset of them): ``chan_merge`` solved for b."""
    (n, mean, scatter), (na, ma, sa) = total, part
    nb = n - na
    if (nb < 0).any():
        raise EdgeError("a device's state has fewer samples of a class than the base state; "
                        "--base must be the state every device started from")
    safe = np.maximum(nb, 1)
    mb = np.where((nb > 0)[:, None], (n[:, None] * mean - na[:, None] * ma) / safe[:, None], 0.0)
    delta = mb - ma
    sb = scatter - sa - delta.T @ ((na * nb / np.maximum(n, 1))[:, None] * delta)
    return nb, mb, sb


def _stats(state: dict[str, np.ndarray]) -> Stats:
    return tuple(state[k].astype(np.float64) for k in READOUT_LEARNED)  # type: ignore[return-value]


def merge_readout(states: list[dict[str, np.ndarray]], base: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The exact merge of readout states (float32 in, float32 out, float64 between); `base` counted once."""
    parts = [_stats(s) for s in states]
    if base is not None:
        origin = _stats(base)
        parts = [origin] + [chan_split(p, origin) for p in parts]
    merged = parts[0]
    for part in parts[1:]:
        merged = chan_merge(merged, part)
    return {k: v.astype(np.float32) for k, v in zip(READOUT_LEARNED, merged)}


def average_hebbian(states: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    """The weighted average of every state tensor (W_i, M_i), in float64, rounded to float32."""
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    return {k: sum(wk * s[k].astype(np.float64) for wk, s in zip(w, states)).astype(np.float32) for k in states[0]}


@dataclass
class Merged:
    """What ``merge_states`` did: the new learned tensors, whether they are exact, and a line saying how."""
    state: dict[str, np.ndarray]
    exact: bool
    how: str
    weights: list[float] = field(default_factory=list)


def merge_states(kind: str, states: list[dict[str, np.ndarray]], base: dict[str, np.ndarray] | None = None,
                 weights: list[float] | None = None) -> Merged:
    """Merge the learned states of one model's devices (see the module docstring)."""
    if kind == "readout":
        if weights is not None:
            raise EdgeError("--weights applies to Hebbian states only; a readout's state carries its own sample counts")
        how = "exact: counts added, means count-weighted, scatters merged the Chan way"
        return Merged(merge_readout(states, base), True, how + (" (the base state counted once)" if base is not None else ""))
    if kind == "hebbian":
        if base is not None:
            raise EdgeError("--base applies to readout states only")
        if weights is None:
            weights, source = [1.0] * len(states), "equal weights (the state records no sample counts; give them with --weights)"
        else:
            if len(weights) != len(states) or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise EdgeError(f"--weights needs {len(states)} non-negative sample counts, one per directory, not all 0; got {weights}")
            source = "weights " + ", ".join(f"{w:g}" for w in weights) + " (--weights)"
        return Merged(average_hebbian(states, weights), False, f"APPROXIMATE: weighted average of W and M, {source}", list(weights))
    raise EdgeError(f"a {kind!r} model keeps no learned state; only readout and Hebbian (frozen-C) exports can be merged")


def _open_state(model_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    manifest = read_manifest(model_dir)
    state = read_state(model_dir / STATE_FILE, manifest["model_id"]) if manifest["state"] else {}
    missing = [name for name in manifest["state"] if name not in state]
    if missing:
        raise EdgeError(f"{model_dir / STATE_FILE}: no tensor(s) {', '.join(missing)}; expected {', '.join(manifest['state'])}")
    return manifest, state


def merge_dirs(dirs: list[Path], out: Path, base: Path | None = None, weights: list[float] | None = None) -> Merged:
    """`hebbedge edge merge`: merge the states of model directories `dirs` into `out`.

    All directories must hold one model (same model id, hence the same graphs and features) and every
    state tensor. `out` is either new (a copy of the first directory, renamed into place whole) or a
    directory of the same model, whose state file alone is replaced (atomically, like a device's save).
    """
    if len(dirs) < 2:
        raise EdgeError(f"merge needs at least two model directories, got {len(dirs)}")
    opened = [_open_state(Path(d)) for d in dirs]
    first, _ = opened[0]
    for d, (manifest, _) in zip(dirs[1:], opened[1:]):
        if manifest["kind"] != first["kind"]:
            raise EdgeError(f"{d}: a {manifest['kind']} model; {dirs[0]} is a {first['kind']} model: only states of one model merge")
        if manifest["model_id"] != first["model_id"]:
            raise EdgeError(f"{d}: model {manifest['model_id'][:12]}, but {dirs[0]} is model {first['model_id'][:12]}: "
                            "states of different models (other features or another export) cannot be merged")
    learned = first["graphs"]["learn"]["outputs"] if "learn" in first["graphs"] else []
    base_state = None
    if base is not None:
        base_manifest, base_state = _open_state(Path(base))
        if base_manifest["model_id"] != first["model_id"]:
            raise EdgeError(f"{base}: model {base_manifest['model_id'][:12]}, not {first['model_id'][:12]}: the base must be this model's export")
        base_state = {k: base_state[k] for k in learned}
    merged = merge_states(first["kind"], [{k: s[k] for k in learned} for _, s in opened], base_state, weights)
    out = Path(out)
    if out.exists():
        manifest = read_manifest(out)
        if manifest["model_id"] != first["model_id"]:
            raise EdgeError(f"{out}: exists and holds model {manifest['model_id'][:12]}, not {first['model_id'][:12]}; pick a new --out")
        write_learned(out, merged.state)
        return merged
    # A new directory appears whole or not at all: built beside its destination, then renamed.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        target = staging / "model"
        shutil.copytree(dirs[0], target, ignore=shutil.ignore_patterns(f".{STATE_FILE}.*.tmp"))
        write_learned(target, merged.state)
        os.rename(target, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return merged


def write_learned(model_dir: Path, learned: dict[str, np.ndarray]) -> None:
    """Put the learned tensors into the directory's state, solve its classifier again with its own refresh
    graph (readouts), and save atomically."""
    model = EdgeModel(model_dir)
    model.state.update(learned)
    model.refresh()
    model.save()
