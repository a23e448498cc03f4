"""RaftMetrics: a real HTTP /metrics endpoint on port 0, scraped and parsed like Prometheus."""
from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftd.runtime.metrics import RaftMetrics


def leader_status(**over) -> dict:
    st = {
        "id": "n1", "role": "leader", "term": 7, "leader": "n1",
        "commit_index": 120, "applied_index": 118, "last_log_index": 125,
        "first_log_index": 1, "snapshot_index": 0, "keys": 42,
        "progress": {"n2": {"match_index": 125, "next_index": 126, "state": "replicate"},
                     "n3": {"match_index": 100, "next_index": 101, "state": "probe"}},
        "last_leader_contact_ms": 0, "uptime_s": 12.5,
        "counters": {"proposals": 130, "fsyncs": 55, "fsync_seconds": 0.2,
                     "leader_changes": 2, "bad_frames": 1, "client_requests": 300},
        "storage": {"fsyncs": 55, "bytes_written": 4096},
        "peers": {"n2": {"connected": True, "dropped": 0, "sent": 500},
                  "n3": {"connected": False, "dropped": 17, "sent": 80}},
        "events": [],
    }
    st.update(over)
    return st


def scrape(port: int) -> dict:
    """{sample name: [(labels, value)]} of everything /metrics serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: dict, name: str, **labels) -> float:
    matches = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x
                                                           for k, x in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


@pytest.fixture
def metrics():
    current = {"st": leader_status()}
    m = RaftMetrics(lambda: current["st"])
    m.current = current
    yield m
    m.stop()


def test_scrape_leader_status(metrics):
    port = metrics.start("127.0.0.1", 0)
    assert port > 0 and metrics.port == port
    s = scrape(port)
    assert value(s, "raftd_term") == 7
    assert value(s, "raftd_is_leader") == 1
    assert value(s, "raftd_role", role="leader") == 1
    for r in ("follower", "candidate", "pre-candidate", "learner"):
        assert value(s, "raftd_role", role=r) == 0
    assert value(s, "raftd_commit_index") == 120
    assert value(s, "raftd_applied_index") == 118
    assert value(s, "raftd_last_log_index") == 125
    assert value(s, "raftd_snapshot_index") == 0
    assert value(s, "raftd_keys") == 42
    assert value(s, "raftd_leader_changes_total") == 2
    assert value(s, "raftd_proposals_total") == 130
    assert value(s, "raftd_fsyncs_total") == 55
    assert value(s, "raftd_bad_frames_total") == 1
    assert value(s, "raftd_client_requests_total") == 300
    # no "snapshots" section yet: present and 0
    assert value(s, "raftd_snapshots_total") == 0
    assert value(s, "raftd_snapshot_bytes") == 0
    assert value(s, "raftd_peer_replication_lag_entries", peer="n2") == 0
    assert value(s, "raftd_peer_replication_lag_entries", peer="n3") == 25
    assert value(s, "raftd_peer_dropped_messages_total", peer="n3") == 17
    assert value(s, "raftd_peer_dropped_messages_total", peer="n2") == 0
    assert value(s, "raftd_peer_connected", peer="n2") == 1
    assert value(s, "raftd_peer_connected", peer="n3") == 0
    assert value(s, "raftd_wal_bytes_written_total") == 4096
    assert value(s, "raftd_uptime_seconds") == 12.5


def test_follower_cached_update_and_snapshots(metrics):
    port = metrics.start("127.0.0.1", 0)
    # Once the server calls update(), scrapes use the cached dict, never status_fn.
    metrics.status_fn = lambda: pytest.fail("status_fn called from the HTTP thread")
    metrics.update(leader_status(role="follower", leader="n2", term=8, progress={},
                                 last_leader_contact_ms=250,
                                 snapshots={"count": 3, "in_progress": False,
                                            "last": {"index": 100, "size": 9000},
                                            "transfers": {"sent": 0, "received": 2,
                                                          "failed": 1}}))
    s = scrape(port)
    assert value(s, "raftd_is_leader") == 0
    assert value(s, "raftd_role", role="follower") == 1
    assert value(s, "raftd_role", role="leader") == 0
    assert value(s, "raftd_term") == 8
    assert "raftd_peer_replication_lag_entries" not in s  # leader only
    assert value(s, "raftd_snapshots_total") == 3
    assert value(s, "raftd_snapshot_bytes") == 9000
    assert value(s, "raftd_snapshot_transfers_total", result="received") == 2
    assert value(s, "raftd_snapshot_transfers_total", result="failed") == 1
    assert value(s, "raftd_last_leader_contact_seconds") == 0.25
    assert 0 <= value(s, "raftd_status_age_seconds") < 5


def test_maybe_refresh_rate_limits(metrics):
    calls = []
    metrics.status_fn = lambda: calls.append(1) or leader_status(term=len(calls))
    assert metrics.maybe_refresh(now=100.0) is True
    assert metrics.maybe_refresh(now=100.1) is False
    assert metrics.maybe_refresh(now=100.6) is True
    assert len(calls) == 2
    port = metrics.start("127.0.0.1", 0)
    assert value(scrape(port), "raftd_term") == 2


def test_histograms_and_http(metrics):
    port = metrics.start("127.0.0.1", 0)
    metrics.observe_fsync(0.0004)
    metrics.observe_fsync(0.003)
    metrics.observe_fsync(0.2)
    metrics.observe_append_rtt("n2", 0.0008)
    metrics.observe_append_rtt("n3", 0.04)
    metrics.observe_append_rtt("n3", 0.06)
    s = scrape(port)
    assert value(s, "raftd_fsync_seconds_count") == 3
    assert value(s, "raftd_fsync_seconds_sum") == pytest.approx(0.2034)
    assert value(s, "raftd_fsync_seconds_bucket", le="0.0005") == 1
    assert value(s, "raftd_fsync_seconds_bucket", le="0.005") == 2
    assert value(s, "raftd_fsync_seconds_bucket", le="+Inf") == 3
    assert value(s, "raftd_append_entries_seconds_count", peer="n2") == 1
    assert value(s, "raftd_append_entries_seconds_count", peer="n3") == 2
    assert value(s, "raftd_append_entries_seconds_bucket", peer="n3", le="0.05") == 1
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
    assert e.value.code == 404


def test_registries_are_independent_and_stop_frees_the_port():
    a = RaftMetrics(lambda: leader_status(term=1))
    b = RaftMetrics(lambda: leader_status(term=2))
    pa, pb = a.start("127.0.0.1", 0), b.start("127.0.0.1", 0)
    try:
        a.observe_fsync(0.01)
        sa, sb = scrape(pa), scrape(pb)
        assert value(sa, "raftd_term") == 1 and value(sb, "raftd_term") == 2
        assert value(sa, "raftd_fsync_seconds_count") == 1
        assert value(sb, "raftd_fsync_seconds_count") == 0
    finally:
        a.stop()
        b.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{pa}/metrics", timeout=2)
    assert not [t for t in threading.enumerate() if t.name == "raftd-metrics"]


def test_status_fn_failure_is_a_500_not_a_dead_server():
    def broken():
        raise RuntimeError("boom")
    m = RaftMetrics(broken)
    port = m.start("127.0.0.1", 0)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert e.value.code == 500
        m.update(leader_status())
        assert value(scrape(port), "raftd_term") == 7
    finally:
        m.stop()


def test_live_node_serves_metrics(cluster_factory):
    """A real raftd with metrics_listen: scraped over HTTP and parsed by prometheus-client."""
    import time as _time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.e2e.harness import free_port

    port = free_port("127.0.0.1")
    cluster = cluster_factory(1, metrics_listen=f"127.0.0.1:{port}").start()
    cluster.wait_leader()
    with cluster.client() as c:
        for i in range(20):
            c.put(f"k{i}", b"v")
    deadline = _time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
        commit = fams["raftd_commit_index"].samples[0].value
        if commit >= 20 or _time.monotonic() > deadline:
            break
        _time.sleep(0.2)
    assert commit >= 20
    assert fams["raftd_is_leader"].samples[0].value == 1
    fsync = [s for s in fams["raftd_fsync_seconds"].samples if s.name.endswith("_count")]
    assert fsync and fsync[0].value >= 1
