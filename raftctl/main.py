"""raftctl: the operator's CLI for raftd clusters.

Exit codes: 0 ok; 1 operation failed (key not found, cas did not swap); 2 usage error;
3 cluster unavailable (no leader, unreachable, timeout); 4 rejected by the cluster; 130 interrupted.
"""
from __future__ import annotations

import typer

from .commands import bench, kv, local, member, snapshot, status
import os
from typing import Annotated, Optional

from .commands import health, leader
from .commands import bootstrap, certs
from .context import EndpointsOpt, OutputOpt, TimeoutOpt
from .errors import CliError, fail

app = typer.Typer(
    name="raftctl", help=__doc__, no_args_is_help=True, add_completion=True,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def root(ctx: typer.Context, endpoints: EndpointsOpt = None, output: OutputOpt = None,
         timeout: TimeoutOpt = None,
         cacert: Annotated[Optional[str], typer.Option(
             "--cacert", envvar="RAFTCTL_CACERT",
             help="CA certificate of a TLS cluster (turns TLS on)")] = None,
         cert: Annotated[Optional[str], typer.Option(
             "--cert", envvar="RAFTCTL_CERT", help="client certificate (raftctl certs issue)")] = None,
         key: Annotated[Optional[str], typer.Option(
             "--key", envvar="RAFTCTL_KEY", help="private key of --cert")] = None) -> None:
    ctx.obj = {"endpoints": endpoints, "output": output, "timeout": timeout}
    # The client library reads its TLS files from these variables (raftd/client.py), so
    # every command, and any raftctl it starts, talks TLS once they are given here.
    for name, value in (("RAFTCTL_CACERT", cacert), ("RAFTCTL_CERT", cert),
                        ("RAFTCTL_KEY", key)):
        if value:
            os.environ[name] = os.path.abspath(value)


app.add_typer(local.app, name="local")
app.add_typer(kv.app, name="kv")
app.add_typer(member.app, name="member")
app.add_typer(snapshot.app, name="snapshot")
status.register(app)
health.register(app)
app.add_typer(leader.app, name="leader")
bench.register(app)
bootstrap.register(app)
app.add_typer(bootstrap.ssh_app, name="ssh")
app.add_typer(certs.app, name="certs")


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for -o json (read from argv: a usage error may come
    before the options are parsed)."""
    for i, a in enumerate(argv):
        if a in ("-o", "--output") and i + 1 < len(argv):
            if argv[i + 1] == "json":
                return True
        elif a in ("-ojson", "--output=json"):
            return True
    return False


def main(argv: list[str] | None = None) -> None:
    """Run raftctl.  Usage errors are one line on stderr (a JSON object with -o json) and
    exit 2, like every other error, instead of click's three-line usage block."""
    import sys  # noqa: PLC0415

    args = sys.argv[1:] if argv is None else argv
    try:
        rv = app(args=args, prog_name="raftctl", standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(fail(KeyboardInterrupt(), _wants_json(args)))
    except Exception as e:  # noqa: BLE001 - only click's own exceptions are handled here
        if type(e).__name__ == "Abort":
            sys.exit(fail(KeyboardInterrupt(), _wants_json(args)))
        if not hasattr(e, "format_message") or not hasattr(e, "exit_code"):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `raftctl` / `raftctl kv`: help
            sys.stderr.write(e.format_message() + "\n")
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        sys.exit(fail(CliError(e.format_message() + hint, e.exit_code, "usage"),
                      _wants_json(args)))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
