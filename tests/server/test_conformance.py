"""PROTOCOL.md §10 over real sockets, item by item (the number starts each test name)."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest
import websockets

from chanctl.config.load import load_config_text
from chanctl.errors import ConfigError, ProtocolViolation
from chanctl.protocol.socket import LeaveReason
from chanctl.server.metrics import render_metrics
from tests.server.conftest import ConformanceChannel
from tests.support import QUIET, TIMEOUT, RawClient, closed_with

OK = {"status": "ok", "response": {}}
UNMATCHED = {"status": "error", "response": {"reason": "unmatched topic"}}


async def raw_http(server, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(4096), TIMEOUT)
    finally:
        writer.close()


def upgrade(method: str, query: str) -> bytes:
    return (
        f"{method} /socket/websocket?{query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def terminated() -> tuple[str, LeaveReason]:
    """The next (topic, reason) the test channel's terminate saw."""
    return await asyncio.wait_for(ConformanceChannel.terminated.get(), TIMEOUT)


# -- transport ---------------------------------------------------------------------------------


async def test_1_2_upgrade_with_and_without_vsn(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as v2:
        assert await v2.call([None, "1", "phoenix", "heartbeat", {}]) == [None, "1", "phoenix", "phx_reply", OK]
    async with await RawClient.connect(server.url, mint(1), vsn=None) as v1:
        await v1.send({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"})
        assert await v1.recv() == {"topic": "phoenix", "event": "phx_reply", "payload": OK, "ref": "1"}


@pytest.mark.parametrize("vsn", ["3.0.0", "abc", "2.1.0"])
async def test_3_unsupported_vsn_is_refused(server, mint, vsn):
    with pytest.raises(websockets.InvalidStatus) as info:
        await RawClient.connect(server.url, mint(1), vsn=vsn)
    assert info.value.response.status_code == 403


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("http://evil.example", False), ("https://example.com", True), ("http://example.com:8080", True),
        ("https://chanctl.dev", True), ("https://app.chanctl.dev", True), ("https://notchanctl.dev", False),
        ("https://sub.example.com", False), (None, True),
    ],
)
async def test_5_origin_check(server, mint, origin, allowed):
    if allowed:
        client = await RawClient.connect(server.url, mint(1), origin=origin)
        await client.close()
        return
    with pytest.raises(websockets.InvalidStatus) as info:
        await RawClient.connect(server.url, mint(1), origin=origin)
    assert info.value.response.status_code == 403


async def test_6_token_in_the_subprotocol_and_phoenix_echoed(server, mint):
    encoded = base64.b64encode(mint(77).encode()).decode().rstrip("=")
    ws = await websockets.connect(
        server.url + "?vsn=2.0.0", subprotocols=["phoenix", "base64url.bearer.phx." + encoded])
    async with ws:
        assert ws.subprotocol == "phoenix"
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "phoenix"
        assert [c.user["id"] for c in server.connections] == [77]
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(server.url + "?vsn=2.0.0", subprotocols=["phoenix", "base64url.bearer.phx.Zm9yZ2Vk"])
    assert info.value.response.status_code == 403


async def test_7_post_is_refused_and_never_upgraded(server, mint):
    response = await raw_http(server, upgrade("POST", f"vsn=2.0.0&token={mint(1)}"))
    assert response.startswith(b"HTTP/1.1 405 ") and b"Allow: GET" in response
    assert server.stats.connections == 0


async def test_8_idle_timeout_closes_with_1001_and_a_reason(conformance_server, mint):
    async with conformance_server(idle_timeout=QUIET) as server:
        async with await RawClient.connect(server.url, mint(1)) as c:
            close = await closed_with(c)
    assert close.code == 1001 and "idle timeout" in close.reason


async def test_8_heartbeats_keep_an_idle_connection_open(conformance_server, mint):
    async with conformance_server(idle_timeout=4 * QUIET) as server:
        async with await RawClient.connect(server.url, mint(1)) as c:
            for ref in range(6):  # 6 x QUIET spans 1.5 idle timeouts
                await c.nothing(QUIET)
                assert (await c.call([None, str(ref), "phoenix", "heartbeat", {}]))[4] == OK


@pytest.mark.parametrize(
    "frame, code, words",
    [
        ("not json", 1007, "not valid JSON"),
        ('["1","1","room:a","phx_join"]', 1007, "JSON array"),
        ('["' + "1" * 256 + '","1","room:a","phx_join",{}]', 1007, "join_ref is 256 bytes; a ref may have at most 255"),
        (b"\x07garbage", 1007, "kind 7"),
        ("[" + " " * 5000 + "]", 1009, ""),
    ],
)
async def test_10_malformed_frames_close_with_a_named_code(server, mint, frame, code, words):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.send(frame)
        close = await closed_with(c)
    assert close.code == code and words in close.reason


# -- join / leave ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, response",
    [
        ({}, OK),
        ({"reply": {"n": 1}}, {"status": "ok", "response": {"n": 1}}),
        ({"refuse": {"reason": "unauthorized"}}, {"status": "error", "response": {"reason": "unauthorized"}}),
        ({"crash": True}, {"status": "error", "response": {"reason": "join crashed"}}),
    ],
)
async def test_11_to_14_join_outcomes(server, mint, params, response):
    async with await RawClient.connect(server.url, mint(1)) as c:
        assert await c.call(["1", "1", "room:x", "phx_join", params]) == ["1", "1", "room:x", "phx_reply", response]
        after = await c.call(["1", "2", "room:x", "ping", {}])
        if response["status"] == "ok":
            assert after == ["1", "2", "room:x", "phx_reply", OK]
        else:
            assert after == [None, "2", "room:x", "phx_reply", UNMATCHED]


