"""What the feed workers post to the dashboard: one message per admin-plane event or command result.

The workers do the network I/O; the screen that receives these messages only sets widget attributes.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

__all__ = ["Connecting", "Disconnected", "Inspected", "Snapshot", "Stats", "Status", "Traffic"]


class Connecting(Message):
    """The feed is opening its socket to ``url``."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url


class Status(Message):
    """A line from the client about the socket (disconnects, reconnects, rejoins), and the state it
    means; ``None`` keeps the state (a rejoin's line may come after the snapshot that made us live)."""

    def __init__(self, text: str, state: str | None = "reconnecting") -> None:
        super().__init__()
        self.text = text
        self.state = state


class Snapshot(Message):
    """The admin plane's ``snapshot``: sent after every (re)join, so it also means "live"."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__()
        self.payload = payload


class Stats(Message):
    """The 1 Hz ``stats`` aggregates; only the newest one matters, so a backlog coalesces."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__()
        self.payload = payload

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Stats)


class Traffic(Message):
    """A ``traffic`` batch: sampled entries, presence diffs and the server's dropped count."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__()
        self.payload = payload

    def can_replace(self, message: Message) -> bool:
        """A backlog of batches coalesces into the newest one, which takes the older entries first.

        Textual asks this of the message about to be handled while a newer one is queued; when it
        says yes, only the newer one is handled, so the entries must move into it here.
        """
        if not isinstance(message, Traffic):
            return False
        for key in ("entries", "presence"):
            message.payload[key] = [*self.payload.get(key, []), *message.payload.get(key, [])]
        return True


class Inspected(Message):
    """The reply to ``inspect``: one topic's subscribers and presence list."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__()
        self.payload = payload


class Disconnected(Message):
    """The reply to ``disconnect``: how many sockets of ``socket_id`` the server closed."""

    def __init__(self, socket_id: str, closed: int) -> None:
        super().__init__()
        self.socket_id = socket_id
        self.closed = closed
