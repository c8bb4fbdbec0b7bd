"""ClientProtocol, the client's sans-I/O core, driven by feeding frames: no sockets, no clock.

The last tests check that the client decodes every frame the server's own serializers encode
(V1 and V2, text and binary: push, reply, broadcast), through the same serializer objects.
"""

from __future__ import annotations

import orjson
import pytest

from chanctl.client.protocol import (
    ChannelErrored,
    ChannelState,
    ClientProtocol,
    Closed,
    Connecting,
    Failed,
    FrameIgnored,
    HeartbeatTimeout,
    Open,
    Received,
    Reconnecting,
    Refused,
    RejoinDue,
    RejoinRefused,
    Rejoined,
    Replied,
)
from chanctl.client.presence import PresenceChange
from chanctl.errors import ClientError, ConnectionLost, JoinRefused
from chanctl.protocol.messages import Broadcast, Message, Reply
from chanctl.protocol.serializers import BinaryFrame, V1Json, V2Json


def opened(**kwargs) -> ClientProtocol:
    proto = ClientProtocol(**kwargs)
    proto.connecting()
    proto.connection_opened()
    proto.events_received()
    return proto


def sent(proto: ClientProtocol) -> list:
    return [orjson.loads(frame) for frame in proto.data_to_send()]


def reply(join_ref, ref, topic, status="ok", response=None) -> str:
    return orjson.dumps([join_ref, ref, topic, "phx_reply", {"status": status, "response": response or {}}]).decode()


def joined(proto: ClientProtocol, topic: str = "room:1") -> str:
    ref = proto.join(topic, {"p": 1})
    proto.data_to_send()
    proto.receive_data(reply(ref, ref, topic))
    proto.events_received()
    return ref


def test_join_sends_a_frame_and_its_reply_joins_the_channel():
    proto = opened()
    ref = proto.join("room:1", {"p": 1})
    assert sent(proto) == [[ref, ref, "room:1", "phx_join", {"p": 1}]]
    assert proto.state("room:1") is ChannelState.JOINING and proto.state("room:1") == "joining"
    proto.receive_data(reply(ref, ref, "room:1", response={"hello": 1}))
    assert proto.events_received() == [Replied(ref, Reply(ref, ref, "room:1", "ok", {"hello": 1}))]
    assert proto.state("room:1") is ChannelState.JOINED


def test_a_refused_join_closes_the_channel_and_fails_the_pushes_waiting_for_it():
    proto = opened()
    ref = proto.join("room:1")
    early = proto.push("room:1", "new_msg", {"body": "hi"})
    assert [frame[3] for frame in sent(proto)] == ["phx_join"]  # the push waits for the join
    proto.receive_data(reply(ref, ref, "room:1", "error", {"reason": "unauthorized"}))
    events = proto.events_received()
    assert isinstance(events[0], Failed) and events[0].ref == early and isinstance(events[0].error, JoinRefused)
    assert events[1] == Replied(ref, Reply(ref, ref, "room:1", "error", {"reason": "unauthorized"}))
    assert proto.state("room:1") is ChannelState.CLOSED
    with pytest.raises(ClientError, match="join the channel first"):
        proto.push("room:1", "new_msg")


def test_pushes_before_the_join_completes_go_out_after_it_with_their_refs():
    proto = opened()
    ref = proto.join("room:1")
    proto.data_to_send()
    early = proto.push("room:1", "new_msg", {"n": 1})
    assert proto.data_to_send() == []
    proto.receive_data(reply(ref, ref, "room:1"))
    assert sent(proto) == [[ref, early, "room:1", "new_msg", {"n": 1}]]


def test_a_push_on_a_joined_channel_goes_out_at_once_and_its_reply_resolves():
    proto = opened()
    join_ref = joined(proto)
    ref = proto.push("room:1", "new_msg", {"n": 1})
    assert sent(proto) == [[join_ref, ref, "room:1", "new_msg", {"n": 1}]]
    proto.receive_data(reply(join_ref, ref, "room:1", response={"id": 9}))
    assert proto.events_received() == [Replied(ref, Reply(join_ref, ref, "room:1", "ok", {"id": 9}))]


def test_frames_of_an_older_join_are_dropped_and_unknown_replies_ignored():
    proto = opened()
    join_ref = joined(proto)
    proto.receive_data(orjson.dumps(["old", None, "room:1", "news", {}]).decode())
    proto.receive_data(reply(join_ref, "999", "room:1"))
    proto.receive_data(orjson.dumps([None, None, "room:other", "news", {}]).decode())
    assert proto.events_received() == []
    proto.receive_data(orjson.dumps([join_ref, None, "room:1", "news", {"a": 1}]).decode())
    proto.receive_data(orjson.dumps([None, None, "room:1", "broadcast", {"b": 2}]).decode())
    assert proto.events_received() == [
        Received("room:1", Message(join_ref, None, "room:1", "news", {"a": 1})),
        Received("room:1", Message(None, None, "room:1", "broadcast", {"b": 2})),
    ]


