"""In-process fan-out with Phoenix's fastlane: one encode per serializer per broadcast.

Each subscriber is a connection; its ``deliver`` takes the encoded frame and must not block, so a
broadcast to N subscribers is one loop with no task and no await per subscriber.
"""

from __future__ import annotations

from typing import Any, Protocol

from chanctl.protocol.messages import Broadcast
from chanctl.protocol.serializers import Serializer

__all__ = ["LocalPubSub", "Subscriber"]


class Subscriber(Protocol):
    serializer: Serializer

    def deliver(self, frame: bytes) -> None: ...


class LocalPubSub:
    """Subscriptions by topic: at most one per (topic, subscriber), tagged with its channel."""

    def __init__(self) -> None:
        self._topics: dict[str, dict[Subscriber, Any]] = {}

    def subscribe(self, topic: str, subscriber: Subscriber, tag: Any = None) -> None:
        self._topics.setdefault(topic, {})[subscriber] = tag

    def unsubscribe(self, topic: str, subscriber: Subscriber, tag: Any = None) -> None:
        """Remove the subscription; with ``tag``, only if it is still that channel's."""
        subscribers = self._topics.get(topic)
        if subscribers is None or subscriber not in subscribers:
            return
        if tag is not None and subscribers[subscriber] is not tag:
            return
        del subscribers[subscriber]
        if not subscribers:
            del self._topics[topic]

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def subscriptions(self, topic: str) -> list[tuple[Subscriber, Any]]:
        """``(subscriber, tag)`` for each subscription to ``topic``, e.g. to reach its channels."""
        return list(self._topics.get(topic, {}).items())

    def topics(self) -> dict[str, int]:
        return {topic: len(subs) for topic, subs in self._topics.items()}

    def broadcast(self, topic: str, event: str, payload: Any, exclude: Subscriber | None = None) -> int:
        """Deliver to every subscriber of ``topic`` but ``exclude``; returns how many got it."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return 0
        message = Broadcast(topic, event, payload)
        frames: dict[Serializer, bytes] = {}
        sent = 0
        for subscriber in list(subscribers):
            if subscriber is exclude:
                continue
            serializer = subscriber.serializer
            frame = frames.get(serializer)
            if frame is None:
                frame = frames[serializer] = serializer.encode(message)
            subscriber.deliver(frame)
            sent += 1
        return sent
