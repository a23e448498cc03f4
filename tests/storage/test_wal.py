"""DurableLog against real files: round trips, truncation, rotation, compaction, crashes and corruption."""
from __future__ import annotations

import logging
import shutil
import stat
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftd.core.errors import CompactedError
from raftd.core.types import Entry, EntryKind, HardState
from raftd.storage import CorruptLogError, DurableLog
from tests.storage.walbytes import batches


def ents(lo: int, hi: int, term: int = 1, size: int = 10) -> list[Entry]:
    """Entries lo..hi inclusive, with data that identifies them."""
    return [Entry(term, i, EntryKind.NORMAL, f"{term}:{i}:".encode().ljust(size, b".")) for i in range(lo, hi + 1)]


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))




def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def reopen(log: DurableLog, d: Path, **kw) -> DurableLog:
    log.close()
    return DurableLog.open(d, **kw)


def test_round_trip(tmp_path):
    d = tmp_path / "wal"
    log = DurableLog.open(d)
    assert (log.first_index, log.last_index, log.hard_state) == (1, 0, HardState())
    log.save(HardState(3, "n2"), ents(1, 3, term=2))
    log.save(None, [Entry(3, 4, EntryKind.CONFIG, b"\x00\xffcfg"), Entry(3, 5, EntryKind.NOOP)])
    log.save(HardState(4, None), [])
    expected = log.all_entries()
    log = reopen(log, d)
    assert log.hard_state == HardState(4, None)
    assert log.all_entries() == expected
    assert log.all_entries()[3].kind is EntryKind.CONFIG and log.all_entries()[3].data == b"\x00\xffcfg"
    assert (log.first_index, log.last_index, log.snapshot_index, log.snapshot_term) == (1, 5, 0, 0)
    assert log.entries(2, 4) == expected[1:3] and log.entries(3, 3) == []
    with pytest.raises(ValueError):
        log.entries(2, 7)
    log.close()


def test_directory_created_private(tmp_path):
    d = tmp_path / "a" / "wal"
    DurableLog.open(d).close()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert [p.name for p in segments(d)] == ["0000000000000001.wal"]


def test_save_truncates_conflicting_suffix(tmp_path):
    log = DurableLog.open(tmp_path)
    log.save(HardState(1, "a"), ents(1, 10, term=1))
    log.save(HardState(2, "b"), ents(6, 7, term=2))  # conflict at 6: 6..10 replaced by 6..7
    assert [(e.index, e.term) for e in log.all_entries()] == [(i, 1) for i in range(1, 6)] + [(6, 2), (7, 2)]
    expected = log.all_entries()
    log = reopen(log, tmp_path)
    assert log.all_entries() == expected and log.last_index == 7 and log.hard_state == HardState(2, "b")
    log.save(None, ents(8, 9, term=2))  # appending after a truncation replays fine too
    log = reopen(log, tmp_path)
    assert log.all_entries() == expected + ents(8, 9, term=2)
    log.close()


def test_save_rejects_bad_batches(tmp_path):
    log = DurableLog.open(tmp_path)
    log.save(None, ents(1, 3))
    size = segments(tmp_path)[0].stat().st_size
    for bad in ([Entry(1, 5)], [Entry(1, 4), Entry(1, 6)], [Entry(1, 4), Entry(1, 4)], [Entry(1, 0)]):
        with pytest.raises(ValueError):
            log.save(HardState(9, "x"), bad)
    assert log.all_entries() == ents(1, 3) and log.hard_state == HardState()
    assert segments(tmp_path)[0].stat().st_size == size  # nothing written
    log.close()


def test_rotation_across_small_segments(tmp_path):
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    for i in range(1, 301, 3):
        log.save(HardState(i, f"n{i % 3}"), ents(i, i + 2, size=40))
    files = segments(tmp_path)
    assert len(files) >= 4
    assert all(f.stat().st_size >= 4096 for f in files[:-1])
    log = reopen(log, tmp_path, segment_bytes=4096)
    assert log.all_entries() == ents(1, 300, size=40) and log.hard_state == HardState(298, "n1")
    log.save(None, ents(301, 301))
    assert log.last_index == 301
    log.close()


