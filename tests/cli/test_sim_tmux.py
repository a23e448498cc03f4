"""`raftctl sim` in a real terminal (tmux): the live view shows n1..n5 and a leader; `k` crashes
the leader, the view shows it down, then a new leader (issue 18 §1)."""
from __future__ import annotations

import re
import shutil
import sys

import pytest

from tests.cli.test_dashboard import WRAPPER, Tmux

pytestmark = pytest.mark.timeout(120)


def _roles(text: str) -> dict[str, str]:
    """node id -> role as the nodes panel shows it."""
    return dict(re.findall(r"│ (n\d)\s+(LEADER|follower|candidate|pre-candidate|down|learner)\b",
                           text))


def test_sim_live_view_crash_the_leader_with_k(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    wrapper = tmp_path / "wrap.py"
    wrapper.write_text(WRAPPER)
    rc_file = tmp_path / "rc"
    tmux = Tmux()
    try:
        tmux.start(f"exec {sys.executable} {wrapper} {rc_file} {sys.executable} -m raftctl.main "
                   f"sim --nodes 5 --seed 3")

        def one_leader(text: str) -> bool:
            roles = _roles(text)
            return (sorted(roles) == [f"n{i}" for i in range(1, 6)]
                    and list(roles.values()).count("LEADER") == 1)

        text = tmux.wait(one_leader, 30, "n1..n5 and one leader")
        old = next(n for n, r in _roles(text).items() if r == "LEADER")
        tmux("send-keys", "-t", "S", "k")
        # The nodes panel shows it down and the narrative says what happened.
        tmux.wait(lambda t: _roles(t).get(old) == "down" and f"{old} (leader" in t, 10,
                  f"{old} shown down")
        tmux.wait(lambda t: any(r == "LEADER" and n != old for n, r in _roles(t).items()), 30,
                  "a new leader")
        tmux("send-keys", "-t", "S", "q")
        tmux.wait(lambda t: rc_file.exists(), 10, "raftctl sim to exit on q")
        assert rc_file.read_text() == "0"
    finally:
        tmux.kill()
