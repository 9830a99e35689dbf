"""Step time and peak memory: the Hebbian learner (C training, C frozen) against backprop (SGD,
SGD with momentum, Adam) on the same architecture and batch, measured side by side in one run.

Times are medians over repeated steps after warm-up, in rounds that take every setting in turn,
all in this process. Peak memory is a step's steady state: the peak over the steps after the first
(whatever the first step allocated and kept, such as optimizer state, still counts; what it
released, such as M in a frozen step without momentum, does not), minus the memory in use before
the model was built. On a GPU that is the CUDA allocator's peak. On a CPU it is the process's peak
resident set (VmHWM, reset after the first step through /proc/self/clear_refs), in a fresh
interpreter per mode (``python -m hebbedge.benchmarks.speed``) in which the same setting already ran once and
was freed, so that library code and scratch buffers are resident before the baseline.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from hebbedge.backprop import BackpropLearner
from hebbedge.config import BackpropSection
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_conv, thesis_linear

MODES = ("c-train", "frozen", "frozen-no-momentum", "sgd", "sgd-momentum", "adam", "inference")
ARCHS = ("linear", "conv-f1", "conv-f4")


@dataclass(frozen=True)
class Setting:
    """One measured configuration: architecture, hidden width (linear net), batch, device, mode."""

    arch: str = "linear"
    width: int = 2000
    batch: int = 64
    device: str = "cpu"
    mode: str = "frozen"


def build_step(s: Setting) -> Callable[[], object]:
    """A closure running one step of `s.mode` on a fixed random batch (the model lives in it)."""
    if s.arch not in ARCHS or s.mode not in MODES:
        raise ValueError(f"unknown setting {s}; archs: {', '.join(ARCHS)}; modes: {', '.join(MODES)}")
    hebbian = s.mode in ("c-train", "frozen", "frozen-no-momentum")
    # Without momentum (the thesis' beta = 0 variant) the frozen step of a linear layer holds M = D as its
    # two factors: one GEMM into W instead of a GEMM into M and a pass over W and M. Its like-for-like
    # backprop pairing is plain SGD, as SGD with momentum 0.9 is the frozen step's (beta 0.9).
    beta = 0.0 if s.mode == "frozen-no-momentum" else 0.9
    if s.arch == "linear":
        model, in_shape = thesis_linear(widths=(s.width,) * 4, hebbian=hebbian, beta=beta), (1, 28, 28)
    else:
        model, in_shape = thesis_conv(width_factor=int(s.arch[-1]), hebbian=hebbian, beta=beta), (1, 28, 28)
    model = model.to(s.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, *in_shape, generator=g).to(s.device)
    y = (torch.arange(s.batch) % 10).to(s.device)
    if s.mode == "inference":
        model.eval()
        return torch.no_grad()(lambda: model(x))
    if hebbian:
        learner = HebbianLearner(model)
        for layer in learner.layers:  # a non-zero momentum, so that the pending update is not trivially W
            for rows in layer.row_blocks():  # by blocks: a W-sized temporary would count in the peak memory
                block = layer.momentum[rows]
                block.copy_(torch.randn(block.shape, generator=g).mul_(1e-3))
        if s.mode != "c-train":
            learner.freeze_c()
    else:
        # Plain SGD is the cheapest backprop step; SGD with momentum 0.9 keeps a buffer like the Hebbian M.
        optimizer, momentum = ("adam", 0.0) if s.mode == "adam" else ("sgd", 0.9 if s.mode == "sgd-momentum" else 0.0)
        learner = BackpropLearner(model, optimizer, lr=BackpropSection.lr, momentum=momentum)
    return lambda: learner.step(x, y)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: str, warmup: int, repeats: int, max_seconds: float = float("inf")) -> float:
    """Median over `repeats` timed calls, or fewer (at least 3) once `max_seconds` have been spent."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats and (len(times) < 3 or sum(times) < max_seconds):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return 1000 * times[len(times) // 2]


