"""A fleet of devices that learns together with Flower (`hebbedge fleet`): exact federated LDA readouts.

Every client holds a copy of one exported readout model and its own labelled images, which never
leave it. In each round a client learns its share of the round with the exported on-device cycle
(``EdgeModel.learn``: learn.onnx, as on a device) starting from an empty readout, so the state it sends
holds exactly its own samples' statistics (count, class means, pooled within-class scatter). The
server's strategy (``ReadoutMerge``) adds them to the global state with the exact Chan merge of
``hebbedge.export.merge``: after the last round the global state is that of one device that learned
every client's data, whatever the split. The server solves the classifier with the model's own
refresh graph to evaluate it. No gradients, no averaging, nothing approximate; what a client sends
per round is its statistics, 4 (C + C d + d^2) bytes.

The baseline users would compare against (``run_fedavg``) runs on the same clients and splits: a
one-hidden-layer network trained by backprop on each client, averaged by Flower's own FedAvg. Both run
under Flower's simulation engine (``flwr.simulation.run_simulation``, clients as Ray workers). Needs
the `fleet` extra: ``pip install "hebbedge[fleet]"``; the readout path imports no torch.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from hebbedge.export.edge import EdgeError, EdgeModel, load_arrays
from hebbedge.export.merge import READOUT_LEARNED, merge_readout, write_learned
from hebbedge.files import save_json

Shard = tuple[np.ndarray, np.ndarray]


def empty_state(model: EdgeModel) -> dict[str, np.ndarray]:
    """The learned readout state of a device that has seen nothing (what a client learns its share from)."""
    return {k: np.zeros_like(model.state[k]) for k in READOUT_LEARNED}


def shards(experiences: list[Shard], clients: int) -> list[Shard]:
    """Client i gets experience i mod E (class-incremental across clients: each sees only that
    experience's classes); clients sharing an experience split its samples evenly, none shared."""
    share: list[list[int]] = [[i for i in range(clients) if i % len(experiences) == e] for e in range(len(experiences))]
    out: list[Shard] = [None] * clients  # type: ignore[list-item]
    for e, (x, y) in enumerate(experiences):
        for part, i in enumerate(share[e]):
            out[i] = (x[part::len(share[e])], y[part::len(share[e])])
    return out


def round_part(shard: Shard, server_round: int, rounds: int) -> Shard:
    """The client's samples for one round: its shard cut into `rounds` disjoint parts, so the data of a
    device arrives over time and each sample is learned once."""
    x, y = shard
    return x[server_round - 1::rounds], y[server_round - 1::rounds]


def client_app(model_dir: Path, client_shards: list[Shard], rounds: int) -> ClientApp:
    """Flower client: learns its part of the round with learn.onnx and replies with its statistics."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        model = EdgeModel(model_dir)  # the device's copy of the export; never saved here
        model.state.update(empty_state(model))
        x, y = round_part(client_shards[int(context.node_config["partition-id"])], int(msg.content["config"]["server-round"]), rounds)
        if len(x):
            model.learn(x, y, shuffle_seed=None)
        arrays = ArrayRecord({k: Array(model.state[k]) for k in READOUT_LEARNED})
        metrics = MetricRecord({"num-examples": len(x), "bytes-sent": arrays.count_bytes()})
        return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


class ReadoutMerge(FedAvg):
    """FedAvg's sampling and messaging, with the average replaced by the exact merge of readout
    statistics: the new global state is the old one merged with every client's statistics."""

    def __init__(self, clients: int) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients)
        self.current: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.current = arrays  # what this round's statistics are merged into
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        good = [r for r in replies if not r.has_error()]
        if not good:
            return None, None
        states = [{k: r.content["arrays"][k].numpy() for k in READOUT_LEARNED} for r in good]
        assert self.current is not None
        merged = merge_readout([{k: self.current[k].numpy() for k in READOUT_LEARNED}, *states])
        metrics = [r.content["metrics"] for r in good]
        return ArrayRecord({k: Array(v) for k, v in merged.items()}), MetricRecord({
            "num-examples": sum(int(m["num-examples"]) for m in metrics),
            "bytes-sent-per-client": max(int(m["bytes-sent"]) for m in metrics),
            "clients": len(good)})


@dataclass
class FleetResult:
    rounds: list[dict]  # per round: accuracy of the global model, samples learned, bytes each client sent
    state: dict[str, np.ndarray]  # the final learned state


def simulate(server_main, client: ClientApp, clients: int, cpus_per_client: float) -> float:
    """Run a ServerApp main function and a ClientApp with Flower's simulation engine; returns the seconds taken."""
    from flwr.simulation import run_simulation

    server = ServerApp()
    server.main()(server_main)
    begun = time.perf_counter()
    run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": cpus_per_client}, "init_args": {"log_to_driver": False}})
    return time.perf_counter() - begun


