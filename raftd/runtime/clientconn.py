"""A client connection's reply side: replies batched per loop pass, a token bucket, a bound on
unread replies.  Split from server.py (issue 17 §2)."""
from __future__ import annotations

import asyncio
import time

from raftd.wire.codec import (encode_client_response)



class ClientConn:
    """A client connection: responses are written as requests complete, in any order.
    Responses produced in one pass of the event loop leave in one write (one syscall for a
    whole batch of commits instead of one per request)."""

    def __init__(self, writer: asyncio.StreamWriter, identity=None, rate: int = 0,
                 max_unsent: int = 64 << 20, on_overflow=None, monotonic=time.monotonic):
        self.writer = writer
        self._monotonic = monotonic
        self.closed = False
        self._out: list[bytes] = []
        self._out_bytes = 0
        # Replies the client does not read pile up here and in the transport: past
        # max_unsent bytes the connection is closed (issue 19 §10), memory stays bounded.
        self.max_unsent = max_unsent
        self._on_overflow = on_overflow
        self.identity = identity  # raftd.tls.Identity over TLS, None in plaintext
        # Token bucket: ``rate`` requests per second, bursts of up to one second's worth.
        self.rate = rate
        self._tokens = float(rate)
        self._refilled = monotonic()
        self.client_ids: set[str] = set()  # sessions this connection opened (a cap, see §12)

    def take_token(self) -> bool:
        if self._tokens < 1:
            now = self._monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
            self._refilled = now
            if self._tokens < 1:
                return False
        self._tokens -= 1
        return True

    def reply(self, rid, result=None, error: dict | None = None) -> None:
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        frame = encode_client_response(
            {"id": rid, "ok": error is None, "result": result if error is None else None,
             "error": error})
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._out_bytes + self.writer.transport.get_write_buffer_size() > self.max_unsent:
            self.closed = True
            self._out, self._out_bytes = [], 0
            if self._on_overflow is not None:
                self._on_overflow(self)
            self.writer.transport.abort()

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._out_bytes = 0
        # A client that reset its connection: uvloop raises on writes to a closed transport.
        if not self.closed and out and not self.writer.transport.is_closing():
            self.writer.write(b"".join(out))
