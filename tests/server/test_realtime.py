"""A ``realtime: true`` topic with raw frames: the wire edges of the Supabase adapter that
realtime-js itself (tests/e2e/test_realtime_js.py) does not reach: the handshake's ``apikey``,
the kind-3 frame's edge cases, bad join configs, Phoenix clients on the same topic, the config checks
and the redaction of the new token carriers."""

from __future__ import annotations

import asyncio
import logging

import pytest
import websockets

from chanctl.client import Client
from chanctl.config.load import load_config_text
from chanctl.errors import ConfigError, ProtocolViolation
from chanctl.protocol import Message, V2Json, negotiate
from chanctl.protocol.serializers import RealtimeV2Json
from chanctl.server.realtime import JoinConfig
from chanctl.server.admin import ADMIN_TOPIC
from tests.server.test_admin import next_event
from tests.server.test_metrics import scrape
from tests.support import SECRET, TIMEOUT, RawClient

CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "realtime:room:{id}":
    realtime: true
    join: true
    presence: {meta: {typing: false}}
    events:
      new_msg: {schema: {body: {type: string, minLength: 1}}, do: broadcast}
  "realtime:quiet":
    realtime: true
    join: true
  "room:{id}":
    join: true
    events:
      relay: {do: push_to, to: '"realtime:room:" + topic.id'}
