"""Well-formed but forged Raft messages over a real connection to a real raftd (issue 19 §3,
§6, §7).  The core refuses them (tests/core/test_hostile_peers.py drives it directly); these
show the same over the wire: a plaintext peer says HELLO with a member's id (docs/SECURITY.md)
and sends raw raft frames.  Each test then checks that the node is alive, that every key written
before reads back linearizably, and that other clients are served."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from raftd.client import AsyncClient
from raftd.core import AppendEntries, AppendEntriesResponse, RequestVote, TimeoutNow
from raftd.wire.codec import encode_hello
from tests.security.test_hostile_frames import _raw_message

pytestmark = pytest.mark.timeout(120)

KEYS = {f"k{i}": b"v%d" % i for i in range(20)}


def _as_peer(c, target: str, claimed: str, msgs: list, gap: float = 0.0) -> None:
    """Say HELLO to ``target`` as ``claimed`` and send ``msgs`` as raw frames (``gap``: seconds
    between them, so each is stepped on its own); then close."""
    st = c.status(target)
    host, port = c.nodes[target].address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(encode_hello(claimed, "raftd", None, st["cluster_id"]))
        for m in msgs:
            s.sendall(_raw_message(m))
            if gap:
                time.sleep(gap)
        time.sleep(0.2)  # let the node read them before the connection closes


def _wait_refused(c, nid: str, at_least: int, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = c.status(nid)
        assert st is not None, f"{nid} stopped:\n{c.logs_tail()}"
        if st["refused_messages"] >= at_least or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def _intact_and_serving(c, leader: str | None = None) -> None:
    """Every node alive, every key written before reads back (linearizable reads), a new write
    commits, and (when given) the leader is the same."""
    for n in c.nodes.values():
        assert n.running, f"{n.id} stopped:\n{c.logs_tail()}"
    if leader is not None:
        assert c.wait_leader() == leader
    with c.client(timeout=30) as cl:
        for k, v in KEYS.items():
            assert cl.get(k) == v, k
        cl.put("after", b"ok")
        assert cl.get("after") == b"ok"


def _cluster(cluster_factory, **tuning):
    c = cluster_factory(3, **tuning).start()
    leader = c.wait_leader()
    c.fill(KEYS)
    return c, leader


def test_forged_acks_above_what_was_sent_commit_nothing(cluster_factory):
    """§3: the leader holds entries it sent to no follower (both paused, a window of one
    message of two entries); n2's id acks the leader's last index, then one past its end.
    Before the fix the first committed entries no follower held and the second stopped the
    leader (LogCorruptionError)."""
    c, leader = _cluster(cluster_factory, check_quorum=False, max_append_entries=2,
                         max_inflight_msgs=1)
    f1, f2 = (n for n in c.nodes if n != leader)
    st = c.status(leader)
    commit0 = st["commit_index"]
    for f in (f1, f2):
        c.nodes[f].pause()
    pending = {f"p{i}": b"w%d" % i for i in range(10)}
    writer = _put_in_background(c.nodes[leader].address, pending)
    try:
        deadline = time.monotonic() + 10
        while c.status(leader)["last_log_index"] < commit0 + len(pending):
            assert time.monotonic() < deadline, c.status(leader)
            time.sleep(0.05)
        st = c.status(leader)
        last, refused = st["last_log_index"], st["refused_messages"]
        _as_peer(c, leader, f1, [
            AppendEntriesResponse(f1, leader, st["term"], True, last),       # inside the log
            AppendEntriesResponse(f1, leader, st["term"], True, last + 50),  # past its end
        ])
        st = _wait_refused(c, leader, refused + 2)
        assert st["refused_messages"] == refused + 2
        assert st["commit_index"] == commit0, "committed entries that no follower holds"
        assert st["role"] == "leader" and st["progress"][f1]["match_index"] <= commit0
    finally:
        for f in (f1, f2):
            c.nodes[f].resume()
    writer.join(30)
    assert writer.ok, writer.error
    _intact_and_serving(c)
    with c.client() as cl:
        assert cl.get("p9") == b"w9"


def test_a_huge_leader_commit_from_a_fake_leader_changes_nothing(cluster_factory):
    """§6: a heartbeat in the leader's name and term whose leader_commit is 2**40.  Figure 2
    step 5 (commit up to min(leaderCommit, last new entry)) keeps the follower's commit at
    what it holds and verified; before, a fake leader_commit made it diverge for good and it
    and the leader then exchanged thousands of messages a second.  Measured here: the peer
    messages the leader and the victim send in 2 s, before and after."""
    c, leader = _cluster(cluster_factory)
    victim = next(n for n in c.nodes if n != leader)
    before = _peer_messages_in(c, [leader, victim], 2.0)
    st = c.status(victim)
    _as_peer(c, victim, leader, [AppendEntries(leader, victim, st["term"], st["last_log_index"],
                                               st["term"], (), 2**40)])
    after_st = c.status(victim)
    assert after_st is not None, c.logs_tail()
    assert after_st["commit_index"] <= after_st["last_log_index"], after_st
    assert after_st["term"] == st["term"]
    after = _peer_messages_in(c, [leader, victim], 2.0)
    assert after <= 2 * before + 50, f"{before} peer messages in 2 s before, {after} after"
    _intact_and_serving(c, leader)
    _same_state_everywhere(c)


def test_rejections_below_the_acked_index_cause_no_message_storm(cluster_factory):
    """§6, the storm: a follower whose rejections contradict what it acked (prev at or below
    match_index: a diverged or lying follower) used to get a new probe at once for each, for
    ever (about 5,300 messages/s).  Now such a rejection waits for the next heartbeat.  The
    real follower is paused, so the leader hears only the forged answers in its name; counted:
    the messages the leader sends it in 0.5 s, with and without 100 forged rejections."""
    c, leader = _cluster(cluster_factory)
    f, _ = (n for n in c.nodes if n != leader)
    c.nodes[f].pause()
    try:
        with c.client() as cl:
            for i in range(5):
                cl.put(f"x{i}", b"y")  # committed with the other follower; in flight to f
        st = c.status(leader)
        term, last, match = st["term"], st["last_log_index"], st["progress"][f]["match_index"]
        assert match < last, st["progress"]
        quiet = _messages_to(c, leader, f, lambda: time.sleep(0.5))
        # One rejection of an index in flight: f goes back to PROBE at match + 1 ...
        first = AppendEntriesResponse(f, leader, term, False, 0, reject_index=last)
        # ... then each rejects prev = match, which it acked before.
        lies = [AppendEntriesResponse(f, leader, term, False, 0, reject_index=match)] * 100
        stormy = _messages_to(c, leader, f,
                              lambda: _as_peer(c, leader, f, [first] + lies, gap=0.005))
        assert c.status(leader)["role"] == "leader"
        assert stormy <= 2 * quiet + 10, f"{quiet} messages to {f} in 0.5 s, {stormy} with lies"
    finally:
        c.nodes[f].resume()
    _intact_and_serving(c, leader)


def test_transfer_votes_and_timeout_now_from_non_voters_move_no_term(cluster_factory):
    """§7: a RequestVote flagged as a leadership transfer (which bypasses vote withholding,
    thesis §3.10) from an id that is no voter, and TimeoutNow from that id or from a voter that
    does not lead this term: no election, no term change, the leader stays.  Before the fix
    either one deposed the leader or forced an election."""
    c, leader = _cluster(cluster_factory)
    f1, f2 = (n for n in c.nodes if n != leader)
    st = c.status(leader)
    term, last = st["term"], st["last_log_index"]
    refused = {n: c.status(n)["refused_messages"] for n in c.nodes}
    vote = RequestVote("n9", leader, term + 1, last + 10, term, transfer=True)
    _as_peer(c, leader, "n9", [vote])
    _as_peer(c, f1, "n9", [RequestVote("n9", f1, term + 1, last + 10, term, transfer=True),
                           TimeoutNow("n9", f1, term), TimeoutNow("n9", f1, term + 3)])
    _as_peer(c, f2, f1, [TimeoutNow(f1, f2, term)])  # a voter, not the leader of this term
    _wait_refused(c, f1, refused[f1] + 2)
    _wait_refused(c, f2, refused[f2] + 1)
    time.sleep(1.0)  # several election timeouts: a forced election would have happened
    for n in c.nodes:
        s = c.status(n)
        assert s["term"] == term, (n, s["term"], term)
        assert s["leader"] == leader, (n, s["leader"])
    assert c.status(f1)["refused_messages"] == refused[f1] + 2
    assert c.status(f2)["refused_messages"] == refused[f2] + 1
    _intact_and_serving(c, leader)


# ------------------------------------------------------------------------------ helpers --
class _Writer(threading.Thread):
    def __init__(self, address: str, keys: dict[str, bytes]):
        super().__init__(daemon=True)
        self.address, self.keys = address, keys
        self.ok, self.error = False, None

    def run(self) -> None:
        async def go() -> None:
            async with AsyncClient([self.address], timeout=60) as cl:
                await asyncio.gather(*(cl.put(k, v) for k, v in self.keys.items()))
        try:
            asyncio.run(go())
            self.ok = True
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def _put_in_background(address: str, keys: dict[str, bytes]) -> _Writer:
    w = _Writer(address, keys)
    w.start()
    return w


def _messages_to(c, nid: str, peer: str, during) -> int:
    """Messages ``nid`` sent (or dropped) to ``peer`` while ``during()`` ran."""
    def count() -> int:
        p = c.status(nid)["peers"][peer]
        return p["sent"] + p["dropped"]
    n0 = count()
    during()
    return count() - n0


def _peer_messages_in(c, nids: list[str], seconds: float) -> int:
    def sent() -> int:
        return sum(p["sent"] for n in nids for p in c.status(n)["peers"].values())
    s0 = sent()
    time.sleep(seconds)
    return sent() - s0


def _same_state_everywhere(c) -> None:
    with c.client() as cl:
        index = cl.put("sync", b"1")
    c.wait_applied(index)
    deadline = time.monotonic() + 10
    while True:
        sts = {n: c.status(n, digest=True) for n in c.nodes}
        at = {s["applied_index"] for s in sts.values()}
        digests = {s["digest"] for s in sts.values()}
        if len(at) == 1 and len(digests) == 1:
            return
        assert time.monotonic() < deadline, {n: (s["applied_index"], s["digest"])
                                             for n, s in sts.items()}
        time.sleep(0.1)
