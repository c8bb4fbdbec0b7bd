"""Supabase's official ``@supabase/realtime-js`` and ``@supabase/supabase-js`` (npm, pinned by
tests/js/package-lock.json), unchanged, against ``sample_configs/realtime.yaml``: Broadcast (self,
ack, refusals), Presence across two clients, refused joins, Postgres changes refused, and token
refresh with ``setAuth``. The client speaks its default vsn 2.0.0, so its broadcasts arrive as
Supabase's binary kind-3 frames; one test uses vsn 1.0.0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chanctl.config.load import load_config
from chanctl.server.runtime import ChannelServer, build_server
from tests.support import ROOT, SECRET, run_js, until_subscribed

pytestmark = pytest.mark.node

REALTIME = ROOT / "sample_configs" / "realtime.yaml"

# Shared by every scenario: a client for a user, and subscribe() as a promise of its first status.
PRELUDE = """
const client = (token) => new RealtimeClient(env.URL, { params: { apikey: token }, transport: WebSocket });
const subscribe = (channel) => until((done) => channel.subscribe((status, err) => {
  if (status !== "CLOSED") done(err ? `${status}: ${err.message}` : status);
}));
const on = (channel, event) => {
  const got = [];
  channel.on("broadcast", { event }, (message) => got.push(message));
  return got;
};
const received = (list, n) => until((done) => { const t = setInterval(() => { if (list.length >= n) { clearInterval(t); done(list); } }, 5); });
"""


@pytest.fixture
async def server() -> AsyncIterator[ChannelServer]:
    async with build_server(load_config(REALTIME, env={"CHANCTL_SECRET": SECRET}), host="127.0.0.1", port=0) as server:
        yield server


async def scenario(server: ChannelServer, body: str, **tokens: str) -> list[dict[str, Any]]:
    return await run_js(PRELUDE + body, URL=server.url.removesuffix("/websocket"), **tokens)


async def test_broadcast_with_self_and_ack_reaches_everyone_and_is_acknowledged(server, mint: Callable[..., str]):
    lines = await scenario(server, """
const a = client(env.A), b = client(env.B);
const roomA = a.channel("room:42", { config: { broadcast: { self: true, ack: true } } });
const roomB = b.channel("room:42");
const gotA = on(roomA, "new_msg"), gotB = on(roomB, "new_msg");
emit({ a: await subscribe(roomA), b: await subscribe(roomB) });
emit({ send: await roomA.send({ type: "broadcast", event: "new_msg", payload: { body: "hi" } }) });
emit({ a: await received(gotA, 1), b: await received(gotB, 1) });
await a.disconnect(); await b.disconnect();
""", A=mint(42), B=mint(7))
    assert lines[0] == {"a": "SUBSCRIBED", "b": "SUBSCRIBED"}
    assert lines[1] == {"send": "ok"}  # with ack, "ok" is the server's reply
    message_a, message_b = lines[2]["a"][0], lines[2]["b"][0]
    assert message_a == message_b
    assert message_a["type"] == "broadcast" and message_a["event"] == "new_msg"
    assert message_a["payload"]["body"] == "hi" and message_a["payload"]["user_id"] == 42  # stamped by do: broadcast


async def test_without_self_the_sender_does_not_get_its_own_broadcast(server, mint):
    # Per-topic order is kept: had A got its own "one", it would come before B's "two".
    lines = await scenario(server, """
const a = client(env.A), b = client(env.B);
const roomA = a.channel("room:42"), roomB = b.channel("room:42");
const gotA = on(roomA, "new_msg"), gotB = on(roomB, "new_msg");
await subscribe(roomA); await subscribe(roomB);
emit({ send: await roomA.send({ type: "broadcast", event: "new_msg", payload: { body: "one" } }) });
await received(gotB, 1);
await roomB.send({ type: "broadcast", event: "new_msg", payload: { body: "two" } });
emit({ a: (await received(gotA, 1)).map((m) => m.payload.body), b: gotB.map((m) => m.payload.body) });
await a.disconnect(); await b.disconnect();
""", A=mint(42), B=mint(7))
    assert lines == [{"send": "ok"}, {"a": ["two"], "b": ["one"]}]


async def test_the_yaml_rules_refuse_a_broadcast_and_ack_reports_it(server, mint):
    lines = await scenario(server, """
