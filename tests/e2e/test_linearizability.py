"""Concurrent clients against a 5-node cluster under kill -9, SIGSTOP/SIGCONT and network
partitions (nftables on 127.0.0.x); the recorded history must be linearizable (Wing & Gong
with Lowe's memoisation, raftd/simrt/lincheck.py)."""
from __future__ import annotations

import random
import threading
import time

import pytest

from raftd.client import Client, ClientError
from raftd.simrt.lincheck import History, check_linearizable

from .harness import Firewall, nft_available

pytestmark = pytest.mark.e2e

KEYS = [f"r{i}" for i in range(6)]


def _client_loop(cluster, history, cid, stop, counts):
    rng = random.Random(cid)
    n = 0
    with Client(cluster.endpoints, timeout=3) as c:
        while not stop.is_set():
            key = rng.choice(KEYS)
            roll = rng.random()
            n += 1
            value = f"{cid}-{n}".encode()
            if rng.random() < 0.3:
                # Forget the leader now and then: requests then land on any node, so a node
                # that answered reads from its own (possibly stale) state would be caught.
                c._async._leader = None
            if roll < 0.45:
                op = history.invoke(cid, "get", key)
                try:
                    history.ok(op, c.get(key))
                    counts["ok"] += 1
                except ClientError:
                    history.fail(op)  # a read that failed had no effect
            else:
                kind = "put" if roll < 0.8 else ("cas" if roll < 0.93 else "delete")
                expected = None
                if kind == "cas":
                    expected = f"{rng.randrange(8)}-{rng.randrange(1, 40)}".encode() \
                        if rng.random() < 0.7 else None
                op = history.invoke(cid, kind, key, value if kind != "delete" else None,
                                    expected)
                try:
                    if kind == "put":
                        c.put(key, value)
                        history.ok(op, None)
                    elif kind == "cas":
                        history.ok(op, c.cas(key, expected, value))
                    else:
                        history.ok(op, c.delete(key))
                    counts["ok"] += 1
                except ClientError:
                    history.unknown(op)  # may or may not have been applied
                    counts["unknown"] += 1


def _nemesis(cluster, stop, rng, log, use_nft):
    fw = Firewall(f"raftd_lin_{random.Random().randrange(1 << 30)}") if use_nft else None
    nodes = list(cluster.nodes.values())
    try:
        while not stop.is_set():
            time.sleep(0.6)
            victim = rng.choice(nodes)
            fault = rng.choice(["kill", "pause", "partition"] if fw else ["kill", "pause"])
            log.append(f"{fault} {victim.id}")
            if fault == "kill":
                victim.kill9()
                time.sleep(1.0)
                victim.start()
            elif fault == "pause":
                victim.pause()
                time.sleep(1.0)
                victim.resume()
            else:
                others = [n for n in nodes if n is not victim]
                fw.cut([(victim.host, o.host) for o in others] +
                       [(o.host, victim.host) for o in others])
                time.sleep(1.2)
                fw.heal()
            time.sleep(0.8)
    finally:
        if fw:
            fw.heal()
        for n in nodes:
            if n.running:
                n.resume()


@pytest.mark.parametrize("seed", [1])
def test_history_is_linearizable_under_faults(cluster_factory, seed):
    cluster = cluster_factory(5).start()
    cluster.wait_leader()
    history = History()
    stop = threading.Event()
    counts = {"ok": 0, "unknown": 0}
    faults: list[str] = []
    clients = [threading.Thread(target=_client_loop, args=(cluster, history, i, stop, counts))
               for i in range(6)]
    nemesis = threading.Thread(target=_nemesis,
                               args=(cluster, stop, random.Random(seed), faults, nft_available()))
    for t in clients:
        t.start()
    nemesis.start()
    time.sleep(15)
    stop.set()
    nemesis.join(30)
    for t in clients:
        t.join(30)
    for n in cluster.nodes.values():
        if not n.running:
            n.start()
    ops = history.snapshot()
    assert counts["ok"] > 100, (counts, faults)
    assert len(faults) >= 5
    result = check_linearizable(ops, timeout_s=60)
    assert not result.timed_out, "checker ran out of time: inconclusive"
    assert result.ok, f"not linearizable (faults: {faults}):\n{result.explanation}"
    cluster.wait_leader()  # and the cluster recovered
