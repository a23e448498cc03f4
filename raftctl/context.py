"""Options every command takes, and the plumbing that turns errors into exit codes."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from .errors import REJECTED, USAGE, CliError, fail
from .output import Output, closed_stdout

DEFAULT_ENDPOINTS = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

EndpointsOpt = Annotated[Optional[str], typer.Option(
    "--endpoints", "-e", envvar="RAFTCTL_ENDPOINTS",
    help=f"host:port,... of cluster nodes [default: {DEFAULT_ENDPOINTS}]")]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", help="table or json [default: table]")]
TimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help="seconds to wait for the cluster [default: 5]")]


# raftctl gives up this soon when every endpoint refuses the connection (nothing listens,
# so nothing was sent): `no raftd at ADDR (connection refused)`, exit 3, instead of retrying
# for the whole --timeout.
REFUSED_GRACE = 0.3


@dataclass
class Settings:
    endpoints: list[str]
    out: Output
    timeout: float
    command: str = "raftctl"  # e.g. "raftctl snapshot save", for messages


def settings(ctx: typer.Context, endpoints: str | None = None, output: str | None = None,
             timeout: float | None = None) -> Settings:
    """Merge per-command options over the global ones (both spellings work:
    `raftctl -o json status` and `raftctl status -o json`)."""
    root = (ctx.find_root().obj or {}) if ctx is not None else {}
    # The first one given wins, even if empty: `-e ""` is a mistake, never "the demo's nodes".
    eps = next((e for e in (endpoints, root.get("endpoints"), os.environ.get("RAFTCTL_ENDPOINTS"))
                if e is not None), DEFAULT_ENDPOINTS)
    fmt = output or root.get("output") or "table"
    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"must be table or json, not {fmt!r}", param_hint="--output")
    endpoints_list = [e.strip() for e in eps.split(",") if e.strip()]
    if not endpoints_list:
        raise typer.BadParameter("no endpoint given (host:port,...)", param_hint="--endpoints")
    timeout = timeout if timeout is not None else root.get("timeout")
    if timeout is not None and not timeout > 0:
        raise typer.BadParameter(f"must be a number of seconds above 0, not {timeout:g}",
                                 param_hint="--timeout")
    from raftd.validate import split_address  # noqa: PLC0415 - keeps --help fast
    for e in endpoints_list:
        try:
            split_address(e)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--endpoints") from None
    return Settings(endpoints_list, Output(fmt), timeout or 5.0,
                    ctx.command_path if ctx is not None else "raftctl")


def run(s: Settings, fn: Callable[[], int | None]) -> None:
    """Run a command body; map any error to one line on stderr and an exit code."""
    try:
        code = fn() or 0
    except typer.Exit:
        raise
    except BrokenPipeError:  # `raftctl kv list | head`: quietly, 141 (output.closed_stdout)
        raise typer.Exit(closed_stdout()) from None
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the CLI's error boundary
        if getattr(e, "code", None) == "permission_denied":
            e = CliError(permission_message(s.command, str(e)), REJECTED, "permission_denied")
        raise typer.Exit(fail(e, s.out.json)) from None
    raise typer.Exit(code)


def permission_message(command: str, message: str) -> str:
    """The refused request may be a step of the command (`member list` and `snapshot save`
    read the status first): name the command the operator ran, not the request ("app1 (role
    client) may not status: ..." becomes "raftctl member list: app1 (role client) may not run
    this command: ...")."""
    who, sep, rest = message.partition(" may not ")
    if sep and ": " in rest:
        message = f"{who} may not run this command: {rest.split(': ', 1)[1]}"
    return f"{command}: {message}"


def usage_error(message: str) -> CliError:
    return CliError(message, USAGE, "usage")
