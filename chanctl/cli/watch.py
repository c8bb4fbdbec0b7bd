"""``chanctl watch``: the live dashboard of a server's topics, presence and traffic (admin plane).

Textual is imported inside the command, so that every other command starts without it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from chanctl.cli.common import err, positive_seconds
from chanctl.cli.target import ConfigOpt, TokenOpt, UrlOpt, UserOpt, exit_code_for, resolve_token, resolve_url

__all__ = ["watch"]


def watch(
    user: UserOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", callback=positive_seconds, help="Seconds for the connection, the join and each command.")] = 10.0,
) -> None:
    """Live dashboard: topics, presence lists, traffic. Needs an admin token (--user mints one).

    Keys: ? shows them all; q or Ctrl+C quit, s sort topics, p pause traffic, / filter traffic by topic,
    Enter open a traffic line, d disconnect the selected socket.
    Exit 2 usage, 3 refused, 4 unreachable (when it cannot connect at start).
    """
    server = resolve_url(url, config)
    identity = resolve_token(user, token, config, admin=True)
    from chanctl.tui import WatchApp

    app = WatchApp(server, identity, timeout=timeout)
    app.run()
    if app.failure is not None:
        err(f"chanctl: {app.failure}")
        raise typer.Exit(int(exit_code_for(app.failure)))
    raise typer.Exit(0)
