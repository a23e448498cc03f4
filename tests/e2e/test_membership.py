"""Membership changes on real processes (Raft §6): grow, shrink, replace, refuse bad changes."""
from __future__ import annotations

import threading
import time

import pytest

from raftd.client import Client, ClientError, RequestError

pytestmark = pytest.mark.e2e


def change(cluster, timeout=60, **kw):
    args = {"add": {}, "remove": [], "promote": [], "learner": False, **kw}
    with Client(cluster.endpoints, timeout=timeout) as c:
        return c.admin("change_config", args)


def wait_started(node, timeout=10):
    import socket
    host, port = node.address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{node.id} did not start")


class Writer:
    """A client writing continuously; remembers every acknowledged write."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.acked: dict[str, int] = {}
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        i = 0
        with Client(self.cluster.endpoints, timeout=15) as c:
            while not self.stop.is_set():
                key = f"w{i:06d}"
                try:
                    self.acked[key] = c.put(key, key.encode())
                except ClientError:
                    self.errors += 1
                i += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


def check_acked(cluster, acked, nids):
    last = max(acked.values())
    cluster.wait_applied(last, nids, timeout=30)
    for nid in nids:
        with Client([cluster.nodes[nid].address], timeout=5) as c:
            items = c.list("w", linearizable=False)
        lost = [k for k in acked if items.get(k) != k.encode()]
        assert not lost, f"{nid} lost {len(lost)} acknowledged writes: {lost[:3]}"


def test_grow_3_to_5_then_shrink_removing_the_leader(cluster_factory):
    cluster = cluster_factory(3).start()
    cluster.wait_leader()
    with Writer(cluster) as w:
        for _ in range(2):
            node = cluster.add_join_node()
            wait_started(node)
            res = change(cluster, add={node.id: node.address})
            assert any("caught up" in p for p in res["phases"]), res
            assert node.id in res["configuration"]["voters"]
        assert sorted(res["configuration"]["voters"]) == ["n1", "n2", "n3", "n4", "n5"]
        time.sleep(0.5)
        leader = cluster.wait_leader()
        others = [n for n in ("n1", "n2", "n3") if n != leader]
        res = change(cluster, remove=[leader, others[0]])
        assert sorted(res["configuration"]["voters"]) == sorted(
            {"n1", "n2", "n3", "n4", "n5"} - {leader, others[0]})
        new_leader = cluster.wait_leader(exclude={leader, others[0]})
        assert new_leader in res["configuration"]["voters"]
        time.sleep(0.5)
    assert len(w.acked) > 20
    check_acked(cluster, w.acked, res["configuration"]["voters"])
    st = cluster.status(new_leader)
    assert st["configuration"]["joint"] is False
    assert sorted(st["configuration"]["voters"]) == sorted(res["configuration"]["voters"])


def test_replace_all_three_members_while_writing(cluster_factory):
    cluster = cluster_factory(3).start()
    cluster.wait_leader()
    new = [cluster.add_join_node() for _ in range(3)]
    for n in new:
        wait_started(n)
    with Writer(cluster) as w:
        time.sleep(0.5)
        res = change(cluster, add={n.id: n.address for n in new}, remove=["n1", "n2", "n3"])
        assert "joint configuration C_old,new committed" in res["phases"]
        assert sorted(res["configuration"]["voters"]) == ["n4", "n5", "n6"]
        time.sleep(1.0)
    for nid in ("n1", "n2", "n3"):
        cluster.nodes[nid].stop()
    leader = cluster.wait_leader()
    assert leader in {"n4", "n5", "n6"}
    check_acked(cluster, w.acked, ["n4", "n5", "n6"])


def test_kill_the_leader_right_after_a_change(cluster_factory):
    cluster = cluster_factory(3).start()
    cluster.wait_leader()
    node = cluster.add_join_node()
    wait_started(node)
    change(cluster, add={node.id: node.address})
    leader = cluster.wait_leader()
    cluster.nodes[leader].kill9()
    new_leader = cluster.wait_leader(exclude={leader})
    st = cluster.status(new_leader)
    assert sorted(st["configuration"]["voters"]) == ["n1", "n2", "n3", "n4"]
    cluster.nodes[leader].start()
    with cluster.client() as c:
        idx = c.put("after", b"x")
    cluster.wait_applied(idx, list(cluster.nodes))


def test_bad_changes_are_refused_before_anything_is_logged(cluster_factory):
    cluster = cluster_factory(3).start()
    leader = cluster.wait_leader()
    before = cluster.status(leader)["last_log_index"]
    cases = [
        ({"remove": ["n9"]}, "not a member"),
        ({"add": {"n2": "127.0.0.1:1"}}, "already a member"),
        ({"add": {"n7": cluster.nodes["n1"].address}}, "already used by n1"),
        ({"remove": ["n1", "n2", "n3"]}, "no voters"),
        ({"add": {"n7": "127.0.0.1:1"}}, "unreachable"),
        ({"promote": ["n2"]}, "not a learner"),
    ]
    for args, words in cases:
        with pytest.raises(RequestError) as e:
            change(cluster, timeout=10, **args)
        assert words in str(e.value), (args, str(e.value))
    assert cluster.status(leader)["last_log_index"] == before  # nothing was logged


def test_one_change_at_a_time(cluster_factory):
    cluster = cluster_factory(3).start()
    cluster.wait_leader()
    a, b = cluster.add_join_node(), cluster.add_join_node()
    wait_started(a)
    wait_started(b)
    results = {}

    def run(node):
        try:
            results[node.id] = change(cluster, add={node.id: node.address})
        except RequestError as e:
            results[node.id] = e

    threads = [threading.Thread(target=run, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    refused = [r for r in results.values() if isinstance(r, RequestError)]
    done = [r for r in results.values() if isinstance(r, dict)]
    assert len(done) >= 1
    for r in refused:
        assert r.code == "change_in_progress" and "in progress" in str(r)


def test_a_server_that_accepts_but_never_answers_is_refused_before_anything_is_logged(
        cluster_factory):
    """A new server that is reachable but paused (the kernel accepts, nothing answers) would
    never catch up (thesis §4.2.1); since the leader asks each new server's status first
    (issue 14 §9), the change is refused before anything is logged and the old configuration
    stays in force."""
    cluster = cluster_factory(3, catchup_round_timeout_ms=1500).start()
    leader = cluster.wait_leader()
    node = cluster.add_join_node()
    wait_started(node)
    node.pause()  # accepts connections (the kernel does) but never answers
    try:
        with pytest.raises(RequestError) as e:
            change(cluster, timeout=30, add={node.id: node.address})
        assert e.value.code == "unreachable" and "nothing was changed" in str(e.value)
    finally:
        node.resume()
    st = cluster.status(cluster.wait_leader())
    assert sorted(st["configuration"]["voters"]) == ["n1", "n2", "n3"]
    assert st["configuration"]["learners"] == [] and not st["configuration"]["joint"]
    assert leader


def test_a_learner_that_cannot_catch_up_aborts_the_change(cluster_factory):
    """thesis §4.2.1: a new server that never catches up aborts the change and leaves the old
    configuration in force.  This one answers its status but refuses every AppendEntries
    carrying the cluster's 64 KiB value (its max_frame_size is 16 KiB)."""
    cluster = cluster_factory(3, catchup_round_timeout_ms=1500).start()
    leader = cluster.wait_leader()
    with cluster.client() as c:
        c.put("big", b"x" * 65536)
    node = cluster.add_join_node(max_frame_size=16384)
    wait_started(node)
    with pytest.raises(RequestError) as e:
        change(cluster, timeout=30, add={node.id: node.address})
    assert e.value.code == "catch_up_failed" and "old configuration" in str(e.value)
    st = cluster.status(cluster.wait_leader())
    assert sorted(st["configuration"]["voters"]) == ["n1", "n2", "n3"]
    assert st["configuration"]["learners"] == [] and not st["configuration"]["joint"]
    assert leader


