"""Failed snapshot transfers back off (issue 14 §4): a follower that cannot take a snapshot
used to cost about 5,000 failed transfers a second, each a connect attempt and a warning.

A real RaftServer's Snapshotter sends to an address where nothing listens; the core's part
(a failed transfer is reported, the follower is probed again, the snapshot is sent again) is
played by re-sending as soon as the failure is reported."""
from __future__ import annotations

import asyncio
import logging

import pytest

from raftd.config import parse_config
from raftd.core import Configuration, InstallSnapshot
from raftd.runtime.server import RaftServer
from tests.e2e.harness import free_port

pytestmark = pytest.mark.timeout(60)


def test_failed_transfers_double_up_to_an_election_timeout_and_warn_once(tmp_path, caplog):
    async def run() -> tuple[int, int]:
        addr = f"127.0.0.1:{free_port('127.0.0.1')}"
        cfg = parse_config({"id": "n1", "listen": addr, "data_dir": str(tmp_path / "n1"),
                            "peers": {"n1": addr}, "tick_ms": 10, "election_timeout_ms": 200,
                            "heartbeat_interval_ms": 20}, "test")
        srv = RaftServer(cfg, rng_seed=1)
        await srv.start()
        try:
            nowhere = f"127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
            msg = InstallSnapshot("n1", "n2", 1, 1, 1, Configuration.make(["n1"]).encode())
            attempts = 0

            def core_retries(peer: str, ok: bool) -> None:
                nonlocal attempts
                if not ok:
                    attempts += 1
                    srv.snapshots.send(msg, nowhere)

            srv.node.report_snapshot = core_retries
            srv.snapshots.send(msg, nowhere)
            await asyncio.sleep(2.0)
            return attempts, srv.snapshots.transfers["failed"]
        finally:
            await srv.stop(transfer=False)

    with caplog.at_level(logging.WARNING, logger="raftd.snapshot"):
        attempts, failed = asyncio.run(run())
    # 20, 40, 80, 160 ms, then every 200 ms: about 12 in 2 s (thousands without a back-off)
    assert 5 <= failed <= 20 and attempts <= failed, (attempts, failed)
    warnings = [r for r in caplog.records if "snapshot transfer to n2 failed" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
