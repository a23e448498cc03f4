"""`raftctl status --watch`: the rendering (pure functions over hand-made snapshots), the piped
mode, and the full-screen dashboard in a real terminal (tmux) against real raftd processes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from rich.console import Console

from raftctl import dashboard
from tests.e2e.harness import LocalCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --------------------------------------------------------------------- rendering --
def node(nid, role="follower", term=2, commit=0, applied=None, last=None, reachable=True,
         progress=None, contact=20, events=(), snapshot_index=0):
    if not reachable:
        return {"id": nid, "address": f"10.0.0.{nid[1:]}:7000", "role": None, "term": None,
                "commit_index": None, "applied_index": None, "last_log_index": None,
                "reachable": False, "pid": None, "_raw": None}
    applied = commit if applied is None else applied
    last = commit if last is None else last
    raw = {"id": nid, "role": role, "term": term, "commit_index": commit,
           "applied_index": applied, "last_log_index": last, "snapshot_index": snapshot_index,
           "progress": progress or {}, "last_leader_contact_ms": 0 if role == "leader" else contact,
           "events": list(events)}
    return {"id": nid, "address": f"10.0.0.{nid[1:]}:7000", "role": role, "term": term,
            "commit_index": commit, "applied_index": applied, "last_log_index": last,
            "reachable": True, "pid": 1000 + int(nid[1:]), "_raw": raw}


def snap(t, nodes, leader="n1", term=2, voters=("n1", "n2", "n3"), learners=(), joint=False):
    return {"time": t, "leader": leader, "term": term, "nodes": nodes,
            "configuration": {"voters": list(voters), "learners": list(learners),
                              "joint": joint}}


T0 = 1_700_000_000.0
ELECTED = {"time": T0 - 5, "kind": "leader", "text": "leader is n1 (term 2)"}


def history():
    def leader(commit, n3_match):
        return node("n1", "leader", commit=commit, events=[ELECTED],
                    progress={"n2": {"match_index": commit, "next_index": commit + 1},
                              "n3": {"match_index": n3_match, "next_index": n3_match + 1}})
    return [
        snap(T0, [leader(100, 90), node("n2", commit=100, events=[ELECTED]),
                  node("n3", commit=90, applied=88, events=[ELECTED])]),
        snap(T0 + 1, [leader(150, 140), node("n2", commit=150), node("n3", commit=140)]),
        snap(T0 + 2, [leader(250, 90), node("n2", commit=250, contact=35),
                      node("n3", reachable=False)]),
    ]


def render_text(renderable, width=160) -> str:
    console = Console(record=True, width=width, color_system=None, file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text()


def row_of(text: str, address: str) -> str:
    rows = [line for line in text.splitlines() if address in line and "went down" not in line]
    assert len(rows) == 1, text
    return rows[0]


def test_render_dashboard_snapshots():
    text = render_text(dashboard.render(history()))
    assert "leader: n1" in text and "term: 2" in text
    assert "configuration: stable" in text and "voters: n1,n2,n3" in text
    # n3 is down: the quorum holds, but no more voter may fail (issue 16 trial)
    assert "quorum: healthy (2/3 voters reachable, need 2)   tolerates 0 failures" in text
    # node rows: n2 up with no lag; n3 down, its lag from the leader's match_index (250 - 90)
    n2 = row_of(text, "10.0.0.2:7000").split()
    assert n2[:3] == ["n2", "10.0.0.2:7000", "follower"] and n2[-1] == "up"
    assert n2[-3:-1] == ["0", "35"]  # lag, ms since leader contact
    n3 = row_of(text, "10.0.0.3:7000").split()
    assert n3[0] == "n3" and n3[-1] == "DOWN" and "160" in n3
    leader = row_of(text, "10.0.0.1:7000").split()
    assert leader[2] == "leader" and leader[-1] == "up"
    # throughput: 50/s then 100/s -> a half block then a full block; current rate 100/s
    assert "▅█" in text and "current: 100.0/s" in text and "peak: 100.0/s" in text
    # events: node rings deduplicated (3 nodes reported the same election: 3 rows, one per
    # node), plus what the dashboard derived: n3 went down
    assert text.count("leader is n1 (term 2)") == 3
    assert "n3 went down (10.0.0.3:7000 unreachable)" in text
    # the down event is the newest: it is listed first
    assert text.index("n3 went down") < text.index("leader is n1")


def test_header_warns_of_expiring_certificates():
    nodes = [node("n1", "leader", commit=5), node("n2", commit=5), node("n3", commit=5)]
    nodes[1]["cert_warning"] = "certificate /etc/raftd/node.crt expires in 9.5 days"
    text = render_text(dashboard.render([snap(1.0, nodes)]))
    assert "WARNING n2: certificate /etc/raftd/node.crt expires in 9.5 days" in text
    assert "WARNING n1" not in text


def test_first_snapshot_lag_uses_match_index_and_applied():
    s = history()[0]
    a = dashboard.analyze(s)
    assert a["lags"] == {"n1": 0, "n2": 0, "n3": 10}
    # without leader progress, a follower's lag is the leader's last index - its applied index
    s["nodes"][0]["_raw"]["progress"] = {}
    assert dashboard.analyze(s)["lags"]["n3"] == 12
    assert dashboard.analyze(s, max_lag=11)["lagging"] == ["n3"]


def test_no_quorum_and_derived_leader_events():
    before = history()[1]
    after = snap(T0 + 3, [node("n1", reachable=False), node("n2", "candidate", term=3, commit=150),
                          node("n3", reachable=False)], leader=None, term=3)
    a = dashboard.analyze(after)
    assert not a["quorum"] and not a["healthy"]
    assert any("no quorum: 1 of 3" in r for r in a["reasons"]) and "no leader" in a["reasons"]
    texts = [e["text"] for e in dashboard.derive_events(before, after)]
    assert "n1 went down (10.0.0.1:7000 unreachable)" in texts
    assert "no leader (was n1)" in texts and "term changed: 2 -> 3" in texts
    text = render_text(dashboard.render([before, after]))
    assert "leader: NONE" in text and "quorum: LOST" in text
    back = snap(T0 + 4, [node("n1", reachable=True, term=3, commit=151),
                         node("n2", "leader", term=3, commit=151), node("n3", reachable=False)],
                leader="n2", term=3)
    texts = [e["text"] for e in dashboard.derive_events(before, back)]
    assert "leader changed: n1 -> n2 (term 3)" in texts


def test_sparkline_and_rates():
    assert dashboard.sparkline([]) == ""
    assert dashboard.sparkline([0, 0, 0]) == "▁▁▁"
    assert dashboard.sparkline([0, 7, 14]) == "▁▅█"
    assert len(dashboard.sparkline(list(range(500)), width=60)) == 60
    assert dashboard.commit_rates(history()) == [50.0, 100.0]
    # a poll without a leader counts as no commits (never negative)
    h = history()
    h[1]["leader"] = None
    assert dashboard.commit_rates(h) == [0.0, 0.0]


def test_dashboard_state_keeps_events_and_a_minute():
    d = dashboard.Dashboard()
    h = history()
    new = [d.add(s) for s in h]
    assert [e["text"] for e in new[0]].count("leader is n1 (term 2)") == 3
    assert new[1] == []  # nothing new: the rings repeat
    assert [e["text"] for e in new[2]] == ["n3 went down (10.0.0.3:7000 unreachable)"]
    for i in range(100):
        d.add(snap(T0 + 3 + i, [node("n1", "leader", commit=250)]))
    assert d.history[-1]["time"] - d.history[0]["time"] <= 65
    assert any(e["text"] == "n3 went down (10.0.0.3:7000 unreachable)" for e in d.events)
    render_text(d.render())


# ------------------------------------------------------------------ live cluster --
@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path / "c", 3).start()
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop()


def raftctl(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "raftctl.main", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_watch_piped_prints_plain_tables(cluster):
    eps = ",".join(cluster.endpoints)
    r = raftctl("-e", eps, "status", "--watch", "--interval", "0.3", "--count", "2")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\x1b[" not in out  # not a terminal: no escape sequences, nothing redrawn
    titles = [line for line in out.splitlines() if "  leader: n" in line]
    assert len(titles) == 2, out
    assert out.count("┃ id ") == 2  # two table headers
    for nid in cluster.nodes:
        assert sum(1 for line in out.splitlines() if f"│ {nid} " in line) == 2

    r = raftctl("-e", eps, "-o", "json", "status", "--watch", "--interval", "0.3",
                "--count", "2")
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(docs) == 2 and docs[0]["leader"] == docs[1]["leader"] is not None
    assert {n["id"] for n in docs[0]["nodes"]} == set(cluster.nodes)
    assert docs[1]["time"] > docs[0]["time"]



def test_watch_usage_errors():
    from typer.testing import CliRunner

    from raftctl.main import app
    for args in (["status", "--count", "2"], ["status", "--watch", "--interval", "0"],
                 ["status", "--watch", "--count", "0"]):
        r = CliRunner().invoke(app, ["-e", "127.0.0.1:1", *args])
        assert r.exit_code == 2, (args, r.output)


class Tmux:
    def __init__(self):
        self.sock = f"raftctl-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("TMUX", "COLUMNS", "LINES", "TMUX_PANE")}

    def __call__(self, *args) -> str:
        r = subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args],
                           capture_output=True, text=True, timeout=10, env=self.env, cwd=ROOT)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def start(self, command: str) -> None:
        # remain-on-exit: when the command ends, the pane stays so we can read its exit status
        self("start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
             "new-session", "-d", "-s", "S", "-x", "200", "-y", "50", "-c", ROOT, command)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "S")

    def wait(self, pred, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if pred(text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True,
                       env=self.env)
        try:  # tmux may leave its socket file behind
            os.unlink(os.path.join(self.env.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}",
                                   self.sock))
        except OSError:
            pass


def _row(text: str, address: str) -> str | None:
    rows = [line for line in text.splitlines() if address in line and "unreachable" not in line]
    return rows[0] if rows else None


def _events_panel(text: str) -> str:
    i = text.find("recent events")
    return text[i:] if i >= 0 else ""


# Runs the command in the pane and records its exit status in a file (tmux's own
# #{pane_dead_status} is sometimes left empty).  It ignores the Ctrl-C meant for its child.
WRAPPER = """\
import subprocess, sys
child = subprocess.Popen(sys.argv[2:])
while True:
    try:
        rc = child.wait()
        break
    except KeyboardInterrupt:
        pass