def test_new_member_of_a_compacted_cluster_catches_up_by_snapshot(cluster_factory):
    """Raft §7: the leader's log no longer starts at 1, so a new server can only be caught up
    with InstallSnapshot before it becomes a voter."""
    cluster = cluster_factory(3, snapshot_entries=100, snapshot_trailing=10).start()
    cluster.wait_leader()
    cluster.fill({f"k{i:04d}": b"v" for i in range(400)})
    leader = cluster.wait_leader()
    assert cluster.status(leader)["first_log_index"] > 1
    node = cluster.add_join_node()
    wait_started(node)
    res = change(cluster, add={node.id: node.address})
    assert node.id in res["configuration"]["voters"]
    st = cluster.status(node.id)
    assert st["snapshots"]["transfers"]["received"] >= 1 and st["snapshot_index"] > 0
    assert st["keys"] == 400


def test_transfer_to_a_new_member_with_a_voter_down(cluster_factory):
    """n3 is down; n4 joins; leadership goes to n4.  n4 has never talked to n2 before its
    transfer election, and that election is one-shot (TimeoutNow, no pre-vote): its first
    RequestVote to n2 must not be lost while the link to n2 is being made (3 of 4 needed)."""
    c = cluster_factory(3).start()
    c.wait_leader()
    c.nodes["n3"].stop()
    n4 = c.add_join_node()
    deadline = time.monotonic() + 10
    while c.status("n4") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with c.client(timeout=30) as cl:
        cl.admin("change_config", {"add": {"n4": n4.address}})
        cl.put("x", b"1")
        term = c.status(c.wait_leader())["term"]
        cl.admin("transfer_leader", {"target": "n4"})
    deadline = time.monotonic() + 5
    while (c.status("n4") or {}).get("role") != "leader":
        assert time.monotonic() < deadline, ("n4 did not become leader", c.logs_tail())
        time.sleep(0.05)
    # Won by the transfer election itself, not by a later ordinary one.
    assert c.status("n4")["term"] == term + 1



