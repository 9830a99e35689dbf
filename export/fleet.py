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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


def join_rounds(clients: int, join_every: int) -> list[int]:
    """The round in which each client joins the fleet: all in round 1 (`join_every` 0), else client i in
    round 1 + i * join_every (one new client every `join_every` rounds)."""
    if join_every < 0:
        raise EdgeError(f"join_every must be 0 (every client from round 1) or a number of rounds, got {join_every}")
    return [1 + i * join_every for i in range(clients)]


def round_part(shard: Shard, server_round: int, rounds: int, joined: int = 1) -> Shard:
    """The client's samples for one round: its shard cut into one disjoint part per round from the round it
    joined to the last, so the data of a device arrives over time and each sample is learned once."""
    x, y = shard
    parts = rounds - joined + 1
    return x[server_round - joined::parts], y[server_round - joined::parts]


def readout_reply(msg: Message, model_dir: Path, shard: Shard, joined: int = 1) -> Message:
    """What a client answers a train message with: the statistics of its part of the round, learned with
    learn.onnx from an empty readout. A client that has not joined yet (simulation: every client is a
    Flower node from round 1) answers with no statistics and `joined` 0, and the server ignores it."""
    config = msg.content["config"]
    server_round, rounds = int(config["server-round"]), int(config["rounds"])
    if server_round < joined:
        metrics = MetricRecord({"num-examples": 0, "bytes-sent": 0, "joined": 0})
        return Message(content=RecordDict({"arrays": ArrayRecord(), "metrics": metrics}), reply_to=msg)
    model = EdgeModel(model_dir)  # the device's copy of the export; never saved here
    model.state.update(empty_state(model))
    x, y = round_part(shard, server_round, rounds, joined)
    if len(x):
        model.learn(x, y, shuffle_seed=None)
    arrays = ArrayRecord({k: Array(model.state[k]) for k in READOUT_LEARNED})
    metrics = MetricRecord({"num-examples": len(x), "bytes-sent": arrays.count_bytes(), "joined": 1})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def client_app(model_dir: Path, client_shards: list[Shard], joins: list[int]) -> ClientApp:
    """Flower client of the simulation: node `partition-id` holds `client_shards[partition-id]` and joins
    in round `joins[partition-id]`."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        return readout_reply(msg, model_dir, client_shards[i], joins[i])

    return app


class ReadoutMerge(FedAvg):
    """FedAvg's sampling and messaging, with the average replaced by the exact merge of readout
    statistics: the new global state is the old one merged with every joined client's statistics."""

    def __init__(self, clients: int) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients)
        self.current: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.current = arrays  # what this round's statistics are merged into
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        good = [r for r in replies if not r.has_error()]
        joined = [r for r in good if int(r.content["metrics"]["joined"])]
        states = [{k: r.content["arrays"][k].numpy() for k in READOUT_LEARNED} for r in joined]
        assert self.current is not None
        merged = merge_readout([{k: self.current[k].numpy() for k in READOUT_LEARNED}, *states])
        metrics = [r.content["metrics"] for r in joined]
        return ArrayRecord({k: Array(v) for k, v in merged.items()}), MetricRecord({
            "num-examples": sum(int(m["num-examples"]) for m in metrics),
            "bytes-sent-per-client": max((int(m["bytes-sent"]) for m in metrics), default=0),
            "clients": len(joined), "failed": len(replies) - len(good)})  # a failed client's samples are missing from the state


@dataclass
class FleetResult:
    rounds: list[dict]  # per round: accuracy of the global model, samples learned, bytes each client sent, clients joined
    state: dict[str, np.ndarray]  # the final learned state


def readout_model(model_dir: Path) -> EdgeModel:
    """The exported model a fleet learns, refused unless it is an LDA readout."""
    model = EdgeModel(model_dir)
    if model.manifest["kind"] != "readout":
        raise EdgeError(f"{model_dir}: a {model.manifest['kind']} model; the fleet learns LDA readout exports (random-lda, softhebb-lda)")
    return model


