"""Which server ids and ports a local cluster has used, so `raftctl local up` does not restart
a removed server and `raftctl local add` never picks an id the cluster had (issue 16 §8).

Ids are never reused (raftd refuses to add a removed id back): a server's data dir records the
ids it saw removed in ``removed_ids`` (raftd/runtime/removed.py), which these functions only
read, through raftd.recovery (raftctl opens no data-dir file itself, issue 17 §5)."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from raftd import recovery


def removed_on_disk(layout: list[dict]) -> set[str]:
    """The ids any node of ``layout`` recorded as removed in its data dir (read only)."""
    out: set[str] = set()
    for n in layout:
        d = Path(n["data_dir"])
        if not d.is_dir():
            continue
        try:
            out |= recovery.removed_ids(d)
        except ValueError:
            continue  # a damaged file: raftd itself will say so when that node starts
    return out


def removed_by_cluster(st: dict) -> set[str]:
    """The ids the reachable nodes of a gather_status result report removed."""
    out: set[str] = set()
    for n in st["nodes"]:
        out |= set((n.get("_raw") or {}).get("removed_ids") or [])
    return out


def members(st: dict) -> set[str]:
    conf = st["configuration"]
    return {*conf["voters"], *conf["learners"], *conf.get("old_voters", [])}


def addresses(st: dict) -> set[str]:
    """Every member address the reachable nodes know of."""
    out: set[str] = set()
    for n in st["nodes"]:
        out |= set(((n.get("_raw") or {}).get("configuration") or {})
                   .get("addresses", {}).values())
    return out


def new_id(used: set[str]) -> str:
    """``n<k>`` for k one above every ``n<number>`` in ``used``."""
    nums = [int(m.group(1)) for u in used if (m := re.fullmatch(r"n(\d+)", u))]
    return f"n{max(nums, default=0) + 1}"


def new_port(taken: set[int], is_free: Callable[[int], bool]) -> int:
    """The first port above every port in ``taken`` that ``is_free``."""
    port = max(taken, default=7000) + 1
    for _ in range(200):
        if port <= 65535 and is_free(port):
            return port
        port += 1
    raise RuntimeError(f"no free port above {max(taken, default=7000)}")
