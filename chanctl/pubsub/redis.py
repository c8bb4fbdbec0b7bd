"""Broadcasts between the nodes of a cluster, through Redis PUB/SUB (``pip install 'chanctl[redis]'``).

Each topic with subscribers on this node is one Redis channel, ``<prefix>:t:<topic>``, and the node
is subscribed to it only while it has local subscribers (Centrifugo's layout, not Phoenix's
one-channel-for-everything: a node never reads traffic nobody on it wants). A broadcast is one
``PUBLISH``; every node, the publisher included, fans it out to its own subscribers when Redis hands
it back, with :class:`~chanctl.pubsub.local.LocalPubSub`'s fastlane (one encode per serializer).
Delivering even the publisher's own broadcast in Redis's order is what gives every subscriber on
every node the same order per topic: Redis serializes all ``PUBLISH`` es to a channel.

What else travels here, for the cluster layer above (``chanctl.server.cluster``): other kinds of
message on a topic's channel (presence), a control channel every node reads (``<prefix>:control``)
and one channel per node (``<prefix>:n:<node>``) for answers meant for it alone.

Trouble with Redis never reaches a client as an error:

- Redis unreachable: broadcasts are delivered locally at once (local delivery keeps working); the
  node reconnects with exponential backoff (0.1 s doubling to 5 s, reset after a success),
  resubscribes, and tells its listeners (``on_reconnect``) which topics may have missed messages.
- A subscription that stays idle is probed with ``PING`` every ``probe`` seconds; no answer within
  another ``probe`` means the connection is dead even if TCP did not say so (centrifugo#1189).
- Broadcasts waiting for a slow Redis are bounded by ``max_pending`` bytes; past it a broadcast is
  dropped and counted (``dropped``) instead of growing the node's memory. Redis bounds the other
  direction itself (``client-output-buffer-limit pubsub``): a node too slow to read is cut off,
  reconnects, and its topics are told.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from chanctl.errors import PubSubError
from chanctl.pubsub.history import HistorySpec
from chanctl.pubsub.local import LocalPubSub, Subscriber

if TYPE_CHECKING:
    from chanctl.pubsub.streams import StreamHistory

__all__ = ["RedisPubSub", "cancel_and_wait", "describe", "import_redis"]

log = logging.getLogger("chanctl.cluster")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
PROBE = 5.0
"""Seconds of silence on the subscription before it is probed with PING (and again until dead)."""
READY_TIMEOUT = 5.0
"""Longest a join waits for its topic's SUBSCRIBE to be confirmed before replying anyway."""
OWN_KEPT = 100_000
"""Most of this node's ``broadcast_from`` exclusions kept while their echo is on its way."""
CANCEL_AGAIN = 0.1
"""Seconds after which a task that carried on after its cancel is cancelled again (see :func:`cancel_and_wait`)."""
_BROADCAST = ord("B")
_BINARY = ord("b")
_NUMBERED = ord("H")
"""A broadcast numbered by the history script: ``H<seq> <node>\n<offset> <epoch>\n<json>``."""