def test_truncation_below_current_segment(tmp_path):
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    log.save(None, ents(1, 200, size=40))
    log.save(None, ents(201, 260, size=40))  # starts a new segment
    assert len(segments(tmp_path)) == 2
    log.save(None, ents(50, 52, term=2))  # truncates into the previous segment
    expected = ents(1, 49, size=40) + ents(50, 52, term=2)
    assert log.all_entries() == expected
    log = reopen(log, tmp_path, segment_bytes=4096)
    assert log.all_entries() == expected
    # Once the old segment is compacted away, replay starts inside a segment whose truncation points
    # below its own first entry.
    log.save(None, ents(53, 300, term=2, size=40))
    log.compact(280, 2)
    assert segments(tmp_path)[0].name != "0000000000000001.wal"
    expected = log.all_entries()
    log = reopen(log, tmp_path, segment_bytes=4096)
    assert log.all_entries() == expected and log.first_index == 281
    log.close()


def test_crash_before_old_segments_are_deleted(tmp_path):
    # compact() and reset() make their record durable, then delete files; a crash in between leaves the
    # old files behind, and replaying them must not change the outcome.
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    log.save(HardState(1, "a"), ents(1, 400, size=40))
    log.save(None, ents(401, 420))
    saved = {p.name: p.read_bytes() for p in segments(tmp_path)}
    # Late binding is the point: the second op acts on the log the first iteration reopened.
    for op in (lambda: log.compact(400, 1), lambda: log.reset(1000, 9)):  # noqa: B023 - see above
        op()
        state = (log.snapshot_index, log.snapshot_term, log.all_entries(), log.hard_state)
        for name, data in saved.items():
            if not (tmp_path / name).exists():
                (tmp_path / name).write_bytes(data)
        log = reopen(log, tmp_path, segment_bytes=4096)
        assert (log.snapshot_index, log.snapshot_term, log.all_entries(), log.hard_state) == state
        saved = {p.name: p.read_bytes() for p in segments(tmp_path)}
    log.close()


def test_compact_deletes_old_segments_and_keeps_base(tmp_path):
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    log.save(HardState(1, "a"), [])
    for i in range(1, 401, 4):
        log.save(None, ents(i, i + 3, size=40))
    log.save(HardState(5, "b"), [])
    before = segments(tmp_path)
    log.compact(300, 1)
    after = segments(tmp_path)
    assert before[-1] == after[-1] and 1 < len(after) <= len(before) - 3
    assert (log.first_index, log.last_index, log.snapshot_index, log.snapshot_term) == (301, 400, 300, 1)
    with pytest.raises(CompactedError):
        log.entries(300, 302)
    log = reopen(log, tmp_path, segment_bytes=4096)
    assert (log.snapshot_index, log.snapshot_term, log.first_index) == (300, 1, 301)
    assert log.all_entries() == ents(301, 400, size=40) and log.hard_state == HardState(5, "b")
    with pytest.raises(ValueError):
        log.compact(350, 7)  # wrong term for entry 350
    log.compact(400, 1)  # everything; the hard state written in now-deleted segments must survive
    log.compact(10, 1)  # going backwards is a no-op
    log = reopen(log, tmp_path, segment_bytes=4096)
    assert (log.first_index, log.last_index, log.all_entries()) == (401, 400, [])
    assert log.hard_state == HardState(5, "b")
    assert len(segments(tmp_path)) == 1
    log.close()


def test_compact_at_every_index(tmp_path):
    # Segment boundaries fall every few entries, so this compacts exactly at, before and after each one.
    for si in range(0, 41):
        d = tmp_path / str(si)
        log = DurableLog.open(d, segment_bytes=200, fsync=False)
        for i in range(1, 41):
            log.save(None, ents(i, i, size=30))
        log.compact(si, 1)
        log.save(None, ents(41, 41))
        log = reopen(log, d, segment_bytes=200, fsync=False)
        assert log.first_index == si + 1 and log.all_entries() == ents(si + 1, 40, size=30) + ents(41, 41)
        log.close()


def test_reset(tmp_path):
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    log.save(HardState(2, "a"), ents(1, 300, size=40))
    log.save(None, ents(301, 310))
    log.reset(100, 7)  # InstallSnapshot: even entries after 100 are gone
    assert (log.first_index, log.last_index, log.snapshot_term, log.all_entries()) == (101, 100, 7, [])
    assert len(segments(tmp_path)) == 1
    with pytest.raises(ValueError):
        log.save(None, ents(50, 51))
    log.save(None, ents(101, 103, term=7))
    log = reopen(log, tmp_path)
    assert (log.snapshot_index, log.snapshot_term, log.hard_state) == (100, 7, HardState(2, "a"))
    assert log.all_entries() == ents(101, 103, term=7)
    log.close()


