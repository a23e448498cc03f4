"""A removed server left running must not flood the logs (issue 16, trial 6 finding 1).

Thesis §4.2.3: a removed server that keeps running times out and campaigns; pre-vote keeps it
from disrupting the cluster, but its peer links still reconnect.  Each reconnect is refused (the
id was removed, issue 19 §2).  It used to reconnect about 45 times a second, each time logging
"link is up" on the removed server and a refusal warning on every member: 2 MB of log in
4.5 minutes.  Now a link closed right after its HELLO keeps backing off, and both sides log it
rarely.
"""
from __future__ import annotations

import time

import pytest

from raftd.client import Client

pytestmark = pytest.mark.e2e

WATCH = 6.0  # seconds of logs counted after the removal


def test_a_removed_server_left_running_logs_little(cluster_factory):
    cluster = cluster_factory(3).start()
    leader = cluster.wait_leader()
    gone = next(n for n in cluster.nodes if n != leader)
    with Client(cluster.endpoints, timeout=30) as c:
        c.admin("change_config", {"add": {}, "remove": [gone], "promote": [], "learner": False})
    before = {nid: len(node.log_text().splitlines()) for nid, node in cluster.nodes.items()}
    time.sleep(WATCH)
    assert cluster.nodes[gone].running
    new = {nid: node.log_text().splitlines()[before[nid]:] for nid, node in cluster.nodes.items()}
    # A backing-off link retries about once a second at most, so a handful of lines each.
    for nid, lines in new.items():
        assert len(lines) <= 12, f"{nid} logged {len(lines)} lines in {WATCH}s:\n" + \
            "\n".join(lines[:20])
    with Client([cluster.nodes[n].address for n in cluster.nodes if n != gone], timeout=10) as c:
        c.put("still", b"serving")
