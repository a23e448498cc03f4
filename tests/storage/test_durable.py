"""raftd.storage.durable: the helpers leave complete files and directories behind."""
import os

import pytest

from raftd.storage import durable


def test_mkdir_durable_creates_every_missing_parent(tmp_path):
    d = durable.mkdir_durable(tmp_path / "a" / "b" / "c")
    assert d.is_dir() and (tmp_path / "a" / "b").is_dir()
    assert durable.mkdir_durable(d) == d  # existing: fine


def test_write_durable_replaces_atomically_and_sets_mode(tmp_path):
    p = tmp_path / "f"
    durable.write_durable(p, b"one")
    durable.write_durable(p, b"two", mode=0o600)
    assert p.read_bytes() == b"two"
    assert os.stat(p).st_mode & 0o777 == 0o600
    assert not (tmp_path / "f.tmp").exists()


def test_copy_durable_leaves_no_temp_on_failure(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 3_000_000)
    durable.copy_durable(src, tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        durable.copy_durable(tmp_path / "missing", tmp_path / "dst2")
    assert not (tmp_path / "dst2.tmp").exists() and not (tmp_path / "dst2").exists()
