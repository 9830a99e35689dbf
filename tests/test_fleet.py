"""Federated LDA readout with Flower's simulation engine: the fleet's state is the state of one device on the union."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_export import MEAN, STD
from test_merge import relative
from typer.testing import CliRunner

pytest.importorskip("flwr", reason="the fleet extra (flwr[simulation]) is not installed")

from hebbedge.cli.app import app  # noqa: E402
from hebbedge.export.edge import EdgeModel  # noqa: E402
from hebbedge.export.fleet import empty_state, load_experiences, run_fleet, shards  # noqa: E402
from hebbedge.export.onnx import export_model, stream_arrays  # noqa: E402
from hebbedge.readout import LDAReadout  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A readout over 32 fixed random features and a small Split-MNIST (5 experiences of 2 classes)."""
    tmp = tmp_path_factory.mktemp("fleet")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh()), LDAReadout(32, 10, shrinkage=1e-3))
    export_model(model, (1, 28, 28), MEAN, STD, tmp / "edge", list(range(10)), learns=True)
    stream_arrays("split-mnist", tmp / "data", seed=0, train_size=300, test_size=200)
    return tmp


def test_shards_give_each_client_one_experience_and_no_sample_twice():
    experiences = [(np.arange(10) + 10 * e, np.full(10, e)) for e in range(5)]
    split = shards(experiences, 10)
    assert [set(y.tolist()) for _, y in split] == [{i % 5} for i in range(10)]
    assert sorted(np.concatenate([x for x, _ in split]).tolist()) == list(range(50))


def test_three_flower_clients_learn_exactly_what_one_device_learns_from_their_union(setup):
    experiences, test = load_experiences(setup / "data")
    result = run_fleet(setup / "edge", experiences, test, clients=3, rounds=2)
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    union = EdgeModel(setup / "edge")  # one device that sees the three clients' data (experiences 0-2)
    union.state.update(empty_state(union))
    union.learn(np.concatenate([x for x, _ in experiences[:3]]), np.concatenate([y for _, y in experiences[:3]]))
    errors = {name: relative(result.state[name], union.state[name].astype(np.float64)) for name in ("count", "mean", "scatter")}
    print("fleet against one device:", errors, f"{result.rounds[-1]['seconds']:.1f} s simulated")
    assert all(e <= 1e-6 for e in errors.values()), errors
    fleet = EdgeModel(setup / "edge")
    fleet.state.update(result.state)
    fleet.refresh()
    assert np.array_equal(fleet.predict(test[0]), union.predict(test[0]))
    assert set(np.flatnonzero(result.state["count"])) == set(np.concatenate([y for _, y in experiences[:3]]).tolist())
    payload = 4 * (10 + 10 * 32 + 32 * 32)  # float32 count, mean, scatter; Flower adds names and shapes
    assert payload <= result.rounds[1]["bytes_sent_per_client"] <= payload + 512


def test_fleet_command_writes_the_model_and_the_rounds(setup, tmp_path):
    result = CliRunner().invoke(app, ["fleet", "split-mnist", "--model", str(setup / "edge"), "--data", str(setup / "data"),
                                      "--clients", "2", "--rounds", "1", "--out", str(tmp_path / "fleet")])
    assert result.exit_code == 0, result.output
    rounds = json.loads((tmp_path / "fleet" / "fleet.json").read_text())
    assert rounds[-1]["accuracy"] == pytest.approx(EdgeModel(tmp_path / "fleet" / "model").accuracy(*load_experiences(setup / "data")[1]))
    assert "bytes sent per client" in result.output


def test_fedavg_baseline_runs_on_the_same_clients(setup, tmp_path):
    result = CliRunner().invoke(app, ["fleet", "split-mnist", "--method", "fedavg", "--data", str(setup / "data"),
                                      "--clients", "3", "--rounds", "2", "--hidden", "16", "--out", str(tmp_path / "fedavg")])
    assert result.exit_code == 0, result.output
    rounds = json.loads((tmp_path / "fedavg" / "fleet.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2] and all(0 <= r["accuracy"] <= 1 for r in rounds)
    payload = 4 * (784 * 16 + 16 + 16 * 10 + 10)  # the whole network, every round
    assert payload <= rounds[1]["bytes_sent_per_client"] <= payload + 1024
