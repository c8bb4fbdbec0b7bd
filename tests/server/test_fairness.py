"""One client's flood does not hold the server: other clients are answered while it is handled.

Frames a client sent ahead arrive in one read (asyncio reads up to 256 KiB at once, thousands of
small frames), and handling them needs no suspension, so without Connection's FAIR_BURST the
flooder's whole backlog ran before anyone else's frame; and websockets parses a whole read in one
callback, so without FairReadConnection's slices one read held the loop for tens of ms. Order and
what websockets was handed, not time, are asserted here; the figures are in
benchmarks/bench_fairness.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator

import orjson
import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from chanctl.server.fairread import READ_SLICE
from chanctl.server.runtime import ChannelServer
from tests.support import TIMEOUT, RawClient

FLOOD = 3000
CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {rate_limit: null, outbound_buffer: 64MiB}
topics:
  "bench:{id}":
    join: true
    events:
      msg: {do: broadcast}
"""


async def test_a_heartbeat_is_answered_while_another_socket_floods(make_server: Callable[..., ChannelServer], mint: Callable[..., str]):
    async with make_server(CONFIG) as server:
        async with await RawClient.connect(server.url, mint(1)) as flooder, await RawClient.connect(server.url, mint(2)) as probe:
            await flooder.call(["1", "1", "bench:flood", "phx_join", {}])
            frames = [json.dumps(["1", str(i), "bench:flood", "msg", {"n": i}]) for i in range(2, FLOOD + 2)]
            for frame in frames:  # queued by the client library, written back to back
                await flooder.ws.send(frame)
            await probe.send([None, "hb", "phoenix", "heartbeat", {}])
            assert (await probe.recv())[1] == "hb"
            handled_before_the_heartbeat = server.stats.replies["ok"]
            assert handled_before_the_heartbeat < FLOOD
            replies = 0
            while True:  # the flood is not over when the heartbeat's reply came
                frame = await flooder.recv()
                if frame[3] == "phx_reply":
                    replies += 1
                    if frame[1] == str(FLOOD + 1):
                        break
            assert replies == FLOOD  # and nothing of the flood was lost


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[ServerConnection, int]]]:
    """Every hand-over of read bytes to websockets' parser on the server: (connection, bytes)."""
    handed: list[tuple[ServerConnection, int]] = []
    parse = ServerConnection.data_received

    def spy(self: ServerConnection, data: bytes) -> None:
        handed.append((self, len(data)))
        parse(self, data)

    monkeypatch.setattr(ServerConnection, "data_received", spy)
    yield handed


def pushes(first: int, count: int, pad: str = "") -> list[str]:
    return [json.dumps(["1", str(i), "bench:flood", "msg", {"n": i, "pad": pad}]) for i in range(first, first + count)]


async def replies_in_order(client: RawClient, first: int, count: int) -> None:
    """Every push's reply and its own broadcast, in the order sent, none missing."""
    expected = first
    while expected < first + count:
        frame = await client.recv()
        if frame[3] == "msg":
            assert frame[4]["n"] == expected
        else:
            assert frame[3] == "phx_reply" and frame[1] == str(expected) and frame[4]["status"] == "ok"
            expected += 1


async def test_a_big_read_is_parsed_a_slice_at_a_time_and_others_are_served_between(
    make_server: Callable[..., ChannelServer], mint: Callable[..., str], parsed: list[tuple[ServerConnection, int]],
):
    """The flood (190 KiB, written before the server runs again) reaches the server in reads far
    over READ_SLICE; the probe's heartbeat, written after it, is answered when only a few slices
    of the flood have been handed to websockets, and no hand-over is over READ_SLICE bytes
    (before FairReadConnection, each read went to websockets whole)."""
    async with make_server(CONFIG) as server:
        # A write buffer big enough that no send below waits: the whole flood, then the heartbeat,
        # are written before the server's next turn.
        async with await RawClient.connect(server.url, mint(1), write_limit=2**24) as flooder, \
                await RawClient.connect(server.url, mint(2)) as probe:
            await flooder.call(["1", "1", "bench:flood", "phx_join", {}])
            frames = pushes(2, FLOOD)
            flood_bytes = sum(len(frame) + 6 for frame in frames)  # masked frames under 126 bytes
            for frame in frames:
                await flooder.ws.send(frame)
            await probe.send([None, "hb", "phoenix", "heartbeat", {}])
            assert (await probe.recv())[1] == "hb"
            handed_by_then = sum(size for _, size in parsed)  # both sockets', handshakes included
            # A few turns of the loop: a slice of the flood in each (before: the first read whole,
            # 100-110 KiB of the 190 here).
            assert handed_by_then < 8 * READ_SLICE < flood_bytes
            await replies_in_order(flooder, 2, FLOOD)
    assert max(size for _, size in parsed) <= READ_SLICE


async def test_frames_bigger_than_a_slice_arrive_whole_and_in_order(
    make_server: Callable[..., ChannelServer], mint: Callable[..., str], parsed: list[tuple[ServerConnection, int]],
):
    """Frames of 10 KiB (each spread over three slices), 60 written back to back."""
    async with make_server(CONFIG) as server, \
            await RawClient.connect(server.url, mint(1), write_limit=2**24) as flooder:
        await flooder.call(["1", "1", "bench:flood", "phx_join", {}])
        for frame in pushes(2, 60, pad="x" * 10_000):
            await flooder.ws.send(frame)
        expected = 2
        while expected < 62:
            frame = await flooder.recv()
            if frame[3] == "msg":
                assert (frame[4]["n"], len(frame[4]["pad"])) == (expected, 10_000)
            else:
                assert frame[1] == str(expected)
                expected += 1
    assert max(size for _, size in parsed) <= READ_SLICE


async def test_a_connection_failed_in_the_middle_of_a_big_read_goes_cleanly(
    make_server: Callable[..., ChannelServer], mint: Callable[..., str], caplog: pytest.LogCaptureFixture,
):
    """A frame over max_frame_size behind 1,000 pushes, all in one write: what the client gets is
    replies in order, without a gap, then the 1009 close (websockets fails the connection when it
    parses that frame, so pushes handled after that get no reply); the bytes still unparsed
    behind it go with the connection, and the server serves the next client."""
    caplog.set_level(logging.DEBUG)
    config = CONFIG.replace("outbound_buffer: 64MiB", "outbound_buffer: 64MiB, max_frame_size: 4KiB")
    async with make_server(config) as server:
        async with await RawClient.connect(server.url, mint(1), write_limit=2**24) as flooder:
            await flooder.call(["1", "1", "bench:flood", "phx_join", {}])
            for frame in pushes(2, 1000) + pushes(1002, 1, pad="x" * 5000) + pushes(1003, 1000):
                await flooder.ws.send(frame)
            expected = 2
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    frame = orjson.loads(await asyncio.wait_for(flooder.ws.recv(), TIMEOUT))
                    if frame[3] == "phx_reply":
                        assert frame[1] == str(expected)
                        expected += 1
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await asyncio.wait_for(server.until_connections(0), TIMEOUT)
        async with await RawClient.connect(server.url, mint(2)) as probe:
            assert (await probe.call([None, "hb", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
