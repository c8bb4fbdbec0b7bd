"""Cluster: the nodes that share one Redis act, to clients and to ``chanctl watch``, as one server.

:class:`~chanctl.pubsub.redis.RedisPubSub` carries broadcasts; this module adds what needs the
server.

**Presence.** Each node keeps every topic's presence in node-tagged parts
(:mod:`chanctl.presence.state`) and writes only its own. When its part of a topic changes, it ships
the whole part, with a version, on the topic's Redis channel (coalesced to one message per topic per
loop tick) and stores it in the hash ``<prefix>:p:<topic>`` under its replica id, so that a node
whose first client joins the topic reads every node's part before that client's ``presence_state``
goes out. Peers install a part with ``replace_part``, which yields the ``presence_diff`` their
members get; versions make the order of hash reads and channel messages irrelevant. A replica id is
the node's name plus a random incarnation, so a restarted node never inherits its predecessor's
presences.

**Liveness.** Every node heartbeats on the control channel every ``down_after / 3`` seconds and
keeps ``<prefix>:node:<replica>`` alive for ``down_after``. A peer silent for ``down_after`` (checked
every second) is down, so a killed node is noticed ``down_after - down_after/3`` to
``down_after + 1`` seconds after it died (10 to 16 s by default):
its presences leave every topic here, with ``presence_diff`` leaves (not silent expiry), and its
hash entries are deleted. A node stopped with SIGTERM says ``bye`` first, so its presences leave
everywhere at once. (Phoenix.Tracker waits 30 s by default and, on a graceful stop, the same.)
A peer declared down for its silence that is heard again (Redis, or the way to it, was away for
longer than ``down_after``) is a peer again, and is asked to ship its parts again: they were
dropped here, so without it the two nodes would stay apart for good.

**Redis restarted.** Keys are gone: each node stores and ships its parts again, and sends
``phx_error`` on every channel whose topic may have missed broadcasts, so phoenix.js rejoins.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from chanctl.config.model import ClusterConfig
from chanctl.pubsub.redis import RedisPubSub, cancel_and_wait

if TYPE_CHECKING:
    from chanctl.presence.tracker import PresenceTracker
    from chanctl.server.runtime import ChannelServer

__all__ = ["Cluster", "replica_id"]

log = logging.getLogger("chanctl.cluster")

_PRESENCE = ord("P")
_HEARTBEAT = b"H"
_BYE = b"L"
_ASK = b"Q"
_ANSWER = b"A"
_DISCONNECT = b"D"
_REVOKE = b"R"
_SHIP_AGAIN = b"S"
ASK_TIMEOUT = 1.0
"""Longest a cluster-wide question (stats, inspect, disconnect) waits for the peers' answers; only
peers heard from within ``down_after`` are waited for, so a dead node never stalls a question."""
PEER_CHECK = 1.0
"""Seconds between two looks for silent peers."""
RECENTLY_DOWN = 60.0
"""Seconds a node that went away stays listed (as down) in the admin plane's ``nodes``."""
FETCH_BATCH = 1_000
"""Topics whose presence one pipeline reads: a reconnection reads every topic it listens to."""
DOWN_REMEMBERED = 10_000
"""Replicas remembered as down (so that their late messages are ignored); older ones are forgotten."""


def replica_id(node: str) -> str:
    """``node`` plus a random incarnation: unique even when a restarted node keeps its name."""
    return f"{node}/{os.urandom(3).hex()}"


