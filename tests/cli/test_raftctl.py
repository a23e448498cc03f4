"""raftctl against real raftd processes: exit codes, JSON forms, local up/down."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from tests.e2e.harness import free_base_port, free_port

pytestmark = pytest.mark.e2e


async def _put_many(endpoints, items):
    from raftd.client import AsyncClient
    async with AsyncClient(endpoints, timeout=30) as c:
        sem = asyncio.Semaphore(64)

        async def put(k, v):
            async with sem:
                await c.put(k, v)
        await asyncio.gather(*(put(k, v) for k, v in items.items()))


def raftctl(*args, check=None, env=None):
    r = subprocess.run([sys.executable, "-m", "raftctl.main", *args], capture_output=True,
                       text=True, timeout=60, env={**os.environ, **(env or {})})
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


@pytest.fixture
def local(tmp_path):
    for attempt in range(3):  # three consecutive ports after a free one: retry if taken
        d = tmp_path / f"cl{attempt}"
        port = free_base_port(3)
        r = raftctl("local", "up", "--nodes", "3", "--dir", str(d), "--base-port", str(port),
                    "-o", "json")
        if r.returncode == 0:
            break
        raftctl("local", "down", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    yield d, info
    raftctl("local", "down", "--dir", str(d))


def test_local_up_json_status_kv_and_down(local):
    d, info = local
    assert set(info) >= {"endpoints", "nodes"} and len(info["endpoints"]) == 3
    assert {"id", "address", "pid", "data_dir"} <= set(info["nodes"][0])
    eps = ",".join(info["endpoints"])
    for n in info["nodes"]:
        assert os.path.exists(os.path.join(n["data_dir"], "raftd.log"))

    st = json.loads(raftctl("-e", eps, "status", "-o", "json", check=0).stdout)
    assert st["leader"] in {"n1", "n2", "n3"} and st["configuration"]["joint"] is False
    assert sorted(st["configuration"]["voters"]) == ["n1", "n2", "n3"]
    assert st["fault_tolerance"] == 1  # issue 18 §4
    assert "tolerates 1 failure" in raftctl("-e", eps, "status", check=0).stdout
    assert all(set(n) >= {"id", "address", "role", "term", "commit_index", "applied_index",
                          "last_log_index", "reachable", "pid"} for n in st["nodes"])

    env = {"RAFTCTL_ENDPOINTS": eps}
    assert raftctl("kv", "put", "a", "hello", env=env, check=0).stdout.startswith("OK ")
    assert raftctl("kv", "get", "a", env=env, check=0).stdout == "hello"
    r = raftctl("kv", "get", "missing", env=env, check=1)
    assert r.stdout == "" and "not found" in r.stderr and len(r.stderr.splitlines()) == 1
    assert raftctl("kv", "cas", "a", "bye", "--expected", "nope", env=env, check=1)
    assert raftctl("kv", "cas", "a", "bye", "--expected", "hello", env=env, check=0)
    assert raftctl("kv", "cas", "b", "new", "--absent", env=env, check=0)
    items = json.loads(raftctl("kv", "list", "-o", "json", env=env, check=0).stdout)["items"]
    assert items == {"a": "bye", "b": "new"}
    assert raftctl("kv", "delete", "a", env=env, check=0)
    assert raftctl("kv", "delete", "a", env=env, check=1)

    # kill one node: status reports it unreachable quickly and still has a leader
    victim = info["nodes"][0]
    os.kill(victim["pid"], 9)
    t0 = time.monotonic()
    st = json.loads(raftctl("-e", eps, "-o", "json", "status").stdout)
    assert time.monotonic() - t0 < 10
    row = next(n for n in st["nodes"] if n["id"] == victim["id"])
    assert row["reachable"] is False

    # up again on the same dir restarts only the stopped node and keeps the data
    r = raftctl("local", "up", "--dir", str(d), "-o", "json", check=0)
    assert "started n1" in r.stderr or "started " + victim["id"] in r.stderr
    assert raftctl("kv", "get", "b", env=env, check=0).stdout == "new"

    down = json.loads(raftctl("local", "down", "--dir", str(d), "-o", "json", check=0).stdout)
    assert sorted(down["stopped"]) == ["n1", "n2", "n3"]


def test_unreachable_cluster_exits_3_with_one_line():
    port = free_port("127.0.0.1")
    r = raftctl("-e", f"127.0.0.1:{port}", "--timeout", "1", "kv", "get", "x")
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = raftctl("-e", f"127.0.0.1:{port}", "--timeout", "1", "-o", "json", "kv", "put", "x", "y")
    assert r.returncode == 3
    err = json.loads(r.stderr)
    assert err["exit_code"] == 3 and err["error"] in ("unavailable", "timeout")
    r = raftctl("-e", f"127.0.0.1:{port}", "status")
    assert r.returncode == 3


def test_usage_errors_exit_2():
    assert raftctl("-e", "nonsense", "kv", "get", "x").returncode == 2
    assert raftctl("kv", "cas", "k", "v").returncode == 2  # neither --expected nor --absent
    assert raftctl("-o", "yaml", "status").returncode == 2


def test_local_down_without_cluster_is_a_clear_error(tmp_path):
    r = raftctl("local", "down", "--dir", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no local cluster" in r.stderr


def test_raftd_bad_config_exits_2_naming_key(tmp_path):
    p = tmp_path / "n.yaml"
    p.write_text("id: n1\nlisten: 127.0.0.1:1\ndata_dir: /tmp/q\npeers: {n1: 127.0.0.1:1}\n"
                 "colour: blue\n")
    r = subprocess.run([sys.executable, "-m", "raftd", "--config", str(p)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "key 'colour'" in r.stderr and str(p) in r.stderr


def test_ctrl_c_during_a_request_is_one_line_and_exit_130():
    """Interrupted while a request waits on a node that never answers: exit 130 and exactly
    'raftctl: error: interrupted' (the request's task used to outlive the loop and print
    'Task was destroyed but it is pending!')."""
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # accepts and never answers
        port = s.getsockname()[1]
        p = subprocess.Popen([sys.executable, "-m", "raftctl.main", "-e", f"127.0.0.1:{port}",
                              "--timeout", "20", "kv", "get", "x"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # A suite started in the background (`cmd &` without job
                             # control) inherits SIGINT ignored, and Python then never
                             # raises KeyboardInterrupt: give the child the default back.
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        s.settimeout(30)
        conn, _ = s.accept()  # the request is on its way: interrupt it now
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and err == "raftctl: error: interrupted\n", err


def test_bench_writes_only_under_its_prefix_and_cleans_up(local):
    """Operator trial (issue 16 §2): bench wrote k0..k9999 over the user's keys and left them."""
    d, info = local
    env = {"RAFTCTL_ENDPOINTS": ",".join(info["endpoints"])}
    raftctl("kv", "put", "k0", "mine", env=env, check=0)
    args = ("bench", "--clients", "4", "--duration", "1", "--warmup", "0.2", "--keys", "20",
            "-o", "json")
    res = json.loads(raftctl(*args, env=env, check=0).stdout)
    assert res["ops"] > 0 and res["prefix"] == "bench/" and res["kept"] is False
    assert res["keys_deleted"] == res["keys_written"] > 1
    assert raftctl("kv", "get", "k0", env=env, check=0).stdout == "mine"
    listed = json.loads(raftctl("kv", "list", "bench/", "-o", "json", env=env, check=0).stdout)
    assert listed["items"] == {}, listed

    res = json.loads(raftctl(*args, "--keep", "--prefix", "b2/", env=env, check=0).stdout)
    listed = json.loads(raftctl("kv", "list", "b2/", "-o", "json", env=env, check=0).stdout)
    assert res["kept"] is True and len(listed["items"]) == res["keys_written"] > 1
    assert raftctl("bench", "--prefix", "", env=env, check=2).stderr.count("\n") == 1