def serve_readout(grid: Grid, model_dir: Path, test: Shard, clients: int, rounds: int, from_scratch: bool = True) -> FleetResult:
    """The server's side of a readout fleet, the same under the simulation and the deployment engine: waits
    for `clients` nodes, runs `rounds` rounds of ``ReadoutMerge`` and evaluates the global state on `test`
    after each (the classifier solved by the model's refresh graph). `from_scratch`: the global readout
    starts empty (only the fixed features are shared), else from the export's state."""
    model = readout_model(model_dir)
    start = empty_state(model) if from_scratch else {k: model.state[k] for k in READOUT_LEARNED}
    history: list[dict] = []
    final: dict[str, np.ndarray] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.state.update({k: arrays[k].numpy() for k in READOUT_LEARNED})
        model.refresh()
        accuracy = model.accuracy(*test)
        history.append({"round": server_round, "accuracy": accuracy, "seen": int(model.state["count"].sum())})
        final.update({k: model.state[k] for k in READOUT_LEARNED})
        return MetricRecord({"accuracy": accuracy})

    begun = time.perf_counter()
    result = ReadoutMerge(clients).start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in start.items()}),
                                         num_rounds=rounds, train_config=ConfigRecord({"rounds": rounds}), evaluate_fn=evaluate)
    for r, metrics in result.train_metrics_clientapp.items():
        history[r].update({"samples": int(metrics["num-examples"]), "bytes_sent_per_client": int(metrics["bytes-sent-per-client"]),
                           "clients": int(metrics["clients"]), "failed": int(metrics["failed"])})
    if len(history) != rounds + 1:
        raise EdgeError(f"the fleet finished {len(history) - 1} of {rounds} rounds; see Flower's log above")
    history[-1]["seconds"] = time.perf_counter() - begun
    return FleetResult(history, final)


def simulate(server_main, client: ClientApp, clients: int, cpus_per_client: float) -> None:
    """Run a ServerApp main function and a ClientApp with Flower's simulation engine."""
    from flwr.simulation import run_simulation

    server = ServerApp()
    server.main()(server_main)
    run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": cpus_per_client}, "init_args": {"log_to_driver": False}})


def run_fleet(model_dir: Path, experiences: list[Shard], test: Shard, clients: int, rounds: int,
              from_scratch: bool = True, cpus_per_client: float = 1.0, join_every: int = 0) -> FleetResult:
    """Flower's simulation engine on this machine: `clients` clients over `rounds` rounds (see the module
    docstring); with `join_every` > 0, client i joins in round 1 + i * join_every (``join_rounds``)."""
    readout_model(model_dir)  # refused before Ray starts
    joins = join_rounds(clients, join_every)
    results: list[FleetResult] = []

    def main(grid: Grid, context: Context) -> None:
        results.append(serve_readout(grid, Path(model_dir), test, clients, rounds, from_scratch))

    simulate(main, client_app(Path(model_dir), shards(experiences, clients), joins), clients, cpus_per_client)
    if not results:
        raise EdgeError("the simulation ended before the fleet finished; see Flower's log above")
    failed = {r["round"]: r["failed"] for r in results[0].rounds[1:] if r["failed"]}
    if failed:  # in a simulation every client is reachable: a failure is a bug, not a device that went away
        raise EdgeError(f"clients failed in rounds {failed} (round: clients); see Flower's log above")
    return results[0]


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside, the caller's thread count restored after (a library call must not change it
    for the rest of the process: GEMM results depend on the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def backprop_net(input_size: int, hidden: int, classes: int):
    """The baseline users compare against: a one-hidden-layer network trained by backprop."""
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(input_size, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def sgd_epochs(net, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int) -> None:
    """`epochs` epochs of SGD (momentum 0.9, batches of 64, cross-entropy) on images `x` (uint8) and labels `y`:
    a FedAvg client's local training each round, and the centralised network's on the union."""
    import torch
    import torch.nn.functional as F

    optimiser = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    images, labels = torch.from_numpy(x).float() / 255, torch.from_numpy(y).long()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=generator).split(64):
            optimiser.zero_grad()
            F.cross_entropy(net(images[idx]), labels[idx]).backward()
            optimiser.step()


def net_accuracy(net, test: Shard) -> float:
    """Class-incremental accuracy of a backprop network on every test experience."""
    import torch

    with torch.no_grad():
        return float((net(torch.from_numpy(test[0]).float() / 255).argmax(1).numpy() == test[1]).mean())


