"""One raftd per data directory: an exclusive flock on ``DATA_DIR/LOCK``.

Two processes appending to one WAL would interleave records and corrupt the log, and an
offline tool that opens a live node's WAL (recovery truncates a torn tail) could cut records
the node is writing.  The lock is held for the life of the process; the kernel drops it when
the process dies, kill -9 included, so there is never a stale lock to clean up.
"""
from __future__ import annotations

import fcntl
import os

LOCK_NAME = "LOCK"


class DataDirInUse(Exception):
    pass


def _holder(data_dir: str) -> str:
    try:
        with open(os.path.join(data_dir, "raftd.pid")) as f:
            return f" (pid {int(f.read().strip())})"
    except (OSError, ValueError):
        return ""


class DataDirLock:
    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(os.path.join(self.data_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(f"data_dir {self.data_dir} is in use by another raftd"
                               f"{_holder(self.data_dir)}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def in_use(data_dir: str) -> str | None:
    """For offline tools: a message if a raftd holds ``data_dir``, else None.  Takes and
    drops the lock without creating anything (a directory never run has no LOCK file)."""
    try:
        fd = os.open(os.path.join(data_dir, LOCK_NAME), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"{data_dir} is in use by a running raftd{_holder(data_dir)}; stop it first"
    finally:
        os.close(fd)  # also drops the lock if we got it
    return None
