"""Shared fixtures."""

import pytest

from hebbedge import data


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data anywhere: every root of the search path is an empty tmp folder."""
    monkeypatch.delenv("HEBBEDGE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "SYSTEM_ROOT", tmp_path / "system")
    monkeypatch.setattr(data, "PACKAGE_ROOT", tmp_path / "package")
    return tmp_path
