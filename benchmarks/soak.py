"""Soak: many clients chatting and churning at a real ``chanctl serve``; is anything left over?

    nice -n 19 python benchmarks/soak.py                           # issue 15's size: 5,000 clients, 30 minutes
    nice -n 19 python benchmarks/soak.py --clients 2000 --minutes 12

Starts ``chanctl serve`` on :data:`CONFIG` (rooms with presence, a broadcast ``new_msg``), then
runs ``--clients`` clients in this process (ramped up over ``--ramp`` seconds), each a phoenix.js
lookalike over vsn 2.0.0: it joins one or two of ``clients / --room-size`` rooms, sends a
``new_msg`` every ``--interval`` seconds (jittered) and a heartbeat every 30 s, and churns: now and
then it leaves a room and joins another, and after a random lifetime (exponential, mean
``--lifetime`` seconds) it closes its socket, or drops it without a close frame, and connects
again after a short pause.

Every ``--sample`` seconds it prints the server's RSS, open file descriptors (``/proc``), asyncio
tasks (``chanctl_tasks`` in /metrics) and connections. At the end every client leaves, and it
reports the RSS slope after ``--warmup`` minutes (a least-squares line over the samples, KiB per
minute) and whether the tasks, fds, connections and topics went back to what the idle server had
before the first client. Exit 1 when something is left over, the server died or its log has a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fuzz import SECRET, ServerUnderTest  # noqa: E402

CONFIG = """
server:
  host: 127.0.0.1
  idle_timeout: 60s
  max_connections: null
  max_connections_per_user: null
  max_connections_per_address: null
auth: {secret: "%s"}
topics:
  "room:{id}":
    join: true
    presence: {meta: {typing: false}}
    events:
      new_msg: {schema: {body: {type: string, minLength: 1, maxLength: 200}}, do: broadcast}
""" % SECRET


@dataclass
class Tally:
    connects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Sessions ended by an exception on the client's side, by kind (a connect that timed out, a
    send on a socket the server had closed, with its close code)."""
    joins: int = 0
    leaves: int = 0
    sent: int = 0
    received: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    """How sockets ended: ``client`` (we closed), ``dropped`` (TCP aborted, no close frame), or the server's code."""


@dataclass
class Sample:
    minute: float
    rss_kib: int
    fds: int
    tasks: int
    connections: int


