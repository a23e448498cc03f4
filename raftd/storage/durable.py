"""Durable file-system steps, in the one order that survives a power loss.

A write is durable only after the file is fsynced; a created, renamed or removed name is durable
only after its parent directory is fsynced (ext4, XFS: directory entries are metadata of the
parent).  Every place in raftd and raftctl that creates a file or directory that must survive a
power loss goes through these helpers, so the order is written down once.  Errors propagate: a
failed fsync is never retried (the kernel may have dropped the dirty pages; see "fsyncgate").
Each helper takes the file layer to act on (``raftd.storage.fs``; the real one by default).
"""
from __future__ import annotations

import os
from pathlib import Path

from raftd.storage.fs import OS, FileSystem, FileWriter


def fsync_dir(path: str | os.PathLike[str], fs: FileSystem = OS) -> None:
    """Make the names in directory `path` (creations, renames, unlinks) durable."""
    fs.fsync_dir(path)


def mkdir_durable(path: str | os.PathLike[str], mode: int = 0o700, fs: FileSystem = OS) -> Path:
    """Create `path` and any missing parents, each synced into its own parent.
    An existing directory is left as it is (and its entry synced, in case a crash
    before that sync left it only in the page cache)."""
    path = Path(path).absolute()
    missing = []
    p = path
    while not fs.exists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            fs.mkdir(d, mode)
        except FileExistsError:
            pass
        fs.fsync_dir(d.parent)
    if not missing:
        fs.fsync_dir(path.parent)
    return path


def write_durable(path: str | os.PathLike[str], data: bytes, mode: int = 0o600,
                  fs: FileSystem = OS) -> None:
    """Replace `path` with `data` atomically: temp file, fsync, rename, fsync the directory.
    After a power loss the file holds either its old content or `data`, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    w = FileWriter(fs, fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
    try:
        w.write(data)
        w.sync()
    except BaseException:
        fs.close(w.fd)
        _unlink_quietly(fs, tmp)
        raise
    fs.close(w.fd)
    fs.rename(tmp, path)
    fs.fsync_dir(path.parent)


def copy_durable(src: str | os.PathLike[str], dst: str | os.PathLike[str], mode: int = 0o600,
                 chunk: int = 1 << 20, fs: FileSystem = OS) -> None:
    """Copy `src` to `dst` so that after a power loss `dst` is absent or complete:
    copy to a temporary name, fsync it, rename, fsync the directory."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        with fs.open_read(src) as fin:
            w = FileWriter(fs, fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
            try:
                while block := fin.read(chunk):
                    w.write(block)
                w.sync()
            finally:
                fs.close(w.fd)
    except BaseException:
        _unlink_quietly(fs, tmp)
        raise
    fs.rename(tmp, dst)
    fs.fsync_dir(dst.parent)


def _unlink_quietly(fs: FileSystem, path: Path) -> None:
    try:
        fs.unlink(path)
    except FileNotFoundError:
        pass
