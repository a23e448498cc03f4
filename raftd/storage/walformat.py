"""The WAL's on-disk format: encoding batches, and reading a segment back after any crash.

Version 2 (written since issue 21).  A segment file is

    b"RAFTWAL2"                                          magic, 8 bytes
    salt                                                 8 random bytes, new for each segment
    batch, batch, ...                                    one per write of DurableLog (a group commit)

    batch  = head payload trailer
    head   = [u32 length][u32 crc32(payload)][u32 crc32(salt + the 8 bytes before)]
    trailer = head, then the byte 0xFF (so the last batch of a segment ends in a non-zero byte)
    payload = record, record, ...
    record = [u32 length][u8 type][msgpack value]        length = len(value)

little endian.  The batch is the unit of recovery: one pwrite() and one fdatasync() write it, so a
power loss before the fdatasync returns may keep any subset of its 512-byte sectors, and nothing of
it was acknowledged.  Its 12-byte header never straddles a sector (a batch that would start within
11 bytes of a sector's end starts at the next sector, after zeros), so after a crash the header
reads either as written or as zeros, and the header's own checksum tells a damaged length field
from a torn write.  The salt in the head's checksum means no bytes a client sends can read as a
batch of this segment (SQLite's WAL salts its frames for the same reason).  Record types, never renumbered (0 is unused, so zero-filled space never parses):

    HEADER      ["raftd-wal", version, seq, prev_index]  first record of every segment; prev_index is
                                                         the log's last index when it was started
    BASE        [snapshot_index, snapshot_term, reset]   entries <= snapshot_index are gone; reset=True
                                                         also voids every entry before it
    HARD_STATE  [term, voted_for]
    ENTRY       [term, index, kind, data]
    TRUNCATE    index                                    entries >= index are void

Reading the last segment (``scan``), from the start, batch by batch:

* a valid batch is taken whole;
* zeros to the end of the file are the end of the data (a preallocated tail);
* a damaged batch (payload checksum mismatch or a bad trailer, or a length running past the end
  of the file) with nothing but zeros after it is a torn tail: a write cut by a crash.  It is cut
  off;
* a zeroed head followed by data is the lost first sector of the last write (torn), unless the
  data ends in an intact batch that starts after it: then a batch was made durable after the
  damaged one, which a crash cannot explain.  That is why batches have a trailer: the last batch is
  found from the end of the data without reading inside the damaged one;
* anything else (a head whose checksum fails, a damaged batch followed by data) is damage no
  crash explains: CorruptLogError, with the file and offset.  Recovery never looks inside a damaged
  batch for a record that might follow (a client's value may contain one).

In any segment but the last every batch must be valid: a segment is complete and synced before
the next one is started.

The start of a segment: the magic and salt are written with its first batch.  If the first sector
reads as zeros but data follows, the first write was torn, unless an intact batch other than the
first ends the data (checked without the lost salt: payload checksum and the trailer's copy of the
head); any other start that is neither the magic nor a valid version 1 HEADER is corruption.

Version 1 (raftd before issue 21) had no magic and no batches: records
``[u32 length][u32 crc32(type + value)][u8 type][value]`` one after another.  Such segments are
still read (``scan`` tells them by their first bytes), never written: a log that ends in one
continues in a new version 2 segment.  A torn tail there is cut at the damaged record (a record
whose length runs past the end of the file, or a damaged record followed only by zeros); damage
followed by a valid record is corruption.  raftd before issue 21 cannot read version 2 segments
(it refuses them: "segment does not start with HEADER, BASE, HARD_STATE").
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

# Record types are stored on disk: never renumber. 0 is unused so zero-filled garbage never parses.
HEADER, BASE, HARD_STATE, ENTRY, TRUNCATE = 1, 2, 3, 4, 5
TYPES = frozenset((HEADER, BASE, HARD_STATE, ENTRY, TRUNCATE))
MAGIC = b"RAFTWAL2"
WAL_NAME, VERSION = "raftd-wal", 2
SECTOR = 512  # the unit a disk writes atomically
MAX_RECORD = 256 << 20
MAX_BATCH = 512 << 20  # a bigger write is split into several batches (each still a valid unit)

SALT = 8
_BATCH = struct.Struct("<III")  # length, crc32(payload), crc32(length and payload crc)
_PAIR = struct.Struct("<II")
_REC = struct.Struct("<IB")  # length, type
_V1 = struct.Struct("<IIB")  # version 1 record: length, crc32, type
_ZERO_BATCH = bytes(_BATCH.size)
_END = b"\xff"  # the trailer's last byte
TRAILER = _BATCH.size + len(_END)
_ZERO_V1 = bytes(_V1.size)
_NONZERO = re.compile(b"[^\x00]")


class CorruptLogError(Exception):
    """The log is damaged somewhere a crash cannot explain; refusing to guess what was lost."""

    def __init__(self, path: str | Path, offset: int, reason: str):
        self.path, self.offset, self.reason = str(path), offset, reason
        super().__init__(f"corrupt record in {path} at offset {offset}: {reason}")


@dataclass
class Scan:
    """One segment read back: its records as (offset, type, value), the offset of a torn tail
    to cut (or None), where the records end (the next write goes there), and the format."""
    records: list[tuple[int, int, Any]]
    torn_at: int | None
    end: int
    version: int
    salt: bytes = b""  # version 2: the segment's salt (b"" for a segment with nothing in it)


def record(rtype: int, value: Any) -> bytes:
    """One record, to go into a batch."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    if len(packed) > MAX_RECORD:  # recovery would rightly call such a record corrupt
        raise ValueError(f"record of {len(packed)} bytes exceeds the {MAX_RECORD}-byte limit")
    return _REC.pack(len(packed), rtype) + packed