class Soak:
    def __init__(self, server: ServerUnderTest, args: argparse.Namespace):
        self.server = server
        self.args = args
        self.rooms = max(1, args.clients // args.room_size)
        self.tally = Tally()
        self.stop = asyncio.Event()

    async def client(self, n: int) -> None:
        rng = random.Random(f"{self.args.seed}:{n}")
        await asyncio.sleep(self.args.ramp * n / self.args.clients)
        while not self.stop.is_set():
            try:
                await self.session(rng, n)
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                self.tally.errors[type(exc).__name__ + ("" if code is None else f" {code}")] += 1
            if not self.stop.is_set():
                await asyncio.sleep(rng.uniform(0.1, 2.0))  # phoenix.js reconnects after a short backoff

    async def session(self, rng: random.Random, n: int) -> None:
        ws = await websockets.connect(self.server.url(1000 + n), max_size=None, compression=None, open_timeout=60,
                                      ping_interval=None)
        self.tally.connects += 1
        ref = 0
        joined: dict[str, str] = {}

        async def read() -> None:
            async for _ in ws:
                self.tally.received += 1

        def frame(join_ref: str | None, topic: str, event: str, payload: object) -> str:
            nonlocal ref
            ref += 1
            return json.dumps([join_ref, str(ref), topic, event, payload])

        async def join() -> None:
            topic = f"room:{rng.randrange(self.rooms)}"
            if topic not in joined:
                joined[topic] = str(ref + 1)
                await ws.send(frame(joined[topic], topic, "phx_join", {}))
                self.tally.joins += 1

        reader = asyncio.create_task(read())
        ends = time.monotonic() + rng.expovariate(1 / self.args.lifetime)
        next_heartbeat = time.monotonic() + 30
        try:
            for _ in range(rng.choice([1, 1, 2])):
                await join()
            while not self.stop.is_set() and time.monotonic() < ends and not reader.done():
                try:
                    await asyncio.wait_for(self.stop.wait(), rng.uniform(0.5, 1.5) * self.args.interval)
                except TimeoutError:
                    pass
                if self.stop.is_set():
                    break
                if joined:
                    topic = rng.choice(list(joined))
                    await ws.send(frame(joined[topic], topic, "new_msg", {"body": f"hello from {n}"}))
                    self.tally.sent += 1
                if rng.random() < self.args.churn:  # leave one room, join another
                    if joined:
                        topic = rng.choice(list(joined))
                        await ws.send(frame(joined.pop(topic), topic, "phx_leave", {}))
                        self.tally.leaves += 1
                    await join()
                if time.monotonic() >= next_heartbeat:
                    await ws.send(frame(None, "phoenix", "heartbeat", {}))
                    next_heartbeat = time.monotonic() + 30
            if reader.done():
                code = ws.close_code
                self.tally.closes[str(code)] += 1
            elif not self.stop.is_set() and rng.random() < 0.2:
                ws.transport.abort()  # a client that vanishes: no close frame, as a dead network
                self.tally.closes["dropped"] += 1
            else:
                await ws.close()
                self.tally.closes["client"] += 1
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if ws.state is not websockets.protocol.State.CLOSED:
                await ws.close()

    def sample(self, started: float) -> Sample:
        server = self.server
        return Sample(round((time.monotonic() - started) / 60, 2), server.rss_kib(), server.fds(),
                      int(server.metric("chanctl_tasks")), int(server.metric("chanctl_connections")))


def slope_kib_per_minute(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [s.minute for s in samples], [s.rss_kib for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


async def soak(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="chanctl-soak-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        server = ServerUnderTest(work, log_level="warning", config_text=CONFIG)
        try:
            report = await run(server, args)
        finally:
            report_alive = server.alive()
            server.stop()
        tracebacks, problems = server.log_problems()
        return {**report, "server_alive_to_the_end": report_alive, "tracebacks": tracebacks, "log_problems": problems[:20]}


async def run(server: ServerUnderTest, args: argparse.Namespace) -> dict:
    soak = Soak(server, args)
    started = time.monotonic()
    idle = soak.sample(started)
    topics_idle = server.health()["topics"]
    samples: list[Sample] = []
    clients = [asyncio.create_task(soak.client(n)) for n in range(args.clients)]
    deadline = started + args.minutes * 60
    while time.monotonic() < deadline:
        await asyncio.sleep(min(args.sample, max(0.0, deadline - time.monotonic())))
        s = soak.sample(started)
        samples.append(s)
        t = soak.tally
        print(f"# {s.minute:6.2f} min  rss {s.rss_kib:,} KiB  fds {s.fds:,}  tasks {s.tasks:,}  connections {s.connections:,}"
              f"  sent {t.sent:,} received {t.received:,} connects {t.connects:,} joins {t.joins:,} leaves {t.leaves:,}",
              file=sys.stderr, flush=True)
    soak.stop.set()
    await asyncio.gather(*clients)
    for _ in range(600):  # until the server has handled every close
        if int(server.metric("chanctl_connections")) == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # the last leaves' presence diffs go out; then the leftovers are read
    after = soak.sample(started)
    warm = [s for s in samples if s.minute >= args.warmup]
    report = {
        "clients": args.clients, "minutes": args.minutes, "warmup_minutes": args.warmup,
        "tally": {**soak.tally.__dict__, "closes": dict(soak.tally.closes), "errors": dict(soak.tally.errors)},
        "idle_before": idle.__dict__, "peak_rss_kib": max((s.rss_kib for s in samples), default=0),
        "rss_slope_after_warmup_kib_per_min": round(slope_kib_per_minute(warm), 1),
        "rss_first_last_after_warmup_kib": [warm[0].rss_kib, warm[-1].rss_kib] if warm else None,
        "after_all_left": after.__dict__, "topics_after": server.health()["topics"], "topics_idle": topics_idle,
    }
    report["leftovers"] = {
        "tasks": after.tasks - idle.tasks, "fds": after.fds - idle.fds, "connections": after.connections,
        "topics": report["topics_after"] - topics_idle,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the RSS slope")
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds over which the clients first connect")
    parser.add_argument("--interval", type=float, default=10.0, help="mean seconds between one client's messages")
    parser.add_argument("--churn", type=float, default=0.1, help="chance per message of leaving a room and joining another")
    parser.add_argument("--lifetime", type=float, default=120.0, help="mean seconds a socket lives before it reconnects")
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the server's config and log in this directory")
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    print(json.dumps(report, indent=1))
    left = {k: v for k, v in report["leftovers"].items() if v}
    broken = not report["server_alive_to_the_end"] or report["tracebacks"] or report["log_problems"]
    print("PASS: nothing left over" if not left and not broken else f"FAIL: left over {left}; server alive "
          f"{report['server_alive_to_the_end']}, {report['tracebacks']} tracebacks")
    raise SystemExit(1 if left or broken else 0)


if __name__ == "__main__":
    main()
