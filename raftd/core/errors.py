"""Errors raised to the caller of the core (misuse, or a request this node cannot serve now)."""
from __future__ import annotations


class RaftError(Exception):
    """Base class for every error the core raises."""


class NotLeaderError(RaftError):
    """A proposal or read reached a node that is not the leader.

    ``leader_hint`` is the id of the leader this node believes in, or None.
    """

    def __init__(self, leader_hint: str | None, message: str | None = None):
        self.leader_hint = leader_hint
        super().__init__(message or f"not the leader (leader is {leader_hint or 'unknown'})")


class ProposalDroppedError(RaftError):
    """The leader cannot take this proposal now (e.g. a leadership transfer is running)."""


class ConfChangeInProgressError(RaftError):
    """A membership change was proposed while another one is still uncommitted (Raft §6)."""


class InvalidConfChangeError(RaftError):
    """A membership change that must be refused before anything is logged."""


class CompactedError(RaftError):
    """Asked for log entries that were discarded by a snapshot (Raft §7)."""
