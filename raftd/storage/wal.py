"""Durable, checksummed, segmented write-ahead log for Raft entries and hard state.

On disk: a directory of segment files ``0000000000000001.wal``, ``0000000000000002.wal``, ... in the
format of ``raftd.storage.walformat``: every write is one checksummed batch of records, so a group
commit is one unit at recovery.  Every segment starts with the records HEADER, BASE, HARD_STATE, so the
newest segment alone always holds the current base and hard state and older segments can be deleted
once compact() no longer needs their entries.

The order of writes and syncs (docs/ARCHITECTURE.md, "What survives a power loss"):

* a save is one pwrite() of one batch, then one fdatasync(); nothing changes in memory (and the caller
  acknowledges nothing) before the fdatasync returns;
* a new segment is created, its first batch (head records first) written and fdatasynced, then the
  directory fsynced, before anything is acknowledged from it;
* compact() makes a BASE record durable, then unlinks the segments before it, then fsyncs the
  directory; reset() starts a new segment whose BASE voids everything before it, then does the same;
* a failed write or fsync cuts the file back to the last durable size and fsyncs that (issue 21 §2):
  the failed batch was never acknowledged and must not come back at restart.  The log then refuses
  further writes (the kernel may have dropped the dirty pages, "fsyncgate"); reopen it to go on;
* open() reads every segment, cuts a torn tail, and fsyncs every segment and the directories before
  handing anything back (issue 21 §1: what recovery read may have been only in the page cache).

With ``preallocate`` (raftd's ``wal_preallocate_bytes``, off by default) a segment is extended with zeros
ahead of its batches, so most writes land inside the file and an fdatasync has no file size or block
allocation to commit (about 0.5 instead of 0.9 ms here with three nodes writing; docs/PERFORMANCE.md).
A batch never starts with a zero header, so recovery reads zeros to the end of the file as the end of
the data.

Every file operation goes through ``fs`` (``raftd.storage.fs``): the real OS by default, the recording
model of ``raftd.storage.fsmodel`` in the crash-state explorer and the simulator.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from raftd.core.errors import CompactedError
from raftd.core.types import Entry, EntryKind, HardState
from raftd.storage.durable import mkdir_durable
from raftd.storage.fs import OS, FileSystem, write_all
from raftd.storage.walformat import (BASE, ENTRY, HARD_STATE, HEADER, MAX_RECORD, SALT, TRUNCATE,
                                     VERSION, WAL_NAME, CorruptLogError, frames, record, scan)

__all__ = ["CorruptLogError", "DurableLog", "MAX_RECORD"]

logger = logging.getLogger("raftd.storage")

_HEAD = (HEADER, BASE, HARD_STATE)
_SEGMENT_NAME = re.compile(r"^(\d{16})\.wal$")
_KINDS = frozenset(k.value for k in EntryKind)


@dataclass
class _Segment:
    seq: int
    path: Path
    prev_index: int  # log's last index when this segment started: every live entry before it is <= this
    salt: bytes = b""  # version 2: in every batch head's checksum (walformat); b"" for version 1


class DurableLog:
    """Raft's durable state: hard state plus the log of entries after a snapshot base. Not thread-safe."""

    def __init__(self, directory: Path, segment_bytes: int, fsync: bool,
                 preallocate: int = 0, fs: FileSystem = OS,
                 random_bytes: Callable[[int], bytes] = os.urandom):  # use DurableLog.open()
        self._dir, self._segment_bytes, self._fsync = directory, segment_bytes, fsync
        self._prealloc = max(0, preallocate)
        self._fs = fs
        self._random_bytes = random_bytes  # segment salts
        self._segs: list[_Segment] = []
        self._fd: int | None = None
        self._size = 0  # bytes of batches in the active (last) segment: where the next write goes
        self._alloc = 0  # size of the active segment's file (batches + preallocated zeros)
        self._last_end = 0  # where recovery found the last segment's batches to end
        self._last_version = VERSION  # format of the last segment found (1: continue in a new one)
        self._new_file = False  # active segment created but its directory entry not yet synced
        self._failed = self._closed = False
        self._entries: list[Entry] = []  # in-memory copy; _entries[0].index == snapshot_index + 1
        self.hard_state = HardState()
        self.snapshot_index = self.snapshot_term = 0
        self.stats = {"fsyncs": 0, "dir_fsyncs": 0, "bytes_written": 0, "records_written": 0}

    @classmethod
    def open(cls, directory: str | Path, *, segment_bytes: int = 64 << 20, fsync: bool = True,
             preallocate: int = 0, fs: FileSystem = OS,
             random_bytes: Callable[[int], bytes] = os.urandom) -> DurableLog:
        """``preallocate``: extend segment files with this many zero bytes ahead of the writes (see the
        module docstring); 0 appends.  ``fs``: the file layer (the real OS by default).
        ``random_bytes``: where segment salts come from (a simulator passes a seeded one)."""
        self = cls(Path(directory), segment_bytes, fsync, preallocate, fs, random_bytes)
        if not fs.is_dir(self._dir):
            if fsync:
                mkdir_durable(self._dir, fs=fs)  # each new directory synced into its parent (§6)
            else:
                for p in reversed([self._dir, *self._dir.parents]):
                    if not fs.exists(p):
                        fs.mkdir(p, 0o700)
        self._recover()
        self._make_recovered_durable()
        if self._segs:
            self._fd = fs.open(self._segs[-1].path, os.O_WRONLY)
            self._size = self._last_end
            self._alloc = fs.fsize(self._fd)
        else:
            self._append(self._start_segment((0, 0, False)))
        self.stats = dict.fromkeys(self.stats, 0)  # count what the caller does, not recovery
        return self

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries [lo, hi). CompactedError if lo is below first_index; ValueError if hi is past the end."""
        if lo < self.first_index:
            raise CompactedError(f"entry {lo} was compacted (log starts at {self.first_index})")
        if lo > hi or hi > self.last_index + 1:
            raise ValueError(f"bad range [{lo}, {hi}) for log {self.first_index}..{self.last_index}")
        return self._entries[lo - self.first_index:hi - self.first_index]

    def all_entries(self) -> list[Entry]:
        return list(self._entries)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Durably store hard_state and entries (replacing stored entries from entries[0].index on)."""
        self.save_many([(hard_state, entries)])

    def save_many(self, batch: Sequence[tuple[HardState | None, Sequence[Entry]]]) -> None:
        """Several saves in order, as if ``save`` were called for each, but with one write() and one
        fdatasync() for all of them: the runtime hands over every Ready that queued up while the
        previous fsync ran (group commit across Readies)."""
        self._check_writable()
        parts: list[bytes] = []
        changes: list[tuple[int, list[Entry]]] = []
        hard_state = None
        last = self.last_index  # the log's last index as the saves so far leave it
        for hs, entries in batch:
            entries = list(entries)
            if entries:
                first = entries[0].index
                if any(b.index != a.index + 1 for a, b in zip(entries, entries[1:], strict=False)):
                    raise ValueError(f"entries are not contiguous: {[e.index for e in entries]}")
                if not self.first_index <= first <= last + 1:
                    raise ValueError(f"entries start at {first}, log needs {self.first_index}..{last + 1}")
            elif hs is None:
                continue  # nothing to make durable
            # Hard state goes first: if this write is torn, a durable term/vote without the entries is
            # safe, while entries of a new term without that term would break "currentTerm >= last log
            # term".
            if hs is not None:
                parts.append(record(HARD_STATE, [hs.term, hs.voted_for]))
                hard_state = hs
            if entries:
                if first <= last:
                    parts.append(record(TRUNCATE, first))
                parts += [record(ENTRY, [e.term, e.index, int(e.kind), e.data]) for e in entries]
                changes.append((first, entries))
                last = entries[-1].index
        if not parts:
            return
        # Rotate only now: had encoding a record failed, a new segment would be left without its head.
        self._append(self._rotate_if_due() + parts)
        # Only once everything is durable does the in-memory copy change.
        if hard_state is not None:
            self.hard_state = hard_state
        for first, entries in changes:
            del self._entries[first - self.first_index:]
            self._entries += entries

    def compact(self, snapshot_index: int, snapshot_term: int) -> None:
        """Forget entries <= snapshot_index and delete segment files that only hold such entries."""
        self._check_writable()
        if snapshot_index <= self.snapshot_index:
            return  # already compacted at least this far
        if snapshot_index <= self.last_index:
            term = self._entries[snapshot_index - self.first_index].term
            if term != snapshot_term:
                raise ValueError(f"entry {snapshot_index} has term {term}, not snapshot term {snapshot_term}")
        self._append(self._rotate_if_due() + [record(BASE, [snapshot_index, snapshot_term, False])])
        del self._entries[:snapshot_index - self.snapshot_index]  # everything, if the snapshot is past the end
        self.snapshot_index, self.snapshot_term = snapshot_index, snapshot_term
        # The new base is durable, so a segment whose live entries all precede it can go. Live entries of
        # segment k are <= the next segment's prev_index; the active segment is never deleted.
        deleted = False
        while len(self._segs) > 1 and self._segs[1].prev_index <= snapshot_index:
            self._fs.unlink(self._segs[0].path)
            del self._segs[0]
            deleted = True
        if deleted:
            self._sync_dir()

    def reset(self, snapshot_index: int, snapshot_term: int) -> None:
        """Discard the whole log; it continues empty after (snapshot_index, snapshot_term)."""
        self._check_writable()
        # A fresh segment whose head BASE carries the reset flag: replay voids everything before it, so a
        # crash before the old segments are deleted below still recovers the reset log.
        self._append(self._start_segment((snapshot_index, snapshot_term, True)))
        self._entries.clear()
        self.snapshot_index, self.snapshot_term = snapshot_index, snapshot_term
        old, self._segs = self._segs[:-1], self._segs[-1:]
        for seg in old:
            self._fs.unlink(seg.path)
        if old:
            self._sync_dir()

    def close(self) -> None:
        if self._fd is not None:
            self._fs.close(self._fd)
            self._fd = None
        self._closed = True

    def _check_writable(self) -> None:
        if self._closed:
            raise ValueError("log is closed")
        if self._failed:
            raise RuntimeError("an earlier write or fsync failed; reopen the log to recover")

    def _rotate_if_due(self) -> list[bytes]:
        """The head records of a new segment if the active one is full or of the old format
        (which is read, never written), else nothing."""
        if self._size >= self._segment_bytes or self._last_version != VERSION:
            return self._start_segment((self.snapshot_index, self.snapshot_term, False))
        return []

    def _start_segment(self, base: tuple[int, int, bool]) -> list[bytes]:
        """Create the next segment file and make it active; return its head records (not yet written)."""
        seq = self._segs[-1].seq + 1 if self._segs else 1
        path = self._dir / f"{seq:016d}.wal"
        fd = self._fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if self._fd is not None:
            self._fs.close(self._fd)
        self._fd, self._size, self._alloc, self._new_file = fd, 0, 0, True
        self._last_version = VERSION
        self._segs.append(_Segment(seq, path, self.last_index, self._random_bytes(SALT)))
        return [record(HEADER, [WAL_NAME, VERSION, seq, self.last_index]), record(BASE, list(base)),
                record(HARD_STATE, [self.hard_state.term, self.hard_state.voted_for])]

    def _append(self, parts: list[bytes]) -> None:
        """One batch: one write() and one fdatasync() for all of ``parts`` (group commit).  Only
        past MAX_BATCH bytes is it several batches, each written and synced on its own."""
        for buf in frames(parts, self._size, self._segs[-1].salt):
            self._write_batch(buf)
        self.stats["records_written"] += len(parts)

    def _write_batch(self, buf: bytes) -> None:
        assert self._fd is not None  # open() made the file
        try:
            end = self._size + len(buf)
            if self._prealloc and end > self._alloc:
                # Zeros ahead of the batches; the fdatasync below makes them durable with the batch,
                # and the next writes, inside the file, cost less to sync.
                grow = end + self._prealloc - self._alloc
                write_all(self._fs, self._fd, bytes(grow), self._alloc)
                self._alloc += grow
            write_all(self._fs, self._fd, buf, self._size)
            self._alloc = max(self._alloc, end)
            if self._fsync:
                self._fs.fdatasync(self._fd)
                self.stats["fsyncs"] += 1
            if self._new_file:
                self._sync_dir()
                self._new_file = False
        except OSError:
            # After a failed write or fsync the file's contents are unknown (the kernel may already have
            # dropped the dirty pages), so a retry could report data durable that is not: stop writing.
            self._failed = True
            self._discard_unsynced(len(buf))
            raise
        self._size += len(buf)
        self.stats["bytes_written"] += len(buf)

    def _discard_unsynced(self, written: int) -> None:
        """After a failed write or fsync: cut the active segment back to its last durable size and
        make that durable (issue 21 §2).  The failed batch was never acknowledged; left in the file,
        a restart would replay it from the page cache as if it were durable, and fsyncing it then
        proves nothing (the kernel may have marked the failed pages clean).  If the cut fails too,
        zeros over the batch, synced, make recovery read the end of the log there; if even that
        fails, the node stops with a critical log line and the batch may come back at restart."""
        assert self._fd is not None
        try:
            self._fs.ftruncate(self._fd, self._size)
            self._alloc = self._size
            if self._fsync:
                self._fs.fsync(self._fd)
            return
        except OSError as e:
            logger.critical("cannot cut the failed write off %s (%s)", self._segs[-1].path, e)
        try:
            write_all(self._fs, self._fd, bytes(written), self._size)
            if self._fsync:
                self._fs.fsync(self._fd)
        except OSError as e:
            logger.critical("cannot zero the failed write in %s either (%s): it may be read back at "
                            "restart although it was never acknowledged", self._segs[-1].path, e)

    def _sync_dir(self, path: Path | None = None) -> None:
        """A created or deleted file is only durable once its directory is synced."""
        if self._fsync:
            self._fs.fsync_dir(path or self._dir)
            self.stats["dir_fsyncs"] += 1

    def _make_recovered_durable(self) -> None:
        """What recovery read may have been only in the page cache (the process crashed, the
        machine did not): fsync every segment and the directories before acting on it, or a
        later power loss takes back a vote or an entry this node already answered for
        (issue 21 §1)."""
        if not self._fsync:
            return
        for seg in self._segs:
            fd = self._fs.open(seg.path, os.O_RDONLY)
            try:
                self._fs.fsync(fd)
            finally:
                self._fs.close(fd)
            self.stats["fsyncs"] += 1
        self._sync_dir(self._dir)
        self._sync_dir(self._dir.parent)

    def _recover(self) -> None:
        fs = self._fs
        found = sorted((int(m[1]), self._dir / name) for name in fs.listdir(self._dir)
                       if (m := _SEGMENT_NAME.match(name)))
        scanned: list[tuple[Path, list[tuple[int, int, Any]]]] = []
        for i, (seq, path) in enumerate(found):
            last = i == len(found) - 1
            if i and seq != found[i - 1][0] + 1:
                raise CorruptLogError(path, 0, f"segment {found[i - 1][0] + 1} is missing before this one")
            data = fs.read_bytes(path)
            got = scan(path, data, last)
            records = got.records
            if got.torn_at is not None:
                logger.warning("%s: torn write at offset %d, dropping %d bytes",
                               path, got.torn_at, len(data) - got.torn_at)
                fd = fs.open(path, os.O_WRONLY)
                try:
                    fs.ftruncate(fd, got.torn_at)
                    if self._fsync:
                        fs.fsync(fd)
                finally:
                    fs.close(fd)
            kinds = tuple(r[1] for r in records[:3])
            if kinds != _HEAD:
                # The head is written (and synced) before anything else goes into a segment, so a last
                # segment with an incomplete head is a rotation that crashed: it holds nothing yet.
                if last and kinds == _HEAD[:len(kinds)] and (scanned or seq == 1):
                    logger.warning("%s: incomplete segment head (crash while starting it), removing", path)
                    fs.unlink(path)
                    self._sync_dir()
                    continue
                end = len(data) if got.torn_at is None else got.torn_at
                bad = next((r[0] for r, k in zip(records, _HEAD, strict=False) if r[1] != k), end)
                raise CorruptLogError(path, bad, "segment does not start with HEADER, BASE, HARD_STATE")
            header = records[0][2]
            if header[:3] != [WAL_NAME, got.version, seq]:
                raise CorruptLogError(path, records[0][0], f"bad segment header {header!r}")
            self._segs.append(_Segment(seq, path, header[3], got.salt))
            self._last_end = got.end  # where the next write goes, if this is the last kept segment
            self._last_version = got.version
            scanned.append((path, records))
        self._replay(scanned)

    def _replay(self, scanned: list[tuple[Path, list[tuple[int, int, Any]]]]) -> None:
        # The base only changes by writing a BASE record holding the base as of that moment, so the last
        # BASE is the current one. Knowing it up front lets replay skip entries at or below it, which may
        # start anywhere (and even be truncated) once compact() has deleted the segments before them.
        si, st = 0, 0
        for _, records in scanned:
            for _, rtype, value in records:
                if rtype == BASE:
                    si, st = value[0], value[1]
        entries: list[Entry] = []  # only entries > si
        last: int | None = None  # index of the last entry written, whether or not it is kept
        hard_state = HardState()

        def bad(reason: str) -> CorruptLogError:
            return CorruptLogError(path, off, reason)

        for path, records in scanned:  # noqa: B007 - corrupt() above reads path
            for off, rtype, v in records:
                try:
                    if rtype == HEADER:
                        if off != records[0][0] or (last is not None and v[3] != last):
                            raise bad(f"segment header {v!r} does not continue the log at index {last}")
                        last = v[3] if last is None else last
                    elif rtype == BASE:
                        if v[2]:  # reset: nothing before it counts
                            entries.clear()
                        last = v[0] if v[2] else max(last, v[0])
                    elif rtype == HARD_STATE:
                        hard_state = HardState(v[0], v[1])
                    elif rtype == TRUNCATE:
                        if not 1 <= v <= last:
                            raise bad(f"truncation to {v} outside the log ..{last}")
                        del entries[max(0, v - si - 1):]
                        last = v - 1
                    else:  # ENTRY
                        term, index, kind, data = v
                        if last is None or index != last + 1:
                            raise bad(f"entry {index} does not follow entry {last}")
                        last = index
                        if index > si:
                            if index != si + 1 + len(entries):
                                raise bad(f"entries {si + 1 + len(entries)}..{index - 1} are missing")
                            entries.append(Entry(term, index, EntryKind(kind) if kind in _KINDS else kind, data))
                except (TypeError, ValueError, IndexError) as e:
                    raise bad(f"malformed record ({e!r})") from None
        self._entries, self.snapshot_index, self.snapshot_term, self.hard_state = entries, si, st, hard_state
