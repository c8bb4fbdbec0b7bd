"""Cluster benchmark: fan-out to subscribers split over two nodes and a Redis, against one node.

    python benchmarks/bench_cluster.py            # about three minutes on 2 cores
    python benchmarks/bench_cluster.py --runs 5 --subs 1000 --messages 2000
    python benchmarks/bench_cluster.py --history  # two nodes: history off against on (in Redis)

Both setups in the same run, interleaved (one, two, two, one, ...), medians of ``--runs``:

- **one node**: ``chanctl serve benchmarks/bench.yaml`` (no cluster), every subscriber on it;
- **two nodes**: the same config with ``--redis``, subscribers alternating between the nodes, the
  publisher on the first; a fresh ``redis-server`` (``--save "" --appendonly no``) per run.

Every server process and Redis run on core 0 (``taskset -c 0``), the Node load generator
(``loadgen.mjs``) on core 1, so "server CPU per delivery" sums everything the server side spends:
both nodes' CPU (and, reported apart, Redis's CPU per broadcast). Then the kill -9 leave time: two
nodes with presence, a member on one, a watcher on the other; the first is killed with SIGKILL and
the time until the watcher gets the ``presence_diff`` leave is measured (``--down-after``).

With ``--history`` the comparison is instead two nodes with history off (benchmarks/bench.yaml)
against two nodes with history on (benchmarks/bench_history.yaml: every broadcast numbered, kept and
published by the Redis script), same interleaving, and no kill -9 measurement; then Redis's own
accounting (``INFO commandstats``) of 2,000 pipelined bare PUBLISHes against 2,000 history scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import ROOT, SECRET, cpu_seconds, free_port, pinned  # noqa: E402

BENCH = ROOT / "benchmarks" / "bench.yaml"
BENCH_HISTORY = ROOT / "benchmarks" / "bench_history.yaml"


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + 20
    while True:  # the port accepting is the readiness signal
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start")
            time.sleep(0.05)


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(pinned(0, ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                                "--save", "", "--appendonly", "no"]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "redis-server")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Node:
    def __init__(self, config: Path, *args: str) -> None:
        self.port = free_port()
        env = {**os.environ, "CHANCTL_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "chanctl", "serve", str(config), "--port", str(self.port), "--log-level", "warning", *args]
        self.proc = subprocess.Popen(pinned(0, argv), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "chanctl serve")
        from chanctl.tokens import TokenSigner

        self.token = TokenSigner(SECRET).mint(1, {})
        self.url = f"ws://127.0.0.1:{self.port}/socket/websocket?token={self.token}&vsn=2.0.0"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fanout(nodes: list[Node], redis: Redis | None, subs: int, messages: int) -> dict:
    opts = {"mode": "fanout", "url": nodes[0].url, "urls": [n.url for n in nodes], "subs": subs,
            "messages": messages, "window": 20}
    argv = pinned(1, ["node", str(ROOT / "benchmarks" / "loadgen.mjs"), json.dumps(opts)])
    cpu0 = [cpu_seconds(n.proc.pid) for n in nodes]
    redis0 = cpu_seconds(redis.proc.pid) if redis else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed:\n{out.stdout}\n{out.stderr}")
    result = json.loads(out.stdout.splitlines()[-1])
    server_cpu = sum(cpu_seconds(n.proc.pid) - c for n, c in zip(nodes, cpu0, strict=True))
    result["server_us_per_delivery"] = server_cpu / result["deliveries"] * 1e6
    if redis is not None:
        result["redis_us_per_broadcast"] = (cpu_seconds(redis.proc.pid) - redis0) / messages * 1e6
    return result


def run_one(subs: int, messages: int) -> dict:
    node = Node(BENCH)
    try:
        return fanout([node], None, subs, messages)
    finally:
        node.stop()


def run_two(subs: int, messages: int, config: Path = BENCH) -> dict:
    redis = Redis()
    nodes: list[Node] = []
    try:
        nodes = [Node(config, "--redis", redis.url, "--node", name) for name in ("bench-a", "bench-b")]
        return fanout(nodes, redis, subs, messages)
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


async def script_cost(calls: int = 2000) -> dict[str, float]:
    """Redis's µs per call (``INFO commandstats``) of a bare PUBLISH and of the history script."""
    import redis.asyncio as aioredis

    from chanctl.pubsub.streams import PUBLISH_SCRIPT, StreamHistory

    redis = Redis()
    client = aioredis.from_url(redis.url)
    try:
        await client.script_load(PUBLISH_SCRIPT)
        message = b'B12 bench-a/abc\n["msg",{"k":1,"t":12345.678,"user_id":1}]'
        costs = {}
        for name in ("publish", "evalsha"):
            await client.config_resetstat()
            for _ in range(calls // 100):
                pipe = client.pipeline(transaction=False)
                for _ in range(100):
                    if name == "publish":
                        pipe.publish("chanctl:t:bench:1", message)
                    else:
                        pipe.evalsha(StreamHistory.publish_sha, 2, "chanctl:h:bench:1", "chanctl:s:bench:1", "0000beef",
                                     "chanctl:t:bench:1", message, 100, 300_000, 86_400_000)
                await pipe.execute()
            costs[name] = (await client.info("commandstats"))[f"cmdstat_{name}"]["usec_per_call"]
        return costs
    finally:
        await client.aclose()
        redis.stop()


PRESENCE_APP = """
server: {host: 127.0.0.1}
auth:
  secret: ${CHANCTL_SECRET}
topics:
  "room:{id}":
    join: true
    presence: true
"""


async def leave_time(down_after: float) -> float:
    import websockets

    redis = Redis()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "app.yaml"
        config.write_text(PRESENCE_APP + f"cluster: {{redis: '{redis.url}', down_after: {down_after}s}}\n")
        doomed, stays = Node(config), Node(config)
        try:
            from chanctl.tokens import TokenSigner

            member_url = doomed.url.replace(doomed.token, TokenSigner(SECRET).mint(2, {}))
            async with websockets.connect(stays.url) as watcher, websockets.connect(member_url) as member:
                await watcher.send(json.dumps(["1", "1", "room:1", "phx_join", {}]))
                await member.send(json.dumps(["1", "1", "room:1", "phx_join", {}]))
                while True:  # the member's (user 2's) join reaches the watcher's node
                    frame = json.loads(await watcher.recv())
                    if frame[3] == "presence_diff" and "2" in frame[4]["joins"]:
                        break
                killed = time.monotonic()
                os.kill(doomed.proc.pid, signal.SIGKILL)
                while True:
                    frame = json.loads(await asyncio.wait_for(watcher.recv(), down_after * 3))
                    if frame[3] == "presence_diff" and "2" in frame[4]["leaves"]:
                        return time.monotonic() - killed
        finally:
            doomed.stop()
            stays.stop()
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--down-after", type=float, default=15.0)
    parser.add_argument("--history", action="store_true", help="two nodes with history off against on")
    args = parser.parse_args()
    if args.history:
        setups = [("history off", run_two), ("history on", lambda subs, messages: run_two(subs, messages, BENCH_HISTORY))]
    else:
        setups = [("one node", run_one), ("two nodes + Redis", run_two)]
    (base, _), (other, _) = setups
    results: dict[str, list[dict]] = {base: [], other: []}
    for i in range(args.runs):
        for name, run in setups if i % 2 == 0 else setups[::-1]:
            result = run(args.subs, args.messages)
            print(json.dumps({"setup": name, **result}), file=sys.stderr)
            results[name].append(result)
    rows = [("deliveries/s", "per_s", "{:,.0f}"), ("p50 latency ms", "p50_ms", "{:.1f}"), ("p99 latency ms", "p99_ms", "{:.1f}"),
            ("server CPU µs/delivery (summed over nodes)", "server_us_per_delivery", "{:.2f}"),
            ("generator CPU share", "gen_cpu", "{:.2f}")]
    print(f"fan-out, {args.subs:,} subscribers, {args.messages:,} messages, medians of {args.runs} runs\n")
    print(f"| metric | {base} | {other} | ratio |\n|---|---|---|---|")
    for label, key, fmt in rows:
        first = statistics.median(r[key] for r in results[base])
        second = statistics.median(r[key] for r in results[other])
        print(f"| {label} | {fmt.format(first)} | {fmt.format(second)} | {second / first:.2f}x |")
    if args.history:
        off, on = (statistics.median(r["redis_us_per_broadcast"] for r in results[name]) for name in (base, other))
        print(f"| Redis CPU µs/broadcast | {off:.1f} | {on:.1f} | {on / off:.2f}x |")
        costs = asyncio.run(script_cost())
        print(f"\nRedis's own accounting: PUBLISH {costs['publish']:.2f} µs per call, history script {costs['evalsha']:.2f} µs")
        return
    redis_cpu = statistics.median(r["redis_us_per_broadcast"] for r in results[other])
    print(f"| Redis CPU µs/broadcast | - | {redis_cpu:.1f} | |")
    took = asyncio.run(leave_time(args.down_after))
    print(f"\nkill -9 of a node with down_after {args.down_after:g}s: its presence left the other node after {took:.1f}s")


if __name__ == "__main__":
    main()
