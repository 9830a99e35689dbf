"""Federated LDA readout with Flower's simulation engine: the fleet's state is the state of one device on the union."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_export import MEAN, STD
from test_merge import relative
from typer.testing import CliRunner

pytest.importorskip("flwr", reason="the fleet extra (flwr[simulation]) is not installed")

from hebbedge.cli.app import app  # noqa: E402
from hebbedge.export.edge import EdgeError, EdgeModel  # noqa: E402
from hebbedge.export.fleet import (  # noqa: E402
    Shard, empty_state, join_rounds, load_experiences, markdown_table, round_part, run_centralised, run_fedavg, run_fleet,
    shards, summarise)
from hebbedge.export.onnx import export_model, stream_arrays  # noqa: E402
from hebbedge.readout import LDAReadout  # noqa: E402


def make_fleet(tmp: Path, **stream_options) -> Path:
    """tmp/edge, a readout over 32 fixed random features, and tmp/data, Split-MNIST files (5 experiences of 2 classes)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh()), LDAReadout(32, 10, shrinkage=1e-3))
    export_model(model, (1, 28, 28), MEAN, STD, tmp / "edge", list(range(10)), learns=True)
    stream_arrays("split-mnist", tmp / "data", seed=0, **stream_options)
    return tmp


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The fleet's export and a small slice of the real Split-MNIST."""
    return make_fleet(tmp_path_factory.mktemp("fleet"), train_size=300, test_size=200)


def test_shards_give_each_client_one_experience_and_no_sample_twice():
    experiences = [(np.arange(10) + 10 * e, np.full(10, e)) for e in range(5)]
    split = shards(experiences, 10)
    assert [set(y.tolist()) for _, y in split] == [{i % 5} for i in range(10)]
    assert sorted(np.concatenate([x for x, _ in split]).tolist()) == list(range(50))


def assert_one_device_on(state: dict[str, np.ndarray], model_dir, seen: list[Shard], test: Shard) -> dict[str, float]:
    """`state` (a fleet's merged state) is that of one device that learned the union of `seen` with the same
    export: relative error at most 1e-6 on count, mean and scatter, identical predictions on `test`, and only
    the classes in `seen` counted. Returns the errors."""
    x, y = np.concatenate([a for a, _ in seen]), np.concatenate([b for _, b in seen])
    union = EdgeModel(model_dir)
    union.state.update(empty_state(union))
    union.learn(x, y)
    errors = {name: relative(state[name], union.state[name].astype(np.float64)) for name in ("count", "mean", "scatter")}
    assert all(e <= 1e-6 for e in errors.values()), errors
    fleet = EdgeModel(model_dir)
    fleet.state.update({k: state[k] for k in ("count", "mean", "scatter")})
    fleet.refresh()
    assert np.array_equal(fleet.predict(test[0]), union.predict(test[0]))
    assert set(np.flatnonzero(state["count"])) == set(y.tolist())
    return errors


def test_three_flower_clients_learn_exactly_what_one_device_learns_from_their_union(setup):
    experiences, test = load_experiences(setup / "data")
    result = run_fleet(setup / "edge", experiences, test, clients=3, rounds=2)
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    errors = assert_one_device_on(result.state, setup / "edge", experiences[:3], test)  # the three clients' experiences 0-2
    print("fleet against one device:", errors, f"{result.rounds[-1]['seconds']:.1f} s of rounds")
    payload = 4 * (10 + 10 * 32 + 32 * 32)  # float32 count, mean, scatter; Flower adds names and shapes
    assert payload <= result.rounds[1]["bytes_sent_per_client"] <= payload + 512


def test_a_client_that_joins_late_learns_each_of_its_samples_once_in_the_rounds_it_is_in():
    assert join_rounds(3, 0) == [1, 1, 1] and join_rounds(3, 2) == [1, 3, 5]
    shard = (np.arange(10), np.arange(10) % 2)
    parts = [round_part(shard, r, rounds=5, joined=3)[0] for r in (3, 4, 5)]
    assert all(len(p) for p in parts) and sorted(np.concatenate(parts).tolist()) == list(range(10))
    with pytest.raises(EdgeError, match="join_every must be 0"):
        join_rounds(3, -1)


