"""Offline tools for stopped data directories, beside raftd as etcdutl sits beside etcd.

raftctl's `snapshot inspect|restore|recover` call these instead of opening WALs and snapshot
files themselves (issue 17 §5), so the on-disk formats stay raftd's business:

* ``survey(data_dir)``: what a stopped node's data directory holds.  Read-only: a data dir is
  never written unless the operator asked for it (issue 21, "Bad input and operators").  The
  WAL is replayed from a private copy, because opening it in place runs recovery, which may
  truncate a torn tail or remove a half-written segment.
* ``rebuild(survey)``: the key-value state of every entry in that node's log (committed or
  not, as etcd's --force-new-cluster), to seed a new cluster from.
* ``removed_ids(data_dir)``: the server ids the node recorded as removed (read only).
* ``seed(...)``: write that state into new data directories as a snapshot plus an empty log
  after it, durably: a power loss leaves each file absent or complete, and every created name
  synced into its parent directory (issue 21 §6).

Every file opened here is closed on every path, errors included.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from raftd.core import Configuration, EntryKind, HardState, SnapshotMeta
from raftd.kv.fsm import KVStateMachine
from raftd.runtime.removed import RemovedIds
from raftd.storage.durable import copy_durable, fsync_dir, mkdir_durable
from raftd.storage.lock import DataDirInUse, DataDirLock, hold_offline
from raftd.storage.snapshots import (MAGIC, CorruptSnapshotError, SnapshotInfo, read_meta,
                                     snapshot_name, verify, write_snapshot_file)
from raftd.storage.wal import CorruptLogError, DurableLog

__all__ = ["CorruptLogError", "CorruptSnapshotError", "DataDirInUse", "NotADataDir",
           "DataDirSurvey", "Rebuilt", "describe_snapshot", "fsync_dir", "hold_offline",
           "make_dirs", "offline_locks", "read_snapshot", "rebuild", "seed", "survey",
           "sync_files", "verify"]


class NotADataDir(ValueError):
    """The path holds neither wal/ nor snapshots/."""


# -------------------------------------------------------------------- snapshot files --
def describe_snapshot(path: Path) -> dict:
    """Verify a snapshot file and describe it (index, term, configuration, keys, size)."""
    verify(path)
    info = read_meta(path).describe()
    info.pop("path", None)
    return info


@contextlib.contextmanager
def read_snapshot(path: Path) -> Iterator[tuple[SnapshotInfo, dict, Iterator[list]]]:
    """Verify ``path`` and yield (info, state machine header, data batches); the file is
    closed when the block ends, however it ends (raftd.storage's read_state leaves it open
    until its generator is exhausted, which an error never does)."""
    verify(path)
    info = read_meta(path)
    with open(path, "rb") as f:
        f.seek(len(MAGIC))
        (n,) = struct.unpack(">I", f.read(4))
        f.seek(len(MAGIC) + 4 + n)
        unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=256 << 20)
        header = next(unpacker)

        def batches() -> Iterator[list]:
            for obj in unpacker:
                if obj is None:
                    return
                yield obj

        yield info, header, batches()


def _snapshot_files(directory: Path) -> list[Path]:
    """Snapshot files by name, newest first (names sort by index, then term)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir()
                   if p.name.startswith("snapshot-") and p.name.endswith(".snap")),
                  key=lambda p: p.name, reverse=True)


def _latest_valid_snapshot(directory: Path) -> SnapshotInfo | None:
    for p in _snapshot_files(directory):
        try:
            verify(p)
            return read_meta(p)
        except CorruptSnapshotError:
            continue  # an older one may still serve, as at start-up
    return None


# --------------------------------------------------------------------------- survey --
@dataclass(frozen=True)
class DataDirSurvey:
    dir: Path
    snapshot: SnapshotInfo | None
    first_log_index: int
    last_index: int
    last_term: int
    term: int

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot else 0

    def describe(self) -> dict:
        return {"dir": str(self.dir), "snapshot_index": self.snapshot_index,
                "first_log_index": self.first_log_index, "last_index": self.last_index,
                "last_term": self.last_term, "term": self.term}


