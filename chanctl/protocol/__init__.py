"""The sans-I/O Phoenix Channels core: frames in, frames and actions out.

Nothing in this package touches a socket, a clock or asyncio; the server runtime does the I/O and
owns time. That keeps every protocol rule testable by feeding frames and reading frames back.
"""

from chanctl.protocol.messages import Broadcast, Message, Reply
from chanctl.protocol.router import Route, Router, TopicPattern
from chanctl.protocol.serializers import Serializer, V1Json, V2Json, negotiate
from chanctl.protocol.socket import ChannelState, Deliver, Join, Leave, SocketProtocol

__all__ = [
    "Broadcast",
    "ChannelState",
    "Deliver",
    "Join",
    "Leave",
    "Message",
    "Reply",
    "Route",
    "Router",
    "Serializer",
    "SocketProtocol",
    "TopicPattern",
    "V1Json",
    "V2Json",
    "negotiate",
]
