"""History on against off, in one run; then recovery of missed broadcasts by many rejoining clients.

    python benchmarks/bench_history.py [--subs 1000] [--messages 2000] [--runs 5] [--clients 1000] [--missed 100]
    python benchmarks/bench_history.py --cluster [--runs 3]   # recovery on a cluster node, from Redis

Fan-out reuses benchmarks/run.py: ``chanctl serve`` pinned to core 0 with benchmarks/bench.yaml
(history off) or benchmarks/bench_history.yaml (the same topic with ``history: {size: 100, ttl:
5m}``), the Node generator (loadgen.mjs "fanout") on core 1, a fresh server per run, runs
alternating off/on. Reported: medians of deliveries/s and server CPU µs per delivery, and the
ratios on/off (issue 12's targets: throughput at least 0.9x, CPU per delivery at most 1.15x).

Recovery: a fresh history server gets ``--missed`` broadcasts on ``bench:1``; then ``--clients``
sockets (recovery_load.mjs, core 1) join it at once with ``since`` offset 0 and each waits for
all of them. Reported: medians of the wall time until the last client has everything, and of the
server CPU spent (also per replayed message).

With ``--cluster`` only the recovery runs, on two nodes and a fresh ``redis-server`` (all on core
0): the broadcasts are published on the first node, the clients rejoin on the second, which reads
what they missed from Redis (one script per join). Reported: the same, plus Redis's CPU. The
fan-out on two nodes, history on against off, is ``bench_cluster.py --history``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
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


def rejoin(url: str, epoch: str, clients: int, missed: int, cpu: dict[str, Callable[[], float]]) -> dict:
    """``clients`` sockets join ``url`` at once with since offset 0; the CPU seconds each of ``cpu``
    spent meanwhile are added as ``<name>_cpu_s``."""
    opts = {"url": url, "topic": "bench:1", "n": clients, "expect": missed, "since": {"offset": 0, "epoch": epoch}}
    argv = run.pinned(1, ["node", str(HERE / "recovery_load.mjs"), json.dumps(opts)])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    json.loads(proc.stdout.readline())  # {"ready": n}: every client connected
    before = {name: seconds() for name, seconds in cpu.items()}
    proc.stdin.write("go\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if proc.wait(600) != 0 or not line:
        raise SystemExit("recovery_load failed")
    result = json.loads(line)
    for name, seconds in cpu.items():
        result[f"{name}_cpu_s"] = seconds() - before[name]
    return result


def recovery(clients: int, missed: int) -> dict:
    server = run.Server("chanctl", HISTORY)
    try:
        epoch = asyncio.run(publish(server.url, missed))
        return rejoin(server.url, epoch, clients, missed, {"server": server.cpu_seconds})
    finally:
        server.stop()


def recovery_on_cluster(clients: int, missed: int) -> dict:
    from bench_cluster import Node, Redis, cpu_seconds

    redis = Redis()
    nodes: list[Node] = []
    try:
        nodes = [Node(HISTORY, "--redis", redis.url, "--node", name) for name in ("bench-a", "bench-b")]
        epoch = asyncio.run(publish(nodes[0].url, missed))
        return rejoin(nodes[1].url, epoch, clients, missed, {"server": lambda: cpu_seconds(nodes[1].proc.pid),
                                                             "redis": lambda: cpu_seconds(redis.proc.pid)})
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--missed", type=int, default=100)
    parser.add_argument("--cluster", action="store_true", help="recovery only, on the second of two nodes, from Redis")
    args = parser.parse_args()
    if not args.cluster:
        opts = {"subs": args.subs, "messages": args.messages, "window": 20}
        run.compare_fanout(("history off", "history on"), lambda mode: fanout(mode == "history on", opts), args.runs,
                           f"fan-out {args.subs} subscribers x {args.messages} messages")
    runs = []
    for i in range(args.runs):
        runs.append((recovery_on_cluster if args.cluster else recovery)(args.clients, args.missed))
        print(f"# recovery run {i + 1}: {runs[-1]}", file=sys.stderr, flush=True)
    wall = statistics.median(r["wall_ms"] for r in runs)
    recovered = min(r["recovered"] for r in runs)
    replayed = args.clients * args.missed
    where = "on the other node of a cluster, from Redis" if args.cluster else "on one node"
    print(f"recovery {where}: {args.clients} clients rejoin with since, {args.missed} missed each, medians of {args.runs} runs")
    print(f"  all recovered ({recovered}/{args.clients}) in {wall:,.0f} ms")
    for name in ("server", "redis") if args.cluster else ("server",):
        cpu_ms = statistics.median(r[f"{name}_cpu_s"] * 1e3 for r in runs)
        print(f"  {name} CPU {cpu_ms:,.0f} ms, {cpu_ms * 1e3 / replayed:.2f} µs per replayed message")


if __name__ == "__main__":
    main()