def test_phx_error_rejoins_with_phoenix_js_backoff_and_a_new_join_ref():
    proto = opened()
    first = joined(proto)
    proto.receive_data(orjson.dumps([first, first, "room:1", "phx_error", {}]).decode())
    events = proto.events_received()
    assert isinstance(events[0], Received) and isinstance(events[1], ChannelErrored)
    assert events[2] == RejoinDue("room:1", 1.0)
    assert proto.state("room:1") is ChannelState.ERRORED
    proto.rejoin("room:1")
    [[join_ref, ref, topic, event, params]] = sent(proto)
    assert (topic, event, params) == ("room:1", "phx_join", {"p": 1}) and join_ref == ref != first
    proto.receive_data(reply(ref, ref, "room:1", "error", {"reason": "busy"}))
    events = proto.events_received()
    assert RejoinRefused("room:1", {"reason": "busy"}) in events and RejoinDue("room:1", 2.0) in events
    proto.rejoin("room:1")
    [[ref, *_]] = sent(proto)
    proto.receive_data(reply(ref, ref, "room:1"))
    assert Rejoined("room:1") in proto.events_received()
    assert proto.state("room:1") is ChannelState.JOINED


def test_a_timed_out_join_rejoins_later():
    proto = opened()
    ref = proto.join("room:1")
    proto.expire(ref)
    assert proto.events_received() == [RejoinDue("room:1", 1.0)]
    assert proto.state("room:1") is ChannelState.ERRORED


def test_phx_close_closes_the_channel_for_good():
    proto = opened()
    join_ref = joined(proto)
    proto.receive_data(orjson.dumps([join_ref, join_ref, "room:1", "phx_close", {}]).decode())
    assert [type(e) for e in proto.events_received()] == [Received]
    assert proto.state("room:1") is ChannelState.CLOSED
    proto.rejoin("room:1")
    assert proto.data_to_send() == []


def test_a_lost_socket_fails_what_is_in_flight_reconnects_with_backoff_and_rejoins():
    proto = opened(url="ws://h/socket/websocket")
    joined(proto)
    ref = proto.push("room:1", "new_msg")
    proto.data_to_send()
    assert proto.connection_closed(1001, "going away") == 0.01
    events = proto.events_received()
    assert events[0] == Closed(1001, "going away") and str(events[0]) == "disconnected (close code 1001): going away"
    assert [e.ref for e in events if isinstance(e, Failed)] == [ref]
    assert isinstance(events[-1], Reconnecting) and (events[-1].attempt, events[-1].wait) == (1, 0.01)
    assert proto.state("room:1") is ChannelState.ERRORED
    assert proto.connection_failed("refused") == 0.05  # the next wait in reconnectAfterMs
    proto.connecting()
    assert proto.events_received()[-1] == Connecting("ws://h/socket/websocket", 2)
    proto.connection_opened()
    assert proto.events_received() == [Open("ws://h/socket/websocket", reconnected=True)]
    [[join_ref, ref, topic, event, _]] = sent(proto)
    assert (topic, event) == ("room:1", "phx_join")
    proto.receive_data(reply(join_ref, ref, "room:1"))
    assert Rejoined("room:1") in proto.events_received()
    assert all(isinstance(e.error, ConnectionLost) for e in events if isinstance(e, Failed))


def test_http_403_at_connect_is_final_and_other_refusals_retry():
    proto = opened()
    proto.connection_closed(1001)
    proto.events_received()
    assert proto.connection_failed("HTTP 503", 503, "busy") == 0.05
    assert [type(e) for e in proto.events_received()] == [Refused, Reconnecting]
    assert proto.connection_failed("HTTP 403", 403, "token expired") is None
    [refused] = proto.events_received()
    assert refused == Refused(403, "token expired", final=True) and proto.stopped == refused
    assert "not retrying" in str(refused)


def test_without_reconnect_a_close_is_final():
    proto = opened(reconnect=False)
    assert proto.connection_closed(1000) is None
    assert proto.stopped == Closed(1000)


def test_routine_statuses_are_marked():
    assert Connecting("u").routine and Open("u").routine
    assert not Open("u", reconnected=True).routine and not Closed(1000).routine


def test_a_heartbeat_unanswered_by_the_next_one_says_close():
    proto = opened()
    assert proto.heartbeat() is True
    [[_, ref, topic, event, _]] = sent(proto)
    assert (topic, event) == ("phoenix", "heartbeat")
    proto.receive_data(reply(None, ref, "phoenix"))
    assert proto.events_received() == []  # a heartbeat's reply is nobody's answer
    assert proto.heartbeat() is True
    proto.data_to_send()
    assert proto.heartbeat() is False
    assert proto.events_received() == [HeartbeatTimeout()]


