"""The tests of test_snapshot_install.py catch the old code: each mutant patches
raftd/runtime/snapshotting.py at run time to bring back one bug fixed there (issue 14 §2-§3,
issue 21 §5).  Production code has no switch for them."""
from __future__ import annotations

import asyncio

import pytest

from raftd.runtime import snapshotting
from tests.runtime.test_snapshot_install import _append_during_install, _every_step

pytestmark = [pytest.mark.timeout(150)]


def test_mutant_install_not_crash_atomic_is_caught(tmp_path, monkeypatch):
    """Without the start-up reconciliation, a crash after the commit point leaves the
    follower wedged (issue 14 §2) or failing every save (issue 21 §5, the WAL ends before
    the snapshot): the crash test catches it at those steps."""
    monkeypatch.setattr(snapshotting.Snapshotter, "reconcile", lambda self, info: None)

    async def both():
        return await asyncio.gather(
            _every_step(tmp_path / "conflicts", 8, ("adopted", "restored")),
            _every_step(tmp_path / "behind", 0, ("adopted",)))

    (tmp_path / "conflicts").mkdir()
    (tmp_path / "behind").mkdir()
    conflicts, behind = asyncio.run(both())
    assert set(conflicts) == {"adopted", "restored"}, conflicts
    assert set(behind) == {"adopted"}, behind
    for failure in (*conflicts.values(), *behind.values()):
        # Caught by the check after the restart, not by a slow crash.
        assert "the crash at" not in failure, failure


def test_mutant_install_by_log_length_is_caught(tmp_path, monkeypatch):
    """Before issue 14 §3 the install compacted whenever the core's log (grown by an append
    during the install) was longer than the snapshot, whatever the stored term there."""
    def by_log_length(st, meta, keep_from=None):
        st.compact(meta.index, meta.term)
        return True

    monkeypatch.setattr(snapshotting, "fit_wal", by_log_length)
    with pytest.raises(AssertionError, match="timed out|stopped"):
        asyncio.run(_append_during_install(tmp_path))
