"""One validator for the YAML files operators write (raftd's config, raftctl's inventory):
the same messages everywhere, `<file>: <where>: key '<key>': <why>`, exit code 2 upstream.
Also the rules for ids and addresses that the wire protocol enforces too.  Imports nothing of
raftd, so any layer may use it."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

# A server id: what configs, HELLO, membership changes and status carry.  Short and plain, so
# a peer cannot make a node hold megabytes of ids (issue 19 §8) and logs stay readable.
NODE_ID_MAX = 64
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def node_id_problem(node_id: object) -> str | None:
    """Why ``node_id`` is not a valid server id, or None."""
    if not isinstance(node_id, str) or not node_id:
        return "a server id must be a non-empty string"
    if len(node_id) > NODE_ID_MAX:
        return f"a server id has at most {NODE_ID_MAX} characters"
    if not _NODE_ID.fullmatch(node_id):
        return (f"bad server id {node_id!r} (letters, digits, '_', '.', '-'; "
                f"starting with a letter or digit)")
    return None


def type_name(want: type | tuple[type, ...]) -> str:
    if isinstance(want, tuple):
        return " or ".join("null" if t is type(None) else t.__name__ for t in want)
    return want.__name__


def has_type(value: Any, want: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not an int (YAML `yes` must not pass as a port)."""
    wanted = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool) and bool not in wanted:
        return False
    return isinstance(value, want)


class Validator:
    """Checks for one file; ``error`` builds the exception its callers raise."""

    def __init__(self, source: str, error: Callable[[str], Exception]) -> None:
        self.source = source
        self.error = error

    def err(self, where: str, key: str, why: str) -> Exception:
        return self.error(f"{self.source}: {where + ': ' if where else ''}key '{key}': {why}")

    def check_keys(self, section: dict[str, Any], known: Iterable[str], where: str = "",
                   prefix: str = "") -> None:
        known = tuple(known)
        for key in section:
            if key not in known:
                raise self.err(where, f"{prefix}{key}",
                               f"unknown key (known keys: {', '.join(sorted(known))})")

    def typed(self, section: dict[str, Any], key: str, want: type | tuple[type, ...],
              where: str = "",
              prefix: str = "", required: bool = False, default: Any = None) -> Any:
        if key not in section:
            if required:
                raise self.err(where, prefix + key, "missing (required)")
            return default
        v = section[key]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not has_type(v, want):
            raise self.err(where, prefix + key,
                           f"expected {type_name(want)}, got {type(v).__name__} {v!r}")
        return v

    def address(self, where: str, key: str, value: str) -> tuple[str, int]:
        """A host:port (see split_address)."""
        try:
            return split_address(value)
        except ValueError as e:
            raise self.err(where, key, str(e)) from None

    def port(self, where: str, key: str, value: int) -> int:
        if not 0 < value < 65536:
            raise self.err(where, key, f"port out of range: {value}")
        return value


def split_address(addr: str) -> tuple[str, int]:
    """'host:port' -> (host, port); raises ValueError with a readable reason."""
    if not isinstance(addr, str) or ":" not in addr:
        raise ValueError(f"bad address {addr!r} (expected host:port)")
    host, _, port_s = addr.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"bad address {addr!r} (empty host)")
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"bad address {addr!r} (port is not a number)") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad address {addr!r} (port out of range)")
    if any(c.isspace() for c in host):
        raise ValueError(f"bad address {addr!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part and (part.isalnum() or "-" in part) for part in host.split(".")):
            raise ValueError(f"bad address {addr!r} (not an IP address or host name)") from None
    return host, port
