"""History on against off, in one run; then recovery of missed broadcasts by many rejoining clients.

    python benchmarks/bench_history.py [--subs 1000] [--messages 2000] [--runs 5] [--clients 1000] [--missed 100]

Fan-out reuses benchmarks/run.py: ``chanctl serve`` pinned to core 0 with benchmarks/bench.yaml
(history off) or benchmarks/bench_history.yaml (the same topic with ``history: {size: 100, ttl:
5m}``), the Node generator (loadgen.mjs "fanout") on core 1, a fresh server per run, runs
alternating off/on. Reported: medians of deliveries/s and server CPU µs per delivery, and the
ratios on/off (issue 12's targets: throughput at least 0.9x, CPU per delivery at most 1.15x).

Recovery: a fresh history server gets ``--missed`` broadcasts on ``bench:1``; then ``--clients``
sockets (recovery_load.mjs, core 1) join it at once with ``since`` offset 0 and each waits for
all of them. Reported: medians of the wall time until the last client has everything, and of the
server CPU spent (also per replayed message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path

import orjson
import websockets

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run  # noqa: E402  (benchmarks/run.py: Server, loadgen, pinned)

HISTORY = HERE / "bench_history.yaml"


def fanout(history: bool, opts: dict) -> dict:
    server = run.Server("chanctl", HISTORY if history else None)
    try:
        return run.loadgen(server, "fanout", **opts)
    finally:
        server.stop()


async def publish(url: str, count: int) -> str:
    """Broadcast ``count`` messages on bench:1; returns the topic's epoch."""
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(orjson.dumps(["1", "1", "bench:1", "phx_join", {}]).decode())
        reply = orjson.loads(await ws.recv())
        epoch = reply[4]["response"]["epoch"]
        for n in range(count):
            await ws.send(orjson.dumps(["1", str(10 + n), "bench:1", "msg", {"n": n, "body": "x" * 40}]).decode())
        replies = 0
        while replies < count:  # every broadcast is in the history once its reply is back
            if orjson.loads(await ws.recv())[3] == "phx_reply":
                replies += 1
        return epoch


def recovery(clients: int, missed: int) -> dict:
    server = run.Server("chanctl", HISTORY)
    try:
        epoch = asyncio.run(publish(server.url, missed))
        opts = {"url": server.url, "topic": "bench:1", "n": clients, "expect": missed,
                "since": {"offset": 0, "epoch": epoch}}
        argv = run.pinned(1, ["node", str(HERE / "recovery_load.mjs"), json.dumps(opts)])
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        json.loads(proc.stdout.readline())  # {"ready": n}: every client connected
        cpu0 = server.cpu_seconds()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if proc.wait(600) != 0 or not line:
            raise SystemExit("recovery_load failed")
        result = json.loads(line)
        result["server_cpu_s"] = server.cpu_seconds() - cpu0
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--missed", type=int, default=100)
    args = parser.parse_args()
    opts = {"subs": args.subs, "messages": args.messages, "window": 20}
    run.compare_fanout(("history off", "history on"), lambda mode: fanout(mode == "history on", opts), args.runs,
                       f"fan-out {args.subs} subscribers x {args.messages} messages")
    runs = []
    for i in range(args.runs):
        runs.append(recovery(args.clients, args.missed))
        print(f"# recovery run {i + 1}: {runs[-1]}", file=sys.stderr, flush=True)
    wall = statistics.median(r["wall_ms"] for r in runs)
    cpu_ms = statistics.median(r["server_cpu_s"] * 1e3 for r in runs)
    recovered = min(r["recovered"] for r in runs)
    replayed = args.clients * args.missed
    print(f"recovery: {args.clients} clients rejoin with since, {args.missed} missed each, medians of {args.runs} runs")
    print(f"  all recovered ({recovered}/{args.clients}) in {wall:,.0f} ms; server CPU {cpu_ms:,.0f} ms "
          f"{cpu_ms * 1e3 / replayed:.2f} µs per replayed message")


if __name__ == "__main__":
    main()