@pytest.mark.parametrize("args", [("-e", "", "kv", "get", "k"), ("kv", "get", "k", "-e", " , "),
                                  ("--timeout", "-1", "kv", "get", "k"),
                                  ("kv", "get", "k", "--timeout", "0")])
def test_empty_endpoints_and_non_positive_timeout_are_usage_errors(args):
    """Issue 16 §7: `-e ""` fell back to the demo's endpoints; `--timeout -1` was accepted."""
    r = raftctl(*args, "-o", "json", check=2)
    assert json.loads(r.stderr)["error"] == "usage" and r.stdout == ""


def test_kv_values_from_stdin_and_file_stale_list_prefix_delete_and_empty_keys(local, tmp_path):
    """Issue 16 §4: `kv put KEY -` reads stdin (it stored a literal '-'), --file reads a file
    (a 10 MB value does not fit on a command line), kv list --stale, kv delete --prefix, and
    one error for an empty key on every kv command."""
    d, info = local
    env = {"RAFTCTL_ENDPOINTS": ",".join(info["endpoints"])}
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "kv", "put", "s", "-"],
                       input=b"from\x00stdin", capture_output=True, timeout=60,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(900_000))
    raftctl("kv", "put", "f", "--file", str(big), env=env, check=0)
    got = subprocess.run([sys.executable, "-m", "raftctl.main", "kv", "get", "s"],
                         capture_output=True, timeout=60, env={**os.environ, **env})
    assert got.stdout == b"from\x00stdin"  # piped: the bytes exactly (issue 16 trial item 4)
    out = json.loads(raftctl("kv", "list", "--stale", "-o", "json", env=env, check=0).stdout)
    assert set(out["items"]) == {"s", "f"}
    for i in range(5):
        raftctl("kv", "put", f"tmp/{i}", "x", env=env, check=0)
    assert raftctl("kv", "delete", "--prefix", "tmp/", env=env, check=0).stdout == "deleted 5\n"
    assert json.loads(raftctl("kv", "list", "tmp/", "-o", "json", env=env,
                              check=0).stdout)["items"] == {}
    # Pipelined (trial 6 of issue 16: one at a time, 16,456 keys took 2 minutes).
    asyncio.run(_put_many(info["endpoints"], {f"many/{i:05d}": b"v" for i in range(2000)}))
    raftctl("kv", "put", "manz", "kept", env=env, check=0)
    r = raftctl("kv", "delete", "--prefix", "many/", env=env, check=0)
    assert r.stdout == "deleted 2000\n" and "deleting 2000 keys under 'many/'" in r.stderr
    assert raftctl("kv", "get", "manz", env=env, check=0).stdout.strip() == "kept"
    for args in (["put", "", "v"], ["get", ""], ["delete", ""], ["cas", "", "v", "--absent"],
                 ["put", "k", "v", "--file", str(big)], ["put", "k"],
                 ["put", "k", "--file", str(tmp_path / "missing")],
                 ["delete", "--prefix", ""]):
        r = raftctl("kv", *args, env=env, check=2)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    got = subprocess.run([sys.executable, "-m", "raftctl.main", "kv", "get", "f"],
                         capture_output=True, timeout=60, env={**os.environ, **env})
    assert got.stdout.rstrip(b"\n") == big.read_bytes().rstrip(b"\n")


