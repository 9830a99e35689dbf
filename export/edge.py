"""The edge runtime: predict and keep learning with ONNX Runtime and numpy only (no torch).

A model directory (written by `hebbedge export`) holds `model.onnx` (inference), `metadata.json`,
and for a learner that keeps learning `update.onnx` (one step) with `state.npz`: for a frozen-C
Hebbian network the weights W_i and momentum buffers M_i; for fixed features under an LDA readout
the readout's sums (class counts, class feature sums, second moment; float64), from which `save`
solves the classifier (``lda_classifier``). `adapt` runs the step batch by batch; `save` writes the
new state and the new weights into `model.onnx`, each to a temporary file first, so a failed step
loses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from hebbedge.files import atomic_write, save_npz

FORMAT = "hebbedge-edge/1"
UNSEEN = -1e30  # the score of a class never seen: hebbedge.readout.UNSEEN (that module needs torch)


class EdgeError(ValueError):
    """Bad input or a bad model directory; the message says what was expected."""


def _session(path: Path) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types for corrupt files
        raise EdgeError(f"{path}: not a loadable ONNX model ({err.__class__.__name__}: {str(err)[:200]})") from None


class EdgeModel:
    """A hebbedge model directory, loaded for inference and (when exported with it) learning."""

    def __init__(self, model_dir: str | Path, int8: bool = False) -> None:
        self.dir = Path(model_dir)
        meta_path = self.dir / "metadata.json"
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise EdgeError(f"{meta_path}: expected the metadata.json that `hebbedge export` writes ({err})") from None
        if self.meta.get("format") != FORMAT:
            raise EdgeError(f"{meta_path}: unknown format {self.meta.get('format')!r}; expected {FORMAT!r}")
        name = self.meta["int8"] if int8 else "model.onnx"
        if int8 and not name:
            raise EdgeError(f"{self.dir}: no int8 model; export with --int8")
        self.model_path = self.dir / name
        self.infer = _session(self.model_path)
        self.step = self.state = None
        if self.meta.get("update"):
            self.step = _session(self.dir / self.meta["update"]["file"])
            with np.load(self.dir / self.meta["update"]["state"]) as z:
                self.state = {k: z[k] for k in z.files}

    @property
    def can_learn(self) -> bool:
        return self.step is not None

    def images(self, x: np.ndarray) -> np.ndarray:
        """Validate and convert images to float32 [N, C, H, W] in [0, 1]."""
        shape = tuple(self.meta["input_shape"])
        x = np.asarray(x)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        elif x.dtype.kind == "f":
            x = x.astype(np.float32)
        else:
            raise EdgeError(f"images must be uint8 (0..255) or float (0..1), got dtype {x.dtype}")
        if x.shape == shape:
            x = x[None]  # one image
        elif shape[0] == 1 and x.ndim == 3 and x.shape[1:] == shape[1:]:
            x = x[:, None]  # [N, H, W] for a one-channel model
        if x.ndim != 4 or x.shape[1:] != shape:
            raise EdgeError(f"images must have shape [N, {', '.join(map(str, shape))}] "
                            f"({shape[0]} channel(s) of {shape[1]}x{shape[2]}); got {list(x.shape)}")
        if not np.isfinite(x).all():
            raise EdgeError("images contain NaN or Inf")
        return x

    def labels(self, y: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(y)
        classes = len(self.meta["classes"])
        if y.shape != (n,) or y.dtype.kind not in "iu" or (n and (y.min() < 0 or y.max() >= classes)):
            raise EdgeError(f"labels must be {n} integers in [0, {classes}); got shape {list(y.shape)}, dtype {y.dtype}")
        return y.astype(np.int64)

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = self.images(x)
        return np.concatenate([self.infer.run(None, {"images": x[i:i + batch_size]})[0]
                               for i in range(0, len(x), batch_size)]) if len(x) else np.zeros((0, len(self.meta["classes"])))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        x = self.images(x)
        return float((self.predict(x) == self.labels(y, len(x))).mean())

    @property
    def learns_readout(self) -> bool:
        return self.can_learn and self.meta["update"].get("kind") == "lda"

    def adapt(self, x: np.ndarray, y: np.ndarray, batch_size: int = 64, shuffle_seed: int | None = 0) -> int:
        """One pass of on-device learning over (x, y) (backprop-free); returns the number of steps taken.

        For a Hebbian network, a batch of one sample has no pairs for the contrastive rule and is skipped.
        """
        if not self.can_learn:
            raise EdgeError(f"{self.dir}: no update.onnx; export a frozen-C Hebbian run (or use --freeze-c)")
        x = self.images(x)
        y = self.labels(y, len(x))
        order = np.random.default_rng(shuffle_seed).permutation(len(x)) if shuffle_seed is not None else np.arange(len(x))
        update = self.meta["update"]
        # (Exports written before readouts existed list no names: a Hebbian network's W_i then M_i.)
        names = update.get("names") or [f"{k}{i}" for k in "WM" for i in range(update["layers"])]
        smallest = 1 if self.learns_readout else 2
        state, steps = dict(self.state), 0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < smallest:
                continue
            outs = self.step.run(None, {"images": x[idx], "labels": y[idx], **state})
            new = dict(zip(names, outs[-len(names):]))
            if not all(np.isfinite(v).all() for v in new.values()):
                raise EdgeError(f"the learning step produced non-finite weights at batch {i // batch_size}; nothing was kept")
            state, steps = new, steps + 1
        self.state = state
        return steps

    def save(self) -> None:
        """Write the learned state and the inference model's new weights (temporary file, then rename)."""
        if self.state is None:
            return
        state_path = self.dir / self.meta["update"]["state"]
        save_npz(state_path, **self.state)
        model_path = self.dir / "model.onnx"
        proto = onnx.load(str(model_path))
        inits = {init.name: init for init in proto.graph.initializer}
        if self.learns_readout:
            weights = lda_classifier(**self.state, shrinkage=self.meta["update"]["shrinkage"])
        else:
            weights = [self.state[f"W{i}"] for i in range(len(self.meta["weights"]))]
        for name, value in zip(self.meta["weights"], weights):
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
        atomic_write(model_path, lambda tmp: onnx.save(proto, tmp))
        if self.model_path == model_path:
            self.infer = _session(model_path)


def lda_classifier(count: np.ndarray, total: np.ndarray, moment: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """The LDA readout's linear classifier (weight [C, d], bias [C], float32) from its sums, solved in
    float64: ``LDAReadout.solve`` in numpy (see hebbedge/readout.py for the equations)."""
    means = total / np.maximum(count, 1)[:, None]
    covariance = (moment - total.T @ means) / max(count.sum(), 1)
    lhs = (1 - shrinkage) * covariance + shrinkage * np.eye(len(moment))
    w = np.linalg.solve(lhs, means.T)
    bias = np.where(count == 0, UNSEEN, -0.5 * (means.T * w).sum(0))
    return w.T.astype(np.float32), bias.astype(np.float32)


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (`x`) and, when present, labels (`y`) from an .npz file."""
    try:
        with np.load(path) as z:
            if "x" not in z.files:
                raise EdgeError(f"{path}: expected an .npz with arrays 'x' (images) and optionally 'y' (labels); has {z.files}")
            return z["x"], (z["y"] if "y" in z.files else None)
    except (OSError, ValueError) as err:
        if isinstance(err, EdgeError):
            raise
        raise EdgeError(f"{path}: not a readable .npz file ({err})") from None


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