const a = client(env.A);
const acked = a.channel("room:42", { config: { broadcast: { ack: true, self: true } } });
await subscribe(acked);
emit({ empty: await acked.send({ type: "broadcast", event: "new_msg", payload: { body: "" } }) });
emit({ undeclared: await acked.send({ type: "broadcast", event: "cursor", payload: { x: 1 } }) });
emit({ ok: await acked.send({ type: "broadcast", event: "new_msg", payload: { body: "fine" } }) });
await a.disconnect();
""", A=mint(42))
    assert lines == [{"empty": "error"}, {"undeclared": "error"}, {"ok": "ok"}]
    assert server.stats.replies["error"] == 2


async def test_presence_syncs_across_two_clients(server, mint):
    lines = await scenario(server, """
const a = client(env.A), b = client(env.B);
const roomA = a.channel("room:42"), roomB = b.channel("room:42");
const synced = (room, keys) => until((done) => {
  const check = () => { const now = Object.keys(room.presenceState()).sort(); if (JSON.stringify(now) === JSON.stringify(keys)) done(room.presenceState()); };
  room.on("presence", { event: "sync" }, check);
});
const leftA = until((done) => roomA.on("presence", { event: "leave" }, ({ key }) => done(key)));
const bothA = synced(roomA, ["42", "7"]), bothB = synced(roomB, ["42", "7"]);
await subscribe(roomA); await subscribe(roomB);
emit({ trackA: await roomA.track({ typing: false }), trackB: await roomB.track({ typing: true }) });
const [stateA, stateB] = await Promise.all([bothA, bothB]);
emit({ a: stateA, b: stateB });
emit({ bad: await roomA.track({ mood: "happy" }) });
emit({ untrack: await roomB.untrack() });
emit({ left: await leftA, now: Object.keys(roomA.presenceState()) });
await a.disconnect(); await b.disconnect();
""", A=mint(42), B=mint(7))
    assert lines[0] == {"trackA": "ok", "trackB": "ok"}
    state_a, state_b = lines[1]["a"], lines[1]["b"]
    assert state_a == state_b
    assert [meta["typing"] for meta in state_a["42"]] == [False]
    assert [meta["typing"] for meta in state_a["7"]] == [True]
    assert all("presence_ref" in meta and "online_at" in meta for metas in state_a.values() for meta in metas)
    assert lines[2] == {"bad": "error"}  # mood is not a presence.meta key of the topic
    assert lines[3:] == [{"untrack": "ok"}, {"left": "7", "now": ["42"]}]


async def test_a_join_the_rules_refuse_and_a_postgres_changes_join_get_clear_errors(server, mint):
    lines = await scenario(server, """
const outsider = client(env.OUTSIDER), member = client(env.MEMBER);
emit({ outsider: await subscribe(outsider.channel("room:42")) });
const pg = member.channel("room:42").on("postgres_changes", { event: "*", schema: "public", table: "messages" }, () => {});
emit({ postgres: await subscribe(pg) });
await outsider.disconnect(); await member.disconnect();
""", OUTSIDER=mint(99), MEMBER=mint(42))
    assert lines == [
        {"outsider": "CHANNEL_ERROR: unauthorized"},
        {"postgres": "CHANNEL_ERROR: postgres_changes are not supported: this server (chanctl) serves Broadcast and Presence only"},
    ]


async def test_set_auth_refreshes_the_socket_token_and_a_foreign_token_is_refused(server, mint):
    lines = await scenario(server, """
