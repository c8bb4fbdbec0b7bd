"""CPU a node spends per message it receives from Redis (redis-py's reader, with or without hiredis).

    python benchmarks/bench_redis_parse.py

Publishes 20,000 broadcast-sized messages in one pipeline, then times (process CPU) the reader
loop chanctl's RedisPubSub runs (``PubSub.get_message``) until it has them all; median of 5.
Run it in an environment with hiredis and one without to compare (it prints which it used).
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
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from tests.support import RedisServer  # noqa: E402

MESSAGES = 20_000
PAYLOAD = b'B1 node\n["msg",{"k":1,"t":123.456,"user_id":1,"id":"abc-1","inserted_at":"2026-12-01T00:00:00Z"}]'


async def main() -> None:
    server = RedisServer(shutil.which("redis-server") or "redis-server")
    server.start()
    try:
        reader, writer = aioredis.Redis.from_url(server.url), aioredis.Redis.from_url(server.url)
        pubsub = reader.pubsub()
        await pubsub.subscribe("bench")
        await pubsub.get_message(timeout=1)
        per_message = []
        for _ in range(5):
            pipe = writer.pipeline(transaction=False)
            for _ in range(MESSAGES):
                pipe.publish("bench", PAYLOAD)
            await pipe.execute()
            cpu0, got = time.process_time(), 0
            while got < MESSAGES:
                message = await pubsub.get_message(timeout=1)
                if message and message["type"] == "message":
                    got += 1
            per_message.append((time.process_time() - cpu0) / MESSAGES * 1e6)
        print(f"hiredis={HIREDIS_AVAILABLE}: median CPU per received message {statistics.median(per_message):.1f} µs")
        await pubsub.aclose()
        await reader.aclose()
        await writer.aclose()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
