"""chanctl.pubsub.local: fan-out with one encode per encoder, exclusions, intercepts, the tap."""

from __future__ import annotations

from typing import Any

import pytest

from chanctl.protocol.messages import Broadcast
from chanctl.pubsub.local import LocalPubSub


class Encoder:
    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    def encode(self, message: Broadcast) -> bytes:
        self.calls += 1
        if self.fail:
            raise TypeError("cannot carry this")
        return f"{message.topic}/{message.event}/{message.payload}".encode()


class Subscriber:
    def __init__(self, encoder: Encoder):
        self.encoder = encoder
        self.frames: list[bytes] = []
        self.intercepted: list[tuple[Any, Broadcast]] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(frame)

    def handle_out(self, tag: Any, message: Broadcast) -> None:
        self.intercepted.append((tag, message))


class Tap:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any, int]] = []

    def outbound(self, topic: str, event: str, payload: Any, recipients: int) -> None:
        self.seen.append((topic, event, payload, recipients))


def test_one_encode_per_encoder_and_the_same_bytes_for_all():
    pubsub, v1, v2 = LocalPubSub(), Encoder(), Encoder()
    subscribers = [Subscriber(v1), Subscriber(v2), Subscriber(v2), Subscriber(v2)]
    for s in subscribers:
        pubsub.subscribe("room:1", s)
    assert pubsub.broadcast("room:1", "hi", 1) == 4
    assert (v1.calls, v2.calls) == (1, 1)
    assert all(s.frames == [b"room:1/hi/1"] for s in subscribers)
    assert pubsub.subscriber_count("room:1") == 4 and pubsub.topics() == {"room:1": 4}


def test_exclude_and_skip_leave_out_subscribers():
    pubsub, enc = LocalPubSub(), Encoder()
    a, b, c = Subscriber(enc), Subscriber(enc), Subscriber(enc)
    for s in (a, b, c):
        pubsub.subscribe("t", s)
    assert pubsub.broadcast("t", "e", 1, exclude=a, skip={b}) == 1
    assert (a.frames, b.frames, len(c.frames)) == ([], [], 1)


def test_unsubscribe_with_a_tag_removes_only_that_channels_subscription():
    pubsub, enc = LocalPubSub(), Encoder()
    s = Subscriber(enc)
    pubsub.subscribe("t", s, tag="new")
    pubsub.unsubscribe("t", s, tag="old")  # a stale channel's leave
    assert pubsub.subscriptions("t") == [(s, "new")]
    pubsub.unsubscribe("t", s, tag="new")
    assert pubsub.subscriptions("t") == [] and pubsub.topics() == {}


def test_intercepted_events_go_to_the_subscriber_instead_of_the_fastlane():
    pubsub, enc = LocalPubSub(), Encoder()
    plain, intercepting = Subscriber(enc), Subscriber(enc)
    pubsub.subscribe("t", plain)
    pubsub.subscribe("t", intercepting, tag="chan", intercept=frozenset({"shout"}))
    assert pubsub.broadcast("t", "shout", {"x": 1}) == 2
    assert intercepting.frames == [] and intercepting.intercepted == [("chan", Broadcast("t", "shout", {"x": 1}))]
    pubsub.broadcast("t", "talk", 2)
    assert intercepting.frames == [b"t/talk/2"]
    pubsub.subscribe("t", intercepting, tag="chan")  # a rejoin without intercepts
    pubsub.broadcast("t", "shout", 3)
    assert intercepting.frames[-1] == b"t/shout/3"


def test_an_encoder_that_refuses_costs_only_its_own_subscribers():
    pubsub, good, bad = LocalPubSub(), Encoder(), Encoder(fail=True)
    ok, refused = Subscriber(good), Subscriber(bad)
    pubsub.subscribe("t", refused)
    pubsub.subscribe("t", ok)
    with pytest.raises(TypeError, match="cannot carry"):
        pubsub.broadcast("t", "e", b"bin")
    assert ok.frames == [b"t/e/b'bin'"] and refused.frames == []


def test_the_tap_sees_every_broadcast_with_its_recipients():
    pubsub, enc = LocalPubSub(), Encoder()
    pubsub.tap = tap = Tap()
    pubsub.subscribe("t", Subscriber(enc))
    pubsub.broadcast("t", "e", 1)
    pubsub.broadcast("nobody", "e", 2)
    assert tap.seen == [("t", "e", 1, 1), ("nobody", "e", 2, 0)]
    assert pubsub.broadcasts == 2
