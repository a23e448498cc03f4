"""Before a node reads its data dir: the directory exists (durably), only its owner may write
it, and this process holds its lock (issue 21 §6, §7).  Split from server.py (issue 17 §2)."""
from __future__ import annotations

import logging
import os

from raftd.config import NodeConfig
from raftd.storage.durable import mkdir_durable
from raftd.storage.lock import DataDirInUse, DataDirLock

log = logging.getLogger("raftd")


class StartupError(Exception):
    """The node cannot start safely (a message for the operator)."""


def prepare_data_dir(cfg: NodeConfig, lock: DataDirLock) -> None:
    """Create the data dir if need be, check its mode and take its lock (StartupError if the
    node must not start)."""
    if cfg.fsync:
        # Synced into its parent: a power loss must not drop the directory (and every
        # acknowledged write in it) that a crash would have kept (issue 21 §6).
        mkdir_durable(cfg.data_dir)
    else:
        os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
    mode = os.stat(cfg.data_dir).st_mode & 0o777
    if mode & 0o022:
        raise StartupError(f"data_dir {cfg.data_dir} is writable by group or others "
                           f"(mode {mode:o}): anyone could rewrite the log; run "
                           f"`chmod 700 {cfg.data_dir}`")
    try:
        locked = lock.acquire()  # before anything reads or writes the WAL
    except DataDirInUse as e:
        raise StartupError(str(e)) from None
    if not locked:
        # Two daemons on one data dir write the same WAL at their own offsets (issue 21
        # §7): without the lock, refuse unless the operator opted out knowingly.
        why = lock.failure or "no lock"
        if cfg.data_dir_lock:
            raise StartupError(
                f"cannot lock {cfg.data_dir}/LOCK ({why}), so nothing stops a second raftd "
                f"on this data dir; use a filesystem with locks, or set data_dir_lock: "
                f"false and make sure yourself that only one raftd uses it")
        log.warning("data_dir_lock: false: running without the data dir lock (%s); make "
                    "sure no other raftd uses %s", why, cfg.data_dir)
