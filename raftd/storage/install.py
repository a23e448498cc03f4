"""Making the WAL agree with the newest snapshot: during an install and at start-up.

An install (Raft Figure 13, thesis §5.3) has one durable commit point, the snapshot file renamed
into snapshots/ and that directory fsynced (``SnapshotStore.adopt``).  Before it, the old
snapshots and the old WAL stand; after it, the WAL must start after the new snapshot.  The
runtime does that right after the commit point (``fit_wal``); a crash between the two leaves a
WAL that ends before the snapshot or holds another term at its index, which start-up mends the
same way (``reconcile``).  ``log_gap`` is the one state no crash may leave and recovery refuses:
a WAL whose base is past every valid snapshot.

These functions touch only the WAL and the snapshot metadata, so the crash-state explorer
(``raftd.storage.explore``) runs them over the file-system model exactly as raftd runs them.
"""
from __future__ import annotations

from raftd.core import SnapshotMeta
from raftd.storage.snapshots import SnapshotInfo
from raftd.storage.wal import DurableLog


def wal_term_at(st: DurableLog, index: int) -> int | None:
    """Term of the WAL's entry at ``index`` (its base's term at the base); None if it has none."""
    if index == st.snapshot_index:
        return st.snapshot_term
    if st.first_index <= index <= st.last_index:
        return st.entries(index, index + 1)[0].term
    return None


def fit_wal(st: DurableLog, meta: SnapshotMeta, keep_from: int | None = None) -> bool:
    """Make the WAL start after snapshot ``meta`` (ready.py step 0); True if the entries after it
    were kept.  Decided by the term of the stored entry at the snapshot index, never by how long
    the core's log is now: appends that arrived during the install grew that, and compacting a
    WAL whose entry has another term raises (issue 14 §3).  The core decided on the same entry:
    every save before the snapshot was drained first.  ``keep_from``: the oldest snapshot kept
    (SnapshotStore.oldest_kept_index): a log that continues the snapshot is compacted no further,
    so a damaged newest snapshot still falls back to the older one (issue 21 §8)."""
    if meta.index <= st.snapshot_index:
        return True  # the WAL already starts at or after it
    if wal_term_at(st, meta.index) == meta.term:
        # Figure 13 step 6: the log continues the snapshot; entries below it may stay.
        upto = meta.index if keep_from is None else min(meta.index, keep_from)
        term = wal_term_at(st, upto)
        if upto > st.snapshot_index and term is not None:
            st.compact(upto, term)
        return True
    st.reset(meta.index, meta.term)  # step 7: discard the whole log
    return False


def reconcile(st: DurableLog, info: SnapshotInfo | None,
              keep_from: int | None = None) -> str | None:
    """Start-up half of the install's commit point: a crash after the snapshot file was
    committed but before the WAL followed leaves a WAL that ends before the snapshot or holds
    another term at its index.  Left so, the follower rejects every append after the snapshot
    (issue 14 §2: wedged) or fails to save one (issue 21 §5: "entries start at 11, log needs
    1..4" at every restart).  Do what the install would have done; say what, or None."""
    if info is None:
        return None
    meta = info.meta
    term = wal_term_at(st, meta.index)
    if meta.index <= st.snapshot_index or term == meta.term:
        return None  # the WAL starts at or after it, or continues its history
    what = f"ends at {st.last_index}" if term is None else f"has term {term} there"
    fit_wal(st, meta, keep_from)
    return (f"snapshot {meta.index} (term {meta.term}) is newer than the WAL, which {what}: "
            f"an install was cut short; the log now starts after the snapshot")


def log_gap(st: DurableLog, info: SnapshotInfo | None) -> str | None:
    """Why the WAL cannot be used with the newest valid snapshot ``info`` (None if it can): its
    base is past the snapshot, so the entries in between are gone."""
    if not st.snapshot_index or (info is not None and info.meta.index >= st.snapshot_index):
        return None
    have = (f"the newest valid snapshot is at {info.meta.index}" if info is not None
            else "there is no valid snapshot")
    return f"starts after index {st.snapshot_index} but {have}: entries in between are lost"
