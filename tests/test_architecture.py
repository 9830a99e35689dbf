"""The package's shape: imports point one way (no cycle; the core imports neither Avalanche nor the
command line), and every learner of the registry runs through `train`, `compare` and, where the
registry says so, `export`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hebbedge import registry
from hebbedge.cli.app import app
from tinydata import write_tiny_mnist

ROOT = Path(__file__).parents[1]
# Where each installed package's source lives (pyproject.toml's package-dir).
PACKAGES = {"hebbedge": ROOT / "hebbedge", "hebbedge.cli": ROOT / "cli", "hebbedge.scenarios": ROOT / "scenarios",
            "hebbedge.export": ROOT / "export", "hebbedge.benchmarks": ROOT / "hebbedge" / "benchmarks"}
CORE = ("hebbedge.layers", "hebbedge.rules", "hebbedge.learner", "hebbedge.readout")


def modules() -> dict[str, Path]:
    """Every module of the package, by its dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING")


def imported(path: Path, known: set[str]) -> set[str]:
    """The modules `path` imports, at module level and inside functions, outside `if TYPE_CHECKING:`:
    package modules by name (a package's import runs its __init__ too), others by their top-level name."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    out = set()
    for name in names:
        parts = name.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        out |= {p for p in prefixes if p in known} if parts[0] == "hebbedge" else {parts[0]}
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports. A module's own packages are left out: their __init__ has
    started running before the module is imported, as Python imports a package first."""
    found = modules()
    graph = {}
    for name, path in found.items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = imported(path, set(found)) - {name} - ancestors
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_find_cycle_reports_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert {"hebbedge.continual", "hebbedge.registry", "hebbedge.cli.app", "hebbedge.export.onnx"} <= set(graph)
    cycle = find_cycle({name: {m for m in deps if m.startswith("hebbedge")} for name, deps in graph.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += graph.get(node, ())
    return seen


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_neither_avalanche_nor_the_command_line(core):
    graph = import_graph()
    reached = reachable(graph, core)
    bad = sorted(m for m in reached if m in ("avalanche", "typer", "click") or m.startswith("hebbedge.cli")
                 or m.startswith(("hebbedge.continual", "hebbedge.strategy", "hebbedge.metrics", "hebbedge.benchmarks")))
    assert not bad, f"{core} reaches {bad}"


def test_the_core_loads_without_avalanche_at_run_time():
    code = ("import sys; import hebbedge.layers, hebbedge.rules, hebbedge.learner, hebbedge.readout; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('avalanche', 'typer') or m.startswith('hebbedge.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_the_library_does_not_import_the_benchmarks_or_the_protocols():
    graph = import_graph()
    for name in ("hebbedge.continual", "hebbedge.train", "hebbedge.nets", "hebbedge.runfolder", "hebbedge.export.onnx"):
        bad = sorted(m for m in graph[name] if m.startswith("hebbedge.benchmarks"))
        assert not bad, f"{name} imports {bad}"
    assert not {"hebbedge.continual", "hebbedge.train"} & reachable(graph, "hebbedge.export.onnx")


# --- every learner of the registry through the command line -------------------------------------

TINY = ["--device", "cpu", "--set", "model.widths=[8,8]"]  # (a hybrid stack names 2 hidden layers)


def invoke(args: list[str], data: Path) -> None:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data)])
    assert result.exit_code == 0, (args, result.output)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_tiny_mnist(root)
    write_tiny_mnist(root, name="fashion-mnist", seed=1)
    return root


def stream_of(learner: registry.Learner) -> list[str]:
    """A stream the learner runs on, with a small network."""
    if learner.pretrained:
        return ["split-mnist-from-fmnist", "--set", "readout.channels=2"]
    return ["split-mnist"]


@pytest.mark.parametrize("name", registry.names())
def test_every_learner_trains_and_exports(name, data, tmp_path):
    learner = registry.LEARNERS[name]
    runs = []
    if learner.stream:
        runs.append(tmp_path / "stream")
        invoke(["train", *stream_of(learner), "--learner", name, "--experiences", "1", *TINY, "--out", str(runs[-1])], data)
    if learner.iid:
        runs.append(tmp_path / "iid")
        invoke(["train", "mnist", "--learner", name, "--widths", "8", "--epochs", "1", "--val-size", "20", "--device", "cpu",
                "--set", "hebbian.eta=0.002", "--out", str(runs[-1])], data)
    assert runs
    for run in runs:
        result = CliRunner().invoke(app, ["export", str(run)])
        if learner.exports:
            assert result.exit_code == 0 and (run / "edge" / "manifest.json").exists(), result.output
        else:
            assert result.exit_code == 2 and "not supported" in result.output


def test_every_stream_learner_runs_through_compare(data, tmp_path):
    plain = [n for n in registry.names("stream") if not registry.LEARNERS[n].pretrained]
    pretrained = [n for n in registry.names("stream") if registry.LEARNERS[n].pretrained]
    for stream, names in ((["split-mnist"], plain), (["split-mnist-from-fmnist", "--set", "readout.channels=2"], pretrained)):
        out = tmp_path / stream[0]
        invoke(["compare", *stream, "--learners", ",".join(names), "--seeds", "1", *TINY, "--out", str(out)], data)
        assert all((out / name / "seed0" / "metrics.json").exists() for name in names)
        cost = json.loads((out / "results.json").read_text())["cost"]
        assert all(c["ms_per_sample"][0] > 0 for c in cost.values()), cost
        if "conv-lda" in cost:  # its 128 channels x 4 x 4, whatever the MLP's widths; the backprop head reads 8
            assert cost["conv-lda"]["features"] == 2048 and cost["conv-lda"]["readout_state_bytes"] == 4 * (10 + 10 * 2048 + 2048 ** 2)
            assert cost["naive"]["features"] == 8 and cost["naive"]["readout_state_bytes"] is None


def test_the_command_line_reads_the_registry():
    import typer

    commands = typer.main.get_command(app).commands
    option = {name: {p.name: p for p in commands[name].params} for name in ("train", "compare")}
    assert all(name in option["train"]["learner"].help for name in registry.names())
    assert option["compare"]["learners"].default == ",".join(registry.names("stream", compare_default=True))
