"""Cluster configurations and the quorum rules over them (Raft §6, thesis ch. 4).

A Configuration is either simple (``outgoing`` empty) or joint (C_old,new: ``outgoing`` holds
C_old's voters, ``voters`` holds C_new's).  While joint, every decision needs a majority of
*both* voter sets.  Learners receive the log but never vote or count towards a quorum.

Pure functions only: they take values and return values, so they are tested by table.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field



@dataclass(frozen=True, slots=True)
class Configuration:
    voters: frozenset[str]
    outgoing: frozenset[str] = frozenset()  # non-empty only while joint (C_old)
    learners: frozenset[str] = frozenset()
    # id -> "host:port" for every member; carried in the log so that a node that joins
    # later learns where everyone is.  The core itself never looks at addresses.
    addresses: tuple[tuple[str, str], ...] = field(default=())

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.outgoing | self.learners

    def is_voter(self, node_id: str) -> bool:
        return node_id in self.voters or node_id in self.outgoing

    def address_of(self, node_id: str) -> str | None:
        for nid, addr in self.addresses:
            if nid == node_id:
                return addr
        return None

    def address_map(self) -> dict[str, str]:
        return dict(self.addresses)

    # --- encoding for CONFIG log entries (deterministic: sorted keys) ---
    def __post_init__(self) -> None:
        if not isinstance(self.addresses, tuple):
            raise TypeError("addresses must be a tuple of (id, address) pairs; use "
                            "Configuration.make() to build from a mapping")

    def encode(self) -> bytes:
        return json.dumps(
            {
                "voters": sorted(self.voters),
                "outgoing": sorted(self.outgoing),
                "learners": sorted(self.learners),
                "addresses": dict(sorted(self.addresses)),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def decode(data: bytes) -> "Configuration":
        d = json.loads(data)
        return Configuration.make(d["voters"], d.get("outgoing", ()), d.get("learners", ()),
                                  d.get("addresses", {}))

    @staticmethod
    def make(voters: Iterable[str], outgoing: Iterable[str] = (), learners: Iterable[str] = (),
             addresses: Mapping[str, str] | None = None) -> "Configuration":
        return Configuration(frozenset(voters), frozenset(outgoing), frozenset(learners),
                             tuple(sorted((addresses or {}).items())))

    def describe(self) -> str:
        def ids(s: frozenset[str]) -> str:
            return ",".join(sorted(s))
        text = f"voters=({ids(self.voters)})"
        if self.outgoing:
            text += f" outgoing=({ids(self.outgoing)})"
        if self.learners:
            text += f" learners=({ids(self.learners)})"
        return text


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers (Raft §7): the state machine up to ``index`` (whose entry had
    ``term``), and the configuration in force at that index."""

    index: int
    term: int
    configuration: Configuration


def majority_index(voters: frozenset[str], match: Mapping[str, int]) -> int:
    """Largest index replicated on a majority of ``voters`` (0 for an empty set: no constraint
    is expressed by returning a huge value instead, see joint_committed_index)."""
    if not voters:
        return 1 << 62
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    return acked[len(voters) // 2]


def committed_index(config: Configuration, match: Mapping[str, int]) -> int:
    """Highest index a quorum of ``config`` holds.  Raft §6: while joint, the smaller of the two
    majorities, so an entry needs a majority of C_old *and* of C_new."""
    idx = majority_index(config.voters, match)
    if config.outgoing:
        idx = min(idx, majority_index(config.outgoing, match))
    return idx


class VoteResult:
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def _simple_vote(voters: frozenset[str], votes: Mapping[str, bool]) -> str:
    if not voters:
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    q = len(voters) // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if rejected > len(voters) - q:
        return VoteResult.LOST
    return VoteResult.PENDING


def vote_result(config: Configuration, votes: Mapping[str, bool]) -> str:
    """Outcome of an election given the votes received so far (True = granted)."""
    a = _simple_vote(config.voters, votes)
    if not config.outgoing:
        return a
    b = _simple_vote(config.outgoing, votes)
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    if a == b == VoteResult.WON:
        return VoteResult.WON
    return VoteResult.PENDING


def has_quorum(config: Configuration, active: Iterable[str]) -> bool:
    """True if ``active`` contains a quorum of ``config`` (used by check-quorum and ReadIndex)."""
    act = set(active)
    votes = {v: (v in act) for v in config.voters | config.outgoing}
    return vote_result(config, votes) == VoteResult.WON
