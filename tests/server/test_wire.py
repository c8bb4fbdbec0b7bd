"""The fast path's frame builder and per-tick flusher."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode

from chanctl.protocol.serializers import BinaryFrame
from chanctl.server.wire import Flusher, ws_frame


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_ws_frame_matches_websockets_own_unmasked_frames(size):
    text = b"x" * size
    assert ws_frame(text) == Frame(Opcode.TEXT, text).serialize(mask=False, extensions=[])
    binary = BinaryFrame(b"\x01" * size)
    assert ws_frame(binary) == Frame(Opcode.BINARY, bytes(binary)).serialize(mask=False, extensions=[])


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