def _status_bytes(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process. (Not getrusage's ru_maxrss: a
    child started by a large parent inherits the parent's peak in it.)"""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_memory(s: Setting, steps: int = 3) -> int:
    """Bytes the model and its steps 2..`steps` added at their peak (see the module docstring)."""
    if s.device.startswith("cuda"):
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(s.device)
        step = build_step(s)
        step()
        _sync(s.device)
        torch.cuda.reset_peak_memory_stats(s.device)
        for _ in range(steps - 1):
            step()
        _sync(s.device)
        peak = torch.cuda.max_memory_allocated(s.device) - before
        del step
        return peak
    with tempfile.TemporaryFile("w+") as out:
        # A fixed mmap threshold makes glibc hand every freed buffer over 64 kB back to the system,
        # so the resident set follows the live tensors instead of the allocator's high-water mark.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        subprocess.run([sys.executable, "-m", "hebbedge.benchmarks.speed", json.dumps({**asdict(s), "steps": steps})],
                       stdout=out, check=True, env=env)
        out.seek(0)
        return json.loads(out.read())["bytes"]


def _child(arg: str) -> None:
    """The fresh interpreter of `peak_memory` on CPU: RSS before building, peak RSS over steps 2..n."""
    spec = json.loads(arg)
    steps = spec.pop("steps")
    setting = Setting(**spec)
    # The same setting once first, then freed: the code it runs (hundreds of MB of library pages,
    # touched lazily) and the libraries' scratch buffers are then resident before the baseline.
    warm = build_step(setting)
    for _ in range(steps):
        warm()
    del warm
    gc.collect()
    before = _status_bytes("VmRSS")
    step = build_step(setting)
    step()
    with open("/proc/self/clear_refs", "w") as f:  # "5": VmHWM <- VmRSS (Linux)
        f.write("5")
    for _ in range(steps - 1):
        step()
    peak = _status_bytes("VmHWM")
    print(json.dumps({"bytes": peak - before}))


def measure(settings: list[Setting], warmup: int = 3, repeats: int = 20, memory: bool = True, rounds: int = 3,
            max_seconds: float = 10.0, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per setting: median step time (ms) and, when asked, peak memory (MB).

    The settings are timed one after the other, `rounds` times over (one model alive at a time;
    a slow setting stops after `max_seconds` of timed steps per round, with at least 3 steps),
    and each row reports the median of its per-round medians: a drift of the machine's speed during
    the run then touches every mode alike.
    """
    times: dict[Setting, list[float]] = {s: [] for s in settings}
    for r in range(rounds):
        for s in settings:
            if progress:
                progress(f"round {r + 1}/{rounds}: {s.arch} width {s.width} batch {s.batch} {s.mode} on {s.device}")
            step = build_step(s)
            times[s].append(median_ms(step, s.device, warmup, repeats, max_seconds))
            del step
    rows = []
    for s in settings:
        ts = sorted(times[s])
        row = {**asdict(s), "ms": ts[len(ts) // 2], "ms_per_round": times[s]}
        if memory:
            row["peak_mb"] = peak_memory(s) / 2**20
        rows.append(row)
    return rows


def find(rows: list[dict], **key) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in key.items()))


def ratios(rows: list[dict], width: int = 2000, batch: int = 64, device: str = "cpu") -> dict:
    """Each mode of the linear net against backprop SGD: time and peak memory."""
    base = dict(arch="linear", width=width, batch=batch, device=device)
    sgd = find(rows, **base, mode="sgd")
    out = {}
    for mode in (m for m in MODES if m != "sgd"):
        r = find(rows, **base, mode=mode)
        out[f"{mode}/sgd time"] = r["ms"] / sgd["ms"]
        if "peak_mb" in r:
            out[f"{mode}/sgd peak memory"] = r["peak_mb"] / sgd["peak_mb"]
    return out


SCALING_MODES = ("c-train", "frozen", "sgd")
BATCHES = (16, 64, 256, 512)
WIDTHS = (500, 1000, 2000, 4000)


def onnx_latency(out_dir: str, repeats: int, width: int = 2000) -> list[dict]:
    """Batch-1 and batch-64 CPU latency of the linear net: PyTorch eager against ONNX Runtime."""
    import onnxruntime as ort

    from hebbedge.data import MEAN_STD
    from hebbedge.export.graphs import Predict
    from hebbedge.export.latency import latency_rows
    from hebbedge.export.onnx import export_model

    mean, std = MEAN_STD["mnist"]
    model = thesis_linear(widths=(width,) * 4).eval()
    export_model(model, (1, 28, 28), (mean,), (std,), out_dir, list(range(10)), learns=False)
    session = ort.InferenceSession(f"{out_dir}/predict.onnx", providers=["CPUExecutionProvider"])
    return latency_rows(Predict(model, (mean,), (std,)), {"onnxruntime": session}, (1, 28, 28), (1, 64), repeats)


def benchmark(devices: list[str], archs: tuple[str, ...] = ARCHS, scaling: bool = True, memory: bool = True,
              warmup: int = 3, repeats: int = 20, width: int = 2000, batch: int = 64, rounds: int = 3,
              max_seconds: float = 5.0, progress: Callable[[str], None] | None = None) -> dict:
    """Every mode on every architecture and device; the linear net's batch and width sweeps; ONNX latency.

    `width` is the linear net's hidden width and `batch` the batch of every net, except in the sweeps.
    """
    settings = {Setting(arch, width, batch, d, m) for d in devices for arch in archs for m in MODES}
    if scaling:
        settings |= {Setting(width=width, batch=b, device=d, mode=m) for d in devices for b in BATCHES for m in SCALING_MODES}
        settings |= {Setting(width=w, batch=batch, device=d, mode=m) for d in devices for w in WIDTHS for m in SCALING_MODES}
    order = sorted(settings, key=lambda s: (s.device, ARCHS.index(s.arch), s.width, s.batch, MODES.index(s.mode)))
    rows = measure(order, warmup, repeats, memory, rounds, max_seconds, progress)
    with tempfile.TemporaryDirectory() as tmp:
        latency = onnx_latency(tmp, max(repeats, 50), width)
    return {
        "width": width, "batch": batch,
        "protocol": f"median over {rounds} rounds of the median of {repeats} steps (fewer, but at least 3, past "
                    f"{max_seconds} s) after {warmup} warm-up steps; peak memory "
                    + ("over the steps after the first (CPU: peak RSS of a fresh interpreter per mode minus its RSS "
                       "before the model; CUDA: allocator peak)"
                       if memory else "not measured"),
        "environments": [environment(d) for d in devices],
        "rows": rows,
        "ratios": {d: ratios(rows, width, batch, d) for d in devices if "linear" in archs},
        "onnx_latency_ms": latency,
    }


def compare(result: dict, baseline: dict) -> list[dict]:
    """Time (and memory) of every setting measured in both runs, as result / baseline."""
    key = lambda r: tuple(r[k] for k in ("arch", "width", "batch", "device", "mode"))  # noqa: E731
    old = {key(r): r for r in baseline["rows"]}
    out = []
    for r in result["rows"]:
        if key(r) in old:
            b = old[key(r)]
            row = {**{k: r[k] for k in ("arch", "width", "batch", "device", "mode")}, "ms": r["ms"], "baseline_ms": b["ms"],
                   "time_ratio": r["ms"] / b["ms"]}
            if "peak_mb" in r and "peak_mb" in b:
                row["memory_ratio"] = r["peak_mb"] / b["peak_mb"]
            out.append(row)
    return out


def markdown(result: dict) -> str:
    """The tables of the README: step time and memory per mode, the targets, ONNX latency, scaling."""
    rows, lines, width, batch = result["rows"], [], result["width"], result["batch"]
    has_mem = "peak_mb" in rows[0]
    for env in result["environments"]:
        d = env["device"]
        lines += [f"**{env['device_name']} ({d}, {env['threads']} threads, torch {env['torch']})**", "",
                  "| net | mode | step (ms) | × SGD |" + (" peak memory (MB) | × SGD |" if has_mem else ""),
                  "| --- | --- | --- | --- |" + (" --- | --- |" if has_mem else "")]
        for arch in ARCHS:
            here = [r for r in rows if r["arch"] == arch and r["device"] == d and r["batch"] == batch and r["width"] == width]
            if not here:
                continue
            sgd = find(here, mode="sgd")
            net = f"784-{width}×4-10" if arch == "linear" else f"conv F-{arch[-1]}"
            for r in here:
                line = f"| {net}, batch {batch} | {r['mode']} | {r['ms']:.1f} | {r['ms'] / sgd['ms']:.2f} |"
                if has_mem:
                    line += f" {r['peak_mb']:.0f} | {r['peak_mb'] / sgd['peak_mb']:.2f} |"
                lines.append(line)
        lines.append("")
        for name, sweep, fixed in (("batch", BATCHES, {"width": width}), ("width", WIDTHS, {"batch": batch})):
            points = [v for v in sweep if any(r["device"] == d and r["arch"] == "linear" and r[name] == v
                                              and all(r[k] == x for k, x in fixed.items()) for r in rows)]
            if len(points) < 2:
                continue
            lines += [f"| linear net, {name} ({', '.join(f'{k} {v}' for k, v in fixed.items())}) | "
                      + " | ".join(f"{m} ms" for m in SCALING_MODES)
                      + (" | " + " | ".join(f"{m} MB" for m in SCALING_MODES) if has_mem else "") + " |",
                      "| --- |" + " --- |" * (len(SCALING_MODES) * (2 if has_mem else 1))]
            for v in points:
                sel = [find(rows, arch="linear", device=d, mode=m, **{**fixed, name: v}) for m in SCALING_MODES]
                lines.append(f"| {v} | " + " | ".join(f"{r['ms']:.1f}" for r in sel)
                             + (" | " + " | ".join(f"{r['peak_mb']:.0f}" for r in sel) if has_mem else "") + " |")
            lines.append("")
    lines += ["| ONNX Runtime vs PyTorch eager, linear net, CPU | " + " | ".join(f"batch {r['batch']}" for r in result["onnx_latency_ms"]) + " |",
              "| --- |" + " --- |" * len(result["onnx_latency_ms"])]
    for name in ("pytorch eager", "onnxruntime"):
        lines.append(f"| {name} (ms) | " + " | ".join(f"{r[name]:.3f}" for r in result["onnx_latency_ms"]) + " |")
    lines.append("| ratio | " + " | ".join(f"{r['onnxruntime'] / r['pytorch eager']:.2f}" for r in result["onnx_latency_ms"]) + " |")
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the architecture: speeds differ between machines."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else _cpu_name()
    return {"device": device, "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    _child(sys.argv[1])
