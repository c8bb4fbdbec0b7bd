"""Adversarial input at a running server: a clear close reason or error reply, never a crash or a traceback."""

from __future__ import annotations

import logging
import time

import pytest
import websockets

from chanctl.protocol.serializers import MAX_DEPTH
from chanctl.server.admin import ADMIN_TOPIC, AdminChannel
from chanctl.tokens import TokenSigner
from tests.support import PRESENCE_EVENTS, SECRET, RawClient


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0"])
async def test_a_payload_nested_deeper_than_can_be_encoded_closes_with_1007(chat_server, mint, caplog, vsn):
    # orjson decodes 1,024 levels but encodes 254: accepted, such a payload crashed the schema
    # validator (RecursionError, a full traceback) or its own reply.
    caplog.set_level(logging.INFO)
    payload = '{"body":' + nested(MAX_DEPTH) + "}"
    frame = (
        f'["1","2","room:42","new_msg",{payload}]' if vsn == "2.0.0"
        else f'{{"topic":"room:42","event":"new_msg","ref":"2","payload":{payload}}}'
    )
    async with await RawClient.connect(chat_server.url, mint(42), vsn=vsn, ignore=PRESENCE_EVENTS) as client:
        await client.send(frame)
        with pytest.raises(websockets.ConnectionClosed):
            await client.recv()
        assert client.ws.close_code == 1007
        assert client.ws.close_reason == f"frame nests deeper than {MAX_DEPTH} levels"
    assert not [r for r in caplog.records if r.exc_info], "a client's fault logged a traceback"


async def test_the_deepest_accepted_payload_is_answered_by_its_schema_and_echoed_by_a_handler(chat_server, server, mint, caplog):
    caplog.set_level(logging.INFO)
    async with await RawClient.connect(chat_server.url, mint(42), ignore=PRESENCE_EVENTS) as client:
        await client.call(["1", "1", "room:42", "phx_join", {}])
        # frame (1) > payload object (2) > body: the deepest body a frame may carry
        await client.send('["1","2","room:42","new_msg",{"body":' + nested(MAX_DEPTH - 2) + "}]")
        reply = await client.recv()
        assert reply[4] == {"status": "error", "response": {"errors": {"body": ["must be of type string"]}}}
    async with await RawClient.connect(server.url, mint(7)) as client:
        await client.call(["1", "1", "room:lobby", "phx_join", {}])
        await client.send('["1","2","room:lobby","ping",' + nested(MAX_DEPTH - 1) + "]")
        reply = await client.recv()
        assert reply[4]["status"] == "ok"
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_wide_but_shallow_payload_is_not_mistaken_for_a_deep_one(server, mint):
    async with await RawClient.connect(server.url, mint(7)) as client:
        await client.call(["1", "1", "room:lobby", "phx_join", {}])
        wide = [[i] for i in range(MAX_DEPTH * 2)]
        reply = await client.call(["1", "2", "room:lobby", "ping", wide])
        assert reply[4] == {"status": "ok", "response": wide}


async def test_a_binary_push_reaches_the_admin_tail_without_stopping_it(server, mint):
    # The tail JSON-encoded every payload: a binary one raised in the tap's task, and every
    # watcher's traffic and stats stopped for good.
    server.router.add(ADMIN_TOPIC, lambda: AdminChannel(server.admin_tap, "admin"))
    async with await RawClient.connect(server.url, mint(1, admin=True)) as admin, await RawClient.connect(server.url, mint(2)) as client:
        await admin.call(["9", "9", ADMIN_TOPIC, "phx_join", {}])
        await client.call(["1", "1", "room:lobby", "phx_join", {}])
        await client.send(bytes([0, 1, 1, 10, 3]) + b"12room:lobbybin" + b"\x01\x02")
        traffic = await admin.recv_until(lambda f: f[3] == "traffic" and any(e["event"] == "bin" for e in f[4]["entries"]))
        entry = next(e for e in traffic[4]["entries"] if e["event"] == "bin")
        assert entry["payload"] == "<2 bytes, binary>" and entry["size"] == 2
        async with await RawClient.connect(server.url, mint(3)) as other:  # ``client`` now gets binary frames
            await other.call(["1", "1", "room:lobby", "phx_join", {}])
            await other.call(["1", "2", "room:lobby", "ping", {"after": "bin"}])
        await admin.recv_until(lambda f: f[3] == "traffic" and any(e["payload"] == '{"after":"bin"}' for e in f[4]["entries"]))


@pytest.mark.parametrize(
    "event, payload, reason",
    [
        ("inspect", {"topic": 5}, "inspect takes {topic: string}"),
        ("disconnect", {"socket_id": ["user_socket:1"]}, "disconnect takes {socket_id: string}"),
        ("broadcast", {"topic": "room:42", "event": "x", "payload": [1]}, "broadcast takes {topic: string, event: string, payload: object}"),
        ("broadcast", 5, "payload must be an object"),
        ("inspect", None, "payload must be an object"),
    ],
)
async def test_admin_commands_of_the_wrong_shape_get_an_error_reply(chat_server, mint, event, payload, reason):
    async with await RawClient.connect(chat_server.url, mint(1, admin=True)) as admin:
        await admin.call(["9", "9", ADMIN_TOPIC, "phx_join", {}])
        reply = await admin.call(["9", "10", ADMIN_TOPIC, event, payload])
        assert reply[4] == {"status": "error", "response": {"reason": reason}}
        assert (await admin.call(["9", "11", ADMIN_TOPIC, "inspect", {"topic": "room:42"}]))[4]["status"] == "ok"


def expired_token() -> str:
    return TokenSigner(SECRET, clock=lambda: time.time() - 30 * 86400).mint(42)  # the chat sample's max_age is 2w


@pytest.mark.parametrize(
    "query, status",
    [("vsn=2.0.0&token=", 403), ("vsn=2.0.0&token=" + "x" * 100_000, 414), ("vsn=2.0.0&token=%ff%fe", 403), ("vsn=%ff", 403), ("vsn=2.0.0&token=EXPIRED", 403)],
)
async def test_odd_handshake_queries_are_refused_with_a_status_and_the_server_carries_on(chat_server, mint, caplog, query, status):
    caplog.set_level(logging.INFO)
    query = query.replace("EXPIRED", expired_token())
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{chat_server.url}?{query}")
    assert info.value.response.status_code == status
    assert not [r for r in caplog.records if r.exc_info]
    async with await RawClient.connect(chat_server.url, mint(42), ignore=PRESENCE_EVENTS) as client:
        assert (await client.call(["1", "1", "room:42", "phx_join", {}]))[4]["status"] == "ok"


async def test_repeated_query_params_take_the_last_value(chat_server, mint):
    url = f"{chat_server.url}?token=garbage&token={mint(42)}&vsn=1.0.0&vsn=2.0.0"
    async with websockets.connect(url) as ws:
        client = RawClient(ws, PRESENCE_EVENTS)
        assert (await client.call(["1", "1", "room:42", "phx_join", {}]))[4]["status"] == "ok"  # a V2 frame
