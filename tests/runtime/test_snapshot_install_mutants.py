"""The tests of test_snapshot_install.py catch the old code: each mutant (RAFTD_MUTANTS,
raftd/runtime/snapshotting.py) brings back one bug fixed there (issue 14 §2-§3, issue 21 §5)."""
from __future__ import annotations

import asyncio

import pytest

from raftd.runtime.snapshotting import MUTANTS_ENV
from tests.runtime.test_snapshot_install import _append_during_install, _every_step

pytestmark = pytest.mark.timeout(60)


def test_mutant_install_not_crash_atomic_is_caught(tmp_path, monkeypatch):
    """Without the start-up reconciliation, a crash after the commit point leaves the
    follower wedged (issue 14 §2) or failing every save (issue 21 §5, the WAL ends before
    the snapshot): the crash test catches it at those steps, and only those."""
    monkeypatch.setenv(MUTANTS_ENV, "install-not-crash-atomic")

    async def both():
        return await asyncio.gather(
            _every_step(tmp_path / "conflicts", 8, ("received", "adopted", "restored", "wal")),
            _every_step(tmp_path / "behind", 0, ("adopted",)))

    (tmp_path / "conflicts").mkdir()
    (tmp_path / "behind").mkdir()
    conflicts, behind = asyncio.run(both())
    assert set(conflicts) == {"adopted", "restored"}, conflicts
    assert set(behind) == {"adopted"}, behind


def test_mutant_install_by_log_length_is_caught(tmp_path, monkeypatch):
    monkeypatch.setenv(MUTANTS_ENV, "install-by-log-length")
    with pytest.raises(AssertionError, match="timed out|stopped"):
        asyncio.run(_append_during_install(tmp_path))
