"""Membership changes in the simulation of the runtime (Raft §6, thesis ch. 4; issue 15 §4).

An operator, now and then during the faulty phase, asks the cluster for a random change through
the real request path: the client library's ``admin("change_config", ...)`` to whichever node
leads, the leader's Reconfigurator (validation, reachability probe of new servers, learners
caught up in rounds, joint consensus).  The changes: add a learner, add a voter (a learner
caught up, then promoted), promote a learner, remove a voter (the leader itself included) or a
learner, and replace a voter by a new server or a learner.  Ids are never reused (issue 19 §2),
so new servers come from a pool of spares that start empty in join mode.

Refusals (not the leader, a change in progress, a server that did not catch up in time, a
leader lost mid-change) are normal and counted.  What must hold is checked elsewhere: the
configuration invariants of raftd.sim.checker on every node, linearizability, and that the
members of the final configuration converge.
"""
from __future__ import annotations

import asyncio
import contextvars
from random import Random

import raftd.client as rclient
from raftd.core import Configuration

from .loop import HOST


class MembershipDriver:
    def __init__(self, cluster, rng: Random, spares: list[str], min_voters: int = 3):
        self.cluster = cluster
        self.rng = rng
        self.spares = spares
        self.min_voters = min_voters
        # New servers asked for once with an outcome that may have logged them: not fresh any
        # more (a second add would be refused as not empty or as a removed id).
        self.used: set[str] = set()
        self.run_flag = True

    def _address(self, nid: str) -> str:
        return self.cluster.nodes[nid].cfg.listen

    def pick(self) -> tuple[str, dict] | None:
        """A random change relative to the configuration in force (the latest committed)."""
        rng = self.rng
        _, cur = self.cluster.checker.latest_config()
        voters, learners = sorted(cur.voters), sorted(cur.learners)
        fresh = [i for i in self.spares if i not in self.used and i not in cur.members]
        may_shrink = len(voters) > self.min_voters
        options: list[str] = []
        if fresh:
            options += ["add_learner"] * 2 + ["add_voter"]
        if learners:
            options += ["promote"] * 2 + ["remove_learner"]
        if may_shrink:
            options += ["remove_voter"] * 2
        if fresh or learners:
            options += ["replace"] * 2
        if not options:
            return None
        kind = rng.choice(options)
        if kind in ("add_learner", "add_voter"):
            x = rng.choice(fresh)
            args: dict = {"add": {x: self._address(x)}}
            if kind == "add_learner":
                args["learner"] = True
            return f"{kind.replace('_', ' ')} {x}", args
        if kind == "promote":
            x = rng.choice(learners)
            return f"promote {x}", {"promote": [x]}
        if kind in ("remove_learner", "remove_voter"):
            x = rng.choice(learners if kind == "remove_learner" else voters)
            return f"remove {x}", {"remove": [x]}
        out = rng.choice(voters)
        if fresh and (not learners or rng.random() < 0.5):
            x = rng.choice(fresh)
            return f"replace {out} by new {x}", {"add": {x: self._address(x)}, "remove": [out]}
        x = rng.choice(learners)
        return f"replace {out} by learner {x}", {"promote": [x], "remove": [out]}

    async def run(self, endpoints: list[str]) -> None:
        st = self.cluster.stats
        async with rclient.AsyncClient(endpoints, timeout=2.0, tls=False) as c:
            while self.run_flag:
                await asyncio.sleep(self.rng.uniform(0.05, 0.3))
                change = self.pick()
                if change is None or not self.run_flag:
                    continue
                what, args = change
                st["conf_attempts"] += 1
                self.cluster.log(f"admin: change_config {what}")
                dice = self.rng.random()
                if dice < 0.15:
                    # Hit the leader while the change is in flight (the joint entry appended
                    # and not committed yet, or C_new appended, or catching a learner up).
                    self.cluster.loop.call_later(self.rng.uniform(0.001, 0.05),
                                                 self.cluster.isolate_leader,
                                                 self.rng.uniform(0.1, 0.6))
                elif dice < 0.3:
                    # Or cut it off first: it may still append the change, behind writes that
                    # will never commit, before it notices it lost its quorum.
                    # Then the operator snapshots every server (a backup job): the new
                    # leader's log is compacted past where the old one's diverged, so the old
                    # one is sent a snapshot that discards its tail (Figure 13 step 7).
                    self.cluster.isolate_leader(self.rng.uniform(0.4, 1.0), burst=True,
                                                voters_only=self.rng.random() < 0.7)
                    self.cluster.loop.call_later(self.rng.uniform(0.2, 0.5), self._spawn,
                                                 self.snapshot_all())
                    await asyncio.sleep(self.rng.uniform(0.01, 0.1))
                try:
                    r = await c.admin("change_config", args)
                except rclient.RequestError as e:
                    st["conf_refused"] += 1
                    self.cluster.log(f"admin: {what} refused: {e.code}: {e}")
                    if e.code in ("catch_up_failed", "leadership_lost", "timeout"):
                        self.used.update(args.get("add", {}))  # it may be in some log
                    continue
                except (rclient.ClientError, OSError, asyncio.TimeoutError) as e:
                    self.used.update(args.get("add", {}))
                    self.cluster.log(f"admin: {what}: no answer ({e})")
                    continue
                self.used.update(args.get("add", {}))
                st["conf_changed"] += 1
                self.cluster.log(f"admin: {what} done: {'; '.join(r.get('phases', []))}")

    def _spawn(self, coro) -> None:
        ctx = contextvars.copy_context()
        ctx.run(HOST.set, "admin")
        self.cluster.loop.create_task(coro, context=ctx)

    async def snapshot_all(self) -> None:
        """``raftctl snapshot`` on every server, twice (the second compacts past the first:
        the log keeps what the oldest kept snapshot needs)."""
        addresses = [n.cfg.listen for n in self.cluster.nodes.values() if n.server is not None]
        for _ in range(2):
            for addr in addresses:
                async with rclient.AsyncClient([addr], timeout=0.5, tls=False) as c:
                    try:
                        await c.admin("snapshot")
                        self.cluster.stats["operator_snapshots"] += 1
                    except (rclient.ClientError, OSError, asyncio.TimeoutError):
                        pass
            await asyncio.sleep(0.02)

    def on_committed(self, nid: str, index: int, term: int, cfg: Configuration,
                     prev: Configuration) -> None:
        """The checker saw a configuration entry commit (in commit order)."""
        self.used.update(cfg.members)
        if cfg.joint:
            self.cluster.stats["joint_committed"] += 1
        self.cluster.log(f"configuration committed at {index} (term {term}, seen on {nid}): "
                         f"{cfg.describe()}")
