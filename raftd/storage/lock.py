"""One raftd per data directory: an exclusive flock on ``DATA_DIR/LOCK``.

Two processes appending to one WAL would interleave records and corrupt the log, and an
offline tool that opens a live node's WAL (recovery truncates a torn tail) could cut records
the node is writing.  The lock is held for the life of the process; the kernel drops it when
the process dies, kill -9 included, so there is never a stale lock to clean up.

Where the lock cannot be taken (ENOLCK, EOPNOTSUPP: some NFS set-ups; a read-only LOCK file)
``acquire`` returns False and says why in ``failure``.  raftd then refuses to start unless the
config says ``data_dir_lock: false`` (issue 21 §7: two servers on one data dir wrote the same
WAL); offline tools go on, since they only read.
"""
from __future__ import annotations

import errno
import os

from raftd.storage.fs import OS, FileSystem

LOCK_NAME = "LOCK"
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


class DataDirInUse(Exception):
    pass


def _holder(data_dir: str) -> str:
    try:
        with open(os.path.join(data_dir, "raftd.pid")) as f:
            return f" (pid {int(f.read().strip())})"
    except (OSError, ValueError):
        return ""


class DataDirLock:
    def __init__(self, data_dir: str, create: bool = True, fs: FileSystem = OS):
        self.data_dir = str(data_dir)
        self._create = create
        self._fs = fs
        self._fd: int | None = None
        self.failure: str | None = None  # why acquire() could not take the lock

    def acquire(self) -> bool:
        """Take the lock; DataDirInUse if another process holds it.  False (and nothing held)
        if it cannot be taken here: no LOCK file and ``create`` is off, a read-only
        directory, or a filesystem without locks."""
        path = os.path.join(self.data_dir, LOCK_NAME)
        try:
            # O_RDWR: NFS implements flock with fcntl locks, and an exclusive one needs a
            # descriptor open for writing.
            fd = self._fs.open(path, os.O_RDWR | (os.O_CREAT if self._create else 0), 0o600)
        except FileNotFoundError:
            if self._create:
                raise
            return False  # never run by a raftd that locks
        except (PermissionError, OSError) as e:
            if self._create and not isinstance(e, PermissionError) and e.errno != errno.EROFS:
                raise
            self.failure = f"{type(e).__name__}: {e}"
            return False
        try:
            self._fs.flock(fd)
        except BlockingIOError:
            self._fs.close(fd)
            raise DataDirInUse(f"data_dir {self.data_dir} is in use by another raftd"
                               f"{_holder(self.data_dir)}") from None
        except OSError as e:
            self._fs.close(fd)
            if e.errno not in _NO_LOCKING:
                raise
            self.failure = f"{type(e).__name__}: {e}"
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            self._fs.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def hold_offline(data_dir: str) -> DataDirLock:
    """For offline tools: hold ``data_dir``'s lock for as long as the tool reads it, so no
    raftd starts on it meanwhile.  Raises DataDirInUse (with the message for the operator)
    while a raftd runs on it.  Creates nothing: a directory never run has no LOCK file."""
    lock = DataDirLock(data_dir, create=False)
    try:
        lock.acquire()
    except DataDirInUse:
        raise DataDirInUse(f"{data_dir} is in use by a running raftd{_holder(str(data_dir))}; "
                           f"stop it first") from None
    return lock
