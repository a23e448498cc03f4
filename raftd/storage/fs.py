"""The file layer under the WAL and the snapshot store: the few calls they make, behind one seam.

``OsFileSystem`` is the real one (every method is the os call of the same name); the recording
model in ``raftd.storage.fsmodel`` implements the same calls in memory and knows what a power
loss would leave, so the crash-state explorer (``raftd.storage.explore``) and the simulator run
the shipped WAL and snapshot code unchanged over it.  ``DurableLog``, ``SnapshotStore`` and the
helpers of ``raftd.storage.durable`` take an ``fs`` argument that defaults to ``OS``.

Paths are ``str`` or ``os.PathLike``; descriptors are ints.  Errors are ``OSError`` with the
errno the OS would give (ENOENT, EEXIST, EIO, ENOSPC, ...).
"""
from __future__ import annotations

import fcntl
import os
from typing import BinaryIO, Protocol

Pathish = str | os.PathLike[str]


class FileSystem(Protocol):
    """What the storage layer asks of a file system.  Durability rules (POSIX, ext4/XFS): a
    write is durable once its file is fsynced; a created, renamed or removed name once its
    parent directory is fsynced."""

    # Descriptors.
    def open(self, path: Pathish, flags: int, mode: int = 0o600) -> int: ...
    def close(self, fd: int) -> None: ...
    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int: ...
    def fsync(self, fd: int) -> None: ...
    def fdatasync(self, fd: int) -> None: ...
    def fsize(self, fd: int) -> int: ...
    def ftruncate(self, fd: int, size: int) -> None: ...
    def flock(self, fd: int) -> None:
        """Exclusive, non-blocking; BlockingIOError while another holder has it."""

    # Names and whole files.
    def read_bytes(self, path: Pathish) -> bytes: ...
    def open_read(self, path: Pathish) -> BinaryIO: ...
    def size(self, path: Pathish) -> int: ...
    def exists(self, path: Pathish) -> bool: ...
    def is_dir(self, path: Pathish) -> bool: ...
    def listdir(self, path: Pathish) -> list[str]: ...
    def mkdir(self, path: Pathish, mode: int = 0o700) -> None: ...
    def rename(self, src: Pathish, dst: Pathish) -> None:
        """Atomic replace (os.replace)."""
    def unlink(self, path: Pathish) -> None: ...
    def fsync_dir(self, path: Pathish) -> None:
        """Make the names in directory ``path`` durable."""


class OsFileSystem:
    """The real file system."""

    def open(self, path: Pathish, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsize(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def flock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def read_bytes(self, path: Pathish) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def open_read(self, path: Pathish) -> BinaryIO:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it

    def size(self, path: Pathish) -> int:
        return os.stat(path).st_size

    def exists(self, path: Pathish) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: Pathish) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: Pathish) -> list[str]:
        return os.listdir(path)

    def mkdir(self, path: Pathish, mode: int = 0o700) -> None:
        os.mkdir(path, mode)

    def rename(self, src: Pathish, dst: Pathish) -> None:
        os.replace(src, dst)

    def unlink(self, path: Pathish) -> None:
        os.unlink(path)

    def fsync_dir(self, path: Pathish) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OS: FileSystem = OsFileSystem()


class FileWriter:
    """Sequential writes to a descriptor through ``fs.pwrite``, buffered (a snapshot is written
    in many small pieces).  ``sync`` flushes and fsyncs; ``close`` flushes and closes."""

    def __init__(self, fs: FileSystem, fd: int, buffer: int = 1 << 20):
        self.fs, self.fd, self.offset = fs, fd, 0
        self._buf: list[bytes] = []
        self._buffered, self._limit = 0, buffer

    def write(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        if self._buffered >= self._limit:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        view = memoryview(b"".join(self._buf))
        self._buf, self._buffered = [], 0
        while view:  # a regular file takes it all; the loop only guards a short write
            n = self.fs.pwrite(self.fd, view, self.offset)
            view, self.offset = view[n:], self.offset + n

    def sync(self) -> None:
        self.flush()
        self.fs.fsync(self.fd)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.fs.close(self.fd)


def write_all(fs: FileSystem, fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite until everything is written (a short write continues where it stopped)."""
    view = memoryview(data)
    while view:
        n = fs.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
