"""The ``chanctl`` entry point: the command groups, and one place that turns errors into exit codes."""

from __future__ import annotations

import sys

import typer

from chanctl import __version__
from chanctl.cli import bench, check, init, listen, revoke, send, serve, token, watch
from chanctl.cli.exit_codes import ExitCode
from chanctl.errors import ChanctlError

__all__ = ["app", "main"]

app = typer.Typer(
    name="chanctl",
    help="Run, inspect and talk to Phoenix Channels servers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals hold tokens and secrets
    add_completion=False,
)
token.app.command("revoke")(revoke.revoke)
app.add_typer(token.app, name="token")
app.command()(serve.serve)
app.command()(check.check)
app.command()(init.init)
app.command()(send.send)
app.command()(listen.listen)
app.command()(watch.watch)
app.command()(bench.bench)


def _version(value: bool) -> None:
    if value:
        print(f"chanctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Run, inspect and talk to Phoenix Channels servers."""


def main() -> None:
    try:
        app()
    except ChanctlError as exc:
        sys.stderr.write(f"chanctl: {exc}\n")
        sys.exit(int(ExitCode.ERROR))
