"""The three logical kinds of Phoenix frames (PROTOCOL.md §2).

Reserved event names are spelled exactly as Phoenix spells them on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

__all__ = [
    "ACCESS_TOKEN",
    "ADMIN_TOPIC",
    "Broadcast",
    "Encoded",
    "HEARTBEAT",
    "Message",
    "PHOENIX_TOPIC",
    "PHX_CLOSE",
    "PHX_ERROR",
    "PHX_JOIN",
    "PHX_LEAVE",
    "PHX_REPLY",
    "Ref",
    "Reply",
    "same_ref",
]

PHX_JOIN = "phx_join"
PHX_LEAVE = "phx_leave"
PHX_REPLY = "phx_reply"
PHX_ERROR = "phx_error"
PHX_CLOSE = "phx_close"
HEARTBEAT = "heartbeat"
PHOENIX_TOPIC = "phoenix"
ACCESS_TOKEN = "access_token"
"""Client event carrying a fresh socket token, on topic ``phoenix`` or a joined channel
(Supabase Realtime's name); the socket handles it, never a channel (chanctl.server.sessions)."""
ADMIN_TOPIC = "chanctl:admin"
"""chanctl's reserved topic: the admin plane (chanctl.server.admin); no config may declare it."""

Ref: TypeAlias = Any
"""A ``ref`` or ``join_ref``: the JSON value the client sent (string, number, boolean, array, object)
or None. Phoenix never looks inside a ref and echoes it as it came, so phoenix.js's strings and the
integers of other clients (V1 clients, phxsocket, chunnel) both come back as they were sent."""


def same_ref(a: Ref, b: Ref) -> bool:
    """Whether two refs are the same, as Phoenix compares them (Erlang's ``===``): ``1``, ``1.0``
    and ``true`` are three refs, where Python's ``==`` says one; arrays and objects are compared
    by their JSON text with sorted keys, so a nested ``1`` is not a nested ``true`` either."""
    if a.__class__ is not b.__class__:
        return False
    if a.__class__ is dict or a.__class__ is list:
        return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS)
    return a == b


class Encoded:
    """A payload already encoded as JSON, to be sent as it is to many sockets (presence: the list
    that every joiner of a batching window gets).

    Serializers embed ``fragment`` (orjson copies it into each frame). A WebSocket connection
    whose serializer writes the payload last (vsn 2.0.0's arrays) sends ``data`` itself instead,
    shared by every socket: its own frame is only the part before and after
    (:meth:`chanctl.server.wire.FrameEncoder.around`).
    """

    __slots__ = ("data", "fragment")

    def __init__(self, data: bytes):
        self.data = data
        self.fragment = orjson.Fragment(data)


@dataclass(frozen=True, slots=True)
class Message:
    """A client push, or a server push to one client (``ref`` is None then)."""

    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one client message; on the wire a ``phx_reply`` Message."""

    join_ref: Ref
    ref: Ref
    topic: str
    status: str
    response: Any

    def to_message(self) -> Message:
        return Message(self.join_ref, self.ref, self.topic, PHX_REPLY, {"status": self.status, "response": self.response})

    @classmethod
    def from_message(cls, message: Message) -> Reply:
        """The reply a ``phx_reply`` Message carries, read leniently: a payload that is not an
        object reads as no status and no response (a client reports it, it does not crash)."""
        payload = message.payload if isinstance(message.payload, dict) else {}
        return cls(message.join_ref, message.ref, message.topic, str(payload.get("status")), payload.get("response"))


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A fan-out to every subscriber of a topic; join_ref and ref are null on the wire."""

    topic: str
    event: str
    payload: Any
