"""Client messages handled as they are read (Connection.take), beside the reader task that takes
the rest: the order of every answer, the per-read burst, what goes to the task (joins, leaves,
Python channels, which may await), and a crash or a flood on the way in."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from chanctl.channel import Channel, Outcome, ok
from chanctl.protocol.messages import Message
from chanctl.protocol.serializers import V2Json
from chanctl.server.behaviours import DeclarativeChannel
from chanctl.server.connection import FAIR_BURST, Connection
from tests.support import RawClient, flood_past_the_rate_limit

CONFIG = """
server: {{rate_limit: {rate_limit}}}
auth: {{secret: "${{CHANCTL_SECRET}}"}}
topics:
  "room:{{id}}":
    join: true
    events:
      shout: {{schema: {{body: {{type: string}}}}, do: broadcast}}
      ping: {{do: reply, reply: {{pong: true}}}}
      boom: {{do: reply}}
"""


def config(rate_limit: str = "null") -> str:
    return CONFIG.format(rate_limit=rate_limit)


class TakenPerRead:
    """A spy on Connection.take and read_ended: how many messages each read had handled at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.reads: list[int] = []
        self._now = 0
        take, read_ended = Connection.take, Connection.read_ended

        def counted_take(connection: Connection, data: str | bytes) -> bool:
            taken = take(connection, data)
            self._now += taken
            return taken

        def counted_read_ended(connection: Connection) -> None:
            if self._now:
                self.reads.append(self._now)
                self._now = 0
            read_ended(connection)

        monkeypatch.setattr(Connection, "take", counted_take)
        monkeypatch.setattr(Connection, "read_ended", counted_read_ended)


async def send_together(client: RawClient, frames: list[list[Any]]) -> None:
    """``frames`` in one TCP write: on loopback the server reads them in one read, as it reads a
    client that sends ahead of its answers."""
    protocol = client.ws.protocol
    for frame in frames:
        protocol.send_text(json.dumps(frame).encode())
    client.ws.transport.write(b"".join(protocol.data_to_send()))


def replied(frame: list[Any]) -> tuple[str, str, Any]:
    assert frame[3] == "phx_reply", frame
    return frame[1], frame[4]["status"], frame[4]["response"]


async def test_answers_keep_the_order_of_the_messages_whoever_handles_them(make_server, mint, monkeypatch):
    spy = TakenPerRead(monkeypatch)
    async with make_server(config()) as server:
        async with await RawClient.connect(server.url, mint(1)) as client, await RawClient.connect(server.url, mint(2)) as other:
            await client.call(["1", "1", "room:1", "phx_join", {}])
            await other.call(["1", "1", "room:1", "phx_join", {}])
            spy.reads.clear()
            # Two messages handled at once, then a join (the reader task's), after which every
            # message of the read goes to the reader task too, behind it.
            await send_together(client, [
                ["1", "2", "room:1", "shout", {"body": "a"}],
                [None, "3", "phoenix", "heartbeat", {}],
                ["4", "4", "room:2", "phx_join", {}],
                ["1", "5", "room:1", "ping", {}],
                ["1", "6", "room:1", "shout", {"body": "b"}],
                ["4", "7", "room:2", "phx_leave", {}],
                ["4", "8", "room:2", "ping", {}],
            ])
            frames = [await client.recv() for _ in range(10)]
            assert [replied(f)[:2] if f[3] == "phx_reply" else (f[2], f[3]) for f in frames] == [
                ("room:1", "shout"), ("2", "ok"), ("3", "ok"), ("4", "ok"), ("5", "ok"),
                ("room:1", "shout"), ("6", "ok"), ("7", "ok"), ("room:2", "phx_close"), ("8", "error"),
            ]
            assert frames[0][4]["body"] == "a" and frames[5][4]["body"] == "b"
            assert replied(frames[4])[2] == {"pong": True} and replied(frames[9])[2] == {"reason": "unmatched topic"}
            assert spy.reads == [2]  # the shout and the heartbeat; the rest went behind the join
            for body in ("a", "b"):
                shout = await other.recv()
                assert shout[2:4] == ["room:1", "shout"] and shout[4]["body"] == body
            await other.nothing()


