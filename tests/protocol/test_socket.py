"""SocketProtocol, sans-I/O: raw frames in, frames and actions out (PROTOCOL.md §3, §10).

Each test plays the runtime: it feeds frames, runs the "handler" by reporting outcomes back, and
reads the frames the protocol queued.
"""

from __future__ import annotations

import orjson
import pytest

from chanctl.errors import ProtocolViolation
from chanctl.protocol import Deliver, Join, Leave, Router, SocketProtocol, V1Json, V2Json
from chanctl.protocol.ratelimit import TokenBucket
from chanctl.protocol.socket import LeaveReason

UNMATCHED = {"status": "error", "response": {"reason": "unmatched topic"}}
OK = {"status": "ok", "response": {}}


def make(max_channels: int = 100, serializer=None) -> SocketProtocol:
    router: Router[str] = Router()
    router.add("room:*", "room")
    return SocketProtocol(serializer or V2Json(), router, max_channels=max_channels)


def feed(proto: SocketProtocol, frame) -> list:
    return proto.receive(frame if isinstance(frame, (str, bytes)) else orjson.dumps(frame).decode())


def sent(proto: SocketProtocol) -> list:
    return [orjson.loads(f) for f in proto.data_to_send()]


def joined(proto: SocketProtocol, join_ref: str = "1", topic: str = "room:lobby"):
    (join,) = feed(proto, [join_ref, join_ref, topic, "phx_join", {}])
    channel = proto.join_succeeded(join)
    assert sent(proto) == [[join_ref, join_ref, topic, "phx_reply", OK]]
    return channel


def test_9_heartbeat_before_any_join():
    proto = make()
    assert feed(proto, [None, "1", "phoenix", "heartbeat", {}]) == []
    assert sent(proto) == [[None, "1", "phoenix", "phx_reply", OK]]


def test_11_12_join_ok_and_ok_with_reply():
    proto = make()
    (join,) = feed(proto, ["1", "1", "room:x", "phx_join", {"p": 1}])
    assert isinstance(join, Join) and join.payload == {"p": 1} and join.join_ref == "1"
    proto.join_succeeded(join, {"n": 1})
    assert sent(proto) == [["1", "1", "room:x", "phx_reply", {"status": "ok", "response": {"n": 1}}]]


def test_13_refused_join_records_nothing():
    proto = make()
    (join,) = feed(proto, ["1", "1", "room:x", "phx_join", {}])
    proto.join_refused(join, {"reason": "unauthorized"})
    assert feed(proto, ["1", "2", "room:x", "ping", {}]) == []
    assert sent(proto) == [
        ["1", "1", "room:x", "phx_reply", {"status": "error", "response": {"reason": "unauthorized"}}],
        [None, "2", "room:x", "phx_reply", UNMATCHED],
    ]


def test_14_join_crashed():
    proto = make()
    (join,) = feed(proto, ["1", "1", "room:x", "phx_join", {}])
    proto.join_crashed(join)
    assert sent(proto) == [["1", "1", "room:x", "phx_reply", {"status": "error", "response": {"reason": "join crashed"}}]]


def test_15_16_unmatched_topic_has_null_join_ref():
    proto = make()
    assert feed(proto, ["1", "1", "nope:1", "phx_join", {}]) == []
    assert feed(proto, [None, "5", "room:lobby", "ping", {}]) == []
    assert sent(proto) == [[None, "1", "nope:1", "phx_reply", UNMATCHED], [None, "5", "room:lobby", "phx_reply", UNMATCHED]]
    assert proto.stats.unmatched == 2


@pytest.mark.parametrize("join_ref", ["1", None])
def test_17_18_deliver_with_matching_or_null_join_ref(join_ref):
    proto = make()
    channel = joined(proto)
    (deliver,) = feed(proto, [join_ref, "2", "room:lobby", "ping", {"a": 1}])
    assert deliver == Deliver(channel, "2", "ping", {"a": 1})
    proto.reply(channel, deliver.ref, "ok", deliver.payload)
    assert sent(proto) == [["1", "2", "room:lobby", "phx_reply", {"status": "ok", "response": {"a": 1}}]]


