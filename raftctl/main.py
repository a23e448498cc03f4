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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
