"""Regressions for what a review of the issue-21 storage found, each reproduced before its fix:
a damaged start of the newest segment read as a torn tail (acknowledged entries and the hard
state silently gone), a failed batch brought back when the cut after it failed too, an install
compacting past the older kept snapshot, temp files left by failed snapshot writes, and a save
over MAX_BATCH written as several batches in one write."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from raftd.core import SnapshotMeta
from raftd.core.membership import Configuration
from raftd.core.types import Entry, HardState
from raftd.storage import explore as ex
from raftd.storage import walformat
from raftd.storage.fsmodel import FsModel
from raftd.storage.install import fit_wal
from raftd.storage.snapshots import IncomingSnapshot, SnapshotStore
from raftd.storage.wal import CorruptLogError, DurableLog

D = Path("/wal")


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.CRITICAL + 1, logger="raftd.storage")


@pytest.mark.parametrize("damage", [b"S", bytes(512)], ids=["flipped-magic", "zeroed-sector"])
def test_a_damaged_start_of_the_newest_segment_is_corruption_not_a_torn_tail(damage):
    """Before: read as a version 1 segment torn at 0 (or a torn first write), truncated and
    removed: last index 4 instead of 8, so the node could vote again in terms 5-8."""
    fs = FsModel()
    log = DurableLog.open(D, fs=fs, segment_bytes=1024)
    for i in range(1, 9):
        log.save(HardState(i, "n1"), [Entry(i, i, data=bytes(200))])
    log.close()
    last = D / sorted(fs.listdir(D))[-1]
    fd = fs.open(last, os.O_WRONLY)
    fs.pwrite(fd, damage, 0)
    fs.fsync(fd)
    fs.close(fd)
    with pytest.raises(CorruptLogError) as err:
        DurableLog.open(D, fs=fs, segment_bytes=1024)
    assert err.value.path == str(last) and err.value.offset == 0


def test_a_failed_batch_stays_gone_when_the_cut_after_it_fails_too():
    """The fallback (zeros over the batch) was never fsynced: one power-loss state replayed
    entry 2 and HardState(2, 'n2')."""
    fs = FsModel()
    log = DurableLog.open(D, fs=fs)
    log.save(HardState(1, "n1"), [Entry(1, 1, data=b"a")])
    fs.fail("fsync", path="/wal/")
    fs.fail("ftruncate", path="/wal/")
    with pytest.raises(OSError):
        log.save(HardState(2, "n2"), [Entry(2, 2, data=b"b")])
    log.close()
    for state in fs.crash_states(torn="all"):
        again = DurableLog.open(D, fs=state)
        assert (again.last_index, again.hard_state) == (1, HardState(1, "n1"))


def test_an_install_that_keeps_the_log_compacts_no_further_than_the_older_snapshot():
    """Issue 21 §8 in the install path: with the newest snapshot damaged, start-up must fall
    back to the older one; before, the install had compacted the WAL to the new snapshot."""
    fs = FsModel()
    node = ex.Node(fs)
    node.log.save(HardState(1, "n1"), ex.ents(1, 70, 1))
    ex._take_snapshot(41, 1)(ex.Run(fs, node))
    inc = IncomingSnapshot(node.store, 60, 1, "n2")
    inc.write(0, ex.snapshot_bytes(60, 1))
    meta = SnapshotMeta(60, 1, ex.CONFIG)
    node.store.adopt(inc.finish(), meta)
    assert fit_wal(node.log, meta, node.store.oldest_kept_index())
    node.store.prune()
    assert node.log.snapshot_index == 41
    node.close()
    newest = node.store.paths()[0]
    fd = fs.open(newest, os.O_WRONLY)
    fs.pwrite(fd, bytes(8), 100)
    fs.fsync(fd)
    fs.close(fd)
    again = ex.Node(fs)  # falls back to snapshot 41 and the log after it
    assert again.state().snapshot == (41, 1) and again.log.last_index == 70


def test_a_failed_snapshot_write_leaves_no_temp_file():
    fs = FsModel(capacity=60_000)
    store = SnapshotStore(Path("/d/snapshots"), fs=fs)
    cfg = Configuration(frozenset({"n1"}))
    for idx in (10, 20, 30):
        try:
            store.write(SnapshotMeta(idx, 1, cfg), {},
                        [[[b"k%d" % i, b"v" * 100] for i in range(400)]])
        except OSError:
            pass
    assert not [p for p in fs.files() if p.endswith(".tmp")]


def test_a_save_over_max_batch_is_written_and_synced_batch_by_batch(monkeypatch):
    """Several batches in one write could lose an earlier and keep a later one: corruption.
    Each batch now has its own write and fdatasync."""
    monkeypatch.setattr(walformat, "MAX_BATCH", 1000)
    fs = FsModel()
    log = DurableLog.open(D, fs=fs)
    log.save(HardState(1, "n1"), [Entry(1, 1, data=b"a")])
    points: list[FsModel] = []
    fs.on_op = lambda op, path: points.append(fs.process_crash()) if op == "pwrite" else None
    log.save(None, [Entry(1, i, data=b"x" * 600) for i in range(2, 5)])
    fs.on_op = None
    assert len(points) == 3  # one write per batch
    for point in points:
        for state in point.crash_states(torn="all"):
            again = DurableLog.open(D, fs=state)
            assert again.last_index in (1, 2, 3, 4)