def run_fleet(model_dir: Path, experiences: list[Shard], test: Shard, clients: int, rounds: int,
              from_scratch: bool = True, cpus_per_client: float = 1.0) -> FleetResult:
    """Flower's simulation engine on this machine: `clients` clients over `rounds` rounds (see the module
    docstring). `from_scratch`: the global readout starts empty (only the fixed features are shared),
    else from the export's state."""
    model = EdgeModel(model_dir)
    if model.manifest["kind"] != "readout":
        raise EdgeError(f"{model_dir}: a {model.manifest['kind']} model; the fleet learns LDA readout exports (random-lda, softhebb-lda)")
    start = empty_state(model) if from_scratch else {k: model.state[k] for k in READOUT_LEARNED}
    history: list[dict] = []
    final: dict[str, np.ndarray] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.state.update({k: arrays[k].numpy() for k in READOUT_LEARNED})
        model.refresh()  # the classifier, solved by the model's refresh graph
        accuracy = model.accuracy(*test)
        history.append({"round": server_round, "accuracy": accuracy, "seen": int(model.state["count"].sum())})
        final.update({k: model.state[k] for k in READOUT_LEARNED})
        return MetricRecord({"accuracy": accuracy})

    def main(grid: Grid, context: Context) -> None:
        result = ReadoutMerge(clients).start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in start.items()}),
                                             num_rounds=rounds, evaluate_fn=evaluate)
        for r, metrics in result.train_metrics_clientapp.items():
            history[r].update({"samples": int(metrics["num-examples"]), "bytes_sent_per_client": int(metrics["bytes-sent-per-client"]),
                               "clients": int(metrics["clients"])})

    seconds = simulate(main, client_app(Path(model_dir), shards(experiences, clients), rounds), clients, cpus_per_client)
    if len(history) != rounds + 1:
        raise EdgeError(f"the simulation finished {len(history) - 1} of {rounds} rounds; see Flower's log above")
    history[-1]["seconds"] = seconds
    return FleetResult(history, final)


def backprop_net(input_size: int, hidden: int, classes: int):
    """The baseline users compare against: a one-hidden-layer network trained by backprop."""
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(input_size, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def fedavg_client_app(client_shards: list[Shard], hidden: int, classes: int, epochs: int, lr: float) -> ClientApp:
    """Flower client of the FedAvg baseline: `epochs` local epochs of SGD on all of its data each round."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(1)  # the simulation runs clients side by side
        x, y = client_shards[int(context.node_config["partition-id"])]
        net = backprop_net(int(np.prod(x.shape[1:])), hidden, classes)
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        optimiser = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        images, labels = torch.from_numpy(x).float() / 255, torch.from_numpy(y)
        generator = torch.Generator().manual_seed(int(msg.content["config"]["server-round"]))
        for _ in range(epochs):
            for idx in torch.randperm(len(images), generator=generator).split(64):
                optimiser.zero_grad()
                F.cross_entropy(net(images[idx]), labels[idx]).backward()
                optimiser.step()
        arrays = ArrayRecord(net.state_dict())
        metrics = MetricRecord({"num-examples": len(x), "bytes-sent": arrays.count_bytes()})
        return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def run_fedavg(experiences: list[Shard], test: Shard, clients: int, rounds: int, hidden: int = 256, epochs: int = 1,
               lr: float = 0.05, seed: int = 0, cpus_per_client: float = 1.0) -> list[dict]:
    """The FedAvg baseline on the same clients and splits as ``run_fleet``, with Flower's own FedAvg: each round
    every client trains the global network on all its data and the server averages the weights by sample count."""
    import torch

    torch.manual_seed(seed)
    classes = int(max(y.max() for _, y in experiences)) + 1
    net = backprop_net(int(np.prod(test[0].shape[1:])), hidden, classes)
    images = torch.from_numpy(test[0]).float() / 255
    history: list[dict] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net.load_state_dict(arrays.to_torch_state_dict())
        with torch.no_grad():
            accuracy = float((net(images).argmax(1).numpy() == test[1]).mean())
        history.append({"round": server_round, "accuracy": accuracy})
        return MetricRecord({"accuracy": accuracy})

    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds, evaluate_fn=evaluate)
        for r, metrics in result.train_metrics_clientapp.items():
            history[r]["bytes_sent_per_client"] = int(metrics["bytes-sent"])  # every client sends the whole network

    seconds = simulate(main, fedavg_client_app(shards(experiences, clients), hidden, classes, epochs, lr), clients, cpus_per_client)
    if len(history) != rounds + 1:
        raise EdgeError(f"the simulation finished {len(history) - 1} of {rounds} rounds; see Flower's log above")
    history[-1]["seconds"] = seconds
    return history


def save_fleet(model_dir: Path, result: FleetResult, out: Path) -> Path:
    """The fleet's model (a copy of the export with the final state, classifier refreshed) and fleet.json, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    shutil.copytree(model_dir, out / "model")
    write_learned(out / "model", result.state)
    save_json(out / "fleet.json", result.rounds)
    return out


def load_experiences(data_dir: Path) -> tuple[list[Shard], Shard]:
    """The expK-train files of `hebbedge stream-data`, and every expK-test file joined (class-incremental accuracy)."""
    train = [load_arrays(p) for p in sorted(data_dir.glob("exp*-train.safetensors"))]
    tests = [load_arrays(p) for p in sorted(data_dir.glob("exp*-test.safetensors"))]
    if not train or not tests:
        raise EdgeError(f"{data_dir}: no expK-train/expK-test.safetensors files (`hebbedge stream-data` writes them)")
    return train, (np.concatenate([x for x, _ in tests]), np.concatenate([y for _, y in tests]))  # type: ignore[misc]
