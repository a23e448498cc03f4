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
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO
from dataclasses import dataclass
from pathlib import Path

import msgpack

from raftd.core import Configuration, SnapshotMeta
from raftd.storage.durable import fsync_dir, mkdir_durable

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
    def __init__(self, f: BinaryIO) -> None:
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
                        keys: int | None = None, removed: Iterable[str] = ()) -> int:
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
    with open(tmp, "wb") as f:
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
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)
    return size


def verify(path: Path) -> None:
    """Check magic, trailer and checksum; raise CorruptSnapshotError."""
    size = path.stat().st_size
    if size < len(MAGIC) + 4 + len(TRAILER) + 4:
        raise CorruptSnapshotError(path, f"too short ({size} bytes)")
    crc = 0
    with open(path, "rb") as f:
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


def read_meta(path: Path) -> SnapshotInfo:
    try:
        with open(path, "rb") as f:
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
        return SnapshotInfo(meta, path, path.stat().st_size, m.get("created", 0.0),
                            m.get("keys", 0), frozenset(removed))
    except CorruptSnapshotError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is corruption
        raise CorruptSnapshotError(path, f"unreadable metadata ({type(e).__name__}: {e})") from None


def read_state(path: Path) -> tuple[SnapshotInfo, dict[str, Any], Iterator[list[Any]]]:
    """(info, state machine header, iterator of data batches).  Verify first."""
    info = read_meta(path)
    f = open(path, "rb")  # noqa: SIM115 - closed by the generator
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

    def __init__(self, directory: str | Path, keep: int = 2, fsync: bool = True):
        self.dir = Path(directory)
        # Synced into the data directory: otherwise a power loss can drop snapshots/ (and every
        # snapshot in it) while the WAL, already compacted, survives (issue 21 §6).
        if fsync:
            mkdir_durable(self.dir)
        else:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keep = max(1, keep)
        self.fsync = fsync

    def cleanup(self) -> list[str]:
        """Remove temp files left by a crash mid-write or mid-transfer (hashicorp/raft #212)."""
        removed = []
        for p in self.dir.iterdir():
            if p.name.endswith(".tmp") or p.name.startswith("incoming-"):
                p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed

    def paths(self) -> list[Path]:
        """Snapshot files, newest first."""
        found = [p for p in self.dir.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def list(self) -> list[SnapshotInfo]:
        out = []
        for p in self.paths():
            try:
                out.append(read_meta(p))
            except CorruptSnapshotError as e:
                log.warning("%s", e)
        return out

    def latest_valid(self) -> SnapshotInfo | None:
        """The newest snapshot whose checksum verifies; corrupt ones are logged and skipped."""
        for p in self.paths():
            try:
                verify(p)
                return read_meta(p)
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
        write_snapshot_file(path, meta, header, data, self.fsync, removed=removed)
        self.prune()
        return read_meta(path)

    def prune(self) -> None:
        for p in self.paths()[self.keep:]:
            p.unlink(missing_ok=True)

    def adopt(self, received: Path, meta: SnapshotMeta) -> SnapshotInfo:
        """Move a verified, fsynced incoming transfer into place as the newest snapshot.  The
        directory fsync after the rename is the install's one commit point: from then on
        start-up finds this snapshot and makes the WAL agree with it (Snapshotter.reconcile);
        before it, the old snapshots and the old WAL are intact.  Pruning older files is left
        to the caller, after the WAL has moved past them."""
        path = self.path_for(meta)
        os.replace(received, path)
        if self.fsync:
            fsync_dir(self.dir)
        return read_meta(path)


class IncomingSnapshot:
    """A snapshot arriving in chunks (InstallSnapshot with offsets) into a temp file."""

    def __init__(self, store: SnapshotStore, index: int, term: int, tag: str):
        self.store = store
        self.index, self.term = index, term
        self.path = store.dir / f"incoming-{tag}-{index}-{term}.tmp"
        self.f = open(self.path, "wb")  # noqa: SIM115 - closed in finish/abort
        self.offset = 0

    def write(self, offset: int, data: bytes) -> None:
        if offset != self.offset:
            raise ValueError(f"chunk at offset {offset}, expected {self.offset}")
        self.f.write(data)
        self.offset += len(data)

    def finish(self) -> Path:
        """Close, fsync and verify; returns the file's path (still a temp name)."""
        self.f.flush()
        if self.store.fsync:
            os.fsync(self.f.fileno())
        self.f.close()
        verify(self.path)
        info = read_meta(self.path)
        if (info.meta.index, info.meta.term) != (self.index, self.term):
            raise CorruptSnapshotError(self.path, "metadata does not match the transfer")
        return self.path

    def abort(self) -> None:
        try:
            self.f.close()
        finally:
            self.path.unlink(missing_ok=True)


def iter_chunks(path: Path, size: int = CHUNK) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) chunks of a snapshot file, for streaming it to a follower."""
    with open(path, "rb") as f:
        offset = 0
        while True:
            b = f.read(size)
            if not b:
                return
            yield offset, b
            offset += len(b)
