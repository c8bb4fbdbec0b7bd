"""The official phoenix.js client against the §10 channel: PROTOCOL.md items 42-48 in scope."""

from __future__ import annotations

import asyncio

import pytest

from chanctl.protocol.socket import LeaveReason
from tests.server.conftest import ConformanceChannel
from tests.support import QUIET, TIMEOUT, run_js

pytestmark = pytest.mark.node


def js_url(server) -> str:
    return server.url.removesuffix("/websocket")


# Every ok reply to the join push (the first join and each rejoin) records the join_ref in use.
JOINS = """
const joinRefs = [], waiting = [];
const track = (room) => room.join().receive("ok", () => {
  joinRefs.push(room.joinRef());
  waiting.filter(([n]) => joinRefs.length >= n).forEach(([, ok]) => ok());
});
const joinedTimes = (n) => until((ok) => (joinRefs.length >= n ? ok() : waiting.push([n, ok])));
"""

CRASH_AND_REJOIN = JOINS + """
const socket = new Socket(env.URL, { transport: WebSocket, params: { token: env.TOKEN } });
socket.connect();
const room = socket.channel("room:lobby");
let errors = 0;
room.onError(() => errors++);
track(room);
await joinedTimes(1);
emit({ ping: await until((ok) => room.push("ping", { a: 1 }).receive("ok", ok)) });
room.push("boom", {});
await joinedTimes(2);
emit({ errors, rejoined: joinRefs[0] !== joinRefs[1] });
emit({ after: await until((ok) => room.push("ping", { b: 2 }).receive("ok", ok)) });
socket.disconnect();
"""


async def test_44_rejoin_after_phx_error(server, mint):
    out = await run_js(CRASH_AND_REJOIN, URL=js_url(server), TOKEN=mint(7))
    assert out == [{"ping": {"a": 1}}, {"errors": 1, "rejoined": True}, {"after": {"b": 2}}]


RECONNECT_AFTER_1001 = JOINS + """
const socket = new Socket(env.URL, { transport: WebSocket, params: { token: env.TOKEN } });
const closes = [];
socket.onClose((e) => closes.push(e.code));
socket.connect();
const room = socket.channel("room:lobby");
track(room);
await joinedTimes(1);
room.push("kick", {});
await joinedTimes(2);
emit({ closes, rejoined: joinRefs[0] !== joinRefs[1] });
emit({ after: await until((ok) => room.push("ping", { c: 3 }).receive("ok", ok)) });
socket.disconnect();
"""


async def test_34_46_disconnect_1001_then_reconnect_and_rejoin(server, mint):
    out = await run_js(RECONNECT_AFTER_1001, URL=js_url(server), TOKEN=mint(7))
    assert out == [{"closes": [1001], "rejoined": True}, {"after": {"c": 3}}]
    assert server.stats.disconnected == 1


AUTH_TOKEN = """
const socket = new Socket(env.URL, { transport: WebSocket, authToken: env.TOKEN });
socket.connect();
const room = socket.channel("room:lobby");
emit({ joined: await until((ok) => room.join().receive("ok", ok)) });
emit({ protocol: socket.conn.protocol });
socket.disconnect();
"""


async def test_6_auth_token_through_the_subprotocol(server, mint):
    out = await run_js(AUTH_TOKEN, URL=js_url(server), TOKEN=mint(55))
    assert out == [{"joined": {}}, {"protocol": "phoenix"}]
    assert server.stats.refused == 0


HEARTBEAT = """
const socket = new Socket(env.URL, { transport: WebSocket, params: { token: env.TOKEN }, heartbeatIntervalMs: Number(env.BEAT) });
let closes = 0, beats = 0;
socket.onClose(() => closes++);
socket.onMessage((m) => { if (m.topic === "phoenix") beats++; });
socket.connect();
const room = socket.channel("room:lobby");
await until((ok) => room.join().receive("ok", ok));
// Outlive the server's idle timeout several times over on heartbeats alone.
await until((ok) => { const t = setInterval(() => { if (beats >= 8) { clearInterval(t); ok(); } }, 10); }, 20000);
emit({ beats: beats >= 8, closes, connected: socket.isConnected() });
socket.disconnect();
"""


async def test_9_47_phoenix_js_heartbeats_keep_the_socket_past_the_idle_timeout(conformance_server, mint):
    idle = 4 * QUIET  # heartbeats every idle/4: a loaded machine may delay one, not three in a row
    async with conformance_server(idle_timeout=idle) as server:
        out = await run_js(HEARTBEAT, URL=js_url(server), TOKEN=mint(7), BEAT=str(int(idle * 1000 / 4)))
    assert out == [{"beats": True, "closes": 0, "connected": True}]


PUSH_BEFORE_JOIN_AND_LEAVE = """
const socket = new Socket(env.URL, { transport: WebSocket, params: { token: env.TOKEN } });
socket.connect();
const room = socket.channel("room:lobby");
room.join();
// Pushed before the join reply: phoenix.js buffers it and sends it with the join_ref once joined.
emit({ early: await until((ok) => room.push("ping", { early: true }).receive("ok", ok)) });
const closed = new Promise((ok) => room.onClose(() => ok(true)));
room.leave().receive("ok", () => emit({ left: true }));
emit({ closed: await until((ok) => closed.then(ok)) });
socket.disconnect();
"""


async def test_43_48_push_before_join_and_leave(server, mint):
    out = await run_js(PUSH_BEFORE_JOIN_AND_LEAVE, URL=js_url(server), TOKEN=mint(7))
    assert out == [{"early": {"early": True}}, {"left": True}, {"closed": True}]
    assert await asyncio.wait_for(ConformanceChannel.terminated.get(), TIMEOUT) == ("room:lobby", LeaveReason.LEFT)
