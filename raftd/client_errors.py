"""The client library's errors, shared by its clients (raftd.client, raftd.client_socket).

A module of its own, importing nothing, so that raftctl can map them to exit codes without
importing asyncio (issue 16 §6).  ``raftd.client`` re-exports every name."""
from __future__ import annotations


class ClientError(Exception):
    """Base class of every error raised by the client library."""

    code = "error"


class Unavailable(ClientError):
    """No node could serve the request (no leader, or no node reachable) within the timeout."""

    code = "unavailable"


class Timeout(ClientError):
    """The request did not complete within the timeout; a write may or may not have applied."""

    code = "timeout"


class RequestError(ClientError):
    """The cluster refused the request (bad request, value too large, ...)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class ClosedBeforeAnswer(ConnectionResetError):
    """The server closed the connection before answering anything: what a TLS node does to a
    plaintext client (and a node to a client whose certificate it refuses)."""


class TLSError(RequestError):
    """The TLS handshake failed: no or wrong client certificate, or a server not signed by
    the CA we trust.  Not retried: another attempt would fail the same way."""

    def __init__(self, message: str):
        super().__init__("tls", message)


class NotRaftd(ClosedBeforeAnswer):
    """Another kind of server answered (an HTTP server says b'HT'): no TLS hint then."""


def bad_magic_error(address: str, magic: bytes) -> ConnectionResetError:
    """A TLS record starts with 0x15 (alert) or 0x16 (handshake): a TLS server, which gets
    the TLS hint; any other bytes are some other server's (trial 6 of issue 16)."""
    if magic[:1] in (b"\x15", b"\x16"):
        return ConnectionResetError(f"connection to {address} failed: it answered in TLS")
    return NotRaftd(f"not a raftd server at {address} (it answered {magic!r})")


def closed_unanswered(reason: Exception, over_tls: bool, pending: bool) -> Exception:
    """Why a connection that never answered anything closed, with the likely cause: a TLS
    node closes a plaintext connection at its first bytes, and a node that refuses our
    certificate closes right after the handshake (the TLS alert saying why is often lost with
    the connection).  ``reason`` is returned as it is when no hint applies."""
    if not isinstance(reason, (ConnectionResetError, TLSError)) or isinstance(reason, NotRaftd):
        return reason  # (an ERROR frame is the server's own words: no guessing then)
    if over_tls:
        cls = TLSError if isinstance(reason, TLSError) else ClosedBeforeAnswer
        return cls(f"{reason} before answering anything (over TLS: is "
                   f"our client certificate missing, expired or from "
                   f"another CA? the node's log says why)")
    if pending:
        return ClosedBeforeAnswer(f"{reason} before answering anything (if the "
                                  f"cluster uses TLS: give --cacert/--cert/--key "
                                  f"or RAFTCTL_CACERT, RAFTCTL_CERT, RAFTCTL_KEY)")
    return reason


def as_bytes(value: bytes | str | None) -> bytes | None:
    """A value as the wire carries it: bytes as they are, ``str`` as UTF-8."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"values must be bytes or str, not {type(value).__name__}")
