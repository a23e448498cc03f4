"""Issue 16, trial 6, what needs no cluster: bad --dir inputs of `raftctl local` (item C)."""
from __future__ import annotations

import socket
import threading

import pytest
from typer.testing import CliRunner

from raftctl import main


def invoke(*args):
    return CliRunner().invoke(main.app, list(args))


@pytest.mark.parametrize("text, said", [
    ("nodes: [oops\n", "not valid YAML: expected ',' or ']'"),
    ("hello\n", "not a raftctl cluster file"),
    ("nodes:\n  - {id: n1}\n", "not a raftctl cluster file"),
])
@pytest.mark.parametrize("cmd", [["up"], ["down"], ["add"], ["remove", "n1"]])
def test_a_corrupt_cluster_file_is_one_line_naming_it(tmp_path, text, said, cmd):
    (tmp_path / "cluster.yaml").write_text(text)
    r = invoke("local", *cmd, "--dir", str(tmp_path))
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and str(tmp_path / "cluster.yaml") in r.stderr, r.stderr
    assert said in r.stderr and "attribute" not in r.stderr


def test_a_file_or_a_missing_dir_is_a_usage_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in ("up", "down"):
        r = invoke("local", cmd, "--dir", str(afile))
        assert r.exit_code == 2 and "is not a directory" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1
    assert afile.read_text() == "x"
    r = invoke("local", "down", "--dir", str(tmp_path / "nonexistent"))
    assert r.exit_code == 2 and "no such directory" in r.stderr, r.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_too_many_nodes_is_a_usage_error(tmp_path):
    r = invoke("local", "up", "--nodes", "200", "--dir", str(tmp_path / "x"))
    assert r.exit_code == 2 and "--nodes must be from 1 to 25" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_restore_into_a_dir_holding_a_cluster_refuses_before_choosing_ports(tmp_path,
                                                                           monkeypatch):
    """Trial item 11: the refusal comes first, not after "ports ... are in use; using ..."."""
    from raftctl.commands import snapshot as snapshot_cmd

    asked = []
    monkeypatch.setattr(snapshot_cmd, "default_base_port", lambda *a, **k: asked.append(a))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "cluster.yaml").write_text("nodes: []\n")
    backup = tmp_path / "backup.snap"
    backup.write_bytes(b"x")
    r = invoke("snapshot", "restore", str(backup), "--dir", str(existing))
    assert r.exit_code == 2 and r.stderr == (
        f"raftctl: error: {existing} already holds a cluster; use an empty directory\n")
    assert asked == []


@pytest.mark.parametrize("args, suggestion", [(["stauts"], "'status'"),
                                              (["snapshott", "list"], "'snapshot'"),
                                              (["local", "dwn"], "'down'")])
def test_an_unknown_command_gets_a_suggestion(args, suggestion):
    r = invoke(*args)
    assert r.exit_code == 2 and f"Did you mean {suggestion}?" in r.output, r.output


@pytest.fixture
def answering_server():
    """host:port of a real TCP server (not raftd) that answers every connection with the
    given bytes and closes it."""
    servers = []

    def start(reply: bytes) -> str:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        servers.append(srv)

        def serve() -> None:
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                with c:
                    c.recv(100)
                    c.sendall(reply)
        threading.Thread(target=serve, daemon=True).start()
        return "%s:%d" % srv.getsockname()

    yield start
    for s in servers:
        s.close()


def test_tls_hint_only_for_a_tls_server(answering_server):
    """Trial item 14: an HTTP server (bad magic b'HT') is named as what it is; the TLS hint
    stays for bytes that look like a TLS record (first byte 0x15 alert, 0x16 handshake)."""
    http = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    for args in (["status"], ["kv", "get", "k"]):
        r = invoke("-e", http, *args)
        assert r.exit_code == 3, r.stderr
        assert f"not a raftd server at {http} (it answered b'HT')" in r.stderr, r.stderr
        assert "TLS" not in r.stderr
    tls = answering_server(bytes.fromhex("160303000502000001ff"))
    r = invoke("-e", tls, "status")
    assert r.exit_code == 3 and "--cacert" in r.stderr and "not a raftd" not in r.stderr


def test_one_attempt_is_singular():
    """Trial item 17: `--timeout 0.001` said "1 attempts"."""
    with socket.socket() as silent:  # listens, never accepts: the attempt times out
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        r = invoke("-e", "%s:%d" % silent.getsockname(), "--timeout", "0.001", "kv", "get", "k")
    assert r.exit_code == 3 and "(1 attempt;" in r.stderr, r.stderr


def test_a_node_that_exits_without_a_log_line_gets_its_exit_status(tmp_path):
    """Trial 6 (bench_startup run): `n3 exited: ` with an empty reason; and a node that logs
    nothing is not given an earlier process's last line (seen once under load: "stopping")."""
    import subprocess
    import sys
    import time

    from raftctl.commands.local import _why_exited

    (tmp_path / "raftd.log").write_text("an earlier process's last line: stopping\n")
    node = {"data_dir": str(tmp_path), "log_from": (tmp_path / "raftd.log").stat().st_size,
            "pid": subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"]).pid}
    deadline = time.monotonic() + 10
    while (why := _why_exited(node)) == "no log line" and time.monotonic() < deadline:
        time.sleep(0.05)  # (waitpid reaps it: asked once more, the status is gone)
    assert why == "no log line, exit status 7"
