"""A small data-driven test runner in the style of cockroachdb/datadriven (used by etcd-io/raft).

A test file is a sequence of blocks; lines starting with ``#`` and blank lines between blocks are
comments and are kept verbatim:

    # what this file shows
    command arg1 arg2 key=value key=(a b c) (x y)
    ----
    expected output lines
    (a blank line or the end of the file ends the block)

Each command is handed to a handler, a function ``TestData -> str``; its output is compared with
the expected text.  On the first mismatch the test fails with the file name, the line number of
the command and a unified diff.  ``REWRITE=1 pytest tests/interaction`` writes the produced
outputs back into the files instead (read the diff before committing it!).

An output may not contain blank lines (they would end the block); an empty output is written
as ``ok``.
"""
from __future__ import annotations

import difflib
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

SEPARATOR = "----"


class DataDrivenError(Exception):
    """A malformed test file, or a command the handler rejects."""


@dataclass
class CmdArg:
    key: str  # "" for a positional argument
    vals: list[str] = field(default_factory=list)
    group: bool = False  # written with parentheses: key=(a b) or (a b)

    def __str__(self) -> str:
        v = f"({' '.join(self.vals)})" if self.group else (self.vals[0] if self.vals else "")
        return f"{self.key}={v}" if self.key else v


@dataclass
class TestData:
    pos: str  # "file:line" of the command
    cmd: str
    args: list[CmdArg]
    cmd_line: str
    expected: str

    # --- helpers for handlers ---------------------------------------------------------------
    def positional(self) -> list[CmdArg]:
        return [a for a in self.args if not a.key]

    def get(self, key: str, default: object = None) -> object:
        for a in self.args:
            if a.key == key:
                return a.vals if a.group else a.vals[0]
        return default

    def has(self, key: str) -> bool:
        return any(a.key == key for a in self.args)

    def fatal(self, msg: str) -> DataDrivenError:
        return DataDrivenError(f"{self.pos}: {self.cmd_line}: {msg}")


def tokenize(line: str) -> list[str]:
    """Split on spaces, keeping ``( ... )`` groups and ``"..."`` strings together."""
    toks, cur, depth, quote = [], "", 0, False
    for ch in line:
        if quote:
            cur += ch
            quote = ch != '"'
        elif ch == '"':
            cur += ch
            quote = True
        elif ch == "(":
            depth += 1
            cur += ch
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise DataDrivenError(f"unbalanced ')' in {line!r}")
            cur += ch
        elif ch.isspace() and depth == 0:
            if cur:
                toks.append(cur)
            cur = ""
        else:
            cur += ch
    if depth or quote:
        raise DataDrivenError(f"unbalanced '(' or '\"' in {line!r}")
    if cur:
        toks.append(cur)
    return toks


def _parse_value(text: str) -> tuple[list[str], bool]:
    if text.startswith("(") and text.endswith(")"):
        return text[1:-1].split(), True
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return [text[1:-1]], False
    return [text], False


def parse_command(line: str) -> tuple[str, list[CmdArg]]:
    toks = tokenize(line)
    cmd, args = toks[0], []
    for tok in toks[1:]:
        key, eq, val = tok.partition("=")
        if eq and not key.startswith(("(", '"')):
            vals, group = _parse_value(val)
            args.append(CmdArg(key, vals, group))
        else:
            vals, group = _parse_value(tok)
            args.append(CmdArg("", vals, group))
    return cmd, args


def parse_file(path: str) -> list[str | TestData]:
    """The file as a list of verbatim comment/blank lines (str) and command blocks."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    name = os.path.relpath(path)
    items: list[str | TestData] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            items.append(line)
            i += 1
            continue
        lineno = i + 1
        i += 1
        if i >= len(lines) or lines[i] != SEPARATOR:
            raise DataDrivenError(f"{name}:{lineno}: expected {SEPARATOR!r} after the command")
        i += 1
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        cmd, args = parse_command(line)
        items.append(TestData(f"{name}:{lineno}", cmd, args, line, "\n".join(expected)))
    return items


def run_file(path: str, handler: Callable[[TestData], str], rewrite: bool | None = None) -> None:
    """Run every block of ``path`` through ``handler``; fail (or rewrite) on a mismatch."""
    import pytest  # only needed when running under pytest

    if rewrite is None:
        rewrite = os.environ.get("REWRITE", "") not in ("", "0")
    items = parse_file(path)
    out_lines: list[str] = []
    for item in items:
        if isinstance(item, str):
            out_lines.append(item)
            continue
        try:
            actual = handler(item)
        except Exception:  # noqa: BLE001 - reported with the position of the command
            pytest.fail(f"{item.pos}: {item.cmd_line}\nthe command raised:\n"
                        f"{traceback.format_exc()}", pytrace=False)
        actual = "\n".join(ln.rstrip() for ln in actual.strip("\n").splitlines()) or "ok"
        if any(not ln.strip() for ln in actual.splitlines()):
            pytest.fail(f"{item.pos}: {item.cmd_line}\nthe output contains a blank line:\n{actual}",
                        pytrace=False)
        if rewrite:
            out_lines += [item.cmd_line, SEPARATOR, *actual.splitlines()]
            continue
        if actual != item.expected:
            diff = "\n".join(difflib.unified_diff(
                item.expected.splitlines(), actual.splitlines(), "expected", "actual",
                lineterm=""))
            pytest.fail(f"{item.pos}: {item.cmd_line}\noutput mismatch (REWRITE=1 accepts the "
                        f"new output):\n{diff}", pytrace=False)
    if rewrite:
        text = "\n".join(out_lines).rstrip("\n") + "\n"
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
