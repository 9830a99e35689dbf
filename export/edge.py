"""The edge runtime: predict and keep learning from a model directory, with ONNX graphs and numpy only (no torch).

A model directory (written by `hebbedge export`) holds:

- ``manifest.json``: what the directory is (``FORMAT``), the cycle's graphs with the names of their
  inputs and outputs, the precision variants with the accuracy the exporter measured, and the
  sha256 of every graph. It is written last, so it is the directory's commit point; every graph is
  checked against it when loaded, so a reader never runs a graph of another export.
- ``predict.onnx`` (+ ``predict.int8.onnx``, ``predict.fp16.onnx``), ``learn.onnx``, and for an LDA readout
  ``refresh.onnx`` (see hebbedge/export/graphs.py).
- ``state.safetensors``: the float32 state the graphs read and write. It names the model it belongs to
  (``model_id``) and carries the sha256 of its tensors. It is the only file that changes on the
  device, written to a temporary file and renamed: a reader sees the old state or the new one,
  never a mix, and a learning pass that fails keeps the old one.

The device code here only feeds tensors to the graphs and stores what they return.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hebbedge.export.runtimes import RuntimeFailure, open_graph
from hebbedge.files import atomic_write, remove_temporaries

FORMAT = "hebbedge-edge/2"
STATE_FORMAT = "hebbedge-state/1"
STATE_FILE = "state.safetensors"


class EdgeError(ValueError):
    """Bad input or a bad model directory; the message says what was expected."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order (the JS client computes the same)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{t.dtype.str}|{','.join(map(str, t.shape))}|".encode())
        digest.update(t.tobytes())
    return digest.hexdigest()


def write_state(path: str | Path, tensors: dict[str, np.ndarray], model_id: str) -> Path:
    """The state as safetensors (float32 only), with its model id and checksum; atomic."""
    from safetensors.numpy import save

    for name, t in tensors.items():
        if t.dtype != np.float32:
            raise EdgeError(f"state tensor {name!r} must be float32, got {t.dtype}")
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    blob = save(tensors, metadata={"format": STATE_FORMAT, "model_id": model_id, "sha256": tensors_digest(tensors)})
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))


