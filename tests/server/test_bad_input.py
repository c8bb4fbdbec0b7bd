"""Adversarial input at a running server: a clear close reason or error reply, never a crash or a traceback."""

from __future__ import annotations

import logging

import pytest
import websockets

from chanctl.protocol.serializers import MAX_DEPTH
from tests.support import PRESENCE_EVENTS, RawClient


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