const a = client(env.A);
const room = a.channel("room:42");
await subscribe(room);
await a.setAuth(env.FRESH);   // pushes access_token on every joined channel
const check = a.channel("room:lobby", { config: { broadcast: { ack: true } } });
emit({ lobby: await subscribe(check) });  // joined after the refresh: its reply follows the refresh's
await a.setAuth(env.OTHER);   // a token of another user: the next join carries it and is refused
emit({ other: await subscribe(a.channel("room:nope")) });
await a.disconnect();
""", A=mint(42, ttl=300), FRESH=mint(42), OTHER=mint(7))
    assert lines[0] == {"lobby": "SUBSCRIBED"}
    assert lines[1]["other"].startswith("CHANNEL_ERROR: wrong user")
    assert server.stats.sessions.refreshes["ok"] == 1


async def test_a_broadcast_from_outside_the_topic_reaches_realtime_js_in_its_envelope(server, mint):
    task = asyncio.create_task(scenario(server, """
const a = client(env.A);
const room = a.channel("room:42");
const got = on(room, "announce");
await subscribe(room);
emit({ got: await received(got, 1) });
await a.disconnect();
""", A=mint(42)))
    await until_subscribed(server.pubsub, "realtime:room:42", task)
    assert server.publish("realtime:room:42", "announce", {"text": "maintenance at 5"}) == 1  # as `chanctl send --broadcast`
    assert await task == [{"got": [{"type": "broadcast", "event": "announce", "payload": {"text": "maintenance at 5"}}]}]


async def test_vsn_1_0_0_json_objects_carry_broadcast_and_presence_too(server, mint):
    """realtime-js's ``vsn: "1.0.0"`` (what the Python ``realtime`` package speaks): no binary frames."""
    lines = await scenario(server, """
const v1 = (token) => new RealtimeClient(env.URL, { params: { apikey: token }, transport: WebSocket, vsn: "1.0.0" });
const a = v1(env.A), b = v1(env.B);
const roomA = a.channel("room:42", { config: { broadcast: { ack: true } } }), roomB = b.channel("room:42");
const gotB = on(roomB, "new_msg");
const joinedB = until((done) => roomB.on("presence", { event: "join" }, ({ key }) => done(key)));
await subscribe(roomA); await subscribe(roomB);
emit({ send: await roomA.send({ type: "broadcast", event: "new_msg", payload: { body: "v1" } }), track: await roomA.track({}) });
emit({ body: (await received(gotB, 1))[0].payload.body, joined: await joinedB });
await a.disconnect(); await b.disconnect();
""", A=mint(42), B=mint(7))
    assert lines == [{"send": "ok", "track": "ok"}, {"body": "v1", "joined": "42"}]


async def test_supabase_js_create_client_channel_works_with_a_chanctl_token_as_its_key(server, mint):
    """supabase-js as an app writes it: ``createClient(url, key).channel(...)``; the sample's
    ``server.path: /realtime/v1`` is where it looks, and the key is a chanctl token."""
    lines = await scenario(server, """
const url = env.URL.replace("ws://", "http://").replace(/\\/realtime\\/v1$/, "");
const supabase = createClient(url, env.A, { realtime: { transport: WebSocket } });
const room = supabase.channel("room:42", { config: { broadcast: { self: true } } });
const got = on(room, "new_msg");
const tracked = until((done) => room.on("presence", { event: "join" }, ({ key }) => done(key)));
emit({ subscribed: await subscribe(room) });
emit({ send: await room.send({ type: "broadcast", event: "new_msg", payload: { body: "from supabase-js" } }),
       track: await room.track({ typing: false }) });
emit({ body: (await received(got, 1))[0].payload.body, key: await tracked });
await supabase.removeAllChannels();
""", A=mint(42))
    assert lines == [{"subscribed": "SUBSCRIBED"}, {"send": "ok", "track": "ok"}, {"body": "from supabase-js", "key": "42"}]
