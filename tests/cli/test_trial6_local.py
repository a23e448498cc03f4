"""Issue 16, trial 6: `raftctl local` touches only what it was asked to, on real raftd
processes (items A-D of the trial's task list): a failed up of a new DIR leaves nothing that
makes the retry ignore --base-port and prints no success line; a copy of a cluster's DIR
never acts on the original's nodes; `local down` stops a node laid out as the README's
DIR/n6.yaml + DIR/n6/."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import free_base_port

pytestmark = pytest.mark.e2e


def raftctl(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    return subprocess.run([sys.executable, "-m", "raftctl.main", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def pids(d: Path) -> dict[str, int]:
    return {p.parent.name: int(p.read_text()) for p in d.glob("*/raftd.pid")}


def wait_for(cond, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_local_acts_only_on_the_nodes_of_its_dir(tmp_path):
    d = tmp_path / "raftd-local"
    # Trial items 5 and 7: n2's port is taken, so the new cluster fails: no "started" line,
    # and nothing is left that would make the retry ignore --base-port.
    base = free_base_port(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        r = raftctl("local", "up", "--dir", str(d), "--base-port", str(base))
    assert r.returncode != 0 and "n2 exited" in r.stderr, r.stderr
    assert "started" not in r.stderr and "run the command again" in r.stderr, r.stderr
    assert not (d / "cluster.yaml").exists() and (d / "n2" / "raftd.log").exists()
    for _ in range(3):  # three consecutive free ports: retry if one was taken meanwhile
        r = raftctl("local", "up", "--dir", str(d), "--base-port", str(free_base_port(3)))
        if r.returncode == 0:
            break
    assert r.returncode == 0 and "--base-port ignored" not in r.stderr, r.stderr
    assert r.stderr.strip().endswith(f"started n1, n2, n3 in {d}"), r.stderr
    eps = r.stdout.split("endpoints: ")[1].split()[0]
    manual = None
    try:
        # Trial item 8 caveat: a removed server still running is stopped by `local up`, which
        # then says so once and counts only the nodes that stay.
        assert raftctl("-e", eps, "member", "remove", "n3").returncode == 0
        r = raftctl("local", "up", "--dir", str(d))
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines()[-2:] == [
            f"stopped n3: removed from the cluster's configuration (`raftctl local remove ID "
            f"--dir {d}` forgets it)", f"all 2 nodes already running in {d}"], r.stderr
        assert "n3" not in pids(d)
        original = pids(d)

        # Trial item 6: a copy lists the original's (absolute) data dirs and holds its pid
        # files: down and up on the copy refuse in one line and leave the original alone.
        broken = tmp_path / "broken"
        shutil.copytree(d, broken, symlinks=True)
        for cmd in ("down", "up"):
            r = raftctl("local", cmd, "--dir", str(broken))
            assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
            assert "outside" in r.stderr and "nothing was done" in r.stderr, r.stderr
        assert all(alive(p) for p in original.values())
        # A pid file naming a raftd that serves another directory is no node of this one,
        # even when the cluster file is fixed to list the copy's own node dirs.
        text = (broken / "cluster.yaml").read_text()
        (broken / "cluster.yaml").write_text(text.replace(str(d), str(broken)))
        r = raftctl("local", "down", "--dir", str(broken))
        assert r.returncode == 0 and r.stdout.startswith("stopped: none"), r.stdout + r.stderr
        assert all(alive(p) for p in original.values())

        # Trial item 8 caveat: the README's layout, config DIR/n6.yaml and data DIR/n6/.
        (d / "n6").mkdir(mode=0o700)
        port = free_base_port(1)
        (d / "n6.yaml").write_text(f"id: n6\nlisten: 127.0.0.1:{port}\ndata_dir: ./n6\n"
                                   f"join: true\n")
        manual = subprocess.Popen([sys.executable, "-m", "raftd", "--config", "n6.yaml"],
                                  cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: (d / "n6" / "raftd.pid").exists())
        r = raftctl("local", "down", "--dir", str(d))
        assert r.returncode == 0 and r.stdout.startswith("stopped: n1, n2, n6"), r.stdout
        assert manual.wait(10) is not None
        assert not any(alive(p) for p in original.values())
    finally:
        if manual is not None and manual.poll() is None:
            manual.send_signal(signal.SIGKILL)
        raftctl("local", "down", "--dir", str(d))
