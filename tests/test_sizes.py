"""Size limits (issue 17 §2): no file in raftd/ or raftctl/ over 700 lines, no function over 80.

A module that grows past the limit has more than one job: split it by responsibility (as
runtime/server.py was into connections.py, requests.py, savepipeline.py, startup.py), not by
cutting at line 700.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 80

# Allowed over the limit, with the size they have today: a known offender may shrink, not grow.
KNOWN = {
    # One handler per message type, as it is (issue 17 §2 lets the core's node stay whole).
    "raftd/core/node.py": 915,
}


@functools.cache
def offenders() -> dict[str, int]:
    """Every file over MAX_FILE_LINES and function over MAX_FUNCTION_LINES: name -> lines."""
    found: dict[str, int] = {}
    for top in ("raftd", "raftctl"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            lines = len(text.splitlines())
            if lines > MAX_FILE_LINES:
                found[rel] = lines
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    assert node.end_lineno is not None
                    size = node.end_lineno - node.lineno + 1
                    if size > MAX_FUNCTION_LINES:
                        found[f"{rel}:{node.name}"] = size
    return found


def test_no_new_file_or_function_over_the_limits():
    new = {k: v for k, v in offenders().items() if k not in KNOWN}
    assert not new, (f"over {MAX_FILE_LINES} lines per file or {MAX_FUNCTION_LINES} per "
                     f"function: {new}; split by responsibility")


def test_known_offenders_do_not_grow():
    found = offenders()
    grown = {k: (found[k], limit) for k, limit in KNOWN.items() if found.get(k, 0) > limit}
    assert not grown, f"(lines now, allowed): {grown}"

