"""Which server a client command talks to, and as whom (``send``, ``listen``).

Server: ``--url``, then ``--config`` (its ``server`` section), then ``CHANCTL_URL``, then
``./chanctl.yaml``. Identity: ``--user ID`` mints a token with the config's secret (as
``chanctl token`` does), else ``--token``, else ``CHANCTL_TOKEN``, else the operator: whoever holds
the secret (``--config``, ``./chanctl.yaml`` or ``CHANCTL_SECRET``) gets a token minted on the fly
with the admin claim, as Phoenix code on the server may do anything (``Endpoint.broadcast``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from chanctl.cli.common import die, err, find_config, load_or_die
from chanctl.cli.exit_codes import ExitCode
from chanctl.cli.common import claim_value
from chanctl.cli.token import auth_from
from chanctl.escape import escape
from chanctl.errors import ClientError, ConnectionLost, ConnectRefused, JoinRefused

if TYPE_CHECKING:
    from chanctl.config.model import ServerConfig

__all__ = [
    "OPERATOR", "ConfigOpt", "Identity", "TokenOpt", "UrlOpt", "UserOpt", "exit_code_for", "resolve_identity", "resolve_token",
    "resolve_url", "run_client",
]

UrlOpt = Annotated[str | None, typer.Option("--url", help="Server socket URL, e.g. ws://127.0.0.1:4000/socket.")]
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Server config: its URL and token secret.")]
UserOpt = Annotated[str | None, typer.Option("--user", "-u", help="Connect as this user id (mints a token with the config's secret).")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Socket token (default: $CHANCTL_TOKEN).")]

OPERATOR = "operator"
"""The user id of tokens minted for whoever holds the secret, when no --user/--token is given."""

T = TypeVar("T")


def server_url(server: ServerConfig) -> str:
    """The socket URL a client on this machine uses for a config's ``server`` section."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(server.host, server.host)
    if ":" in host:
        host = f"[{host}]"
    return f"ws://{host}:{server.port}{server.path}"


def resolve_url(url: str | None, config: str | None, source: str = "--url") -> str:
    """``source`` names where ``url`` came from in messages (``--url`` or ``CHANCTL_URL``)."""
    if url:
        if not url.startswith(("ws://", "wss://", "http://", "https://")):
            die(f"{source} must start with ws://, wss://, http:// or https://, got {url!r}", ExitCode.USAGE)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        except ValueError as exc:
            die(f"{source} {url!r} is not a valid URL: {exc}", ExitCode.USAGE)
        if not parts.hostname:
            die(f"{source} {url!r} names no host", ExitCode.USAGE)
        return url
    if config:
        return server_url(load_or_die(find_config(config)).config.server)  # type: ignore[arg-type]
    env = os.environ.get("CHANCTL_URL")
    if env:
        return resolve_url(env, None, "CHANCTL_URL")
    path = find_config(None)
    if path is not None:
        return server_url(load_or_die(path).config.server)
    die("no server given: pass --url or --config FILE, set CHANCTL_URL, or create ./chanctl.yaml", ExitCode.USAGE)


@dataclass(frozen=True)
class Identity:
    """Whom a client command connects as, and whether it is the operator."""

    token: str | Callable[[], str]
    """A token; or, when we hold the secret (``--user``, the operator), a function minting a fresh
    one per call, so the client can reconnect and refresh in band past the first token's expiry."""
    operator: bool = False
    """Minted from the secret because no --user, --token or CHANCTL_TOKEN was given."""


def resolve_identity(user: str | None, token: str | None, config: str | None, *, admin: bool = False) -> Identity:
    """``--user`` (minted, with the admin claim when ``admin``), ``--token``, ``CHANCTL_TOKEN``, else
    the operator; exit 2 for both --user and --token, or for no identity and no secret."""
    if user is not None and token is not None:
        die("--user mints a token and --token gives one: pass only one of them", ExitCode.USAGE)
    token = token if user is not None else (token or os.environ.get("CHANCTL_TOKEN"))
    if user is None and token:
        return Identity(token)
    if user is None and find_config(config) is None and not os.environ.get("CHANCTL_SECRET"):
        die("no identity: pass --user ID (mints a token with the config's secret), --token TOKEN, set CHANCTL_TOKEN, "
            "or hold the secret (--config FILE, ./chanctl.yaml or CHANCTL_SECRET) to act as the operator", ExitCode.USAGE)
    signer, admin_claim = auth_from(config)
    user_id = OPERATOR if user is None else claim_value(user)
    claims = {admin_claim: True} if admin or user is None else {}
    return Identity(lambda: signer.mint(user_id, claims), operator=user is None)


def resolve_token(user: str | None, token: str | None, config: str | None, *, admin: bool = False) -> str:
    """The token of :func:`resolve_identity`, minted once."""
    identity = resolve_identity(user, token, config, admin=admin).token
    return identity if isinstance(identity, str) else identity()


REJECTING_CLOSES = frozenset({1007, 1008, 1009, 1011})
"""Close codes by which the server rejects what was sent (bad data, policy, too big, a crash):
an error (1), not a server that went away (4)."""


def exit_code_for(exc: ClientError) -> ExitCode:
    """Refused (handshake or join) is 3; a close that rejects what was sent (1009) is 1; timeouts,
    unreachable servers and lost connections are 4."""
    if isinstance(exc, (ConnectRefused, JoinRefused)):
        return ExitCode.REFUSED
    if isinstance(exc, ConnectionLost) and exc.code in REJECTING_CLOSES:
        return ExitCode.ERROR
    return ExitCode.UNREACHABLE


def run_client(main: Callable[[], Awaitable[int]]) -> None:
    """Run a client command's coroutine; client errors become their exit code and one stderr line,
    Ctrl+C exits 130 and a closed stdout 0."""
    try:
        code = asyncio.run(main())
    except ClientError as exc:
        err(f"chanctl: {escape(str(exc))}")  # it may quote the server: an HTTP body, a close reason
        raise typer.Exit(int(exit_code_for(exc))) from None
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    except BrokenPipeError:
        # Whoever read stdout has what it wanted (`chanctl listen ... | head -1`): a normal end.
        # Point stdout at /dev/null so that the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = ExitCode.OK
    raise typer.Exit(int(code))
