"""hebbedge.files: atomic writes with the umask's mode, and readers whose only error names the file."""

import os
import stat
from pathlib import Path

import pytest
import torch

from hebbedge.files import BadFileError, atomic_write, load_torch, read_json, remove_temporaries, save_json


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_mode_the_umask_says(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        save_json(tmp_path / "a.json", {"x": 1})
        atomic_write(tmp_path / "b.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {mode}


def test_read_json_names_the_file_and_what_was_expected(tmp_path):
    path = tmp_path / "config.json"
    for content in (b"", b"{", b"\xff\xfe", b'{"a": }'):
        path.write_bytes(content)
        with pytest.raises(BadFileError, match=f"^{path}: expected a run record in JSON, but it does not parse"):
            read_json(path, "a run record")
    with pytest.raises(BadFileError, match=f"^{tmp_path / 'none.json'}: cannot read a run record"):
        read_json(tmp_path / "none.json", "a run record")


class Boom:
    """Unpickling this would create a file: the proof that code ran."""

    marker = ""

    def __reduce__(self):
        return open, (self.marker, "w")


def test_load_torch_runs_no_code_and_names_the_file(tmp_path):
    Boom.marker = str(tmp_path / "ran")
    torch.save({"weights": torch.zeros(2), "payload": Boom()}, tmp_path / "evil.pt")
    with pytest.raises(BadFileError, match=r"evil.pt: expected model weights .* \(not loaded: unpickling those could run code\)"):
        load_torch(tmp_path / "evil.pt", "model weights")
    assert not (tmp_path / "ran").exists()
    torch.save({"w": torch.arange(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_torch(tmp_path / "ok.pt", "model weights")["w"], torch.arange(3))
    (tmp_path / "short.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:100])
    with pytest.raises(BadFileError, match=r"short.pt: expected model weights \(a PyTorch file of tensors\), but it"):
        load_torch(tmp_path / "short.pt", "model weights")


def test_remove_temporaries_removes_only_atomic_writes_leftovers(tmp_path):
    (tmp_path / ".model.pt.1a2b3c4d.tmp").write_bytes(b"half")
    (tmp_path / "model.pt").write_bytes(b"whole")
    remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
