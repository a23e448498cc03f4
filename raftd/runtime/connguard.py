"""Deadlines for inbound connections (issue 19 §11): a client connection that sends nothing
for ``idle_timeout`` and any connection that leaves a frame half-sent for ``frame_timeout``
(a trickle of bytes keeps the frame open but does not complete it) are closed, so idle and
slow-loris connections cannot pin memory and connection slots for ever.

One sweep per second over all connections instead of a timer per read: the hot read path only
stores two timestamps."""
from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("raftd.server")


class Watch:
    """What the guard knows about one connection; the read loop calls ``read``."""

    __slots__ = ("host", "close", "last_read", "partial_since", "is_peer")

    def __init__(self, host: str, close: Callable[[], None], now: float) -> None:
        self.host = host
        self.close = close
        self.last_read = now
        self.partial_since: float | None = None
        self.is_peer = False  # peers may stay silent for long (a follower's inbound link)

    def read(self, now: float, partial: bool) -> None:
        """Bytes arrived; ``partial``: a frame is still incomplete after them."""
        self.last_read = now
        if not partial:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now


class ConnectionGuard:
    def __init__(self, idle_timeout: float, frame_timeout: float,
                 on_close: Callable[[str], None]) -> None:
        self.idle_timeout = idle_timeout  # 0: client connections never time out idle
        self.frame_timeout = frame_timeout
        self._on_close = on_close  # called with the reason label ("idle" or "slow_frame")
        self._watches: set[Watch] = set()

    def track(self, host: str, close: Callable[[], None], now: float) -> Watch:
        w = Watch(host, close, now)
        self._watches.add(w)
        return w

    def untrack(self, w: Watch) -> None:
        self._watches.discard(w)

    def sweep(self, now: float) -> int:
        """Close every connection past a deadline; returns how many were closed."""
        closed = 0
        for w in list(self._watches):
            if w.partial_since is not None and now - w.partial_since > self.frame_timeout:
                reason = "slow_frame"
                log.warning("closing connection from %s: a frame took over %.0f s to arrive",
                            w.host, self.frame_timeout)
            elif (self.idle_timeout and not w.is_peer
                  and now - w.last_read > self.idle_timeout):
                reason = "idle"
                log.info("closing client connection from %s: idle for %.0f s", w.host,
                         self.idle_timeout)
            else:
                continue
            self._watches.discard(w)
            self._on_close(reason)
            w.close()
            closed += 1
        return closed
