"""One raftd per data dir, always (issue 21 §7): where the data dir cannot be locked, raftd
refuses to start (exit 2 from the CLI, one line) unless `data_dir_lock: false` opts out.
A filesystem without locks is simulated by making flock fail with ENOLCK in this process."""
from __future__ import annotations

import asyncio
import errno
import fcntl

import pytest

from raftd.config import parse_config
from raftd.runtime.server import RaftServer, StartupError
from tests.e2e.harness import free_port


def _config(tmp_path, **extra):
    addr = f"127.0.0.1:{free_port('127.0.0.1')}"
    return parse_config({"id": "n1", "listen": addr, "data_dir": str(tmp_path / "n1"),
                         "peers": {"n1": addr}, **extra}, "test")


@pytest.fixture
def no_locks(monkeypatch):
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", flock)


def test_without_a_lock_raftd_refuses_to_start(tmp_path, no_locks):
    srv = RaftServer(_config(tmp_path))
    with pytest.raises(StartupError, match="cannot lock .*data_dir_lock: false"):
        asyncio.run(srv.start())


def test_data_dir_lock_false_runs_and_says_so(tmp_path, no_locks, caplog):
    async def run():
        srv = RaftServer(_config(tmp_path, data_dir_lock=False))
        await srv.start()
        await srv.stop(transfer=False)

    asyncio.run(run())
    assert "running without the data dir lock" in caplog.text
