"""What the runtime needs from the replicated state machine (Raft §2: the log feeds it), and how
a Python program plugs in a state machine of its own (issue 15 §1).

``KVStateMachine`` (raftd.kv.fsm) is the default.  ``StateMachine`` names every call the drive
loop, the request path and the snapshot code make, so another state machine can be passed to
``RaftServer(state_machine=...)``.

Most programs do not need all of that: ``Application`` is the small protocol a program writes
(apply a command, answer a query, snapshot, restore), and ``ApplicationStateMachine`` runs it on
the runtime.  Its commands travel as the value of a write (``put``): they get the client's
session (thesis §6.3), so a retried command is applied once, and the result of ``apply`` goes
back to the client.  Its queries travel as the key of a linearizable read (``get``, ReadIndex,
thesis §6.4).  ``submit`` and ``query`` are the client side.  examples/replicated_counter.py is
a whole program.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from raftd.kv.fsm import KVStateMachine


class StateMachine(Protocol):
    applied_index: int  # the last log index applied
    now_ms: int  # cluster time of the last command applied (sessions expire by it)
    session_ttl_ms: int  # replicated session limits (the leader proposes its configured ones)
    max_sessions: int
    stats: dict[str, int]  # node-local counters (status)

    # -- the log (drive loop) --
    def apply_entry(self, entry) -> Any:
        """Apply one committed log entry (raftd.core.Entry), in log order; the result goes to
        the client that proposed it (None for entries that carry no command)."""

    def apply_command(self, index: int, cmd) -> dict:
        """``apply_entry`` for a command the leader still holds decoded (raftd.kv.Command)."""

    # -- reads (after ReadIndex) --
    def get(self, key: str) -> Any:
        """The answer to a read of ``key``."""

    def page(self, prefix: str, start_after: str | None, limit: int,
             max_bytes: int) -> tuple[dict, bool]:
        """One page of a listing: (items, more)."""

    @property
    def sessions(self) -> Mapping: ...

    # -- snapshots (Raft §7) --
    def freeze(self) -> tuple[dict, Any]:
        """A consistent image for a snapshot: (header, data batches)."""

    def thaw(self) -> None:
        """The snapshot image is written: the state machine may change in place again."""

    def restore_stream(self, header: dict, batches: Iterable) -> None:
        """Replace the whole state with a snapshot's (InstallSnapshot, restart)."""

    def digest(self) -> str:
        """A short fingerprint of the state: replicas at the same applied index agree."""

    def __len__(self) -> int: ...


class Application(Protocol):
    """A deterministic state machine of a program's own.  ``apply`` sees every committed
    command once, in log order, on every server; ``query`` must not change the state."""

    def apply(self, command: bytes) -> Any:
        """Apply one command; the result (msgpack-able: None, numbers, str, bytes, lists,
        dicts) goes back to the client that submitted it."""

    def query(self, query: str) -> bytes | None:
        """Answer a read from the current state."""

    def snapshot(self) -> bytes:
        """The whole state, for a snapshot (taken on the event loop: keep it small or quick)."""

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a ``snapshot()``."""


class ApplicationStateMachine(KVStateMachine):
    """Runs an ``Application`` on the runtime: the KV state machine's sessions, session limits
    and cluster time stay (so retries are applied once and expire alike on every server); its
    key-value data is replaced by the application's state."""

    def __init__(self, app: Application, **kw) -> None:
        super().__init__(**kw)
        self.app = app

    # The one write a client sends is put(key, command); delete and cas mean nothing here.
    def _execute(self, index: int, cmd) -> dict[str, Any]:  # the KV state machine's hook
        from raftd.kv.commands import Op  # noqa: PLC0415 - only this path needs it

        if cmd.op is Op.PUT:
            return {"index": index, "result": self.app.apply(cmd.value)}
        if cmd.op in (Op.DELETE, Op.CAS):
            return {"index": index, "error": "bad_request",
                    "message": f"{cmd.op.name.lower()} is not a command of this application"}
        return super()._execute(index, cmd)  # sessions and their limits

    def get(self, key: str) -> bytes | None:
        return self.app.query(key)

    def page(self, prefix: str, start_after: str | None, limit: int,
             max_bytes: int) -> tuple[dict, bool]:
        return {}, False  # an application has no keys to list

    def __len__(self) -> int:
        return 0

    def freeze(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        header, data = super().freeze()  # sessions and limits; no keys
        header["application"] = self.app.snapshot()
        return header, data

    def restore_stream(self, header: dict[str, Any], batches: Iterable) -> None:
        state = header.get("application")
        if type(state) is not bytes:
            raise ValueError("not a snapshot of an application state machine")
        super().restore_stream(header, batches)
        self.app.restore(state)

    def digest(self) -> str:
        h = hashlib.sha256(super().digest().encode())
        h.update(self.app.snapshot())
        return h.hexdigest()


async def submit(client, command: bytes, key: str = "app") -> Any:
    """Submit ``command`` through ``client`` (raftd.client.AsyncClient) and return what the
    application's ``apply`` returned.  Retried with the same session: applied at most once."""
    r = await client.request("put", {"key": key, "value": command}, write=True)
    return r.get("result")


async def query(client, q: str) -> bytes | None:
    """A linearizable read: the application's ``query(q)`` on the leader after ReadIndex."""
    return await client.get(q)