def padding(offset: int) -> int:
    """Zeros to write at ``offset`` so that a batch header starting after them fits in a sector."""
    room = SECTOR - offset % SECTOR
    return room if room < _BATCH.size else 0


def frames(records: list[bytes], offset: int, salt: bytes) -> list[bytes]:
    """``records`` as batches to be written at ``offset`` (0 = a new segment: the magic and
    ``salt`` lead the first), one unless they pass MAX_BATCH bytes.  Each needs its own write
    and fdatasync: a power loss must never keep a later batch of one write without an earlier."""
    out: list[bytes] = []
    lead = b""
    if offset == 0:
        lead = MAGIC + salt
        offset = len(lead)
    seed = zlib.crc32(salt)
    i = 0
    while i < len(records):
        crc, length, j = 0, 0, i
        while j < len(records) and (j == i or length + len(records[j]) <= MAX_BATCH):
            crc = zlib.crc32(records[j], crc)
            length += len(records[j])
            j += 1
        pad = padding(offset)
        head = _PAIR.pack(length, crc)
        head += struct.pack("<I", zlib.crc32(head, seed))
        out.append(b"".join([lead, bytes(pad), head, *records[i:j], head, _END]))
        lead = b""
        offset += pad + _BATCH.size + length + TRAILER
        i = j
    return out


def frame(records: list[bytes], offset: int, salt: bytes) -> bytes:
    """``frames`` as one byte string (tests, and the explorer's batch-not-atomic mutant)."""
    return b"".join(frames(records, offset, salt))


def _zeros_from(data: bytes, pos: int) -> bool:
    """True if every byte from pos to the end is zero (a preallocated tail, or nothing)."""
    return _NONZERO.search(data, pos) is None


def scan(path: Path, data: bytes, last: bool) -> Scan:
    """Read one segment (``last``: the newest, the only one that may end in a torn write)."""
    if data[:len(MAGIC)] == MAGIC and len(data) >= len(MAGIC) + SALT:
        return _scan_v2(path, data, last, data[len(MAGIC):len(MAGIC) + SALT])
    if _is_v1(data):
        return _scan_v1(path, data, last)
    lead = data[:len(MAGIC) + SALT].rstrip(b"\0")
    if MAGIC.startswith(lead[:len(MAGIC)]) and _zeros_from(data, len(MAGIC) + SALT):
        # Nothing, zeros, or the start of the magic and salt: a new segment whose first write
        # did not survive (a preallocated file is zeros throughout).
        return Scan([], None if not data else 0, 0, VERSION)
    if last and data[:_BATCH.size + len(MAGIC) + SALT] == bytes(_BATCH.size + len(MAGIC) + SALT):
        first = len(MAGIC) + SALT  # where the first batch's head was
        later = _last_batch_start(data, first, None)
        if later is None:
            return Scan([], 0, 0, VERSION)  # the first write, its first sector lost: torn
        raise CorruptLogError(path, 0, f"segment starts with zeros, and an intact batch follows "
                                       f"at offset {later}")
    raise CorruptLogError(path, 0, "segment starts with neither the version 2 magic nor a "
                                   "version 1 HEADER record")


def _is_v1(data: bytes) -> bool:
    """A version 1 segment: its first record is a checksum-valid HEADER."""
    if len(data) < _V1.size:
        return False
    length, crc, rtype = _V1.unpack_from(data, 0)
    end = _V1.size + length
    return bool(rtype == HEADER and end <= len(data)
                and zlib.crc32(memoryview(data)[8:end]) == crc)


