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

Runs under Flower's simulation engine (``run_fleet``: ``flwr.simulation.run_simulation``, one process
per client on Ray). Needs the `fleet` extra: ``pip install "hebbedge[fleet]"``.
"""

from __future__ import annotations

import json
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

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = ReadoutMerge(clients)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in start.items()}),
                                num_rounds=rounds, evaluate_fn=evaluate)
        for r, metrics in result.train_metrics_clientapp.items():
            history[r].update({"samples": int(metrics["num-examples"]), "bytes_sent_per_client": int(metrics["bytes-sent-per-client"]),
                               "clients": int(metrics["clients"])})

    from flwr.simulation import run_simulation

    begun = time.perf_counter()
    run_simulation(server_app=server, client_app=client_app(Path(model_dir), shards(experiences, clients), rounds),
                   num_supernodes=clients, backend_config={"client_resources": {"num_cpus": cpus_per_client}, "init_args": {"log_to_driver": False}})
    if len(history) != rounds + 1:
        raise EdgeError(f"the simulation finished {len(history) - 1} of {rounds} rounds; see Flower's log above")
    history[-1]["seconds"] = time.perf_counter() - begun
    return FleetResult(history, final)


def save_fleet(model_dir: Path, result: FleetResult, out: Path) -> Path:
    """The fleet's model (a copy of the export with the final state, classifier refreshed) and fleet.json, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    shutil.copytree(model_dir, out / "model")
    write_learned(out / "model", result.state)
    (out / "fleet.json").write_text(json.dumps(result.rounds, indent=1) + "\n")
    return out


def load_experiences(data_dir: Path) -> tuple[list[Shard], Shard]:
    """The expK-train files of `hebbedge stream-data`, and every expK-test file joined (class-incremental accuracy)."""
    train = [load_arrays(p) for p in sorted(data_dir.glob("exp*-train.safetensors"))]
    tests = [load_arrays(p) for p in sorted(data_dir.glob("exp*-test.safetensors"))]
    if not train or not tests:
        raise EdgeError(f"{data_dir}: no expK-train/expK-test.safetensors files (`hebbedge stream-data` writes them)")
    return train, (np.concatenate([x for x, _ in tests]), np.concatenate([y for _, y in tests]))  # type: ignore[misc]
