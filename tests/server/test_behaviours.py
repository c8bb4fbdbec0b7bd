"""The YAML behaviours and event rules, end to end over real sockets (raw frames and phoenix.js)."""

import logging

import pytest

from chanctl.protocol.messages import Message
from chanctl.protocol.serializers import binary_push
from tests.support import RawClient, run_js

CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
data: {mods: [1]}
topics:
  "room:{id}":
    join: true
    events:
      shout:
        schema: {body: {type: string}}
        allow: user.id in data.mods || payload.body.startsWith(topic.id)
        do: broadcast
      cursor: {do: broadcast_from}
      blob: {do: broadcast}
      drop: {do: push_to, to: '"inbox:1"'}
      ping: {do: reply, reply: {pong: true}}
      echo: {do: reply}
      nested: {allow: payload.a.b == 1, do: noop}
      dm: {do: push_to, to: '"inbox:" + string(payload.to)'}
      bad_dm: {do: push_to, to: '"inbox:" + payload.to'}
  "inbox:{uid}":
    join: topic.uid == string(user.id)
"""


def reply(frame):
    return frame[4]["status"], frame[4]["response"]


async def test_allow_rules_decide_per_event_and_a_run_time_failure_denies_and_logs(make_server, mint, caplog):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(2)) as c, await RawClient.connect(server.url, mint(1)) as mod:
            await c.call(["1", "1", "room:7", "phx_join", {}])
            await mod.call(["1", "1", "room:7", "phx_join", {}])
            assert reply(await c.call(["1", "2", "room:7", "shout", {"body": "nope"}])) == ("error", {"reason": "unauthorized"})
            assert reply(await c.call(["1", "3", "room:7", "shout", {"body": "7 ok"}])) == ("ok", {})
            assert reply(await mod.call(["1", "2", "room:7", "shout", {"body": "mods may"}])) == ("ok", {})
            # Schema comes first: an invalid payload gets field errors, not "unauthorized".
            assert reply(await c.call(["1", "4", "room:7", "shout", {}])) == ("error", {"errors": {"body": ["can't be blank"]}})
            with caplog.at_level(logging.INFO, logger="chanctl.rules"):
                assert reply(await c.call(["1", "5", "room:7", "nested", {"a": 3}])) == ("error", {"reason": "unauthorized"})
            assert any("payload.a.b == 1" in r.getMessage() and "denied" in r.getMessage() for r in caplog.records)
            assert reply(await c.call(["1", "6", "room:7", "nested", {"a": {"b": 1}}])) == ("ok", {})
            assert reply(await c.call(["1", "7", "room:7", "whatever", {}])) == ("error", {"reason": "unknown event", "event": "whatever"})


async def test_broadcast_from_skips_the_sender_and_reply_answers(make_server, mint):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(2)) as a, await RawClient.connect(server.url, mint(3)) as b:
            await a.call(["1", "1", "room:7", "phx_join", {}])
            await b.call(["1", "1", "room:7", "phx_join", {}])
            assert reply(await a.call(["1", "2", "room:7", "cursor", {"x": 1}])) == ("ok", {})
            got = await b.recv()
            assert got[:4] == [None, None, "room:7", "cursor"] and got[4]["x"] == 1 and got[4]["user_id"] == 2
            assert set(got[4]) == {"x", "user_id", "id", "inserted_at"}
            assert reply(await a.call(["1", "3", "room:7", "ping", {"x": 1}])) == ("ok", {"pong": True})
            assert reply(await a.call(["1", "4", "room:7", "echo", {"x": 1}])) == ("ok", {"x": 1})
            await a.nothing()  # the sender never saw its cursor


async def test_a_binary_push_to_a_stamping_behaviour_is_refused_and_the_channel_lives(make_server, mint, caplog):
    """Found by benchmarks/fuzz.py: a V2 binary push to a ``do: broadcast`` event without a schema
    was stamped into a JSON object holding bytes, which no serializer encodes: the channel crashed
    (phx_error and a traceback in the log) on any client's say-so."""
    async with make_server(CONFIG) as server, await RawClient.connect(server.url, mint(1)) as c:
        await c.call(["1", "1", "room:7", "phx_join", {}])
        await c.call(["2", "2", "inbox:1", "phx_join", {}])
        for ref, event in enumerate(("blob", "cursor", "drop"), start=3):
            await c.send(binary_push(Message("1", str(ref), "room:7", event, b"\x00\xffdata")))
            frame = await c.recv()
            assert frame == ["1", str(ref), "room:7", "phx_reply",
                             {"status": "error", "response": {"errors": {"payload": ["must be JSON, not binary"]}}}]
        await c.send(["1", "9", "room:7", "blob", {"n": 1}])  # the channel lives: its broadcast, then its reply
        broadcast = await c.recv()
        assert broadcast[3] == "blob" and broadcast[4]["n"] == 1
        assert reply(await c.recv()) == ("ok", {})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_push_to_forwards_to_the_computed_topic(make_server, mint):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(2)) as a, await RawClient.connect(server.url, mint(3)) as b:
            await a.call(["1", "1", "room:7", "phx_join", {}])
            assert reply(await b.call(["9", "9", "inbox:3", "phx_join", {}])) == ("ok", {})
            assert reply(await a.call(["1", "2", "room:7", "dm", {"to": 3, "body": "psst"}])) == ("ok", {})
            got = await b.recv()
            assert got[2:4] == ["inbox:3", "dm"] and got[4]["body"] == "psst" and got[4]["user_id"] == 2
            status, response = reply(await a.call(["1", "3", "room:7", "bad_dm", {"to": 3}]))
            assert status == "error" and response["reason"] == "no destination topic"
            assert reply(await a.call(["1", "4", "room:7", "dm", {}])) [0] == "error"