"""


def kind3(join_ref: str, ref: str, topic: str, event: str, payload: bytes, encoding: int = 1, meta: bytes = b"") -> bytes:
    """What realtime-js 2.x sends for ``channel.send({type: "broadcast", ...})`` over vsn 2.0.0."""
    fields = [join_ref.encode(), ref.encode(), topic.encode(), event.encode(), meta]
    return bytes([3, *map(len, fields), encoding]) + b"".join(fields) + payload


async def connect(server, token: str, vsn: str = "2.0.0") -> RawClient:
    return await RawClient.connect(f"{server.url}?apikey={token}&vsn={vsn}", None, vsn=None)


# -- the serializer --------------------------------------------------------------------------------


def test_a_kind_3_frame_decodes_to_the_json_broadcast_envelope():
    frame = kind3("1", "2", "realtime:room:1", "new_msg", b'{"body":"hi"}', meta=b'{"persist":true}')
    assert RealtimeV2Json().decode(frame) == Message(
        "1", "2", "realtime:room:1", "broadcast", {"type": "broadcast", "event": "new_msg", "payload": {"body": "hi"}}
    )
    raw = RealtimeV2Json().decode(kind3("", "", "t", "e", b"\x00\x01", encoding=0))
    assert raw == Message(None, None, "t", "broadcast", {"type": "broadcast", "event": "e", "payload": b"\x00\x01"})


@pytest.mark.parametrize("frame, words", [
    (bytes([3, 0, 0, 1]), "7-byte header"),
    (bytes([3, 0, 0, 1, 1, 0, 7]) + b"te", "encoding 7"),
    (bytes([3, 0, 0, 9, 1, 0, 1]) + b"te", "inside its topic"),
    (kind3("", "", "t", "e", b"{not json"), "not valid JSON"),
])
def test_a_bad_kind_3_frame_is_a_protocol_violation(frame, words):
    with pytest.raises(ProtocolViolation, match=words):
        RealtimeV2Json().decode(frame)


def test_only_a_realtime_server_takes_kind_3():
    assert isinstance(negotiate("2.0.0", realtime=True), RealtimeV2Json)
    assert type(negotiate("2.0.0")) is V2Json and negotiate("1.0.0", realtime=True).vsn == "1.0.0"
    with pytest.raises(ProtocolViolation, match="kind 3"):
        V2Json().decode(kind3("", "", "t", "e", b"{}"))


# -- the join config -------------------------------------------------------------------------------


@pytest.mark.parametrize("params, reason", [
    ({"config": []}, "config must be an object"),
    ({"config": {"broadcast": "yes"}}, "config.broadcast must be an object"),
    ({"config": {"broadcast": {"self": "true"}}}, "config.broadcast.self must be true or false"),
    ({"config": {"postgres_changes": [{"event": "*", "schema": "public"}]}}, "postgres_changes are not supported"),
    ({"config": {"private": True, "broadcast": {"replay": {"since": 1}}}}, "broadcast.replay is not supported"),
])
def test_a_join_config_this_server_cannot_serve_is_refused_with_its_reason(params, reason):
    outcome = JoinConfig.parse(params)
    assert not isinstance(outcome, JoinConfig) and outcome.status == "error"
    assert outcome.response["reason"].startswith(reason)


def test_a_phoenix_join_without_config_gets_the_defaults():
    assert JoinConfig.parse({}) == JoinConfig.parse(None) == JoinConfig.parse({"config": None}) == JoinConfig(self_broadcast=False, ack=False)
    assert JoinConfig.parse({"config": {"broadcast": {"self": True, "ack": True}, "postgres_changes": []}}) == JoinConfig(True, True)


# -- the config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("topics, words", [
    ('"room:{id}": {realtime: true, join: true}', "write the pattern as 'realtime:room:{id}'"),
    ('"realtime:x": {realtime: true, join: true, events: {broadcast: {do: broadcast}}}', "event 'broadcast' is reserved"),
    ('"realtime:x": {realtime: true, handler: "m:C"}', "cannot have a `handler`"),
])
def test_the_config_refuses_what_a_realtime_topic_cannot_be(topics, words):
    with pytest.raises(ConfigError, match=words.replace("{", r"\{").replace("}", r"\}").replace("`", "`")):
        load_config_text(f'auth: {{secret: "{SECRET}"}}\ntopics:\n  {topics}\n', "<test>")


# -- over the wire ---------------------------------------------------------------------------------


async def test_apikey_is_the_token_only_where_a_topic_is_realtime(make_server, mint):
    async with make_server(CONFIG) as server, await connect(server, mint(1)) as client:
        reply = await client.call(["1", "1", "realtime:room:1", "phx_join", {}])
        assert reply[4] == {"status": "ok", "response": {"postgres_changes": []}}
    plain = 'auth: {secret: "${CHANCTL_SECRET}"}\ntopics: {"room:{id}": {join: true}}\n'
    async with make_server(plain) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(server, mint(1))
        assert refused.value.response.status_code == 403


async def test_kind_3_broadcasts_go_through_the_yaml_and_out_in_the_envelope(make_server, mint):
    async with make_server(CONFIG) as server, await connect(server, mint(1)) as a, await connect(server, mint(2)) as b:
        for client in (a, b):
            await client.call(["1", "1", "realtime:room:1", "phx_join", {"config": {"broadcast": {"ack": True}}}])
        await a.send(kind3("1", "2", "realtime:room:1", "new_msg", b'{"body":"hi"}'))
        assert (await a.recv_until(lambda f: f[1] == "2"))[4] == {"status": "ok", "response": {}}  # ack
        got = await b.recv_until(lambda f: f[3] == "broadcast")
        assert got[:4] == [None, None, "realtime:room:1", "broadcast"]
        assert got[4]["type"] == "broadcast" and got[4]["event"] == "new_msg" and got[4]["payload"]["body"] == "hi"
        await a.send(kind3("1", "3", "realtime:room:1", "new_msg", b"\x00", encoding=0))
        assert (await a.recv_until(lambda f: f[1] == "3"))[4]["response"] == {"reason": "binary broadcast payloads are not supported; send JSON"}
        await a.send(kind3("1", "4", "realtime:room:1", "new_msg", b'{"body":""}'))
        assert (await a.recv_until(lambda f: f[1] == "4"))[4]["response"] == {"errors": {"body": ["can't be blank"]}}


async def test_a_phoenix_client_on_a_realtime_topic_sends_the_yaml_events_and_gets_envelopes(make_server, mint):
    async with make_server(CONFIG) as server, await RawClient.connect(server.url, mint(1), ignore=frozenset({"presence_state"})) as phx:
        assert (await phx.call(["1", "1", "realtime:room:1", "phx_join", {}]))[4]["status"] == "ok"
        assert (await phx.call(["2", "2", "room:1", "phx_join", {}]))[4]["status"] == "ok"
        await phx.send(["2", "3", "room:1", "relay", {"body": "via push_to"}])  # another topic publishes into it
        got = await phx.recv_until(lambda f: f[3] == "broadcast")
        assert got[4]["event"] == "relay" and got[4]["payload"]["body"] == "via push_to"
        # The YAML's event as such: Phoenix's reply; the broadcast skips the sender (no broadcast.self).
        assert (await phx.call(["1", "4", "realtime:room:1", "new_msg", {"body": "x"}]))[4] == {"status": "ok", "response": {}}
        # Supabase's envelope without broadcast.ack: no reply at all, as Supabase answers; the next call's comes first.
        await phx.send(["1", "5", "realtime:room:1", "broadcast", {"type": "broadcast", "event": "new_msg", "payload": {"body": "y"}}])
        await phx.send(["1", "6", "realtime:room:1", "new_msg", {"body": ""}])
        assert (await phx.recv())[1:4] == ["6", "realtime:room:1", "phx_reply"]


async def test_presence_events_are_checked(make_server, mint):
    async with make_server(CONFIG) as server, await connect(server, mint(1)) as a:
        await a.call(["1", "1", "realtime:quiet", "phx_join", {}])
        reply = await a.call(["1", "2", "realtime:quiet", "presence", {"type": "presence", "event": "track", "payload": {}}])
        assert reply[4] == {"status": "error", "response": {"reason": "this topic has no presence"}}
        await a.call(["2", "3", "realtime:room:1", "phx_join", {}])
        reply = await a.call(["2", "4", "realtime:room:1", "presence", {"type": "presence", "event": "dance"}])
        assert reply[4]["response"]["reason"].startswith("presence takes")
        reply = await a.call(["2", "5", "realtime:room:1", "presence", {"type": "presence", "event": "track", "payload": [1]}])
        assert reply[4]["response"] == {"errors": {"payload": ["must be of type object"]}}


async def test_every_track_spends_presence_max_updates(make_server, mint):
    config = CONFIG.replace("presence: {meta: {typing: false}}", "presence: {meta: {typing: false}, max_updates: {updates: 1, per: 1h}}")
    async with make_server(config) as server, await connect(server, mint(1)) as a:
        await a.call(["1", "1", "realtime:room:1", "phx_join", {}])
        track = lambda ref, typing: ["1", ref, "realtime:room:1", "presence", {"type": "presence", "event": "track", "payload": {"typing": typing}}]  # noqa: E731
        assert (await a.call(track("2", True)))[4]["status"] == "ok"  # the one track the limit allows
        assert (await a.call(track("3", False)))[4]["response"] == {"reason": "too many presence updates"}
        untrack = ["1", "4", "realtime:room:1", "presence", {"type": "presence", "event": "untrack"}]
        assert (await a.call(untrack))[4]["status"] == "ok"
        assert (await a.call(track("5", True)))[4]["response"] == {"reason": "too many presence updates"}
        assert server.presence.list("realtime:room:1") == {}


async def test_apikey_and_join_access_tokens_are_redacted_from_debug_logs(make_server, mint, caplog):
    caplog.set_level(logging.DEBUG)
    token = mint(1)
    async with make_server(CONFIG) as server, await connect(server, token) as client:
        await client.call(["1", "1", "realtime:quiet", "phx_join", {"access_token": token}])
    lines = [r.getMessage() for r in caplog.records if r.name == "websockets.server"]  # (the test clients log theirs)
    assert any("apikey=<redacted>" in line for line in lines)
    assert not any(token in line for line in lines)


async def test_watch_metrics_and_the_rate_limit_see_realtime_traffic(make_server, mint):
    limited = CONFIG.replace('auth: {secret: "${CHANCTL_SECRET}"}', 'auth: {secret: "${CHANCTL_SECRET}"}\nserver: {rate_limit: {per_second: 0.001, burst: 2}}')
    async with make_server(limited) as server, Client(server.url, token=mint(1, admin=True)) as admin:
        watch = admin.channel(ADMIN_TOPIC)
        await watch.join(TIMEOUT)
        async with await connect(server, mint(1)) as a, await connect(server, mint(2)) as b:
            await b.call(["1", "1", "realtime:room:1", "phx_join", {}])
            await a.call(["1", "1", "realtime:room:1", "phx_join", {"config": {"broadcast": {"ack": True}}}])
            await a.send(kind3("1", "2", "realtime:room:1", "new_msg", b'{"body":"hi"}'))
            assert (await a.recv_until(lambda f: f[1] == "2"))[4]["status"] == "ok"
            async with asyncio.timeout(TIMEOUT):
                entries: list = []
                while len(entries) < 2:
                    entries += (await next_event(watch, "traffic"))["entries"]
            inbound, outbound = entries[:2]
            assert (inbound["dir"], inbound["topic"], inbound["event"], inbound["user"]) == ("in", "realtime:room:1", "broadcast", 1)
            assert (outbound["dir"], outbound["event"], outbound["recipients"]) == ("out", "broadcast", 1)  # b only: no self
            await a.send(kind3("1", "3", "realtime:room:1", "new_msg", b'{"body":"again"}'))  # a's bucket (2: join, broadcast) is empty now
            assert (await a.recv_until(lambda f: f[1] == "3"))[4]["response"]["reason"] == "rate limited"
        samples = await scrape(server)
    assert samples[("chanctl_joins_total", (("outcome", "ok"),))] == 3  # two realtime joins and the admin's
    assert samples[("chanctl_rate_limited_total", (("limit", "messages"),))] == 1


async def test_the_clients_own_presence_key_is_an_opt_in_of_the_config(make_server, mint):
    config = CONFIG.replace("presence: {meta: {typing: false}}", "presence: {key: params.config.presence.key, meta: {typing: false}}")
    async with make_server(config) as server, await connect(server, mint(1)) as a:
        await a.call(["1", "1", "realtime:room:1", "phx_join", {"config": {"presence": {"key": "alice", "enabled": True}}}])
        track = {"type": "presence", "event": "track", "payload": {"typing": True}}
        assert (await a.call(["1", "2", "realtime:room:1", "presence", track]))[4]["status"] == "ok"
        assert list(server.presence.list("realtime:room:1")) == ["alice"]