def test_one_fsync_per_save(tmp_path):
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    saves, nxt = 0, 1
    for batch in [1, 1, 7, 64, 200, 3, 512, 1] + [5] * 50:
        log.save(HardState(saves, None), ents(nxt, nxt + batch - 1))
        nxt += batch
        saves += 1
    log.save(HardState(99, "z"), [])
    saves += 1
    assert len(segments(tmp_path)) > 3  # rotations happened inside those saves
    assert log.stats["fsyncs"] == saves
    assert log.stats["records_written"] > nxt and log.stats["bytes_written"] > 0
    log.close()


def _build_and_cut(tmp_path: Path, last_save: list[Entry], *, segment_bytes: int, prefix: list[Entry]):
    """Write prefix, then last_save; return (segment dir, last segment name, its bytes, where last_save began)."""
    src = tmp_path / "src"
    log = DurableLog.open(src, segment_bytes=segment_bytes)
    log.save(HardState(1, "a"), prefix)
    last_seg = segments(src)[-1]
    start = last_seg.stat().st_size
    log.save(HardState(2, "b"), last_save)
    if segments(src)[-1] != last_seg:  # last_save started a new segment
        last_seg, start = segments(src)[-1], 0
    log.close()
    return src, last_seg.name, last_seg.read_bytes(), start


@pytest.mark.parametrize("rotating", [False, True], ids=["same-segment", "new-segment"])
def test_torn_tail_every_cut_point(tmp_path, caplog, rotating):
    """A save is one batch: cut anywhere, it is all there or not at all (issue 21 §3)."""
    prefix = ents(1, 5) + (ents(6, 120, size=40) if rotating else [])
    tail = ents(len(prefix) + 1, len(prefix) + 2, term=2)
    src, name, data, start = _build_and_cut(tmp_path, tail, segment_bytes=4096, prefix=prefix)
    assert [b for b in batches(data) if b[0] >= start][-1][1] == len(data)
    for cut in range(start, len(data) + 1):  # every byte of the last save's write, head included
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        (d / name).write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="raftd.storage"):
            log = DurableLog.open(d, segment_bytes=4096, fsync=False)  # ~130 reopens: keep the suite fast
        done = cut == len(data)
        if rotating and not done:  # the new segment's head is incomplete: it is dropped whole
            assert not (d / name).exists()
        else:
            assert (d / name).stat().st_size == (len(data) if done else start)
        if cut not in (start, len(data)) and not rotating:
            assert "torn write" in caplog.text, "a torn tail must be logged"
        assert log.hard_state == (HardState(2, "b") if done else HardState(1, "a"))
        assert log.all_entries() == prefix + (tail if done else [])
        log.save(None, [Entry(3, log.last_index + 1, data=b"after")])  # writable afterwards
        log = reopen(log, d, segment_bytes=4096, fsync=False)
        assert log.all_entries() == prefix + (tail if done else []) + [Entry(3, log.last_index, data=b"after")]
        log.close()
        shutil.rmtree(d)


