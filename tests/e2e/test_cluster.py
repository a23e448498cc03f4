"""Real raftd processes on 127.0.0.x: kill -9, restarts, catch-up, durability, bad bytes."""
from __future__ import annotations

import os
import socket
import time

import pytest

from raftd.client import Client

pytestmark = pytest.mark.e2e


def _all_values(cluster, nid, keys):
    c = Client([cluster.nodes[nid].address], timeout=5)
    try:
        items = c.list("k", linearizable=False)
    finally:
        c.close()
    return {k: items.get(k) for k in keys}


@pytest.mark.parametrize("n", [3, 5])
def test_writes_survive_kill9_of_the_leader(cluster_factory, n):
    cluster = cluster_factory(n).start()
    leader = cluster.wait_leader()
    acked = {}
    with cluster.client() as c:
        for i in range(500):
            acked[f"k{i:05d}"] = c.put(f"k{i:05d}", b"v%d" % i)
        cluster.nodes[leader].kill9()
        t0 = time.monotonic()
        new_leader = cluster.wait_leader(exclude={leader})
        elected_in = time.monotonic() - t0
        assert new_leader != leader and elected_in < 5, elected_in
        for i in range(500, 1000):
            acked[f"k{i:05d}"] = c.put(f"k{i:05d}", b"v%d" % i)
    cluster.nodes[leader].start()
    last = max(acked.values())
    cluster.wait_applied(last, list(cluster.nodes))
    for nid in cluster.nodes:
        values = _all_values(cluster, nid, acked)
        missing = [k for k, v in values.items() if v != b"v%d" % int(k[1:])]
        assert not missing, f"{nid} lost {len(missing)} acknowledged writes, e.g. {missing[:3]}"
        st = cluster.status(nid, digest=True)
        # every put applied exactly once: one put per key, no duplicate applied by a retry
        assert st["fsm"]["puts"] == len(acked), st["fsm"]
    digests = {cluster.status(nid, digest=True)["digest"] for nid in cluster.nodes}
    assert len(digests) == 1


@pytest.mark.parametrize("preallocate", [0, 65536], ids=["append", "preallocated-wal"])
def test_kill9_during_write_burst_recovers_its_log(cluster_factory, preallocate):
    cluster = cluster_factory(3, wal_preallocate_bytes=preallocate).start()
    leader = cluster.wait_leader()
    victim = next(nid for nid in cluster.nodes if nid != leader)
    import threading

    acked = {}
    stop = threading.Event()

    def writer():
        with cluster.client() as c:
            i = 0
            while not stop.is_set():
                acked[f"k{i:05d}"] = c.put(f"k{i:05d}", b"x" * 100)
                i += 1

    threads = [threading.Thread(target=writer) for _ in range(1)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    cluster.nodes[victim].kill9()  # mid-burst: its last fsync may be torn
    time.sleep(0.5)
    cluster.nodes[victim].start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) > 50
    cluster.wait_applied(max(acked.values()), list(cluster.nodes))
    values = _all_values(cluster, victim, acked)
    assert all(v == b"x" * 100 for v in values.values())


def test_full_cluster_restart_keeps_all_data(cluster_factory):
    cluster = cluster_factory(3).start()
    cluster.wait_leader()
    with cluster.client() as c:
        for i in range(100):
            c.put(f"k{i}", b"%d" % i)
        c.delete("k5")
        assert c.cas("k6", b"6", b"six")
    cluster.stop()
    for nid in ("n3", "n1", "n2"):  # any order
        cluster.nodes[nid].start()
        time.sleep(0.2)
    cluster.wait_leader()
    with cluster.client() as c:
        assert c.get("k5") is None
        assert c.get("k6") == b"six"
        assert c.get("k99") == b"99"
        assert len(c.list("k")) == 99


