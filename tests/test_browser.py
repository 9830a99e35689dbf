"""The in-browser learning page (export/web, served by `hebbedge edge serve`) in headless Chromium:
a person's clicks teach an exported model two new classes, and the page's predictions and accuracy
matrix equal those of the Python edge runtime (hebbedge/export/edge.py) fed the same examples in
the same batches. Every request the page makes goes to the local server.

HEBBEDGE_BROWSER_SCREENSHOT=docs/browser.png also writes the screenshot there (the README's)."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from safetensors.numpy import save_file

import hebbedge
from hebbedge.data import read_idx
from hebbedge.export.edge import EdgeModel
from hebbedge.export.onnx import export_model
from hebbedge.learner import HebbianLearner
from hebbedge.models import thesis_linear
from hebbedge.readout import LDAReadout

CHROMIUM = shutil.which("chromium")
ORT_WEB = Path(__file__).resolve().parent.parent / "export" / "js" / "node_modules" / "onnxruntime-web"
sync_playwright = pytest.importorskip("playwright.sync_api", reason="needs Playwright (pip install -e '.[dev]')").sync_playwright
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not ORT_WEB.is_dir(),
    reason="needs Debian's chromium (apt-get install chromium) and onnxruntime-web (npm ci --ignore-scripts --prefix export/js)")

MEAN, STD = 0.1307, 0.3081
MNIST = Path(hebbedge.__file__).parent / "datasets" / "mnist"
FEATURES = 256
SEEN, NEW = (0, 1), (2, 3)  # classes the exported model has seen; classes the page teaches it
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BATCH = 64  # the page's batch size (export/web/app.mjs)
TIMEOUT_MS = 30_000


def mnist() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test split shipped in the package: uint8 [N, 1, 28, 28], int64 labels."""
    x = read_idx(MNIST / "t10k-images-idx3-ubyte.gz").numpy()[:, None]
    return x, read_idx(MNIST / "t10k-labels-idx1-ubyte.gz").numpy().astype(np.int64)


def take(y: np.ndarray, classes, per_class: int, start: int) -> np.ndarray:
    """Indices of `per_class` images of each class, from the `start`-th of that class on, class by class."""
    return np.concatenate([np.flatnonzero(y == k)[start:start + per_class] for k in classes])


def pngs(folder: Path, x: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"{i:02d}.png" for i in range(len(x))]
    for path, image in zip(paths, x):
        Image.fromarray(image[0]).save(path)
    return paths


def readout_dir(out: Path, x: np.ndarray, y: np.ndarray, seed: int = 0) -> Path:
    """Fixed random tanh features and an LDA readout that has seen classes SEEN, exported to learn."""
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Flatten(), nn.Linear(784, FEATURES), nn.Tanh())
    readout = LDAReadout(FEATURES, 10, shrinkage=1e-3)
    with torch.no_grad():
        readout.accumulate(features((torch.from_numpy(x).float() / 255 - MEAN) / STD), torch.from_numpy(y))
    export_model(nn.Sequential(features, readout), (1, 28, 28), (MEAN,), (STD,), out, list(range(10)), learns=True)
    return out


