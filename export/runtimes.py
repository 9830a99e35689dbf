"""The ONNX runtimes a model directory runs on from Python, behind one call: ``open_graph(runtime, path)``
returns a function from a dict of named numpy inputs to the list of outputs.

None of these imports torch. Each runtime is used the way a user would: its default settings
(OpenVINO's CPU plugin picks its own inference precision, for example), the CPU device.
Node's ONNX Runtime runs through the JavaScript client in export/js (see ``hebbedge.export.node``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np

Graph = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class RuntimeFailure(RuntimeError):
    """A runtime could not load or run a graph; the message names the runtime and the file."""


def _onnxruntime(path: Path) -> Graph:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def _openvino(path: Path) -> Graph:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    names = [o.get_any_name() for o in compiled.outputs]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = compiled(feeds)
        return [np.asarray(result[name]) for name in names]

    return run


def _tract(path: Path) -> Graph:
    import tract

    model = tract.onnx().load(str(path)).into_model()
    names = [model.input_name(i) for i in range(model.input_count())]
    runnable = model.into_runnable()
    return lambda feeds: [t.to_numpy() for t in runnable.run([feeds[name] for name in names])]


def _reference(path: Path) -> Graph:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(path))
    return lambda feeds: [np.asarray(o) for o in evaluator.run(None, feeds)]


RUNTIMES: dict[str, tuple[str, Callable[[Path], Graph]]] = {
    "onnxruntime": ("onnxruntime", _onnxruntime),
    "openvino": ("openvino", _openvino),
    "tract": ("tract", _tract),
    "onnx-reference": ("onnx", _reference),
}


def available() -> list[str]:
    """The Python runtimes installed here, in the order of RUNTIMES."""
    return [name for name, (module, _) in RUNTIMES.items() if importlib.util.find_spec(module) is not None]


def open_graph(runtime: str, path: str | Path) -> Graph:
    """Load the ONNX file at `path` with `runtime`; errors name both."""
    if runtime not in RUNTIMES:
        raise RuntimeFailure(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    module, load = RUNTIMES[runtime]
    if importlib.util.find_spec(module) is None:
        raise RuntimeFailure(f"runtime {runtime!r} is not installed (pip install {module})")
    try:
        graph = load(Path(path))
    except Exception as err:  # each runtime raises its own types for files it cannot load
        raise RuntimeFailure(f"{runtime} cannot load {path}: {err.__class__.__name__}: {str(err).strip()[:300]}") from None

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return graph(feeds)
        except Exception as err:
            raise RuntimeFailure(f"{runtime} failed running {Path(path).name}: {err.__class__.__name__}: "
                                 f"{str(err).strip()[:300]}") from None

    return run
