"""Cluster identity (issue 14 §9): which cluster a server belongs to, so a server of another
cluster is never taken for a peer and never added as a member.

Each server keeps its ``cluster_id`` in ``<data_dir>/cluster_id`` (written durably once).  Where
it comes from, first match wins:

1. the file, once written: the data belongs to that cluster for good;
2. ``cluster_id`` in raftd.yaml: the tools that create clusters (``raftctl local up``,
   ``bootstrap``, ``snapshot restore``, ``snapshot recover --dir``) write a new random one into
   every node's config;
3. a server configured by hand with ``peers`` derives it from its cluster name and initial
   peers (the same on every member, different for any other set of servers);
4. a server in join mode has none until the leader that adds it says hello: it takes that
   leader's (``adopt``).

The id travels in HELLO; a peer with another id is refused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets

from raftd.config import NodeConfig
from raftd.storage.durable import write_durable

log = logging.getLogger("raftd")

FILE = "cluster_id"
MAX_LEN = 64


class ClusterIdError(Exception):
    """The data dir and the config name different clusters (raftd exits 2)."""


def new_cluster_id() -> str:
    return secrets.token_hex(16)


def derived_cluster_id(cfg: NodeConfig) -> str:
    """The id of a cluster configured by hand: a digest of its name and initial peers."""
    doc = json.dumps({"cluster": cfg.cluster, "peers": sorted(cfg.peers.items())})
    return "p-" + hashlib.sha256(doc.encode()).hexdigest()[:30]


def cluster_id_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_LEN:
        return f"a cluster_id is a non-empty string of at most {MAX_LEN} characters"
    if not all(c.isalnum() or c in "-_." for c in value):
        return f"bad cluster_id {value!r} (letters, digits, '-', '_', '.')"
    return None


class ClusterIdentity:
    def __init__(self, cfg: NodeConfig):
        self._path = os.path.join(cfg.data_dir, FILE)
        stored = self._read()
        if stored is not None and cfg.cluster_id and stored != cfg.cluster_id:
            raise ClusterIdError(
                f"{cfg.data_dir} holds the data of cluster {stored}, but the config says "
                f"cluster_id {cfg.cluster_id}: use the data dir of this cluster, or fix the key")
        self.cluster_id: str | None = stored or cfg.cluster_id or (
            None if cfg.join else derived_cluster_id(cfg))
        if stored is None and self.cluster_id is not None:
            self._write(self.cluster_id)

    def _read(self) -> str | None:
        try:
            with open(self._path, encoding="ascii") as f:
                value = f.read().strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise ClusterIdError(f"cannot read {self._path}: {e}") from None
        why = cluster_id_problem(value)
        if why is not None:
            raise ClusterIdError(f"{self._path}: {why}")
        return value

    def _write(self, value: str) -> None:
        write_durable(self._path, (value + "\n").encode(), mode=0o600)

    def adopt(self, value: str) -> bool:
        """A server in join mode takes the id of the leader adding it; True if it did."""
        if self.cluster_id is not None or cluster_id_problem(value) is not None:
            return False
        self._write(value)
        self.cluster_id = value
        log.info("joined cluster %s", value)
        return True

    def refuses(self, theirs: object) -> str | None:
        """Why a peer that says it belongs to cluster ``theirs`` is refused, or None.  A peer
        without an id (a server in join mode) is not refused for that."""
        if theirs is None or self.cluster_id is None or theirs == self.cluster_id:
            return None
        return f"it belongs to cluster {theirs!r}, this server to {self.cluster_id!r}"