def _scan_v2(path: Path, data: bytes, last: bool, salt: bytes) -> Scan:
    buf, eof = memoryview(data), len(data)
    records: list[tuple[int, int, Any]] = []
    seed = zlib.crc32(salt)
    off = len(MAGIC) + SALT
    while True:
        pad = padding(off)
        if pad:
            if _NONZERO.search(data, off, min(off + pad, eof)):
                reason, explained = "non-zero bytes where a batch cannot start", False
                break
            off = min(off + pad, eof)
        if off >= eof or _zeros_from(data, off):
            return Scan(records, None, off, VERSION, salt)  # the end, or a zero tail
        if off + _BATCH.size > eof:
            reason, explained = "batch header cut short by the end of the file", True
            break
        head = data[off:off + _BATCH.size]
        if head == _ZERO_BATCH:
            # The first sector of the last write was lost and later ones kept (a torn write),
            # unless a whole batch ends the data: one made durable after this one.
            later = _last_batch_start(data, off, seed)
            reason, explained = "zeroed batch header", later is None
            if later is not None:
                reason += f", and an intact batch follows at offset {later}"
            break
        length, crc, head_crc = _BATCH.unpack_from(buf, off)
        if zlib.crc32(buf[off:off + 8], seed) != head_crc:
            # Cut inside the header itself (nothing after it) is a write cut short; else damage.
            reason = "batch header checksum mismatch"
            explained = _zeros_from(data, off + _BATCH.size)
            break
        end = off + _BATCH.size + length
        if end + TRAILER > eof:
            reason, explained = f"batch of {length} bytes runs past the end of the file", True
            break
        if zlib.crc32(buf[off + _BATCH.size:end]) != crc or data[end:end + TRAILER] != head + _END:
            explained = _zeros_from(data, end + TRAILER)
            reason = "batch checksum mismatch" + ("" if explained else
                                                  f", and data follows at offset {end + TRAILER}")
            break
        _records_in(path, buf, off + _BATCH.size, end, records)
        off = end + TRAILER
    if last and explained:
        return Scan(records, off, off, VERSION, salt)
    raise CorruptLogError(path, off, reason)


def _last_batch_start(data: bytes, after: int, seed: int | None) -> int | None:
    """Where the batch that ends the data starts, if it is intact and starts after ``after``;
    read backwards from its trailer, so nothing inside a damaged batch is parsed.  ``seed``:
    the crc of the segment's salt, which a client cannot know; None when the salt is lost (then
    the head's own checksum cannot be checked)."""
    end = len(data.rstrip(b"\0"))
    if end - TRAILER - _BATCH.size <= after or data[end - 1:end] != _END:
        return None
    tail = data[end - TRAILER:end - 1]
    length, crc, head_crc = (int(v) for v in _BATCH.unpack(tail))
    start = end - TRAILER - length - _BATCH.size
    if seed is not None and zlib.crc32(tail[:8], seed) != head_crc:
        return None
    if start <= after or data[start:start + _BATCH.size] != tail:
        return None
    if zlib.crc32(memoryview(data)[start + _BATCH.size:end - TRAILER]) != crc:
        return None
    return start


def _records_in(path: Path, buf: memoryview, off: int, end: int,
                out: list[tuple[int, int, Any]]) -> None:
    """The records of a batch whose checksum is fine: any fault is a bug or a foreign file."""
    while off < end:
        if off + _REC.size > end:
            raise CorruptLogError(path, off, "record header cut short inside its batch")
        length, rtype = _REC.unpack_from(buf, off)
        rend = off + _REC.size + length
        if rend > end:
            raise CorruptLogError(path, off, "record runs past the end of its batch")
        if rtype not in TYPES:
            raise CorruptLogError(path, off, f"unknown record type {rtype}")
        try:
            out.append((off, rtype, msgpack.unpackb(buf[off + _REC.size:rend], raw=False)))
        except Exception as e:  # noqa: BLE001 - checksum was fine, so this is a bug or a foreign file
            raise CorruptLogError(path, off, f"undecodable payload ({e})") from None
        off = rend


def _scan_v1(path: Path, data: bytes, last: bool) -> Scan:
    """A version 1 segment: records without batches."""
    buf, eof = memoryview(data), len(data)
    records: list[tuple[int, int, Any]] = []
    off = 0
    while off < eof:
        if off + _V1.size > eof:
            if _zeros_from(data, off):
                return Scan(records, None, off, 1)
            reason, reaches_eof = "record header cut short by end of file", True
        elif data[off:off + _V1.size] == _ZERO_V1:
            if _zeros_from(data, off):
                return Scan(records, None, off, 1)  # the rest was preallocated
            reason, reaches_eof = "zeroed record header", True
        else:
            length, crc, rtype = _V1.unpack_from(buf, off)
            end = off + _V1.size + length
            if end > eof:
                reason, reaches_eof = f"record length {length} runs past end of file", True
            elif length > MAX_RECORD:
                reason, reaches_eof = f"record length {length} exceeds {MAX_RECORD}", False
            elif zlib.crc32(buf[off + 8:end]) != crc:
                reaches_eof = _zeros_from(data, end)
                reason = "checksum mismatch" + ("" if reaches_eof else
                                                f", and data follows at offset {end}")
            elif rtype not in TYPES:
                raise CorruptLogError(path, off, f"unknown record type {rtype}")
            else:
                try:
                    records.append((off, rtype, msgpack.unpackb(buf[off + _V1.size:end], raw=False)))
                except Exception as e:  # noqa: BLE001 - checksum was fine: a bug or a foreign file
                    raise CorruptLogError(path, off, f"undecodable payload ({e})") from None
                off = end
                continue
        # Never look inside the damaged record for one that might follow (issue 21 §4).
        if last and reaches_eof:
            return Scan(records, off, off, 1)
        raise CorruptLogError(path, off, reason)
    return Scan(records, None, eof, 1)
