"""CPU latency and file size: PyTorch eager vs ONNX Runtime fp32 vs int8, measured side by side."""

from __future__ import annotations

import io
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from hebbedge.export.onnx import Inference, export_run, load_run


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


@torch.no_grad()
def latency_rows(eager: torch.nn.Module, sessions: dict[str, ort.InferenceSession], in_shape: tuple[int, ...],
                 batches: tuple[int, ...], repeats: int) -> list[dict]:
    """Median ms of the eager module and of each session on the same random images, per batch size."""
    rows = []
    for batch in batches:
        x = np.random.default_rng(0).random((batch, *in_shape), dtype=np.float32)
        xt = torch.from_numpy(x)
        row = {"batch": batch, "pytorch eager": _median_ms(lambda: eager(xt), repeats)}
        for name, sess in sessions.items():
            row[name] = _median_ms(lambda s=sess: s.run(None, {"images": x}), repeats)
        rows.append(row)
    return rows


@torch.no_grad()
def measure(run_dir: str | Path, out_dir: str | Path, batches: tuple[int, ...] = (1, 64), repeats: int = 50) -> dict:
    """Export `run_dir` (with int8) to `out_dir` and time all three on the same random inputs."""
    out = Path(out_dir)
    meta = export_run(run_dir, out, int8=True)
    model, info = load_run(run_dir)
    eager = Inference(model, info["mean"], info["std"]).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    sessions = {name: ort.InferenceSession(str(out / file), providers=["CPUExecutionProvider"])
                for name, file in (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", meta["int8"]))}
    rows = latency_rows(eager, sessions, tuple(info["in_shape"]), batches, repeats)
    sizes = {"pytorch eager": buf.getbuffer().nbytes, "onnxruntime fp32": os.path.getsize(out / "model.onnx"),
             "onnxruntime int8": os.path.getsize(out / meta["int8"])}
    return {"run": str(run_dir), "latency_ms": rows, "file_bytes": sizes, "repeats": repeats,
            "threads": {"torch": torch.get_num_threads()}, "cpu": platform.processor() or platform.machine(),
            "onnxruntime": ort.__version__, "torch": torch.__version__}


def markdown(result: dict) -> str:
    names = ["pytorch eager", "onnxruntime fp32", "onnxruntime int8"]
    lines = ["| runtime | " + " | ".join(f"batch {r['batch']} (ms)" for r in result["latency_ms"]) + " | file size |",
             "| --- |" + " --- |" * (len(result["latency_ms"]) + 1)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{r[n]:.3f}" for r in result["latency_ms"])
                     + f" | {result['file_bytes'][n] / 1e6:.2f} MB |")
    return "\n".join(lines)