def test_leave_sends_phx_leave_and_forgets_the_channel():
    proto = opened()
    join_ref = joined(proto)
    ref = proto.leave("room:1")
    assert sent(proto) == [[join_ref, ref, "room:1", "phx_leave", {}]]
    assert proto.state("room:1") is ChannelState.CLOSED
    assert proto.leave("room:1") is None


def test_presence_events_become_presence_changes():
    proto = opened()
    join_ref = joined(proto)
    state = {"7": {"metas": [{"phx_ref": "a"}]}}
    proto.receive_data(orjson.dumps([join_ref, None, "room:1", "presence_state", state]).decode())
    [event] = proto.events_received()
    assert event == Received("room:1", PresenceChange("room:1", state, {}))
    assert proto.presence("room:1").state == state


def test_a_bad_frame_is_reported_not_raised():
    proto = opened()
    proto.receive_data("{nope")
    proto.receive_data(b"\x07")
    assert [type(e) for e in proto.events_received()] == [FrameIgnored, FrameIgnored]


def test_a_binary_push_goes_out_as_a_binary_frame_with_its_ref():
    proto = opened()
    join_ref = joined(proto)
    ref = proto.push("room:1", "upload", b"\x00\x01")
    [frame] = proto.data_to_send()
    assert isinstance(frame, BinaryFrame)
    assert V2Json().decode(frame) == Message(join_ref, ref, "room:1", "upload", b"\x00\x01")


def test_a_binary_push_on_v1_fails_its_ref_instead_of_raising():
    proto = opened(serializer=V1Json())
    join = proto.join("room:1")
    assert orjson.loads(proto.data_to_send()[0]) == {"topic": "room:1", "event": "phx_join", "payload": {}, "ref": join, "join_ref": join}
    proto.receive_data(orjson.dumps({"topic": "room:1", "event": "phx_reply", "ref": join, "payload": {"status": "ok", "response": {}}}).decode())
    proto.events_received()
    ref = proto.push("room:1", "upload", b"\x00")
    [failed] = proto.events_received()
    assert failed.ref == ref and "V1 has no binary frames" in str(failed.error)


# -- every frame the server sends, through the server's own encoders ----------------------------

SERVER_FRAMES = [
    Message("1", None, "room:1", "news", {"a": [1, "x"]}),          # a push
    Message("1", None, "room:1", "bin", b"\x00\xffdata"),            # a binary push
    Reply("1", "2", "room:1", "ok", {"id": 1}),                      # a reply
    Reply("1", "3", "room:1", "error", b"\x01raw"),                  # a binary reply
    Broadcast("room:1", "new_msg", {"body": "hi"}),                  # a broadcast
    Broadcast("room:1", "blob", b"\x02\x03"),                        # a binary broadcast
    Message("1", "1", "room:1", "phx_error", {}),
    Message("1", "1", "room:1", "phx_close", {}),
]


@pytest.mark.parametrize("serializer", [V2Json(), V1Json()], ids=["v2", "v1"])
@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=lambda f: f"{type(f).__name__}-{type(getattr(f, 'payload', getattr(f, 'response', None))).__name__}")
def test_the_client_decodes_every_frame_the_server_encodes(serializer, frame):
    binary = isinstance(getattr(frame, "payload", getattr(frame, "response", None)), bytes)
    if binary and isinstance(serializer, V1Json):
        pytest.skip("V1 has no binary frames: the server refuses to encode them")
    data = serializer.encode(frame)
    wire = bytes(data) if isinstance(data, BinaryFrame) else data.decode()  # the opcode picks the type
    got = serializer.decode_from_server(wire)
    v1 = isinstance(serializer, V1Json)
    if isinstance(frame, Reply):
        expected = Message(None if v1 else frame.join_ref, frame.ref, frame.topic, "phx_reply",
                           {"status": frame.status, "response": frame.response})
    elif isinstance(frame, Broadcast):
        expected = Message(None, None, frame.topic, frame.event, frame.payload)
    else:
        expected = Message(None if v1 else frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload)
    assert got == expected


def test_the_client_protocol_delivers_binary_replies_and_broadcasts():
    proto = opened()
    join_ref = joined(proto)
    ref = proto.push("room:1", "upload", {})
    proto.data_to_send()
    server = V2Json()
    proto.receive_data(bytes(server.encode(Reply(join_ref, ref, "room:1", "ok", b"\x09"))))
    proto.receive_data(bytes(server.encode(Broadcast("room:1", "blob", b"\x02"))))
    proto.receive_data(bytes(server.encode(Message(join_ref, None, "room:1", "bin", b"\x03"))))
    assert proto.events_received() == [
        Replied(ref, Reply(join_ref, ref, "room:1", "ok", b"\x09")),
        Received("room:1", Message(None, None, "room:1", "blob", b"\x02")),
        Received("room:1", Message(join_ref, None, "room:1", "bin", b"\x03")),
    ]
