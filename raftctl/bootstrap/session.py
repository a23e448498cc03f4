"""One bootstrap/ssh/teardown command's session: the inventory, the open SSH connections,
the progress display, and how per-host failures are reported (one line per host)."""
from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..cluster import gather_status
from ..context import Settings, run
from ..errors import FAILED, CliError
from ..inventory import Host, Inventory, load_inventory
from ..ssh import HostError, Remote, Reporter, connect
from .certs import ensure_tls


def stderr_line(line: str) -> None:
    """One line on stderr, never wrapped (rich would wrap at 80 columns when piped)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class HostsFailed(CliError):
    """Some hosts failed; each HostError is one line naming its host."""

    def __init__(self, errors: list[HostError], summary: str, result: dict | None = None):
        if len(errors) == 1:
            message = f"{errors[0]}{'; ' + summary if summary else ''}"
        else:
            message = summary
        first = errors[0] if errors else None
        super().__init__(message, first.code if first else FAILED,
                         first.kind if first else "failed")
        self.errors = errors
        self.result = result


@dataclass
class Node:
    host: Host
    remote: Remote
    python: tuple[int, ...] = ()
    probe: dict = field(default_factory=dict)
    status: str = ""  # what this run did: started, running, upgraded, restarted, added, ...
    pid: int | None = None
    manager: str = "process"

    @property
    def running(self) -> bool:
        return bool(self.probe.get("status", {}).get("running"))

    @property
    def installed(self) -> bool:
        return bool(self.probe.get("status", {}).get("installed"))

    @property
    def state(self) -> dict:
        return self.probe.get("status", {}).get("state") or {}


class Session:
    """The inventory, the options and the open SSH connections of one command."""

    def __init__(self, s: Settings, inventory: Path, accept_new: bool):
        self.s = s
        self.inv: Inventory = load_inventory(inventory)
        ensure_tls(self.inv, create=False)  # this cluster's admin certificate, if it has one
        self.inventory_path = inventory
        self.accept_new = accept_new
        self.remotes: dict[str, Remote] = {}
        self.rep: Reporter | None = None

    def note(self, text: str) -> None:
        if self.rep is not None:
            self.rep.note(text)
        else:
            stderr_line(text)

    def step(self, h: Host, text: str) -> None:
        if self.rep is not None:
            self.rep.step(h, text)

    def done(self, h: Host, text: str, ok: bool = True) -> None:
        if self.rep is not None:
            self.rep.done(h, text, ok)

    def connect(self, h: Host) -> Remote:
        if h.name not in self.remotes:
            self.step(h, f"connecting to {h.user}@{h.address}:{h.ssh_port}")
            self.remotes[h.name] = connect(self.inv, h, self.accept_new, self.note)
        return self.remotes[h.name]

    def close(self) -> None:
        for r in self.remotes.values():
            r.close()
        self.remotes.clear()

    def args(self, h: Host, **extra) -> dict:
        return {"root": h.root, "data_dir": h.data_dir, "unit": h.unit, "name": h.name,
                "cluster": self.inv.name, "install_dir": h.install_dir, **extra}

    def endpoints(self, hosts: list[Host] | None = None) -> list[str]:
        return [h.endpoint for h in (hosts if hosts is not None else self.inv.hosts)]

    def cluster_status(self, hosts: list[Host] | None = None, timeout: float = 0.8) -> dict:
        return asyncio.run(gather_status(self.endpoints(hosts), timeout))

    def log_tail(self, h: Host, lines: int = 10) -> str:
        try:
            got = self.remotes[h.name].call("logs", **self.args(h, lines=lines))["lines"]
        except (HostError, KeyError):
            return "(log unavailable)"
        return "\n".join("    " + ln for ln in got) if got else "    (log is empty)"


def host_errors(results) -> list[HostError]:
    out = []
    for item, _, err in results:
        if err is None:
            continue
        if isinstance(err, HostError):
            out.append(err)
        elif isinstance(err, KeyboardInterrupt):
            raise err
        else:
            h = item.host if isinstance(item, Node) else item
            out.append(HostError(h, f"{type(err).__name__}: {err}"))
    return out


def session_run(s: Settings, sess_factory: Callable[[], Session],
                 body: Callable[[Session], int]) -> None:
    """Run ``body`` with a Session; per-host failures become one line each on stderr."""
    def wrapped() -> int:
        sess = sess_factory()
        try:
            return body(sess)
        except HostsFailed as e:
            if s.out.json and e.result is not None:
                s.out.emit_json(e.result)
            if len(e.errors) > 1:
                for err in e.errors:
                    stderr_line(json.dumps({"error": err.kind, "host": err.host.name,
                                            "message": str(err), "exit_code": err.code})
                                if s.out.json else f"raftctl: error: {err}")
            raise
        finally:
            sess.close()
    run(s, wrapped)