def test_garbage_bytes_do_not_disturb_a_live_node(cluster_factory):
    cluster = cluster_factory(3).start()
    leader = cluster.wait_leader()
    host, port = cluster.nodes[leader].address.rsplit(":", 1)
    import random

    rng = random.Random(7)
    frames = [os.urandom(rng.randint(1, 300)) for _ in range(30)]
    frames += [b"RD\x01\x20" + b"\xff\xff\xff\xff",  # oversized client request
               b"RD\x09\x20\x00\x00\x00\x01x",  # unsupported version
               b"RD\x01\x63\x00\x00\x00\x00",  # unknown frame type
               b"RD\x01\x01\x00\x00\x00\x03abc",  # raft message before HELLO
               b"GET / HTTP/1.1\r\n\r\n"]
    with cluster.client() as c:
        for i, junk in enumerate(frames):
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(junk)
                s.settimeout(1)
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass
            c.put(f"k{i}", b"ok")  # still serving between every bad connection
        assert c.get("k0") == b"ok"
    st = cluster.status(leader)
    assert st["counters"]["bad_frames"] >= 5
    assert "closing connection" in cluster.nodes[leader].log_text()


def test_version_mismatch_gets_an_error_frame(cluster_factory):
    from raftd.wire.codec import decode_body
    from raftd.wire.framing import FrameDecoder

    cluster = cluster_factory(1).start()
    cluster.wait_leader()
    host, port = cluster.endpoints[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"RD\x07\x20\x00\x00\x00\x00")
        data = s.recv(4096)
    ((ftype, body),) = FrameDecoder().feed(data)
    assert ftype == 34 and decode_body(body)["code"] == "version_mismatch"


def test_corrupt_log_refuses_to_start_naming_file_and_offset(cluster_factory):
    cluster = cluster_factory(1).start()
    cluster.wait_leader()
    with cluster.client() as c:
        for i in range(50):
            c.put(f"k{i}", b"v" * 50)
    cluster.stop()
    node = cluster.nodes["n1"]
    seg = sorted((node.data_dir / "wal").glob("*.wal"))[-1]
    data = bytearray(seg.read_bytes())
    off = len(data.rstrip(b"\0")) // 2  # inside the records, not the preallocated zeros after them
    data[off] ^= 0xFF
    seg.write_bytes(bytes(data))
    node.start()
    assert node.proc.wait(10) == 1
    log = node.log_text()
    assert "refusing to start" in log and str(seg) in log and "offset" in log
    line = next(ln for ln in log.splitlines() if "refusing to start" in ln)  # says what to do
    assert f"raftctl member replace --add NEWID={node.address} --remove n1" in line


def test_sigterm_on_the_leader_transfers_leadership_first(cluster_factory):
    """thesis §3.10: a planned stop of the leader hands over instead of timing out."""
    cluster = cluster_factory(3, election_timeout_ms=1000, heartbeat_interval_ms=100,
                              tick_ms=20).start()
    leader = cluster.wait_leader()
    with cluster.client() as c:
        c.put("before", b"1")
    t0 = time.monotonic()
    assert cluster.nodes[leader].stop() == 0
    new = cluster.wait_leader(exclude={leader}, timeout=10)
    took = time.monotonic() - t0
    assert "leadership transferred to" in cluster.nodes[leader].log_text()
    assert took < 1.5, took  # faster than an election timeout (1-2 s) plus an election
    with cluster.client() as c:
        assert c.get("before") == b"1"
    assert new != leader


def test_one_raftd_per_data_dir_and_offline_tools_refuse_a_live_one(cluster_factory):
    """A second raftd on the same data_dir is refused (two writers would interleave WAL
    records); `raftctl snapshot recover` refuses a live node's directory (opening its WAL runs
    recovery, which may truncate what the node is writing); kill -9 leaves no stale lock."""
    import subprocess
    import sys

    cluster = cluster_factory(1).start()
    cluster.wait_leader()
    node = cluster.nodes["n1"]
    with cluster.client() as c:
        c.put("k", b"v")
    second = subprocess.run([sys.executable, "-m", "raftd", "--config", str(node.config)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"data_dir {node.data_dir} is in use by another raftd (pid {node.proc.pid})" in \
        second.stderr, second.stderr
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "snapshot", "recover",
                        str(node.data_dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "in use by a running raftd" in r.stderr, r.stderr
    with cluster.client() as c:  # the first one never noticed
        assert c.get("k") == b"v"
    node.kill9()
    node.start()  # the kernel dropped the lock with the process
    cluster.wait_leader()
    with cluster.client() as c:
        assert c.get("k") == b"v"
    cluster.stop()
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "-o", "json", "snapshot",
                        "recover", str(node.data_dir)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr  # stopped: the survey runs
