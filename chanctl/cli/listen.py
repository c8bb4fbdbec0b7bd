"""``chanctl listen TOPIC...``: join and print every event until Ctrl+C, ``--count`` or ``--timeout``.

Readable lines by default, ``--json`` lines for scripts; presence changes are summarized as the
keys that joined, were updated (left and joined in one diff, as ``typing`` does) and left
(``--no-presence`` leaves them out, ``--event NAME`` picks events). The connection reconnects and
rejoins by itself (notes go to stderr), until the server refuses the token (403: expired or
revoked), which ends it with exit 3.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import typer

from chanctl.cli.common import die, err, out, positive_seconds
from chanctl.cli.exit_codes import ExitCode
from chanctl.cli.target import ConfigOpt, TokenOpt, UrlOpt, UserOpt, resolve_identity, resolve_url, run_client
from chanctl.client import Client, Event, PresenceChange, Status
from chanctl.client.protocol import Refused, stop_error
from chanctl.escape import escape
from chanctl.protocol.messages import PHX_CLOSE, PHX_ERROR
from chanctl.protocol.messages import ADMIN_TOPIC

__all__ = ["listen"]


def listen(
    topics: Annotated[list[str], typer.Argument(help="Topics to join, e.g. room:42 room:lobby.")],
    user: UserOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per event.")] = False,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Exit 0 after this many events (presence lines do not count).")] = None,
    event: Annotated[list[str] | None, typer.Option("--event", "-e", help="Print only this event (repeatable); `presence` selects presence lines.")] = None,
    no_presence: Annotated[bool, typer.Option("--no-presence", help="Leave out presence lines.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", callback=positive_seconds, help="Stop after this many seconds (exit 4 if --count was not reached).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="First replay the broadcasts after this offset (OFFSET or OFFSET@EPOCH) from the topic's history.")] = None,
) -> None:
    """Join TOPICS and print every event. Exit 3 if a join is refused (or the server refuses the
    token on a reconnect), 4 if unreachable, 130 on Ctrl+C, 0 when stdout closes (`| head -1`)."""
    params = {} if since is None else {"since": _since(since)}
    server = resolve_url(url, config)
    identity = resolve_identity(user, token, config, admin=ADMIN_TOPIC in topics).token
    selection = _Selection(frozenset(event or ()), no_presence)
    run_client(lambda: _listen(server, identity, topics, json, count, timeout, selection, params))


def _since(text: str) -> dict[str, Any]:
    """``--since 17`` or ``--since 17@3fa2b1c0`` as join params; exit 2 otherwise."""
    offset, _, epoch = text.partition("@")
    if not offset.isdigit() or (_ and not epoch):
        die(f"--since takes OFFSET or OFFSET@EPOCH (e.g. 17 or 17@3fa2b1c0), got {text!r}", ExitCode.USAGE)
    return {"offset": int(offset), **({"epoch": epoch} if epoch else {})}


@dataclass(frozen=True)
class _Selection:
    """Which events ``listen`` prints (``--event``, ``--no-presence``) and which ones ``--count`` counts."""

    events: frozenset[str]
    no_presence: bool

    def shows(self, name: str) -> bool:
        if name == PRESENCE:
            return not self.no_presence and (not self.events or PRESENCE in self.events)
        return not self.events or name in self.events

    def counts(self, name: str) -> bool:
        """Presence lines count only when asked for by name: they are not what --count waits for
        (the listener's own join would otherwise end ``--count 1``)."""
        return name != PRESENCE or PRESENCE in self.events


PRESENCE = "presence"
"""The event name ``listen`` gives presence changes (``--event presence``)."""


async def _listen(url: str, token: str | Callable[[], str], topics: list[str], json: bool, count: int | None,
                  timeout: float | None, selection: _Selection, params: dict[str, Any] | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by: list[ExitCode] = []

    def on_signal(code: ExitCode) -> None:
        stopped_by.append(code)
        stop.set()

    # Ctrl+C is the user interrupting (130); SIGTERM is a supervisor's ordinary stop (0).
    loop.add_signal_handler(signal.SIGINT, on_signal, ExitCode.INTERRUPTED)
    loop.add_signal_handler(signal.SIGTERM, on_signal, ExitCode.OK)
    inbox: asyncio.Queue[Event] = asyncio.Queue()
    leaving: list[bool] = []

    def report(status: Status) -> None:
        # Once listen is done, the close is its own (--count, --timeout, Ctrl+C): nothing to report.
        # A refusal no retry heals ends listen, whose exit message says it: once is enough.
        if not (status.routine or leaving or (isinstance(status, Refused) and status.final)):
            err(f"chanctl: {status}")

    async with Client(url, token=token, timeout=timeout or 10.0, on_status=report) as client:
        try:
            channels = [client.channel(topic, params, inbox=inbox) for topic in topics]
            await asyncio.gather(*(channel.join(timeout or 10.0) for channel in channels))
            err(f"chanctl: listening on {', '.join(topics)}")
            seen = 0
            open_topics = set(topics)
            deadline = None if timeout is None else loop.time() + timeout
            stopped = loop.create_task(stop.wait())
            gone = loop.create_task(client.wait_stopped())
            try:
                while open_topics and (count is None or seen < count):
                    received = loop.create_task(inbox.get())
                    remaining = None if deadline is None else max(deadline - loop.time(), 0)
                    done, _ = await asyncio.wait({received, stopped, gone}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                    if received not in done:
                        received.cancel()
                        if stopped in done:
                            return int(stopped_by[0])
                        if gone in done:  # a 403 on reconnect (expired or revoked) is ConnectRefused: no retry heals it
                            raise stop_error(gone.result())
                        return int(ExitCode.UNREACHABLE if count is not None else ExitCode.OK)
                    item = received.result()
                    if isinstance(item, PresenceChange):
                        name, line = PRESENCE, _presence_line(item, json)
                    elif item.event == PHX_CLOSE:
                        err(f"chanctl: {item.topic}: closed by the server")
                        open_topics.discard(item.topic)
                        continue
                    elif item.event == PHX_ERROR:
                        continue  # reported by the client's status line; it rejoins
                    else:
                        name, line = item.event, _event_line(item.topic, item.event, item.payload, json)
                    if selection.shows(name):
                        out(line)
                        if selection.counts(name):
                            seen += 1
            finally:
                stopped.cancel()
                gone.cancel()
        finally:
            leaving.append(True)  # its own close follows: not reported
    return int(ExitCode.OK)


def _event_line(topic: str, event: str, payload: Any, json: bool) -> str:
    # Escaped: the server's strings (and what other clients sent through it) reach a terminal.
    if json:
        return escape(orjson.dumps({"topic": topic, "event": event, "payload": payload}).decode())
    return escape(f"{topic} {event} {orjson.dumps(payload).decode()}")


def _presence_line(change: PresenceChange, json: bool) -> str:
    if json:
        return escape(orjson.dumps({"topic": change.topic, "event": "presence", "joins": change.joins,
                                    "leaves": change.leaves}).decode())
    # A key that left and joined in one diff was updated (typing): the client's presence layer says so.
    return escape(f"{change.topic} presence " + (change.keys.describe() or "(no change)"))
