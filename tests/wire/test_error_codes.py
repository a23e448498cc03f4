"""One list of error codes (issue 17 §3): every code raftd puts on the wire is an ErrorCode,
and docs/PROTOCOL.md §6.4 documents exactly the ErrorCode members."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from raftd.wire.codec import ErrorCode, error_reply

ROOT = Path(__file__).resolve().parents[2]
# The places a code is written as a literal: error dicts, ChangeError, ERROR frames, the
# state machine's result errors.
LITERAL = re.compile(r'(?:"code": |ChangeError\(|encode_error\(|"error": )"([a-z_]+)"')


def _codes_in_source() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "raftd").rglob("*.py")):
        for m in LITERAL.finditer(path.read_text()):
            found.setdefault(m.group(1), []).append(str(path.relative_to(ROOT)))
    return found


def test_every_code_raftd_sends_is_an_error_code():
    found = _codes_in_source()
    assert len(found) > 5  # the runtime's go through error_reply (see below); these remain
    known = {c.value for c in ErrorCode} | {"invalid_command"}  # the state machine's, sent
    unknown = {code: where for code, where in found.items() if code not in known}  # as bad_request
    assert not unknown, f"add these to ErrorCode and docs/PROTOCOL.md §6.4: {unknown}"


def test_protocol_md_lists_exactly_the_error_codes():
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    section = text[text.index("### 6.4 Error codes"):text.index("## 7.")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert documented == {c.value for c in ErrorCode}, (
        documented ^ {c.value for c in ErrorCode})


def _error_dicts_outside_error_reply() -> list[str]:
    """Dict displays with a "code" key in raftd, other than the one in error_reply."""
    found = []
    for path in sorted((ROOT / "raftd").rglob("*.py")):
        tree = ast.parse(path.read_text())
        allowed: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and fn.name == "error_reply":
                allowed |= {id(n) for n in ast.walk(fn)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Dict) and id(node) not in allowed
                    and any(isinstance(k, ast.Constant) and k.value == "code"
                            for k in node.keys)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_error_replies_are_built_by_error_reply_only():
    """Issue 17 §3: one helper builds error replies, from an ErrorCode."""
    assert _error_dicts_outside_error_reply() == []


def test_error_reply_takes_only_error_codes():
    assert error_reply(ErrorCode.NOT_LEADER, "no", leader="n2") == {
        "code": "not_leader", "message": "no", "leader": "n2"}
    with pytest.raises(ValueError):
        error_reply("not_a_code", "no")  # type: ignore[arg-type]  # the check under test
