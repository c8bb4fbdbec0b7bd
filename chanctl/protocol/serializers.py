"""Wire serializers and vsn negotiation (PROTOCOL.md §1 "vsn negotiation", §2).

Encoders return ``bytes`` holding UTF-8 JSON, sent as text frames: orjson encodes straight to
bytes, and a broadcast encoded once can be written to every subscriber unchanged. A payload of
``bytes`` is Phoenix's ``{:binary, data}``: V2 encodes it as a binary frame (§2.3) and returns a
:class:`BinaryFrame`, the one marker the runtime needs to pick the WebSocket opcode.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Protocol

import orjson

from chanctl.errors import ProtocolViolation
from chanctl.protocol.messages import PHX_REPLY, Broadcast, Message, Ref, Reply

__all__ = ["BinaryFrame", "ClientSerializer", "RealtimeV2Json", "Serializer", "V1Json", "V2Json", "binary_push", "negotiate"]

_VSN = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


class BinaryFrame(bytes):
    """Encoded bytes that go out in a binary WebSocket frame (every other frame is text)."""

    __slots__ = ()


class Serializer(Protocol):
    vsn: str

    def decode(self, data: str | bytes) -> Message:
        """Decode one frame: ``str`` came in a text frame, ``bytes`` in a binary frame."""
        ...

    def encode(self, message: Message | Reply | Broadcast) -> bytes: ...


class ClientSerializer(Protocol):
    """The client's half of a serializer: what it sends and how it reads what a server sends."""

    vsn: str

    def encode_for_server(self, message: Message) -> bytes: ...

    def decode_from_server(self, data: str | bytes) -> Message: ...


MAX_DEPTH = 250
"""The deepest nesting a frame may carry, so that its payload can go out again: orjson encodes at
most 254 levels (the reply envelope adds two) but decodes up to 1,024, and without this check a
payload could be accepted and then crash its reply, its broadcast or the schema validator."""


def _loads(data: str | bytes) -> Any:
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation(f"frame is not valid JSON: {exc}", 1007) from None
    # Counting brackets is a C scan; only a frame that could nest too deep is walked.
    brackets = data.count("[") + data.count("{") if isinstance(data, str) else data.count(b"[") + data.count(b"{")
    if brackets > MAX_DEPTH and _too_deep(frame):
        raise ProtocolViolation(f"frame nests deeper than {MAX_DEPTH} levels", 1007)
    return frame


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects nest more than MAX_DEPTH levels in ``value`` (walked iteratively)."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            if depth > MAX_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in children)
    return False


MAX_REF_BYTES = 255
"""The default of ``server.max_ref_bytes``, and its most: the most a ``ref`` or ``join_ref`` may
take: UTF-8 bytes of a string, JSON text of an array or object (a number, boolean or null is always
shorter). A client chooses its refs, and each comes back in a reply (a join_ref in every frame of
its channel, kept for the channel's life); 255 is also what a binary frame carries in a field
(§2.3), so a string ref accepted here fits a binary reply too."""
REF_LIMIT = "server.max_ref_bytes"
"""The setting a too-long ref's close reason names."""


def _ref(value: Any, name: str, limit: int) -> Ref:
    """A ref as Phoenix takes it: any JSON value, echoed unchanged (PROTOCOL.md §2); only its size
    is checked (at most ``limit`` bytes, ``server.max_ref_bytes``)."""
    kind = value.__class__
    if kind is str:
        # A character is at most 4 bytes of UTF-8: only a long string is encoded to be measured.
        if len(value) > limit // 4 and len(value.encode()) > limit:
            raise _ref_too_long(name, len(value.encode()), limit)
    elif kind is dict or kind is list:
        size = len(orjson.dumps(value))
        if size > limit:
            raise _ref_too_long(name, size, limit)
    return value


def _ref_too_long(name: str, size: int, limit: int) -> ProtocolViolation:
    return ProtocolViolation(f"{name} is {size} bytes; a ref may have at most {limit} ({REF_LIMIT})", 1007, REF_LIMIT)


