"""The recording file system (raftd.storage.fsmodel): what it says a power loss may leave."""
from __future__ import annotations

import errno
import os
from random import Random

import pytest

from raftd.storage.fsmodel import SECTOR, FsModel

W = os.O_WRONLY | os.O_CREAT


def contents(states, path: str) -> list[bytes | None]:
    return [s.read_bytes(path) if s.exists(path) else None for s in states]


def synced_file(m: FsModel, path: str, data: bytes) -> int:
    fd = m.open(path, W)
    m.pwrite(fd, data, 0)
    m.fsync(fd)
    m.fsync_dir(os.path.dirname(path))
    return fd


def test_fsynced_bytes_survive_and_a_file_never_fsynced_keeps_any_part():
    m = FsModel()
    m.mkdir("/d")
    m.fsync_dir("/")
    synced_file(m, "/d/a", b"durable")
    fd = m.open("/d/b", W)
    m.pwrite(fd, b"x" * 3000, 0)
    m.fsync_dir("/d")  # the name is durable, the bytes are not
    states = list(m.crash_states())
    assert set(contents(states, "/d/a")) == {b"durable"}
    got = set(contents(states, "/d/b"))  # writeback may have written any of its sectors
    assert {b"", b"x" * 3000} < got and all(len(c) <= 3000 for c in got)
    assert m.read_bytes("/d/b") == b"x" * 3000  # the model itself is unchanged


def test_a_pending_write_is_kept_lost_or_torn_at_sectors_later_without_earlier():
    m = FsModel()
    fd = synced_file(m, "/f", b"")
    data = bytes(range(256)) * 8  # 2048 bytes: 4 sectors
    m.pwrite(fd, data, 0)
    got = set(contents(m.crash_states(torn="all"), "/f"))
    assert got == set(contents(m.crash_states(torn="all"), "/f"))  # deterministic
    assert b"" in got and data in got
    assert data[:SECTOR] in got  # a prefix
    assert bytes(SECTOR) + data[SECTOR:] in got  # a later sector without the first
    assert len(got) == 2 ** 4  # every subset of the 4 sectors
    bounded = set(contents(m.crash_states(), "/f"))
    assert {b"", data, data[:SECTOR], bytes(SECTOR) + data[SECTOR:]} <= bounded < got


def test_unsynced_name_operations_survive_as_an_in_order_prefix():
    m = FsModel()
    synced_file(m, "/old", b"1")
    fd = m.open("/tmp1", W)
    m.pwrite(fd, b"2", 0)
    m.fsync(fd)
    m.rename("/tmp1", "/old")  # replace, not yet durable
    m.unlink("/old")
    m.open("/new", W)
    names = {tuple(sorted(s.listdir("/"))) + (s.read_bytes("/old") if s.exists("/old") else b"-",)
             for s in m.crash_states()}
    # create tmp1 / rename / unlink / create new, kept in order: no state has /new but /old
    assert names == {("old", b"1"), ("old", "tmp1", b"1"), ("old", b"2"), (b"-",), ("new", b"-")}
    m.fsync_dir("/")
    assert {tuple(s.listdir("/")) for s in m.crash_states()} == {("new",)}


def test_a_name_is_durable_only_through_its_own_directory():
    m = FsModel()
    m.mkdir("/data")  # never synced into /
    synced_file(m, "/data/wal", b"acknowledged")
    assert {s.exists("/data/wal") for s in m.crash_states()} == {False, True}


def test_a_failed_fsync_leaves_its_writes_doubtful_until_they_are_cut_off():
    m = FsModel()
    fd = synced_file(m, "/f", b"A" * 100)
    m.pwrite(fd, b"B" * 100, 100)
    m.fail("fsync", path="/f")
    with pytest.raises(OSError) as e:
        m.fdatasync(fd)
    assert e.value.errno == errno.EIO
    assert m.read_bytes("/f") == b"A" * 100 + b"B" * 100  # the page cache still has them
    m.fsync(fd)  # succeeds, and proves nothing about the failed write
    assert set(contents(m.crash_states(), "/f")) == {b"A" * 100, b"A" * 100 + b"B" * 100}
    m.ftruncate(fd, 100)
    m.fsync(fd)
    assert set(contents(m.crash_states(), "/f")) == {b"A" * 100}


