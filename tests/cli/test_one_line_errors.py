"""Issue 16 §11: errors are one line, also when a node's host drops connection attempts (a
machine that is off, a firewall): the status-based commands printed a 24-line "Task exception
was never retrieved" traceback after their one-line error."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

RAFTCTL = [sys.executable, "-m", "raftctl.main"]


@pytest.fixture
def silent_address():
    """host:port of a listener that never accepts and whose backlog is full: connection
    attempts get no answer at all (SYNs are dropped), as with a host that is off."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fill = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(srv.getsockname())
        fill.append(c)
    time.sleep(0.1)
    yield "%s:%d" % srv.getsockname()
    for c in fill:
        c.close()
    srv.close()


@pytest.mark.parametrize("command", [["status"], ["leader", "transfer"],
                                     ["kv", "get", "k", "--timeout", "1"]])
def test_an_unanswered_connection_attempt_gives_one_line(silent_address, command):
    r = subprocess.run(RAFTCTL + ["-e", silent_address, *command], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("raftctl: error: "), r.stderr
