"""The result tables in README.md and docs/ equal what `python docs/tables.py` builds from results/."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("tables", Path(__file__).parents[1] / "docs" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def test_every_committed_table_equals_its_records():
    assert tables.main(check=True) == 0, "stale tables (listed above): run `python docs/tables.py`"


def test_a_changed_figure_is_found():
    text = (tables.ROOT / "docs" / "continual.md").read_text()
    assert tables.fill(text)[1] == []
    changed = text.replace("| hebbian | 29.6 ± 6.1 |", "| hebbian | 39.6 ± 6.1 |")
    assert changed != text and tables.fill(changed)[1] == ["compare-split-mnist"]
