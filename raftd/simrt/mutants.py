"""Mutants: known Raft and runtime bugs, injected by patching at run time (issue 15 §5).

Each one re-introduces a bug the simulator must catch; production code has no switch for any
of them.  ``python -m raftd.simrt --mutant NAME`` runs the seeds with the patch applied; a
mutant that survives its seeds shows a blind spot of the simulator.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from raftd.core import EntryKind
from raftd.core import membership
from raftd.core.messages import (AppendEntries, AppendEntriesResponse, InstallSnapshot,
                                 RequestVoteResponse)
from raftd.core.node import RaftNode
from raftd.core.ready import ReadState
from raftd.kv.commands import Op
from raftd.kv.fsm import KVStateMachine
from raftd.runtime.server import RaftServer
from raftd.runtime.snapshotting import Snapshotter
from raftd.storage import snapshots
from raftd.storage.fs import OS


@contextlib.contextmanager
def _patch(obj, name: str, value) -> Iterator[None]:
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


@contextlib.contextmanager
def _patch_handler(msg_type: type, name: str, fn) -> Iterator[None]:
    """Replace RaftNode's handler of ``msg_type``: the method and its entry in the dispatch
    table (RaftNode._HANDLERS holds the functions themselves, so patching the method alone
    changes nothing)."""
    table = RaftNode._HANDLERS
    saved = table[msg_type]
    table[msg_type] = fn
    try:
        with _patch(RaftNode, name, fn):
            yield
    finally:
        table[msg_type] = saved


def _send_before_save(kind: type, what: Callable[[Any], bool] = lambda m: True):
    """Messages of ``kind`` in a Ready that has something to save leave before the save
    (ready.py: they may leave only once it is durable)."""
    original = RaftServer._process_ready

    def process_ready(self, rd):
        persist = rd.hard_state is not None or bool(rd.entries)
        if persist and not self._disk_failed:
            early = [m for m in rd.messages if isinstance(m, kind) and what(m)]
            if early:
                for m in early:
                    self._send(m)
                rd = dataclasses.replace(rd, messages=[m for m in rd.messages
                                                       if not any(m is e for e in early)])
        return original(self, rd)
    return _patch(RaftServer, "_process_ready", process_ready)


def ack_before_fsync():
    """A follower acknowledges entries before its WAL fsync (Raft §5.3: an entry is stored
    before the AppendEntries reply)."""
    return _send_before_save(AppendEntriesResponse, lambda m: m.success)


def vote_before_persist():
    """A vote leaves before the term and the vote are durable (Raft Figure 2: persistent state
    is updated on stable storage before responding)."""
    return _send_before_save(RequestVoteResponse, lambda m: m.granted)


def commit_previous_term_by_count():
    """The leader commits an entry of an earlier term by counting replicas (the Figure 8
    scenario of Raft §5.4.2)."""
    def maybe_commit(self) -> None:
        match = {p: pr.match_index for p, pr in self.progress.items()}
        match[self.id] = self._durable
        n = membership.committed_index(self.config, match)
        if n > self.commit_index:
            self.commit_index = n
            self._commit_dirty = True
            self._on_commit_advanced()
    return _patch(RaftNode, "_maybe_commit", maybe_commit)


def truncate_committed():
    """A follower truncates its log at the first entry of every AppendEntries, whether or not
    it conflicts and even below its commit index (Figure 2 step 3: only on a conflict, and
    never a committed entry)."""
    on_append = RaftNode._on_append_entries

    def on_append_entries(self, m) -> None:
        committed = self.commit_index
        # Forget, for this message, that the entries it carries are committed here: the
        # core would skip them instead of truncating.
        self.commit_index = min(committed, m.prev_log_index)
        try:
            on_append(self, m)
        finally:
            self.commit_index = max(committed, self.commit_index)

    def append_from_leader(self, entries) -> None:
        if not entries:
            return
        first = entries[0].index
        if first <= self.log.last_index:
            self._drop_acks_beyond(first - 1)
            self.log.truncate_after(first - 1)
            self._truncate_bookkeeping(first - 1)
        self.log.extend(entries)
        for e in entries:
            if e.kind == EntryKind.CONFIG:
                self._on_config_appended(e)

    @contextlib.contextmanager
    def both():
        with _patch_handler(AppendEntries, "_on_append_entries", on_append_entries), \
                _patch(RaftNode, "_append_from_leader", append_from_leader):
            yield
    return both()


def no_session_dedupe():
    """The state machine applies a retried write again instead of answering from the client's
    session (thesis §6.3)."""
    original = KVStateMachine._apply_command

    def apply_command(self, index, cmd):
        s = self._sessions.get(cmd.client_id) if cmd.has_session else None
        if s is not None and cmd.op != Op.OPEN_SESSION and cmd.seq <= s.last_seq:
            result = self._execute(index, cmd)
            self._touch(cmd.client_id, s.last_seq, result)
            return result
        return original(self, index, cmd)
    return _patch(KVStateMachine, "_apply_command", apply_command)


def read_index_without_heartbeat():
    """A leader answers a ReadIndex read at its commit index without first confirming with a
    quorum that it is still the leader (thesis §6.4 step 3): a deposed leader serves stale
    reads."""
    def register_read(self, request_id) -> None:
        self._read_states.append(ReadState(request_id, self.commit_index))
    return _patch(RaftNode, "_register_read", register_read)


def phantom_config_after_snapshot():
    """Issue 14 §1: when an InstallSnapshot discards the whole log (Figure 13 step 7), the
    configuration entries above the snapshot index stay in the bookkeeping and the newest of
    them stays in force, though its entry is gone (Raft §6: a server uses the newest
    configuration in its log)."""
    on_install = RaftNode._on_install_snapshot

    def keep_configs_above(self) -> None:
        index = self.log.snapshot_index
        self._config_log = [(i, c) for i, c in self._config_log if i > index]
        self.config = self._config_log[-1][1] if self._config_log else self._base_config

    def on_install_snapshot(self, m) -> None:
        self._configs_follow_log = keep_configs_above.__get__(self)
        try:
            on_install(self, m)
        finally:
            del self._configs_follow_log
    return _patch_handler(InstallSnapshot, "_on_install_snapshot", on_install_snapshot)


def snapshot_install_not_crash_safe():
    """Issue 14 §2, issue 21 §5: snapshot install with no single commit point: start-up does
    not finish an install a crash cut short after the snapshot file was adopted, so the WAL
    ends before the snapshot or holds another term at its index (the follower is wedged, or
    fails every save)."""
    return _patch(Snapshotter, "reconcile", lambda self, info: None)


class _NoDirSync:
    """A file layer whose directory fsyncs do nothing (everything else is passed on)."""

    def __init__(self, fs) -> None:
        self._fs = fs

    def fsync_dir(self, path) -> None:
        pass

    def __getattr__(self, name: str):
        return getattr(self._fs, name)


def snapshot_rename_not_durable():
    """A snapshot is written to a temp file, fsynced and renamed into place, but the
    directory is not fsynced after the rename (paper §7 / thesis ch. 5: the snapshot must be
    durable before the log behind it is discarded).  After a power loss the new name can be
    gone while the WAL was compacted behind it.  Only --disk-model (the default) sees it: real
    files keep every rename."""
    write = snapshots.write_snapshot_file

    def write_snapshot_file(*args, **kw):
        kw["fs"] = _NoDirSync(kw.get("fs", OS))  # (every caller names fs)
        return write(*args, **kw)
    return _patch(snapshots, "write_snapshot_file", write_snapshot_file)


MUTANTS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "ack-before-fsync": ack_before_fsync,
    "vote-before-persist": vote_before_persist,
    "commit-previous-term-by-count": commit_previous_term_by_count,
    "truncate-committed": truncate_committed,
    "no-session-dedupe": no_session_dedupe,
    "read-index-without-heartbeat": read_index_without_heartbeat,
    "phantom-config-after-snapshot": phantom_config_after_snapshot,
    "snapshot-install-not-crash-safe": snapshot_install_not_crash_safe,
    "snapshot-rename-not-durable": snapshot_rename_not_durable,
}


def mutant(name: str | None) -> contextlib.AbstractContextManager:
    if name is None:
        return contextlib.nullcontext()
    return MUTANTS[name]()