def hebbian_dir(out: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """A small Hebbian network whose C trained a few steps on classes SEEN, then froze: it learns on with its rules."""
    torch.manual_seed(0)
    learner = HebbianLearner(thesis_linear(widths=(64,)))
    for i in range(0, len(x), 50):
        learner.step((torch.from_numpy(x[i:i + 50]).float() / 255 - MEAN) / STD, torch.from_numpy(y[i:i + 50]))
    learner.freeze_c()
    export_model(learner.model, (1, 28, 28), (MEAN,), (STD,), out, list(range(10)), learns=True)
    return out


@contextmanager
def serve(model_dir: Path, test_data: Path):
    """`hebbedge edge serve` on a free port; yields the page's URL."""
    server = subprocess.Popen(
        [sys.executable, "-c", "from hebbedge.cli.app import main; main()", "edge", "serve", str(model_dir),
         "--port", "0", "--test-data", str(test_data)], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert "serving" in line, line
        yield line.split(" at ")[1].split()[0]
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The exported readout, the files a person would pick, `hebbedge edge serve` and Chromium."""
    root = tmp_path_factory.mktemp("browser")
    x, y = mnist()
    seen = take(y, SEEN, 100, start=200)
    files = {
        "model": readout_dir(root / "model", x[seen], y[seen]),
        "seen": seen,
        "test": take(y, SEEN + NEW, 50, start=0),  # the page's accuracy matrix
        "query": take(y, SEEN + NEW, 3, start=100),  # images the person asks about
        **{k: take(y, [k], 10, start=120) for k in NEW},  # the examples of each new class
    }
    files["test_data"] = root / "test.safetensors"
    save_file({"x": x[files["test"]], "y": y[files["test"]]}, str(files["test_data"]))
    files["pngs"] = {name: pngs(root / str(name), x[files[name]]) for name in ("query", *NEW)}
    with serve(files["model"], files["test_data"]) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield {"x": x, "y": y, "url": url, "root": root, "browser": browser, **files}
        browser.close()


def open_page(setup, query: str = "", url: str | None = None):
    """A fresh page (its own storage) that records every request it makes."""
    page = setup["browser"].new_page(viewport={"width": 1280, "height": 1000})
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto((url or setup["url"]) + query)
    page.wait_for_selector("body[data-state=ready], body[data-state=failed]", timeout=TIMEOUT_MS)
    return page


def settle(page) -> None:
    """Wait until the page has finished what the last control started."""
    page.wait_for_function("document.body.dataset.state !== 'busy'", timeout=TIMEOUT_MS)


def error_text(page) -> str:
    return page.inner_text("#error") if page.is_visible("#error") else ""


def matrix(page) -> list[list]:
    """Each row of the accuracy matrix: [its label, [[correct, total] per column]]."""
    return page.eval_on_selector_all("#matrix tbody tr", """rows => rows.map(r => [r.querySelector('th').textContent,
        [...r.querySelectorAll('td')].map(td => [Number(td.dataset.correct), Number(td.dataset.total)])])""")


def python_row(model: EdgeModel, x: np.ndarray, y: np.ndarray) -> list[list[int]]:
    right = model.predict(x) == y
    return [[int(right[y == k].sum()), int((y == k).sum())] for k in sorted(set(y.tolist()))] + [[int(right.sum()), len(y)]]


def gallery(page) -> tuple[list[int], np.ndarray]:
    figures = page.eval_on_selector_all("#predictions figure", "fs => fs.map(f => [Number(f.dataset.class), JSON.parse(f.dataset.logits)])")
    return [c for c, _ in figures], np.array([l for _, l in figures], dtype=np.float32)


def assert_same_predictions(page, model: EdgeModel, x: np.ndarray) -> None:
    classes, logits = gallery(page)
    expected = model.logits(x)
    assert classes == expected.argmax(1).tolist()
    seen = expected > -1e29  # a class never seen scores -1e30 on both sides
    assert np.array_equal(seen, logits > -1e29)
    assert np.abs(logits[seen] - expected[seen]).max() <= 1e-4 * max(1.0, np.abs(expected[seen]).max())


def teach(page, k: int, files: list[Path]) -> None:
    """What a person does: pick the class, add its images, press Teach."""
    page.select_option("#class", str(k))
    page.set_input_files("#teach-files", [str(p) for p in files])
    settle(page)
    page.click("#teach-button")
    settle(page)
    assert error_text(page) == ""


def test_teaching_two_classes_matches_python(setup, tmp_path):
    x, y, model_dir = setup["x"], setup["y"], setup["model"]
    page = open_page(setup)
    assert page.get_attribute("body", "data-state") == "ready", error_text(page)
    py = EdgeModel(model_dir)
    test_x, test_y = x[setup["test"]], y[setup["test"]]
    expected = [["exported", python_row(py, test_x, test_y)]]

    page.set_input_files("#predict-files", [str(p) for p in setup["pngs"]["query"]])
    settle(page)
    assert_same_predictions(page, py, x[setup["query"]])

    for k in NEW:
        teach(page, k, setup["pngs"][k])
        examples, labels = x[setup[k]], y[setup[k]]
        assert py.learn(examples, labels, batch_size=BATCH, shuffle_seed=None) == 1
        expected.append([f"taught {k} ({len(labels)} examples)", python_row(py, test_x, test_y)])
        assert_same_predictions(page, py, x[setup["query"]])
    assert matrix(page) == expected
    assert "2 (learned)" in page.inner_text("#class") and "3 (learned)" in page.inner_text("#class")

    # A drawn 1: the page predicts what it shows as the model's input, as Python does.
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 150, box["y"] + 50)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + 150 - 4 * step, box["y"] + 50 + 18 * step)
    page.mouse.up()
    settle(page)
    seen = np.array(page.evaluate("""() => Array.from(document.getElementById('small').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))"""), dtype=np.uint8).reshape(1, 1, 28, 28)
    assert seen.max() > 0 and page.inner_text("#predicted-source") == "your drawing"
    assert int(page.get_attribute("#predicted", "data-class")) == int(py.predict(seen)[0])

    page.screenshot(path=str(tmp_path / "browser.png"), full_page=True)
    if os.environ.get("HEBBEDGE_BROWSER_SCREENSHOT"):
        shutil.copyfile(tmp_path / "browser.png", os.environ["HEBBEDGE_BROWSER_SCREENSHOT"])

    # Saved in the browser, reset, loaded back: the last row again.
    page.click("#save")
    settle(page)
    page.click("#reset")
    settle(page)
    assert matrix(page) == expected[:1]
    page.click("#load")
    settle(page)
    assert error_text(page) == "" and matrix(page)[-1][1] == expected[-1][1]
    assert_same_predictions(page, py, x[setup["query"]])

    # Plain refusals, and the state as it was.
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "big.png")
    page.set_input_files("#teach-files", str(tmp_path / "big.png"))
    settle(page)
    assert error_text(page) == "big.png: 32×32 pixels, but this model takes 28×28 images; nothing was added"
    other = readout_dir(tmp_path / "other", x[setup["test"]], y[setup["test"]], seed=1)
    page.set_input_files("#state-file", str(other / "state.safetensors"))
    settle(page)
    assert error_text(page).startswith("state.safetensors: state of another model")
    assert page.inner_text("#pending") == "No examples yet."
    assert_same_predictions(page, py, x[setup["query"]])

    origin = setup["url"].split("/web/")[0] + "/"
    assert [u for u in page.requests if not u.startswith((origin, "blob:"))] == []
    page.close()


def test_wrong_model_directory_is_a_plain_error(setup):
    """A directory with no manifest, and one on another host (which the page does not fetch)."""
    page = open_page(setup, "?model=../nowhere/")
    assert page.get_attribute("body", "data-state") == "failed"
    assert error_text(page) == (f"{setup['url'].split('/web/')[0]}/nowhere/manifest.json: missing; "
                                "expected a model directory written by `hebbedge export`")
    assert "could not be opened" in page.inner_text("#status")
    page.close()
    page = open_page(setup, "?model=http://example.invalid/model/")
    assert error_text(page).startswith("http://example.invalid/model/: not on http://127.0.0.1:")
    assert not [u for u in page.requests if u.startswith("http://example.invalid")]
    page.close()


BENCH = """async ([model, repeats]) => {
    // The modules the page imported (same URLs: the same instances, ONNX Runtime Web as app.mjs set it up).
    const ort = await import('../js/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs');
    const { EdgeModel } = await import('../js/hebbedge-edge.mjs');
    const read = async (name) => new Uint8Array(await (await fetch(model + name)).arrayBuffer());
    const edge = await EdgeModel.open({ ort, store: { location: model, read } });
    const [c, h, w] = edge.inputShape;
    const images = (n, seed) => {  // a fixed pseudo-random digit-sized batch
        const data = new Uint8Array(n * c * h * w);
        for (let i = 0, s = seed; i < data.length; i++) data[i] = (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24;
        return { dtype: 'uint8', shape: [n, c, h, w], data };
    };
    const median = (t) => t.sort((a, b) => a - b)[t.length >> 1];
    const time = async (fn, n) => {
        await fn();  // first-run allocations, untimed
        const times = [];
        for (let i = 0; i < n; i++) { const start = performance.now(); await fn(); times.push(performance.now() - start); }
        return median(times);
    };
    const one = images(1, 1), x = images(64, 2), loaded = edge.state;
    const y = { dtype: 'int64', shape: [64], data: BigInt64Array.from({ length: 64 }, (_, i) => BigInt(i % 10)) };
    const result = {
        predict_ms: await time(() => edge.logits(one), repeats),
        learn_ms: await time(async () => { await edge.learn(x, y, { refresh: false }); edge.state = loaded; }, Math.max(3, repeats / 5)),
        refresh_ms: await time(() => edge.refresh(), Math.max(3, repeats / 10)),
    };
    await edge.close();
    return result;
}"""


def test_learning_step_latency(setup, tmp_path):
    """The learning cycle's latency in the page's runtime (the JS client on ONNX Runtime Web's wasm
    backend, one thread, in this Chromium) beside Python's ONNX Runtime as `hebbedge latency` measures
    it: median ms of predicting one image, one learning step on 64 images, the classifier refresh.
    docs/edge.md quotes it: python -m pytest -q -s tests/test_browser.py -k latency"""
    from hebbedge.export.latency import measure_here

    repeats = 50
    page = open_page(setup)
    browser = page.evaluate(BENCH, [setup["url"].split("/web/")[0] + "/model/", repeats])
    page.close()
    python = measure_here(setup["model"], "onnxruntime", repeats)
    python = {"predict_ms": python["predict_ms"]["fp32"], "learn_ms": python["learn_ms"], "refresh_ms": python["refresh_ms"]}
    (tmp_path / "latency.json").write_text(json.dumps({"browser": browser, "python": python}, indent=2))
    print(f"\nd = {FEATURES} features, median ms: " + "; ".join(
        f"{key[:-3]} {browser[key]:.2f} in the page, {python[key]:.2f} in Python" for key in browser))
    assert all(v > 0 for v in [*browser.values(), *python.values()])


def test_hebbian_learner_in_the_page(setup):
    """The frozen-C Hebbian learner's cycle (no refresh) in the page equals Python's too."""
    x, y = setup["x"], setup["y"]
    model_dir = hebbian_dir(setup["root"] / "hebbian", x[setup["seen"]], y[setup["seen"]])
    py = EdgeModel(model_dir)
    test_x, test_y = x[setup["test"]], y[setup["test"]]
    with serve(model_dir, setup["test_data"]) as url:
        page = open_page(setup, url=url)
        assert page.get_attribute("body", "data-state") == "ready", error_text(page)
        page.set_input_files("#predict-files", [str(p) for p in setup["pngs"]["query"]])
        settle(page)
        expected = [["exported", python_row(py, test_x, test_y)]]
        teach(page, NEW[0], setup["pngs"][NEW[0]])
        py.learn(x[setup[NEW[0]]], y[setup[NEW[0]]], batch_size=BATCH, shuffle_seed=None)
        expected.append([f"taught {NEW[0]} ({len(setup[NEW[0]])} examples)", python_row(py, test_x, test_y)])
        assert_same_predictions(page, py, x[setup["query"]])
        assert matrix(page) == expected
        page.close()


def test_serve_refuses_what_the_page_cannot_use(setup, tmp_path):
    from typer.testing import CliRunner

    from hebbedge.cli.app import app

    save_file({"x": setup["x"][:4]}, str(tmp_path / "unlabelled.safetensors"))
    for args, expected in [
        ([str(tmp_path)], "manifest.json: missing; expected a model directory written by `hebbedge export`"),
        ([str(setup["model"]), "--test-data", str(tmp_path / "test.npz")], "--test-data expects a .safetensors file"),
        ([str(setup["model"]), "--test-data", str(tmp_path / "unlabelled.safetensors")], "--test-data needs labels"),
    ]:
        done = CliRunner().invoke(app, ["edge", "serve", *args])
        assert done.exit_code == 2 and expected in done.output, done.output
