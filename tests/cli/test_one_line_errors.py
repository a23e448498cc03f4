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


@pytest.mark.parametrize("command", [["inspect"], ["restore", "--dir", "new", "--base-port", "1"]])
def test_a_backup_file_that_is_a_directory_or_missing_is_one_clear_line(tmp_path, command):
    for given, why in ((tmp_path, f"{tmp_path} is a directory; give a backup file (written "
                                  f"by raftctl snapshot save FILE)"),
                       (tmp_path / "missing.snap", f"no such file: {tmp_path}/missing.snap")):
        args = [command[0], str(given), *command[1:]]
        r = subprocess.run(RAFTCTL + ["snapshot", *args], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        assert (r.returncode, r.stderr) == (2, f"raftctl: error: {why}\n"), r.stderr
        assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", [["kv", "get", "k"], ["kv", "put", "k", "v"]])
def test_a_name_that_does_not_resolve_fails_as_fast_as_a_refused_connection(command):
    """Trial 6 of issue 16: `-e nosuchhost.invalid:7001 kv get k` (any port) retried for the whole
    timeout (29 attempts, 5.4 s).  A name that does not exist (EAI_NONAME) is given up on like
    a refused connection: nothing was sent.  (Nothing connects: the name never resolves.)"""
    try:
        socket.getaddrinfo("nosuchhost.invalid", 1)
        pytest.skip("this resolver answers for .invalid names")
    except socket.gaierror as e:
        if e.errno != socket.EAI_NONAME:
            pytest.skip(f"this resolver fails differently for .invalid names: {e}")
    start = time.monotonic()
    r = subprocess.run(RAFTCTL + ["-e", "nosuchhost.invalid:1", *command, "--timeout", "30"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stderr.count("\n") == 1 and "attempts" not in r.stderr, r.stderr
    assert time.monotonic() - start < 15  # gave up well before the 30 s timeout