def test_19_21_stale_join_ref_is_dropped_and_counted():
    proto = make()
    joined(proto)
    assert feed(proto, ["99", "2", "room:lobby", "ping", {}]) == []
    assert feed(proto, ["99", "3", "room:lobby", "phx_leave", {}]) == []
    assert sent(proto) == [] and proto.stats.stale_dropped == 2
    assert "room:lobby" in proto.channels


def test_20_leave_replies_then_closes():
    proto = make()
    channel = joined(proto)
    (leave,) = feed(proto, ["1", "3", "room:lobby", "phx_leave", {}])
    assert leave == Leave(channel, LeaveReason.LEFT)
    feed(proto, ["1", "4", "room:lobby", "ping", {}])
    assert sent(proto) == [
        ["1", "3", "room:lobby", "phx_reply", OK],
        ["1", "1", "room:lobby", "phx_close", {}],
        [None, "4", "room:lobby", "phx_reply", UNMATCHED],
    ]


def test_22_leave_of_an_unjoined_topic():
    proto = make()
    assert feed(proto, ["7", "8", "room:never", "phx_leave", {}]) == []
    assert sent(proto) == [["7", "8", "room:never", "phx_reply", OK]]


def test_23_duplicate_join_replaces_the_channel():
    proto = make()
    old = joined(proto)
    leave, join = feed(proto, ["5", "5", "room:lobby", "phx_join", {}])
    assert leave == Leave(old, LeaveReason.DUPLICATE_JOIN) and join.replaced is old
    new = proto.join_succeeded(join)
    assert sent(proto) == [["5", "5", "room:lobby", "phx_reply", OK], ["1", "1", "room:lobby", "phx_close", {}]]
    assert feed(proto, ["1", "6", "room:lobby", "ping", {}]) == []
    assert feed(proto, ["5", "7", "room:lobby", "ping", {}]) == [Deliver(new, "7", "ping", {})]


def test_24_crash_sends_phx_error_and_frees_the_topic():
    proto = make()
    channel = joined(proto)
    assert proto.crash(channel) == Leave(channel, LeaveReason.CRASHED)
    proto.reply(channel, "2", "ok", {})  # a late reply of the dead channel is dropped
    assert sent(proto) == [["1", "1", "room:lobby", "phx_error", {"reason": "channel_crash"}]]
    joined(proto, "9")


def test_25_stop_sends_the_reply_first_then_phx_close():
    proto = make()
    channel = joined(proto)
    proto.reply(channel, "2", "ok", {"bye": True})
    assert proto.stop(channel) == Leave(channel, LeaveReason.STOPPED)
    assert sent(proto) == [
        ["1", "2", "room:lobby", "phx_reply", {"status": "ok", "response": {"bye": True}}],
        ["1", "1", "room:lobby", "phx_close", {}],
    ]


def test_a_topic_or_event_name_past_the_limit_is_refused_before_anything_keeps_it():
    """Issue 16: names become keys of tables, logs, metrics and the admin traffic; bounded at entry.
    The limit is in UTF-8 bytes, so 64 four-byte characters are 256 bytes."""
    router: Router[str] = Router()
    router.add("room:*", "room")
    proto = SocketProtocol(V2Json(), router, max_name_length=255)
    refused = {"status": "error", "response": {"reason": "name too long", "limit": "server.max_name_length", "max": 255}}
    long_topic, emoji_topic = "room:" + "x" * 251, "room:" + "\U0001F600" * 63
    assert feed(proto, ["1", "1", long_topic, "phx_join", {}]) == []
    assert feed(proto, ["2", "2", emoji_topic, "phx_join", {}]) == []
    assert sent(proto) == [["1", "1", long_topic, "phx_reply", refused], ["2", "2", emoji_topic, "phx_reply", refused]]
    assert len(feed(proto, ["3", "3", "room:" + "x" * 250, "phx_join", {}])) == 1  # 255 bytes: fine
    channel = joined(proto, "4", "room:ok")
    assert feed(proto, ["4", "5", "room:ok", "e" * 256, {}]) == []
    assert sent(proto) == [["4", "5", "room:ok", "phx_reply", refused]]
    assert proto.stats.refused == {"server.max_name_length": 3} and channel.topic in proto.channels


