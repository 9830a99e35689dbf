"""Latency, memory and size of a model directory on every runtime: batch-1 predict per precision,
a batch-64 learning step, the classifier refresh, peak resident memory.

Each runtime is measured in a process of its own (``python -m hebbedge.export.latency``, or the
JavaScript client's ``bench`` for Node), so its peak memory is its own: the process's maximum
resident set, which includes the interpreter (about 30-60 MB for Python with numpy, 40-50 MB for Node).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

BATCH_LEARN = 64


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def latency_rows(eager, sessions: dict, in_shape: tuple[int, ...], batches: tuple[int, ...], repeats: int) -> list[dict]:
    """Median ms of a PyTorch module and of each ONNX Runtime session on the same random images, per batch size."""
    import torch

    rows = []
    for batch in batches:
        x = np.random.default_rng(0).random((batch, *in_shape), dtype=np.float32)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            row = {"batch": batch, "pytorch eager": _median_ms(lambda: eager(xt), repeats)}
        for name, sess in sessions.items():
            row[name] = _median_ms(lambda s=sess: s.run(None, {"images": x}), repeats)
        rows.append(row)
    return rows


def measure_here(model_dir: str | Path, runtime: str, repeats: int) -> dict:
    """Time the cycle of `model_dir` on `runtime` in this process (on a copy of the state: nothing is saved)."""
    from hebbedge.export.edge import EdgeModel

    model = EdgeModel(model_dir, runtime)
    rng = np.random.default_rng(0)
    shape = model.input_shape
    one = rng.integers(0, 256, (1, *shape), dtype=np.uint8)
    result = {"runtime": runtime, "predict_ms": {}}
    for precision in ["fp32", *model.manifest["variants"]]:
        variant = model if precision == "fp32" else EdgeModel(model_dir, runtime, precision)
        result["predict_ms"][precision] = _median_ms(lambda v=variant: v.logits(one), repeats)
    if model.can_learn:
        x = rng.integers(0, 256, (BATCH_LEARN, *shape), dtype=np.uint8)
        y = np.arange(BATCH_LEARN) % model.n_classes
        images, labels = model.images(x), model.labels(y, BATCH_LEARN)
        result["learn_ms"] = _median_ms(lambda: model.step(model.state, images, labels), max(3, repeats // 5))
        if "refresh" in model.graphs:
            result["refresh_ms"] = _median_ms(model.refresh, max(3, repeats // 10))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def measure(model_dir: str | Path, runtime: str, repeats: int = 50) -> dict:
    """``measure_here`` in a fresh process (Python runtimes) or the JavaScript client's bench (Node)."""
    if runtime == "onnxruntime-node":
        from hebbedge.export.node import run_client

        return {"runtime": runtime, **json.loads(run_client(["bench", str(model_dir), "--repeats", str(repeats)]))}
    done = subprocess.run([sys.executable, "-m", "hebbedge.export.latency", str(model_dir), runtime, str(repeats)],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"latency on {runtime} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def file_sizes(model_dir: str | Path) -> dict[str, int]:
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
    names = list(manifest["files"]) + (["state.safetensors"] if manifest["state"] else [])
    return {name: os.path.getsize(Path(model_dir) / name) for name in names}


if __name__ == "__main__":  # python -m hebbedge.export.latency DIR RUNTIME REPEATS
    print(json.dumps(measure_here(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
