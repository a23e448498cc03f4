"""Durable file-system steps, in the one order that survives a power loss.

A write is durable only after the file is fsynced; a created, renamed or removed name is durable
only after its parent directory is fsynced (ext4, XFS: directory entries are metadata of the
parent).  Every place in raftd and raftctl that creates a file or directory that must survive a
power loss goes through these helpers, so the order is written down once.  Errors propagate: a
failed fsync is never retried (the kernel may have dropped the dirty pages; see "fsyncgate").
"""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the names in directory `path` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_durable(path: str | os.PathLike[str], mode: int = 0o700) -> Path:
    """Create `path` and any missing parents, each synced into its own parent.
    An existing directory is left as it is (and its entry synced, in case a crash
    before that sync left it only in the page cache)."""
    path = Path(path).absolute()
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            pass
        fsync_dir(d.parent)
    if not missing:
        fsync_dir(path.parent)
    return path


def write_durable(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically: temp file, fsync, rename, fsync the directory.
    After a power loss the file holds either its old content or `data`, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def copy_durable(src: str | os.PathLike[str], dst: str | os.PathLike[str], mode: int = 0o600,
                 chunk: int = 1 << 20) -> None:
    """Copy `src` to `dst` so that after a power loss `dst` is absent or complete:
    copy to a temporary name, fsync it, rename, fsync the directory."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        with open(src, "rb") as fin, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                                  mode), "wb") as fout:
            while block := fin.read(chunk):
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
