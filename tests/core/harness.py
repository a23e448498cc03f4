"""A tiny hand-driven cluster for core unit tests: instant disk, explicit message delivery."""
from __future__ import annotations

import dataclasses
import random

from raftd.core import Configuration, InstallSnapshot, RaftConfig, RaftNode, Role


class Net:
    def __init__(self, n: int = 3, conf: Configuration | None = None, **cfg):
        self.ids = [str(i + 1) for i in range(n)]
        self.conf = conf if conf is not None else Configuration.make(self.ids)
        self.cfg = RaftConfig(**{"election_ticks": 10, "heartbeat_ticks": 1, **cfg})
        self.nodes = {i: RaftNode(i, self.cfg, random.Random(int(i)), base_configuration=self.conf)
                      for i in self.ids}
        self.inflight = []
        self.applied = {i: [] for i in self.ids}
        self.readys = {i: [] for i in self.ids}
        self.down: set[str] = set()
        self.snapshot_source: list = []  # applied entries a snapshot stands for
        self.observer = lambda nid: None  # called after every input to a node (checker hook)

    def process(self, nid: str, persist: bool = True):
        node = self.nodes[nid]
        rd = node.ready()
        self.observer(nid)
        self.readys[nid].append(rd)
        if rd.snapshot is not None:
            # install: the applied state is the leader's up to the snapshot index
            self.applied[nid] = [e for e in self.snapshot_source if e.index <= rd.snapshot.index]
        if persist and rd.entries:
            node.persisted(rd.entries[-1].index, rd.entries[-1].term)
        self.inflight.extend(rd.messages)
        for e in rd.committed_entries:
            self.applied[nid].append(e)
        if rd.committed_entries:
            node.applied(rd.committed_entries[-1].index)
        return rd

    def deliver(self, drop=lambda m: False):
        msgs, self.inflight = self.inflight, []
        for m in msgs:
            if m.dst in self.down or m.src in self.down or drop(m):
                continue
            if isinstance(m, InstallSnapshot) and not m.done:
                m = dataclasses.replace(m, done=True)  # the runtime would stream the chunks
            self.nodes[m.dst].step(m)
            self.observer(m.dst)
        return msgs

    def stabilize(self, rounds: int = 50, drop=lambda m: False):
        for _ in range(rounds):
            for nid in self.ids:
                if nid not in self.down:
                    self.process(nid)
            if not self.inflight:
                return
            self.deliver(drop)

    def elect(self, nid: str):
        node = self.nodes[nid]
        for _ in range(3 * self.cfg.election_ticks):
            node.tick()
            if node.role != Role.FOLLOWER:
                break
        self.stabilize()
        assert node.role == Role.LEADER, node.status()
        return node

    def leader(self):
        leaders = [n for n in self.nodes.values() if n.role == Role.LEADER]
        return leaders[0] if leaders else None
