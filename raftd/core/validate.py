"""Checks on a received message that need no node state (issue 19): what no honest peer sends.

The wire codec checks the same ranges; the core checks again so it is robust on its own (a
runtime, a test or the simulator may hand it anything).  ``problem(msg)`` returns why a message
is malformed, or None.  Pure functions; no I/O.
"""
from __future__ import annotations

from .membership import Configuration
from .messages import (AppendEntries, AppendEntriesResponse, InstallSnapshot, Message, PreVote,
                       RequestVote)
from .types import MAX_INDEX, MAX_TERM, EntryKind

_INDEX_FIELDS = {
    AppendEntries: ("prev_log_index", "leader_commit"),
    AppendEntriesResponse: ("match_index", "reject_index", "conflict_index"),
    RequestVote: ("last_log_index",),
    PreVote: ("last_log_index",),
    InstallSnapshot: ("last_included_index",),
}
_TERM_FIELDS = {
    AppendEntries: ("prev_log_term",),
    AppendEntriesResponse: ("conflict_term",),
    RequestVote: ("last_log_term",),
    PreVote: ("last_log_term",),
    InstallSnapshot: ("last_included_term",),
}


def _in_range(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value < limit


def problem(msg: Message) -> str | None:
    """Why ``msg`` cannot come from an honest peer, or None if it may."""
    if not _in_range(msg.term, MAX_TERM):
        return f"term {msg.term!r} out of range [0, 2**62)"
    cls = type(msg)
    for name in _INDEX_FIELDS.get(cls, ()):
        if not _in_range(getattr(msg, name), MAX_INDEX):
            return f"{name} {getattr(msg, name)!r} out of range [0, 2**62)"
    for name in _TERM_FIELDS.get(cls, ()):
        value = getattr(msg, name)
        if not _in_range(value, MAX_TERM) or value > msg.term:
            return f"{name} {value!r} out of range [0, term {msg.term}]"
    if isinstance(msg, AppendEntries):
        return _entries_problem(msg)
    if isinstance(msg, InstallSnapshot):
        return _config_problem(msg.configuration)
    return None


def _entries_problem(m: AppendEntries) -> str | None:
    """Figure 2's log shape: entries follow prev_log_index one by one, with terms that never
    decrease, from prev_log_term up to the leader's own term."""
    index, term = m.prev_log_index, m.prev_log_term
    for e in m.entries:
        if e.index != index + 1:
            return f"entry index {e.index!r} does not follow {index}"
        if not _in_range(e.term, MAX_TERM) or not term <= e.term <= m.term:
            return f"entry {e.index} has term {e.term!r}, not in [{term}, {m.term}]"
        if e.index >= MAX_INDEX:
            return f"entry index {e.index} out of range"
        if e.kind not in EntryKind.__members__.values() or not isinstance(e.data, bytes):
            return f"entry {e.index} has kind {e.kind!r} or data not bytes"
        if e.kind == EntryKind.CONFIG and (why := _config_problem(e.data)) is not None:
            return f"entry {e.index}: {why}"
        index, term = e.index, e.term
    return None


def _config_problem(data: bytes) -> str | None:
    """A configuration must decode before it enters the log (issue 19 §5): once there, every
    replay of the log would fail on it."""
    try:
        cfg = Configuration.decode(data)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        return f"configuration does not decode ({type(e).__name__})"
    ids = cfg.members | {n for n, _ in cfg.addresses}
    if not all(isinstance(i, str) for i in ids) or not all(
            isinstance(a, str) for _, a in cfg.addresses):
        return "configuration has a server id or address that is not a string"
    if cfg.voters & cfg.learners:
        return "configuration has a server that is both voter and learner"
    return None
