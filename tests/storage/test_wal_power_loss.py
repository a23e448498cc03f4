"""Issue 21 regressions for the WAL: a failed fsync's batch never comes back (§2), a client's
value cannot turn a torn tail into "corruption" (§4), and logs written before the batch format
are still read (the format change keeps reading version 1)."""
from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from raftd.core.types import Entry, HardState
from raftd.storage import DurableLog
from raftd.storage.fsmodel import FsModel
from raftd.storage.walformat import ENTRY, frame, record
from tests.storage.test_wal import ents, segments
from tests.storage.walbytes import MAGIC, batches, v1_record, v1_segment


@pytest.mark.parametrize("op,error", [("fsync", errno.EIO), ("pwrite", errno.ENOSPC)])
def test_a_failed_batch_is_cut_off_and_never_replayed(op, error):
    """§2: after the fsync (or the write) fails, the bytes of that batch are cut back to the
    last durable size.  Before the fix a restart replayed them from the page cache."""
    fs = FsModel()
    log = DurableLog.open("/n1/wal", fs=fs)
    log.save(HardState(1, "n2"), ents(1, 3))
    fs.fail(op, path="/wal/", error=error)
    with pytest.raises(OSError):
        log.save(HardState(2, "n3"), ents(4, 6, term=2))
    with pytest.raises(RuntimeError, match="reopen"):
        log.save(None, ents(4, 4))  # refuses to go on after the failure
    for state in (fs.process_crash(), *fs.crash_states(torn="all")):
        again = DurableLog.open("/n1/wal", fs=state)
        assert again.hard_state == HardState(1, "n2") and again.all_entries() == ents(1, 3)
        again.save(None, ents(4, 4))  # and the reopened log is writable
        again.close()


def test_a_value_holding_a_valid_batch_does_not_make_a_torn_tail_corruption(tmp_path, caplog):
    """§4: the first sector of the last write is lost, later ones kept, and the entry's value
    is itself a well-formed batch.  Recovery cuts the torn tail; before the fix it searched
    inside the damaged data, found the client's frame and refused to start."""
    fake = frame([record(ENTRY, [9, 99, 0, b"forged"])], 700, bytes(8))  # a guessed salt
    log = DurableLog.open(tmp_path)
    log.save(HardState(1, "n2"), ents(1, 2))
    log.save(None, [Entry(1, 3, data=b"x" * 600 + fake + b"y" * 900)])
    log.close()
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    start, end = batches(bytes(data))[-1]
    assert end - start > 1024  # spans several sectors
    first_sector_end = (start // 512 + 1) * 512
    data[start:first_sector_end] = bytes(first_sector_end - start)  # lost; the rest kept
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="raftd.storage"):
        log = DurableLog.open(tmp_path)
    assert log.all_entries() == ents(1, 2) and "torn write" in caplog.text
    log.close()


def _write_v1(d: Path, entries: list[tuple[int, int, int, bytes]], tail: bytes = b"") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    seg = d / "0000000000000001.wal"
    seg.write_bytes(v1_segment(1, 0, (0, 0, False), (3, "n2"), entries) + tail)
    return seg


def test_a_version_1_log_is_read_and_continued_in_a_version_2_segment(tmp_path):
    seg = _write_v1(tmp_path, [(3, i, 0, b"old%d" % i) for i in range(1, 6)])
    log = DurableLog.open(tmp_path)
    assert log.hard_state == HardState(3, "n2") and log.last_index == 5
    assert log.all_entries()[0] == Entry(3, 1, data=b"old1")
    log.save(HardState(4, None), [Entry(4, 6, data=b"new")])
    log.close()
    names = segments(tmp_path)
    assert names[0] == seg and len(names) == 2  # never appended to a version 1 segment
    assert names[1].read_bytes().startswith(MAGIC)
    log = DurableLog.open(tmp_path)
    assert log.hard_state == HardState(4, None) and log.last_index == 6
    assert [e.data for e in log.all_entries()] == [b"old1", b"old2", b"old3", b"old4",
                                                   b"old5", b"new"]
    log.close()


def test_a_torn_version_1_tail_is_cut_without_searching_inside_it(tmp_path, caplog):
    """§4 for version 1 logs: the last record is damaged and its value holds a valid record;
    before the fix recovery called that "a valid record follows" and refused to start."""
    inner = v1_record(ENTRY, [3, 7, 0, b"forged"])
    last = bytearray(v1_record(ENTRY, [3, 6, 0, b"a" * 50 + inner + b"b" * 50]))
    last[20] ^= 0xFF  # damaged, cut short by the crash
    seg = _write_v1(tmp_path, [(3, i, 0, b"v") for i in range(1, 6)], tail=bytes(last[:-30]))
    with caplog.at_level(logging.WARNING, logger="raftd.storage"):
        log = DurableLog.open(tmp_path)
    assert log.last_index == 5 and "torn write" in caplog.text
    assert seg.stat().st_size < len(v1_segment(1, 0, (0, 0, False), (3, "n2"),
                                               [(3, i, 0, b"v") for i in range(1, 6)])) + 1
    log.close()