def _name(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise ProtocolViolation(f"{name} must be a string, got {type(value).__name__}", 1007)


# V2 binary kinds (PROTOCOL.md §2.3): byte 0 of a binary frame.
_PUSH, _REPLY, _BROADCAST = 0, 1, 2


def _field(value: Any, name: str) -> bytes:
    """One field of a binary frame: a string as UTF-8, a null ref as the empty string, a ref that is
    a number or a boolean as its JSON text (Phoenix writes ``to_string(ref)``: ``1`` becomes ``"1"``).

    Raises:
        ProtocolViolation: more than 255 bytes, or an array or object ref, which a binary frame
            cannot carry (Phoenix's encoder raises for them too).
    """
    kind = value.__class__
    if kind is str:
        data = value.encode()
    elif value is None:
        data = b""
    elif kind is int or kind is float or kind is bool:
        data = orjson.dumps(value)
    else:
        raise ProtocolViolation(f"{name} is a JSON {'object' if kind is dict else 'array'}; a binary frame carries only text", 1011)
    if len(data) > 255:
        raise ProtocolViolation(f"{name} is {len(data)} bytes; a binary frame carries at most 255", 1011)
    return data


def _binary(kind: int, *fields: tuple[Any, str], payload: bytes) -> BinaryFrame:
    encoded = [_field(value, name) for value, name in fields]
    return BinaryFrame(bytes([kind, *map(len, encoded)]) + b"".join(encoded) + payload)


def binary_push(message: Message) -> BinaryFrame:
    """What a client sends for a push with a ``bytes`` payload (kind 0 with its ref, §2.3), as
    phoenix.js writes it: for clients and the test harness. The server's own pushes carry no ref.

    Raises:
        ProtocolViolation: a field longer than the 255 bytes a binary frame can say.
    """
    assert isinstance(message.payload, bytes)
    fields = (message.join_ref, "join_ref"), (message.ref, "ref"), (message.topic, "topic"), (message.event, "event")
    return _binary(_PUSH, *fields, payload=message.payload)


def _unpack(data: bytes, names: tuple[str, ...], what: str) -> tuple[list[str], bytes]:
    """The UTF-8 fields whose sizes follow byte 0 of a binary frame (§2.3), and the payload after them."""
    if len(data) < 1 + len(names):
        raise ProtocolViolation(f"binary {what} shorter than its {1 + len(names)}-byte header", 1007)
    pos, fields = 1 + len(names), []
    for size, name in zip(data[1 : 1 + len(names)], names):
        if pos + size > len(data):
            raise ProtocolViolation(f"binary {what} ends inside its {name}", 1007)
        try:
            fields.append(data[pos : pos + size].decode())
        except UnicodeDecodeError:
            raise ProtocolViolation(f"binary {what} {name} is not UTF-8", 1007) from None
        pos += size
    return fields, data[pos:]


class V2Json:
    """``[join_ref, ref, topic, event, payload]`` arrays (vsn 2.0.x, what phoenix.js speaks), plus
    the binary frames of §2.3 for ``bytes`` payloads."""

    vsn = "2.0.0"

    def __init__(self, max_ref_bytes: int = MAX_REF_BYTES):
        self.max_ref_bytes = max_ref_bytes
        """Bytes a client's ref or join_ref may have (``server.max_ref_bytes``)."""
        self._ref_chars = max_ref_bytes // 4
        """A string of at most this many characters is within the bound whatever they are."""

    def decode(self, data: str | bytes) -> Message:
        if not isinstance(data, str):  # the binary opcode: §2.3 layout, never JSON (as in Phoenix)
            return self._decode_binary(bytes(data))
        frame = _loads(data)
        if not isinstance(frame, list) or len(frame) < 5:
            raise ProtocolViolation("frame must be a JSON array [join_ref, ref, topic, event, payload]", 1007)
        join_ref, ref = frame[0], frame[1]
        # Short strings (phoenix.js's refs) need no look; anything else is measured (_ref).
        if join_ref is not None and (join_ref.__class__ is not str or len(join_ref) > self._ref_chars):
            join_ref = _ref(join_ref, "join_ref", self.max_ref_bytes)
        if ref is not None and (ref.__class__ is not str or len(ref) > self._ref_chars):
            ref = _ref(ref, "ref", self.max_ref_bytes)
        return Message(join_ref, ref, _name(frame[2], "topic"), _name(frame[3], "event"), frame[4])

    @staticmethod
    def _decode_binary(data: bytes) -> Message:
        # Only kind 0 (push) travels client to server: 00 len(J) len(R) len(topic) len(event) J R topic event payload.
        if not data or data[0] != _PUSH:
            kind = data[0] if data else "(empty)"
            raise ProtocolViolation(f"binary frame of kind {kind}; clients only send kind 0 (push)", 1007)
        (join_ref, ref, topic, event), payload = _unpack(data, ("join_ref", "ref", "topic", "event"), "push")
        # Kept as read: phoenix.js writes a null join_ref/ref as the empty string, and Phoenix's
        # serializer hands the channel that "" (not nil), so an empty join_ref is not the wildcard
        # a JSON null is: against a channel joined with "1" it is stale, as in Phoenix.
        return Message(join_ref, ref, topic, event, payload)

    def decode_from_server(self, data: str | bytes) -> Message:
        """A frame as a client reads it, as phoenix.js decodes: a text frame as :meth:`decode` does;
        a binary push (kind 0, no ref), reply (kind 1, a ``phx_reply`` whose response is the bytes)
        or broadcast (kind 2, no refs).

        Raises:
            ProtocolViolation: not a frame a server sends.
        """
        if isinstance(data, str):
            return self.decode(data)
        data = bytes(data)
        kind = data[0] if data else None
        if kind == _PUSH:
            (join_ref, topic, event), payload = _unpack(data, ("join_ref", "topic", "event"), "push")
            return Message(join_ref or None, None, topic, event, payload)
        if kind == _REPLY:
            (join_ref, ref, topic, status), payload = _unpack(data, ("join_ref", "ref", "topic", "status"), "reply")
            return Message(join_ref or None, ref or None, topic, PHX_REPLY, {"status": status, "response": payload})
        if kind == _BROADCAST:
            (topic, event), payload = _unpack(data, ("topic", "event"), "broadcast")
            return Message(None, None, topic, event, payload)
        raise ProtocolViolation(f"binary frame of kind {'(empty)' if kind is None else kind}; servers send 0, 1 or 2", 1007)

    def encode_for_server(self, message: Message) -> bytes:
        """A client's frame: a JSON array, or :func:`binary_push` for a ``bytes`` payload."""
        if isinstance(message.payload, bytes):
            return binary_push(message)
        return orjson.dumps([message.join_ref, message.ref, message.topic, message.event, message.payload])

    def encode(self, message: Message | Reply | Broadcast) -> bytes:
        if isinstance(message, Broadcast):
            if isinstance(message.payload, bytes):
                return _binary(_BROADCAST, (message.topic, "topic"), (message.event, "event"), payload=message.payload)
            return orjson.dumps([None, None, message.topic, message.event, message.payload])
        if isinstance(message, Reply):
            if isinstance(message.response, bytes):
                return _binary(
                    _REPLY, (message.join_ref, "join_ref"), (message.ref, "ref"), (message.topic, "topic"),
                    (message.status, "status"), payload=message.response,
                )
            # to_message()'s array, without building the Message (every client message's reply).
            return orjson.dumps([message.join_ref, message.ref, message.topic, PHX_REPLY,
                                 {"status": message.status, "response": message.response}])
        if isinstance(message.payload, bytes):
            # A server push carries no ref in the binary layout.
            return _binary(
                _PUSH, (message.join_ref, "join_ref"), (message.topic, "topic"), (message.event, "event"), payload=message.payload
            )
        return orjson.dumps([message.join_ref, message.ref, message.topic, message.event, message.payload])


class V1Json:
    """``{topic, event, payload, ref}`` objects (vsn 1.0.x); encodes never carry join_ref."""

    vsn = "1.0.0"

    def __init__(self, max_ref_bytes: int = MAX_REF_BYTES):
        self.max_ref_bytes = max_ref_bytes
        """Bytes a client's ref or join_ref may have (``server.max_ref_bytes``)."""

    def decode(self, data: str | bytes) -> Message:
        frame = _loads(data)
        if not isinstance(frame, dict):
            raise ProtocolViolation("frame must be a JSON object {topic, event, payload, ref}", 1007)
        missing = [k for k in ("topic", "event", "payload", "ref") if k not in frame]
        if missing:
            raise ProtocolViolation(f"frame is missing {', '.join(missing)}", 1007)
        return Message(
            _ref(frame.get("join_ref"), "join_ref", self.max_ref_bytes),
            _ref(frame["ref"], "ref", self.max_ref_bytes),
            _name(frame["topic"], "topic"),
            _name(frame["event"], "event"),
            frame["payload"],
        )

    def decode_from_server(self, data: str | bytes) -> Message:
        """A frame as a client reads it: the same objects both ways (V1 has no binary frames)."""
        return self.decode(data)

    def encode_for_server(self, message: Message) -> bytes:
        """A client's frame, with its join_ref (which the server reads when present)."""
        if isinstance(message.payload, bytes):
            raise ProtocolViolation("a vsn 1.0.0 socket cannot carry a binary payload (V1 has no binary frames)", 1011)
        return orjson.dumps({"topic": message.topic, "event": message.event, "payload": message.payload,
                             "ref": message.ref, "join_ref": message.join_ref})

    def encode(self, message: Message | Reply | Broadcast) -> bytes:
        if isinstance(message.response if isinstance(message, Reply) else message.payload, bytes):
            raise ProtocolViolation("a vsn 1.0.0 socket cannot carry a binary payload (V1 has no binary frames)", 1011)
        if isinstance(message, Broadcast):
            return orjson.dumps({"topic": message.topic, "event": message.event, "payload": message.payload, "ref": None})
        if isinstance(message, Reply):  # to_message()'s object, without building the Message
            return orjson.dumps({"topic": message.topic, "event": PHX_REPLY, "payload": {"status": message.status, "response": message.response},
                                 "ref": message.ref})
        return orjson.dumps(
            {"topic": message.topic, "event": message.event, "payload": message.payload, "ref": message.ref}
        )


_USER_BROADCAST_PUSH = 3
"""Supabase Realtime's binary kind for a client ``broadcast`` (``@supabase/realtime-js`` 2.x)."""
_JSON_ENCODING = 1
"""Byte 6 of a kind-3 frame: the payload is UTF-8 JSON (0: raw bytes)."""


class RealtimeV2Json(V2Json):
    """:class:`V2Json` plus the frame Supabase's realtime-js sends for every ``channel.send({type:
    "broadcast", ...})`` over vsn 2.0.0: kind 3, ``03 len(J) len(R) len(topic) len(event) len(meta)
    encoding J R topic event meta payload``. It decodes to the ``broadcast`` event of the JSON path,
    ``{"type": "broadcast", "event": E, "payload": P}``, so that one adapter serves both. The
    metadata (realtime-js sends only ``persist``, for Supabase's stored messages) is not kept.
    Used by servers with a ``realtime: true`` topic; Phoenix's own serializer refuses kind 3."""

    def decode(self, data: str | bytes) -> Message:
        if isinstance(data, str) or not data or data[0] != _USER_BROADCAST_PUSH:
            return super().decode(data)
        data = bytes(data)
        if len(data) < 7:
            raise ProtocolViolation("binary broadcast shorter than its 7-byte header", 1007)
        sizes, encoding = data[1:6], data[6]
        if encoding not in (0, _JSON_ENCODING):
            raise ProtocolViolation(f"binary broadcast payload encoding {encoding}; 0 (bytes) or 1 (JSON)", 1007)
        # The same layout as _unpack's once the encoding byte is skipped.
        (join_ref, ref, topic, event, _meta), body = _unpack(
            bytes([data[0], *sizes]) + data[7:], ("join_ref", "ref", "topic", "event", "metadata"), "broadcast"
        )
        payload = _loads(body) if encoding == _JSON_ENCODING else body
        return Message(join_ref or None, ref or None, topic, "broadcast", {"type": "broadcast", "event": event, "payload": payload})


_V1 = V1Json()
_V2 = V2Json()
_REALTIME_V2 = RealtimeV2Json()


@functools.cache
def _serializers(max_ref_bytes: int) -> tuple[V1Json, V2Json, RealtimeV2Json]:
    """One serializer of each kind per ref bound: a server's connections share them, and a
    broadcast is encoded once per serializer (the pubsub's fastlane key)."""
    if max_ref_bytes == MAX_REF_BYTES:
        return _V1, _V2, _REALTIME_V2
    return V1Json(max_ref_bytes), V2Json(max_ref_bytes), RealtimeV2Json(max_ref_bytes)


def negotiate(vsn: Any, realtime: bool = False, max_ref_bytes: int = MAX_REF_BYTES) -> Serializer | None:
    """The serializer for a client's ``vsn`` query value: ``~> 1.0.0`` or ``~> 2.0.0``; None refuses.

    A missing vsn means 1.0.0, as in Phoenix. ``realtime`` (the server has a ``realtime: true``
    topic) makes 2.0.x :class:`RealtimeV2Json`. ``max_ref_bytes`` is ``server.max_ref_bytes``.
    """
    v1, v2, realtime_v2 = _serializers(max_ref_bytes)
    if vsn is None:
        return v1
    if not isinstance(vsn, str):
        return None
    match = _VSN.match(vsn)
    if not match:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    if (major, minor) == (2, 0):
        return realtime_v2 if realtime else v2
    if (major, minor) == (1, 0):
        return v1
    return None