@contextlib.contextmanager
def _log_copy(data_dir: Path) -> Iterator[DurableLog]:
    """The data dir's WAL opened from a private copy: recovery's repairs (a torn tail cut, a
    half-started segment removed) happen to the copy, never to the operator's files."""
    with tempfile.TemporaryDirectory(prefix="raftd-recovery-") as tmp:
        copy = Path(tmp) / "wal"
        copy.mkdir()
        wal = data_dir / "wal"
        if wal.is_dir():
            for p in wal.iterdir():
                if p.is_file():
                    shutil.copyfile(p, copy / p.name)
        try:
            log = DurableLog.open(copy, fsync=False)
        except CorruptLogError as e:  # name the operator's file, not the private copy
            raise CorruptLogError(wal / Path(e.path).name, e.offset, e.reason) from None
        try:
            yield log
        finally:
            log.close()


def survey(data_dir: str | Path) -> DataDirSurvey:
    """What one stopped node's data directory holds.  Writes nothing there."""
    d = Path(data_dir)
    if not (d / "wal").is_dir() and not (d / "snapshots").is_dir():
        raise NotADataDir(f"{d} is not a raftd data directory (no wal/ or snapshots/)")
    snap = _latest_valid_snapshot(d / "snapshots")
    with _log_copy(d) as log:
        last = log.last_index
        last_term = (log.entries(last, last + 1)[0].term if last >= log.first_index
                     else log.snapshot_term)
        return DataDirSurvey(d, snap, log.first_index, last, last_term, log.hard_state.term)


@contextlib.contextmanager
def offline_locks(data_dirs: Iterable[str | Path]) -> Iterator[None]:
    """Hold every data dir's lock for the block, so that no raftd starts on them meanwhile;
    DataDirInUse (naming the dir) if a raftd runs on one.  Creates no LOCK file."""
    held: list[DataDirLock] = []
    try:
        for d in data_dirs:
            held.append(hold_offline(str(d)))
        yield
    finally:
        for lock in held:
            lock.release()


# -------------------------------------------------------------------------- rebuild --
@dataclass(frozen=True)
class Rebuilt:
    index: int
    term: int
    keys: int
    header: dict[str, Any]
    data: Mapping[str, bytes]


def rebuild(best: DataDirSurvey) -> Rebuilt:
    """The key-value state after every entry of ``best``'s log, on top of its snapshot."""
    fsm = KVStateMachine()
    if best.snapshot is not None:
        with read_snapshot(best.snapshot.path) as (_, header, batches):
            fsm.restore_stream(header, batches)
    with _log_copy(best.dir) as log:
        for e in log.entries(max(fsm.applied_index + 1, log.first_index), log.last_index + 1):
            if e.kind == EntryKind.NORMAL:
                fsm.apply(e.index, e.data)
            else:
                fsm.apply_noop(e.index)
    header, data = fsm.freeze()
    return Rebuilt(max(fsm.applied_index, 1), max(best.last_term, 1), len(fsm), header, data)


# ----------------------------------------------------------------------------- seed --
def removed_ids(data_dir: str | Path) -> frozenset[str]:
    """The ids a data dir recorded as removed from its cluster (raftd/runtime/removed.py), read
    without writing anything; ValueError if that record is damaged."""
    return RemovedIds(str(data_dir), frozenset()).ids


def make_dirs(path: str | Path) -> Path:
    """mkdir -p, each created directory synced into its parent."""
    return mkdir_durable(path)


def sync_files(paths: Iterable[str | Path]) -> None:
    """fsync files written with plain writes, then each of their directories once."""
    dirs = []
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        parent = Path(p).absolute().parent
        if parent not in dirs:
            dirs.append(parent)
    for d in dirs:
        fsync_dir(d)


def seed(data_dirs: Sequence[str | Path], addresses: Mapping[str, str], index: int, term: int,
         header: dict, data: Any, keys: int | None = None) -> None:
    """Make each data dir start from the given state at (index, term) with a fresh
    configuration of ``addresses`` (id -> host:port, every one a voter): a snapshot file and
    an empty log after it (Raft §7).  The snapshot is written once, then copied: temp name,
    fsync, rename, fsync the directory; every directory is synced into its parent."""
    conf = Configuration.make(list(addresses), addresses=dict(addresses))
    meta = SnapshotMeta(index, term, conf)
    dirs = [make_dirs(d) for d in data_dirs]
    name = snapshot_name(index, term)
    src = make_dirs(dirs[0] / "snapshots") / name
    write_snapshot_file(src, meta, header, data, keys=keys)
    for d in dirs:
        dst = make_dirs(d / "snapshots") / name
        if dst != src:
            copy_durable(src, dst)
        log = DurableLog.open(d / "wal")
        try:
            log.reset(index, term)
            log.save(HardState(term, None), [])
        finally:
            log.close()