@pytest.mark.node
async def test_each_behaviour_with_phoenix_js(make_server, mint):
    async with make_server(CONFIG) as server:
        events = await run_js("""
const connect = (token) => { const s = new Socket(env.URL, { transport: WebSocket, params: { token } }); s.connect(); return s; };
const a = connect(env.TA), b = connect(env.TB);
const ra = a.channel("room:7"), rb = b.channel("room:7"), inbox = b.channel("inbox:3");
const seen = { a: [], b: [] };
for (const ev of ["shout", "cursor"]) { ra.on(ev, (p) => seen.a.push([ev, p.body || p.x])); rb.on(ev, (p) => seen.b.push([ev, p.body || p.x])); }
const dm = new Promise((ok) => inbox.on("dm", ok));
await until((ok) => ra.join().receive("ok", ok));
await until((ok) => rb.join().receive("ok", ok));
await until((ok) => inbox.join().receive("ok", ok));
emit({ denied: await until((ok) => ra.push("shout", { body: "x" }).receive("error", ok)) });
emit({ invalid: await until((ok) => ra.push("shout", { body: 5 }).receive("error", ok)) });
await until((ok) => ra.push("cursor", { x: 9 }).receive("ok", ok));
await until((ok) => ra.push("shout", { body: "7!" }).receive("ok", ok));
emit({ ping: await until((ok) => ra.push("ping", {}).receive("ok", ok)) });
emit({ noop: await until((ok) => ra.push("nested", { a: { b: 1 } }).receive("ok", ok)) });
await until((ok) => ra.push("dm", { to: 3, body: "hi" }).receive("ok", ok));
emit({ dm: (await dm).body });
emit({ unknown: await until((ok) => ra.push("nope", {}).receive("error", ok)) });
emit({ seen });
a.disconnect(); b.disconnect();
""", URL=server.url.removesuffix("/websocket"), TA=mint(2), TB=mint(3))
    assert events == [
        {"denied": {"reason": "unauthorized"}},
        {"invalid": {"errors": {"body": ["must be of type string"]}}},
        {"ping": {"pong": True}},
        {"noop": {}},
        {"dm": "hi"},
        {"unknown": {"reason": "unknown event", "event": "nope"}},
        {"seen": {"a": [["shout", "7!"]], "b": [["cursor", 9], ["shout", "7!"]]}},
    ]



def test_inserted_at_is_datetimes_iso_text_in_utc_with_z(monkeypatch):
    # stamp() formats the date and time of day once a second: the text must stay what
    # datetime's isoformat(timespec="microseconds") writes in UTC, with Z, as the second changes.
    from datetime import UTC, datetime

    from chanctl.server import behaviours

    for micros in (1_764_645_599_999_998, 1_764_645_599_999_999, 1_764_645_600_000_000, 1_764_645_600_000_001, 86_400_000_007):
        monkeypatch.setattr(behaviours.time, "time_ns", lambda: micros * 1000 + 999)
        expected = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
        assert behaviours.stamp({"id": 1}, {})["inserted_at"] == expected.isoformat(timespec="microseconds").replace("+00:00", "Z")