async def test_one_read_is_handled_at_once_up_to_a_burst_and_the_rest_by_the_reader_task(make_server, mint, monkeypatch):
    spy = TakenPerRead(monkeypatch)
    async with make_server(config()) as server:
        async with await RawClient.connect(server.url, mint(1)) as client:
            await client.call(["1", "1", "room:1", "phx_join", {}])
            spy.reads.clear()
            count = FAIR_BURST + 8
            await send_together(client, [["1", str(ref), "room:1", "ping", {}] for ref in range(2, 2 + count)])
            refs = [replied(await client.recv())[0] for _ in range(count)]
            assert refs == [str(ref) for ref in range(2, 2 + count)]
            assert spy.reads == [FAIR_BURST]


class TimedChannel(Channel):
    """A Python channel whose handler needs a current task (``asyncio.timeout``)."""

    async def handle_in(self, event: str, payload: Any) -> Outcome | None:
        async with asyncio.timeout(1):
            await asyncio.sleep(0)
            return ok({"in_task": asyncio.current_task() is not None})


async def test_a_python_channels_events_go_to_the_reader_task_where_handlers_may_await(make_server, mint, monkeypatch):
    spy = TakenPerRead(monkeypatch)
    async with make_server(config()) as server:
        server.router.add("py:*", TimedChannel)
        async with await RawClient.connect(server.url, mint(1)) as client:
            await client.call(["1", "1", "py:1", "phx_join", {}])
            await client.call(["1", "1", "room:1", "phx_join", {}])
            spy.reads.clear()
            for ref in ("2", "3"):
                assert replied(await client.call(["1", ref, "py:1", "work", {}])) == (ref, "ok", {"in_task": True})
            assert spy.reads == []
            assert replied(await client.call(["1", "4", "room:1", "ping", {}]))[1] == "ok"
            assert spy.reads == [1]


async def test_a_declarative_channel_that_crashes_while_handled_at_once_stops_and_the_socket_lives(make_server, mint, monkeypatch, caplog):
    spy = TakenPerRead(monkeypatch)
    handle_in = DeclarativeChannel.handle_in

    async def crashing(channel: DeclarativeChannel, event: str, payload: Any) -> Outcome | None:
        if event == "boom":
            raise RuntimeError("boom on purpose")
        return await handle_in(channel, event, payload)

    monkeypatch.setattr(DeclarativeChannel, "handle_in", crashing)
    async with make_server(config()) as server:
        async with await RawClient.connect(server.url, mint(1)) as client:
            await client.call(["1", "1", "room:1", "phx_join", {}])
            spy.reads.clear()
            with caplog.at_level(logging.ERROR, logger="chanctl.connection"):
                await client.send(["1", "2", "room:1", "boom", {}])
                assert (await client.recv()) == ["1", "1", "room:1", "phx_error", {"reason": "channel_crash"}]
            assert spy.reads == [1]
            assert any("channel crashed on room:1 handling boom" in r.getMessage() for r in caplog.records)
            assert server.pubsub.subscriber_count("room:1") == 0
            assert replied(await client.call(["1", "3", "room:1", "ping", {}]))[1:] == ("error", {"reason": "unmatched topic"})
            await client.call(["5", "5", "room:1", "phx_join", {}])
            assert replied(await client.call(["5", "6", "room:1", "ping", {}]))[1:] == ("ok", {"pong": True})


async def test_a_flood_handled_at_once_is_refused_then_closed_while_others_lose_nothing(make_server, mint):
    async with make_server(config("{per_second: 5, burst: 10}")) as server:
        async with await RawClient.connect(server.url, mint(1)) as flood, await RawClient.connect(server.url, mint(2)) as calm:
            await calm.call(["1", "1", "room:1", "phx_join", {}])
            await flood.call(["1", "1", "room:1", "phx_join", {}])
            await flood_past_the_rate_limit(flood, calm, "room:1", "shout")  # a schema'd broadcast, handled at once
        assert server.stats.protocol.rate_limited == 21


async def test_a_message_left_to_the_reader_task_is_decoded_once(make_server, mint, monkeypatch):
    decoded: list[str | bytes] = []
    decode = V2Json.decode

    def counted(serializer: V2Json, data: str | bytes) -> Message:
        decoded.append(data)
        return decode(serializer, data)

    monkeypatch.setattr(V2Json, "decode", counted)
    async with make_server(config()) as server:
        server.router.add("py:*", TimedChannel)
        async with await RawClient.connect(server.url, mint(1)) as client:
            for frame in (["1", "1", "room:1", "phx_join", {}], ["2", "2", "py:1", "phx_join", {}],
                          ["2", "3", "py:1", "work", {}], ["1", "4", "room:1", "ping", {}], ["1", "5", "room:1", "phx_leave", {}]):
                decoded.clear()
                assert replied(await client.call(frame))[1] == "ok"
                assert len(decoded) == 1, frame
