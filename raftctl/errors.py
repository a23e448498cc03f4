"""How raftctl fails: one readable line on stderr and a documented exit code.

Exit codes: 0 ok; 1 the operation failed (e.g. key not found, compare-and-swap did not swap);
2 usage error (bad option, bad config file); 3 cluster unavailable (no leader, node unreachable,
timeout); 4 rejected by the cluster (bad request, change in progress); 130 interrupted.
Tracebacks only with RAFTCTL_DEBUG=1."""
from __future__ import annotations

import os
import sys

OK, FAILED, USAGE, UNAVAILABLE, REJECTED, INTERRUPTED = 0, 1, 2, 3, 4, 130


class CliError(Exception):
    def __init__(self, message: str, code: int = FAILED, kind: str = "failed"):
        super().__init__(message)
        self.code = code
        self.kind = kind


def error_kind(class_name: str) -> str:
    """JSON error codes are snake_case everywhere: CorruptSnapshotError -> corrupt_snapshot."""
    name = class_name.removesuffix("Error") or class_name
    return "".join("_" + c.lower() if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


def _is_a(err: BaseException, module: str, name: str) -> bool:
    """isinstance(err, module.name), without importing the module to ask: when it is not
    imported, nothing raised one of its errors (raftd.config imports yaml: 30 ms of a failing
    `raftctl kv get`, issue 16 §6)."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(err, getattr(mod, name))


def fail(err: BaseException, output_json: bool) -> int:
    """Print ``err`` the raftctl way and return the exit code."""
    from raftd.client_errors import RequestError, Timeout, Unavailable  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    if isinstance(err, CliError):
        code, kind = err.code, err.kind
    elif isinstance(err, (Unavailable, Timeout)):
        code, kind = UNAVAILABLE, err.code
    elif isinstance(err, RequestError):
        code, kind = REJECTED, err.code
    elif _is_a(err, "raftd.tls", "TLSConfigError"):
        code, kind = USAGE, "tls_config"
    elif _is_a(err, "raftd.config", "ConfigError"):
        code, kind = USAGE, "config"
    elif isinstance(err, KeyboardInterrupt):
        code, kind = INTERRUPTED, "interrupted"
    else:
        code, kind = FAILED, error_kind(type(err).__name__)
    msg = str(err) or kind
    if os.environ.get("RAFTCTL_DEBUG") == "1":
        import traceback  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        traceback.print_exception(err)
    if output_json:
        import json  # noqa: PLC0415 - lazy import: only -o json needs it (start-up time)
        sys.stderr.write(json.dumps({"error": kind, "message": msg, "exit_code": code}) + "\n")
    else:
        # One line per failure (e.g. one per node that did not start), each one readable alone.
        sys.stderr.write("".join(f"raftctl: error: {line}\n" for line in msg.splitlines()))
    return code
