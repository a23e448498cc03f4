"""Free ports for tests, chosen below the kernel's ephemeral range.

`bind(host, 0)` hands out a port from the ephemeral range, the same range the kernel draws
outgoing connections' source ports from.  raftd binds its outgoing connections to its listen
address, so while a test node is stopped, a peer's connection on the same address can take the
node's port, and the restart fails with "address already in use" (CI, stop 25:
test_snapshot_install[wal-conflicts]).  A port below that range is never taken that way."""
from __future__ import annotations

import os
import random
import socket
from pathlib import Path

from raftctl.commands.local import ports_free  # the check raftd's listener agrees with

_LOWEST = 10000  # above the demo's 7001-7003 and most well-known services
_HIGHEST = 20000  # `raftctl local up` draws its base ports from 20000-32000
_rng = random.Random(os.getpid())  # a different sequence per process, the same for a rerun
_handed_out: set[tuple[str, int]] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str) -> int:
    """A port free on `host` (as raftd's listener binds: TIME-WAIT leftovers do not count), not
    handed out before by this process."""
    high = min(_ephemeral_low(), _HIGHEST)
    if high - _LOWEST >= 1000:
        for _ in range(500):
            port = _rng.randrange(_LOWEST, high)
            if (host, port) not in _handed_out and ports_free(port, 1, host):
                _handed_out.add((host, port))
                return port
    with socket.socket() as s:  # a kernel with (almost) no ports below its ephemeral range
        s.bind((host, 0))
        port = s.getsockname()[1]
    _handed_out.add((host, port))
    return port
