"""Issue 16 §8, what a new-user trial of the README still found in the local tooling, on real
raftd processes: `local add` picks an id the cluster never had, leaves nothing behind when
the add fails and fails fast without a leader (trial item 8); `local up` does not start a
server removed from the configuration (item 9)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import free_base_port, free_port

pytestmark = pytest.mark.e2e


def raftctl(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    return subprocess.run([sys.executable, "-m", "raftctl.main", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def ids_in(d: Path) -> list[str]:
    return [n["id"] for n in yaml.safe_load((d / "cluster.yaml").read_text())["nodes"]]


def raftd_pids_under(d: Path) -> list[int]:
    """Pids of live raftd processes whose config lies under ``d``."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"raftd" in b" ".join(cmd) and any(
                str(d).encode() in a for a in cmd):
            out.append(int(p.name))
    return out


def test_local_add_and_up_respect_the_clusters_membership(tmp_path):
    d = tmp_path / "cl"
    for _ in range(3):  # three consecutive free ports: retry if one was taken meanwhile
        r = raftctl("local", "up", "--dir", str(d), "--base-port", str(free_base_port(3)),
                    "-o", "json")
        if r.returncode == 0:
            break
        raftctl("local", "down", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    eps = ",".join(json.loads(r.stdout)["endpoints"])
    manual = None
    try:
        # The README's manual step: a server n4 started by hand and added with member add.
        m = tmp_path / "man4"
        m.mkdir(mode=0o700)
        addr = f"127.0.0.1:{free_port('127.0.0.1')}"
        (m / "raftd.yaml").write_text(yaml.safe_dump(
            {"id": "n4", "listen": addr, "data_dir": str(m), "join": True, "tick_ms": 25,
             "election_timeout_ms": 500, "heartbeat_interval_ms": 100}))
        manual = subprocess.Popen([sys.executable, "-m", "raftd", "--config",
                                   str(m / "raftd.yaml")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        for _ in range(100):
            r = raftctl("-e", eps, "member", "add", "n4", addr)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.returncode == 0, r.stderr

        # Item 8: local add picks an id the cluster does not have (n4 is a member).
        r = raftctl("local", "add", "--dir", str(d), "-o", "json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["id"] == "n5"
        assert ids_in(d) == ["n1", "n2", "n3", "n5"]

        # An add that fails (the new server cannot start) leaves nothing behind.
        n1_cfg = d / "n1" / "raftd.yaml"
        good = n1_cfg.read_text()
        n1_cfg.write_text(good + "no_such_key: 1\n")  # copied into the new node's config
        r = raftctl("local", "add", "--dir", str(d))
        n1_cfg.write_text(good)
        assert r.returncode != 0 and "n6 exited" in r.stderr, r.stderr
        assert ids_in(d) == ["n1", "n2", "n3", "n5"] and not (d / "n6").exists()

        # Item 9: a removed server is not started again by local up.
        assert raftctl("-e", eps, "member", "remove", "n2").returncode == 0
        assert raftctl("local", "down", "--dir", str(d)).returncode == 0
        manual.terminate()
        manual.wait(10)
        manual = None

        # Item 8: against a stopped cluster: at once, nothing started or recorded.
        t0 = time.monotonic()
        r = raftctl("local", "add", "--dir", str(d))
        assert r.returncode == 3 and "nothing was started" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 10
        assert ids_in(d) == ["n1", "n2", "n3", "n5"] and not (d / "n6").exists()
        assert raftd_pids_under(d) == []

        n2_log = (d / "n2" / "raftd.log").read_text()
        r = raftctl("local", "up", "--dir", str(d), "-o", "json")
        assert r.returncode == 0, r.stderr
        assert "not starting n2: removed from the cluster's configuration" in r.stderr
        assert "not running n2" not in r.stderr and "started n1, n3, n5" in r.stderr, r.stderr
        assert [n["id"] for n in json.loads(r.stdout)["nodes"]] == ["n1", "n3", "n5"]
        assert (d / "n2" / "raftd.log").read_text() == n2_log  # never started
    finally:
        if manual is not None:
            manual.kill()
        raftctl("local", "down", "--dir", str(d))
