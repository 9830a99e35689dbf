"""Every file the host side reads, damaged at many places: the only error is a one-line
"FILE: what was expected" (a ValueError, which the CLI prints as `error: ...` with exit 2)."""

import shutil

import pytest

from hebbedge.files import BadFileError
from hebbedge.scenarios import configs


def damaged(raw: bytes, n: int = 30) -> list[tuple[str, bytes]]:
    """`raw` cut short at n offsets, and with one byte flipped at n offsets, spread over the whole file."""
    offsets = sorted({int(k * (len(raw) - 1) / (n - 1)) for k in range(n)})
    return ([(f"cut at {o}", raw[:o]) for o in offsets]
            + [(f"flipped at {o}", raw[:o] + bytes([raw[o] ^ 0x5A]) + raw[o + 1:]) for o in offsets])


def one_line_naming(err: Exception, path) -> None:
    assert str(err).startswith(f"{path}: ") and "\n" not in str(err), err


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A copy of the stream configs that a test may damage."""
    folder = tmp_path / "configs"
    shutil.copytree(configs.CONFIG_DIR, folder)
    monkeypatch.setattr(configs, "CONFIG_DIR", folder)
    return folder


def test_a_damaged_stream_config_is_a_one_line_error_naming_it(config_dir):
    from hebbedge.continual import StreamRun

    path = config_dir / "split-mnist.toml"
    good = path.read_bytes()
    for how, raw in damaged(good):
        path.write_bytes(raw)
        try:
            StreamRun("split-mnist")  # loads and checks the config
        except BadFileError as err:
            one_line_naming(err, path)
        except ValueError as err:  # a value changed into another valid one, checked by name
            assert "stream." in str(err) and "\n" not in str(err), (how, err)


def test_a_missing_config_key_names_the_file_and_the_key(config_dir):
    path = config_dir / "split-mnist.toml"
    path.write_text(path.read_text().replace("eval_batch_size = 1000\n", ""))
    with pytest.raises(BadFileError, match=f"^{path}: no key 'eval_batch_size' in \\[stream\\]"):
        configs.load_config("split-mnist")["stream"]["eval_batch_size"]
    with pytest.raises(BadFileError, match=f"^{path}: no \\[readout\\] section"):
        configs.load_config("split-mnist")["readout"]
    (config_dir / "split-mnist-from-fmnist.toml").write_text('base = "nope"\n')
    with pytest.raises(BadFileError, match="split-mnist-from-fmnist.toml: base = 'nope' names no stream"):
        configs.load_config("split-mnist-from-fmnist")
