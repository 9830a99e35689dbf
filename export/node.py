"""ONNX Runtime for JavaScript: the client in export/js, run by Node (``node export/js/cli.mjs``).

Set up once with ``npm install --ignore-scripts --prefix <package>/export/js`` (the README's set-up);
``available()`` says whether that was done.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CLIENT = Path(__file__).parent / "js"


def available() -> bool:
    return shutil.which("node") is not None and (CLIENT / "node_modules" / "onnxruntime-node").is_dir()


def run_client(args: list[str], timeout: float = 1800) -> str:
    """Run the client's command line; its stdout, or RuntimeError with its one-line error."""
    if not available():
        raise RuntimeError(f"the JavaScript client is not set up: install Node and run `npm install --ignore-scripts --prefix {CLIENT}`")
    done = subprocess.run(["node", str(CLIENT / "cli.mjs"), *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"node exited with {done.returncode}")
    return done.stdout
