"""``chanctl serve FILE``: run the server a config declares."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from chanctl.cli.common import compile_or_die, die, err, load_or_die
from chanctl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from chanctl.config.load import LoadedConfig
    from chanctl.server.compile import CompiledConfig
    from chanctl.server.runtime import ChannelServer

__all__ = ["serve"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def serve(
    config: Annotated[str, typer.Argument(help="The server's YAML config.")],
    host: Annotated[str | None, typer.Option("--host", help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", envvar="CHANCTL_PORT", min=0, max=65535, help="Override server.port; 0 picks a free one.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the server described by CONFIG until Ctrl+C or SIGTERM."""
    if log_level.lower() not in _LOG_LEVELS:
        die(f"--log-level must be {', '.join(_LOG_LEVELS[:-1])} or {_LOG_LEVELS[-1]}, got {log_level!r}", ExitCode.USAGE)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    compiled = compile_or_die(load_or_die(config))
    asyncio.run(_run(compiled, host, port))


def banner(server: ChannelServer, loaded: LoadedConfig) -> list[str]:
    """What the operator needs to see first: where, what, and how clients authenticate."""
    auth = server.config.auth
    lines = [f"chanctl serving {loaded.path} at {server.url}"]
    if server.longpoll is not None:
        lines.append(f"  longpoll: {server.url.removesuffix('/websocket')}/longpoll (phoenix.js transport: LongPoll or longPollFallbackMs)")
    for pattern, topic in server.config.topics.items():
        join = " ".join(str(topic.join).split()) if not isinstance(topic.join, bool) else ("anyone authenticated" if topic.join else "nobody")
        events = ", ".join(f"{name}→{event.do}" for name, event in topic.events.items()) or "none"
        if topic.handler is not None:
            join = "the handler decides" if topic.join is None else f"{join}, then the handler"
            events = f"handler {topic.handler}"
        lines.append(f"  topic {pattern:<28} join: {join}; events: {events}")
    lines.append(f"  auth: signed tokens (salt {auth.salt!r}, max age {int(auth.max_age)}s); mint one with "
                 f"`chanctl token --user ID --config {loaded.path}`")
    for warning in loaded.warnings:
        lines.append(f"  WARNING {warning}")
    return lines


async def _run(compiled: CompiledConfig, host: str | None, port: int | None) -> None:
    from chanctl.server.runtime import build_server  # here, so other commands start without the server

    loaded = compiled.loaded
    server = build_server(compiled, host=host, port=port)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            stop.set()  # first: nothing below may keep the server from stopping
            err("chanctl: shutting down (press Ctrl+C again to force)")
        else:
            err("chanctl: forced exit")
            # Not SystemExit: asyncio.run would then wait for the very tasks being forced away.
            sys.stderr.flush()
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    # The banner only once the handlers are in: whoever reads the URL from it may signal at once.
    for line in banner(server, loaded):
        err(line)
    try:
        await stop.wait()
        await server.shutdown()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    err("chanctl: stopped")
