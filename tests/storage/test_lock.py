"""raftd/storage/lock.py: one raftd per data directory."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from raftd.storage.lock import DataDirInUse, DataDirLock, hold_offline


def test_second_lock_is_refused_until_the_first_is_released(tmp_path):
    (tmp_path / "raftd.pid").write_text("4242\n")
    first = DataDirLock(str(tmp_path))
    assert first.acquire()
    with pytest.raises(DataDirInUse, match=r"in use by another raftd \(pid 4242\)"):
        DataDirLock(str(tmp_path)).acquire()  # same process, another descriptor: refused
    with pytest.raises(DataDirInUse, match="stop it first"):
        hold_offline(str(tmp_path))
    first.release()
    again = DataDirLock(str(tmp_path))
    assert again.acquire()
    again.release()


def test_offline_hold_creates_nothing_in_a_directory_never_run(tmp_path):
    lock = hold_offline(str(tmp_path))
    lock.release()
    assert os.listdir(tmp_path) == []


def test_the_lock_dies_with_its_process(tmp_path):
    code = ("import sys, time; from raftd.storage.lock import DataDirLock; "
            f"DataDirLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); "
            "time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirInUse):
            DataDirLock(str(tmp_path)).acquire()
        p.kill()
        p.wait(10)
        lock = DataDirLock(str(tmp_path))
        assert lock.acquire()  # no stale lock after kill -9
        lock.release()
    finally:
        if p.poll() is None:
            p.kill()