def import_redis() -> Any:
    """``redis.asyncio``, or a clear error naming the extra to install."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise PubSubError("a cluster needs the redis client: pip install 'chanctl[redis]'") from None
    return aioredis


class RedisPubSub(LocalPubSub):
    """A :class:`LocalPubSub` whose broadcasts reach every node through Redis.

    Args:
        url: the Redis URL.
        node: this node's id, unique among live nodes (the cluster passes its replica id).
        prefix: of every Redis key and channel.
        max_pending: bytes of broadcasts that may wait for Redis before new ones are dropped.
        probe: seconds of silence before an idle subscription is probed.
    """

    def __init__(self, url: str, node: str, *, prefix: str = "chanctl", max_pending: int = 16 * 1024 * 1024, probe: float = PROBE):
        super().__init__()
        self._aioredis = import_redis()
        from redis.exceptions import NoScriptError

        self.no_script = NoScriptError
        """What Redis answers to a script it does not have (it restarted, or was flushed)."""
        self.url = url
        self.node = node
        self.prefix = prefix
        self.max_pending = max_pending
        self.probe = probe
        self._topic_prefix = f"{prefix}:t:".encode()
        self.control_channel = f"{prefix}:control".encode()
        self.node_channel = self.channel_of_node(node)
        self.connected = False
        """Subscribed and publishing; False while Redis is unreachable (``/healthz`` says degraded)."""
        self.dropped = 0
        """Broadcasts dropped because ``max_pending`` bytes were already waiting for Redis."""
        self.reconnects = 0
        self.published = 0
        self.redis: Any = None
        """The command client (a pool) the cluster layer uses for keys; None until connected."""
        self.on_topic_message: dict[int, Callable[[str, bytes], None]] = {}
        """Handlers of other kinds of message on a topic's channel, by first byte (``P``: presence)."""
        self.on_control: Callable[[bytes], None] = lambda data: None
        """Handler of messages on the control channel and on this node's own channel."""
        self.on_connect: list[Callable[[set[str]], Any]] = []
        """Called after every (re)connection with the topics that may have missed messages (those
        that had subscribers here while Redis was not reachable); may return an awaitable."""
        self.on_subscribed: Callable[[list[str]], Any] | None = None
        """Called (may return an awaitable) with topics whose SUBSCRIBE is confirmed, before their
        joiners are answered: the cluster layer fetches their presence there. A reconnection passes
        all its topics at once, a join its own."""
        self.on_unsubscribed: Callable[[str], None] | None = None
        """Called when this node stops listening to a topic (its last local subscriber left)."""
        self.streams: StreamHistory | None = None
        """The history of topics with ``history:``, in Redis (None when no topic has it): their
        broadcasts are published by its script, which numbers and keeps them."""
        self._outbox: list[bytes] = []
        self._outbox_channels: list[bytes] = []
        self._outbox_history: list[tuple[str, HistorySpec] | None] = []
        """Per queued message: ``(topic, spec)`` when it goes through the history script."""
        self._outbox_bytes = 0
        self._heard: dict[str, list[list[tuple[int | None, str, Any]]]] = {}
        """Per topic, the lists recording what this node hears for it (see :meth:`heard`)."""
        self._wake = asyncio.Event()
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._settled = asyncio.Event()
        """Set once the first connection's listeners ran (presence fetched, revocations read)."""
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._confirm: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._requested: set[str] = set()
        """Topics whose SUBSCRIBE was sent on the current connection (and no UNSUBSCRIBE since)."""
        self._pins: dict[str, int] = {}
        """Topics a join is about to subscribe to (see :meth:`ready`)."""
        self._seq = itertools.count(1)
        self._own: dict[int, Subscriber] = {}
        """This node's broadcasts on their way through Redis: who each one excludes."""
        self._header = f" {node}\n".encode()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._connected_once = False

    # -- naming ------------------------------------------------------------------------------

    def channel_of(self, topic: str) -> bytes:
        return self._topic_prefix + topic.encode()

    def channel_of_node(self, node: str) -> bytes:
        return f"{self.prefix}:n:{node}".encode()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, first_connect: float = 2.0) -> None:
        """Connect (waiting at most ``first_connect`` seconds, until the ``on_connect`` listeners
        ran) and keep reconnecting in the background; a node whose Redis is down at start serves
        its own clients meanwhile."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            await asyncio.wait_for(self._settled.wait(), first_connect)
        except TimeoutError:
            log.warning("Redis at %s is not answering; serving this node's clients alone until it does", self.url)

    async def wait_until(self, *, connected: bool) -> None:
        """Return once the node is (or is no longer) connected to Redis."""
        await (self._up if connected else self._down).wait()

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        (self._up if connected else self._down).set()
        (self._down if connected else self._up).clear()

    async def close(self) -> None:
        """Publish what is queued (briefly), then disconnect."""
        self._closing = True
        if self._outbox and self.connected:
            try:
                await asyncio.wait_for(self._publish_outbox(), 1.0)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, topic: str, subscriber: Subscriber, tag: Any = None, intercept: frozenset[str] = frozenset()) -> None:
        super().subscribe(topic, subscriber, tag, intercept)
        self._sync(topic)

    def unsubscribe(self, topic: str, subscriber: Subscriber, tag: Any = None) -> None:
        super().unsubscribe(topic, subscriber, tag)
        self._sync(topic)

    def wants(self, topic: str) -> bool:
        """Someone here listens to ``topic``, or is joining it."""
        return bool(self.subscriber_count(topic) or self._pins.get(topic))

    def _sync(self, topic: str) -> None:
        """Subscribe to the topic's Redis channel while someone here wants it, and only then."""
        want = self.wants(topic)
        if want == (topic in self._requested) or not self.connected:
            return  # when not connected, the reconnection subscribes to what is wanted then
        channel = self.channel_of(topic)
        if want:
            self._requested.add(topic)
            self._confirm.setdefault(channel, deque()).append(asyncio.get_running_loop().create_future())
            self._commands.put_nowait(("subscribe", channel))
        else:
            self._requested.discard(topic)
            self._commands.put_nowait(("unsubscribe", channel))
            if self.on_unsubscribed is not None:
                self.on_unsubscribed(topic)

    async def ready(self, topic: str) -> None:
        """Wait until this node gets ``topic``'s broadcasts from every node (its SUBSCRIBE is
        confirmed, and the cluster layer has fetched the topic's presence), so that a client told
        it joined misses nothing published after. A join calls it before its handler runs and
        :meth:`release` once it subscribed (or was refused); returns at once when Redis is
        unreachable, and after ``READY_TIMEOUT`` at worst."""
        self._pins[topic] = self._pins.get(topic, 0) + 1
        self._sync(topic)
        waiting = self._confirm.get(self.channel_of(topic))
        if waiting:
            try:
                await asyncio.wait_for(asyncio.shield(waiting[-1]), READY_TIMEOUT)
            except TimeoutError:
                log.warning("Redis did not confirm the subscription to %r in %gs", topic, READY_TIMEOUT)

    def release(self, topic: str) -> None:
        """The join that called :meth:`ready` is over: the topic's channel stays only for subscribers."""
        left = self._pins.get(topic, 0) - 1
        if left > 0:
            self._pins[topic] = left
        else:
            self._pins.pop(topic, None)
        self._sync(topic)

    # -- broadcasts --------------------------------------------------------------------------

    def broadcast(
        self, topic: str, event: str, payload: Any, exclude: Subscriber | None = None, *, skip: Collection[Subscriber] = ()
    ) -> int:
        """Publish to every node (this one included, when Redis hands it back); returns this
        node's subscribers that will get it. Without Redis, delivers locally at once."""
        if not self.connected or skip:
            return self.broadcast_local(topic, event, payload, exclude, skip=skip)
        seq = next(self._seq)
        spec = None
        if isinstance(payload, (bytes, bytearray, memoryview)):
            data = b"b%d%s%s\n%s" % (seq, self._header, orjson.dumps(event), bytes(payload))
        else:
            data = b"B%d%s%s" % (seq, self._header, orjson.dumps([event, payload]))
            if self.streams is not None:
                spec = self.streams.numbered(topic, event, payload)
        if not self.publish(self.channel_of(topic), data, None if spec is None else (topic, spec)):
            return 0
        if exclude is not None:
            self._own[seq] = exclude
            if len(self._own) > OWN_KEPT:  # echoes that will never come (the topic was left meanwhile)
                del self._own[next(iter(self._own))]
        count = self.subscriber_count(topic)
        return count - 1 if exclude is not None and count else count

    def publish(self, channel: bytes, data: bytes, history: tuple[str, HistorySpec] | None = None) -> bool:
        """Queue one PUBLISH (in order with every other); False when it was dropped (``max_pending``).
        With ``history`` (topic, spec), the history script numbers, keeps and publishes it."""
        if self._outbox_bytes + len(data) > self.max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("Redis is not keeping up: %d broadcasts dropped so far (cluster.max_pending %d bytes)",
                            self.dropped, self.max_pending)
            return False
        self._outbox.append(data)
        self._outbox_channels.append(channel)
        self._outbox_history.append(history)
        self._outbox_bytes += len(data)
        self._wake.set()
        return True

    async def _publish_outbox(self) -> None:
        channels, datas, histories = self._outbox_channels, self._outbox, self._outbox_history
        self._outbox, self._outbox_channels, self._outbox_history, self._outbox_bytes = [], [], [], 0
        streams = self.streams
        if streams is None:
            pipe = self.redis.pipeline(transaction=False)
            for channel, data in zip(channels, datas, strict=True):
                pipe.publish(channel, data)
            await pipe.execute()
        else:
            await self._publish_with_history(streams, list(zip(channels, datas, histories, strict=True)))
        self.published += len(datas)

    async def _publish_with_history(self, streams: StreamHistory, queued: list[tuple[bytes, bytes, tuple[str, HistorySpec] | None]]) -> None:
        """One pipeline; broadcasts with history go through the history script. Those Redis
        answered NOSCRIPT (its scripts were flushed since this node connected) are sent again,
        in order, once the scripts are loaded; any other refusal (e.g. out of memory) loses its
        broadcast, counted in ``dropped``."""
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for channel, data, history in queued:
                if history is None:
                    pipe.publish(channel, data)
                else:
                    streams.publish(pipe, history[0], channel, data, history[1])
            results = await pipe.execute(raise_on_error=False)
            unscripted = [entry for entry, result in zip(queued, results, strict=True) if isinstance(result, self.no_script)]
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, self.no_script):
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        log.warning("Redis refused a broadcast with history (%d dropped so far): %s", self.dropped, describe(result))
            if not unscripted:
                return
            if attempt == 0:
                await streams.load(self.redis)
            queued = unscripted
        self.dropped += len(queued)

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._outbox:
                await self._publish_outbox()

    # -- receiving ---------------------------------------------------------------------------

    def _received(self, channel: bytes, data: bytes) -> None:
        if channel.startswith(self._topic_prefix):
            topic = channel[len(self._topic_prefix):].decode()
            kind = data[0]
            if kind == _BROADCAST or kind == _NUMBERED or kind == _BINARY:
                self._received_broadcast(topic, kind, data)
            else:
                handler = self.on_topic_message.get(kind)
                if handler is not None:
                    handler(topic, data)
        else:
            self.on_control(data)

    def _received_broadcast(self, topic: str, kind: int, data: bytes) -> None:
        header, _, body = data.partition(b"\n")
        seq_text, _, node = header[1:].partition(b" ")
        exclude = None
        if node == self._header[1:-1]:
            exclude = self._own.pop(int(seq_text), None)
        heard = self._heard.get(topic)
        if not heard and not self.subscriber_count(topic):
            return
        offset = None
        if kind == _NUMBERED:
            position, _, body = body.partition(b"\n")
            offset_text, _, epoch = position.partition(b" ")
            offset = int(offset_text)
            event, payload = orjson.loads(body)
            payload = {**payload, "offset": offset, "epoch": epoch.decode()}
        elif kind == _BROADCAST:
            event, payload = orjson.loads(body)
        else:
            end = body.index(b"\n")
            event, payload = orjson.loads(body[:end]), body[end + 1:]
        if heard:
            for record in heard:
                record.append((offset, event, payload))
        try:
            self.broadcast_local(topic, event, payload, exclude)
        except Exception:  # one serializer's refusal (bytes on a V1 socket): the others got it
            log.debug("a broadcast on %r could not be encoded for some subscribers", topic, exc_info=True)

    @contextlib.contextmanager
    def heard(self, topic: str) -> Iterator[list[tuple[int | None, str, Any]]]:
        """Record ``(offset or None, event, payload)`` of each broadcast this node hears for
        ``topic`` while the block runs, whether anyone here subscribes yet or not: a joiner reading
        the topic's history gets what arrived meanwhile (:mod:`chanctl.pubsub.streams`)."""
        record: list[tuple[int | None, str, Any]] = []
        self._heard.setdefault(topic, []).append(record)
        try:
            yield record
        finally:
            records = [kept for kept in self._heard[topic] if kept is not record]  # by identity: lists compare equal
            if records:
                self._heard[topic] = records
            else:
                del self._heard[topic]

    # -- the connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        failures = 0
        while not self._closing:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis' ConnectionError, TimeoutError, OSError, a RESP error...
                failures = 0 if self.connected else failures + 1
                if failures % 20 <= 1:  # the first failure, then about once a minute
                    log.warning("Redis at %s: %s; reconnecting", self.url, describe(exc))
            if self._closing:
                return
            if self.connected:
                backoff = BACKOFF_FIRST  # it had worked: start the backoff over
            self._lost()
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # the backoff itself, jittered
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _lost(self) -> None:
        """Redis went away: deliver what waited for it locally, answer waiting joiners."""
        self._set_connected(False)
        self._requested.clear()
        pending = list(zip(self._outbox_channels, self._outbox, strict=True))
        self._outbox, self._outbox_channels, self._outbox_history, self._outbox_bytes = [], [], [], 0
        for channel, data in pending:
            self._received(channel, data)
        self._own.clear()
        for waiting in self._confirm.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._confirm.clear()
        self._commands = asyncio.Queue()

    async def _session(self) -> None:
        aioredis = self._aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # Our own loop reconnects, resubscribes and tells the topics; redis-py retrying underneath
        # would resubscribe silently and hide the gap.
        options = {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": self.probe, "socket_keepalive": True}
        client = aioredis.Redis.from_url(self.url, **options)
        subscriber = aioredis.Redis.from_url(self.url, **options)
        pubsub = subscriber.pubsub()
        tasks: list[asyncio.Task[None]] = []
        try:
            await client.ping()
            if self.streams is not None:
                await self.streams.load(client)
            topics = set(self.topics()) | set(self._pins)
            channels = [self.control_channel, self.node_channel, *map(self.channel_of, topics)]
            await pubsub.subscribe(*channels)
            confirmed = 0
            while confirmed < len(channels):  # SUBSCRIBE answers once per channel, in order
                message = await pubsub.get_message(timeout=self.probe)
                if message is None:
                    raise PubSubError(f"no answer to SUBSCRIBE in {self.probe:g}s")
                if message["type"] == "subscribe":
                    confirmed += 1
            old, self.redis = self.redis, client
            if old is not None:
                await old.aclose()
            self._set_connected(True)
            self._requested = set(topics)
            for topic in set(self.topics()) | topics:  # those that changed while SUBSCRIBE was answered
                self._sync(topic)
            missed = set(self.topics())  # subscribed here while Redis was not: they may lack broadcasts
            if self._connected_once:
                self.reconnects += 1
                log.warning("Redis at %s is back; resubscribed to %d topics", self.url, len(topics))
            self._connected_once = True
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(self._publisher()), loop.create_task(self._commander(pubsub))]
            reader = loop.create_task(self._reader(pubsub))
            tasks.append(reader)
            if topics and self.on_subscribed is not None:
                await _maybe(self.on_subscribed(list(topics)))
            for listener in list(self.on_connect):
                await _maybe(listener(missed))
            self._settled.set()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended the session
        finally:
            await cancel_and_wait(*tasks)
            try:
                await pubsub.aclose()
                await subscriber.aclose()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
            if self.redis is not client:
                await client.aclose()

    async def _commander(self, pubsub: Any) -> None:
        while True:
            command, channel = await self._commands.get()
            if command == "subscribe":
                await pubsub.subscribe(channel)
            else:
                await pubsub.unsubscribe(channel)

    async def _reader(self, pubsub: Any) -> None:
        probing = False
        while True:
            message = await pubsub.get_message(timeout=self.probe)
            if message is None:
                if probing:
                    raise PubSubError(f"the subscription did not answer PING in {self.probe:g}s")
                probing = True
                await pubsub.ping()
                continue
            probing = False
            kind = message["type"]
            if kind == "message":
                self._received(message["channel"], message["data"])
            elif kind == "subscribe":
                waiting = self._confirm.get(message["channel"])
                if waiting:
                    future = waiting.popleft()
                    if not waiting:
                        del self._confirm[message["channel"]]
                    if self.on_subscribed is not None:
                        topic = message["channel"][len(self._topic_prefix):].decode()
                        asyncio.get_running_loop().create_task(self._confirmed(topic, future))
                    else:
                        future.set_result(None)

    async def _confirmed(self, topic: str, future: asyncio.Future[None]) -> None:
        try:
            assert self.on_subscribed is not None
            await _maybe(self.on_subscribed([topic]))
        except Exception:  # noqa: BLE001 - the joiner is answered regardless
            log.exception("after subscribing to %r", topic)
        finally:
            if not future.done():
                future.set_result(None)


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and return once they ended, cancelling again any that carried on.

    redis-py (8.x, whose default ``socket_timeout`` is 5 s) sends every command through
    ``asyncio.wait_for``, which on Python 3.11 swallows a cancel that arrives as the send completes
    (bpo-42130, fixed in 3.12): the task goes on to its next ``await`` as if never cancelled, and a
    plain cancel-then-gather waits for it for good (a node's close hung so on its heartbeat loop).
    Cancelled itself meanwhile (its caller cancelled again the same way), it still waits for the
    tasks before it raises: they must not outlive their owner."""
    pending, interrupted = set(tasks), False
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN)
        except asyncio.CancelledError:
            interrupted = True
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: errors that ended a task were logged where they happened
    if interrupted:
        raise asyncio.CancelledError


async def _maybe(result: Any) -> None:
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        await result


def describe(exc: BaseException) -> str:
    """The first line of a Redis error, short enough for a log line."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