def test_a_change_whose_entry_compaction_passed_while_it_waited_succeeds(cluster_factory):
    """Issue 14 §8 bullet 3: while a change waits for C_old,new and then C_new to commit,
    writes keep coming and snapshots (every 10 entries, none kept behind) compact the log past
    the joint entry.  The entry is still ours (Leader Append-Only, Raft §5.3): the change
    succeeds instead of failing with leadership_lost.  A long tick (the change checks once a
    tick) gives compaction time to pass the entry between two checks; whether it did is read
    from the leader's events, and up to three changes are made until one of them was so."""
    c = cluster_factory(5, tick_ms=100, election_timeout_ms=1000, heartbeat_interval_ms=300,
                        snapshot_entries=10, snapshot_trailing=0, snapshot_keep=1,
                        fsync=False).start()
    leader = c.wait_leader()
    stop = threading.Event()
    written: list[int] = []

    def fill() -> None:
        while not stop.is_set() and len(written) < 100:
            n = len(written)
            c.fill({f"w{n:03d}-{i:03d}": b"x" for i in range(256)})
            written.append(n)

    filler = threading.Thread(target=fill, daemon=True)
    filler.start()
    passed = []
    try:
        for gone in [n for n in c.nodes if n != leader][:3]:
            deadline = time.monotonic() + 20
            while (st := c.status(leader))["snapshot_index"] < 20:
                assert time.monotonic() < deadline, st
                time.sleep(0.05)
            r = change(c, remove=[gone])
            assert gone not in r["configuration"]["voters"], r
            if _compaction_passed_the_change(c.status(leader)["events"]):
                passed.append(gone)
                break
    finally:
        stop.set()
        filler.join(60)
    assert passed, "compaction never passed a change's entry while it waited: no test"
    assert c.wait_leader() == leader
    with Client(c.endpoints, timeout=10) as cl:
        assert cl.get(f"w{written[-1]:03d}-255") == b"x"


def _compaction_passed_the_change(events: list[dict]) -> bool:
    """The newest change's events: a snapshot above its (joint) entry's index was taken
    after it was proposed and before it was reported committed."""
    import re
    texts = [e["text"] for e in events]
    start = max(i for i, t in enumerate(texts) if t.startswith("proposed "))
    end = max(i for i, t in enumerate(texts) if t.startswith("configuration committed"))
    joint = int(re.search(r"at index (\d+)", texts[start]).group(1))
    snaps = [int(m.group(1)) for t in texts[start:end]
             if (m := re.match(r"snapshot at index (\d+)", t))]
    return any(s > joint for s in snaps)
