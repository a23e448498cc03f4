"""Snapshot files (Raft §7, thesis ch. 5): written atomically, verified on load, streamed.

File layout (all integers big-endian)::

    b"RDSNAP01"                      magic and format version
    u32 len, msgpack meta            {"index", "term", "configuration" (bytes), "created", "keys",
                                      "removed" (ids removed up to index; absent in older files)}
    msgpack header                   the state machine's header (applied index, sessions, ...)
    msgpack [[key, value], ...]*     the data, in batches of BATCH items
    msgpack None                     end of data
    b"RDSNAPOK", u32 crc32           checksum of every byte before the trailer

Writes go to a temp file that is fsynced, renamed into place, and the directory fsynced; a crash
leaves either the old set of snapshots or the new one, never half a file under a real name.
Memory stays bounded: the writer packs one batch at a time and the reader unpacks as it streams.
"""
from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import msgpack

from raftd.core import Configuration, SnapshotMeta
from raftd.storage.durable import mkdir_durable
from raftd.storage.fs import OS, FileSystem, FileWriter

log = logging.getLogger("raftd.storage")

MAGIC = b"RDSNAP01"
TRAILER = b"RDSNAPOK"
BATCH = 2_000  # small batches: the writer thread holds the GIL ~1 ms per batch
CHUNK = 1 << 20
_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")


class CorruptSnapshotError(Exception):
    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        super().__init__(f"corrupt snapshot {path}: {reason}")


@dataclass(frozen=True)
class SnapshotInfo:
    meta: SnapshotMeta
    path: Path
    size: int
    created: float
    keys: int
    removed_ids: frozenset[str] = frozenset()  # see raftd/runtime/removed.py

    def describe(self) -> dict[str, Any]:
        cfg = self.meta.configuration
        return {"index": self.meta.index, "term": self.meta.term, "size": self.size,
                "created": self.created, "keys": self.keys, "path": str(self.path),
                "configuration": {"voters": sorted(cfg.voters | cfg.outgoing),
                                  "learners": sorted(cfg.learners),
                                  "addresses": cfg.address_map()}}


class _CrcWriter:
    def __init__(self, f: FileWriter) -> None:
        self.f = f
        self.crc = 0
        self.size = 0

    def write(self, b: bytes) -> None:
        self.f.write(b)
        self.crc = zlib.crc32(b, self.crc)
        self.size += len(b)