def test_a_join_frame_past_the_payload_limit_is_refused():
    router: Router[str] = Router()
    router.add("room:*", "room")
    proto = SocketProtocol(V2Json(), router, max_join_payload=1024)
    assert feed(proto, ["1", "1", "room:a", "phx_join", {"x": "y" * 1024}]) == []
    assert sent(proto) == [["1", "1", "room:a", "phx_reply", {"status": "error", "response": {
        "reason": "join payload too large", "limit": "server.max_join_payload", "max": 1024}}]]
    assert len(feed(proto, ["2", "2", "room:a", "phx_join", {"x": "y" * 900}])) == 1
    assert proto.stats.refused == {"server.max_join_payload": 1}


def test_26_too_many_channels():
    proto = make(max_channels=3)
    for n in range(3):
        joined(proto, str(n), f"room:{n}")
    assert feed(proto, ["9", "9", "room:9", "phx_join", {}]) == []
    assert sent(proto) == [["9", "9", "room:9", "phx_reply", {"status": "error", "response": {
        "reason": "too many channels joined", "limit": "server.max_channels", "max": 3}}]]
    # A duplicate join of a joined topic is not a new channel.
    assert len(feed(proto, ["10", "10", "room:0", "phx_join", {}])) == 2


def test_27_close_all_stops_every_channel_silently():
    proto = make()
    a, b = joined(proto, "1", "room:a"), joined(proto, "2", "room:b")
    assert proto.close_all() == [Leave(a, LeaveReason.CLOSED), Leave(b, LeaveReason.CLOSED)]
    assert sent(proto) == [] and proto.channels == {}


def test_28_frames_are_processed_in_order():
    proto = make()
    (join,) = feed(proto, ["1", "1", "room:lobby", "phx_join", {}])
    channel = proto.join_succeeded(join)
    (deliver,) = feed(proto, ["1", "2", "room:lobby", "ping", {}])
    proto.reply(channel, deliver.ref, "ok", {})
    assert [f[1] for f in sent(proto)] == ["1", "2"]


def test_29_push_carries_the_join_ref():
    proto = make()
    channel = joined(proto)
    proto.push(channel, "joined", {"status": "connected"})
    assert sent(proto) == [["1", None, "room:lobby", "joined", {"status": "connected"}]]


def test_35_binary_push_is_delivered_with_bytes_and_replied_in_binary():
    proto = make()
    channel = joined(proto, "1")
    frame = bytes([0, 1, 1, 10, 3]) + b"1" + b"2" + b"room:lobby" + b"bin" + b"\x01\x02"
    (deliver,) = proto.receive(frame)
    assert deliver == Deliver(channel, "2", "bin", b"\x01\x02")
    proto.reply(channel, "2", "ok", deliver.payload + b"\x03\x04")
    proto.push(channel, "blob", b"\x05")
    assert proto.data_to_send() == [
        bytes([1, 1, 1, 10, 2]) + b"1" + b"2" + b"room:lobby" + b"ok" + b"\x01\x02\x03\x04",
        bytes([0, 1, 10, 4]) + b"1" + b"room:lobby" + b"blob" + b"\x05",
    ]


def test_36_37_v1_join_uses_the_ref_as_the_channels_join_ref_and_replies_without_it():
    proto = make(serializer=V1Json())
    (join,) = feed(proto, '{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1"}')
    assert (join.join_ref, join.channel_join_ref) == (None, "1")  # as Phoenix: null kept, ref for the channel
    channel = proto.join_succeeded(join)
    assert (channel.join_ref, channel.reply_join_ref) == (None, "1")
    feed(proto, '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"2"}')
    assert sent(proto) == [
        {"topic": "room:lobby", "event": "phx_reply", "payload": OK, "ref": "1"},
        {"topic": "phoenix", "event": "phx_reply", "payload": OK, "ref": "2"},
    ]



