"""The speed benchmark: every mode steps, memory is measured in a fresh interpreter, reports and CLI."""

import json

import pytest
import torch
from typer.testing import CliRunner

from hebbedge.cli.app import app
from hebbedge.benchmarks.speed import MODES, Setting, benchmark, build_step, compare, markdown, peak_memory

runner = CliRunner()


@pytest.mark.parametrize("arch, width", [("linear", 16), ("conv-f1", 2000)])
def test_every_mode_takes_a_step(arch, width):
    for mode in MODES:
        result = build_step(Setting(arch=arch, width=width, batch=4, mode=mode))()
        logits = result if mode == "inference" else result.logits
        assert logits.shape == (4, 10) and torch.isfinite(logits).all()


def test_peak_memory_sees_the_gradient_of_backprop():
    """SGD holds W and its gradient, inference W alone: the fresh-interpreter RSS peak must show
    about one more weight-sized buffer (784-512x4-10: 4.8 MB of float32 weights)."""
    weights = 4 * (784 * 512 + 3 * 512 * 512 + 512 * 10)
    sgd, inference = (peak_memory(Setting(width=512, batch=8, mode=m)) for m in ("sgd", "inference"))
    assert inference > 0.8 * weights
    assert sgd - inference > 0.8 * weights


def test_frozen_step_without_momentum_holds_no_momentum_buffer():
    """With beta = 0 the frozen step holds M as factors after its first step: about one weight-sized
    buffer less than the frozen step with momentum (784-512x4-10: 4.8 MB of float32 weights)."""
    weights = 4 * (784 * 512 + 3 * 512 * 512 + 512 * 10)
    frozen, no_momentum = (peak_memory(Setting(width=512, batch=8, mode=m)) for m in ("frozen", "frozen-no-momentum"))
    assert frozen - no_momentum > 0.8 * weights


def test_report_and_compare_on_a_tiny_run(tmp_path):
    result = benchmark(["cpu"], ("linear",), scaling=False, memory=False, warmup=0, repeats=1, width=16, batch=4, rounds=2)
    assert {(r["arch"], r["mode"]) for r in result["rows"]} == {("linear", m) for m in MODES}
    assert all(r["ms"] > 0 and len(r["ms_per_round"]) == 2 for r in result["rows"])
    assert set(result["ratios"]["cpu"]) == {f"{m}/sgd time" for m in ("frozen", "frozen-no-momentum", "c-train", "sgd-momentum", "adam", "inference")}
    table = markdown(result)
    assert "| 784-16×4-10, batch 4 | frozen |" in table and "onnxruntime (ms)" in table
    assert [r["time_ratio"] for r in compare(result, result)] == [1.0] * len(MODES)


def test_bench_speed_command_writes_reports_and_compares(tmp_path):
    args = ["bench", "speed", "--archs", "linear", "--width", "16", "--batch", "4", "--no-scaling", "--no-memory",
            "--repeats", "1", "--warmup", "0", "--rounds", "1"]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "a" / "speed.json").read_text())["rows"]
    assert "| frozen |" in (tmp_path / "a" / "speed.md").read_text()
    second = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--compare", str(tmp_path / "a" / "speed.json")])
    assert second.exit_code == 0, second.output
    assert "of the baseline" in second.output
    assert json.loads((tmp_path / "b" / "speed.json").read_text())["compare"]["rows"]
    bad = runner.invoke(app, ["bench", "speed", "--archs", "rnn"])
    assert bad.exit_code == 2 and "valid: linear, conv-f1, conv-f4" in bad.output
    (tmp_path / "junk.json").write_text("{}")
    bad = runner.invoke(app, ["bench", "speed", "--compare", str(tmp_path / "junk.json")])
    assert bad.exit_code == 2 and "expects a speed.json" in bad.output


def test_scaling_plot_is_a_png(tmp_path):
    from hebbedge.plots import plot_scaling
    from hebbedge.benchmarks.speed import BATCHES, SCALING_MODES, WIDTHS

    rows = [{"arch": "linear", "width": w, "batch": b, "device": "cpu", "mode": m, "ms": 1.0 + w * b / 1e4, "peak_mb": w / 100}
            for m in SCALING_MODES for w, b in [(2000, b) for b in BATCHES] + [(w, 64) for w in WIDTHS]]
    path = plot_scaling({"rows": rows, "width": 2000, "batch": 64, "environments": [{"device": "cpu"}]}, tmp_path / "s.png",
                        BATCHES, WIDTHS, SCALING_MODES)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
