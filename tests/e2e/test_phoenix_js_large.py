"""Messages over 16 KiB reach phoenix.js whole: chanctl writes them as WebSocket fragments
(RFC 6455 §5.4; chanctl/server/wire.py), which the client's WebSocket reassembles."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import run_js, until_subscribed

pytestmark = pytest.mark.node

SCENARIO = """
const socket = new Socket(env.URL, { transport: WebSocket, params: { token: env.TOKEN } });
socket.connect();
const room = socket.channel("room:lobby");
const got = new Promise((ok) => room.on("big", ok));
await until((ok) => room.join().receive("ok", ok));
const big = await got;
emit({ length: big.text.length, head: big.text.slice(0, 3), tail: big.text.slice(-3) });
socket.disconnect();
"""


async def test_a_broadcast_of_200_kb_reaches_phoenix_js_whole(chat_server, mint):
    text = "<<<" + "0123456789" * 20_000 + ">>>"
    scenario = asyncio.create_task(run_js(SCENARIO, URL=chat_server.url.removesuffix("/websocket"), TOKEN=mint(7)))
    await until_subscribed(chat_server.pubsub, "room:lobby", scenario)
    assert chat_server.publish("room:lobby", "big", {"text": text}) == 1
    assert await scenario == [{"length": len(text), "head": "<<<", "tail": ">>>"}]