def read_state(path: str | Path, model_id: str) -> dict[str, np.ndarray]:
    """The state at `path`, checked: readable, float32, of model `model_id`, checksum intact."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise EdgeError(f"{path}: missing; expected the state file that `hebbedge export` writes") from None
    except Exception as err:  # safetensors reports truncated or damaged headers with its own error type
        raise EdgeError(f"{path}: not a readable safetensors state ({str(err)[:200]})") from None
    if meta.get("format") != STATE_FORMAT:
        raise EdgeError(f"{path}: format {meta.get('format')!r}; expected {STATE_FORMAT!r}")
    if meta.get("model_id") != model_id:
        raise EdgeError(f"{path}: state of another model ({meta.get('model_id', '?')[:12]}); this directory's model is {model_id[:12]}")
    if meta.get("sha256") != tensors_digest(tensors):
        raise EdgeError(f"{path}: checksum mismatch; the state file is damaged")
    wrong = [k for k, t in tensors.items() if t.dtype != np.float32]
    if wrong:
        raise EdgeError(f"{path}: tensors {', '.join(wrong)} are not float32; expected a float32 state")
    return tensors


def read_manifest(model_dir: Path) -> dict:
    path = model_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        old = " (an export of an earlier hebbedge: export the run again)" if (model_dir / "metadata.json").exists() else ""
        raise EdgeError(f"{path}: missing; expected a model directory written by `hebbedge export`{old}") from None
    except (OSError, ValueError) as err:
        raise EdgeError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EdgeError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}; expected {FORMAT!r}")
    for key in ("kind", "input_shape", "classes", "graphs", "files", "model_id", "state"):
        if key not in manifest:
            raise EdgeError(f"{path}: no {key!r}; expected the manifest that `hebbedge export` writes")
    return manifest


class EdgeModel:
    """A model directory, loaded for inference and (when its learner keeps learning) learning.

    ``runtime`` names one of hebbedge.export.runtimes.RUNTIMES; ``precision`` picks the predict graph
    ("fp32", or a variant the export wrote: "int8", "fp16"). Learning always runs in float32.
    """

    def __init__(self, model_dir: str | Path, runtime: str = "onnxruntime", precision: str = "fp32") -> None:
        self.dir = Path(model_dir)
        self.manifest = m = read_manifest(self.dir)
        self.runtime, self.precision = runtime, precision
        self.input_shape = tuple(m["input_shape"])
        self.n_classes = len(m["classes"])
        self.graphs = m["graphs"]
        if precision != "fp32" and precision not in m.get("variants", {}):
            raise EdgeError(f"{self.dir}: no {precision} variant; this export has "
                            f"{', '.join(['fp32', *m.get('variants', {})])} (export with --{precision})")
        self._predict = self._open(m["variants"][precision]["file"] if precision != "fp32" else self.graphs["predict"]["file"])
        self._learn = self._open(self.graphs["learn"]["file"]) if "learn" in self.graphs else None
        self._refresh = self._open(self.graphs["refresh"]["file"]) if "refresh" in self.graphs else None
        self.state = read_state(self.dir / STATE_FILE, m["model_id"]) if m["state"] else {}
        for name in m["state"]:
            if name not in self.state:
                raise EdgeError(f"{self.dir / STATE_FILE}: no tensor {name!r}; expected {', '.join(m['state'])}")

    def _open(self, name: str):
        path = self.dir / name
        if not path.exists():
            raise EdgeError(f"{path}: missing; the manifest lists it")
        if sha256_file(path) != self.manifest["files"].get(name):
            raise EdgeError(f"{path}: checksum differs from manifest.json; the directory is damaged or half-written")
        try:
            return open_graph(self.runtime, path)
        except RuntimeFailure as err:
            raise EdgeError(str(err)) from None

    @property
    def can_learn(self) -> bool:
        return self._learn is not None

    def images(self, x: np.ndarray) -> np.ndarray:
        """Validate and convert images to float32 [N, C, H, W] in [0, 1]: uint8 0..255, or float in 0..1
        (never guessed: float 0..255 images would be learned from as if they were bright)."""
        shape = self.input_shape
        x = np.asarray(x)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        elif x.dtype.kind == "f":
            x = x.astype(np.float32)
            if not np.isfinite(x).all():
                raise EdgeError("images contain NaN or Inf")
            if x.size and (x.min() < 0 or x.max() > 1):
                raise EdgeError(f"float images must be in [0, 1] (got [{x.min():g}, {x.max():g}]); "
                                "images in 0..255 go as uint8")
        else:
            raise EdgeError(f"images must be uint8 (0..255) or float (0..1), got dtype {x.dtype}")
        if x.shape == shape:
            x = x[None]  # one image
        elif shape[0] == 1 and x.ndim == 3 and x.shape[1:] == shape[1:]:
            x = x[:, None]  # [N, H, W] for a one-channel model
        if x.ndim != 4 or x.shape[1:] != shape:
            raise EdgeError(f"images must have shape [N, {', '.join(map(str, shape))}] "
                            f"({shape[0]} channel(s) of {shape[1]}x{shape[2]}); got {list(x.shape)}")
        return x

    def labels(self, y: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(y)
        classes = self.n_classes
        if y.shape != (n,) or y.dtype.kind not in "iu" or (n and (y.min() < 0 or y.max() >= classes)):
            got = f"[{y.min()}, {y.max()}]" if y.size and y.dtype.kind in "iuf" else "none"
            raise EdgeError(f"labels must be {n} integers in [0, {classes}), one per image; got shape {list(y.shape)}, "
                            f"dtype {y.dtype}, range {got}")
        return y.astype(np.int64)

    def _feeds(self, graph: str) -> dict[str, np.ndarray]:
        return {name: self.state[name] for name in self.graphs[graph]["inputs"] if name in self.state}

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = self.images(x)
        if not len(x):
            raise EdgeError("no images to predict")
        state = self._feeds("predict")
        return np.concatenate([self._run(self._predict, {"images": x[i:i + batch_size], **state})[0]
                               for i in range(0, len(x), batch_size)])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        x = self.images(x)
        return float((self.predict(x) == self.labels(y, len(x))).mean())

    @staticmethod
    def _run(graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return graph(feeds)
        except RuntimeFailure as err:
            raise EdgeError(str(err)) from None

    def learn(self, x: np.ndarray, y: np.ndarray, batch_size: int = 64, shuffle_seed: int | None = 0) -> int:
        """One pass of on-device learning over (x, y), then the classifier's refresh; returns the number
        of steps. Nothing is kept unless every step succeeds; nothing is saved until ``save``.

        A batch smaller than the learner's minimum (2 for the contrastive rule, which needs pairs) is skipped.
        """
        if not self.can_learn:
            raise EdgeError(f"{self.dir}: this export does not learn (no learn.onnx); export a frozen-C Hebbian run "
                            "(or pass --freeze-c) or an LDA readout run")
        smallest = self.graphs["learn"]["min_batch"]
        if batch_size < smallest:
            raise EdgeError(f"batch size must be at least {smallest} for this learner, got {batch_size}")
        x = self.images(x)
        y = self.labels(y, len(x))
        if len(x) < smallest:
            raise EdgeError(f"need at least {smallest} labelled images to learn from, got {len(x)}")
        order = np.random.default_rng(shuffle_seed).permutation(len(x)) if shuffle_seed is not None else np.arange(len(x))
        state, steps = dict(self.state), 0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < smallest:
                continue
            new = self.step(state, x[idx], y[idx])
            if not all(np.isfinite(v).all() for v in new.values()):
                raise EdgeError(f"the learning step produced non-finite state at batch {i // batch_size}; nothing was kept")
            state.update(new)
            steps += 1
        self.state = self._refreshed(state)
        return steps

    def step(self, state: dict[str, np.ndarray], images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """One run of learn.onnx on checked inputs (``images``, ``labels``): the new learned state."""
        spec = self.graphs["learn"]
        outs = self._run(self._learn, {"images": images, "labels": labels, **{k: state[k] for k in spec["inputs"] if k in state}})
        return dict(zip(spec["outputs"], outs))

    def _refreshed(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._refresh is None:
            return state
        spec = self.graphs["refresh"]
        outs = self._run(self._refresh, {k: state[k] for k in spec["inputs"]})
        new = dict(zip(spec["outputs"], outs))
        if not all(np.isfinite(v).all() for v in new.values()):
            raise EdgeError("the classifier refresh produced non-finite values; nothing was kept")
        return {**state, **new}

    def refresh(self) -> None:
        """Solve the classifier again from the learned state (``learn`` already does it after its pass)."""
        self.state = self._refreshed(self.state)

    def save(self) -> None:
        """Write the state (temporary file, then rename): the one commit point of on-device learning.
        Temporary files that a writer killed before its rename left behind are removed first."""
        if self.state:
            remove_temporaries(self.dir, STATE_FILE)
            write_state(self.dir / STATE_FILE, self.state, self.manifest["model_id"])


def load_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (`x`) and, when present, labels (`y`) from a .safetensors or .npz file (no pickles)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
        else:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except Exception as err:  # zipfile, numpy and safetensors each raise their own types for damaged files
        raise EdgeError(f"{path}: not a readable {path.suffix or 'array'} file ({str(err)[:200]})") from None
    if "x" not in arrays:
        raise EdgeError(f"{path}: expected arrays 'x' (images) and optionally 'y' (labels); has {sorted(arrays)}")
    x, y = arrays["x"], arrays.get("y")
    if y is not None and len(y) != len(x):
        raise EdgeError(f"{path}: {len(x)} images but {len(y)} labels; expected one label per image")
    return x, y


def load_npy(path: str | Path) -> np.ndarray:
    """An image array ([C, H, W], [N, C, H, W] or, for one channel, [N, H, W]) from an .npy file."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise EdgeError(f"{path}: not a readable .npy array ({err})") from None


def load_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG as uint8 [C, H, W] (grayscale for one-channel models is handled by the caller)."""
    from PIL import Image

    try:
        img = np.asarray(Image.open(path))
    except (OSError, ValueError) as err:
        raise EdgeError(f"{path}: not a readable image ({err})") from None
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