def test_clients_joining_over_time_add_exactly_what_they_saw(setup):
    experiences, test = load_experiences(setup / "data")
    # client 0 joins in round 1, client 1 in round 2; client 2 would join in round 3, after the last
    result = run_fleet(setup / "edge", experiences, test, clients=3, rounds=2, join_every=1)
    assert [r["clients"] for r in result.rounds[1:]] == [1, 2]
    first = len(experiences[0][0][0::2])  # client 0 learns half of its shard in round 1, client 1 all of its in round 2
    assert [r["seen"] for r in result.rounds] == [0, first, len(experiences[0][0]) + len(experiences[1][0])]
    assert_one_device_on(result.state, setup / "edge", experiences[:2], test)  # client 2's classes never counted


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


def test_centralised_network_trains_on_the_union_and_each_client_sends_its_images_once(setup, tmp_path):
    result = CliRunner().invoke(app, ["fleet", "split-mnist", "--method", "centralised", "--data", str(setup / "data"),
                                      "--clients", "3", "--rounds", "2", "--epochs", "15", "--hidden", "16", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    rounds = json.loads((tmp_path / "c" / "fleet.json").read_text())
    experiences, test = load_experiences(setup / "data")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[1]["bytes_sent_per_client"] == max(x.nbytes + y.nbytes for x, y in shards(experiences, 3)) and rounds[2]["bytes_sent_per_client"] == 0
    # joint training on the clients' 6 classes: the test images of those classes are 60% of the test set
    seen = np.isin(test[1], np.concatenate([y for _, y in experiences[:3]]))
    assert rounds[-1]["accuracy"] > 0.5 * seen.mean(), rounds


def test_one_device_command_learns_the_union_of_the_clients_data(setup, tmp_path):
    result = CliRunner().invoke(app, ["fleet", "split-mnist", "--method", "one-device", "--model", str(setup / "edge"),
                                      "--data", str(setup / "data"), "--clients", "2", "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    experiences, test = load_experiences(setup / "data")
    assert_one_device_on(EdgeModel(tmp_path / "one" / "model").state, setup / "edge", experiences[:2], test)
    assert "round 1: accuracy" in result.output


def test_join_every_is_refused_for_the_backprop_methods(setup, tmp_path):
    result = CliRunner().invoke(app, ["fleet", "split-mnist", "--method", "fedavg", "--data", str(setup / "data"),
                                      "--join-every", "1", "--out", str(tmp_path / "f")])
    assert result.exit_code != 0 and "--join-every is for --method readout" in result.output


def test_report_counts_the_first_round_that_reaches_the_target_and_the_largest_round_sent():
    rounds = [{"round": 0, "accuracy": 0.1}, {"round": 1, "accuracy": 0.85, "bytes_sent_per_client": 100},
              {"round": 2, "accuracy": 0.92, "bytes_sent_per_client": 0}, {"round": 3, "accuracy": 0.88, "bytes_sent_per_client": 0, "seconds": 3.0}]
    summary = summarise(rounds, target=0.9)
    assert (summary["rounds_to_target"], summary["final_accuracy"], summary["bytes_sent_per_client_per_round"]) == (2, 0.88, 100)
    assert summarise(rounds, target=0.95)["rounds_to_target"] is None
    table = markdown_table({"target_accuracy": 0.95, "runs": {"x": {"method": "fedavg", "clients": 5, **summarise(rounds, 0.95)}}})
    assert "| x | FedAvg, backprop | 5 | 3 | 88.00 | not in 3 | 100 | 3 |" in table


def test_fedavg_of_one_client_is_the_centralised_training_of_its_data(setup):
    """Flower's FedAvg with a single client returns that client's network unchanged: the same accuracy after each
    round as the centralised run on the same data, start weights and batch order (the averaging adds nothing)."""
    experiences, test = load_experiences(setup / "data")
    fedavg = run_fedavg(experiences, test, clients=1, rounds=2, hidden=16)
    central = run_centralised(experiences, test, clients=1, rounds=2, hidden=16)
    assert [r["accuracy"] for r in fedavg] == [r["accuracy"] for r in central]
    assert fedavg[-1]["accuracy"] != fedavg[0]["accuracy"]  # it did train
