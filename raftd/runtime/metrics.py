"""Prometheus metrics for one raftd node, served over HTTP at ``/metrics``.

``RaftMetrics`` owns its own ``CollectorRegistry`` (no global state: several nodes can run in
one process, e.g. in tests).  Two kinds of metrics:

* histograms the server feeds as things happen (event loop thread):
  ``observe_fsync(seconds)`` and ``observe_append_rtt(peer, seconds)``;
* everything else is read from the node's status dict (``RaftServer.status()``) at scrape
  time by a custom collector.  Scrapes run in the HTTP server's thread, so the collector does
  not call into the node: it reads the latest dict the server handed to ``update(status)``
  (or ``maybe_refresh()``, which calls ``status_fn()`` at most every ``refresh_interval``
  seconds) from its event loop.  Only before the first ``update`` does a scrape call
  ``status_fn()`` itself (handy for tests and tools; a server should call ``update`` early).

Metric names (labels in braces):

    raftd_term                                 gauge    current term
    raftd_role{role}                           gauge    1 for the node's role (leader, follower,
                                                        candidate, pre-candidate, learner), else 0
    raftd_is_leader                            gauge    1 on the leader
    raftd_commit_index                         gauge
    raftd_applied_index                        gauge
    raftd_last_log_index                       gauge
    raftd_snapshot_index                       gauge
    raftd_keys                                 gauge    keys in the state machine
    raftd_leader_changes_total                 counter  leaders this node has seen elected
    raftd_proposals_total                      counter  client writes proposed on this node
    raftd_fsyncs_total                         counter  log fsyncs (one per group commit)
    raftd_bad_frames_total                     counter  connections closed for protocol errors
    raftd_client_requests_total                counter  client requests received
    raftd_tls_handshake_failures_total         counter  connections refused in the handshake
    raftd_peers_refused_total                  counter  peer connections refused (identity)
    raftd_permission_denied_total              counter  client requests refused for their role
    raftd_peer_messages_dropped_total          counter  TLS: votes etc. from non-members dropped
    raftd_limit_rejections_total{limit}        counter  refused by a limit: frame_size,
                                                        connections_per_address, request_rate,
                                                        key_size, value_size, sessions
    raftd_tls_cert_expiry_days                 gauge    TLS only: days the certificate has left
    raftd_snapshots_total                      counter  snapshots this node has taken
    raftd_snapshot_bytes                       gauge    size of the latest one (0 before any)
    raftd_snapshot_transfers_total{result}     counter  InstallSnapshot transfers: sent,
                                                        received, failed
    raftd_wal_bytes_written_total              counter  bytes appended to the write-ahead log
    raftd_uptime_seconds                       gauge
    raftd_last_leader_contact_seconds          gauge    since the last AppendEntries from the
                                                        leader (0 on the leader; absent before)
    raftd_peer_replication_lag_entries{peer}   gauge    leader only: last_log_index - the peer's
                                                        match_index
    raftd_peer_connected{peer}                 gauge    1 while the outgoing link is connected
    raftd_peer_sent_messages_total{peer}       counter  messages sent on the outgoing link
    raftd_peer_dropped_messages_total{peer}    counter  messages dropped (queue full / no link)
    raftd_status_age_seconds                   gauge    age of the status the values come from
    raftd_fsync_seconds                        histogram  time of one WAL save + fsync
    raftd_append_entries_seconds{peer}         histogram  AppendEntries round trip to a peer

Usage (the server does this; see RaftServer):

    metrics = RaftMetrics(server.status)
    port = metrics.start("127.0.0.1", 9101)   # port 0: any free port, returned
    metrics.maybe_refresh()                    # every tick, from the event loop
    metrics.observe_fsync(0.0012)
    metrics.stop()
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

ROLES = ("leader", "follower", "candidate", "pre-candidate", "learner")
# fsync and a LAN round trip are both sub-millisecond to a few hundred ms.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, float("inf"))


class RaftMetrics:
    def __init__(self, status_fn: Callable[[], dict] | None = None, *,
                 refresh_interval: float = 0.5):
        self.status_fn = status_fn
        self.refresh_interval = refresh_interval
        self.registry = CollectorRegistry(auto_describe=False)
        self.fsync_seconds = Histogram(
            "raftd_fsync_seconds", "Time of one write-ahead log save including fsync",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.append_entries_seconds = Histogram(
            "raftd_append_entries_seconds", "AppendEntries round trip from the leader to a peer",
            ["peer"], buckets=LATENCY_BUCKETS, registry=self.registry)
        # (status, time.monotonic() it was taken): rebound as a whole, so the scrape thread
        # always sees a matching pair without a lock.
        self._cached: tuple[dict, float] | None = None
        self.registry.register(_StatusCollector(self))
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ---------------------------------------------------------- fed by the server --
    def update(self, status: dict, now: float | None = None) -> None:
        """Hand the collector a fresh status dict (from the event loop; the dict must not be
        mutated afterwards: RaftServer.status() builds a new one every call).  ``now`` is its
        time.monotonic() timestamp (default: now)."""
        self._cached = (status, time.monotonic() if now is None else now)

    def maybe_refresh(self, now: float | None = None) -> bool:
        """``update(status_fn())`` unless the cached status is younger than refresh_interval.
        Cheap enough to call every tick."""
        now = time.monotonic() if now is None else now
        cached = self._cached
        if self.status_fn is None or (cached is not None
                                      and now - cached[1] < self.refresh_interval):
            return False
        self.update(self.status_fn(), now)
        return True

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def observe_append_rtt(self, peer: str, seconds: float) -> None:
        self.append_entries_seconds.labels(peer=str(peer)).observe(seconds)

    # ----------------------------------------------------------------- exposition --
    def snapshot(self) -> tuple[dict | None, float]:
        """The status the next scrape reports and its age in seconds."""
        cached = self._cached
        if cached is None:
            return (self.status_fn() if self.status_fn is not None else None), 0.0
        return cached[0], max(0.0, time.monotonic() - cached[1])

    def render(self) -> bytes:
        """The text exposition format, as /metrics serves it."""
        return generate_latest(self.registry)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve /metrics on host:port in a daemon thread; returns the bound port."""
        if self._httpd is not None and self.port is not None:
            return self.port  # already serving
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path in ("/metrics", "/metrics/"):
                    try:
                        body, ctype, code = metrics.render(), CONTENT_TYPE_LATEST, 200
                    except Exception as e:  # noqa: BLE001 - report, keep serving
                        body, ctype, code = f"error: {e!r}\n".encode(), "text/plain", 500
                elif path == "/":
                    body, ctype, code = b"raftd metrics: /metrics\n", "text/plain", 200
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args) -> None:  # no access log on stderr
                pass

        host = host.strip("[]")
        server_cls = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = server_cls((host, port), Handler)
        bound: int = self._httpd.server_address[1]
        self.port = bound
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.2}, name="raftd-metrics", daemon=True)
        self._thread.start()
        return bound

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung scraper never keeps the process alive


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def _num(v, default: float = 0.0) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


