"""The bench socket's frame reader and the report's histogram, fed bytes and values directly."""

from __future__ import annotations

import asyncio

import orjson

from chanctl.bench.plan import STAMP, has_stamp, render, stamp
from chanctl.bench.stats import Histogram
from chanctl.bench.wire import BenchSocket
from chanctl.protocol.messages import Message
from chanctl.server.wire import ws_frame


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def opened() -> tuple[BenchSocket, list[tuple[str, bytes]], list[Message], Transport]:
    seen: list[tuple[str, bytes]] = []
    messages: list[Message] = []

    def handler(sock: BenchSocket, buf: bytes, start: int, end: int, opcode: int) -> bool:
        found = STAMP.search(buf, start, end)
        if found is None:
            return False
        seen.append((found.group(1).decode(), bytes(buf[start:end])))
        return True

    sock = BenchSocket("ws://127.0.0.1:1/socket/websocket", handler, lambda _, message: messages.append(message))
    transport = Transport()
    sock._transport = transport  # as after a completed handshake
    return sock, seen, messages, transport


def frame(payload: dict) -> bytes:
    return ws_frame(orjson.dumps([None, None, "room:1", "new_msg", payload]))


def test_frames_split_anywhere_across_reads_come_out_whole_and_in_order():
    sock, seen, messages, _ = opened()
    data = b"".join(frame({"body": stamp(i, 1000 + i), "pad": "x" * (i * 70)}) for i in range(5))
    data += ws_frame(orjson.dumps([None, None, "room:1", "presence_diff", {"joins": {}, "leaves": {}}]))
    for cut in range(0, len(data), 7):  # 7-byte reads split headers, lengths and payloads
        sock.data_received(data[cut : cut + 7])
    assert [seq for seq, _ in seen] == ["0", "1", "2", "3", "4"]
    assert [m.event for m in messages] == ["presence_diff"]
    assert sock.frames == 6 and sock.bytes == len(data)


def test_a_fragmented_message_is_joined_and_a_ping_is_answered():
    sock, seen, _, transport = opened()
    text = orjson.dumps([None, None, "room:1", "new_msg", {"body": stamp(9, 1)}])
    sock.data_received(bytes((0x01, 10)) + text[:10] + bytes((0x09, 2)) + b"hi" + bytes((0x80, len(text) - 10)) + text[10:])
    assert [seq for seq, _ in seen] == ["9"]
    assert len(transport.written) == 1 and transport.written[0][0] == 0x8A  # a masked pong
    assert transport.written[0][1] & 0x80


def test_replies_resolve_their_request_and_a_server_close_keeps_its_code():
    async def main() -> None:
        sock, _, _, transport = opened()
        future = sock.request("room:1", "phx_join", {})
        sent = transport.written[-1]
        assert sent[1] & 0x80  # clients mask every frame
        reply = orjson.dumps(["1", "1", "room:1", "phx_reply", {"status": "error", "response": {"reason": "unauthorized"}}])
        sock.data_received(ws_frame(reply))
        result = await future
        assert (result.status, result.response) == ("error", {"reason": "unauthorized"})
        sock.data_received(bytes((0x88, 2)) + (1013).to_bytes(2, "big"))
        assert sock.close_code == 1013 and transport.closed and not sock.closed_by_us

    asyncio.run(main())


def test_a_masked_server_frame_fails_the_connection_with_1002():
    sock, _, _, transport = opened()
    sock.data_received(bytes((0x81, 0x82)) + b"\x00\x00\x00\x00ab")
    assert sock.close_code == 1002 and transport.closed


def test_histogram_percentiles_within_a_tenth_of_a_percent_and_merge():
    first, second = Histogram(), Histogram()
    for us in range(1, 100_001):
        (first if us % 2 else second).add(us)
    first.merge(second)
    assert first.count == 100_000 and first.max == 100_000
    for p, expected in ((50, 50_000), (90, 90_000), (99, 99_000)):
        assert abs(first.percentile(p) - expected) <= expected / 1000
    assert Histogram.from_dict(orjson.loads(orjson.dumps(first.to_dict(), option=orjson.OPT_NON_STR_KEYS))).percentile(99) == first.percentile(99)
    assert Histogram().percentile(50) is None


def test_the_stamp_goes_into_every_string_that_asks_for_it():
    template = {"body": "{stamp}", "nested": [{"at": "t={stamp}"}, 3], "other": "x"}
    assert has_stamp(template) and not has_stamp({"body": "hi"})
    rendered = render(template, stamp(4, 77))
    assert rendered == {"body": "@b4.77@", "nested": [{"at": "t=@b4.77@"}, 3], "other": "x"}
