"""One list of error codes (issue 17 §3): every code raftd puts on the wire is an ErrorCode,
and docs/PROTOCOL.md §6.4 documents exactly the ErrorCode members."""
from __future__ import annotations

import re
from pathlib import Path

from raftd.wire.codec import ErrorCode

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
    assert len(found) > 15
    known = {c.value for c in ErrorCode} | {"invalid_command"}  # the state machine's, sent
    unknown = {code: where for code, where in found.items() if code not in known}  # as bad_request
    assert not unknown, f"add these to ErrorCode and docs/PROTOCOL.md §6.4: {unknown}"


def test_protocol_md_lists_exactly_the_error_codes():
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    section = text[text.index("### 6.4 Error codes"):text.index("## 7.")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert documented == {c.value for c in ErrorCode}, (
        documented ^ {c.value for c in ErrorCode})
