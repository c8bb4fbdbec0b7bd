"""A small asyncio Phoenix Channels client: what ``send``, ``listen``, ``watch`` and the tests use."""

from chanctl.client.presence import Presence, PresenceChange, PresenceKeys, diff_keys
from chanctl.client.protocol import ChannelState, ClientProtocol, Status
from chanctl.client.socket import Client, ClientChannel, Event, endpoint_url

__all__ = [
    "ChannelState", "Client", "ClientChannel", "ClientProtocol", "Event", "Presence", "PresenceChange", "PresenceKeys",
    "Status", "diff_keys", "endpoint_url",
]
