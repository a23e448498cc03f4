"""Servers removed from the cluster, remembered durably so their ids are refused for good
(issue 19 §2; etcd's "removed member" rule).

A removed server keeps its data and, on a TLS cluster, its certificate.  It must not be able
to speak for the cluster again: HELLO with a removed id is refused (unless a configuration this
server holds names it), and the leader refuses to add a removed id back, so ids are never
reused and the refusal is always right.  A server learns removals from the committed
configuration entries it applies; ``<data_dir>/removed_ids`` keeps them across restarts.

A follower that is sent a snapshot (Raft §7) never applies the entries it covers, so each
snapshot carries the ids removed up to its index (its metadata's ``removed``; older snapshots
have none) and a server takes them when it installs or restores one.
"""
from __future__ import annotations

import json
import os

from raftd.core import Configuration
from raftd.storage.durable import write_durable

FILE = "removed_ids"


class RemovedIds:
    def __init__(self, data_dir: str, members: frozenset[str]):
        self._path = os.path.join(data_dir, FILE)
        self.ids: frozenset[str] = frozenset(self._read())
        self._members = members  # of the newest committed simple configuration seen

    def _read(self) -> list[str]:
        try:
            with open(self._path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise ValueError(f"{self._path}: {e}") from None
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ValueError(f"{self._path}: expected a JSON list of server ids")
        return data

    def _add(self, ids: frozenset[str]) -> frozenset[str]:
        new = ids - self.ids
        if new:
            self.ids = self.ids | new
            write_durable(self._path, json.dumps(sorted(self.ids)).encode() + b"\n")
        return new

    def committed(self, cfg: Configuration) -> frozenset[str]:
        """A configuration entry committed; returns the ids it removed (recorded durably
        before this returns).  Joint configurations remove nobody yet: C_new does (§6)."""
        if cfg.joint:
            return frozenset()
        gone = self._members - cfg.members
        self._members = cfg.members
        self._add(gone)
        return gone

    def installed(self, removed: frozenset[str], cfg: Configuration) -> frozenset[str]:
        """A snapshot whose metadata lists ``removed`` and whose (committed) configuration is
        ``cfg`` was installed; returns the ids newly recorded.  Besides its list (empty in a
        snapshot of an older version), members of the last committed configuration we saw
        that ``cfg`` no longer has were removed in the entries it covers: ids are never
        reused, so they are not coming back."""
        gone = set(removed)
        if not cfg.joint:
            gone |= self._members - cfg.members
            self._members = cfg.members
        return self._add(frozenset(gone) - cfg.members)


def remember(data_dir: str, removed: frozenset[str]) -> None:
    """At start-up, before RemovedIds reads the file: the ids of the snapshot being restored
    (an install cut short after the snapshot was adopted has not recorded them yet)."""
    if removed:
        r = RemovedIds(data_dir, frozenset())
        r._add(removed)
