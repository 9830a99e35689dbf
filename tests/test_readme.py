"""The README's commands, in order, run twice on small made-up data: set-up's main job, then the quick start."""

import re
import shlex

from typer.testing import CliRunner

from hebbedge.cli.app import app
from tinydata import write_tiny_mnist

README = __import__("pathlib").Path(__file__).parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """Every `hebbedge ...` line of the README's bash blocks, in order, without its comment."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["hebbedge"]:
                commands.append(words[1:])
    return commands


def small(command: list[str], data: str) -> list[str]:
    """The same command on the made-up data, with small networks (a quick run, the same code path)."""
    if command[0] in ("train", "compare"):
        scenario = command[1]
        shrink = ["--set", "readout.channels=4"] if "from" in scenario else ["--set", "model.widths=[16]"]
        return command + ["--data-dir", data, "--device", "cpu", *shrink]
    if command[0] == "stream-data":
        return command + ["--data-dir", data]
    return command


def test_every_readme_command_runs_in_order_twice(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_tiny_mnist(data)
    write_tiny_mnist(data, name="fashion-mnist", seed=1)
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    names = [c[0] for c in commands]
    assert names[:2] == ["train", "scenarios"] and "export" in names and names[-1:] == ["edge"]
    runner = CliRunner()
    for round in range(2):
        for command in commands:
            if command[:2] == ["edge", "serve"]:  # a server that runs until stopped: tests/test_browser.py drives it
                continue
            result = runner.invoke(app, small(command, str(data)))
            assert result.exit_code == 0, (round, command, result.output)


def test_readme_stays_a_five_minute_read():
    """What it is, install, quick start, glossary, results, links, layout: at most 200 lines; the rest is in docs/."""
    assert len(README.read_text().splitlines()) <= 200
