"""``chanctl bench SCENARIO``: load any Phoenix Channels server and report what it took.

Progress goes to stderr (a bar on a terminal, a plain line a second otherwise), the table or
``--json`` report to stdout. Thresholds set the exit code so that CI can gate on it: 0 ok, 1 a
threshold missed, 2 usage, 3 refused (nothing got in), 4 unreachable or stopped by ``--time-limit``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from chanctl.cli.common import die, err, find_config, out, positive_seconds
from chanctl.cli.exit_codes import ExitCode
from chanctl.cli.target import ConfigOpt, TokenOpt, resolve_url
from chanctl.durations import parse_duration

__all__ = ["bench"]

MAX_CLIENTS = 1_000_000
"""The most clients one run may ask for: a typo (an extra zero or two) fails fast instead of
exhausting the machine's ports and memory."""

_SCENARIOS = ("connect", "fanout", "chat", "presence", "reconnect")  # chanctl.bench.SCENARIOS, without importing it at start-up


def bench(
    scenario: Annotated[str, typer.Argument(help="connect, fanout, chat, presence or reconnect.")],
    url: Annotated[list[str] | None, typer.Option("--url", help="Server socket URL; repeat to spread clients over a cluster's nodes.")] = None,
    config: ConfigOpt = None,
    tokens: Annotated[Path | None, typer.Option("--tokens", help="File of tokens, one a line, for servers that are not chanctl (client i uses line i).")] = None,
    token: TokenOpt = None,
    clients: Annotated[int, typer.Option("--clients", "-n", min=1, help="connect/reconnect/presence: clients; fanout: subscribers.")] = 1000,
    concurrency: Annotated[int, typer.Option("--concurrency", "-C", min=1, help="Connections in progress at once.")] = 100,
    messages: Annotated[int, typer.Option("--messages", "-m", min=1, help="fanout: messages to publish.")] = 200,
    window: Annotated[int, typer.Option("--window", min=1, help="fanout: messages in flight (not yet delivered to every subscriber).")] = 20,
    topics: Annotated[int, typer.Option("--topics", min=1, help="chat: topics ({n} in --topic); connect/reconnect: topics to spread over.")] = 1,
    members: Annotated[int, typer.Option("--members", min=1, help="chat: members of each topic.")] = 10,
    rate: Annotated[float, typer.Option("--rate", min=0.01, help="chat: messages a second each member publishes.")] = 2.0,
    duration: Annotated[str, typer.Option("--duration", help="chat: how long members publish (5s, 1m).")] = "5s",
    wave: Annotated[int, typer.Option("--wave", min=1, help="presence: clients that join (then leave) at once.")] = 50,
    wave_interval: Annotated[str, typer.Option("--wave-interval", help="presence: time between waves.")] = "100ms",
    topic: Annotated[str, typer.Option("--topic", help="Topic to join; {n} is the chat room's number.")] = "room:lobby",
    event: Annotated[str, typer.Option("--event", help="Event to publish.")] = "new_msg",
    payload: Annotated[str, typer.Option("--payload", help='JSON or @file; "{stamp}" in a string is where the send time goes.')] = '{"body": "{stamp}"}',
    params: Annotated[str, typer.Option("--params", help="JSON join payload.")] = "{}",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64, help="Generator processes (each a core at most).")] = 1,
    timeout: Annotated[float, typer.Option("--timeout", callback=positive_seconds, help="Seconds for one connect, join or reply.")] = 10.0,
    time_limit: Annotated[str, typer.Option("--time-limit", help="Most the set-up, and then the measured part, may each take (exit 4 past it).")] = "60s",
    max_p99: Annotated[str | None, typer.Option("--max-p99", help="Exit 1 if the headline p99 latency is above this (50ms, 1s).")] = None,
    min_rate: Annotated[float | None, typer.Option("--min-rate", min=0, help="Exit 1 if the headline rate (per second) is below this.")] = None,
    max_errors: Annotated[int | None, typer.Option("--max-errors", min=0, help="Exit 1 if more errors than this were counted.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (every parameter and figure).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Load a Phoenix Channels server with SCENARIO and report rates, latencies and errors."""
    from chanctl.bench.plan import Plan, has_stamp
    from chanctl.bench.report import Thresholds, build_report, render_table
    from chanctl.bench.runner import run

    if scenario not in _SCENARIOS:
        die(f"unknown scenario {scenario!r}: choose one of {', '.join(_SCENARIOS)}", ExitCode.USAGE)
    urls = [resolve_url(u, None) for u in url] if url else [resolve_url(None, config)]
    from chanctl.client import endpoint_url

    template = _json(payload, "--payload")
    plan = Plan(
        scenario=scenario, urls=[endpoint_url(u) for u in urls], clients=clients, concurrency=concurrency,
        messages=messages, window=window, topics=topics, members=members, rate=rate,
        duration=_seconds(duration, "--duration"), wave=wave, wave_interval=_seconds(wave_interval, "--wave-interval"),
        topic=topic, event=event, payload=template, params=_json(params, "--params"), workers=workers,
        timeout=timeout, time_limit=_seconds(time_limit, "--time-limit"),
    )
    if scenario in ("fanout", "chat") and not has_stamp(template):
        die('--payload needs "{stamp}" inside one of its strings: the send time travels there', ExitCode.USAGE)
    if scenario == "chat" and topics > 1 and "{n}" not in topic:
        die(f"--topics {topics} needs {{n}} in --topic (e.g. --topic 'room:{{n}}'), which becomes each room's number",
            ExitCode.USAGE)
    total = plan.total_clients()
    if total > MAX_CLIENTS:
        die(f"{total:,} clients is more than one run may open ({MAX_CLIENTS:,})", ExitCode.USAGE)
    plan.workers = min(workers, total)
    thresholds = Thresholds(
        max_p99_ms=None if max_p99 is None else _seconds(max_p99, "--max-p99") * 1000,
        min_rate=min_rate, max_errors=max_errors,
    )
    identities = _tokens(tokens, token, config, total + (scenario == "fanout"))
    progress = None if quiet else Progress(plan)
    outcome = run(plan, identities, progress, note=lambda text: err(f"chanctl: {text}"))
    if progress is not None:
        progress.finish()
    report = build_report(plan, outcome, thresholds)
    if json:
        out(orjson.dumps(report).decode())
    else:
        out(render_table(report))
    raise typer.Exit(report["exit_code"])


def _json(text: str, what: str) -> Any:
    data: str | bytes = text
    if text.startswith("@"):
        try:
            data = Path(text[1:]).read_bytes()
        except OSError as exc:
            die(f"{what}: cannot read {text[1:]}: {exc.strerror}", ExitCode.USAGE)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        die(f"{what} is not JSON: {exc}", ExitCode.USAGE)


def _seconds(text: str, what: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        die(f"{what}: {exc}", ExitCode.USAGE)


def _tokens(path: Path | None, token: str | None, config: str | None, count: int) -> list[str | None]:
    """Client ``i``'s token: line ``i`` of ``--tokens`` (round), else ``--token`` for all, else minted
    for user ``i + 1`` with the secret of ``--config`` / ``./chanctl.yaml`` / ``CHANCTL_SECRET``,
    else none (a server without auth)."""
    if path is not None:
        try:
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            die(f"--tokens: cannot read {path}: {getattr(exc, 'strerror', None) or exc}", ExitCode.USAGE)
        if not lines:
            die(f"--tokens: {path} holds no token", ExitCode.USAGE)
        return [lines[i % len(lines)] for i in range(count)]
    if token:
        return [token] * count
    if config or find_config(None) is not None or os.environ.get("CHANCTL_SECRET"):
        from chanctl.cli.token import signer_from

        signer = signer_from(config)
        return [signer.mint(i + 1) for i in range(count)]
    return [None] * count


class Progress:
    """Live progress on stderr: a bar rewritten in place on a terminal, a plain line otherwise."""

    WIDTH = 24

    def __init__(self, plan: Any):
        self.plan = plan
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, snapshot: dict[str, Any]) -> None:
        plan = self.plan
        total = plan.total_clients()
        if snapshot["phase"] == "setup" or plan.scenario in ("connect", "reconnect", "presence"):
            done, goal = snapshot.get("joined", 0) or snapshot.get("connected", 0), total
        elif plan.scenario == "fanout":
            done, goal = snapshot.get("delivered", 0), total * plan.messages
        else:
            done, goal = snapshot.get("sent", 0), total * max(1, round(plan.rate * plan.duration))
        share = min(1.0, done / goal) if goal else 0.0
        text = (f"{plan.scenario} {snapshot['phase']}  connected {snapshot.get('connected', 0):,}"
                f"  joined {snapshot.get('joined', 0):,}  sent {snapshot.get('sent', 0):,}"
                f"  delivered {snapshot.get('delivered', 0):,}  {snapshot['per_s']:,.0f}/s"
                f"  errors {snapshot.get('errors', 0):,}  {snapshot['elapsed']:.0f}s")
        if self.tty:
            filled = int(share * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            sys.stderr.write(f"\r\x1b[2K[{bar}] {share:4.0%} {text}")
            sys.stderr.flush()
            self.shown = True
        else:
            err(f"chanctl: {share:.0%} {text}")

    def finish(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
