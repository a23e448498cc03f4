"""The in-memory Raft log (paper §5.3) as the core sees it.

The log may start after a snapshot: it holds entries (snapshot_index, last_index] and knows the
term of snapshot_index, so every consistency check at the base still works (Raft §7).
Storage mirrors it through the Ready contract; this class never touches a disk.
"""
from __future__ import annotations

from collections.abc import Sequence

from .types import Entry


class LogCorruptionError(Exception):
    """An operation would break a Raft invariant (e.g. truncating a committed entry)."""


class RaftLog:
    __slots__ = ("snapshot_index", "snapshot_term", "_entries", "truncations")

    def __init__(self, entries: Sequence[Entry] = (), snapshot_index: int = 0,
                 snapshot_term: int = 0):
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        # Invariant: self._entries[i].index == snapshot_index + 1 + i
        self._entries: list[Entry] = list(entries)
        for i, e in enumerate(self._entries):
            if e.index != snapshot_index + 1 + i:
                raise LogCorruptionError(f"log is not contiguous at position {i}: index {e.index}")
        self.truncations = 0  # bumped on every suffix truncation; lets checkers re-verify

    # --- queries ---------------------------------------------------------------------------
    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if it is compacted away or not yet there."""
        if index == self.snapshot_index:
            return self.snapshot_term
        pos = index - self.snapshot_index - 1
        if 0 <= pos < len(self._entries):
            return self._entries[pos].term
        return None

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi (clamped to what the log holds)."""
        base = self.snapshot_index + 1
        return self._entries[max(lo - base, 0):max(hi - base, 0)]

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours if its last term is
        larger, or equal with an index at least as large."""
        lt = self.last_term
        return last_term > lt or (last_term == lt and last_index >= self.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, and that term.  Used on both
        sides of fast backtracking (etcd-io/raft's findConflictByTerm): the follower answers a
        rejected AppendEntries with it, and the leader uses it to skip a whole term at once."""
        index = min(index, self.last_index)
        while index > self.snapshot_index:
            t = self._entries[index - self.snapshot_index - 1].term
            if t <= term:
                return index, t
            index -= 1
        return self.snapshot_index, self.snapshot_term

    # --- mutations -------------------------------------------------------------------------
    def append(self, entry: Entry) -> None:
        self._entries.append(entry)

    def truncate_after(self, index: int) -> None:
        """Drop every entry with an index > ``index`` (Figure 2, AppendEntries step 3)."""
        keep = index - self.snapshot_index
        if keep < 0:
            raise LogCorruptionError(f"cannot truncate below the snapshot at {self.snapshot_index}")
        if keep < len(self._entries):
            del self._entries[keep:]
            self.truncations += 1

    def extend(self, entries: Sequence[Entry]) -> None:
        self._entries.extend(entries)

    def compact(self, index: int, term: int) -> None:
        """Forget entries up to ``index`` (covered by a snapshot, Raft §7); keep the rest if
        they continue the snapshot's history, else drop everything."""
        if self.term_at(index) == term:
            del self._entries[:index - self.snapshot_index]
        else:
            self._entries.clear()
            self.truncations += 1
        self.snapshot_index, self.snapshot_term = index, term