def test_rate_limit_replies_with_retry_after_and_spares_heartbeats():
    proto = make()
    proto.rate_limit = TokenBucket(10.0, 2, last=0.0)
    joined(proto)  # the join takes the first token
    assert feed(proto, ["1", "2", "room:lobby", "ping", {}])  # the second
    assert feed(proto, ["1", "3", "room:lobby", "ping", {}]) == []
    assert sent(proto) == [["1", "3", "room:lobby", "phx_reply",
                            {"status": "error", "response": {"reason": "rate limited", "limit": "server.rate_limit", "retry_after_ms": 100}}]]
    assert feed(proto, [None, "4", "phoenix", "heartbeat", {}]) == []  # never limited
    assert sent(proto) == [[None, "4", "phoenix", "phx_reply", OK]]
    assert proto.stats.rate_limited == 1
    (deliver,) = proto.receive(orjson.dumps(["1", "5", "room:lobby", "ping", {}]).decode(), now=0.1)  # refilled
    assert deliver.ref == "5"


def test_a_flood_past_twice_the_burst_closes_with_1008():
    proto = make()
    proto.rate_limit = TokenBucket(1.0, 3, last=0.0)
    for ref in range(3 + 2 * 3):
        feed(proto, [None, str(ref), "room:nope", "ping", {}])
    with pytest.raises(ProtocolViolation) as info:
        feed(proto, [None, "x", "room:nope", "ping", {}])
    assert info.value.code == 1008


def test_access_token_is_the_sockets_own_event_on_phoenix_and_on_joined_channels():
    proto = make()
    (refresh,) = feed(proto, [None, "1", "phoenix", "access_token", {"access_token": "t"}])
    assert (refresh.join_ref, refresh.ref, refresh.topic, refresh.payload) == (None, "1", "phoenix", {"access_token": "t"})
    proto.reply_refresh(refresh, "ok", {"expires_in": 60})
    assert sent(proto) == [[None, "1", "phoenix", "phx_reply", {"status": "ok", "response": {"expires_in": 60}}]]
    joined(proto, "4")
    (refresh,) = feed(proto, ["4", "5", "room:lobby", "access_token", {}])
    proto.reply_refresh(refresh, "error", {"reason": "r"})
    assert sent(proto) == [["4", "5", "room:lobby", "phx_reply", {"status": "error", "response": {"reason": "r"}}]]
    # Not joined: the usual unmatched-topic reply; a stale join_ref: dropped.
    assert feed(proto, [None, "6", "room:other", "access_token", {}]) == []
    assert sent(proto) == [[None, "6", "room:other", "phx_reply", UNMATCHED]]
    assert feed(proto, ["9", "7", "room:lobby", "access_token", {}]) == []
    proto.notify("token_expiring", {"expires_in": 5})
    assert sent(proto) == [[None, None, "phoenix", "token_expiring", {"expires_in": 5}]]


# -- refs as any JSON value (Phoenix echoes what it got; V1-era clients send integers) -----------


def test_integer_refs_come_back_as_integers_in_every_frame_v2():
    """Join, push, reply, server push, leave, phx_close and heartbeat, frame by frame, as a client
    that counts its refs with integers (phxsocket, chunnel) sends them."""
    proto = make()
    (join,) = feed(proto, [1, 1, "room:lobby", "phx_join", {}])
    assert (join.join_ref, join.ref) == (1, 1)
    channel = proto.join_succeeded(join, {"n": 1})
    (deliver,) = feed(proto, [1, 2, "room:lobby", "ping", {"a": 1}])
    assert deliver == Deliver(channel, 2, "ping", {"a": 1})
    proto.reply(channel, deliver.ref, "ok", deliver.payload)
    proto.push(channel, "presence_state", {})
    assert feed(proto, [None, 3, "phoenix", "heartbeat", {}]) == []
    (deliver,) = feed(proto, [None, 4, "room:lobby", "ping", {}])  # a null join_ref is the channel's
    proto.reply(channel, deliver.ref, "ok", {})
    (leave,) = feed(proto, [1, 5, "room:lobby", "phx_leave", {}])
    assert leave == Leave(channel, LeaveReason.LEFT)
    frames = proto.data_to_send()
    assert [orjson.loads(f) for f in frames] == [
        [1, 1, "room:lobby", "phx_reply", {"status": "ok", "response": {"n": 1}}],
        [1, 2, "room:lobby", "phx_reply", {"status": "ok", "response": {"a": 1}}],
        [1, None, "room:lobby", "presence_state", {}],
        [None, 3, "phoenix", "phx_reply", OK],
        [1, 4, "room:lobby", "phx_reply", OK],
        [1, 5, "room:lobby", "phx_reply", OK],
        [1, 1, "room:lobby", "phx_close", {}],
    ]
    assert frames[0].startswith(b"[1,1,")  # integers on the wire, not "1"


