"""Output sink shared by every command: tables for people, JSON for scripts.

Data goes to stdout; errors and progress go to stderr, so `raftctl ... -o json | jq` always
sees clean JSON."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from functools import cached_property

if TYPE_CHECKING:
    from rich.console import Console


class Output:
    """rich is imported only by the commands that draw tables (``console``/``err``): plain
    lines and JSON are written directly, which keeps `raftctl kv get` quick to start."""

    def __init__(self, fmt: str = "table"):
        if fmt not in ("table", "json"):
            raise ValueError(f"--output must be table or json, not {fmt!r}")
        self.fmt = fmt

    @cached_property
    def console(self) -> "Console":
        from rich.console import Console  # noqa: PLC0415 - see the class docstring
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # piped: never truncate
        console.on_broken_pipe = _broken_pipe  # type: ignore[method-assign]
        return console

    @cached_property
    def err(self) -> "Console":
        from rich.console import Console  # noqa: PLC0415 - see the class docstring
        return Console(stderr=True)

    @property
    def json(self) -> bool:
        return self.fmt == "json"

    def emit_json(self, obj: Any) -> None:
        import json  # noqa: PLC0415 - lazy import: only -o json needs it (start-up time)
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")

    def result(self, data: Any, text: "str | list[str] | Callable[[], None] | None" = None,
               *, error: str | None = None) -> None:
        """A command's result, so commands need not branch on the format: ``data`` as JSON
        with -o json; otherwise ``error`` (one line for people) on stderr and ``text`` on
        stdout: a line, several lines, or a callable that prints (a table, raw bytes)."""
        if self.json:
            self.emit_json(data)
            return
        if error is not None:
            self.info(error)
        if text is None:
            return
        if callable(text):
            text()
            return
        for line in [text] if isinstance(text, str) else text:
            self.line(line)

    def table(self, columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
        from rich.table import Table  # noqa: PLC0415 - see the class docstring
        t = Table(title=title, header_style="bold")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        self.console.print(t)

    def line(self, text: str) -> None:
        # Plain text, one line as given: a long path is never cut at the console width (a
        # script greps for it; the terminal wraps it anyway).
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def info(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def json_default(o: Any) -> Any:
    """json.dumps default: bytes as text when they decode, else hex."""
    if isinstance(o, bytes):
        try:
            return o.decode()
        except UnicodeDecodeError:
            return o.hex()
    raise TypeError(f"cannot encode {type(o).__name__}")


STDOUT_CLOSED = 141  # the reader of stdout went away: see closed_stdout


def _broken_pipe() -> None:
    """rich's own handling exits 1 at once; raise instead, so that the command ends the way
    every raftctl command does when its reader goes away (closed_stdout)."""
    raise BrokenPipeError


def closed_stdout() -> int:
    """The reader of stdout went away (`raftctl kv list | head -2`): end quietly, as Python's
    documentation advises (stdout onto /dev/null, so the flush at exit cannot fail again),
    with 141, what the shell reports for a tool killed by SIGPIPE (128 + 13) such as `cat`
    or `seq`: a script under `set -o pipefail` sees that the output was cut short, as with
    those (click's own handling says 1, which reads as "the operation failed")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return STDOUT_CLOSED