with open(sys.argv[1], "w") as f:
    f.write(str(rc))
"""


def test_watch_dashboard_in_a_terminal(cluster, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    interval = 0.5
    eps = ",".join(cluster.endpoints)
    leader = cluster.wait_leader()
    wrapper, rc_file = tmp_path / "wrapper.py", tmp_path / "exit_status"
    wrapper.write_text(WRAPPER)
    tmux = Tmux()
    try:
        tmux.start(f"exec {sys.executable} {wrapper} {rc_file} {sys.executable} -m raftctl.main "
                   f"-e {eps} status --watch --interval {interval}")
        addrs = {nid: n.address for nid, n in cluster.nodes.items()}

        def all_up(text: str) -> bool:
            return (f"leader: {leader} " in text and "quorum: healthy" in text
                    and all((_row(text, a) or "").split()[:1] == [nid] and
                            (_row(text, a) or "").rstrip().endswith("up")
                            for nid, a in addrs.items()))
        text = tmux.wait(all_up, 20, "every node up and the leader shown")
        assert "recent events" in text and "commits/s" in text

        # kill -9 the leader: marked down within two refreshes
        cluster.nodes[leader].kill9()
        t0 = time.monotonic()
        tmux.wait(lambda t: (_row(t, addrs[leader]) or "").rstrip().endswith("DOWN"), 10,
                  f"{leader} marked DOWN")
        assert time.monotonic() - t0 <= 2 * interval + 1.0

        # the election that follows: a new leader in the header and in the events panel
        new = cluster.wait_leader(exclude={leader})
        text = tmux.wait(lambda t: f"leader: {new} " in t
                         and f"leader is {new}" in _events_panel(t), 15,
                         f"new leader {new} in the header and the events")
        events = _events_panel(text)
        assert f"{leader} went down" in events
        assert f"{new} became leader" in events

        # Ctrl-C: the command ends with status 0 and the alternate screen is gone
        tmux("send-keys", "-t", "S", "C-c")
        tmux.wait(lambda t: rc_file.exists() and rc_file.read_text() != "", 10,
                  "the dashboard to exit")
        assert rc_file.read_text() == "0"
        after = tmux.wait(lambda t: tmux("display-message", "-p", "-t", "S",
                                         "#{pane_dead}").strip() == "1", 10,
                          "the pane's command to end")
        assert "raftd cluster" not in after and "recent events" not in after
        assert "Traceback" not in after
    finally:
        tmux.kill()


def test_fault_tolerance_of_stable_and_joint_configurations():
    """Issue 18 §4: how many voters may fail while a quorum remains; joint: the smaller."""
    ft = dashboard.fault_tolerance
    assert ft({"voters": ["n1"]}) == 0
    assert ft({"voters": ["n1", "n2", "n3"]}) == 1
    assert ft({"voters": ["n1", "n2", "n3", "n4"]}) == 1
    assert ft({"voters": [f"n{i}" for i in range(5)]}) == 2
    assert ft({"voters": [f"n{i}" for i in range(5)], "joint": True,
               "old_voters": ["n1", "n2", "n3"]}) == 1
    assert ft({"voters": []}) is None
    assert dashboard.tolerates(1) == "tolerates 1 failure"
    assert dashboard.tolerates(2) == "tolerates 2 failures"
