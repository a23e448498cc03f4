"""DurableLog with preallocated segments (raftd's wal_preallocate_bytes): records are written inside
a
file already extended with zeros, and recovery must tell a zero tail from a torn write and from
corruption."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from raftd.core.types import Entry, EntryKind, HardState
from raftd.storage import CorruptLogError, DurableLog
from tests.storage.test_wal import ents, segments
from tests.storage.walbytes import batches, data_end

PRE = 4096


def test_files_are_extended_ahead_and_reopen_writes_after_the_records(tmp_path):
    log = DurableLog.open(tmp_path, preallocate=PRE)
    log.save(HardState(1, "a"), ents(1, 3))
    seg = segments(tmp_path)[0]
    data = seg.read_bytes()
    end = data_end(data)
    assert len(data) >= PRE > end and not data[end:].strip(b"\0")  # zeros ahead of the records
    log.save(None, ents(4, 4))
    log = _reopen(log, tmp_path)
    assert log.all_entries() == ents(1, 4) and log.hard_state == HardState(1, "a")
    log.save(HardState(2, "b"), ents(5, 6, term=2))
    log = _reopen(log, tmp_path)
    assert log.all_entries() == ents(1, 4) + ents(5, 6, term=2)
    log.close()
    # An appending log (preallocate=0) opens a preallocated one and writes after its records.
    log = DurableLog.open(tmp_path)
    log.save(None, ents(7, 7, term=2))
    log = _reopen(log, tmp_path)
    assert log.last_index == 7
    log.close()


def test_one_fsync_per_save_including_the_extensions(tmp_path):
    log = DurableLog.open(tmp_path, preallocate=256, segment_bytes=2048)
    for i in range(1, 200):
        log.save(None, ents(i, i, size=40))
    assert log.stats["fsyncs"] == 199 and len(segments(tmp_path)) > 3
    log = _reopen(log, tmp_path, preallocate=256, segment_bytes=2048)
    assert log.all_entries() == ents(1, 199, size=40)
    log.compact(150, 1)
    assert log.first_index == 151 and len(segments(tmp_path)) < 4
    log.close()


def test_torn_tail_every_cut_point_inside_a_preallocated_file(tmp_path, caplog):
    """A crash leaves a prefix of the last write and zeros where the rest should be."""
    src = tmp_path / "src"
    log = DurableLog.open(src, preallocate=PRE)
    log.save(HardState(1, "a"), ents(1, 5))
    seg = segments(src)[0]
    start = data_end(seg.read_bytes())
    tail = ents(6, 7, term=2, size=30)
    log.save(HardState(2, "b"), tail)
    log.close()
    data = seg.read_bytes()
    end = data_end(data)
    assert [b for b in batches(data) if b[0] >= start] == [(start, end)]  # one save, one batch
    for cut in range(start, end + 1):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        (d / seg.name).write_bytes(data[:cut] + bytes(len(data) - cut))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="raftd.storage"):
            log = DurableLog.open(d, preallocate=PRE, fsync=False)
        done = cut == end  # all of the batch or nothing of it (issue 21 §3)
        if cut not in (start, end):
            assert "torn write" in caplog.text, cut
        assert log.hard_state == (HardState(2, "b") if done else HardState(1, "a")), cut
        assert log.all_entries() == ents(1, 5) + (tail if done else []), cut
        log.save(None, [Entry(3, log.last_index + 1, data=b"after")])  # writable afterwards
        log = _reopen(log, d, fsync=False)
        assert log.all_entries()[-1] == Entry(3, log.last_index, data=b"after")
        log.close()
        shutil.rmtree(d)


def test_zeroed_start_of_the_last_record_is_a_torn_write(tmp_path, caplog):
    """The disk may persist the end of a write before its start: zeros, then the rest."""
    log = DurableLog.open(tmp_path, preallocate=PRE)
    log.save(None, ents(1, 2))
    log.save(None, ents(3, 3))
    log.close()
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    start, end = batches(bytes(data))[-1]
    data[start:start + 12] = bytes(12)
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="raftd.storage"):
        log = DurableLog.open(tmp_path, preallocate=PRE)
    assert log.all_entries() == ents(1, 2) and "torn write" in caplog.text
    log.close()


@pytest.mark.parametrize("damage", ["zero-header", "flip"])
def test_damage_before_valid_records_is_corruption_not_a_zero_tail(tmp_path, damage):
    log = DurableLog.open(tmp_path, preallocate=PRE)
    for i in range(1, 11):
        log.save(None, ents(i, i))
    log.close()
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    start, end = batches(bytes(data))[5]
    if damage == "zero-header":
        data[start:start + 12] = bytes(12)
    else:
        data[(start + end) // 2] ^= 0x40
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as err:
        DurableLog.open(tmp_path, preallocate=PRE)
    assert err.value.offset == start
    assert ("zeroed batch header, and an intact batch follows" if damage == "zero-header"
            else "checksum mismatch") in str(err.value)


def test_records_ending_in_zero_bytes_are_not_taken_for_the_tail(tmp_path):
    log = DurableLog.open(tmp_path, preallocate=PRE)
    zs = [Entry(1, i, EntryKind.NORMAL, bytes(i)) for i in range(1, 6)]  # data of zeros only
    log.save(HardState(0, None), zs)
    log = _reopen(log, tmp_path)
    assert log.all_entries() == zs
    log.close()


def _reopen(log: DurableLog, d: Path, **kw) -> DurableLog:
    log.close()
    return DurableLog.open(d, **{"preallocate": PRE, **kw})
