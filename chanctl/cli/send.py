"""``chanctl send TOPIC EVENT [PAYLOAD]``: connect, join, push, print each reply.

PAYLOAD is JSON, ``@file``, or ``-`` for stdin with one JSON message per line: every message goes
out on the same connection and the replies print in order. ``--broadcast`` publishes through the
admin plane instead (Phoenix's ``Endpoint.broadcast``): the topic is not joined, and the reply says
how many subscribers got it. The operator (no ``--user``/``--token``, the secret at hand) sends that
way too: server code publishing, not a client pushing into its own channel.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from chanctl.cli.common import die, err, out, positive_seconds
from chanctl.cli.exit_codes import ExitCode
from chanctl.cli.target import ConfigOpt, TokenOpt, UrlOpt, UserOpt, resolve_identity, resolve_url, run_client
from chanctl.client import Client
from chanctl.escape import escape
from chanctl.protocol.messages import Reply
from chanctl.protocol.messages import ADMIN_TOPIC

__all__ = ["send"]


def send(
    topic: Annotated[str, typer.Argument(help="Topic to join, e.g. room:42.")],
    event: Annotated[str, typer.Argument(help="Event to push, e.g. new_msg.")],
    payload: Annotated[str, typer.Argument(help="JSON payload, @file, or - for one JSON message per stdin line.")] = "{}",
    user: UserOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    params: Annotated[str, typer.Option("--params", help="JSON join payload.")] = "{}",
    broadcast: Annotated[bool, typer.Option("--broadcast", help="Publish server-side via the admin plane, without joining (needs an admin token; the operator's default).")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print each reply as a JSON line.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", callback=positive_seconds, help="Seconds to wait for the connection and each reply.")] = 5.0,
) -> None:
    """Push EVENT to TOPIC as a user and print the reply; without --user/--token, broadcast it
    server-side as the operator. Exit 0 ok, 1 error reply, 2 usage, 3 refused, 4 timeout, 130 Ctrl+C."""
    join_params = _parse(params, "--params")
    messages = _stdin_messages() if payload == "-" else _one(_payload(payload))
    server = resolve_url(url, config)
    identity = resolve_identity(user, token, config, admin=broadcast or topic == ADMIN_TOPIC)
    if identity.operator and topic != ADMIN_TOPIC and not broadcast:
        broadcast = True
        err("chanctl: no --user or --token: sending as the operator, a server-side broadcast "
            "(`--user ID` pushes as that user instead)")
    run_client(lambda: _send(server, identity.token, topic, event, messages, join_params, broadcast, json, timeout))


def _parse(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        die(f"{what} is not JSON: {exc}", ExitCode.USAGE)


def _payload(text: str) -> Any:
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            return _parse(path.read_bytes(), text)
        except OSError as exc:
            die(f"cannot read {path}: {exc.strerror}", ExitCode.USAGE)
    return _parse(text, "PAYLOAD")


async def _one(payload: Any) -> AsyncIterator[Any]:
    yield payload


async def _stdin_messages() -> AsyncIterator[Any]:
    """One JSON message per stdin line, read as lines arrive (a pipe may stay open).

    A daemon thread reads, so that an error exit never waits on a blocked ``readline``.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")
        except RuntimeError:
            return  # the command finished (its loop closed) before stdin did

    threading.Thread(target=read, daemon=True, name="chanctl-stdin").start()
    number = 0
    while line := await lines.get():
        number += 1
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            err(f"chanctl: stdin line {number} is not JSON ({exc}); skipped")
            yield _BadLine()


class _BadLine:
    """Stands for an unparseable stdin line: nothing is sent, and the exit code says usage."""


async def _send(url: str, token: str | Callable[[], str], topic: str, event: str, messages: AsyncIterator[Any], params: Any,
                broadcast: bool, json: bool, timeout: float) -> int:
    code = ExitCode.OK
    async with Client(url, token=token, timeout=timeout, reconnect=False) as client:
        channel = client.channel(ADMIN_TOPIC if broadcast else topic, params)
        await channel.join(timeout)
        async for payload in messages:
            if isinstance(payload, _BadLine):
                code = max(code, ExitCode.USAGE)
                continue
            if broadcast:
                reply = await channel.push("broadcast", {"topic": topic, "event": event, "payload": payload}, timeout)
            else:
                reply = await channel.push(event, payload, timeout)
            _print(reply, json)
            if reply.status != "ok":
                code = max(code, ExitCode.ERROR)
    return int(code)


def _print(reply: Reply, json: bool) -> None:
    # Escaped: the server chose these strings (C1 controls and bidi overrides pass through JSON).
    if json:
        out(escape(orjson.dumps({"status": reply.status, "response": reply.response}).decode()))
    else:
        out(escape(f"{reply.status} {orjson.dumps(reply.response).decode()}"))
