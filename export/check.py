"""`hebbedge edge check`: the learning cycle of one model directory on every runtime and precision.

For each runtime, a copy of the directory learns the `data` files in order (one pass, batch 64, no
shuffling), is saved and loaded again, and then every precision variant predicts the `eval` files.
Each row reports agreement with ONNX Runtime fp32 after the same learning (the reference), the
accuracy on each eval file (the final row of the accuracy matrix when the eval files are a stream's
test experiences), and, unless skipped, latency, peak memory and file size. Torch is not needed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from hebbedge.export import node, runtimes
from hebbedge.export.edge import EdgeError, EdgeModel, load_arrays

REFERENCE = ("onnxruntime", "fp32")


def all_runtimes() -> list[str]:
    return runtimes.available() + (["onnxruntime-node"] if node.available() else [])


def _learned_copy(model_dir: Path, runtime: str, data: list[Path], work: Path) -> Path:
    copy = work / runtime
    shutil.copytree(model_dir, copy)
    if not data:
        return copy
    if runtime == "onnxruntime-node":
        node.run_client(["learn", str(copy), *map(str, data), "--batch-size", "64"])
        return copy
    model = EdgeModel(copy, runtime)
    for path in data:
        x, y = load_arrays(path)
        if y is None:
            raise EdgeError(f"{path}: learning needs labels (array 'y')")
        model.learn(x, y, batch_size=64, shuffle_seed=None)
    model.save()
    return copy


def _logits(copy: Path, runtime: str, precision: str, images: list[np.ndarray], files: list[Path], work: Path) -> list[np.ndarray]:
    if runtime == "onnxruntime-node":
        from safetensors.numpy import load_file

        out = []
        for k, path in enumerate(files):
            target = work / f"logits-{runtime}-{precision}-{k}.safetensors"
            node.run_client(["predict", str(copy), str(path), "--precision", precision, "--out", str(target)])
            out.append(load_file(str(target))["logits"])
        return out
    model = EdgeModel(copy, runtime, precision)
    return [model.logits(x) for x in images]


def _relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference| over the classes seen (a class never seen scores about
    -1e30 in both, which would make any error look like zero)."""
    seen = np.abs(reference) < 1e29
    return float(np.abs(ours - reference)[seen].max() / max(np.abs(reference[seen]).max(), 1e-30)) if seen.any() else 0.0


def check(model_dir: str | Path, data: list[Path], evals: list[Path], names: list[str] | None = None,
          latency: bool = True, repeats: int = 20, progress=print) -> dict:
    """The matrix as {"rows": [...], "eval": [...], "data": [...]}; a runtime that fails gets its error in its rows."""
    from hebbedge.export.latency import file_sizes, measure

    model_dir = Path(model_dir)
    names = names or all_runtimes()
    manifest = EdgeModel(model_dir).manifest
    precisions = ["fp32", *manifest["variants"]]
    loaded = [load_arrays(p) for p in evals]
    images, labels = [x for x, _ in loaded], [y for _, y in loaded]
    sizes = file_sizes(model_dir)
    shared = sum(size for name, size in sizes.items() if not name.startswith("predict"))
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        order = [REFERENCE[0]] + [n for n in names if n != REFERENCE[0]]
        for runtime in order:
            progress(f"{runtime}: learning {len(data)} file(s), predicting {len(evals)} ...")
            try:
                copy = _learned_copy(model_dir, runtime, data, work)
                timing = measure(copy, runtime, repeats) if latency else {}
            except (EdgeError, RuntimeError) as err:
                rows += [{"runtime": runtime, "precision": p, "error": str(err)} for p in precisions]
                continue
            for precision in precisions:
                row = {"runtime": runtime, "precision": precision}
                try:
                    logits = _logits(copy, runtime, precision, images, evals, work)
                except (EdgeError, RuntimeError) as err:
                    rows.append({**row, "error": str(err)})
                    continue
                if (runtime, precision) == REFERENCE:
                    reference = logits
                if reference is not None:
                    row["agreement"] = float(np.mean(np.concatenate([a.argmax(1) == b.argmax(1) for a, b in zip(logits, reference)])))
                    row["max_logit_error"] = max(_relative_error(a, b) for a, b in zip(logits, reference))
                if all(y is not None for y in labels):
                    row["accuracy"] = [float((lg.argmax(1) == y).mean()) for lg, y in zip(logits, labels)]
                    row["average"] = float(np.mean(row["accuracy"]))
                if timing:
                    row["predict_ms"] = timing["predict_ms"].get(precision)
                    row.update({k: timing.get(k) for k in ("learn_ms", "refresh_ms", "peak_rss_mb")})
                predict_file = manifest["graphs"]["predict"]["file"] if precision == "fp32" else manifest["variants"][precision]["file"]
                row["size_mb"] = (shared + sizes[predict_file]) / 1e6
                rows.append(row)
    return {"model_dir": str(model_dir), "data": list(map(str, data)), "eval": list(map(str, evals)), "rows": rows,
            "exporter_accuracy": {p: v.get("accuracy") for p, v in manifest["variants"].items()}}


def markdown(result: dict) -> str:
    """The matrix as a Markdown table (one row per runtime and precision)."""
    def cell(value, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    lines = ["| runtime | precision | agrees with ORT fp32 | max logit error | final row (%) | average (%) | "
             "predict b1 (ms) | learn b64 (ms) | refresh (ms) | peak RSS (MB) | files (MB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['runtime']} | {r['precision']} | error: {r['error'][:120]} |" + " |" * 8)
            continue
        acc = " / ".join(f"{100 * a:.2f}" for a in r["accuracy"]) if "accuracy" in r else "—"
        agree = f"{100 * r['agreement']:.2f}%" if "agreement" in r else "—"
        lines.append(f"| {r['runtime']} | {r['precision']} | {agree} | {cell(r.get('max_logit_error'), '.1e')} | {acc} | "
                     f"{cell(100 * r['average'] if 'average' in r else None, '.2f')} | {cell(r.get('predict_ms'), '.3f')} | "
                     f"{cell(r.get('learn_ms'), '.2f')} | {cell(r.get('refresh_ms'), '.1f')} | {cell(r.get('peak_rss_mb'), '.0f')} | "
                     f"{r['size_mb']:.2f} |")
    return "\n".join(lines)