class _StatusCollector(Collector):
    """Turns the latest status dict into metric families at each scrape."""

    def __init__(self, metrics: RaftMetrics):
        self.metrics = metrics

    def describe(self):
        return []  # families depend on the status; nothing to check at registration

    def collect(self):
        st, age = self.metrics.snapshot()
        yield GaugeMetricFamily("raftd_status_age_seconds",
                                "Age of the status these values were read from", value=age)
        if not st:
            return
        yield from _node_metrics(st)
        yield from _counter_metrics(st)
        yield from _snapshot_and_storage_metrics(st)
        yield from _peer_metrics(st)


def _gauge(name: str, doc: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=_num(value))


def _counter(name: str, doc: str, value) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=_num(value))


def _node_metrics(st: dict):
    role = st.get("role")
    yield _gauge("raftd_term", "Current term", st.get("term"))
    roles = GaugeMetricFamily("raftd_role", "1 for the node's current role", labels=["role"])
    for r in ROLES + ((role,) if role and role not in ROLES else ()):
        roles.add_metric([r], 1.0 if r == role else 0.0)
    yield roles
    yield _gauge("raftd_is_leader", "1 if this node is the leader",
                 1 if role == "leader" else 0)
    yield _gauge("raftd_commit_index", "Highest log index known committed",
                 st.get("commit_index"))
    yield _gauge("raftd_applied_index", "Highest log index applied to the state machine",
                 st.get("applied_index"))
    yield _gauge("raftd_last_log_index", "Index of the last log entry",
                 st.get("last_log_index"))
    yield _gauge("raftd_snapshot_index", "Last index covered by the snapshot",
                 st.get("snapshot_index"))
    yield _gauge("raftd_keys", "Keys in the state machine", st.get("keys"))