def test_local_up_on_taken_ports_fails_per_node_and_leaves_nothing_running(local, tmp_path):
    """Issue 16 §1: `local up` on the ports of a running cluster printed the old cluster's
    leader and endpoints and exited 0 while each new node had died (address in use)."""
    d, info = local
    base = int(info["endpoints"][0].rsplit(":", 1)[1])
    second = tmp_path / "second"
    r = raftctl("local", "up", "--dir", str(second), "--base-port", str(base), "--timeout", "10")
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("raftctl: error:")]
    assert [ln.split(":")[2].split()[0] for ln in lines] == ["n1", "n2", "n3"], r.stderr
    assert all("address already in use" in ln.lower() or "another raftd" in ln for ln in lines)
    for n in ("n1", "n2", "n3"):
        pid_file = second / n / "raftd.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            assert not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    # the first cluster is untouched
    st = json.loads(raftctl("-e", ",".join(info["endpoints"]), "status", "-o", "json",
                            check=0).stdout)
    assert {n["pid"] for n in st["nodes"]} == {n["pid"] for n in info["nodes"]}
    # on an existing DIR, --nodes/--base-port are ignored, and it says so
    r = raftctl("local", "up", "--dir", str(d), "--nodes", "5", check=0)
    assert "--nodes ignored" in r.stderr
    r = raftctl("local", "up", "--dir", str(tmp_path / "x"), "--base-port", "70000", check=2)
    assert "--base-port" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_local_tooling_follows_membership(local):
    """Issue 16 §8: after `member remove`, `local up` restarted the removed server; `local
    remove` of a removed node left it running; `local down` missed nodes it did not list."""
    import yaml

    d, info = local
    env = {"RAFTCTL_ENDPOINTS": ",".join(info["endpoints"])}
    raftctl("member", "remove", "n3", env=env, check=0)
    raftctl("local", "down", "--dir", str(d), check=0)
    r = raftctl("local", "up", "--dir", str(d), check=0)
    assert "not starting n3: removed" in r.stderr and "not running n3" not in r.stderr
    n3_pid = d / "n3" / "raftd.pid"
    deadline = time.monotonic() + 10
    while n3_pid.exists() and os.path.exists(f"/proc/{int(n3_pid.read_text())}") \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    r = raftctl("local", "remove", "n3", "--dir", str(d), check=0)
    assert "not in the configuration" in r.stderr
    # a node started by hand from DIR (then added with member add) is stopped by local down
    n9 = d / "n9"
    n9.mkdir(mode=0o700)
    port = free_port("127.0.0.1")
    (n9 / "raftd.yaml").write_text(yaml.safe_dump(
        {"id": "n9", "listen": f"127.0.0.1:{port}", "data_dir": str(n9), "join": True}))
    proc = subprocess.Popen([sys.executable, "-m", "raftd", "--config", str(n9 / "raftd.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (n9 / "raftd.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = json.loads(raftctl("local", "down", "--dir", str(d), "-o", "json", check=0).stdout)
    assert "n9" in out["stopped"]
    assert proc.wait(timeout=10) is not None


@pytest.mark.parametrize("args", [["member", "add", "n9", "notanaddress"],
                                  ["member", "add", "n9", "127.0.0.1:0"],
                                  ["member", "replace", "--add", "n9=host-without-port"]])
def test_member_add_with_a_bad_address_is_a_usage_error_before_any_request(args):
    """Issue 16 §11: a bad address exits 2 with one line, and nothing is sent (the endpoint
    below has no server: a request would exit 3)."""
    from typer.testing import CliRunner

    from raftctl.main import app
    r = CliRunner().invoke(app, ["-e", f"127.0.0.1:{free_port('127.0.0.1')}", *args])
    assert r.exit_code == 2, r.output
    assert "bad address" in r.output and len(r.output.strip().splitlines()) == 1