def test_crc_failure_in_last_batch_is_a_torn_write(tmp_path):
    # Bit rot in the very last batch cannot be told apart from a torn write; it is dropped, with a warning.
    log = DurableLog.open(tmp_path)
    log.save(None, ents(1, 2))
    log.save(None, ents(3, 4))
    log.close()
    seg = segments(tmp_path)[0]
    start, end = batches(seg.read_bytes())[-1]
    flip(seg, (start + end) // 2)
    log = DurableLog.open(tmp_path)
    assert log.all_entries() == ents(1, 2) and seg.stat().st_size == start
    log.close()


def test_corrupt_batch_followed_by_valid_ones(tmp_path):
    log = DurableLog.open(tmp_path)
    for i in range(1, 11):
        log.save(None, ents(i, i))
    log.close()
    seg = segments(tmp_path)[0]
    data = seg.read_bytes()
    start, end = batches(data)[5]
    flip(seg, (start + end) // 2)
    with pytest.raises(CorruptLogError) as err:
        DurableLog.open(tmp_path)
    assert err.value.path == str(seg) and err.value.offset == start
    assert str(seg) in str(err.value) and f"offset {start}" in str(err.value)
    assert f"checksum mismatch, and data follows at offset {end}" in str(err.value)
    assert seg.stat().st_size == len(data)  # nothing was truncated


def test_corrupt_length_field_is_not_mistaken_for_a_torn_tail(tmp_path):
    # The batch header has its own checksum: a damaged length, which could make the batch look as if
    # it ran past the end of the file (a torn write), is corruption.
    log = DurableLog.open(tmp_path)
    for i in range(1, 11):
        log.save(None, ents(i, i))
    log.close()
    seg = segments(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    start, _ = batches(bytes(data))[6]
    struct.pack_into("<I", data, start, 1 << 20)
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as err:
        DurableLog.open(tmp_path)
    assert err.value.offset == start and "batch header checksum mismatch" in str(err.value)


@pytest.mark.parametrize("damage", ["flip-last-batch", "cut-tail", "huge-length", "zero-header"])
def test_corruption_in_non_last_segment(tmp_path, damage):
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    for i in range(1, 301, 3):
        log.save(None, ents(i, i + 2, size=40))
    log.close()
    first = segments(tmp_path)[0]
    data = first.read_bytes()
    start, end = batches(data)[-1]
    if damage == "flip-last-batch":  # would be a torn write in the last segment, not here
        flip(first, end - 1)
    elif damage == "cut-tail":
        first.write_bytes(data[:-3])
    elif damage == "zero-header":
        first.write_bytes(data[:start] + bytes(12) + data[start + 12:])
    else:
        first.write_bytes(data[:start] + struct.pack("<I", 0xFFFFFFF0) + data[start + 4:])
    with pytest.raises(CorruptLogError) as err:
        DurableLog.open(tmp_path, segment_bytes=4096)
    assert err.value.path == str(first) and err.value.offset == start


def test_missing_middle_segment(tmp_path):
    log = DurableLog.open(tmp_path, segment_bytes=4096)
    log.save(None, ents(1, 400, size=40))
    for i in range(401, 601, 50):
        log.save(None, ents(i, i + 49, size=40))
    log.close()
    files = segments(tmp_path)
    files[1].unlink()
    with pytest.raises(CorruptLogError, match="missing"):
        DurableLog.open(tmp_path)


# -- property test: random saves / truncations / compactions / resets / reopens vs. a list model ---------

_save = st.tuples(st.just("save"), st.integers(0, 6), st.integers(0, 8), st.booleans(), st.integers(1, 9))
_op = st.one_of(  # saves listed thrice so logs grow across many segments before a reset wipes them
    _save, _save, _save,
    st.tuples(st.just("reopen")),
    st.tuples(st.just("compact"), st.integers(0, 12)),
    st.tuples(st.just("reset"), st.integers(0, 40), st.integers(1, 9)),
)


@pytest.mark.parametrize("preallocate", [0, 64], ids=["append", "preallocated"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=40))
def test_matches_model(preallocate, ops):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "wal"
        # tiny segments: rotation and deletion all the time; some entries end in zero bytes, which a
        # preallocated tail must not be confused with
        kw = dict(segment_bytes=200, fsync=False, preallocate=preallocate)
        log = DurableLog.open(d, **kw)
        hs, snap, model = HardState(), (0, 0), []  # model: entries after snap
        for n, op in enumerate(ops):
            if op[0] == "save":
                _, back, count, with_hs, term = op
                first = max(snap[0] + 1, snap[0] + len(model) + 1 - back)
                batch = [Entry(term, i, EntryKind.NORMAL, bytes([n % 256]) * (i % 23)) for i in range(first, first + count)]
                new_hs = HardState(n, f"n{term}") if with_hs else None
                log.save(new_hs, batch)
                hs = new_hs or hs
                if batch:  # an empty batch truncates nothing
                    model = model[: first - snap[0] - 1] + batch
            elif op[0] == "reopen":
                log = reopen(log, d, **kw)
            elif op[0] == "compact":
                si = snap[0] + op[1]
                term = model[si - snap[0] - 1].term if si - snap[0] <= len(model) and si > snap[0] else 5
                log.compact(si, term)
                if si > snap[0]:
                    model, snap = model[si - snap[0]:], (si, term)
            else:
                log.reset(op[1], op[2])
                model, snap = [], (op[1], op[2])
            assert (log.hard_state, log.snapshot_index, log.snapshot_term) == (hs, *snap)
            assert log.all_entries() == model and log.last_index == snap[0] + len(model)
        log = reopen(log, d, **kw)
        assert (log.hard_state, log.snapshot_index, log.snapshot_term) == (hs, *snap)
        assert log.all_entries() == model
        log.close()
