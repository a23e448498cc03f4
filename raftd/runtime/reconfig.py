"""Membership changes driven by the leader's runtime (Raft §6, thesis ch. 4).

The core knows how to enter and leave a joint configuration; this module adds what an operator
needs around it, in the order the thesis prescribes:

1. Validate before anything is logged: no change already in progress, no unknown server, no id
   or address used twice, at least one voter left, new servers reachable (etcd #7820), and an
   active quorum in the new configuration.
2. Add new servers as learners (non-voting), and catch them up in rounds (thesis §4.2.1): each
   round replicates what the leader had when the round started; when a round takes less than an
   election timeout the server is close enough.  A server that never catches up aborts the
   change and is removed again, leaving the old configuration in force.
3. Propose the target configuration: the core appends C_old,new, then C_new once that commits.
   We wait until C_new is committed.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from raftd.config import split_address
from raftd.validate import node_id_problem
from raftd.runtime.transport import PeerIdentityError, open_peer_connection
from raftd.wire.codec import decode_body, encode_client_request
from raftd.wire.framing import FrameDecoder, FrameType, RemoteProtocolError
from raftd.core import (ConfChangeInProgressError, Configuration, InvalidConfChangeError,
                        NotLeaderError, ProposalDroppedError, Role)


class ChangeError(Exception):
    """A membership change refused or aborted; ``code`` is the client error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class ChangeRequest:
    add: dict[str, str]  # id -> address of new servers
    remove: list[str]
    promote: list[str]  # learners to make voters
    as_learner: bool = False  # add the new servers as learners only