def fedavg_client_app(client_shards: list[Shard], hidden: int, classes: int, epochs: int, lr: float) -> ClientApp:
    """Flower client of the FedAvg baseline: `epochs` local epochs of SGD on all of its data each round."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        x, y = client_shards[int(context.node_config["partition-id"])]
        net = backprop_net(int(np.prod(x.shape[1:])), hidden, classes)
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        with one_thread():  # the simulation runs clients side by side
            sgd_epochs(net, x, y, epochs, lr, seed=int(msg.content["config"]["server-round"]))
        arrays = ArrayRecord(net.state_dict())
        metrics = MetricRecord({"num-examples": len(x), "bytes-sent": arrays.count_bytes()})
        return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def initial_net(experiences: list[Shard], test: Shard, hidden: int, seed: int):
    """The backprop network both the FedAvg baseline and the centralised run start from (the same seed, the same weights)."""
    import torch

    torch.manual_seed(seed)
    classes = int(max(y.max() for _, y in experiences)) + 1
    return backprop_net(int(np.prod(test[0].shape[1:])), hidden, classes), classes


def run_fedavg(experiences: list[Shard], test: Shard, clients: int, rounds: int, hidden: int = 256, epochs: int = 1,
               lr: float = 0.05, seed: int = 0, cpus_per_client: float = 1.0) -> list[dict]:
    """The FedAvg baseline on the same clients and splits as ``run_fleet``, with Flower's own FedAvg: each round
    every client trains the global network on all its data and the server averages the weights by sample count."""
    net, classes = initial_net(experiences, test, hidden, seed)
    history: list[dict] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net.load_state_dict(arrays.to_torch_state_dict())
        history.append({"round": server_round, "accuracy": net_accuracy(net, test)})
        return MetricRecord({"accuracy": history[-1]["accuracy"]})

    def main(grid: Grid, context: Context) -> None:
        begun = time.perf_counter()
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=clients, min_available_nodes=clients)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds, evaluate_fn=evaluate)
        for r, metrics in result.train_metrics_clientapp.items():
            history[r]["bytes_sent_per_client"] = int(metrics["bytes-sent"])  # every client sends the whole network
        history[-1]["seconds"] = time.perf_counter() - begun

    simulate(main, fedavg_client_app(shards(experiences, clients), hidden, classes, epochs, lr), clients, cpus_per_client)
    if len(history) != rounds + 1 or "seconds" not in history[-1]:
        raise EdgeError(f"the simulation finished {max(len(history) - 1, 0)} of {rounds} rounds; see Flower's log above")
    return history


def union(experiences: list[Shard], clients: int) -> Shard:
    """Every sample some client of a `clients` fleet holds, in one place (what a centralised run trains on)."""
    split = shards(experiences, clients)
    return np.concatenate([x for x, _ in split]), np.concatenate([y for _, y in split])


def run_centralised(experiences: list[Shard], test: Shard, clients: int, rounds: int, hidden: int = 256, epochs: int = 1,
                    lr: float = 0.05, seed: int = 0) -> list[dict]:
    """The upper bound users compare FedAvg with: the same network from the same initial weights, trained by SGD on
    the union of the clients' data (shuffled together: joint training, no forgetting), `epochs` epochs per round for
    `rounds` rounds, the epochs each FedAvg client runs. What each client sends is its images and labels, once."""
    net, _ = initial_net(experiences, test, hidden, seed)
    x, y = union(experiences, clients)
    sent = max(a.nbytes + b.nbytes for a, b in shards(experiences, clients))
    history = [{"round": 0, "accuracy": net_accuracy(net, test)}]
    begun = time.perf_counter()
    for r in range(1, rounds + 1):
        with one_thread():  # the same single thread a FedAvg client trains with
            sgd_epochs(net, x, y, epochs, lr, seed=r)
        history.append({"round": r, "accuracy": net_accuracy(net, test), "bytes_sent_per_client": sent if r == 1 else 0})
    history[-1]["seconds"] = time.perf_counter() - begun
    return history


def run_one_device(model_dir: Path, experiences: list[Shard], test: Shard, clients: int, from_scratch: bool = True) -> FleetResult:
    """One device that learns the union of the clients' data with the exported cycle: what the readout fleet must equal."""
    model = readout_model(model_dir)
    if from_scratch:
        model.state.update(empty_state(model))
        model.refresh()
    rounds = [{"round": 0, "accuracy": model.accuracy(*test), "seen": int(model.state["count"].sum())}]
    begun = time.perf_counter()
    x, y = union(experiences, clients)
    model.learn(x, y)
    sent = max(a.nbytes + b.nbytes for a, b in shards(experiences, clients))  # each client's images and labels, once
    rounds.append({"round": 1, "accuracy": model.accuracy(*test), "seen": int(model.state["count"].sum()),
                   "bytes_sent_per_client": sent, "seconds": time.perf_counter() - begun})
    return FleetResult(rounds, {k: model.state[k] for k in READOUT_LEARNED})


