"""Flower's deployment engine: a SuperLink, two SuperNodes and `flwr run` of export/flower_app as separate
processes on the loopback address; the fleet's state is that of one device on the two clients' union."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from test_fleet import assert_one_device_on, make_fleet
from tinydata import write_tiny_mnist

pytest.importorskip("flwr", reason="the fleet extra (flwr[simulation]) is not installed")

from hebbedge.export.edge import EdgeModel  # noqa: E402
from hebbedge.export.fleet import load_experiences  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "export" / "flower_app"
BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode and flwr are installed beside the interpreter
DEADLINE = 120.0  # seconds allowed from the SuperLink's start to the ServerApp's fleet.json (about 20-40 s; slower on a loaded machine)


def free_ports(n: int) -> list[int]:
    """n loopback ports nothing listens on now (bound together, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Processes:
    """Processes started for one test, each in its own session with its log in `logs`; on exit every one of them
    and every process they started (Flower's SuperExec and app subprocesses) is terminated, then killed."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.started: dict[str, subprocess.Popen] = {}
        self.tree: list[psutil.Process] = []  # after exit: everything that was stopped
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.started[name] = proc
        return proc

    def tails(self, lines: int = 15) -> str:
        """The end of every log, for a failure's message."""
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                         for p in sorted(self.logs.glob("*.log")))

    def wait_for_port(self, port: int, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.started[name].poll() is not None:
                raise AssertionError(f"{name} exited with {self.started[name].returncode}\n{self.tails()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{name} did not listen on 127.0.0.1:{port} in time\n{self.tails()}")

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        tree: list[psutil.Process] = []
        for proc in self.started.values():
            try:
                parent = psutil.Process(proc.pid)
                tree += [parent, *parent.children(recursive=True)]  # the SuperLink's SuperExec runs in a session of its own
            except psutil.NoSuchProcess:
                pass
        for p in tree:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.tree = tree
        for proc in self.started.values():
            proc.wait(timeout=5)  # reaped: no zombie left behind


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The fleet's export and made-up Split-MNIST files (no real data needed)."""
    tmp = tmp_path_factory.mktemp("deploy")
    return make_fleet(tmp, data_dir=str(write_tiny_mnist(tmp / "mnist", 200, 100)))


def test_superlink_and_two_supernodes_run_the_fleet_app_to_the_state_of_one_device(setup, tmp_path):
    link, *nodes = free_ports(3)
    home = tmp_path / "flwr"  # Flower's config (the SuperLink connection) and installed apps, nothing of the user's
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "fleet"\n\n[superlink.fleet]\n'
                                      f'address = "127.0.0.1:{link}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}  # SuperExecs start the apps sooner (default: polls every second)
    edge, data, out = setup / "edge", setup / "data", tmp_path / "out"
    begun = time.monotonic()
    with Processes(tmp_path / "logs", env) as procs:
        procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(link),
                                  "--disable-runtime-dependency-installation"])  # the app's dependencies are installed here
        procs.wait_for_port(link, "superlink", begun + DEADLINE)
        for i, port in enumerate(nodes):
            procs.start(f"supernode{i}", [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                                          "--port", str(port), "--node-config",
                                          f'model="{edge}" data="{data}" partition-id={i} num-partitions={len(nodes)}'])
        run = procs.start("flwr-run", [str(BIN / "flwr"), "run", str(APP), "fleet", "--stream", "--run-config",
                                       f'model="{edge}" data="{data}" out="{out}" clients={len(nodes)} rounds=1'])  # one round: under a minute on 2 busy cores
        while not (out / "fleet.json").exists() and time.monotonic() < begun + DEADLINE:
            assert run.poll() in (None, 0), f"flwr run failed\n{procs.tails()}"
            time.sleep(0.5)
        assert (out / "fleet.json").exists(), f"no fleet.json after {DEADLINE} s\n{procs.tails()}"
        seconds = time.monotonic() - begun
    rounds = json.loads((out / "fleet.json").read_text())
    print(f"deployment engine: {seconds:.1f} s to fleet.json;", rounds[-1])
    assert [r["round"] for r in rounds] == [0, 1]
    assert (rounds[1]["clients"], rounds[1]["failed"]) == (2, 0)
    experiences, test = load_experiences(data)
    fleet = EdgeModel(out / "model")
    assert rounds[-1]["accuracy"] == pytest.approx(fleet.accuracy(*test))
    assert_one_device_on(fleet.state, edge, experiences[:2], test)  # SuperNode i holds experience i
    assert rounds[-1]["seen"] == sum(len(y) for _, y in experiences[:2]) and np.isclose(fleet.state["count"].sum(), rounds[-1]["seen"])
    assert procs.tree and not [p for p in procs.tree if running(p)], "processes left running"


def running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
