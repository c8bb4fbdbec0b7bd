"""The baseline: a plain ``websockets`` broadcast loop, speaking just enough Phoenix V2 for loadgen.mjs.

This is what a developer writes by hand with the library alone: a set of sockets per topic and
``websockets.broadcast`` (no await per subscriber). No tokens, no rules, no limits.

    python benchmarks/plain_server.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.server import broadcast, serve

topics: dict[str, set] = {}


async def handler(ws) -> None:
    joined: list[str] = []
    try:
        async for text in ws:
            join_ref, ref, topic, event, payload = json.loads(text)[:5]
            if event == "phx_join":
                topics.setdefault(topic, set()).add(ws)
                joined.append(topic)
            elif topic != "phoenix":
                broadcast(topics.get(topic, ()), json.dumps([None, None, topic, event, payload]))
            await ws.send(json.dumps([join_ref, ref, topic, "phx_reply", {"status": "ok", "response": {}}]))
    finally:
        for topic in joined:
            topics[topic].discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