def test_integer_refs_in_crash_duplicate_join_and_refusals_v2():
    proto = make(max_channels=2)
    first = proto.join_succeeded(feed(proto, [10, 10, "room:a", "phx_join", {}])[0])
    leave, join = feed(proto, [20, 21, "room:a", "phx_join", {}])  # duplicate: the old one closes
    second = proto.join_succeeded(join)
    assert leave.channel is first and second.join_ref == 20
    assert proto.crash(second) == Leave(second, LeaveReason.CRASHED)
    feed(proto, [30, 31, "room:never", "phx_leave", {}])  # an unjoined topic echoes both refs
    feed(proto, [40, 41, "nope:1", "phx_join", {}])  # unmatched: join_ref null
    proto.join_refused(feed(proto, [50, 51, "room:b", "phx_join", {}])[0], {"reason": "no"})
    assert sent(proto) == [
        [10, 10, "room:a", "phx_reply", OK],
        [20, 21, "room:a", "phx_reply", OK],
        [10, 10, "room:a", "phx_close", {}],
        [20, 20, "room:a", "phx_error", {"reason": "channel_crash"}],
        [30, 31, "room:never", "phx_reply", OK],
        [None, 41, "nope:1", "phx_reply", UNMATCHED],
        [50, 51, "room:b", "phx_reply", {"status": "error", "response": {"reason": "no"}}],
    ]


@pytest.mark.parametrize("stale", ["1", 1.0, True, [1], {"1": 1}, 2])
def test_a_join_ref_is_only_the_same_ref_with_the_same_json_type(stale):
    """Phoenix compares join_refs with ``===``: a channel joined with the integer 1 does not take
    frames with join_ref "1", 1.0 or true (dropped as stale, §3 rule 5), only 1 or null."""
    proto = make()
    channel = proto.join_succeeded(feed(proto, [1, 1, "room:lobby", "phx_join", {}])[0])
    sent(proto)
    assert feed(proto, [stale, 2, "room:lobby", "ping", {}]) == []
    assert feed(proto, [stale, 3, "room:lobby", "phx_leave", {}]) == []
    assert sent(proto) == [] and proto.stats.stale_dropped == 2
    assert feed(proto, [1, 4, "room:lobby", "ping", {}]) == [Deliver(channel, 4, "ping", {})]


def test_a_binary_push_with_an_empty_join_ref_is_stale_as_in_phoenix():
    """phoenix.js writes a null join_ref of a binary push as 0 bytes and Phoenix reads that as "",
    which is not a JSON null's wildcard: a channel joined with "1" drops it; one joined with ""
    (a binary join without refs) takes it, and the reply echoes the empty ref."""
    proto = make()
    joined(proto, "1")
    empty = bytes([0, 0, 1, 10, 4]) + b"2" + b"room:lobby" + b"ping" + b"\x01"
    assert feed(proto, empty) == [] and proto.stats.stale_dropped == 1
    (join,) = feed(proto, bytes([0, 0, 0, 8, 8]) + b"room:bin" + b"phx_join" + b"{}")
    channel = proto.join_succeeded(join)
    assert sent(proto) == [["", "", "room:bin", "phx_reply", OK]]  # Phoenix: "" in both, not null
    (deliver,) = feed(proto, bytes([0, 0, 0, 8, 4]) + b"room:bin" + b"ping" + b"\x01")
    assert deliver == Deliver(channel, "", "ping", b"\x01")


def test_a_string_join_ref_is_not_its_integer():
    proto = make()
    joined(proto, "1")
    assert feed(proto, [1, 2, "room:lobby", "ping", {}]) == [] and proto.stats.stale_dropped == 1