def test_capacity_gives_a_short_write_then_enospc():
    m = FsModel(capacity=1000)
    fd = synced_file(m, "/f", b"x" * 600)
    assert m.pwrite(fd, b"y" * 600, 600) == 400
    with pytest.raises(OSError) as e:
        m.pwrite(fd, b"y" * 200, 1000)
    assert e.value.errno == errno.ENOSPC
    assert m.pwrite(fd, b"z" * 10, 0) == 10  # overwriting needs no space


def test_process_crash_keeps_the_page_cache_and_crash_states_are_independent():
    m = FsModel()
    fd = synced_file(m, "/f", b"old")
    m.pwrite(fd, b"new", 0)
    p = m.process_crash()
    assert p.read_bytes("/f") == b"new" and p.unsynced()
    assert set(contents(p.crash_states(), "/f")) == {b"old", b"new"}
    s = next(m.crash_states())
    assert not s.unsynced()
    s.ftruncate(s.open("/f", os.O_WRONLY), 0)
    assert m.read_bytes("/f") == b"new" and p.read_bytes("/f") == b"new"


def test_sampling_keeps_both_extremes_and_is_bounded():
    m = FsModel()
    fds = [synced_file(m, f"/f{i}", b"") for i in range(4)]
    for fd in fds:
        m.pwrite(fd, os.urandom(4 * SECTOR), 0)
    total = m.count_crash_states()
    assert total > 1000
    states = list(m.crash_states(limit=50, rng=Random(1)))
    assert len(states) == 50
    firsts = [s.read_bytes("/f0") for s in (states[0], states[-1])]
    assert firsts == [b"", m.read_bytes("/f0")]
    possible = {s.read_bytes("/f1") for s in m.crash_states(torn="all")}
    assert m.crash(Random(2)).read_bytes("/f1") in possible


def test_flock_is_exclusive_until_closed():
    m = FsModel()
    a, b = m.open("/LOCK", os.O_RDWR | os.O_CREAT), m.open("/LOCK", os.O_RDWR)
    m.flock(a)
    with pytest.raises(BlockingIOError):
        m.flock(b)
    m.close(a)
    m.flock(b)


def test_the_wal_and_the_snapshot_store_run_unchanged_over_the_model():
    from raftd.core import Configuration, SnapshotMeta
    from raftd.core.types import Entry, HardState
    from raftd.storage.snapshots import SnapshotStore, read_state
    from raftd.storage.wal import DurableLog

    m = FsModel()
    log = DurableLog.open("/n1/wal", fs=m, segment_bytes=600)
    for i in range(1, 30):
        log.save(HardState(1, "a") if i == 1 else None, [Entry(1, i, data=b"x" * 40)])
    log.compact(20, 1)
    store = SnapshotStore("/n1/snapshots", fs=m)
    meta = SnapshotMeta(20, 1, Configuration.make(["n1"]))
    store.write(meta, {"applied": 20}, [[["k", b"v"]]])
    assert not m.unsynced()  # everything the WAL and the store acknowledged is durable
    for s in (m.process_crash(), *m.crash_states()):
        log2 = DurableLog.open("/n1/wal", fs=s, segment_bytes=600)
        assert (log2.first_index, log2.last_index, log2.hard_state) == (21, 29, HardState(1, "a"))
        info = SnapshotStore("/n1/snapshots", fs=s).latest_valid()
        _, header, batches = read_state(info.path, s)
        assert (info.meta.index, header, list(batches)) == (20, {"applied": 20}, [[["k", b"v"]]])
