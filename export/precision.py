"""Reduced-precision copies of the predict graph, each measured before it is kept.

- ``int8``: ONNX Runtime's dynamic quantisation (int8 weights, activations quantised per batch). The
  fixed weights of a network are quantised once; a Hebbian network's weights are graph inputs that
  change on the device, so its MatMuls quantise them inside the graph at every call.
- ``fp16``: every operator in float16 (inputs and outputs stay float32).

An LDA readout's scores are large and cancel each other (in int8 such a head fell from 97% to 17%),
so its classifier (everything computed from the graph inputs weight, bias, centre) stays float32 in
every variant; only the features are reduced. Each variant's accuracy on labelled held-out data is
compared with fp32, and a variant more than ``MAX_DROP`` below it is refused unless forced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from hebbedge.files import atomic_write

PRECISIONS = ("int8", "fp16")
MAX_DROP = 0.01  # accuracy, as a fraction


class PrecisionRefused(ValueError):
    """Variants more than MAX_DROP below fp32; each entry has precision, accuracy and fp32_accuracy."""

    def __init__(self, refused: list[dict]) -> None:
        self.refused = refused
        super().__init__("; ".join(
            f"{r['precision']} refused: {100 * r['accuracy']:.2f}% against fp32 {100 * r['fp32_accuracy']:.2f}% "
            f"on {r['samples']} calibration samples (more than {100 * MAX_DROP:g} point below; --force keeps it)"
            for r in refused))


def downstream_of(model: onnx.ModelProto, inputs: set[str]) -> list[str]:
    """Names of the nodes that compute anything from the graph inputs `inputs` (in graph order)."""
    reached, nodes = set(inputs), []
    for node in model.graph.node:
        if reached.intersection(node.input):
            reached.update(node.output)
            nodes.append(node.name)
    return nodes


INTEGER_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}


def quantise_int8(src: Path, dst: Path, kind: str) -> None:
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    def write(tmp: str) -> None:
        # The exporter leaves each fixed weight behind a Transpose (W stays under its own name); the
        # pre-processing folds those, so the MatMuls see constant weights the quantiser can take.
        folded = tmp + ".folded.onnx"
        try:
            quant_pre_process(str(src), folded)
            # A readout's classifier (MatMul with the weight input) stays float32; a Hebbian net's
            # MatMuls with weight inputs are the point of the variant.
            quantize_dynamic(folded, tmp, weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"MatMulConstBOnly": kind != "hebbian"})
        finally:
            Path(folded).unlink(missing_ok=True)
        if not INTEGER_OPS.intersection(n.op_type for n in onnx.load(tmp).graph.node):
            raise ValueError(f"{src}: no operator of the predict graph could be quantised to int8; not writing an int8 copy that is float32")

    atomic_write(dst, write)


def convert_fp16(src: Path, dst: Path, kind: str) -> None:
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    blocked = downstream_of(model, {"weight", "bias", "centre"}) if kind == "readout" else []
    half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
    # keep_io_types still casts an output to float16 when its last node is blocked (float32): cast it back,
    # so the caller gets float32 logits (and a never-seen class keeps its finite UNSEEN score).
    outputs = {o.name: o for o in half.graph.output}
    for node in half.graph.node:
        if node.op_type == "Cast" and node.output[0] in outputs and node.attribute[0].i == onnx.TensorProto.FLOAT16:
            node.attribute[0].i = onnx.TensorProto.FLOAT
    for output in outputs.values():
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.checker.check_model(half, full_check=True)
    atomic_write(dst, lambda tmp: onnx.save(half, tmp))


def accuracy(path: Path, feeds: dict[str, np.ndarray], images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Accuracy of a predict graph on ONNX Runtime (the exporter's own check; `hebbedge edge check` runs the rest)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = np.concatenate([session.run(None, {"images": images[i:i + batch], **feeds})[0].argmax(1)
                           for i in range(0, len(images), batch)])
    return float((pred == labels).mean())


def calibration_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def make_variant(precision: str, out: Path, kind: str, graphs: dict, state: dict[str, np.ndarray],
                 calibration: tuple[np.ndarray, np.ndarray] | None, force: bool) -> dict:
    """Write predict.PRECISION.onnx beside predict.onnx and measure it; returns its manifest entry, or
    {"refused": True, ...} (the file removed) when it falls more than MAX_DROP below fp32 and not `force`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if calibration is None:
        raise ValueError(f"a {precision} variant is measured before it is kept: pass --calibration DATA "
                         "(labelled held-out images, e.g. a test file of `hebbedge stream-data`)")
    src, name = out / graphs["predict"]["file"], f"predict.{precision}.onnx"
    (quantise_int8 if precision == "int8" else convert_fp16)(src, out / name, kind)
    images, labels = calibration_images(calibration[0]), np.asarray(calibration[1])
    feeds = {k: state[k] for k in graphs["predict"]["inputs"] if k in state}
    result = {"precision": precision, "file": name, "samples": len(labels),
              "fp32_accuracy": accuracy(src, feeds, images, labels), "accuracy": accuracy(out / name, feeds, images, labels)}
    if result["fp32_accuracy"] - result["accuracy"] > MAX_DROP and not force:
        (out / name).unlink()
        return {**result, "refused": True}
    return result