def write_snapshot_file(path: Path, meta: SnapshotMeta, header: dict[str, Any],
                        data: Iterable[list[Any]],
                        fsync: bool = True, created: float | None = None,
                        keys: int | None = None, removed: Iterable[str] = (),
                        fs: FileSystem = OS) -> int:
    """Write a snapshot atomically to ``path``; ``data`` is a dict or an iterable of
    [key, value] batches.  Returns its size in bytes."""
    tmp = path.with_name(path.name + ".tmp")
    packer = msgpack.Packer(use_bin_type=True)
    if keys is None:
        keys = len(data) if isinstance(data, dict) else 0
    m = packer.pack({"index": meta.index, "term": meta.term,
                     "configuration": meta.configuration.encode(),
                     "created": created if created is not None else time.time(), "keys": keys,
                     "removed": sorted(removed)})
    f = FileWriter(fs, fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        w = _CrcWriter(f)
        w.write(MAGIC)
        w.write(struct.pack(">I", len(m)))
        w.write(m)
        w.write(packer.pack(header))
        if isinstance(data, dict):
            items = list(data.items()) if len(data) <= BATCH else None
            if items is not None:
                w.write(packer.pack(items))
            else:
                batch = []
                for kv in data.items():
                    batch.append(kv)
                    if len(batch) >= BATCH:
                        w.write(packer.pack(batch))
                        batch = []
                if batch:
                    w.write(packer.pack(batch))
        else:
            for batch in data:
                w.write(packer.pack(batch))
        w.write(packer.pack(None))
        f.write(TRAILER + struct.pack(">I", w.crc))
        size = w.size + len(TRAILER) + 4
        if fsync:
            f.sync()
    except BaseException:
        # A full disk fails every snapshot attempt: leave no temp file behind each time.
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            fs.unlink(tmp)
        raise
    f.close()
    fs.rename(tmp, path)
    if fsync:
        fs.fsync_dir(path.parent)
    return size


def verify(path: Path, fs: FileSystem = OS) -> None:
    """Check magic, trailer and checksum; raise CorruptSnapshotError."""
    size = fs.size(path)
    if size < len(MAGIC) + 4 + len(TRAILER) + 4:
        raise CorruptSnapshotError(path, f"too short ({size} bytes)")
    crc = 0
    with fs.open_read(path) as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise CorruptSnapshotError(path, "bad magic")
        f.seek(0)
        remaining = size - len(TRAILER) - 4
        while remaining:
            b = f.read(min(CHUNK, remaining))
            if not b:
                raise CorruptSnapshotError(path, "truncated")
            crc = zlib.crc32(b, crc)
            remaining -= len(b)
        trailer = f.read(len(TRAILER) + 4)
    if trailer[:len(TRAILER)] != TRAILER:
        raise CorruptSnapshotError(path, "missing trailer (incomplete write?)")
    if struct.unpack(">I", trailer[len(TRAILER):])[0] != crc:
        raise CorruptSnapshotError(path, "checksum mismatch")


def read_meta(path: Path, fs: FileSystem = OS) -> SnapshotInfo:
    try:
        with fs.open_read(path) as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise CorruptSnapshotError(path, "bad magic")
            (n,) = struct.unpack(">I", f.read(4))
            if n > 64 << 20:
                raise CorruptSnapshotError(path, "bad metadata length")
            m = msgpack.unpackb(f.read(n), raw=False)
        meta = SnapshotMeta(m["index"], m["term"], Configuration.decode(m["configuration"]))
        removed = m.get("removed", [])
        if not isinstance(removed, list) or not all(isinstance(x, str) for x in removed):
            raise CorruptSnapshotError(path, "removed ids are not a list of strings")
        return SnapshotInfo(meta, path, fs.size(path), m.get("created", 0.0),
                            m.get("keys", 0), frozenset(removed))
    except CorruptSnapshotError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is corruption
        raise CorruptSnapshotError(path, f"unreadable metadata ({type(e).__name__}: {e})") from None


def read_state(path: Path, fs: FileSystem = OS
               ) -> tuple[SnapshotInfo, dict[str, Any], Iterator[list[Any]]]:
    """(info, state machine header, iterator of data batches).  Verify first."""
    info = read_meta(path, fs)
    f = fs.open_read(path)  # closed by the generator
    f.seek(len(MAGIC))
    (n,) = struct.unpack(">I", f.read(4))
    f.seek(len(MAGIC) + 4 + n)
    unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=256 << 20)
    header = next(unpacker)

    def batches() -> Iterator[list[Any]]:
        try:
            for obj in unpacker:
                if obj is None:
                    return
                yield obj
        finally:
            f.close()

    return info, header, batches()


def snapshot_name(index: int, term: int) -> str:
    return f"snapshot-{index:020d}-{term:020d}.snap"