class Reconfigurator:
    def __init__(self, server):
        self.server = server
        self.max_rounds = server.cfg.catchup_rounds
        self.busy = False

    @property
    def node(self):
        return self.server.node

    def _require_leader(self, phase: str) -> None:
        if self.node.role != Role.LEADER:
            raise ChangeError("leadership_lost", f"lost leadership during the change ({phase}); "
                                                 f"a new "
                                            f"leader finishes any joint configuration; check "
                                            f"`raftctl member list`")

    def _election_timeout(self) -> float:
        return self.server.cfg.election_timeout_ms / 1000

    # ---------------------------------------------------------------------------------
    async def change(self, req: ChangeRequest) -> dict:
        if self.busy:
            raise ChangeError("change_in_progress", "another membership change is in progress")
        self.busy = True
        try:
            return await self._change(req)
        finally:
            self.busy = False

    def validate(self, req: ChangeRequest) -> Configuration:
        node = self.node
        if node.role != Role.LEADER:
            raise NotLeaderError(node.leader_id)
        cur = node.config
        if cur.joint or node.config_index() > node.commit_index:
            raise ChangeError("change_in_progress",
                              f"a membership change is still in progress ({cur.describe()})")
        addresses = {**self.server.cfg.peers, **cur.address_map()}
        addresses = {k: v for k, v in addresses.items() if k in cur.members}
        for nid, addr in req.add.items():
            why = node_id_problem(nid)
            if why is not None:
                raise ChangeError("bad_request", why)
            if nid in cur.members:
                raise ChangeError("bad_request", f"{nid} is already a member")
            if nid in self.server.removed.ids:
                # Ids are never reused, so every server may refuse a removed id for good
                # (issue 19 §2).
                raise ChangeError("id_removed", f"{nid} was removed from this cluster; add the "
                                                f"server under a new id (ids are never reused)")
            try:
                split_address(addr)
            except ValueError as e:
                raise ChangeError("bad_request", f"{nid}: {e}") from None
            for other, a in addresses.items():
                if a == addr:
                    raise ChangeError("bad_request", f"address {addr} is already used by {other}")
        if len(set(req.add.values())) != len(req.add):
            raise ChangeError("bad_request", "two new servers share an address")
        for nid in req.remove:
            if nid not in cur.members:
                raise ChangeError("bad_request", f"cannot remove {nid}: not a member "
                                                 f"({cur.describe()})")
        for nid in req.promote:
            if nid not in cur.learners:
                raise ChangeError("bad_request", f"cannot promote {nid}: not a learner")
        new_ids = set(req.add)
        voters = (cur.voters - set(req.remove)) | set(req.promote)
        learners = (cur.learners - set(req.remove) - set(req.promote))
        if req.as_learner:
            learners |= new_ids
        else:
            voters |= new_ids
        if not voters:
            raise ChangeError("bad_request", "the change would leave no voters")
        addresses.update(req.add)
        addresses = {k: v for k, v in addresses.items() if k in voters | learners}
        return Configuration.make(voters, (), learners, addresses)

    async def _change(self, req: ChangeRequest) -> dict:
        target = self.validate(req)
        node = self.node
        phases: list[str] = []
        if req.add:
            await self._check_reachable(req.add)
            cur = node.config
            staging = Configuration.make(cur.voters, (), cur.learners | set(req.add),
                                         {**cur.address_map(), **req.add})
            await self._propose_and_wait(staging, "adding learners")
            phases.append(f"learners added: {', '.join(sorted(req.add))}")
        catch_up = sorted(set(req.add) | set(req.promote))
        if catch_up and set(catch_up) & target.voters:
            rounds = await self._catch_up(catch_up, req)
            phases.append(f"caught up in {rounds} round(s)")
        elif catch_up:
            phases.append("learners receive the log in the background")
        if target.voters != node.config.voters or target.learners != node.config.learners:
            voters_change = target.voters != node.config.voters
            self._check_active_quorum(target)
            await self._propose_and_wait(target, "joint consensus")
            if voters_change:
                phases.append("joint configuration C_old,new committed")
            phases.append(f"new configuration committed: {target.describe()}")
        return {"phases": phases, "configuration": describe_configuration(node.config),
                "index": node.config_index()}

    async def _check_reachable(self, add: dict[str, str]) -> None:
        """Before anything is logged: every new server answers at its address, is who it
        should be (over TLS, by certificate), and is an empty server in join mode of no other
        cluster.  A server that holds data of its own would fork ours once it leads (issue 14
        §9: a single-node cluster added as a voter served its own key)."""
        async def probe(nid: str, addr: str) -> tuple[str, str] | None:
            try:
                split_address(addr)
                # Over TLS this also checks the certificate there is node ``nid``'s.
                st = await asyncio.wait_for(self._status_of(nid, addr), 5.0)
            except PeerIdentityError as e:
                return "unreachable", f"{nid} at {addr}: {e}"
            except (OSError, asyncio.TimeoutError, RemoteProtocolError) as e:
                return "unreachable", (f"{nid} at {addr} is unreachable "
                                       f"({getattr(e, 'strerror', None) or e})")
            why = self._not_joinable(nid, addr, st)
            return ("not_joinable", why) if why else None
        problems = [p for p in await asyncio.gather(*(probe(n, a) for n, a in add.items())) if p]
        if problems:
            code = "not_joinable" if any(c == "not_joinable" for c, _ in problems) \
                else "unreachable"
            raise ChangeError(code, "; ".join(m for _, m in problems) + "; nothing was changed")

    async def _status_of(self, nid: str, addr: str) -> dict:
        """The status of the server at ``addr``, asked as a client over a peer connection."""
        reader, writer = await open_peer_connection(self.server.tls, addr, None, nid, 2.0)
        try:
            writer.write(encode_client_request({"id": 1, "op": "status"}))
            decoder = FrameDecoder(self.server.cfg.max_frame_size)
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("closed before answering")
                for ftype, body in decoder.feed(data):
                    if ftype == FrameType.CLIENT_RESPONSE:
                        resp = decode_body(body)
                        if not resp.get("ok") or not isinstance(resp.get("result"), dict):
                            raise ConnectionResetError(f"status refused: {resp.get('error')}")
                        return resp["result"]
        finally:
            writer.close()

    def _not_joinable(self, nid: str, addr: str, st: dict) -> str | None:
        ours = self.server.identity.cluster_id
        theirs = st.get("cluster_id")
        if theirs is not None and theirs != ours:
            return (f"{nid} at {addr} belongs to another cluster ({theirs}; this one is {ours}):"
                    f" it cannot be added")
        if st.get("id") not in (None, nid):
            return f"the server at {addr} is {st.get('id')}, not {nid}"
        if theirs is not None:
            return None  # a server of this cluster (added before, or removed): Raft fixes its log
        last = max(st.get("last_log_index") or 0, st.get("snapshot_index") or 0)
        if not st.get("join") or last > 0:
            return (f"{nid} at {addr} is not an empty server in join mode (join: "
                    f"{bool(st.get('join'))}, log up to index {last}): start it with an empty "
                    f"data_dir and join: true")
        return None

    def _check_active_quorum(self, target: Configuration) -> None:
        """The new configuration must have a quorum of servers we heard from recently."""
        heard = self.server.peer_last_heard
        now = self.server.sysclock.monotonic()
        window = 2 * self._election_timeout()
        active = {self.server.node_id} | {p for p, t in heard.items() if now - t < window}
        from raftd.core.membership import has_quorum  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        if not has_quorum(Configuration(target.voters), active):
            down = sorted(target.voters - active)
            raise ChangeError("no_quorum", f"the new configuration would not have an active "
                                           f"quorum (not heard from: {', '.join(down)}); "
                                           f"nothing was changed")

    async def _propose_and_wait(self, cfg: Configuration, phase: str) -> None:
        node = self.node
        try:
            index = node.propose_configuration(cfg)
        except NotLeaderError:
            raise
        except (ConfChangeInProgressError, InvalidConfChangeError, ProposalDroppedError) as e:
            raise ChangeError("change_in_progress" if isinstance(e, ConfChangeInProgressError)
                              else "bad_request", str(e)) from None
        term = node.term
        self.server.wake()
        self.server._event("membership", f"proposed {cfg.describe()} at index {index}")
        deadline = self.server.sysclock.monotonic() + max(30.0, 20 * self._election_timeout())
        # Wait until the entry commits and, if it was joint, until C_new (appended by the core
        # when C_old,new commits) commits too.
        while True:
            cfg_index = node.config_index()
            if (node.commit_index >= cfg_index >= index and not node.config.joint
                    and self._still_ours(index, term)):
                # Checked before leadership: a leader that removed itself steps down right
                # after C_new commits, and that is success.
                self.server._event("membership",
                                   f"configuration committed: {node.config.describe()}")
                return
            self._require_leader(phase)
            if node.term != term or not self._still_ours(index, term):
                raise ChangeError("leadership_lost",
                                  f"the change was lost in a leader change ({phase})")
            if self.server.sysclock.monotonic() > deadline:
                raise ChangeError("timeout", f"the change did not commit in time ({phase})")
            await asyncio.sleep(self.server.cfg.tick_ms / 1000)

    def _still_ours(self, index: int, term: int) -> bool:
        """Our entry (index, term) is still in the log.  Compaction may have passed it while
        the change waited (issue 14 §8): then it is ours if we are still in its term, since a
        leader never overwrites its own entries (Leader Append-Only, Raft §5.3)."""
        node = self.node
        stored = node.log.term_at(index)
        if stored is not None and index > node.log.snapshot_index:
            return stored == term
        return node.term == term and index <= node.log.snapshot_index

    async def _catch_up(self, ids: list[str], req: ChangeRequest) -> int:
        """Thesis §4.2.1: rounds of replication until a round is shorter than an election
        timeout.  Aborts (removing the new learners) if a round makes no progress in time."""
        node = self.node
        timeout = self._election_timeout()
        round_limit = self.server.cfg.catchup_round_timeout_ms / 1000
        for rnd in range(1, self.max_rounds + 1):
            target = node.log.last_index
            t0 = self.server.sysclock.monotonic()
            while True:
                self._require_leader("catch-up")
                if all(node.progress.get(i) is not None
                       and node.progress[i].match_index >= target for i in ids):
                    break
                if self.server.sysclock.monotonic() - t0 > round_limit:
                    await self._abort(req, f"round {rnd} did not finish in {round_limit:g}s")
                await asyncio.sleep(self.server.cfg.tick_ms / 1000)
            if self.server.sysclock.monotonic() - t0 < timeout:
                return rnd
        await self._abort(req, f"not caught up after {self.max_rounds} rounds")
        raise AssertionError("unreachable")

    async def _abort(self, req: ChangeRequest, why: str) -> None:
        node = self.node
        lagging = ", ".join(sorted(set(req.add) | set(req.promote)))
        if req.add:
            cur = node.config
            back = Configuration.make(cur.voters, (), cur.learners - set(req.add),
                                      {k: v for k, v in cur.address_map().items()
                                       if k not in req.add})
            try:
                await self._propose_and_wait(back, "removing learners after abort")
            except ChangeError:
                pass
        raise ChangeError("catch_up_failed", f"{lagging} did not catch up ({why}); the change "
                                             f"was aborted and the old configuration is in force")


def describe_configuration(cfg: Configuration) -> dict:
    out = {"voters": sorted(cfg.voters | cfg.outgoing) if not cfg.joint else sorted(cfg.voters),
           "learners": sorted(cfg.learners), "joint": cfg.joint,
           "addresses": cfg.address_map()}
    if cfg.joint:
        out["old_voters"] = sorted(cfg.outgoing)
    return out
