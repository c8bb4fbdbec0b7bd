"""Wire serializers and vsn negotiation (PROTOCOL.md §1 "vsn negotiation", §2).

Encoders return ``bytes`` holding UTF-8 JSON, sent as text frames: orjson encodes straight to
bytes, and a broadcast encoded once can be written to every subscriber unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

from chanctl.errors import ProtocolViolation
from chanctl.protocol.messages import Broadcast, Message, Reply

__all__ = ["Serializer", "V1Json", "V2Json", "negotiate"]

_VSN = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


class Serializer(Protocol):
    vsn: str

    def decode(self, data: str | bytes) -> Message: ...

    def encode(self, message: Message | Reply | Broadcast) -> bytes: ...


def _loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation(f"frame is not valid JSON: {exc}", 1007) from None


def _ref(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ProtocolViolation(f"{name} must be a string or null, got {type(value).__name__}", 1007)


def _name(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise ProtocolViolation(f"{name} must be a string, got {type(value).__name__}", 1007)


class V2Json:
    """``[join_ref, ref, topic, event, payload]`` arrays (vsn 2.0.x, what phoenix.js speaks)."""

    vsn = "2.0.0"

    def decode(self, data: str | bytes) -> Message:
        frame = _loads(data)
        if not isinstance(frame, list) or len(frame) < 5:
            raise ProtocolViolation("frame must be a JSON array [join_ref, ref, topic, event, payload]", 1007)
        return Message(
            _ref(frame[0], "join_ref"), _ref(frame[1], "ref"), _name(frame[2], "topic"), _name(frame[3], "event"), frame[4]
        )

    def encode(self, message: Message | Reply | Broadcast) -> bytes:
        if isinstance(message, Broadcast):
            return orjson.dumps([None, None, message.topic, message.event, message.payload])
        if isinstance(message, Reply):
            message = message.to_message()
        return orjson.dumps([message.join_ref, message.ref, message.topic, message.event, message.payload])


class V1Json:
    """``{topic, event, payload, ref}`` objects (vsn 1.0.x); encodes never carry join_ref."""

    vsn = "1.0.0"

    def decode(self, data: str | bytes) -> Message:
        frame = _loads(data)
        if not isinstance(frame, dict):
            raise ProtocolViolation("frame must be a JSON object {topic, event, payload, ref}", 1007)
        missing = [k for k in ("topic", "event", "payload", "ref") if k not in frame]
        if missing:
            raise ProtocolViolation(f"frame is missing {', '.join(missing)}", 1007)
        return Message(
            _ref(frame.get("join_ref"), "join_ref"),
            _ref(frame["ref"], "ref"),
            _name(frame["topic"], "topic"),
            _name(frame["event"], "event"),
            frame["payload"],
        )

    def encode(self, message: Message | Reply | Broadcast) -> bytes:
        if isinstance(message, Broadcast):
            return orjson.dumps({"topic": message.topic, "event": message.event, "payload": message.payload, "ref": None})
        if isinstance(message, Reply):
            message = message.to_message()
        return orjson.dumps(
            {"topic": message.topic, "event": message.event, "payload": message.payload, "ref": message.ref}
        )


_V1 = V1Json()
_V2 = V2Json()


def negotiate(vsn: Any) -> Serializer | None:
    """The serializer for a client's ``vsn`` query value: ``~> 1.0.0`` or ``~> 2.0.0``; None refuses.

    A missing vsn means 1.0.0, as in Phoenix.
    """
    if vsn is None:
        return _V1
    if not isinstance(vsn, str):
        return None
    match = _VSN.match(vsn)
    if not match:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    if (major, minor) == (2, 0):
        return _V2
    if (major, minor) == (1, 0):
        return _V1
    return None