class SnapshotStore:
    """The node's snapshot directory: newest K snapshots plus incoming transfers."""

    def __init__(self, directory: str | Path, keep: int = 2, fsync: bool = True,
                 fs: FileSystem = OS):
        self.dir = Path(directory)
        self.fs = fs
        # Synced into the data directory: otherwise a power loss can drop snapshots/ (and every
        # snapshot in it) while the WAL, already compacted, survives (issue 21 §6).
        if fsync:
            mkdir_durable(self.dir, fs=fs)
        elif not fs.is_dir(self.dir):
            for p in reversed([self.dir, *self.dir.parents]):
                if not fs.exists(p):
                    fs.mkdir(p, 0o700)
        self.keep = max(1, keep)
        self.fsync = fsync

    def cleanup(self) -> list[str]:
        """At start-up: remove temp files left by a crash mid-write or mid-transfer
        (hashicorp/raft #212), then fsync the directory.  A snapshot renamed into place just
        before a process crash may still be only in the page cache; start-up restores it and
        may compact the log behind it, so it must be durable first (issue 21 §1; found by the
        crash-state explorer)."""
        removed = []
        for name in sorted(self.fs.listdir(self.dir)):
            if name.endswith(".tmp") or name.startswith("incoming-"):
                self.discard(self.dir / name)
                removed.append(name)
        if self.fsync:
            self.fs.fsync_dir(self.dir)
        return removed

    def discard(self, path: Path) -> None:
        """Remove ``path`` if it is there."""
        try:
            self.fs.unlink(path)
        except FileNotFoundError:
            pass

    def paths(self) -> list[Path]:
        """Snapshot files, newest first."""
        found = [self.dir / n for n in self.fs.listdir(self.dir) if _NAME.match(n)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def list(self) -> list[SnapshotInfo]:
        out = []
        for p in self.paths():
            try:
                out.append(read_meta(p, self.fs))
            except CorruptSnapshotError as e:
                log.warning("%s", e)
        return out

    def latest_valid(self) -> SnapshotInfo | None:
        """The newest snapshot whose checksum verifies; corrupt ones are logged and skipped."""
        for p in self.paths():
            try:
                verify(p, self.fs)
                return read_meta(p, self.fs)
            except CorruptSnapshotError as e:
                log.error("%s; trying an older snapshot", e)
        return None

    def oldest_kept_index(self) -> int | None:
        """Index of the oldest snapshot file kept (by name; None if there is none).  Own
        compaction never passes it, so the log still continues that snapshot when every newer
        one turns out damaged (issue 21 §8)."""
        paths = self.paths()[:self.keep]
        if not paths:
            return None
        m = _NAME.match(paths[-1].name)
        return int(m[1]) if m else None

    def path_for(self, meta: SnapshotMeta) -> Path:
        return self.dir / snapshot_name(meta.index, meta.term)

    def write(self, meta: SnapshotMeta, header: dict[str, Any],
              data: Iterable[builtins.list[Any]], removed: Iterable[str] = ()) -> SnapshotInfo:
        path = self.path_for(meta)
        write_snapshot_file(path, meta, header, data, self.fsync, removed=removed, fs=self.fs)
        self.prune()
        return read_meta(path, self.fs)

    def prune(self) -> None:
        for p in self.paths()[self.keep:]:
            self.discard(p)

    def adopt(self, received: Path, meta: SnapshotMeta) -> SnapshotInfo:
        """Move a verified, fsynced incoming transfer into place as the newest snapshot.  The
        directory fsync after the rename is the install's one commit point: from then on
        start-up finds this snapshot and makes the WAL agree with it (Snapshotter.reconcile);
        before it, the old snapshots and the old WAL are intact.  Pruning older files is left
        to the caller, after the WAL has moved past them."""
        path = self.path_for(meta)
        self.fs.rename(received, path)
        if self.fsync:
            self.fs.fsync_dir(self.dir)
        return read_meta(path, self.fs)


class IncomingSnapshot:
    """A snapshot arriving in chunks (InstallSnapshot with offsets) into a temp file."""

    def __init__(self, store: SnapshotStore, index: int, term: int, tag: str):
        self.store = store
        self.index, self.term = index, term
        self.path = store.dir / f"incoming-{tag}-{index}-{term}.tmp"
        fs = store.fs
        self.f = FileWriter(fs, fs.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        self._open = True  # closed in finish/abort
        self.offset = 0

    def write(self, offset: int, data: bytes) -> None:
        if offset != self.offset:
            raise ValueError(f"chunk at offset {offset}, expected {self.offset}")
        self.f.write(data)
        self.offset += len(data)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self.f.close()

    def finish(self) -> Path:
        """Close, fsync and verify; returns the file's path (still a temp name)."""
        try:
            if self.store.fsync:
                self.f.sync()
        finally:
            self._close()
        fs = self.store.fs
        verify(self.path, fs)
        info = read_meta(self.path, fs)
        if (info.meta.index, info.meta.term) != (self.index, self.term):
            raise CorruptSnapshotError(self.path, "metadata does not match the transfer")
        return self.path

    def abort(self) -> None:
        try:
            self._close()
        finally:
            self.store.discard(self.path)


def iter_chunks(path: Path, size: int = CHUNK, fs: FileSystem = OS
                ) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) chunks of a snapshot file, for streaming it to a follower."""
    with fs.open_read(path) as f:
        offset = 0
        while True:
            b = f.read(size)
            if not b:
                return
            yield offset, b
            offset += len(b)
