"""The unmodified phoenix.js client recovers across nodes: it drops on node a, a load balancer sends
its reconnection to node b, and its params function's last offset is replayed there from Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.cluster.test_history import history_yaml
from tests.support import run_js

pytestmark = [pytest.mark.redis, pytest.mark.node]

SCENARIO = """
const TOTAL = 60, KICK_AT = 20;
const open = (url, token) => {
  const socket = new Socket(url, { transport: WebSocket, params: { token } });
  socket.connect();
  return socket;
};
// The listener goes through the load balancer; its params function carries the last offset.
let last = null, all;
const received = [], replies = [];
const gotAll = new Promise((ok) => { all = ok; });
const room = open(env.BALANCED, env.T7).channel("feed:1", () => (last ? { since: last } : {}));
room.on("shout", (m) => {
  received.push(m.n);
  last = { offset: m.offset, epoch: m.epoch };
  if (received.length === TOTAL) all();
});
await until((ok) => room.join().receive("ok", (reply) => { replies.push(reply); ok(); }));

const publisher = open(env.NODE_A, env.T42).channel("feed:1");
await until((ok) => publisher.join().receive("ok", ok));
const admin = open(env.NODE_A, env.ADMIN).channel("chanctl:admin");
await until((ok) => admin.join().receive("ok", ok));

for (let n = 1; n <= TOTAL; n++) {
  await until((ok) => publisher.push("shout", { n }).receive("ok", ok));
  if (n === KICK_AT) {
    // The listener's connection to node a is dropped (1001); phoenix.js reconnects by itself,
    // and the balancer sends it to node b.
    await until((ok) => admin.push("disconnect", { socket_id: "user_socket:7" }).receive("ok", ok));
  }
}
await until((ok) => gotAll.then(ok), 15000).catch((e) => { emit({ received, replies }); throw e; });
await new Promise((ok) => setTimeout(ok, 300));  // the '(none)' window: a duplicate would arrive now
emit({ received, joins: replies.length, rejoin: replies[replies.length - 1] });
"""


@contextlib.asynccontextmanager
async def round_robin(*ports: int) -> AsyncIterator[int]:
    """A TCP load balancer on a free port: each new connection goes to the next of ``ports``."""
    turn = iter(range(1 << 30))

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def accept(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        port = ports[next(turn) % len(ports)]
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    balancer = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield balancer.sockets[0].getsockname()[1]
    finally:
        balancer.close()


async def test_phoenix_js_recovers_on_another_node_what_it_missed(start_node, redis_server, mint):
    async with start_node("a", yaml=history_yaml(redis_server, "a")) as a, \
            start_node("b", yaml=history_yaml(redis_server, "b")) as b, \
            round_robin(a.port, b.port) as balanced:
        path = a.url.removesuffix("/websocket").split(str(a.port), 1)[1]
        out = await run_js(
            SCENARIO, NODE_A=a.url.removesuffix("/websocket"), BALANCED=f"ws://127.0.0.1:{balanced}{path}",
            T7=mint(7), T42=mint(42), ADMIN=mint(1, admin=True),
        )
    (result,) = out
    assert result["received"] == list(range(1, 61))
    assert result["joins"] >= 2
    assert result["rejoin"]["recovered"] is True
    assert b.history.stats.recovered >= 1  # the rejoin was answered by node b, from Redis
