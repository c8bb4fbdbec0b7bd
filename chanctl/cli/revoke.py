"""``chanctl token revoke TOKEN`` / ``chanctl token revoke --user ID``: through the admin plane.

The server closes the sockets the revocation names (4403, "token revoked") and refuses the token,
or every token of the user signed up to now, until it would have expired anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer

from chanctl.cli.common import claim_value, die, out, positive_seconds
from chanctl.cli.exit_codes import ExitCode
from chanctl.cli.target import ConfigOpt, UrlOpt, resolve_url, run_client
from chanctl.cli.token import auth_from
from chanctl.client import Client
from chanctl.protocol.messages import ADMIN_TOPIC

__all__ = ["REVOKER", "revoke"]

REVOKER = "chanctl-revoke"
"""The user id of the admin token this command mints when no ``--admin-token`` is given."""


def revoke(
    token: Annotated[str | None, typer.Argument(help="The token to revoke.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Revoke every token of this user id signed up to now.")] = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    admin_token: Annotated[str | None, typer.Option("--admin-token", help="An admin token to act with (default: mint one with the config's secret).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", callback=positive_seconds, help="Seconds to wait for the server.")] = 5.0,
) -> None:
    """Revoke TOKEN, or every token of --user, on a running server; its sockets close (4403).

    Exit 0 revoked, 1 error reply (e.g. the token is already invalid), 2 usage, 3 refused, 4 unreachable.
    """
    if (token is None) == (user is None):
        die("revoke takes a TOKEN or --user ID (one of them)", ExitCode.USAGE)
    server = resolve_url(url, config)
    if admin_token is None:
        signer, admin_claim = auth_from(config)
        admin_token = signer.mint(REVOKER, {admin_claim: True}, ttl=60)
    command: dict[str, Any] = {"token": token} if token is not None else {"user": claim_value(user or "")}
    run_client(lambda: _revoke(server, admin_token, command, json, timeout))


async def _revoke(url: str, admin_token: str, command: dict[str, Any], json: bool, timeout: float) -> int:
    async with Client(url, token=admin_token, timeout=timeout, reconnect=False) as client:
        channel = client.channel(ADMIN_TOPIC)
        await channel.join(timeout)
        reply = await channel.push("revoke", command, timeout)
    if json:
        out(orjson.dumps({"status": reply.status, "response": reply.response}).decode())
    elif reply.status == "ok":
        until = datetime.fromtimestamp(reply.response["until"], UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        closed = reply.response["closed"]
        out(f"revoked: closed {closed} socket{'s' * (closed != 1)}; refused until {until}")
    else:
        out(f"{reply.status} {orjson.dumps(reply.response).decode()}")
    return int(ExitCode.OK if reply.status == "ok" else ExitCode.ERROR)
