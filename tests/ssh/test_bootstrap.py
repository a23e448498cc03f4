"""`raftctl bootstrap | ssh ... | teardown` against real OpenSSH servers on loopback
(tests/ssh/conftest.py): a 3-node cluster bootstrapped, re-run, checked, broken and resumed,
upgraded while a client writes, grown to 4 nodes and torn down; and every way preflight can
refuse (authentication, unreachable, unknown/changed host key, port in use)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from raftd.client import Client

pytestmark = pytest.mark.e2e


def raftctl(*args, check=None, timeout=300, stdin=subprocess.DEVNULL):
    r = subprocess.run([sys.executable, "-m", "raftctl.main", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, stdin=stdin)
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def errors(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("raftctl: error:")]


def modified_wheel(src: Path, dest_dir: Path, marker: str) -> Path:
    """A copy of the raftd wheel with one file changed (a new build of the same version)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for item in zin.infolist():
            if item.filename == record:
                continue
            data = zin.read(item.filename)
            if item.filename == "raftd/__init__.py":
                data += f"\n# build marker: {marker}\n".encode()
            zout.writestr(item, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            lines.append(f"{item.filename},sha256={digest.decode()},{len(data)}")
        zout.writestr(record, "\n".join(lines + [f"{record},,"]) + "\n")
    return dest


@pytest.fixture(scope="module")
def wheels(ssh_env, tmp_path_factory):
    from raftctl.ssh import build_wheel, project_source, wheel_info
    v1 = build_wheel(project_source())  # built (and cached) by the session fixture
    v2 = modified_wheel(v1, tmp_path_factory.mktemp("wheel-v2"), "v2")
    assert wheel_info(v1)["build"] != wheel_info(v2)["build"]
    assert wheel_info(v1)["build"] == wheel_info(v1)["build"]
    return {"v1": v1, "v2": v2, "v1_build": wheel_info(v1)["build"],
            "v2_build": wheel_info(v2)["build"]}


@pytest.fixture(scope="module")
def deployed(ssh_env, wheels, tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    install = d / "install"
    inv3 = ssh_env.inventory(d / "inventory.yaml", ["n1", "n2", "n3"], install)
    inv4 = ssh_env.inventory(d / "inventory4.yaml", ["n1", "n2", "n3", "n4"], install)
    ship = ["--offline", "--wheelhouse", ssh_env.wheelhouse]
    info = {"dir": d, "install": install, "inv": inv3, "inv4": inv4, "ship": ship,
            "endpoints": [f"{s.address}:{ssh_env.raft_ports[s.name]}"
                          for s in ssh_env.servers[:3]]}
    yield info
    raftctl("teardown", "--purge", "--yes", inv4, timeout=120)


def bootstrap(deployed, *args, wheel, check=None, inv=None):
    return raftctl("bootstrap", *deployed["ship"], "--wheel", wheel, *args,
                   inv or deployed["inv"], check=check)


# ---------------------------------------------------------------- the happy path --
def test_bootstrap_three_nodes(deployed, wheels, ssh_env):
    t0 = time.monotonic()
    r = bootstrap(deployed, "-o", "json", wheel=wheels["v1"], check=0)
    elapsed = time.monotonic() - t0
    doc = json.loads(r.stdout)
    assert doc["cluster"] == "t" and doc["changed"] is True
    assert doc["leader"] in ("n1", "n2", "n3")
    assert [h["name"] for h in doc["hosts"]] == ["n1", "n2", "n3"]
    for h, s in zip(doc["hosts"], ssh_env.servers, strict=True):
        assert set(h) >= {"name", "address", "raft_port", "status", "pid"}
        assert h["status"] == "started" and h["pid"] > 0
        assert h["address"] == s.address and h["raft_port"] == ssh_env.raft_ports[s.name]
        assert h["build"] == wheels["v1_build"]
    print(f"bootstrap took {elapsed:.1f}s")

    # what is on the "hosts": a config raftd accepts, one directory per node
    install = deployed["install"]
    cfg = yaml.safe_load((install / "n2" / "raftd.yaml").read_text())
    assert cfg["id"] == "n2" and cfg["cluster"] == "t"
    assert cfg["listen"] == deployed["endpoints"][1]
    assert cfg["peers"] == dict(zip(["n1", "n2", "n3"], deployed["endpoints"], strict=True))
    assert cfg["data_dir"] == str(install / "data" / "n2") and cfg["tick_ms"] == 20
    assert os.readlink(install / "n2" / "venv") == f"venvs/{wheels['v1_build']}"
    assert (install / "n2" / "supervisor.pid").exists()

    with Client(deployed["endpoints"], timeout=10) as c:
        assert c.put("greeting", b"hello") > 0
        assert c.get("greeting") == b"hello"


def test_rerun_changes_nothing(deployed, wheels):
    pids = {h: (deployed["install"] / h / "raftd.child.pid").read_text() for h in ("n1", "n2")}
    r = bootstrap(deployed, wheel=wheels["v1"], check=0)
    assert "no change" in r.stdout, r.stdout
    doc = json.loads(bootstrap(deployed, "-o", "json", wheel=wheels["v1"], check=0).stdout)
    assert doc["changed"] is False
    assert {h["status"] for h in doc["hosts"]} == {"running"}
    assert pids == {h: (deployed["install"] / h / "raftd.child.pid").read_text()
                    for h in ("n1", "n2")}


def test_ssh_status_logs_stop_start(deployed):
    inv = deployed["inv"]
    doc = json.loads(raftctl("ssh", "status", inv, "-o", "json", check=0).stdout)
    assert doc["leader"] in ("n1", "n2", "n3")
    assert [(h["name"], h["status"], h["manager"]) for h in doc["hosts"]] == \
        [(n, "running", "process") for n in ("n1", "n2", "n3")]
    assert all(h["pid"] and h["role"] in ("leader", "follower") for h in doc["hosts"])

    r = raftctl("ssh", "logs", inv, "--host", "n1", "--lines", "5", check=0)
    lines = r.stdout.splitlines()
    assert 0 < len(lines) <= 5 and any("n1" in ln for ln in lines)
    r = raftctl("ssh", "logs", inv, "--lines", "3", check=0)
    assert {ln.split(" | ")[0] for ln in r.stdout.splitlines()} == {"n1", "n2", "n3"}
    doc = json.loads(raftctl("ssh", "logs", inv, "-n", "2", "-o", "json", check=0).stdout)
    assert [len(h["lines"]) for h in doc["hosts"]] == [2, 2, 2]

    r = raftctl("ssh", "stop", inv, "--host", "n3", "-o", "json", check=0)
    assert json.loads(r.stdout)["hosts"] == [
        {"name": "n3", "address": deployed["endpoints"][2].rsplit(":", 1)[0],
         "raft_port": int(deployed["endpoints"][2].rsplit(":", 1)[1]), "status": "stopped",
         "pid": None}]
    doc = json.loads(raftctl("ssh", "status", inv, "-o", "json", check=0).stdout)
    assert [h["status"] for h in doc["hosts"]] == ["running", "running", "stopped"]
    assert not (deployed["install"] / "n3" / "supervisor.pid").exists()
    with Client(deployed["endpoints"], timeout=10) as c:  # 2 of 3: still available
        c.put("during-stop", b"1")
    r = raftctl("ssh", "start", inv, check=0)
    rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in r.stdout.splitlines()
            if ln.startswith("│ n")]
    assert [(row[0], row[2]) for row in rows] == \
        [("n1", "running"), ("n2", "running"), ("n3", "started")]
    with Client(deployed["endpoints"], timeout=10) as c:  # n3 is back in the cluster
        deadline = time.monotonic() + 15
        while True:
            st = c.status(deployed["endpoints"][2])
            if st["role"] in ("follower", "leader") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert st["id"] == "n3" and st["role"] in ("follower", "leader"), st["role"]

    old_pid = int((deployed["install"] / "n1" / "raftd.child.pid").read_text())
    doc = json.loads(raftctl("ssh", "restart", inv, "--host", "n1", "-o", "json",
                             check=0).stdout)
    (row,) = doc["hosts"]
    assert row["name"] == "n1" and row["status"] == "restarted" and row["pid"] != old_pid
    assert doc["leader"] in ("n1", "n2", "n3")


def test_failed_start_is_rolled_back_with_the_log(deployed, wheels):
    """A node that cannot start: bootstrap shows its log, stops what it started, says how
    to resume; fixing the problem and re-running resumes."""
    inv = deployed["inv"]
    raftctl("teardown", inv, check=0)  # stop all, keep everything
    wal = deployed["install"] / "data" / "n3" / "wal"
    wal.rename(wal.with_name("wal.saved"))
    wal.write_text("not a directory")
    try:
        r = bootstrap(deployed, wheel=wheels["v1"])
        assert r.returncode == 1, (r.stdout, r.stderr)
        err = r.stderr
        assert "n3 (" in err and "raftd failed to start" in err
        assert "Not a directory" in err  # the node's own log line
        assert "rolled back" in err and f"raftctl bootstrap {inv}" in err
        doc = json.loads(raftctl("ssh", "status", inv, "-o", "json", check=3).stdout)
        assert [h["status"] for h in doc["hosts"]] == ["stopped"] * 3
    finally:
        wal.unlink()
        wal.with_name("wal.saved").rename(wal)
    doc = json.loads(bootstrap(deployed, "-o", "json", wheel=wheels["v1"], check=0).stdout)
    assert doc["changed"] is True and {h["status"] for h in doc["hosts"]} == {"started"}
    with Client(deployed["endpoints"], timeout=10) as c:
        assert c.get("greeting") == b"hello"


def test_rolling_upgrade_keeps_the_cluster_available(deployed, wheels):
    # a different build is not rolled out without --upgrade
    r = bootstrap(deployed, wheel=wheels["v2"], check=1)
    assert "--upgrade" in errors(r)[0] and "nothing was changed" in errors(r)[0]

    acked: dict[str, bytes] = {}
    stop = threading.Event()
    failures = []
    ok_times = []

    def writer():
        with Client(deployed["endpoints"], timeout=3) as c:
            i = 0
            while not stop.is_set():
                key, value = f"up/{i}", f"v{i}".encode()
                try:
                    c.put(key, value)
                    acked[key] = value
                    ok_times.append(time.monotonic())
                except Exception as e:  # noqa: BLE001 - unacknowledged: allowed
                    failures.append(repr(e))
                i += 1
                time.sleep(0.02)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        r = bootstrap(deployed, "--upgrade", "-o", "json", wheel=wheels["v2"])
    finally:
        t1 = time.monotonic()
        time.sleep(0.5)
        stop.set()
        t.join(30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["changed"] is True
    assert [(h["status"], h["build"]) for h in doc["hosts"]] == \
        [("upgraded", wheels["v2_build"])] * 3
    # restarted one at a time, the leader last: available throughout
    during = [x for x in ok_times if t0 <= x <= t1]
    assert len(during) > 20, (len(during), failures[-3:])
    gaps = [b - a for a, b in zip([t0] + during, during + [t1], strict=True)]
    assert max(gaps) < 10, max(gaps)
    with Client(deployed["endpoints"], timeout=10) as c:
        items = c.list("up/")
        lost = [k for k, v in acked.items() if items.get(k) != v]
        assert not lost, f"acknowledged writes lost: {lost[:5]}"
        assert c.get("greeting") == b"hello"
    for n in ("n1", "n2", "n3"):
        root = deployed["install"] / n
        assert os.readlink(root / "venv") == f"venvs/{wheels['v2_build']}"
        # the previous build is kept (to roll back to)
        assert sorted(p.name for p in (root / "venvs").iterdir()) == \
            sorted([wheels["v1_build"], wheels["v2_build"]])
        marker = list((root / "venv").glob("lib/python3*/site-packages/raftd/__init__.py"))
        assert marker and "build marker: v2" in marker[0].read_text()
    r = bootstrap(deployed, wheel=wheels["v2"], check=0)
    assert "no change" in r.stdout


def test_add_host(deployed, wheels, ssh_env):
    inv4 = deployed["inv4"]
    # a plain bootstrap does not start a host that is not a member: it points to --add-host
    r = bootstrap(deployed, wheel=wheels["v2"], inv=inv4, check=2)
    assert len(errors(r)) == 1 and f"--add-host n4 {inv4}" in errors(r)[0]
    assert not (deployed["install"] / "n4").exists()

    r = bootstrap(deployed, "--add-host", "n4", "-o", "json", wheel=wheels["v2"], inv=inv4,
                  check=0)
    doc = json.loads(r.stdout)
    assert doc["changed"] is True
    assert [(h["name"], h["status"]) for h in doc["hosts"]] == \
        [("n1", "running"), ("n2", "running"), ("n3", "running"), ("n4", "added")]
    cfg = yaml.safe_load((deployed["install"] / "n4" / "raftd.yaml").read_text())
    assert cfg["join"] is True and "peers" not in cfg
    n4 = f"{ssh_env.servers[3].address}:{ssh_env.raft_ports['n4']}"
    with Client([n4], timeout=10) as c:
        assert sorted(c.status(n4)["configuration"]["voters"]) == ["n1", "n2", "n3", "n4"]
        assert c.get("greeting") == b"hello"  # follows the leader hint
    # a re-run now sees a 4-node cluster with nothing to do (n4's join config is not "peers")
    r = bootstrap(deployed, wheel=wheels["v2"], inv=inv4, check=0)
    assert "no change" in r.stdout


def test_changed_raft_ports_are_refused_or_applied(deployed, wheels, ssh_env):
    """Issue 16 §10: after a teardown without --purge the inventory's raft ports change.
    With the logs still there bootstrap refuses at once (exit 2), naming each host and the
    difference, and changes nothing; once the data dirs hold no log it applies the inventory,
    and no config ever lists a node in peers at another address than it listens on."""
    from tests.ssh.conftest import free_port
    inv4 = deployed["inv4"]
    raftctl("teardown", inv4, check=0)  # stop all, keep the data
    raw = yaml.safe_load(inv4.read_text())
    for h in raw["hosts"]:
        h["raft_port"] = free_port(h["address"])
    moved = deployed["dir"] / "inventory-moved.yaml"
    moved.write_text(yaml.safe_dump(raw, sort_keys=False))
    install = deployed["install"]
    configs = {n: (install / n / "raftd.yaml").read_text() for n in ("n1", "n2", "n3", "n4")}
    t0 = time.monotonic()
    r = bootstrap(deployed, wheel=wheels["v2"], inv=moved, check=2)
    assert time.monotonic() - t0 < 30  # at once: no start, no waiting for a leader
    errs = errors(r)
    assert len(errs) == 5, r.stderr  # one per host, then the summary
    n1_old = deployed["endpoints"][0]
    n1_new = f"{raw['hosts'][0]['address']}:{raw['hosts'][0]['raft_port']}"
    assert errs[0].startswith("raftctl: error: n1 (") and \
        f"listen {n1_old} -> {n1_new}" in errs[0], errs[0]
    assert "4 hosts' configs differ from the inventory: n1, n2, n3, n4" in errs[4]
    assert "nothing was changed" in errs[4]
    assert configs == {n: (install / n / "raftd.yaml").read_text() for n in configs}
    doc = json.loads(raftctl("ssh", "status", moved, "-o", "json", check=3).stdout)
    assert [h["status"] for h in doc["hosts"]] == ["stopped"] * 4

    for n in configs:  # the data dirs lose their logs: nothing remembers the old addresses
        for sub in ("wal", "snapshots"):
            shutil.rmtree(install / "data" / n / sub, ignore_errors=True)
    doc = json.loads(bootstrap(deployed, "-o", "json", wheel=wheels["v2"], inv=moved,
                               check=0).stdout)
    assert {h["status"] for h in doc["hosts"]} == {"started"} and doc["leader"]
    for h in raw["hosts"]:
        cfg = yaml.safe_load((install / h["name"] / "raftd.yaml").read_text())
        ep = f"{h['address']}:{h['raft_port']}"
        assert cfg["listen"] == ep and cfg["peers"][h["name"]] == ep
    raftctl("teardown", moved, check=0)


def test_teardown_purge(deployed):
    inv4 = deployed["inv4"]
    r = raftctl("teardown", "--purge", inv4)  # not interactive, no --yes: refused
    assert r.returncode == 2 and "--yes" in r.stderr
    assert (deployed["install"] / "n1").exists()
    doc = json.loads(raftctl("teardown", "--purge", "--yes", inv4, "-o", "json",
                             check=0).stdout)
    assert doc["purged"] is True and {h["status"] for h in doc["hosts"]} == {"purged"}
    assert not deployed["install"].exists()
    for ep in deployed["endpoints"]:
        host, port = ep.rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=1).close()
    doc = json.loads(raftctl("ssh", "status", inv4, "-o", "json", check=3).stdout)
    assert {h["status"] for h in doc["hosts"]} == {"not installed"}


# ------------------------------------------------------------- preflight refusals --
@pytest.fixture
def fresh(ssh_env, tmp_path):
    """A 3-host inventory whose hosts have nothing installed."""
    def make(names=("n1", "n2", "n3"), **kw) -> Path:
        return ssh_env.inventory(tmp_path / "inventory.yaml", list(names), tmp_path / "install",
                                 **kw)
    return make


def test_wrong_key_is_refused(fresh, ssh_env, tmp_path):
    inv = fresh(["n1"], identity=ssh_env.wrong_key)
    r = raftctl("bootstrap", inv, check=4)
    assert errors(r) == [ln for ln in r.stderr.splitlines() if "error" in ln]
    (line,) = errors(r)
    assert line.startswith(f"raftctl: error: n1 ({ssh_env.servers[0].address}:"
                           f"{ssh_env.servers[0].port}): authentication refused for user")
    assert str(ssh_env.wrong_key) in line and "nothing was changed" in line
    # one bad host of three: preflight stops everything, names only that host
    inv = fresh()
    raw = yaml.safe_load(inv.read_text())
    raw["hosts"][1]["user"] = "no-such-user"
    inv.write_text(yaml.safe_dump(raw))
    r = raftctl("bootstrap", inv, "-o", "json", check=4)
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert err["exit_code"] == 4 and err["error"] == "auth_refused"
    assert err["message"].startswith("n2 (") and "authentication refused" in err["message"]
    assert not (tmp_path / "install").exists()


def test_closed_port_is_unreachable(fresh, ssh_env):
    from tests.ssh.conftest import free_port
    inv = fresh(["n1"])
    raw = yaml.safe_load(inv.read_text())
    raw["hosts"][0]["ssh_port"] = free_port(ssh_env.servers[0].address)
    inv.write_text(yaml.safe_dump(raw))
    for args in (["bootstrap", inv], ["ssh", "status", inv], ["teardown", inv]):
        r = raftctl(*args, check=3)
        (line,) = errors(r)
        assert "n1 (" in line and "unreachable" in line and "refused" in line.lower()


def test_unknown_host_key_refused_then_accepted_and_recorded(fresh, ssh_env, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    inv = fresh(["n1", "n2"], known_hosts=kh)
    r = raftctl("bootstrap", inv, check=4)
    assert len(errors(r)) == 3, r.stderr  # one line per host, then the summary
    assert all("unknown host key" in ln and "--accept-new-host-keys" in ln
               for ln in errors(r)[:2])
    assert kh.read_text() == ""
    r = raftctl("ssh", "logs", inv, "--accept-new-host-keys", check=0)
    assert "recorded the host key" in r.stderr
    recorded = {tuple(ln.split()[:3]) for ln in kh.read_text().splitlines()}
    assert recorded == {tuple(s.known_hosts_line.split()) for s in ssh_env.servers[:2]}
    raftctl("ssh", "logs", inv, check=0)  # known now: no flag needed
    assert len(kh.read_text().splitlines()) == 2


def test_changed_host_key_is_refused(fresh, ssh_env, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    s1, s2 = ssh_env.servers[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(s1.known_hosts_line + f"[{s2.address}]:{s2.port} " +
                  " ".join(Path(str(other) + ".pub").read_text().split()[:2]) + "\n")
    before = kh.read_text()
    inv = fresh(["n1", "n2"], known_hosts=kh)
    for flags in ([], ["--accept-new-host-keys"]):
        r = raftctl("bootstrap", *flags, inv, check=4)
        (line,) = errors(r)
        assert line.startswith(f"raftctl: error: n2 ({s2.address}:{s2.port}): HOST KEY CHANGED")
        assert "ssh-keygen -R" in line
    assert kh.read_text() == before


def test_raft_port_in_use_fails_preflight(fresh, ssh_env, tmp_path):
    inv = fresh()
    s2 = ssh_env.servers[1]
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind((s2.address, ssh_env.raft_ports["n2"]))
        busy.listen()
        r = raftctl("bootstrap", inv, check=1)
    (line,) = errors(r)
    assert line.startswith(f"raftctl: error: n2 ({s2.address}:{s2.port}): raft port "
                           f"{s2.address}:{ssh_env.raft_ports['n2']} is in use")
    assert "nothing was changed" in line
    assert not (tmp_path / "install").exists()  # nothing installed or started anywhere


def test_missing_or_old_python(fresh, ssh_env, tmp_path):
    r = raftctl("bootstrap", fresh(["n1"], python="/nonexistent/python3"), check=1)
    (line,) = errors(r)
    assert "n1 (" in line and "no Python" in line and "/nonexistent/python3" in line
    # a Python that says it is 3.9 (the real check runs in it: sys.version_info)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\nsys.version_info = (3, 9, 18, 'final', 0)\n")
    old = tmp_path / "python3.9"
    old.write_text(f"#!/bin/sh\nPYTHONPATH={tmp_path / 'site'} exec {ssh_env.python} \"$@\"\n")
    old.chmod(0o755)
    r = raftctl("bootstrap", fresh(["n1"], python=str(old)), check=1)
    (line,) = errors(r)
    assert "n1 (" in line and "is Python 3.9.18; raftd needs >= 3.11" in line
