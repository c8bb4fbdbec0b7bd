"""The realtime sample as two nodes of one cluster: realtime-js clients on different nodes see each
other's broadcasts (in Supabase's envelope) and presence, as on one server."""

from __future__ import annotations

import pytest

from tests.e2e.test_realtime_js import PRELUDE, REALTIME
from tests.support import run_js

pytestmark = [pytest.mark.redis, pytest.mark.node]


async def test_realtime_js_clients_on_two_nodes_share_broadcasts_and_presence(start_node, redis_server, mint):
    def node(name: str) -> str:
        return REALTIME.read_text() + f"cluster:\n  redis: {redis_server.url}\n  node: {name}\n"

    async with start_node("a", yaml=node("a")) as a, start_node("b", yaml=node("b")) as b:
        lines = await run_js(PRELUDE + """
const onA = new RealtimeClient(env.URL_A, { params: { apikey: env.A }, transport: WebSocket });
const onB = new RealtimeClient(env.URL_B, { params: { apikey: env.B }, transport: WebSocket });
const roomA = onA.channel("room:42"), roomB = onB.channel("room:42");
const gotB = on(roomB, "new_msg");
const joined = until((done) => roomB.on("presence", { event: "join" }, ({ key }) => key === "42" && done(key)));
await subscribe(roomA); await subscribe(roomB);
emit({ track: await roomA.track({ typing: true }) });
emit({ joined: await joined, typing: roomB.presenceState()["42"].map((m) => m.typing) });
await roomA.send({ type: "broadcast", event: "new_msg", payload: { body: "across nodes" } });
emit({ got: (await received(gotB, 1)).map((m) => [m.type, m.event, m.payload.body, m.payload.user_id]) });
await onA.disconnect(); await onB.disconnect();
""", URL_A=a.url.removesuffix("/websocket"), URL_B=b.url.removesuffix("/websocket"), A=mint(42), B=mint(7))
    assert lines == [
        {"track": "ok"},
        {"joined": "42", "typing": [True]},
        {"got": [["broadcast", "new_msg", "across nodes", 42]]},
    ]
