"""How a client finds the leader and when it gives up (thesis §6.2), without any I/O.

Shared by the asyncio client (raftd.client) and the blocking socket client
(raftd.client_socket), so both follow leader hints, retry, give up on refused connections
and word their errors the same way.  Imports no asyncio (issue 16 §6)."""
from __future__ import annotations

import socket

from collections.abc import Callable, Sequence

from .client_errors import ClosedBeforeAnswer, RequestError, Timeout, Unavailable

CLUSTER_ID_ENV = "RAFTCTL_CLUSTER_ID"  # the cluster a client expects (issue 14 §9)
WRITE_OPS = ("put", "delete", "cas")


class Session:
    """A client session (thesis §6.3): its id and the last sequence number used."""

    __slots__ = ("client_id", "seq", "expired")

    def __init__(self, client_id: str, seq: int) -> None:
        self.client_id = client_id
        self.seq = seq
        self.expired = False  # the cluster answered session_expired: never reuse it


class Retry:
    """One request's retry state: its deadline, back-off and why the last attempt failed.
    ``now`` is the clock (the event loop's time, or time.monotonic)."""

    __slots__ = ("now", "deadline", "backoff", "last_error", "attempts", "sent_unanswered",
                 "refused")

    def __init__(self, now: Callable[[], float], timeout: float) -> None:
        self.now = now
        self.deadline = now() + timeout
        self.backoff = 0.01
        self.last_error = "no endpoint answered"
        self.attempts = 0
        self.sent_unanswered = False
        self.refused: dict[str, float] = {}  # endpoint -> when it first refused us

    def remaining(self) -> float:
        return self.deadline - self.now()

    def pause(self) -> float:
        """Seconds to wait before the next attempt (doubling, at most 0.2 s)."""
        delay = min(self.backoff, max(0.0, self.remaining()))
        self.backoff = min(self.backoff * 2, 0.2)
        return delay


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):  # asyncio.TimeoutError and socket.timeout too
        return "connection timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class LeaderRouting:
    """Which endpoint to try next (the leader once known, else round robin) and what an
    attempt's failure means for the request; the clients do the I/O around it."""

    def __init__(self, endpoints: Sequence[str] | str, timeout: float,
                 refused_grace: float | None):
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("at least one endpoint (host:port) is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.refused_grace = refused_grace
        self._free_sessions: list[Session] = []  # sessions between requests, for reuse
        self._leader: str | None = None
        self._rr = 0

    def _next_endpoint(self) -> str:
        if self._leader:
            return self._leader
        self._rr = (self._rr + 1) % len(self.endpoints)
        return self.endpoints[self._rr]

    def _unanswered(self, st: Retry, address: str) -> None:
        """A request sent to ``address`` got no answer in its attempt's time."""
        st.sent_unanswered = True
        st.last_error = f"{address} did not answer in time"
        self._leader = None
        if address in self.endpoints:
            self._rr = self.endpoints.index(address)

    def _give_up_if_all_refused(self, op: str, refused: dict[str, float], now: float,
                                why: str | None = None) -> None:
        """Every endpoint refused the connection (or closed it unread, ``why``) for
        refused_grace seconds: no raftd we can talk to listens there, so nothing of this
        request was applied."""
        if self.refused_grace is None or not all(e in refused for e in self.endpoints):
            return
        if now - min(refused[e] for e in self.endpoints) >= self.refused_grace:
            raise Unavailable(f"{op} failed: {why}" if why else
                              f"no raftd at {', '.join(self.endpoints)} (connection refused)")

    def _failed(self, op: str, st: Retry, address: str, e: BaseException,
                sent: bool) -> None:
        """Connecting to ``address`` (sent=False) or a request on it (sent=True) failed."""
        st.last_error = f"{address}: {_describe(e)}"
        self._leader = None
        if isinstance(e, ConnectionRefusedError) and not sent:
            st.refused.setdefault(address, st.now())
            self._give_up_if_all_refused(op, st.refused, st.now())
        elif isinstance(e, socket.gaierror) and e.errno == socket.EAI_NONAME and not sent:
            # The name does not exist (not a DNS server that failed to answer, EAI_AGAIN):
            # retrying until the timeout cannot help, as for refusals (trial 6 of issue 16).
            st.refused.setdefault(address, st.now())
            self._give_up_if_all_refused(op, st.refused, st.now(), st.last_error)
        elif isinstance(e, ClosedBeforeAnswer):
            # Closed at our first bytes, never read: nothing was applied.  When every
            # endpoint does that, waiting helps no more than for refusals.
            st.refused.setdefault(address, st.now())
            self._give_up_if_all_refused(op, st.refused, st.now(), st.last_error)
        elif sent:
            st.sent_unanswered = True

    def _settle(self, st: Retry, address: str, resp: dict,
                session: Session | None) -> dict | None:
        """A node's answer to a request: the result when it succeeded; None when it is to be
        retried (elsewhere, or after a pause when no leader is known); otherwise raises the
        refusal (RequestError).  Both clients' retry loops end here."""
        if resp.get("ok"):
            self._leader = address
            result: dict = resp.get("result") or {}
            return result
        err = resp.get("error") or {}
        if self._retry_later(st, address, err):
            return None
        refused = refused_answer(err)
        if refused.code == "session_expired" and session is not None:
            session.expired = True  # every later seq of it would be refused too
        raise refused

    def _release(self, session: Session | None) -> None:
        """A request is over: its session may serve the next one, unless it expired."""
        if session is not None and not session.expired:
            self._free_sessions.append(session)

    def _session_refused(self, op: str, client_id: str, e: Exception) -> Session:
        """Registering a session (open_session) failed with ``e``: a server of an earlier
        version (unknown_op) opens it with the first write (seq 1); anything else is raised,
        an Unavailable named after the caller's write rather than this internal step."""
        if isinstance(e, RequestError) and e.code == "unknown_op":
            return Session(client_id, 0)
        if isinstance(e, Unavailable) and str(e).startswith("open_session "):
            raise Unavailable(f"{op} {str(e).removeprefix('open_session ')}") from None
        raise e

    def _retry_later(self, st: Retry, address: str, err: dict) -> bool:
        """Is this error answer one to retry (elsewhere, or after a pause)?"""
        code = err.get("code", "error")
        if code == "not_leader":
            hint = err.get("leader_address")
            self._leader = hint if hint and hint != address else None
            st.last_error = f"{address} is not the leader"
            return True
        if code in ("unavailable", "timeout"):
            st.last_error = f"{address}: {err.get('message', code)}"
            self._leader = None
            return True
        return False

    def _gave_up(self, op: str, args: dict, st: Retry) -> Exception:
        """The error once the request's time is up: "may or may not have been applied" only
        when a write may have reached a leader."""
        if st.sent_unanswered and op in WRITE_OPS:
            return Timeout(f"{op} {args.get('key', '')!r} timed out after {self.timeout:g}s; "
                           f"it may or may not have been applied (last: {st.last_error})")
        return Unavailable(f"{op} failed: no leader reachable within {self.timeout:g}s "
                           f"({st.attempts} attempt{'' if st.attempts == 1 else 's'}; "
                           f"last: {st.last_error})")


def refused_answer(err: dict) -> RequestError:
    """The error an answer that is not to be retried becomes."""
    code = err.get("code", "error")
    return RequestError(code, err.get("message", code))
