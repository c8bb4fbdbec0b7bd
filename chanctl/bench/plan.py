"""A bench run's parameters, and the stamp that carries a message's send time through any server.

The stamp is text inside the payload, ``@b<seq>.<µs>@``: digits and three ASCII marks that no JSON
encoder escapes, so it comes back intact inside whatever the server wraps around the payload
(chanctl adds ``user_id``, ``id`` and ``inserted_at``; a Phoenix app may nest it). A receiver finds
it with one regular-expression search over the frame's bytes, without decoding the JSON.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

__all__ = ["SCENARIOS", "STAMP", "STAMP_PLACEHOLDER", "Plan", "has_stamp", "now_us", "render", "stamp"]

SCENARIOS = ("connect", "fanout", "chat", "presence", "reconnect")

STAMP_PLACEHOLDER = "{stamp}"
"""Where, inside a string of ``--payload``, the bench writes its stamp."""

STAMP = re.compile(rb"@b(\d+)\.(\d+)@")
"""A stamp in a frame's bytes: group 1 the message's sequence number, group 2 its time in µs."""


def now_us() -> int:
    """CLOCK_MONOTONIC in µs: one clock for every process of the machine, so workers compare
    a stamp written by the publisher's process with their own reading."""
    return time.monotonic_ns() // 1000


def stamp(seq: int, t_us: int) -> str:
    return f"@b{seq}.{t_us}@"


def render(template: Any, text: str) -> Any:
    """``template`` with every ``{stamp}`` inside its strings replaced by ``text``."""
    if isinstance(template, str):
        return template.replace(STAMP_PLACEHOLDER, text) if STAMP_PLACEHOLDER in template else template
    if isinstance(template, dict):
        return {key: render(value, text) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, text) for value in template]
    return template


def has_stamp(template: Any) -> bool:
    if isinstance(template, str):
        return STAMP_PLACEHOLDER in template
    if isinstance(template, dict):
        return any(has_stamp(value) for value in template.values())
    if isinstance(template, list):
        return any(has_stamp(value) for value in template)
    return False


@dataclass
class Plan:
    """Everything a run needs; the JSON report repeats it (tokens excepted) as its parameters."""

    scenario: str
    urls: list[str]
    """Socket endpoints (``ws://h:4000/socket/websocket``); client ``i`` uses ``urls[i % len(urls)]``."""
    clients: int = 1000
    """connect, reconnect, presence: clients; fanout: subscribers; chat: ``topics * members``."""
    concurrency: int = 100
    """connect, reconnect, and every scenario's set-up: connections in progress at once."""
    messages: int = 200
    """fanout: messages the publisher sends."""
    window: int = 20
    """fanout: messages in flight (sent, not yet delivered to every subscriber, not refused)."""
    topics: int = 1
    """chat: topics; connect and reconnect: topics the clients spread over (``{n}`` in ``topic``)."""
    members: int = 10
    """chat: members of each topic."""
    rate: float = 2.0
    """chat: messages a second each member publishes."""
    duration: float = 5.0
    """chat: seconds of publishing."""
    wave: int = 50
    """presence: clients that join (then leave) at once."""
    wave_interval: float = 0.1
    """presence: seconds between waves."""
    topic: str = "room:lobby"
    event: str = "new_msg"
    payload: Any = field(default_factory=lambda: {"body": STAMP_PLACEHOLDER})
    params: Any = field(default_factory=dict)
    """The join payload."""
    workers: int = 1
    timeout: float = 10.0
    """Seconds for one connect, join or reply."""
    time_limit: float = 60.0
    """Seconds the measured part may last before the run stops and reports what it has."""

    def client_url(self, index: int, token: str | None) -> str:
        parts = urlsplit(self.urls[index % len(self.urls)])
        query = {"vsn": "2.0.0"} if token is None else {"token": token, "vsn": "2.0.0"}
        extra = (parts.query + "&" if parts.query else "") + urlencode(query)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, extra, ""))

    def topic_of(self, index: int) -> str:
        """Client ``index``'s topic: ``{n}`` is its chat room, or one of ``topics`` in turn."""
        if "{n}" not in self.topic:
            return self.topic
        group = index // self.members if self.scenario == "chat" else index % self.topics
        return self.topic.replace("{n}", str(group))

    def total_clients(self) -> int:
        return self.topics * self.members if self.scenario == "chat" else self.clients

    def parameters(self) -> dict[str, Any]:
        """The run's parameters as the report states them (only those the scenario reads)."""
        used = {
            "connect": ("clients", "concurrency", "topics"),
            "fanout": ("clients", "concurrency", "messages", "window"),
            "chat": ("topics", "members", "rate", "duration", "concurrency"),
            "presence": ("clients", "concurrency", "wave", "wave_interval"),
            "reconnect": ("clients", "concurrency", "topics"),
        }[self.scenario]
        data = asdict(self)
        common = ("scenario", "urls", "topic", "event", "payload", "params", "workers", "timeout", "time_limit")
        return {key: data[key] for key in (*common[:2], *used, *common[2:])}
