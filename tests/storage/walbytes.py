"""WAL segment bytes by the documented format (raftd/storage/walformat.py), for tests that cut or
damage files: where each batch starts and ends, and version 1 segments as raftd wrote them before
issue 21."""
from __future__ import annotations

import struct
import zlib

import msgpack

MAGIC = b"RAFTWAL2"
SECTOR, HEAD, TRAILER, SALT = 512, 12, 13, 8


def batches(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every batch of a version 2 segment, up to the first zero header."""
    out, off = [], len(MAGIC) + SALT
    while True:
        room = SECTOR - off % SECTOR
        if room < HEAD:
            off += room
        if off + HEAD > len(data) or data[off:off + HEAD] == bytes(HEAD):
            return out
        end = off + HEAD + struct.unpack_from("<I", data, off)[0] + TRAILER
        out.append((off, end))
        off = end


def data_end(data: bytes) -> int:
    found = batches(data)
    return found[-1][1] if found else 0


def v1_record(rtype: int, value) -> bytes:
    body = bytes((rtype,)) + msgpack.packb(value, use_bin_type=True)
    return struct.pack("<II", len(body) - 1, zlib.crc32(body)) + body


def v1_segment(seq: int, prev_index: int, base: tuple[int, int, bool], hard_state: tuple,
               entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A version 1 segment: HEADER, BASE, HARD_STATE, then ENTRY records (term, index, kind,
    data)."""
    out = [v1_record(1, ["raftd-wal", 1, seq, prev_index]), v1_record(2, list(base)),
           v1_record(3, list(hard_state))]
    out += [v1_record(4, list(e)) for e in entries]
    return b"".join(out)
