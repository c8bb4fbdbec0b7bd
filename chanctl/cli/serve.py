"""``chanctl serve FILE``: run the server a config declares."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from chanctl.cli.common import DEFAULT_CONFIG, compile_or_die, config_argument, die, err, load_or_die
from chanctl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from chanctl.config.load import LoadedConfig
    from chanctl.server.compile import CompiledConfig
    from chanctl.server.runtime import ChannelServer

__all__ = ["serve"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def serve(
    config: Annotated[str | None, typer.Argument(help=f"The server's YAML config (default: ./{DEFAULT_CONFIG}).", show_default=False)] = None,
    host: Annotated[str | None, typer.Option("--host", help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", envvar="CHANCTL_PORT", min=0, max=65535, help="Override server.port; 0 picks a free one.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    redis: Annotated[str | None, typer.Option("--redis", help="Join the cluster on this Redis (sets cluster.redis), e.g. redis://127.0.0.1:6379/0.")] = None,
    node: Annotated[str | None, typer.Option("--node", help="This node's name in the cluster (sets cluster.node); default host-pid.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=256, help="Run N processes on one port (SO_REUSEPORT) that form a cluster through the config's Redis.")] = 1,
    reuse_port: Annotated[bool, typer.Option("--reuse-port", hidden=True, help="Listen with SO_REUSEPORT (what --workers gives each worker).")] = False,
    worker: Annotated[int, typer.Option("--worker", hidden=True, min=0, help="This process is worker N of --workers: past the first, its banner is one line.")] = 0,
) -> None:
    """Run the server described by CONFIG (default ./chanctl.yaml) until Ctrl+C or SIGTERM.

    Exit 0 after a clean stop, 1 if the config has problems or the server cannot start, 2 usage
    (no such config file), 130 when a second Ctrl+C forces the exit."""
    if log_level.lower() not in _LOG_LEVELS:
        die(f"--log-level must be {', '.join(_LOG_LEVELS[:-1])} or {_LOG_LEVELS[-1]}, got {log_level!r}", ExitCode.USAGE)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level.lower() != "debug":
        logging.getLogger("websockets.server").addFilter(_not_a_bare_connection_line)
    config = str(config_argument(config))
    loaded = load_or_die(config)
    if redis is not None or node is not None:
        loaded = _with_cluster(loaded, redis, node)
    compiled = compile_or_die(loaded)  # the workers would each refuse it: say so once, here
    if workers > 1:
        from chanctl.cli.workers import run_workers

        if loaded.config.cluster is None:
            die("--workers needs a cluster: give --redis URL, or a cluster: section in the config", ExitCode.USAGE)
        raise typer.Exit(run_workers(workers, config, loaded, host=host, port=port, log_level=log_level, redis=redis))
    asyncio.run(_run(compiled, host, port, reuse_port, worker))


def _with_cluster(loaded: LoadedConfig, redis: str | None, node: str | None) -> LoadedConfig:
    """The config with ``--redis`` / ``--node`` written into its ``cluster:`` section."""
    import dataclasses

    from pydantic import ValidationError

    from chanctl.config.model import ClusterConfig

    current = loaded.config.cluster
    fields = {} if current is None else current.model_dump(exclude_unset=True)
    if redis is not None:
        fields["redis"] = redis
    if node is not None:
        fields["node"] = node
    if "redis" not in fields:
        die("--node needs a cluster: give --redis URL too, or a cluster: section in the config", ExitCode.USAGE)
    try:
        cluster = ClusterConfig.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        option = "--node" if problem["loc"] == ("node",) else "--redis"
        die(f"{option}: {problem['msg'].removeprefix('Value error, ')}", ExitCode.USAGE)
    return dataclasses.replace(loaded, config=loaded.config.model_copy(update={"cluster": cluster}))


_BARE_LINES = frozenset({
    "connection open", "connection closed", "HTTP response sent (403 Forbidden)", "HTTP response sent (200 OK)",
})


def _not_a_bare_connection_line(record: logging.LogRecord) -> bool:
    """Drops websockets' bare "connection open"/"connection closed", its "HTTP response sent
    (403 Forbidden)" after a refused handshake, and its "HTTP response sent (200 OK)" after each
    ``/healthz`` probe and ``/metrics`` scrape (a line every few seconds from a load balancer or
    Prometheus, naming neither path nor peer): chanctl logs each connection's open, close and
    refusal with who, from where and how it ended (every 403 is one of its refusals). A filter, not a
    level, so websockets' other records (its debug lines, with tokens redacted) are untouched."""
    return record.getMessage() not in _BARE_LINES


def banner(server: ChannelServer, loaded: LoadedConfig) -> list[str]:
    """What the operator needs to see first: where, what, and how clients authenticate."""
    auth = server.config.auth
    lines = [f"chanctl serving {loaded.path} at {server.url}"]
    if server.longpoll is not None:
        # LongPoll is plain HTTP: the URL a curl or a proxy rule needs (phoenix.js derives it from the ws:// one).
        endpoint = "http" + server.url.removeprefix("ws").removesuffix("/websocket")
        lines.append(f"  longpoll: {endpoint}/longpoll (phoenix.js transport: LongPoll or longPollFallbackMs)")
    for pattern, topic in server.config.topics.items():
        join = " ".join(str(topic.join).split()) if not isinstance(topic.join, bool) else ("anyone authenticated" if topic.join else "nobody")
        events = ", ".join(f"{name}→{event.do}" for name, event in topic.events.items()) or "none"
        if topic.handler is not None:
            join = "the handler decides" if topic.join is None else f"{join}, then the handler"
            events = f"handler {topic.handler}"
        lines.append(f"  topic {pattern:<28} join: {join}; events: {events}")
    lines.append(f"  auth: signed tokens (salt {auth.salt!r}, max age {int(auth.max_age)}s); mint one with "
                 f"`chanctl token --user ID --config {loaded.path}`")
    cluster = server.config.cluster
    if cluster is not None:
        lines.append(f"  cluster: node {cluster.node_name} on {cluster.redis_shown} (prefix {cluster.prefix!r})")
    for warning in loaded.warnings:
        lines.append(f"  WARNING {warning}")
    return lines


async def _run(compiled: CompiledConfig, host: str | None, port: int | None, reuse_port: bool = False, worker: int = 0) -> None:
    from chanctl.server.runtime import build_server  # here, so other commands start without the server

    loaded = compiled.loaded
    server = build_server(compiled, host=host, port=port, reuse_port=reuse_port)
    await server.start()
    # What exists now (imported modules, the compiled config, the listener) lives as long as the
    # process: frozen out of the collector's sight, a full collection walks what connections made,
    # not some 60,000 start-up objects again each time (benchmarks/README.md, "Connect + join").
    gc.collect()
    gc.freeze()
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
    # The workers of --workers share a config: the first says it all, the others who they are.
    lines = banner(server, loaded) if worker <= 1 else [f"chanctl worker {worker}: node {server.node} at {server.url}"]
    for line in lines:
        err(line)
    try:
        await stop.wait()
        await server.shutdown()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    err("chanctl: stopped")
