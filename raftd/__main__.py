"""raftd --config node.yaml: run one Raft node in the foreground.

Logs go to stderr with the node id and term.  SIGTERM/SIGINT stop it cleanly.  Exit codes:
0 stopped cleanly, 1 fatal error (e.g. corrupt log, failed fsync), 2 bad configuration.
SIGHUP reloads the TLS certificate files (docs/SECURITY.md).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from raftd.config import ConfigError, load_config

if TYPE_CHECKING:
    from raftd.runtime.server import RaftServer  # imported once logging is set up


class _NodeFilter(logging.Filter):
    def __init__(self, node_id: str):
        super().__init__()
        self.node_id = node_id
        self.server: RaftServer | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        node = self.server.node if self.server is not None else None
        record.node = self.node_id
        record.term = node.term if node is not None else "-"
        return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="raftd", description="Run one raftd node in the foreground.")
    ap.add_argument("--config", "-c", required=True, help="node configuration (YAML)")
    ap.add_argument("--uvloop", action="store_true",
                    help="use uvloop if installed (same as event_loop: uvloop in the config)")
    a = ap.parse_args(argv)
    try:
        cfg = load_config(a.config)
    except ConfigError as e:
        print(f"raftd: {e}", file=sys.stderr)
        return 2
    flt = _NodeFilter(cfg.id)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(flt)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(node)s term=%(term)s] %(name)s: %(message)s"))
    logging.basicConfig(level=cfg.log_level.upper(), handlers=[handler])
    # A TLS peer that closes during our handshake (e.g. a reachability probe) makes asyncio
    # warn about its own stream internals; it means nothing to an operator.
    logging.getLogger("asyncio").addFilter(
        lambda r: "eof_received() has no effect when using ssl" not in r.getMessage())
    if a.uvloop and cfg.tls is not None:
        print("raftd: --uvloop cannot be used with tls (see event_loop in the README)",
              file=sys.stderr)
        return 2
    if a.uvloop or cfg.event_loop == "uvloop" or (cfg.event_loop == "auto" and cfg.tls is None):
        # uvloop: about 0.5 ms less per sequential write here (README, Performance).
        try:
            import uvloop  # noqa: PLC0415 - optional dependency
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            if cfg.event_loop == "uvloop" or a.uvloop:
                logging.getLogger("raftd").warning("uvloop is not installed; using asyncio")
    profile_to = os.environ.get("RAFTD_PROFILE")
    if profile_to:
        # Developers: every call of this process, written to FILE when it stops (read it with
        # python -m pstats FILE; "{id}" in FILE becomes the node id, so one variable serves a
        # whole local cluster); docs/PERFORMANCE.md.  cProfile roughly halves the speed.
        import cProfile  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        prof = cProfile.Profile()
        try:
            return prof.runcall(asyncio.run, _run(cfg, flt))
        finally:
            prof.dump_stats(profile_to.replace("{id}", cfg.id))
    return asyncio.run(_run(cfg, flt))


async def _run(cfg, flt: _NodeFilter) -> int:
    from raftd.runtime.server import RaftServer  # noqa: PLC0415 - after logging is set up
    from raftd.runtime.server import StartupError  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
    from raftd.storage.wal import CorruptLogError  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    server = RaftServer(cfg)
    flt.server = server
    try:
        await server.start()
    except CorruptLogError as e:
        # Damage no crash explains: say how to rebuild this server from the others (ids are
        # never reused, so it comes back under a new one; docs/OPERATIONS in README).
        logging.getLogger("raftd").critical(
            "refusing to start: %s; no crash leaves this, so the disk or a tool damaged it. To "
            "rebuild this server from the others: move %s aside, start raftd on %s with a new "
            "id (ids are never reused) and join: true, then run `raftctl member replace --add "
            "NEWID=%s --remove %s`", e, cfg.data_dir, cfg.listen, cfg.listen, cfg.id)
        return 1
    except StartupError as e:
        logging.getLogger("raftd").critical("refusing to start: %s", e)
        return 1
    except OSError as e:
        logging.getLogger("raftd").critical("cannot start: %s", e)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(server.stop()))
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)  # certificate rotation
    await server.stopped.wait()
    return server.exit_code


if __name__ == "__main__":
    sys.exit(main())
