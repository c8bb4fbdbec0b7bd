"""In-process fan-out with Phoenix's fastlane: one encode per encoder per broadcast.

Each subscriber is a connection; its ``encoder`` turns a broadcast into the bytes it writes (for a
WebSocket connection, the whole frame) and is shared by every connection of the same serializer,
so the encoding is cached per encoder. ``deliver`` takes those bytes and must not block, so a
broadcast to N subscribers is one loop with no task and no await per subscriber.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from chanctl.protocol.messages import Broadcast
from chanctl.pubsub.history import History

__all__ = ["Encoder", "LocalPubSub", "Subscriber", "Tap"]


class Encoder(Protocol):
    def encode(self, message: Broadcast) -> bytes: ...


class Subscriber(Protocol):
    encoder: Encoder
    """Shared by subscribers that want the same bytes (the fastlane cache key)."""

    def deliver(self, frame: bytes) -> None: ...

    def handle_out(self, tag: Any, message: Broadcast) -> None:
        """Called instead of ``deliver`` for the events the subscription intercepts (``tag`` is the
        subscription's), so the subscriber decides what its client gets (Phoenix's ``handle_out``)."""


_UNENCODABLE = b""
"""Marks an encoder that refused this broadcast (a real frame is never empty)."""


class Tap(Protocol):
    def outbound(self, topic: str, event: str, payload: Any, recipients: int) -> None: ...


class LocalPubSub:
    """Subscriptions by topic: at most one per (topic, subscriber), tagged with its channel."""

    def __init__(self) -> None:
        self._topics: dict[str, dict[Subscriber, Any]] = {}
        self.broadcasts = 0
        """Broadcasts published, delivered to anyone or not (for metrics)."""
        self.history: History | None = None
        """Numbers and keeps the broadcasts of topics with ``history:``; None when no topic has it."""
        self.tap: Tap | None = None
        """The admin plane's tap while someone watches; None costs the hot path one check."""
        self._intercepts: dict[str, dict[Subscriber, frozenset[str]]] = {}
        """Per topic, the subscriptions that intercept some events (Phoenix ``intercept``); kept
        apart so that topics without any cost nothing extra per broadcast."""

    def subscribe(self, topic: str, subscriber: Subscriber, tag: Any = None, intercept: frozenset[str] = frozenset()) -> None:
        """Subscribe; broadcasts of an event in ``intercept`` go to ``subscriber.handle_out`` instead
        of the fastlane (one encode per such subscriber, as in Phoenix)."""
        self._topics.setdefault(topic, {})[subscriber] = tag
        if intercept:
            self._intercepts.setdefault(topic, {})[subscriber] = intercept
        else:
            self._drop_intercept(topic, subscriber)

    def _drop_intercept(self, topic: str, subscriber: Subscriber) -> None:
        intercepting = self._intercepts.get(topic)
        if intercepting is not None and intercepting.pop(subscriber, None) is not None and not intercepting:
            del self._intercepts[topic]

    def unsubscribe(self, topic: str, subscriber: Subscriber, tag: Any = None) -> None:
        """Remove the subscription; with ``tag``, only if it is still that channel's."""
        subscribers = self._topics.get(topic)
        if subscribers is None or subscriber not in subscribers:
            return
        if tag is not None and subscribers[subscriber] is not tag:
            return
        del subscribers[subscriber]
        self._drop_intercept(topic, subscriber)
        if not subscribers:
            del self._topics[topic]

    def subscriber_count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def subscriptions(self, topic: str) -> list[tuple[Subscriber, Any]]:
        """``(subscriber, tag)`` for each subscription to ``topic``, e.g. to reach its channels."""
        return list(self._topics.get(topic, {}).items())

    def topics(self) -> dict[str, int]:
        return {topic: len(subs) for topic, subs in self._topics.items()}

    def broadcast(
        self, topic: str, event: str, payload: Any, exclude: Subscriber | None = None, *, skip: Collection[Subscriber] = ()
    ) -> int:
        """Deliver to every subscriber of ``topic`` but ``exclude`` and those in ``skip``; returns how
        many got it. (Presence skips the joiners whose fresh ``presence_state`` already has the diff.)

        On a topic with history, the payload gets its ``offset`` and ``epoch`` here, whether
        anyone is subscribed or not (a client that comes back recovers it)."""
        if self.history is not None:
            payload = self.history.record(topic, event, payload)
        self.broadcasts += 1
        subscribers = self._topics.get(topic)
        if not subscribers:
            if self.tap is not None:
                self.tap.outbound(topic, event, payload, 0)
            return 0
        message = Broadcast(topic, event, payload)
        frames: dict[Encoder, bytes] = {}
        sent = 0
        failed: Exception | None = None
        intercepting = self._intercepts.get(topic)
        diverted = {s for s, events in intercepting.items() if event in events} if intercepting else None
        targets = [s for s in subscribers if s not in skip] if skip else list(subscribers)
        for subscriber in targets:
            if subscriber is exclude:
                continue
            if diverted and subscriber in diverted:
                subscriber.handle_out(subscribers[subscriber], message)
                sent += 1
                continue
            encoder = subscriber.encoder
            frame = frames.get(encoder)
            if frame is None:
                try:
                    frame = frames[encoder] = encoder.encode(message)
                except Exception as exc:  # e.g. bytes for a V1 socket: the others still get it
                    failed = failed or exc
                    frames[encoder] = _UNENCODABLE
                    continue
            if frame is _UNENCODABLE:
                continue
            subscriber.deliver(frame)
            sent += 1
        if self.tap is not None:
            self.tap.outbound(topic, event, payload, sent)
        if failed is not None:
            raise failed  # after the loop, so one serializer's refusal costs the others nothing
        return sent

    broadcast_local = broadcast
    """Deliver to this node's subscribers only, whatever ``broadcast`` does in a subclass (presence
    diffs are computed on every node, so they never travel between nodes)."""

    async def ready(self, topic: str) -> None:
        """Return once a subscription to ``topic`` made right after gets every broadcast published
        later; in process that is already true. (The Redis adapter waits for its SUBSCRIBE.)"""

    def release(self, topic: str) -> None:
        """The join that awaited :meth:`ready` subscribed or was refused."""
