"""The unmodified phoenix.js client recovers what it missed: its params function returns its last offset."""

from __future__ import annotations

import pytest

from tests.support import run_js

pytestmark = pytest.mark.node

YAML = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}":
    join: true
    history: {size: 100, ttl: 5m}
    events: {new_msg: {do: broadcast}}
"""

SCENARIO = """
const TOTAL = 60, KICK_AT = 20;
const open = (token) => {
  const socket = new Socket(env.URL, { transport: WebSocket, params: { token } });
  socket.connect();
  return socket;
};
// The listener: its channel params are a function, re-read on every rejoin, carrying the last offset.
let last = null, all;
const received = [], replies = [];
const gotAll = new Promise((ok) => { all = ok; });
const listener = open(env.T7);
const room = listener.channel("room:1", () => (last ? { since: last } : {}));
room.on("new_msg", (m) => {
  received.push(m.n);
  last = { offset: m.offset, epoch: m.epoch };
  if (received.length === TOTAL) all();
});
await until((ok) => room.join().receive("ok", (reply) => { replies.push(reply); ok(); }));

const publisher = open(env.T42).channel("room:1");
await until((ok) => publisher.join().receive("ok", ok));
const admin = open(env.ADMIN).channel("chanctl:admin");
await until((ok) => admin.join().receive("ok", ok));

for (let n = 1; n <= TOTAL; n++) {
  await until((ok) => publisher.push("new_msg", { n }).receive("ok", ok));
  if (n === KICK_AT) {
    // The server drops the listener's connection (1001); phoenix.js reconnects and rejoins by itself.
    await until((ok) => admin.push("disconnect", { socket_id: "user_socket:7" }).receive("ok", ok));
  }
}
await until((ok) => gotAll.then(ok), 15000);
await new Promise((ok) => setTimeout(ok, 300));  // the '(none)' window: a duplicate would arrive now
emit({ received, joins: replies.length, rejoin: replies[replies.length - 1] });
"""


async def test_phoenix_js_receives_the_published_sequence_across_a_reconnect(make_server, mint):
    async with make_server(YAML) as server:
        out = await run_js(
            SCENARIO, URL=server.url.removesuffix("/websocket"),
            T7=mint(7), T42=mint(42), ADMIN=mint(1, admin=True),
        )
    (result,) = out
    assert result["received"] == list(range(1, 61))
    assert result["joins"] >= 2
    assert result["rejoin"]["recovered"] is True
    assert server.history.stats.recovered >= 1
