"""The checker's configuration invariant (issue 14 §1) catches a core whose configuration
outlives the log entry that carried it, and holds on the fixed core."""
from types import SimpleNamespace

import pytest

from raftd.core.node import RaftNode
from raftd.sim.checker import SafetyChecker, SafetyViolation
from tests.core.harness import Net
from tests.core.test_config_follows_log import C0, replay_issue_14_1


def _replay_under_checker():
    net = Net(5, conf=C0, check_quorum=False)
    checker = SafetyChecker(net.ids, C0)
    net.observer = lambda nid: checker.observe(SimpleNamespace(id=nid, raft=net.nodes[nid]), 0)
    for _ in replay_issue_14_1(net):
        pass
    return checker


def test_fixed_core_keeps_the_configuration_invariant():
    _replay_under_checker()


def _old_install_bookkeeping(self):
    # What node.py did before the fix: keep configurations above the snapshot index even when
    # Figure 13 step 7 discarded the entries that carried them.
    self._config_log = [(i, c) for i, c in self._config_log if i > self.log.snapshot_index]
    self.config = self._config_log[-1][1] if self._config_log else self._base_config


def test_checker_catches_a_configuration_from_discarded_entries(monkeypatch):
    monkeypatch.setattr(RaftNode, "_configs_follow_log", _old_install_bookkeeping)
    with pytest.raises(SafetyViolation, match="1: configuration in force .* is not its snapshot"):
        _replay_under_checker()