async def test_15_to_22_routing_refs_and_leave(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        assert await c.call(["1", "1", "nope:1", "phx_join", {}]) == [None, "1", "nope:1", "phx_reply", UNMATCHED]
        assert await c.call([None, "5", "room:lobby", "ping", {}]) == [None, "5", "room:lobby", "phx_reply", UNMATCHED]
        await c.call(["1", "1", "room:lobby", "phx_join", {}])
        assert await c.call(["1", "2", "room:lobby", "ping", {"a": 1}]) == [
            "1", "2", "room:lobby", "phx_reply", {"status": "ok", "response": {"a": 1}}]
        assert (await c.call([None, "3", "room:lobby", "ping", {}]))[0] == "1"
        await c.send(["99", "4", "room:lobby", "ping", {}])
        await c.send(["99", "5", "room:lobby", "phx_leave", {}])
        await c.nothing()
        assert (await c.call(["1", "6", "room:lobby", "ping", {}]))[4] == OK
        await c.send(["1", "7", "room:lobby", "phx_leave", {}])
        assert await c.recv() == ["1", "7", "room:lobby", "phx_reply", OK]
        assert await c.recv() == ["1", "1", "room:lobby", "phx_close", {}]
        assert await c.call(["1", "8", "room:lobby", "ping", {}]) == [None, "8", "room:lobby", "phx_reply", UNMATCHED]
        await c.send(["7", "8", "room:never", "phx_leave", {}])
        assert await c.recv() == ["7", "8", "room:never", "phx_reply", OK]
        await c.nothing()
        assert server.stats.protocol.stale_dropped == 2
        text = render_metrics(server)[0].decode()
        assert "chanctl_stale_join_ref_dropped_total 2.0" in text and "chanctl_unmatched_topic_total 3.0" in text


async def test_23_duplicate_join(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.call(["1", "1", "room:lobby", "phx_join", {}])
        await c.send(["5", "5", "room:lobby", "phx_join", {}])
        assert await c.recv() == ["5", "5", "room:lobby", "phx_reply", OK]
        assert await c.recv() == ["1", "1", "room:lobby", "phx_close", {}]
        await c.send(["1", "6", "room:lobby", "ping", {}])
        await c.nothing()
        assert (await c.call(["5", "7", "room:lobby", "ping", {}]))[0] == "5"
    # The replaced channel's terminate did not run; the live one's did, when the socket closed.
    assert await terminated() == ("room:lobby", LeaveReason.CLOSED)
    assert ConformanceChannel.terminated.empty()


async def test_24_crash_sends_phx_error_and_others_live_on(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.call(["1", "1", "room:a", "phx_join", {}])
        await c.call(["2", "2", "room:b", "phx_join", {}])
        await c.send(["1", "3", "room:a", "boom", {}])
        assert await c.recv() == ["1", "1", "room:a", "phx_error", {"reason": "channel_crash"}]
        assert await terminated() == ("room:a", LeaveReason.CRASHED)
        assert (await c.call(["2", "4", "room:b", "ping", {}]))[4] == OK
        assert (await c.call(["1", "5", "room:a", "ping", {}]))[4] == UNMATCHED
        assert (await c.call(["6", "6", "room:a", "phx_join", {}]))[4] == OK


async def test_25_stop_with_a_reply(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.call(["1", "1", "room:a", "phx_join", {}])
        await c.send(["1", "2", "room:a", "bye", {}])
        assert await c.recv() == ["1", "2", "room:a", "phx_reply", {"status": "ok", "response": {"bye": True}}]
        assert await c.recv() == ["1", "1", "room:a", "phx_close", {}]
        assert await terminated() == ("room:a", LeaveReason.STOPPED)
        assert (await c.call(["1", "3", "room:a", "ping", {}]))[4] == UNMATCHED


async def test_a_reply_that_cannot_be_encoded_crashes_only_the_channel(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        assert (await c.call(["1", "1", "room:a", "phx_join", {"unencodable": True}]))[4] == {
            "status": "error", "response": {"reason": "join crashed"}}
        await c.call(["2", "2", "room:a", "phx_join", {}])
        await c.send(["2", "3", "room:a", "unencodable", {}])
        assert await c.recv() == ["2", "2", "room:a", "phx_error", {"reason": "channel_crash"}]
        assert (await c.call([None, "4", "phoenix", "heartbeat", {}]))[4] == OK


async def test_26_too_many_channels_joined(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        for n in range(5):  # the fixture's max_channels
            await c.call([str(n), str(n), f"room:{n}", "phx_join", {}])
        assert await c.call(["9", "9", "room:9", "phx_join", {}]) == [
            "9", "9", "room:9", "phx_reply", {"status": "error", "response": {
                "reason": "too many channels joined", "limit": "server.max_channels", "max": 5}}]


async def test_27_closing_the_socket_terminates_its_channels(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.call(["1", "1", "room:a", "phx_join", {}])
    assert await terminated() == ("room:a", LeaveReason.CLOSED)


async def test_28_join_and_ping_in_one_tcp_write(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        c.ws.protocol.send_text(orjson.dumps(["1", "1", "room:a", "phx_join", {}]))
        c.ws.protocol.send_text(orjson.dumps(["1", "2", "room:a", "ping", {}]))
        c.ws.transport.write(b"".join(c.ws.protocol.data_to_send()))  # both frames, one write
        assert [(await c.recv())[1] for _ in range(2)] == ["1", "2"]


# -- push / broadcast --------------------------------------------------------------------------


async def test_29_push_after_join(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.send(["1", "1", "room:lobby", "phx_join", {"push": True}])
        assert await c.recv() == ["1", "1", "room:lobby", "phx_reply", OK]
        assert await c.recv() == ["1", None, "room:lobby", "joined", {"status": "connected"}]


@pytest.mark.parametrize("event, sender_gets", [("shout", True), ("shout_from", False)])
async def test_30_31_broadcast_and_broadcast_from(server, mint, event, sender_gets):
    async with await RawClient.connect(server.url, mint(1)) as a, await RawClient.connect(server.url, mint(2)) as b:
        await a.call(["1", "1", "room:lobby", "phx_join", {}])
        await b.call(["4", "4", "room:lobby", "phx_join", {}])
        await a.send(["1", "2", "room:lobby", event, {"m": 1}])
        shout = [None, None, "room:lobby", "shout", {"m": 1}]
        got = [await a.recv() for _ in range(2 if sender_gets else 1)]
        assert ["1", "2", "room:lobby", "phx_reply", OK] in got
        assert (shout in got) is sender_gets
        assert await b.recv() == shout
        await a.nothing()


async def test_32_intercepted_events_go_through_handle_out_per_client(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as a, await RawClient.connect(server.url, mint(2)) as b:
        await a.call(["1", "1", "intercept:lobby", "phx_join", {}])
        await b.call(["4", "4", "intercept:lobby", "phx_join", {}])
        server.pubsub.broadcast("intercept:lobby", "shout", {"m": 1})
        assert await a.recv() == ["1", None, "intercept:lobby", "shout", {"m": 1, "x": 1}]
        assert await b.recv() == ["4", None, "intercept:lobby", "shout", {"m": 1, "x": 1}]
        server.pubsub.broadcast("intercept:lobby", "shout", {"drop": True})
        server.pubsub.broadcast("intercept:lobby", "other", {"m": 2})  # not intercepted: fastlane
        for c in (a, b):
            assert await c.recv() == [None, None, "intercept:lobby", "other", {"m": 2}]
        server.pubsub.broadcast("intercept:lobby", "crash_out", {})
        assert await b.recv() == ["4", "4", "intercept:lobby", "phx_error", {"reason": "channel_crash"}]
        assert await terminated() == ("intercept:lobby", LeaveReason.CRASHED)


async def test_33_server_side_broadcasts(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as a:
        await a.call(["1", "1", "room:lobby", "phx_join", {}])
        assert server.pubsub.broadcast("room:empty", "news", {"n": 1}) == 0
        assert server.pubsub.broadcast("room:lobby", "news", {"n": 2}) == 1
        assert await a.recv() == [None, None, "room:lobby", "news", {"n": 2}]
        await a.nothing()


async def test_34_disconnect_closes_every_socket_of_that_user_with_1001(server, mint):
    a1 = await RawClient.connect(server.url, mint(7))
    a2 = await RawClient.connect(server.url, mint(7))
    other = await RawClient.connect(server.url, mint(8))
    for c in (a1, a2, other):
        await c.call(["1", "1", "room:lobby", "phx_join", {}])
    assert server.disconnect("user_socket:7") == 2
    assert [(await closed_with(c)).code for c in (a1, a2)] == [1001, 1001]
    assert (await other.call([None, "2", "phoenix", "heartbeat", {}]))[4] == OK
    assert server.disconnect("user_socket:404") == 0
    await other.close()


# -- binary and V1 -----------------------------------------------------------------------------


async def test_35_binary_frames(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.call(["1", "1", "room:lobby", "phx_join", {}])
        await c.send(bytes([0, 1, 1, 10, 3]) + b"1" + b"2" + b"room:lobby" + b"bin" + b"\x01\x02")
        got = [await asyncio.wait_for(c.ws.recv(), TIMEOUT) for _ in range(3)]
        assert got == [
            bytes([0, 1, 10, 4]) + b"1" + b"room:lobby" + b"blob" + b"\x01\x02",
            bytes([2, 10, 4]) + b"room:lobby" + b"blob" + b"\x01\x02",
            bytes([1, 1, 1, 10, 2]) + b"1" + b"2" + b"room:lobby" + b"ok" + b"\x01\x02\x03\x04",
        ]


async def test_binary_broadcast_reaches_v2_sockets_even_with_v1_subscribers(server, mint):
    async with await RawClient.connect(server.url, mint(1), vsn="1.0.0") as v1, await RawClient.connect(server.url, mint(2)) as v2:
        await v1.send({"topic": "room:lobby", "event": "phx_join", "payload": {}, "ref": "1"})
        await v1.recv()
        await v2.call(["1", "1", "room:lobby", "phx_join", {}])
        with pytest.raises(ProtocolViolation, match="binary"):
            server.pubsub.broadcast("room:lobby", "blob", b"\x01")
        assert await asyncio.wait_for(v2.ws.recv(), TIMEOUT) == bytes([2, 10, 4]) + b"room:lobby" + b"blob" + b"\x01"
        await v1.nothing()


async def test_36_37_v1_clients(server, mint):
    async with await RawClient.connect(server.url, mint(1), vsn="1.0.0") as c:
        await c.send({"topic": "room:lobby", "event": "phx_join", "payload": {}, "ref": "1"})
        assert await c.recv() == {"topic": "room:lobby", "event": "phx_reply", "payload": OK, "ref": "1"}
        await c.send({"topic": "room:lobby", "event": "shout", "payload": {"m": 1}, "ref": "2"})
        got = [await c.recv(), await c.recv()]
        assert {"topic": "room:lobby", "event": "shout", "payload": {"m": 1}, "ref": None} in got
        assert {"topic": "room:lobby", "event": "phx_reply", "payload": OK, "ref": "2"} in got


async def test_34_the_socket_id_template_comes_from_the_config(make_server, mint):
    text = 'auth: {secret: "${CHANCTL_SECRET}", socket_id: "tenant:{org}:user:{id}"}\ntopics: {"room:*": {join: true}}\n'
    async with make_server(text) as server:
        acme = await RawClient.connect(server.url, mint(7, org="acme"))
        anonymous = await RawClient.connect(server.url, mint(7))  # no org claim: cannot be targeted
        assert server.disconnect("user_socket:7") == 0
        assert server.disconnect("tenant:acme:user:7") == 1
        assert (await closed_with(acme)).code == 1001
        assert (await anonymous.call([None, "1", "phoenix", "heartbeat", {}]))[4] == OK
        await anonymous.close()


@pytest.mark.parametrize("template", ["user_socket", "user:{0}", "user:{id"])
def test_a_socket_id_template_without_named_claims_does_not_load(template):
    with pytest.raises(ConfigError, match="socket"):
        load_config_text(f'auth: {{secret: "{"s" * 40}", socket_id: "{template}"}}\ntopics: {{"room:*": {{join: true}}}}\n')


# -- refs are any JSON value, echoed as they came (PROTOCOL.md §2; integer refs of V1-era clients) --


async def test_integer_refs_v2_join_push_leave_heartbeat_over_a_real_socket(server, mint):
    """What phxsocket/chunnel-style clients send: every frame back carries the integers, as integers."""
    async with await RawClient.connect(server.url, mint(1)) as c:
        assert await c.call([None, 1, "phoenix", "heartbeat", {}]) == [None, 1, "phoenix", "phx_reply", OK]
        assert await c.call([2, 2, "room:lobby", "phx_join", {"reply": {"n": 1}}]) == [
            2, 2, "room:lobby", "phx_reply", {"status": "ok", "response": {"n": 1}}]
        assert await c.call([2, 3, "room:lobby", "ping", {"a": 1}]) == [
            2, 3, "room:lobby", "phx_reply", {"status": "ok", "response": {"a": 1}}]
        assert await c.call([None, 4, "room:lobby", "ping", {}]) == [2, 4, "room:lobby", "phx_reply", OK]
        await c.send(["2", 5, "room:lobby", "ping", {}])  # the string "2" is not the join_ref 2: stale
        await c.nothing()
        await c.send([2, 6, "room:lobby", "phx_leave", {}])
        assert await c.recv() == [2, 6, "room:lobby", "phx_reply", OK]
        assert await c.recv() == [2, 2, "room:lobby", "phx_close", {}]
        assert await c.call([2, 7, "room:lobby", "ping", {}]) == [None, 7, "room:lobby", "phx_reply", UNMATCHED]
        raw = orjson.dumps([None, 8, "phoenix", "heartbeat", {}])
        await c.ws.send(raw.decode())
        assert (await asyncio.wait_for(c.ws.recv(), TIMEOUT)).startswith('[null,8,"phoenix","phx_reply"')
    assert server.stats.protocol_violations == 0 and server.stats.protocol.stale_dropped == 1


async def test_integer_refs_v2_crash_duplicate_join_push_and_broadcast(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as a, await RawClient.connect(server.url, mint(2)) as b:
        await a.send([1, 1, "room:lobby", "phx_join", {"push": True}])
        assert await a.recv() == [1, 1, "room:lobby", "phx_reply", OK]
        assert await a.recv() == [1, None, "room:lobby", "joined", {"status": "connected"}]
        await a.send([9, 9, "room:lobby", "phx_join", {}])  # duplicate join: the old J's phx_close
        assert await a.recv() == [9, 9, "room:lobby", "phx_reply", OK]
        assert await a.recv() == [1, 1, "room:lobby", "phx_close", {}]
        assert (await b.call([4, 4, "intercept:lobby", "phx_join", {}]))[4] == OK
        server.pubsub.broadcast("intercept:lobby", "shout", {"m": 1})  # handle_out pushes with J
        assert await b.recv() == [4, None, "intercept:lobby", "shout", {"m": 1, "x": 1}]
        await a.send([9, 10, "room:lobby", "boom", {}])
        assert await a.recv() == [9, 9, "room:lobby", "phx_error", {"reason": "channel_crash"}]
        await a.send([11, 11, "room:lobby", "phx_join", {}])
        assert await a.recv() == [11, 11, "room:lobby", "phx_reply", OK]
        # A binary frame's join_ref is text: the text "11" is not the integer 11, and an empty one
        # is "" (Phoenix's serializer reads it so), not a null's wildcard: both are stale, as in
        # Phoenix. (Its binary frames write the integer as its text: tests/protocol.)
        stale = server.stats.protocol.stale_dropped
        await a.send(bytes([0, 2, 2, 10, 3]) + b"11" + b"12" + b"room:lobby" + b"bin" + b"\x01")
        await a.send(bytes([0, 0, 2, 10, 3]) + b"13" + b"room:lobby" + b"bin" + b"\x01")
        assert await a.call([11, 14, "room:lobby", "ping", {}]) == [11, 14, "room:lobby", "phx_reply", OK]
        assert server.stats.protocol.stale_dropped == stale + 2


async def test_integer_refs_v1_join_push_leave_heartbeat_over_a_real_socket(server, mint):
    async with await RawClient.connect(server.url, mint(1), vsn="1.0.0") as c:
        def frame(topic, event, ref, payload=None, **extra):
            return {"topic": topic, "event": event, "payload": {} if payload is None else payload, "ref": ref, **extra}

        await c.send(frame("phoenix", "heartbeat", 1))
        assert await c.recv() == frame("phoenix", "phx_reply", 1, OK)
        await c.send(frame("room:lobby", "phx_join", 2, join_ref=2))
        assert await c.recv() == frame("room:lobby", "phx_reply", 2, OK)
        await c.send(frame("room:lobby", "ping", 3, {"a": 1}))
        assert await c.recv() == frame("room:lobby", "phx_reply", 3, {"status": "ok", "response": {"a": 1}})
        await c.send(frame("room:lobby", "boom", 4))
        assert await c.recv() == frame("room:lobby", "phx_error", 2, {"reason": "channel_crash"})
        await c.send(frame("room:lobby", "phx_join", 5))
        assert await c.recv() == frame("room:lobby", "phx_reply", 5, OK)
        await c.send(frame("room:lobby", "phx_leave", 6))
        assert await c.recv() == frame("room:lobby", "phx_reply", 6, OK)
        assert await c.recv() == frame("room:lobby", "phx_close", None)  # its join had no join_ref
        await c.send(frame("room:lobby", "ping", 7))
        assert await c.recv() == frame("room:lobby", "phx_reply", 7, UNMATCHED)


# -- a join without a join_ref (V1-era clients): Phoenix keeps null in its socket's table ----------
# Phoenix 1.8 (lib/phoenix/socket.ex, channel/server.ex): the socket records the join's join_ref as
# sent (nil), and compares later frames, and closes and errors the channel, with it; the channel
# process gets ``join_ref || ref`` as its socket.join_ref, on its replies and pushes.


async def test_a_v2_join_without_a_join_ref_is_answered_frame_by_frame_as_phoenix_does(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.send([None, "1", "room:lobby", "phx_join", {"push": True}])
        assert await c.recv() == [None, "1", "room:lobby", "phx_reply", OK]  # the join's own join_ref: null
        assert await c.recv() == ["1", None, "room:lobby", "joined", {"status": "connected"}]  # the channel's: the ref
        assert await c.call([None, "2", "room:lobby", "ping", {"a": 1}]) == [
            "1", "2", "room:lobby", "phx_reply", {"status": "ok", "response": {"a": 1}}]
        await c.send(["1", "3", "room:lobby", "ping", {}])  # not null, so not the table's null: stale
        await c.send(["1", "4", "room:lobby", "phx_leave", {}])  # stale too: ignored, no reply
        await c.nothing()
        await c.send([None, "5", "room:lobby", "boom", {}])
        assert await c.recv() == [None, None, "room:lobby", "phx_error", {"reason": "channel_crash"}]
        assert await c.call([None, "6", "room:lobby", "phx_join", {}]) == [None, "6", "room:lobby", "phx_reply", OK]
        await c.send([None, "7", "room:lobby", "phx_join", {}])  # duplicate join: the old one closed with null
        assert await c.recv() == [None, "7", "room:lobby", "phx_reply", OK]
        assert await c.recv() == [None, None, "room:lobby", "phx_close", {}]
        await c.send([None, "8", "room:lobby", "phx_leave", {}])
        assert await c.recv() == ["7", "8", "room:lobby", "phx_reply", OK]  # the channel answers the leave
        assert await c.recv() == [None, None, "room:lobby", "phx_close", {}]  # the socket closes it
    assert server.stats.protocol.stale_dropped == 2


async def test_a_v1_join_without_a_join_ref_is_answered_frame_by_frame_as_phoenix_does(server, mint):
    async with await RawClient.connect(server.url, mint(1), vsn="1.0.0") as c:
        def frame(event, ref, payload=None, **extra):
            return {"topic": "room:lobby", "event": event, "payload": {} if payload is None else payload, "ref": ref, **extra}

        await c.send(frame("phx_join", "1"))
        assert await c.recv() == frame("phx_reply", "1", OK)
        await c.send(frame("ping", "2", join_ref="1"))  # the table holds null: any join_ref is stale
        await c.nothing()
        await c.send(frame("ping", "3", {"a": 1}))
        assert await c.recv() == frame("phx_reply", "3", {"status": "ok", "response": {"a": 1}})
        await c.send(frame("boom", "4"))
        assert await c.recv() == frame("phx_error", None, {"reason": "channel_crash"})
        await c.send(frame("phx_join", "5"))
        assert await c.recv() == frame("phx_reply", "5", OK)
        await c.send(frame("phx_leave", "6", join_ref="5"))  # stale: ignored, no reply
        await c.nothing()
        await c.send(frame("phx_leave", "7"))
        assert await c.recv() == frame("phx_reply", "7", OK)
        assert await c.recv() == frame("phx_close", None)
    assert server.stats.protocol.stale_dropped == 2


@pytest.mark.parametrize("ref", [{"id": 1, "at": [2, 3]}, [1, "a"], 2.5, True, ""])
async def test_other_json_refs_are_echoed_unchanged_over_a_real_socket(server, mint, ref):
    async with await RawClient.connect(server.url, mint(1)) as c:
        assert await c.call([ref, ref, "room:lobby", "phx_join", {}]) == [ref, ref, "room:lobby", "phx_reply", OK]
        assert await c.call([ref, ref, "room:lobby", "ping", {}]) == [ref, ref, "room:lobby", "phx_reply", OK]
        await c.send([ref, 1, "room:lobby", "boom", {}])
        assert await c.recv() == [ref, ref, "room:lobby", "phx_error", {"reason": "channel_crash"}]


async def test_a_ref_past_its_limit_closes_with_1007_naming_it(server, mint):
    async with await RawClient.connect(server.url, mint(1)) as c:
        await c.send([None, {"k": "x" * 300}, "phoenix", "heartbeat", {}])
        close = await closed_with(c)
    assert close.code == 1007 and "ref is 308 bytes" in close.reason and "(server.max_ref_bytes)" in close.reason
    assert server.stats.protocol_violations == 1


PRESENCE_YAML = """
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}": {join: true, presence: true}
"""


async def test_integer_join_refs_in_presence_state(make_server, mint):
    """presence_state is a push: it carries the joiner's integer join_ref; diffs are broadcasts (null)."""
    async with make_server(PRESENCE_YAML) as srv, await RawClient.connect(srv.url, mint(7)) as c:
        await c.send([3, 3, "room:1", "phx_join", {}])
        reply, diff, state = [await c.recv() for _ in range(3)]
        assert reply == [3, 3, "room:1", "phx_reply", OK]
        assert diff[:4] == [None, None, "room:1", "presence_diff"]
        assert state[:4] == [3, None, "room:1", "presence_state"] and set(state[4]) == {"7"}