@pytest.mark.parametrize("ref", [{"id": 1, "at": [2, 3]}, [1, "a"], 2.5, False, ""])
def test_other_json_refs_are_echoed_as_they_came_v2(ref):
    proto = make()
    channel = proto.join_succeeded(feed(proto, [ref, ref, "room:lobby", "phx_join", {}])[0])
    (deliver,) = feed(proto, [ref, ref, "room:lobby", "ping", {}])
    proto.reply(channel, deliver.ref, "ok", {})
    proto.crash(channel)
    assert sent(proto) == [
        [ref, ref, "room:lobby", "phx_reply", OK], [ref, ref, "room:lobby", "phx_reply", OK],
        [ref, ref, "room:lobby", "phx_error", {"reason": "channel_crash"}],
    ]


def test_integer_refs_v1():
    """V1 (vsn 1.0.0): no join_ref on the wire either way; the join's ref is the channel's join_ref."""
    proto = make(serializer=V1Json())

    def v1(event, ref, topic="room:lobby", **extra):
        return orjson.dumps({"topic": topic, "event": event, "payload": {}, "ref": ref, **extra}).decode()

    (join,) = feed(proto, v1("phx_join", 1, join_ref=1))
    channel = proto.join_succeeded(join)
    assert channel.join_ref == 1
    (deliver,) = feed(proto, v1("ping", 2))
    proto.reply(channel, deliver.ref, "ok", {})
    feed(proto, v1("heartbeat", 3, "phoenix"))
    (deliver,) = feed(proto, v1("ping", 4, join_ref=1))
    proto.reply(channel, deliver.ref, "ok", {})
    assert feed(proto, v1("ping", 5, join_ref="1")) == []  # stale: "1" is not 1
    feed(proto, v1("phx_leave", 6))
    assert sent(proto) == [
        {"topic": "room:lobby", "event": "phx_reply", "payload": OK, "ref": 1},
        {"topic": "room:lobby", "event": "phx_reply", "payload": OK, "ref": 2},
        {"topic": "phoenix", "event": "phx_reply", "payload": OK, "ref": 3},
        {"topic": "room:lobby", "event": "phx_reply", "payload": OK, "ref": 4},
        {"topic": "room:lobby", "event": "phx_reply", "payload": OK, "ref": 6},
        {"topic": "room:lobby", "event": "phx_close", "payload": {}, "ref": 1},
    ]


def test_a_binary_push_to_a_channel_joined_with_an_integer_ref_carries_its_text():
    proto = make()
    channel = proto.join_succeeded(feed(proto, [7, 7, "room:lobby", "phx_join", {}])[0])
    sent(proto)
    proto.push(channel, "blob", b"\x05")
    assert proto.data_to_send() == [bytes([0, 1, 10, 4]) + b"7" + b"room:lobby" + b"blob" + b"\x05"]


def test_a_v2_join_without_a_join_ref_keeps_null_where_phoenix_does():
    """Phoenix's socket table keeps the join's null join_ref (stale check, phx_close, phx_error);
    the channel's replies and pushes carry ``join_ref || ref``."""
    proto = make()
    (join,) = feed(proto, [None, "1", "room:lobby", "phx_join", {}])
    channel = proto.join_succeeded(join)
    proto.push(channel, "hello", {})
    (deliver,) = feed(proto, [None, "2", "room:lobby", "ping", {}])
    proto.reply(channel, deliver.ref, "ok", {})
    assert feed(proto, ["1", "3", "room:lobby", "ping", {}]) == []  # stale: the table holds null
    assert feed(proto, ["1", "4", "room:lobby", "phx_leave", {}]) == []
    proto.crash(channel)
    (join,) = feed(proto, [None, "5", "room:lobby", "phx_join", {}])
    channel = proto.join_succeeded(join)
    (leave,) = feed(proto, [None, "6", "room:lobby", "phx_leave", {}])
    assert sent(proto) == [
        [None, "1", "room:lobby", "phx_reply", OK],
        ["1", None, "room:lobby", "hello", {}],
        ["1", "2", "room:lobby", "phx_reply", OK],
        [None, None, "room:lobby", "phx_error", {"reason": "channel_crash"}],
        [None, "5", "room:lobby", "phx_reply", OK],
        ["5", "6", "room:lobby", "phx_reply", OK],
        [None, None, "room:lobby", "phx_close", {}],
    ]
    assert proto.stats.stale_dropped == 2