def _counter_metrics(st: dict):
    c = st.get("counters") or {}
    yield _counter("raftd_leader_changes", "Leaders this node has seen elected",
                   c.get("leader_changes"))
    yield _counter("raftd_proposals", "Client writes proposed on this node",
                   c.get("proposals"))
    yield _counter("raftd_fsyncs", "Write-ahead log fsyncs", c.get("fsyncs"))
    yield _counter("raftd_inline_fsync_backoffs", "Slow fsyncs that moved saves off the "
                   "event loop for a while (inline_fsync: auto)",
                   c.get("inline_fsync_backoffs"))
    yield _counter("raftd_bad_frames", "Connections closed for protocol errors",
                   c.get("bad_frames"))
    yield _counter("raftd_client_requests", "Client requests received",
                   c.get("client_requests"))
    yield _counter("raftd_tls_handshake_failures", "Connections refused in the TLS "
                   "handshake (plaintext, no or foreign certificate)",
                   c.get("tls_handshake_failures"))
    yield _counter("raftd_peers_refused", "Peer connections refused (certificate name "
                   "not a member, or not a node certificate)", c.get("peers_refused"))
    yield _counter("raftd_peer_messages_dropped", "Raft messages dropped from peers outside "
                   "the configuration (TLS)", c.get("peer_messages_dropped"))
    yield _counter("raftd_permission_denied", "Client requests refused for their role",
                   c.get("permission_denied"))
    limits = CounterMetricFamily("raftd_limit_rejections",
                                 "Requests and connections refused by a limit",
                                 labels=["limit"])
    for name, n in sorted((st.get("limit_rejections") or {}).items()):
        limits.add_metric([str(name)], _num(n))
    yield limits
    tls = st.get("tls") or {}
    if tls.get("enabled"):
        yield _gauge("raftd_tls_cert_expiry_days", "Days until this node's certificate "
                     "expires", tls.get("days_left"))


def _snapshot_and_storage_metrics(st: dict):
    snaps = st.get("snapshots") or {}
    if not isinstance(snaps, dict):
        snaps = {}
    last = snaps.get("last")
    if not isinstance(last, dict):
        last = {}
    yield _counter("raftd_snapshots", "Snapshots this node has taken", snaps.get("count"))
    yield _gauge("raftd_snapshot_bytes", "Size of the latest snapshot this node took",
                 last.get("size", snaps.get("bytes")))
    transfers = CounterMetricFamily("raftd_snapshot_transfers",
                                    "Snapshot transfers to/from peers by result",
                                    labels=["result"])
    for result, n in sorted((snaps.get("transfers") or {}).items()):
        transfers.add_metric([str(result)], _num(n))
    yield transfers

    storage = st.get("storage") or {}
    yield _counter("raftd_wal_bytes_written", "Bytes appended to the write-ahead log",
                   storage.get("bytes_written"))
    yield _gauge("raftd_uptime_seconds", "Seconds since the node started", st.get("uptime_s"))
    contact = st.get("last_leader_contact_ms")
    if isinstance(contact, (int, float)):
        yield _gauge("raftd_last_leader_contact_seconds",
                     "Seconds since the last AppendEntries from the leader", contact / 1000)


def _peer_metrics(st: dict):
    role = st.get("role")
    lag = GaugeMetricFamily("raftd_peer_replication_lag_entries",
                            "Leader only: entries a peer is behind (last_log_index - "
                            "match_index)", labels=["peer"])
    if role == "leader":
        last = _num(st.get("last_log_index"))
        for peer, pr in sorted((st.get("progress") or {}).items()):
            lag.add_metric([str(peer)], max(0.0, last - _num((pr or {}).get("match_index"))))
    yield lag

    connected = GaugeMetricFamily("raftd_peer_connected",
                                  "1 while the link to the peer is connected", labels=["peer"])
    sent = CounterMetricFamily("raftd_peer_sent_messages",
                               "Messages sent to the peer", labels=["peer"])
    dropped = CounterMetricFamily("raftd_peer_dropped_messages",
                                  "Messages to the peer dropped (queue full or link down)",
                                  labels=["peer"])
    for peer, p in sorted((st.get("peers") or {}).items()):
        p = p or {}
        connected.add_metric([str(peer)], 1.0 if p.get("connected") else 0.0)
        sent.add_metric([str(peer)], _num(p.get("sent")))
        dropped.add_metric([str(peer)], _num(p.get("dropped")))
    yield connected
    yield sent
    yield dropped
