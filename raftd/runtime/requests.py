"""Client requests in the runtime: writes with sessions, ReadIndex reads (Raft §6.4), leadership
transfer, membership changes and snapshots on request.  A part of RaftServer (mixed in), split
from server.py by responsibility (issue 17 §2); it uses the server's node, state machine and
pending tables.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from raftd.core import (ConfChangeInProgressError, InvalidConfChangeError, NotLeaderError,
                        ProposalDroppedError, Role)
from raftd.kv.commands import Command, Op, encode_command, session_put
from raftd.tls import may
from raftd.wire.codec import ErrorCode, error_reply

from .clientconn import ClientConn
from .reconfig import ChangeError, ChangeRequest
from .serverstate import ServerState

log = logging.getLogger("raftd")

_WRITE_OPS = {"put": Op.PUT, "delete": Op.DELETE, "cas": Op.CAS,
              "open_session": Op.OPEN_SESSION}
_T = TypeVar("_T")


@dataclass(slots=True)
class PendingWrite:
    term: int
    conn: ClientConn
    rid: int
    cmd: Command  # what was proposed: applied without decoding the entry again


class ClientRequests(ServerState):
    """RaftServer's request handling (see the module docstring)."""

    # --------------------------------------------------------------- reads (§6.4) --
    def _on_read_state(self, rid: object, index: int | None) -> None:
        # The core hands back the request id it was given: ours are ints (_handle_read).
        entry = self._pending_reads.pop(rid, None) if isinstance(rid, int) else None
        if entry is None:
            return
        conn, crid, req = entry
        if index is None:
            conn.reply(crid, error=self._leader_error("lost leadership during the read; retry"))
        elif self.fsm.applied_index >= index:
            self._answer_read(conn, crid, req)
        else:
            self._reads_waiting_apply.append((index, conn, crid, req))

    def _serve_waiting_reads(self) -> None:
        applied = self.fsm.applied_index
        still = []
        for index, conn, crid, req in self._reads_waiting_apply:
            if applied >= index:
                self._answer_read(conn, crid, req)
            else:
                still.append((index, conn, crid, req))
        self._reads_waiting_apply = still

    def _answer_read(self, conn: ClientConn, rid: int, req: dict[str, Any]) -> None:
        if req["op"] == "get":
            conn.reply(rid, {"value": self.fsm.get(req["key"]), "index": self.fsm.applied_index})
        elif "limit" in req:  # paged (issue 19 §13): raftctl and the client page through
            items, more = self.fsm.page(req.get("prefix", ""), req.get("start_after"),
                                        req["limit"], self._page_bytes)
            conn.reply(rid, {"items": items, "more": more, "index": self.fsm.applied_index})
        else:  # clients of earlier versions: everything, unless that exceeds a page
            items, more = self.fsm.page(req.get("prefix", ""), None, 1 << 62, self._page_bytes)
            if more:
                conn.reply(rid, error=error_reply(
                    ErrorCode.TOO_LARGE, "the listing is larger than one reply; this client "
                                         "must page (send limit and start_after)"))
                return
            conn.reply(rid, {"items": items, "index": self.fsm.applied_index})

    # ------------------------------------------------------------ client requests --
    def _leader_error(self, message: str | None = None) -> dict[str, Any]:
        leader = self.core.leader_id
        if leader == self.node_id and self.core.role == Role.LEADER:
            leader = None
        addr = ((self.core.config.address_of(leader) or self.cfg.peers.get(leader))
                if leader else None)
        return error_reply(ErrorCode.NOT_LEADER,
                           message or f"{self.node_id} is not the leader "
                                      f"(leader: {leader or 'unknown'})",
                           leader=leader, leader_address=addr)

    def _handle_request(self, conn: ClientConn, req: dict[str, Any]) -> None:
        self.counters["client_requests"] += 1
        rid: int = req["id"]  # an int: checked as the frame was read (connections.py)
        op = req.get("op")
        if type(op) is not str:  # e.g. ["put"]: unhashable, and no op of ours (issue 19 §14)
            conn.reply(rid, error=error_reply(ErrorCode.BAD_REQUEST, "op must be a string"))
            return
        wanted = req.get("cluster_id")
        if wanted is not None and wanted != self.identity.cluster_id:
            # The client was told which cluster it talks to (raftctl --cluster-id): two
            # clusters behind the same endpoints must not be mixed up (issue 14 §9).
            conn.reply(rid, error=error_reply(ErrorCode.WRONG_CLUSTER,
                                              f"{self.cfg.listen} belongs to cluster "
                                              f"{self.identity.cluster_id}, not {wanted}"))
            return
        if conn.rate and not conn.take_token():
            self.limit_rejections["request_rate"] += 1
            conn.reply(rid, error=error_reply(ErrorCode.RATE_LIMITED,
                                              f"more than {conn.rate} requests/s on one "
                                              f"connection (max_requests_per_second); slow "
                                              f"down and retry"))
            return
        if not may(conn.identity, op):
            self.counters["permission_denied"] += 1
            peer = conn.writer.get_extra_info("peername")
            who = conn.identity.describe() if conn.identity is not None else "?"  # (TLS only)
            log.warning("refused %r from %s at %s: needs the admin role", op, who,
                        peer[0] if peer else "?")
            conn.reply(rid, error=error_reply(ErrorCode.PERMISSION_DENIED,
                                              f"{who} may not {op}: it needs an admin "
                                              f"certificate"))
            return
        try:
            if op in _WRITE_OPS:
                self._handle_write(conn, rid, op, req)
            elif op in ("get", "list"):
                self._handle_read(conn, rid, op, req)
            elif op == "status":
                st = self.status()
                if req.get("digest"):
                    st["digest"] = self.fsm.digest()  # O(state): only when asked (tests)
                conn.reply(rid, st)
            elif op == "transfer_leader":
                self._handle_transfer(conn, rid, req)
            elif op == "change_config":
                self._handle_change(conn, rid, req)
            elif op == "snapshot":
                self._handle_snapshot(conn, rid)
            elif op == "snapshot_list":
                conn.reply(rid, {"snapshots": [i.describe() for i in self.snapshots.store.list()]})
            elif op == "snapshot_read":
                self._handle_snapshot_read(conn, rid, req)
            else:
                conn.reply(rid, error=error_reply(ErrorCode.UNKNOWN_OP, f"unknown op {op!r}"))
        except _BadRequest as e:
            conn.reply(rid, error=error_reply(ErrorCode.BAD_REQUEST, str(e)))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            # A field of a shape no check above foresaw: refuse the request, keep serving.
            log.warning("bad %r request: %s: %s", op, type(e).__name__, e)
            conn.reply(rid, error=error_reply(ErrorCode.BAD_REQUEST,
                                              f"malformed {op} request: {e}"))

    def _handle_write(self, conn: ClientConn, rid: int, op: str, req: dict[str, Any]) -> None:
        node = self.core
        if node.role != Role.LEADER:
            conn.reply(rid, error=self._leader_error())
            return
        key = "" if op == "open_session" else _field(req, "key", str)
        if not key and op != "open_session":
            raise _BadRequest("key must be a non-empty string")
        client_id = req.get("client_id")
        seq = req.get("seq", 0)
        if client_id is not None and not isinstance(client_id, str) \
                or type(seq) is not int or seq < 0:
            raise _BadRequest("client_id must be a string and seq an integer >= 0")
        cfg = self.cfg
        value, expected = req.get("value"), req.get("expected")
        # (A str of n characters is at most 4n bytes of UTF-8: most keys skip the encode.)
        if 4 * len(key) > cfg.max_key_size and len(key.encode()) > cfg.max_key_size:
            return self._too_large(conn, rid, "key", len(key.encode()), cfg.max_key_size)
        for data in (value, expected):
            if type(data) is bytes and len(data) > cfg.max_value_size:
                return self._too_large(conn, rid, "value", len(data), cfg.max_value_size)
        if client_id and client_id not in conn.client_ids:
            # The state machine evicts the least recently used sessions beyond max_sessions;
            # this cap keeps one connection from evicting everybody else's (issue 19 §12).
            if len(conn.client_ids) >= cfg.max_sessions_per_connection:
                self.limit_rejections["sessions"] += 1
                conn.reply(rid, error=error_reply(
                    ErrorCode.TOO_MANY_SESSIONS, f"this connection opened "
                                                 f"{len(conn.client_ids)} client sessions "
                                                 f"(max_sessions_per_connection)"))
                return
            conn.client_ids.add(client_id)
        now_ms = self.clock.now_ms(node.term, self.fsm.now_ms)
        cmd = session_put(key, value, client_id, seq, now_ms) if op == "put" else None
        if cmd is None:
            try:
                cmd = Command(_WRITE_OPS[op], key,
                              value=_field(req, "value", bytes) if op in ("put", "cas") else None,
                              expected=req.get("expected") if op == "cas" else None,
                              client_id=client_id, seq=seq if client_id else 0,
                              timestamp_ms=now_ms)
            except (TypeError, ValueError) as e:
                raise _BadRequest(str(e)) from None
        try:
            index = node.propose(encode_command(cmd))
        except NotLeaderError:
            conn.reply(rid, error=self._leader_error())
            return
        except ProposalDroppedError as e:
            conn.reply(rid, error=error_reply(ErrorCode.UNAVAILABLE, str(e)))
            return
        self.counters["proposals"] += 1
        self._pending_writes[index] = PendingWrite(node.term, conn, rid, cmd)
        self._wake.set()

    def _too_large(self, conn: ClientConn, rid: int, name: str, size: int, limit: int) -> None:
        self.limit_rejections[f"{name}_size"] += 1
        conn.reply(rid, error=error_reply(ErrorCode.TOO_LARGE,
                                          f"{name} of {size} bytes is over the limit of "
                                          f"{limit} (max_{name}_size)"))

    def _handle_read(self, conn: ClientConn, rid: int, op: str, req: dict[str, Any]) -> None:
        if op == "get":
            _field(req, "key", str)
        elif not isinstance(req.get("prefix", ""), str):
            raise _BadRequest("prefix must be a string")
        elif not isinstance(req.get("start_after"), (str, type(None))):
            raise _BadRequest("start_after must be a string")
        elif "limit" in req and not (type(req["limit"]) is int and 1 <= req["limit"] <= 100_000):
            raise _BadRequest("limit must be an integer from 1 to 100000")
        if not req.get("linearizable", True):
            self._answer_read(conn, rid, req)  # local, possibly stale read: the caller asked
            return
        self._read_ids += 1
        try:
            self.core.read_index(self._read_ids)
        except NotLeaderError:
            conn.reply(rid, error=self._leader_error())
            return
        self._pending_reads[self._read_ids] = (conn, rid, req)
        self._wake.set()

    def _handle_transfer(self, conn: ClientConn, rid: int, req: dict[str, Any]) -> None:
        node = self.core
        if node.role != Role.LEADER:
            conn.reply(rid, error=self._leader_error())
            return
        target = req.get("target") or self._best_transfer_target()
        if not isinstance(target, str):
            raise _BadRequest("target must be a server id")
        try:
            node.transfer_leadership(target)
        except (InvalidConfChangeError, ConfChangeInProgressError) as e:
            conn.reply(rid, error=error_reply(ErrorCode.BAD_REQUEST, str(e)))
            return
        self._event("transfer", f"leadership transfer to {target} started")
        conn.reply(rid, {"target": target})
        self._wake.set()

    def _handle_change(self, conn: ClientConn, rid: int, req: dict[str, Any]) -> None:
        add = req.get("add") or {}
        remove = req.get("remove") or []
        promote = req.get("promote") or []
        # A str is iterable: "n9" must not become the ids "n" and "9" (issue 19 §14).
        if (not isinstance(add, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in add.items())
                or type(remove) is not list or type(promote) is not list
                or not all(isinstance(x, str) for x in [*remove, *promote])):
            raise _BadRequest("add is {id: address}; remove and promote are lists of ids")
        if not (add or remove or promote):
            raise _BadRequest("nothing to change")
        creq = ChangeRequest(dict(add), list(remove), list(promote), bool(req.get("learner")))

        async def run() -> None:
            try:
                result = await self.reconfig.change(creq)
            except NotLeaderError:
                conn.reply(rid, error=self._leader_error())
            except ChangeError as e:
                conn.reply(rid, error=error_reply(ErrorCode(e.code), str(e)))
            else:
                conn.reply(rid, result)

        self._spawn(run())

    def _handle_snapshot(self, conn: ClientConn, rid: int) -> None:
        async def run() -> None:
            try:
                result = await asyncio.shield(self.snapshots.take())
            except Exception as e:  # noqa: BLE001 - reported to the operator
                conn.reply(rid, error=error_reply(ErrorCode.INTERNAL,
                                                  f"snapshot failed: {e}"))
            else:
                conn.reply(rid, {**result, "node": self.node_id})
        self._spawn(run())

    def _handle_snapshot_read(self, conn: ClientConn, rid: int, req: dict[str, Any]) -> None:
        """Read part of a snapshot file (backups: raftctl snapshot save)."""
        index, offset = req.get("index"), req.get("offset", 0)
        length = req.get("length", 1 << 20)
        if type(length) is not int or not 0 < length <= 4 << 20:
            raise _BadRequest("length must be an integer from 1 to 4194304")
        if type(offset) is not int or offset < 0:
            raise _BadRequest("offset must be an integer >= 0")
        info = next((i for i in self.snapshots.store.list() if i.meta.index == index), None)
        if info is None:
            raise _BadRequest(f"no snapshot at index {index!r} on {self.node_id}")
        with open(info.path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        conn.reply(rid, {"data": data, "size": info.size, "eof": offset + len(data) >= info.size})


class _BadRequest(Exception):
    pass


def _field(req: dict[str, Any], name: str, typ: type[_T]) -> _T:
    v = req.get(name)
    if not isinstance(v, typ):
        raise _BadRequest(f"field {name!r} must be {typ.__name__}")
    return v
