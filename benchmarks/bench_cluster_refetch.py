"""How long a node takes to come back after its Redis connection dropped, with many topics.

    python benchmarks/bench_cluster_refetch.py [TOPICS]

Two in-process nodes on one redis-server, one client on each joined to TOPICS topics (default
2,000) with presence, so every topic's hash holds a part of each node. Then ``CLIENT KILL TYPE
pubsub`` drops both nodes' subscriptions: each reconnects, resubscribes, reads every topic's
presence from Redis and only then tells its channels to rejoin (``phx_error``). Timed: how long
node a spent reading the presence (its ``on_subscribed``, wall), and from the kill to the last
``phx_error`` on node a's client (wall, with the process's CPU over that window: both nodes' whole
reconnection, the backoff of 50-100 ms included); medians of 5 rounds (the clients rejoin
everything between rounds).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402

from chanctl.config.load import load_config_text  # noqa: E402
from chanctl.server.runtime import build_server  # noqa: E402
from tests.cluster.conftest import cluster_yaml  # noqa: E402
from chanctl.tokens import TokenSigner  # noqa: E402
from tests.support import SECRET, RawClient, RedisServer  # noqa: E402

ROUNDS = 5


async def join_all(client: RawClient, topics: int) -> None:
    for n in range(topics):
        await client.send([str(n), str(n), f"room:{n}", "phx_join", {}])
    pending = {str(n) for n in range(topics)}
    while pending:
        frame = await client.recv(60)
        if frame[3] == "phx_reply":
            pending.discard(frame[1])


async def main(topics: int) -> None:
    redis_server = RedisServer(shutil.which("redis-server") or "redis-server")
    redis_server.start()
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        limits = f"server:\n  rate_limit: null\n  max_channels: {topics}\n  idle_timeout: 1h\n"
        nodes = [load_config_text(cluster_yaml(redis_server, name).replace("server:\n  rate_limit: null\n", limits), "<bench>",
                                  {"CHANCTL_SECRET": SECRET}) for name in "ab"]
        async with build_server(nodes[0], host="127.0.0.1", port=0) as a, build_server(nodes[1], host="127.0.0.1", port=0) as b:
            signer = TokenSigner(SECRET)
            clients = [await RawClient.connect(node.url, signer.mint(n + 1, {})) for n, node in enumerate((a, b))]
            fetching = [0.0]
            fetch = a.pubsub.on_subscribed
            assert fetch is not None

            async def timed(topics: object) -> None:
                start = time.perf_counter()
                await fetch(topics)
                fetching[0] += time.perf_counter() - start

            a.pubsub.on_subscribed = timed
            walls, cpus, fetches = [], [], []
            for _ in range(ROUNDS):
                await asyncio.gather(*(join_all(client, topics) for client in clients))
                fetching[0] = 0.0
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await admin.client_kill_filter(_type="pubsub")
                failed = 0
                while failed < topics:
                    frame = await clients[0].recv(120)
                    failed += frame[3] == "phx_error"
                walls.append(time.perf_counter() - wall0)
                cpus.append(time.process_time() - cpu0)
                fetches.append(fetching[0])
                other = 0
                while other < topics:
                    other += (await clients[1].recv(120))[3] == "phx_error"
            print(f"{topics} topics, 2 nodes, medians of {ROUNDS}: node a read the topics' presence in "
                  f"{statistics.median(fetches) * 1000:.0f} ms ({', '.join(f'{f * 1000:.0f}' for f in fetches)}); kill -> last "
                  f"phx_error on node a {statistics.median(walls) * 1000:.0f} ms wall, {statistics.median(cpus) * 1000:.0f} ms CPU")
            for client in clients:
                await client.close()
    finally:
        await admin.aclose()
        redis_server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000))
