"""Golden runs: a short fixed-seed run of every learner on made-up data, fingerprinted.

`tests/golden.json` holds the fingerprints recorded before the architecture refactor (issue 16);
`tests/test_golden.py` reruns the same commands and requires the same final weights and
accuracies (within its RTOL, which allows for other CPUs' kernels). Regenerate only when a change of results is intended:

    python tests/golden.py   # rewrites tests/golden.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from tinydata import write_tiny_mnist  # noqa: E402

GOLDEN = Path(__file__).with_name("golden.json")
STREAM_LEARNERS = ("hebbian,random,softhebb,swta,hpca,wta,hybrid-bottom-hebb,hybrid-top-hebb,"
                   "naive,ewc,si,lwf,replay,joint,slda,random-lda")
TINY = ["--device", "cpu", "--seeds", "1"]
IID = ["--epochs", "1", "--val-size", "20", "--device", "cpu"]
THREADS = 2  # torch threads of every golden run (the machine that recorded them had 2 cores)

# name -> (CLI arguments, with OUT standing for the run folder)
RUNS: dict[str, list[str]] = {
    # The baselines' strengths as recorded, before `hebbedge tune` chose the config's (issue 18).
    "compare-split-mnist": ["compare", "split-mnist", "--learners", STREAM_LEARNERS, *TINY,
                            "--set", "model.widths=[16,16]", "--set", "backprop.ewc_lambda=100.0", "--set", "backprop.si_lambda=1.0",
                            "--set", "backprop.lwf_alpha=1.0", "--set", "backprop.replay_mem_size=500", "--out", "OUT"],
    "compare-softhebb-lda": ["compare", "split-mnist-from-fmnist", "--learners", "softhebb-lda,random-lda", *TINY,
                             "--set", "readout.channels=4", "--out", "OUT"],
    # The frozen-C step's fast forms: with momentum (C folded into M) and without (M as its factors).
    "train-stream-freeze-c": ["train", "split-mnist", "--learner", "hebbian", "--freeze-c-after", "1",
                              "--device", "cpu", "--set", "model.widths=[16,16]", "--out", "OUT"],
    "train-stream-freeze-c-no-momentum": ["train", "split-mnist", "--learner", "hebbian", "--freeze-c-after", "1",
                                          "--device", "cpu", "--set", "model.widths=[16,16]",
                                          "--set", "hebbian.momentum=false", "--out", "OUT"],
    **{f"train-mnist-{learner}": ["train", "mnist", "--learner", learner, "--widths", "16,16", *IID, "--out", "OUT"]
       for learner in ("hebbian", "random", "adam", "sgd")},
    "train-mnist-hebbian-no-momentum": ["train", "mnist", "--learner", "hebbian", "--widths", "16,16", "--no-momentum",
                                        *IID, "--out", "OUT"],
    "train-mnist-conv-hebbian": ["train", "mnist", "--learner", "hebbian", "--arch", "conv", "--width-factor", "1",
                                 "--train-size", "64", *IID, "--out", "OUT"],
}


def _tensors(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list, by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(_tensors(value, f"{prefix}/{key}" if prefix else str(key)))
    return out


def _stats(t: torch.Tensor) -> list[float]:
    """sum, L2 norm and the first three entries, in float64."""
    t = t.detach().to(torch.float64).flatten()
    return [t.sum().item(), t.norm().item(), *t[:3].tolist()] if t.numel() else []


def fingerprint(out: Path) -> dict[str, object]:
    """The final weights (as statistics per tensor) and accuracies of every run under `out`."""
    found: dict[str, object] = {}
    for model in sorted(out.rglob("model.pt")):  # stream runs: the model's state dict
        key = model.parent.relative_to(out).as_posix()
        found[f"{key}:weights"] = {k: _stats(v) for k, v in torch.load(model, weights_only=True).items()}
        found[f"{key}:accuracy"] = json.loads((model.parent / "metrics.json").read_text())["protocols"]
    result = out / "result.json"
    if result.exists():  # i.i.d. runs: the learner's state in the per-epoch checkpoint, and the curve
        state = torch.load(out / "checkpoint.pt", weights_only=False)["learner"]
        found["weights"] = {k: _stats(v) for k, v in _tensors(state).items()}
        found["accuracy"] = [[e.get("val_acc"), e.get("test_acc")] for e in json.loads(result.read_text())["history"]]
    return found


def run_all(tmp: Path) -> dict[str, dict[str, object]]:
    """Run every golden command in a fresh folder under `tmp`; their fingerprints by name."""
    from hebbedge.cli.app import app

    data = tmp / "data"
    write_tiny_mnist(data)
    write_tiny_mnist(data, name="fashion-mnist", seed=1)
    runner, prints = CliRunner(), {}
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)  # GEMM sums depend on the thread count; the recording used this many
    try:
        for name, args in RUNS.items():
            out = tmp / name
            result = runner.invoke(app, [str(out) if a == "OUT" else a for a in args] + ["--data-dir", str(data)])
            if result.exit_code != 0:
                raise RuntimeError(f"{name}: exit {result.exit_code}\n{result.output}")
            prints[name] = fingerprint(out)
    finally:
        torch.set_num_threads(threads)
    return prints


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(run_all(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
