"""The fast path's frame builder and per-tick flusher."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from chanctl.protocol.serializers import BinaryFrame
from chanctl.server.wire import AT_ONCE, FRAGMENT, Flusher, fragmented, ws_frame


@pytest.mark.parametrize("size", [0, 125, 126, FRAGMENT - 4])
def test_ws_frame_matches_websockets_own_unmasked_frames(size):
    text = b"x" * size
    assert ws_frame(text) == Frame(Opcode.TEXT, text).serialize(mask=False, extensions=[])
    assert not fragmented(ws_frame(text))
    binary = BinaryFrame(b"\x01" * size)
    assert ws_frame(binary) == Frame(Opcode.BINARY, bytes(binary)).serialize(mask=False, extensions=[])


@pytest.mark.parametrize("size", [FRAGMENT - 3, 2 * (FRAGMENT - 4), 2 * (FRAGMENT - 4) + 1, 65536, 700_000])
@pytest.mark.parametrize("kind", [Opcode.TEXT, Opcode.BINARY])
def test_a_large_message_goes_in_fragments_that_a_client_reassembles_and_that_can_be_cut_every_fragment(size, kind):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    frame = ws_frame(data if kind is Opcode.TEXT else BinaryFrame(data))
    assert fragmented(frame)
    client = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    client.receive_data(frame)
    frames = client.events_received()
    assert [f.opcode for f in frames] == [kind] + [Opcode.CONT] * (len(frames) - 1)
    assert [f.fin for f in frames] == [False] * (len(frames) - 1) + [True]
    assert b"".join(f.data for f in frames) == data
    # Every fragment but the last is FRAGMENT bytes, so a cut at any multiple of it is between two.
    assert all(len(f.serialize(mask=False, extensions=[])) == FRAGMENT for f in frames[:-1])
    assert len(frames[-1].serialize(mask=False, extensions=[])) <= FRAGMENT


async def test_flusher_runs_each_marked_flush_once_per_tick_and_survives_a_failing_one():
    flusher, calls = Flusher(), []
    done = asyncio.get_running_loop().create_future()

    def broken() -> None:
        raise OSError("transport gone")

    flusher.mark(lambda: calls.append("a"))
    flusher.mark(broken)
    flusher.mark(lambda: done.set_result(calls.append("b")))
    assert calls == []  # nothing is written before the tick ends
    await done
    assert calls == ["a", "b"]


async def test_flusher_lets_the_first_connections_of_a_tick_write_at_once():
    flusher, done = Flusher(), asyncio.get_running_loop().create_future()
    at_once = [flusher.mark(lambda: None) for _ in range(AT_ONCE + 2)]
    assert at_once == [True] * AT_ONCE + [False, False]
    flusher.mark(lambda: done.set_result(None))
    await done  # the tick's end: the next tick starts with the whole allowance again
    assert flusher.mark(lambda: None)