class Cluster:
    """This node's part in a cluster.

    Args:
        server: the node.
        config: its ``cluster:`` section.
        pubsub: the server's pubsub, which carries broadcasts through Redis.
        presence: the server's tracker; its ``node`` is this node's replica id.
    """

    def __init__(self, server: ChannelServer, config: ClusterConfig, pubsub: RedisPubSub, presence: PresenceTracker):
        self.server = server
        self.config = config
        self.pubsub = pubsub
        self.presence = presence
        self.replica = presence.node
        self.interval = config.down_after / 3
        self.peers: dict[str, float] = {}
        """Live peer replicas and when (loop time) each was last heard from."""
        self.down: dict[str, bool] = {}
        """Replicas declared down, oldest first (bounded by ``DOWN_REMEMBERED``), and whether each
        said bye: one that stopped never comes back, one that was only silent may (see :meth:`_node_back`)."""
        self.downs = 0
        """Peers declared down for silence (not counting those that said bye)."""
        self._versions: dict[tuple[str, str], int] = {}
        """``(topic, replica) -> version`` of the part installed here."""
        self._version = itertools.count(1)
        self._dirty: set[str] = set()
        """Topics whose part changed and is not in Redis yet (kept while Redis is unreachable)."""
        self._flush_due = False
        self._beat_now = asyncio.Event()
        self._writing = asyncio.Lock()
        """Held by the one write of this node's parts to Redis in flight (see :meth:`_ship`)."""
        self._tasks: list[asyncio.Task[None]] = []
        self.answerers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        """Questions this node answers for its peers (the admin plane registers ``stats``, ...)."""
        self._asks: dict[int, tuple[set[str], dict[str, Any], asyncio.Future[None]]] = {}
        self._ask_ids = itertools.count(1)
        self.gone: dict[str, tuple[str, float]] = {}
        """Nodes that went away lately: replica -> (name, when, wall clock)."""
        self._peers_changed = asyncio.Event()
        self.names: dict[str, str] = {}
        """Peer replica -> node name, from heartbeats."""
        self._key_prefix = config.prefix
        pubsub.on_connect.append(self._connected)
        pubsub.on_subscribed = self._fetch
        pubsub.on_unsubscribed = self._forget_topic
        pubsub.on_topic_message[_PRESENCE] = self._received_part
        pubsub.on_control = self._received_control
        presence.on_local_change = self._changed
        self.answerers["disconnect"] = lambda args: {"closed": server.disconnect(str(args["socket_id"]), everywhere=False)}
        self.answerers["stats"] = lambda args: server.admin_tap.answer_stats(args)
        server.sessions.on_revoke.append(self._publish_revocation)
        self.answerers["inspect"] = lambda args: server.admin_tap.local_subscribers(str(args["topic"]))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.pubsub.start()
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self._heartbeats()), loop.create_task(self._watch_peers())]

    async def leave(self) -> None:
        """Graceful stop, before the connections drain: peers drop this node's presences at once."""
        self.presence.on_local_change = None  # the drain's untracks need not travel: bye covers them
        if not self.pubsub.connected or self.pubsub.redis is None:
            return
        try:
            async with asyncio.timeout(1.0), self._writing:  # after a write in flight, not overtaken by it
                pipe = self.pubsub.redis.pipeline(transaction=False)
                pipe.publish(self.pubsub.control_channel, _BYE + self.replica.encode())
                pipe.delete(self._node_key(self.replica))
                for topic in {*self.presence.local_topics(), *self._dirty}:
                    pipe.hdel(self._presence_key(topic), self.replica)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - peers will see the silence instead
            log.warning("could not say bye to the cluster: %s", exc)

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.pubsub.close()

    def health(self) -> dict[str, Any]:
        return {"redis": "ok" if self.pubsub.connected else "unreachable", "peers": len(self.peers)}

    def metrics(self) -> Iterator[Metric]:
        """The cluster's families for ``/metrics``."""
        pubsub = self.pubsub
        yield GaugeMetricFamily("chanctl_cluster_redis_up", "1 while Redis is reachable, else 0.", value=int(pubsub.connected))
        yield GaugeMetricFamily("chanctl_cluster_peers", "Other live nodes heard from.", value=len(self.peers))
        yield CounterMetricFamily("chanctl_cluster_published", "Messages published to Redis.", value=pubsub.published)
        yield CounterMetricFamily("chanctl_cluster_dropped", "Broadcasts dropped: cluster.max_pending bytes already waited for Redis.",
                                  value=pubsub.dropped)
        yield CounterMetricFamily("chanctl_cluster_reconnects", "Reconnections to Redis after it was lost.", value=pubsub.reconnects)
        yield CounterMetricFamily("chanctl_cluster_nodes_down", "Peers declared down after down_after of silence.", value=self.downs)

    # -- keys --------------------------------------------------------------------------------

    def _presence_key(self, topic: str) -> str:
        return f"{self._key_prefix}:p:{topic}"

    def _node_key(self, replica: str) -> str:
        return f"{self._key_prefix}:node:{replica}"

    # -- this node's presence, out -----------------------------------------------------------

    def _changed(self, topic: str) -> None:
        self._dirty.add(topic)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if self.pubsub.connected:  # else the topics stay dirty and the reconnection ships them
            self.server.spawn(self._ship())

    async def _ship(self) -> None:
        """Store and publish this node's part of every dirty topic (one pipeline).

        One write at a time, each taking its versions when its turn comes: the client is a pool,
        so two pipelines in flight could reach Redis in either order, and a stale part stored
        after a newer one (an HDEL after the HSET of a rejoin) would hide the newer part from
        every node that reads the hash later, while the newer message had gone out before they
        subscribed. Changes made during a write ride with the next one."""
        async with self._writing:
            redis = self.pubsub.redis
            topics, self._dirty = self._dirty, set()
            if not topics or redis is None:
                self._dirty |= topics
                return
            pipe = redis.pipeline(transaction=False)
            for topic in topics:
                part = self.presence.part(topic)
                body = orjson.dumps({"r": self.replica, "v": next(self._version),
                                     "e": [[owner, key, meta] for (owner, key), meta in part.items()]})
                if part:
                    pipe.hset(self._presence_key(topic), self.replica, body)
                else:
                    pipe.hdel(self._presence_key(topic), self.replica)
                pipe.publish(self.pubsub.channel_of(topic), b"P" + body)
            try:
                await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - Redis went away: the reconnection ships them
                self._dirty |= topics
                log.warning("could not ship presence to Redis: %s", exc)

    def _ship_everything(self) -> None:
        """Store and ship every part of this node again, and those that changed while Redis was
        unreachable (emptied parts included)."""
        self._dirty.update(self.presence.local_topics())
        if self._dirty:
            self._flush()

    # -- peers' presence, in -----------------------------------------------------------------

    def _install(self, topic: str, body: bytes) -> None:
        part = orjson.loads(body)
        replica, version = part["r"], part["v"]
        if replica == self.replica or replica in self.down or not self.pubsub.wants(topic):
            return
        if self._versions.get((topic, replica), 0) >= version:
            return
        self._versions[(topic, replica)] = version
        self.peers.setdefault(replica, asyncio.get_running_loop().time())
        self.presence.replace_part(topic, replica, {(owner, key): meta for owner, key, meta in part["e"]})

    def _received_part(self, topic: str, data: bytes) -> None:
        try:
            self._install(topic, data[1:])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed presence message on %r: %s", topic, exc)

    async def _fetch(self, topics: list[str]) -> None:
        """Before a topic's first joiner here gets its ``presence_state``: every node's part.
        A reconnection reads all its topics: ``FETCH_BATCH`` of them per round trip."""
        redis = self.pubsub.redis
        if redis is None:
            return
        for start in range(0, len(topics), FETCH_BATCH):
            await self._fetch_batch(redis, topics[start:start + FETCH_BATCH])

    async def _fetch_batch(self, redis: Any, topics: list[str]) -> None:
        try:
            pipe = redis.pipeline(transaction=False)
            for topic in topics:
                pipe.hgetall(self._presence_key(topic))
            found = await pipe.execute()
            unknown = sorted({r.decode() for parts in found for r in parts} - self.peers.keys() - {self.replica})
            alive: dict[str, int] = {}
            if unknown:  # replicas not heard from: alive only if their heartbeat key is
                pipe = redis.pipeline(transaction=False)
                for replica in unknown:
                    pipe.exists(self._node_key(replica))
                alive = dict(zip(unknown, await pipe.execute(), strict=True))
        except Exception as exc:  # noqa: BLE001 - the joiners get what this node knows
            log.warning("could not read the presence of %d topics from Redis: %s", len(topics), exc)
            return
        stale: list[tuple[str, str]] = []
        for topic, parts in zip(topics, found, strict=True):
            for replica_bytes, body in parts.items():
                replica = replica_bytes.decode()
                if not alive.get(replica, 1):
                    stale.append((topic, replica))  # its heartbeat key expired: it died before cleanup
                    continue
                try:
                    self._install(topic, body)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring a malformed presence entry of %r on %r: %s", replica, topic, exc)
        if stale:
            try:
                pipe = redis.pipeline(transaction=False)
                for topic, replica in stale:
                    pipe.hdel(self._presence_key(topic), replica)
                await pipe.execute()
            except Exception:  # noqa: BLE001 - best effort; the next reader checks again
                pass

    def _forget_topic(self, topic: str) -> None:
        """Nobody here listens to ``topic`` any more: its peers' parts would only go stale."""
        for replica in self.presence.peers(topic):
            self._versions.pop((topic, replica), None)
            self.presence.replace_part(topic, replica, {})

    # -- liveness ----------------------------------------------------------------------------

    async def wait_peers(self, count: int) -> None:
        """Return once ``count`` live peers are known (tests, and tools that start several nodes)."""
        while len(self.peers) < count:
            await self._peers_changed.wait()

    async def _heartbeat(self) -> None:
        redis = self.pubsub.redis
        if self.pubsub.connected and redis is not None:
            try:
                pipe = redis.pipeline(transaction=False)
                pipe.set(self._node_key(self.replica), self._info(), px=int(self.config.down_after * 1000))
                pipe.publish(self.pubsub.control_channel, _HEARTBEAT + self._info())
                await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - the subscription's own probe notices
                log.debug("heartbeat failed: %s", exc)

    async def _heartbeats(self) -> None:
        """Every ``interval``, and at once after a reconnection (``_beat_now``): one loop, so that
        two heartbeats never race for the pool's connections."""
        while True:
            self._beat_now.clear()
            await self._heartbeat()
            try:
                async with asyncio.timeout(self.interval):  # the heartbeat period itself
                    await self._beat_now.wait()
            except TimeoutError:
                pass

    async def _watch_peers(self) -> None:
        """Declare down the peers silent for ``down_after``, checked every second: a killed node's
        presences leave at most ``down_after`` + 1 s after its last heartbeat."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PEER_CHECK)  # the check period itself
            now = loop.time()
            for replica, seen in list(self.peers.items()):
                if now - seen > self.config.down_after:
                    self._node_down(replica, f"silent for {now - seen:.1f}s")

    def _info(self) -> bytes:
        server = self.server
        return orjson.dumps({"r": self.replica, "node": server.node, "url": server.url, "t": time.time(),
                             "connections": len(server.connections)})

    def _received_control(self, data: bytes) -> None:
        kind, body = data[:1], data[1:]
        try:
            if kind == _HEARTBEAT:
                info = orjson.loads(body)
                replica = info["r"]
                if replica != self.replica and not self.down.get(replica, False):
                    if replica in self.down:
                        self._node_back(replica)
                    new = replica not in self.peers
                    self.peers[replica] = asyncio.get_running_loop().time()
                    self.names[replica] = str(info.get("node", replica))
                    if new:  # introduce ourselves now rather than at our next heartbeat
                        self.server.spawn(self._heartbeat())
                        self._peers_changed.set()
                        self._peers_changed = asyncio.Event()
            elif kind == _SHIP_AGAIN:
                self._ship_everything()
            elif kind == _BYE:
                replica = body.decode(errors="replace")
                if replica != self.replica:
                    self._node_down(replica, "stopped")
            elif kind == _ASK:
                self._answer(orjson.loads(body))
            elif kind == _ANSWER:
                self._answered(orjson.loads(body))
            elif kind == _REVOKE:
                request = orjson.loads(body)
                if request["r"] != self.replica:
                    self._apply_revocation(request["entry"])
            elif kind == _DISCONNECT:
                request = orjson.loads(body)
                if request["r"] != self.replica:
                    self.server.disconnect(request["socket_id"], everywhere=False)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring a malformed cluster message %r: %s", kind, exc)

    # -- questions to every node -------------------------------------------------------------

    async def ask(self, question: str, args: dict[str, Any] | None = None, timeout: float = ASK_TIMEOUT) -> dict[str, Any]:
        """Ask every live peer; returns ``{node name: answer}`` of those that answered in time."""
        expected = set(self.peers)
        redis = self.pubsub.redis
        if not expected or not self.pubsub.connected or redis is None:
            return {}
        ask_id = next(self._ask_ids)
        answers: dict[str, Any] = {}
        done = asyncio.get_running_loop().create_future()
        self._asks[ask_id] = (expected, answers, done)
        try:
            body = orjson.dumps({"id": ask_id, "from": self.replica, "q": question, "args": args or {}})
            await redis.publish(self.pubsub.control_channel, _ASK + body)
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            pass  # the answers that came are the answer; the silent will be declared down
        except Exception as exc:  # noqa: BLE001 - Redis trouble: this node's own view only
            log.warning("cluster question %r failed: %s", question, exc)
        finally:
            del self._asks[ask_id]
        return {self.names.get(replica, replica): answer for replica, answer in answers.items()}

    def _answer(self, request: dict[str, Any]) -> None:
        asker = request["from"]
        answerer = self.answerers.get(request["q"])
        if asker == self.replica or answerer is None:
            return
        self.server.spawn(self._send_answer(asker, request["id"], answerer, {**request["args"], "from": asker}))

    async def _send_answer(self, asker: str, ask_id: int, answerer: Callable[[dict[str, Any]], Any], args: dict[str, Any]) -> None:
        try:
            answer = answerer(args)
            if asyncio.iscoroutine(answer):
                answer = await answer
            body = orjson.dumps({"id": ask_id, "r": self.replica, "a": answer}, default=str)
            redis = self.pubsub.redis
            if redis is not None:
                await redis.publish(self.pubsub.channel_of_node(asker), _ANSWER + body)
        except Exception:  # noqa: BLE001 - the asker times out on us
            log.exception("answering a cluster question")

    def _answered(self, answer: dict[str, Any]) -> None:
        pending = self._asks.get(answer["id"])
        if pending is None:
            return  # too late
        expected, answers, done = pending
        answers[answer["r"]] = answer["a"]
        if expected <= answers.keys() and not done.done():
            done.set_result(None)

    # -- token revocations (chanctl.server.sessions) ------------------------------------------

    def _revoked_key(self) -> str:
        return f"{self._key_prefix}:revoked"

    def _publish_revocation(self, entry: dict[str, Any]) -> None:
        """A revocation made here: every node applies it now, and a node that starts later reads
        it from ``<prefix>:revoked`` (a sorted set by expiry) before it answers anyone."""
        self.server.spawn(self._store_revocation(entry))

    async def _store_revocation(self, entry: dict[str, Any]) -> None:
        redis = self.pubsub.redis
        if redis is None:
            log.warning("Redis is unreachable: a revocation holds on this node only")
            return
        body = orjson.dumps(entry)
        try:
            pipe = redis.pipeline(transaction=False)
            pipe.zadd(self._revoked_key(), {body: float(entry["until"])})
            pipe.zremrangebyscore(self._revoked_key(), "-inf", time.time())
            pipe.publish(self.pubsub.control_channel, _REVOKE + orjson.dumps({"r": self.replica, "entry": entry}))
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the revocation holds here; say it did not travel
            log.warning("could not publish a revocation to the cluster: %s", exc)

    def _apply_revocation(self, entry: dict[str, Any]) -> int:
        server = self.server
        return server.sessions.apply(entry, [c.session for c in server.connections if c.session is not None])

    async def _load_revocations(self) -> None:
        redis = self.pubsub.redis
        if redis is None:
            return
        try:
            stored = await redis.zrangebyscore(self._revoked_key(), time.time(), "+inf")
        except Exception as exc:  # noqa: BLE001 - the next reconnection tries again
            log.warning("could not read the cluster's revocations: %s", exc)
            return
        for body in stored:
            try:
                self._apply_revocation(orjson.loads(body))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring a malformed revocation in Redis: %s", exc)

    def publish_disconnect(self, socket_id: str) -> None:
        """Every other node closes its sockets of ``socket_id`` too (fire and forget)."""
        body = orjson.dumps({"r": self.replica, "socket_id": socket_id})
        if self.pubsub.connected:
            self.pubsub.publish(self.pubsub.control_channel, _DISCONNECT + body)

    def _forget_gone(self) -> None:
        now = time.time()
        for replica, (_, when) in list(self.gone.items()):
            if now - when > RECENTLY_DOWN:
                del self.gone[replica]

    def nodes(self) -> list[dict[str, Any]]:
        """Every node known here: this one, live peers, and those that went away lately."""
        self._forget_gone()
        listed = [{"node": self.server.node, "replica": self.replica, "status": "up", "self": True}]
        listed += [{"node": self.names.get(r, r), "replica": r, "status": "up"} for r in sorted(self.peers)]
        listed += [{"node": name, "replica": r, "status": "down", "since": when} for r, (name, when) in self.gone.items()]
        return listed

    def _node_down(self, replica: str, why: str) -> None:
        """``replica`` is gone: its presences leave every topic here (``presence_diff`` leaves)."""
        if replica in self.down:
            return
        if why != "stopped":
            self.downs += 1
        log.warning("node %s is down (%s): its presences leave", replica, why)
        self.peers.pop(replica, None)
        self._forget_gone()
        self.gone[replica] = (self.names.pop(replica, replica.rpartition("/")[0] or replica), time.time())
        self.down[replica] = why == "stopped"
        if len(self.down) > DOWN_REMEMBERED:
            del self.down[next(iter(self.down))]
        topics = [k[0] for k in self._versions if k[1] == replica]
        for topic in topics:
            del self._versions[(topic, replica)]
        self.presence.drop_node(replica)
        if topics and why != "stopped":  # a stopped node cleaned up after itself
            self.server.spawn(self._forget_replica(replica, topics))

    def _node_back(self, replica: str) -> None:
        """A peer declared down for its silence is heard again: Redis, or the way to it, was away
        for longer than ``down_after``, and the peer lived on. Its parts were dropped here (and
        deleted from Redis), and it may have done the same with this node's: this node asks it to
        ship them again, as it will ask this node when it hears this node's heartbeat."""
        log.warning("node %s is back: its presences come back", replica)
        del self.down[replica]
        self.gone.pop(replica, None)
        self.pubsub.publish(self.pubsub.channel_of_node(replica), _SHIP_AGAIN + self.replica.encode())

    async def _forget_replica(self, replica: str, topics: list[str]) -> None:
        """Delete a dead replica's stored parts (every live node tries; HDEL is idempotent)."""
        redis = self.pubsub.redis
        if redis is None:
            return
        try:
            pipe = redis.pipeline(transaction=False)
            for topic in topics:
                pipe.hdel(self._presence_key(topic), replica)
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - a later reader finds the part stale and deletes it
            log.debug("could not delete the parts of %s: %s", replica, exc)

    # -- Redis came back ---------------------------------------------------------------------

    async def _connected(self, missed: set[str]) -> None:
        """Redis is (back) up: store and ship every part again; the channels of ``missed`` topics
        may lack broadcasts, so they get ``phx_error`` and phoenix.js rejoins them."""
        await self._load_revocations()  # a node that starts (or Redis that restarted) learns them
        self._ship_everything()
        self._beat_now.set()  # peers that declared this node down meanwhile hear it is back now
        failed = 0
        for topic in missed:
            for connection, channel in self.pubsub.subscriptions(topic):
                connection.fail(channel)
                failed += 1
        if failed:
            log.warning("told %d channels on %d topics to rejoin: they may have missed broadcasts while Redis was away",
                        failed, len(missed))
