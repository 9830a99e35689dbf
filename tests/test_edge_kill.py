"""kill -9 during `hebbedge edge adapt`: every reader sees the old state or the new one, never a mix.

A few trials in the test suite; `HEBBEDGE_KILL_TRIALS=200 python -m pytest tests/test_edge_kill.py` tortures longer.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from hebbedge.export.edge import STATE_FILE, EdgeModel, load_arrays
from hebbedge.export.onnx import export_model
from hebbedge.readout import LDAReadout


def test_kill_during_adapt_leaves_the_old_or_the_new_state(tmp_path):
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), LDAReadout(256, 10))
    export_model(model, (1, 28, 28), (0.1307,), (0.3081,), tmp_path / "edge", list(range(10)), learns=True)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.safetensors"
    save_file({"x": rng.integers(0, 256, (3000, 1, 28, 28), dtype=np.uint8), "y": (np.arange(3000) % 10).astype(np.int64)}, str(data))
    command = [sys.executable, "-c", "from hebbedge.cli.app import main; main()", "edge", "adapt", str(tmp_path / "edge"), "--data", str(data)]
    trials = int(os.environ.get("HEBBEDGE_KILL_TRIALS", "6"))
    random = np.random.default_rng(1)
    killed = completed = 0
    for trial in range(trials):
        old = (tmp_path / "edge" / STATE_FILE).read_bytes()
        expected = EdgeModel(tmp_path / "edge")  # what one uninterrupted adapt makes of the current state
        expected.learn(*load_arrays(data), 64, 0)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Trial 0 runs to the end; trial 1 is killed while still starting; the rest at random moments.
        if trial == 0:
            process.wait()
        time.sleep(0 if trial == 0 else 0.3 if trial == 1 else random.uniform(0.5, 4.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        completed += process.wait() == 0
        reader = EdgeModel(tmp_path / "edge")  # loads: the state file is whole and of this model
        if (tmp_path / "edge" / STATE_FILE).read_bytes() != old:
            assert all(np.array_equal(reader.state[k], v) for k, v in expected.state.items())  # the new state, whole
    assert killed >= 1 and completed >= 1
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # an uninterrupted adapt cleans what kills left
    assert not list((tmp_path / "edge").glob("*.tmp"))