def save_fleet(model_dir: Path, result: FleetResult, out: Path) -> Path:
    """The fleet's model (a copy of the export with the final state, classifier refreshed) and fleet.json, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    shutil.copytree(model_dir, out / "model")
    write_learned(out / "model", result.state)
    save_json(out / "fleet.json", result.rounds)
    return out


def load_test(data_dir: Path) -> Shard:
    """Every expK-test file of `hebbedge stream-data` joined: the class-incremental test set."""
    tests = [load_arrays(p) for p in sorted(Path(data_dir).glob("exp*-test.safetensors"))]
    if not tests:
        raise EdgeError(f"{data_dir}: no expK-test.safetensors files (`hebbedge stream-data` writes them)")
    return np.concatenate([x for x, _ in tests]), np.concatenate([y for _, y in tests])


def load_experiences(data_dir: Path) -> tuple[list[Shard], Shard]:
    """The expK-train files of `hebbedge stream-data`, and the joined test set (``load_test``)."""
    train = [load_arrays(p) for p in sorted(Path(data_dir).glob("exp*-train.safetensors"))]
    if not train:
        raise EdgeError(f"{data_dir}: no expK-train.safetensors files (`hebbedge stream-data` writes them)")
    return train, load_test(data_dir)  # type: ignore[return-value]


# Flower's deployment engine: the same client and server as separate processes (SuperLink, SuperNodes, `flwr run`).
# export/flower_app/ is the Flower App whose components are these two; the run's settings come from its run config
# (server) and each SuperNode's node config (client), see docs/edge.md.

def deployed_client_app() -> ClientApp:
    """The ClientApp of a SuperNode started with --node-config 'model="EXPORT" data="DATA" partition-id=I
    num-partitions=N': it holds client I's shard of the stream in DATA (``shards``) and learns it with EXPORT."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        node = context.node_config
        missing = [k for k in ("model", "data", "partition-id", "num-partitions") if k not in node]
        if missing:
            raise EdgeError(f"the SuperNode's --node-config lacks {', '.join(missing)}; expected "
                            "'model=\"EXPORT\" data=\"DATA\" partition-id=I num-partitions=N'")
        experiences, _ = load_experiences(Path(str(node["data"])))
        shard = shards(experiences, int(node["num-partitions"]))[int(node["partition-id"])]
        return readout_reply(msg, Path(str(node["model"])), shard)

    return app


