"""Output sink shared by every command: tables for people, JSON for scripts.

Data goes to stdout; errors and progress go to stderr, so `raftctl ... -o json | jq` always
sees clean JSON."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table


class Output:
    def __init__(self, fmt: str = "table"):
        if fmt not in ("table", "json"):
            raise ValueError(f"--output must be table or json, not {fmt!r}")
        self.fmt = fmt
        self.console = Console()
        if not self.console.is_terminal:
            self.console = Console(width=200)  # piped: never truncate columns
        self.err = Console(stderr=True)

    @property
    def json(self) -> bool:
        return self.fmt == "json"

    def emit_json(self, obj: Any) -> None:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n")

    def table(self, columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
        t = Table(title=title, header_style="bold")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        self.console.print(t)

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def info(self, text: str) -> None:
        # soft_wrap: a long path must stay on its line (a script greps for it; the terminal
        # wraps it anyway), not be cut into two lines at the console width.
        self.err.print(text, highlight=False, markup=False, soft_wrap=True)


def _default(o: Any) -> Any:
    if isinstance(o, bytes):
        try:
            return o.decode()
        except UnicodeDecodeError:
            return o.hex()
    raise TypeError(f"cannot encode {type(o).__name__}")
