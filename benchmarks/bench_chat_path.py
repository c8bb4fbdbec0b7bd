"""Server CPU per chat message on chanctl's own path, two checkouts compared in one run.

    python benchmarks/bench_chat_path.py --before /tmp/before [--reps 7] [--n 20000]   # time, interleaved
    PYTHONHASHSEED=0 python benchmarks/bench_chat_path.py --before /tmp/before --n 2000 --instructions  # callgrind
    python benchmarks/bench_chat_path.py --one [--root CHECKOUT]                      # one checkout, JSON

The chat scenario's path (benchmarks/README.md, "Latency at low load") without the socket library
and the kernel: a real server on benchmarks/bench.yaml (``do: broadcast``, a real connection,
rule, schema, stamp, pubsub, reply), two connections joined to one room through
``ChannelServer.accept`` with an in-memory transport, and a client message at a time, as at low
load: each is read, handled, and its frames (the broadcast to both members, the reply) written by
the server's Flusher in the next loop tick before the next message comes. The transport hands the
connection its next frame after one loop tick, as a socket read does; it writes nowhere, and
notes when it last wrote: the wall time from a message's arrival to the write of its broadcast to
the other member is the server's share of the chat latency (median; alone, and with a message in
each of 8 rooms at once, as after a stall).

Each checkout runs in its own process (its own ``chanctl`` on sys.path); the processes alternate
(before, after, after, before, ...) and each figure is the median of ``--reps`` runs. Reported:
µs of CPU per message (2 deliveries and a reply) and the two latencies, or instructions per
message under callgrind (the difference between runs of 2n and n messages, so start-up and joins
cancel out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import ROOT, callgrind, checkout_args  # benchmarks/run.py (it imports no chanctl)


BURST = 8
"""Rooms that get a message at the same moment in the burst case."""


def measure(n: int) -> dict[str, float]:
    """CPU µs per chat message, and µs from a message's arrival to its broadcast's write to the
    other member (alone, and in a burst of BURST rooms), in this process (``chanctl`` from sys.path)."""
    import asyncio
    import os

    import orjson

    os.environ.setdefault("CHANCTL_SECRET", "s" * 64)
    from chanctl.protocol.serializers import negotiate
    from chanctl.server.compile import compile_text
    from chanctl.server.runtime import build_server
    from chanctl.server.wire import FrameEncoder

    class Link:
        """An in-memory transport: frames to read, one loop tick per read; writes counted."""

        remote_address = ("bench", 0)
        needs_idle_timeout = True
        closed_here = False
        close_code = None
        close_reason = ""

        def __init__(self) -> None:
            self.incoming: list[str] = []
            self.ready: asyncio.Future[None] | None = None
            self.written = 0
            self.written_at = 0.0

        def encoder(self, serializer: object) -> FrameEncoder:
            return FrameEncoder.of(serializer)  # type: ignore[arg-type]

        def __aiter__(self) -> Link:
            return self

        async def __anext__(self) -> str:
            while not self.incoming:
                self.ready = asyncio.get_running_loop().create_future()
                await self.ready
            return self.incoming.pop(0)

        def feed(self, frame: str) -> None:
            self.incoming.append(frame)
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)

        def has_more(self) -> bool:
            return bool(self.incoming)

        def write(self, frames: list[bytes]) -> bool:
            self.written += len(frames)
            self.written_at = time.perf_counter()
            return True

        def unsent(self) -> int:
            return 0

        async def close(self, code: int = 1000, reason: str = "") -> None:
            pass

        def abort(self) -> None:
            pass

    async def run() -> dict[str, float]:
        server = build_server(compile_text((ROOT / "benchmarks" / "bench.yaml").read_text(), "bench.yaml"))
        serializer = negotiate("2.0.0")  # what a phoenix.js handshake gets: one shared instance
        rooms = [(Link(), Link()) for _ in range(BURST)]
        links = [link for room in rooms for link in room]
        tasks = [asyncio.create_task(server.accept(link, {"id": 1}, serializer)) for link in links]
        for number, room in enumerate(rooms):
            for link in room:
                link.feed(orjson.dumps(["1", "1", f"bench:room{number}", "phx_join", {}]).decode())
        while any(link.written < 1 for link in links):
            await asyncio.sleep(0)
        frames = [[orjson.dumps(["1", str(i), f"bench:room{number}", "msg", {"t": 1234.5678}]).decode() for i in range(2, n + 2)]
                  for number in range(BURST)]
        (a, b), latencies = rooms[0], []

        async def send(count: int) -> None:
            for frame in frames[0][:count]:
                goal = b.written + 1
                fed = time.perf_counter()
                a.feed(frame)
                while b.written < goal:  # read, handled, flushed: the next message comes after
                    await asyncio.sleep(0)
                latencies.append(b.written_at - fed)

        await send(min(n, 1000))  # warm
        latencies.clear()
        started = time.process_time()
        await send(n)
        spent = time.process_time() - started
        bursts = []
        for i in range(min(n, 1000)):  # a message in each room at once, as after a stall
            goals = [b.written + 1 for _, b in rooms]
            fed = time.perf_counter()
            for number, (a, _) in enumerate(rooms):
                a.feed(frames[number][i])
            while any(b.written < goal for (_, b), goal in zip(rooms, goals)):
                await asyncio.sleep(0)
            bursts.append(statistics.mean(b.written_at - fed for _, b in rooms))
        for task in tasks:
            task.cancel()
        return {"cpu_us": spent / n * 1e6, "latency_us": statistics.median(latencies) * 1e6,
                "burst_latency_us": statistics.median(bursts) * 1e6}

    return asyncio.run(run())


def _code(root: Path, n: int) -> str:
    return (f"import sys, json; sys.path.insert(0, {str(root)!r}); sys.path.insert(1, {str(ROOT / 'benchmarks')!r}); "
            f"import bench_chat_path; print(json.dumps(bench_chat_path.measure({n})))")


def one(root: Path, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _code(root, n)], check=True, capture_output=True, text=True, cwd="/")
    return json.loads(out.stdout)


def instructions(root: Path, n: int) -> float:
    """Instructions per message under callgrind: runs of 2n and n messages, subtracted."""
    counts = []
    for size in (n, 2 * n):
        counts.append(callgrind(_code(root, size))[0])
    return (counts[1] - counts[0]) / n  # the warm-up and the bursts are the same in both runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    checkout_args(parser, "messages per run (at least 1000)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.n)))
        return
    if args.instructions:
        before = instructions(args.before, args.n) if args.before else None
        after = instructions(args.root, args.n)
        ratio = f", after/before {after / before:.3f}" if before else ""
        print(f"instructions per chat message: before {before or 0:,.0f}, after {after:,.0f}{ratio}")
        return
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    roots = {"before": args.before, "after": args.root}
    for rep in range(args.reps):
        for which in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            if roots[which] is not None:
                runs[which].append(one(roots[which], args.n))
    print(f"| median of {args.reps} | before | after | after/before |\n|---|---|---|---|")
    for key, label in (("cpu_us", "CPU µs per message"), ("latency_us", "µs to the other member's write"),
                       ("burst_latency_us", f"the same, {BURST} rooms at once")):
        after = statistics.median(r[key] for r in runs["after"])
        before = statistics.median(r[key] for r in runs["before"]) if args.before else None
        print(f"| {label} | {before or 0:.2f} | {after:.2f} | {after / before if before else 0:.3f} |")

if __name__ == "__main__":
    main()