def deployed_server_app() -> ServerApp:
    """The ServerApp: run config model (the export), data (its test files are evaluated), clients (nodes waited for),
    rounds, out (where the fleet's model/ and fleet.json are written, as `hebbedge fleet` writes them)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = context.run_config
        missing = [k for k in ("model", "data", "clients", "rounds", "out") if not str(config.get(k, ""))]
        if missing:
            raise EdgeError(f"the run config lacks {', '.join(missing)}; set them with flwr run --run-config "
                            "'model=\"EXPORT\" data=\"DATA\" clients=N rounds=R out=\"DIR\"'")
        model_dir = Path(str(config["model"]))
        result = serve_readout(grid, model_dir, load_test(Path(str(config["data"]))), int(config["clients"]),
                               int(config["rounds"]), from_scratch=bool(config.get("from-scratch", True)))
        save_fleet(model_dir, result, Path(str(config["out"])))

    return app


# The fleet report: runs of `hebbedge fleet` (each folder's fleet.json) side by side, as results/fleet/ holds them.
#     python -m hebbedge.export.fleet results/fleet NAME=RUN_DIR ... [--target 0.9]

METHODS = {"readout": "federated readout (exact merge)", "fedavg": "FedAvg, backprop", "centralised": "centralised backprop (joint)",
           "one-device": "one device, readout (centralised)"}


def summarise(rounds: list[dict], target: float) -> dict:
    """One run's figures: final accuracy, the first round that reached `target` (None: never), the bytes each client
    sent per round (the largest round; a centralised client sends its images once) and the seconds of its rounds."""
    reached = [r["round"] for r in rounds[1:] if r["accuracy"] >= target]
    return {"final_accuracy": rounds[-1]["accuracy"], "rounds": len(rounds) - 1,
            "rounds_to_target": reached[0] if reached else None,
            "bytes_sent_per_client_per_round": max(r.get("bytes_sent_per_client", 0) for r in rounds[1:]),
            "accuracy_per_round": [r["accuracy"] for r in rounds], "seconds": rounds[-1].get("seconds")}


def fleet_report(out: Path, runs: dict[str, tuple[str, int, list[dict]]], target: float = 0.9) -> dict:
    """results/fleet/: NAME.json (each run's rounds), summary.json, accuracy.png. `runs`: name -> (method, clients, rounds)."""
    summary = {"target_accuracy": target, "runs": {}}
    for name, (method, clients, rounds) in runs.items():
        save_json(out / f"{name}.json", rounds)
        summary["runs"][name] = {"method": method, "clients": clients, **summarise(rounds, target)}
    save_json(out / "summary.json", summary)
    plot_rounds(summary, out / "accuracy.png")
    return summary


def plot_rounds(summary: dict, path: Path) -> Path:
    """Class-incremental accuracy after each round, one line per run (a one-round run is a marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hebbedge.files import atomic_write

    fig, ax = plt.subplots(figsize=(10, 4.2))
    for k, (name, run) in enumerate(summary["runs"].items()):
        acc = [100 * a for a in run["accuracy_per_round"]]
        ax.plot(range(len(acc)), acc, marker="o", ms=3, color=f"C{k}", ls="-" if run["method"] != "one-device" else ":",
                label=f"{name}: {METHODS[run['method']]}, {run['clients']} clients ({acc[-1]:.2f}%)")
    ax.axhline(100 * summary["target_accuracy"], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="round (centralised: epochs)", ylabel="class-incremental accuracy (%)", ylim=(0, 100),
           title="Split-MNIST, clients of 2 classes each")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: the curves fill them (equal runs overlap)
    fig.tight_layout()
    written = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return written


def markdown_table(summary: dict) -> str:
    """The rows docs/edge.md shows, from summary.json."""
    target = 100 * summary["target_accuracy"]
    lines = [f"| run | method | clients | rounds | final accuracy (%) | first round ≥ {target:.0f}% | bytes sent per client per round | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in summary["runs"].items():
        reached = run["rounds_to_target"] if run["rounds_to_target"] is not None else f"not in {run['rounds']}"
        sent = f"{run['bytes_sent_per_client_per_round']:,}" + (" (images, once)" if run["method"] in ("centralised", "one-device") else "")
        lines.append(f"| {name} | {METHODS[run['method']]} | {run['clients']} | {run['rounds']} | {100 * run['final_accuracy']:.2f} | "
                     f"{reached} | {sent} | {run['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="The fleet report: fleet.json of `hebbedge fleet` runs side by side.")
    parser.add_argument("out", type=Path, help="folder for NAME.json, summary.json, accuracy.png (results/fleet)")
    parser.add_argument("runs", nargs="+", help="NAME=METHOD:CLIENTS:RUN_DIR, e.g. c5=readout:5:runs/fleet/c5")
    parser.add_argument("--target", type=float, default=0.9, help="accuracy whose first round is reported")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, _, rest = spec.partition("=")
        method, clients, run_dir = rest.split(":", 2)
        if method not in METHODS:
            parser.error(f"{spec}: the method must be one of {', '.join(METHODS)}, got {method!r}")
        runs[name] = (method, int(clients), json.loads((Path(run_dir) / "fleet.json").read_text()))
    print(markdown_table(fleet_report(args.out, runs, args.target)))


if __name__ == "__main__":
    main()
