"""kill -9 torture of `hebbedge train` on a stream: kill the run at random moments, check that every
reader of its folder sees either the old or the new state, resume, and repeat until it finishes;
the finished run must equal an uninterrupted one (same metrics, same weights).

tests/test_torture.py runs it for a few seconds; a longer run is a command:

    python tests/torture_train.py --seconds 600 --folder /tmp/torture
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tinydata, when run as a command

import torch  # noqa: E402

from hebbedge.continual import read_metrics, read_run_checkpoint  # noqa: E402
from hebbedge.files import load_torch, read_json  # noqa: E402
from tinydata import tiny_options, write_tiny_mnist  # noqa: E402

RUN_FILES = {"config.json", "checkpoint.pt", "model.pt", "metrics.json", "accuracy_matrix.png", "experience_accuracy.png", ".lock"}


def _train(args: list[str], log: str) -> None:
    """A child process: `hebbedge ARGS`, its output appended to `log`."""
    import threading

    from tqdm import tqdm

    from hebbedge.cli.app import app

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)  # tiny runs; the machine is shared
    tqdm.set_lock(threading.RLock())  # tqdm's default lock is a named semaphore, which a kill would leak
    app(args, prog_name="hebbedge")


def _complete_png(path: Path) -> bool:
    raw = path.read_bytes()
    return raw.startswith(b"\x89PNG\r\n\x1a\n") and raw.endswith(b"IEND\xaeB`\x82")


def check_readers(out: Path, reference: Path) -> str:
    """Read `out` as every reader does; AssertionError unless each file is absent or whole and agrees
    with the uninterrupted run in `reference`. Returns the state seen, in words."""
    if not out.exists():
        return "no folder"
    names = {p.name for p in out.iterdir()}
    stray = {n for n in names - RUN_FILES if not (n.startswith(".") and n.endswith(".tmp"))}
    assert not stray, f"unexpected files {stray} in {out}"
    if "config.json" in names:
        record, expected = read_json(out / "config.json", "a run record"), read_json(reference / "config.json", "a run record")
        assert (record["run"], record["config"]) == (expected["run"], expected["config"])
    state = "record" if "config.json" in names else "no record"
    if "checkpoint.pt" in names:
        state = f"checkpoint after experience {read_run_checkpoint(out / 'checkpoint.pt')['next_experience']}"
    if "model.pt" in names:  # written once, with the final weights, just before the metrics
        weights, expected = load_torch(out / "model.pt", "weights"), load_torch(reference / "model.pt", "weights")
        assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in weights)
        state = "final weights"
    if "metrics.json" in names:
        assert "model.pt" in names
        assert read_metrics(out / "metrics.json")["protocols"] == read_metrics(reference / "metrics.json")["protocols"]
        state = "finished"
    for png in names & {"accuracy_matrix.png", "experience_accuracy.png"}:
        assert _complete_png(out / png), png
    return state


def torture(folder: Path, seconds: float, seed: int = 0) -> dict:
    """Kill trials for about `seconds` (each one run to its end); returns counts of what was seen."""
    folder.mkdir(parents=True, exist_ok=True)
    data = write_tiny_mnist(folder / "data", n_train=800, n_test=100)
    # 10 steps per experience, so that kills land in training and checkpointing as well as in start-up and plotting;
    # --resume is what a user types after a crash.
    args = ["train", "split-mnist", *tiny_options(data), "--set", "stream.batch_size=16", "--resume"]
    log = str(folder / "children.log")
    ctx = multiprocessing.get_context("forkserver")  # children start in milliseconds, with all imported
    ctx.set_forkserver_preload(["torch", "hebbedge.continual", "hebbedge.plots", "hebbedge.cli.app"])
    warm_up = ctx.Process(target=int)  # waits for the forkserver's imports: not part of the timing below
    warm_up.start()
    warm_up.join()

    def start(out: Path):
        child = ctx.Process(target=_train, args=(args + ["--out", str(out)], log))
        child.start()
        return child

    reference = folder / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    began = time.monotonic()
    child = start(reference)
    child.join()
    duration = time.monotonic() - began
    assert child.exitcode == 0, f"the uninterrupted run failed; see {log}"
    rng, seen, trials = random.Random(seed), Counter(), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end or not seen["kills"]:
        out = folder / f"trial{trials}"
        shutil.rmtree(out, ignore_errors=True)
        for attempt in range(50):
            child = start(out)
            child.join(rng.uniform(0, 1.2 * duration))
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
                child.join()
                seen["kills"] += 1
                seen[check_readers(out, reference)] += 1
                continue
            assert child.exitcode == 0, f"a resumed run failed (exit {child.exitcode}); see {log}"
            break
        else:
            raise AssertionError(f"{out}: not finished after 50 attempts")
        assert check_readers(out, reference) == "finished"  # the same metrics and weights as uninterrupted
        trials += 1
        shutil.rmtree(out)
    seen["trials"] = trials
    return dict(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to keep starting trials")
    parser.add_argument("--folder", type=Path, default=Path("runs/torture"), help="scratch folder (data, runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args()
    for what, count in sorted(torture(args.folder, args.seconds, args.seed).items()):
        print(f"{count:6d}  {what}")


if __name__ == "__main__":
    main()
