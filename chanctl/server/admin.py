"""The admin plane: a reserved topic through which a dashboard sees, and steers, a running server.

Only a token whose admin claim (``auth.admin_claim``, default ``admin``) is ``true`` may join
``chanctl:admin``. A watcher gets a ``snapshot`` right after joining (node, topics with subscriber
and presence counts, connections), then ``stats`` aggregates at 1 Hz, and every 250 ms a
``traffic`` batch: a sampled, rate-capped tail of client events (``in``) and broadcasts (``out``),
plus the presence diffs of every topic (they are broadcasts, so the same tap sees them). Commands
are client events on the admin topic: ``broadcast``, ``disconnect``, ``inspect`` and ``revoke``.

The tap costs the data path one attribute check while nobody watches (``pubsub.tap is None``).
While someone does, each tick keeps a uniform sample (reservoir) of at most ``TAP_RATE / 4``
entries, and an entry left out costs a counter and a compare; the rest are counted in ``dropped``
and reported, so the tail never grows with load, and a slow watcher is closed by its own outbound
limit like any other client.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from chanctl import __version__
from chanctl.channel import Channel, Outcome, error, ok
from chanctl.errors import TokenError
from chanctl.presence.tracker import PRESENCE_DIFF
from chanctl.protocol.messages import ADMIN_TOPIC
from chanctl.server.connection import peer_address
from chanctl.server.context import ChannelContext

if TYPE_CHECKING:
    from chanctl.protocol.socket import LeaveReason
    from chanctl.server.connection import Connection
    from chanctl.server.runtime import ChannelServer

__all__ = ["ADMIN_EVENTS", "ADMIN_TOPIC", "AdminChannel", "AdminTap"]

ADMIN_EVENTS = ("broadcast", "disconnect", "inspect", "revoke")
"""The commands an admin sends on ``chanctl:admin``."""

log = logging.getLogger("chanctl.admin")

TICK = 0.25
"""Seconds between traffic batches; aggregates go out every fourth tick (1 Hz)."""
TAP_RATE = 200
"""Most traffic entries per second sent to watchers; the rest are counted as dropped."""
PAYLOAD_CHARS = 200
"""Payloads in the tail are cut to this many characters of JSON."""
SNAPSHOT_CONNECTIONS = 500
"""The snapshot lists at most this many connections (``connections_total`` says how many exist)."""
REMOTE_LEASE = 3.0
"""Seconds a node keeps sampling its traffic for a peer's watchers after that peer last asked."""
REMOTE_KEPT = 200
"""Most traffic entries a node keeps for one peer between two of its questions (one per second)."""
STATS_TOPICS = 200
"""``stats`` carries the counts of at most this many topics, the most subscribed first."""
SNAPSHOT_TOPICS = 500
"""The snapshot lists at most this many topics, the most subscribed first (``topics_total`` says how many)."""
CONNECTION_TOPICS = 20
"""A connection entry lists at most this many of its topics (``topics_total`` says how many)."""
NAME_CHARS = 100
"""Client-chosen names (topics, events, user ids, socket ids) are cut to this many characters: the
admin plane reports on clients and must never be silenced by what they choose (one frame past a
watcher's outbound bound closes it as a slow consumer)."""
LIST_BYTES = 1024 * 1024
"""The snapshot's connections and inspect's subscribers are listed up to this many bytes of JSON
(a connection names up to 20 topics of 100 characters, which JSON may write 6 bytes each)."""
PRESENCE_ENTRY_BYTES = 4096
"""A presence diff in the traffic tail carries its metas up to this many bytes of JSON; a larger
one keeps its keys (at most :data:`PRESENCE_KEYS`) with the size of what was cut."""
PRESENCE_KEYS = 20
"""Keys of one cut presence diff side, or (x25) of a cut ``inspect`` presence list."""
TRAFFIC_PRESENCE_BYTES = 256 * 1024
"""Presence diffs one traffic batch carries, in bytes of JSON; the rest of the tick is dropped (counted)."""
INSPECT_PRESENCE_BYTES = 512 * 1024
"""``inspect`` carries a topic's presence list up to this many bytes of JSON, else keys and counts."""
ADMIN_FRAME_BYTES = 2 * 1024 * 1024
"""The most one admin frame can carry, from the caps above: a snapshot is at most 500 topics of
about 650 bytes plus :data:`LIST_BYTES` of connections; a traffic batch 50 entries of about 3 KB
plus :data:`TRAFFIC_PRESENCE_BYTES` (and at most :data:`REMOTE_KEPT` entries of other nodes); stats
200 topics; an inspect reply :data:`LIST_BYTES` of subscribers plus :data:`INSPECT_PRESENCE_BYTES`."""
ADMIN_OUTBOUND = 8 * ADMIN_FRAME_BYTES
"""A watcher's outbound bound (or ``server.outbound_buffer`` if larger): room for a snapshot, a
second's feed and a few replies at their largest, so a watcher that reads is never closed as a slow
consumer by what clients put in topics and presence; one that stops reading still is."""


class AdminTap:
    """Sampled traffic and presence diffs for the admin channels of one server.

    Installed as ``server.pubsub.tap`` while at least one watcher is joined, removed when the last
    one leaves: the hot path checks that attribute and nothing else.
    """

    def __init__(self, server: ChannelServer):
        self.server = server
        self.watchers: set[AdminChannel] = set()
        self._dropped = 0
        self._cap = max(1, int(TAP_RATE * TICK))
        self._sample: list[tuple[float, str, str, str, Any, Any, int]] = []
        self._seen = 0
        self._next = 1
        self._w = 1.0
        self._presence: list[dict[str, Any]] = []
        self._presence_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[float, tuple[int, int, int]] = (0.0, (0, 0, 0))
        self._remote: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        """Peers whose watchers want this node's tail: lease expiry and the entries kept for them."""
        self._peers_last: dict[str, dict[str, Any]] = {}
        """Each peer's previous counters, to turn the next ones into rates."""

    # -- called on the data path while watched ---------------------------------------------

    def inbound(self, connection: Connection, topic: str, event: str, payload: Any) -> None:
        """A client event about to reach its channel."""
        self._seen += 1
        if self._seen == self._next:  # else: not in this tick's sample, counted at the flush
            self._keep((time.time(), "in", topic, event, connection.user.get("id"), payload, 1))

    def outbound(self, topic: str, event: str, payload: Any, recipients: int) -> None:
        """A broadcast that reached ``recipients`` subscribers; presence diffs are kept apart."""
        if event == PRESENCE_DIFF:
            if len(self._presence) < self._cap and self._presence_bytes < TRAFFIC_PRESENCE_BYTES:
                # Encoded apart, as its members got it: the envelope adds no nesting.
                joins, joins_size, joins_cut = _presence_side(payload.get("joins"), PRESENCE_ENTRY_BYTES, PRESENCE_KEYS)
                leaves, leaves_size, leaves_cut = _presence_side(payload.get("leaves"), PRESENCE_ENTRY_BYTES, PRESENCE_KEYS)
                self._presence_bytes += joins_size + leaves_size
                diff = {"topic": _short(topic), "joins": joins, "leaves": leaves}
                if joins_cut or leaves_cut:
                    diff["cut_bytes"] = (joins_cut or 0) + (leaves_cut or 0)
                self._presence.append(diff)
            else:
                self._dropped += 1
            return
        self._seen += 1
        if self._seen == self._next:
            self._keep((time.time(), "out", topic, event, None, payload, recipients))

    @property
    def dropped(self) -> int:
        """Traffic entries seen but not sent to watchers, since the tap started."""
        return self._dropped + self._seen - len(self._sample)

    def _keep(self, entry: tuple[float, str, str, str, Any, Any, int]) -> None:
        # Reservoir sampling with skips (Li's algorithm L): every entry of a tick is equally
        # likely to be kept, and the entries skipped cost the data path a counter and a compare.
        cap = self._cap
        if len(self._sample) < cap:
            self._sample.append(entry)
            if len(self._sample) < cap:
                self._next += 1
                return
            self._w = math.exp(math.log(_uniform()) / cap)
        else:
            self._sample[random.randrange(cap)] = entry
            self._w *= math.exp(math.log(_uniform()) / cap)
        self._next += math.floor(math.log(_uniform()) / math.log(1 - self._w)) + 1

    # -- watchers ----------------------------------------------------------------------------

    def attach(self, watcher: AdminChannel) -> None:
        self.watchers.add(watcher)
        self._ensure_running()

    def detach(self, watcher: AdminChannel) -> None:
        self.watchers.discard(watcher)
        self._stop_if_idle()

    def _ensure_running(self) -> None:
        if self._task is None:
            self._last = (time.monotonic(), self._counters())
            self.server.pubsub.tap = self
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _stop_if_idle(self) -> None:
        if not self.watchers and not self._remote and self._task is not None:
            self.server.pubsub.tap = None
            self._task.cancel()
            self._task = None

    def _send(self, event: str, payload: dict[str, Any]) -> None:
        for watcher in list(self.watchers):
            watcher.push(event, payload)

    async def _run(self) -> None:
        ticks = 0
        cluster_stats: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(TICK)  # the tick period itself
            ticks += 1
            try:
                self._flush_traffic()
                if ticks % round(1 / TICK) == 0 and self.watchers:
                    stats = self.aggregates()
                    if self.server.cluster is None:
                        self._send("stats", stats)
                    elif cluster_stats is None or cluster_stats.done():
                        # Apart from the ticks: waiting for the peers' answers never delays the tail.
                        cluster_stats = asyncio.get_running_loop().create_task(self._send_cluster_stats(stats))
            except Exception:  # the feed goes on: a silent dashboard is what an attacker wants
                log.exception("admin feed: a tick failed and was skipped")
            self._stop_if_idle()

    async def _send_cluster_stats(self, stats: dict[str, Any]) -> None:
        stats.update(await self.cluster_aggregates(stats))
        self._send("stats", stats)

    def _flush_traffic(self) -> None:
        self._dropped += self._seen - len(self._sample)
        sample, self._sample, self._seen, self._next = self._sample, [], 0, 1
        presence, self._presence, self._presence_bytes = self._presence, [], 0
        if self._remote:
            self._keep_for_peers(sample)
        if not sample and not presence:
            return
        sample.sort(key=lambda entry: entry[0])
        self._send("traffic", {"entries": [self._entry(e) for e in sample], "presence": presence, "dropped": self.dropped})

    def _entry(self, entry: tuple[float, str, str, str, Any, Any, int]) -> dict[str, Any]:
        shown = _entry(entry)
        if self.server.cluster is not None:
            shown["node"] = self.server.node
        return shown

    # -- the tail of other nodes (a cluster) ---------------------------------------------------

    def _keep_for_peers(self, sample: list[tuple[float, str, str, str, Any, Any, int]]) -> None:
        """Keep this tick's sample for the peers whose watchers asked lately (bounded per peer)."""
        now = time.monotonic()
        for asker, (expires, kept) in list(self._remote.items()):
            if expires < now:
                del self._remote[asker]
            elif sample and len(kept) < REMOTE_KEPT:
                kept.extend(self._entry(e) for e in sample[: REMOTE_KEPT - len(kept)])

    def answer_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        """A peer's ``stats`` question: this node's counters, and with ``tail`` its traffic since
        that peer last asked (asking keeps this node's tap on for ``REMOTE_LEASE`` seconds)."""
        answer = self.counters()
        if args.get("tail"):
            asker = str(args.get("from"))
            _, kept = self._remote.get(asker, (0.0, []))
            answer["traffic"] = kept
            self._remote[asker] = (time.monotonic() + REMOTE_LEASE, [])
            self._ensure_running()
        return answer

    # -- views -------------------------------------------------------------------------------

    def _counters(self) -> tuple[int, int, int]:
        stats = self.server.stats
        return stats.messages_in, stats.messages_out, self.server.pubsub.broadcasts

    def aggregates(self) -> dict[str, Any]:
        """Connections, topics (with the counts of the busiest), and per-second rates since the previous call."""
        now, counters = time.monotonic(), self._counters()
        then, before = self._last
        self._last = (now, counters)
        elapsed = max(now - then, 1e-9)
        rate = [round((a - b) / elapsed, 1) for a, b in zip(counters, before, strict=True)]
        topics = self.server.pubsub.topics()
        presence = self.server.presence.topics()
        busiest = heapq.nlargest(STATS_TOPICS, topics.items(), key=itemgetter(1))
        return {
            "node": self.server.node, "t": time.time(), "connections": len(self.server.connections),
            "topics": len(topics), "subscriptions": sum(topics.values()),
            "messages_in_per_s": rate[0], "messages_out_per_s": rate[1], "broadcasts_per_s": rate[2],
            "tap_dropped": self.dropped,
            # Per-topic counts keep a dashboard's table current without another snapshot.
            "by_topic": {_short(topic): {"subscribers": count, "presence": presence.get(topic, 0)} for topic, count in busiest},
        }

    def counters(self) -> dict[str, Any]:
        """This node's counters, for a peer's ``stats`` (the asker turns them into rates)."""
        server = self.server
        topics = server.pubsub.topics()
        messages_in, messages_out, broadcasts = self._counters()
        return {
            "node": server.node, "url": server.url, "t": time.monotonic(), "connections": len(server.connections),
            "topics": len(topics), "subscriptions": sum(topics.values()), "messages_in": messages_in,
            "messages_out": messages_out, "broadcasts": broadcasts, "uptime": round(time.time() - server.started_at, 3),
        }

    async def cluster_aggregates(self, own: dict[str, Any]) -> dict[str, Any]:
        """``nodes`` (one row per node: this one, its live peers, those that went away lately)
        and ``cluster`` totals, for the ``stats`` of a node in a cluster."""
        cluster = self.server.cluster
        assert cluster is not None
        answers = await cluster.ask("stats", {"tail": True})
        remote = sorted((entry for answer in answers.values() for entry in answer.get("traffic", ())), key=itemgetter("t"))
        remote = remote[-REMOTE_KEPT:]  # however many nodes: one batch stays within ADMIN_FRAME_BYTES
        if remote:
            self._send("traffic", {"entries": remote, "presence": [], "dropped": self.dropped})
        rows: list[dict[str, Any]] = []
        for known in cluster.nodes():
            if known.get("self"):
                rows.append({"node": self.server.node, "status": "up", "self": True, "url": self.server.url,
                             **{k: own[k] for k in ("connections", "topics", "subscriptions", "messages_in_per_s",
                                                    "messages_out_per_s", "broadcasts_per_s")}})
            elif known["status"] == "down":
                rows.append({"node": known["node"], "status": "down", "since": known["since"]})
            elif (counters := answers.get(known["node"])) is None:
                rows.append({"node": known["node"], "status": "no answer"})
            else:
                rows.append({"node": known["node"], "status": "up", **self._rates(counters)})
        up = [row for row in rows if "connections" in row]
        totals = {key: round(sum(row[key] for row in up), 1) for key in
                  ("connections", "subscriptions", "messages_in_per_s", "messages_out_per_s", "broadcasts_per_s")}
        return {"nodes": rows, "cluster": {"nodes": len(up), **totals}}

    def _rates(self, counters: dict[str, Any]) -> dict[str, Any]:
        before = self._peers_last.get(counters["node"])
        self._peers_last[counters["node"]] = counters
        row = {k: counters[k] for k in ("url", "connections", "topics", "subscriptions", "uptime")}
        elapsed = max(counters["t"] - before["t"], 1e-9) if before is not None else 0.0
        for name in ("messages_in", "messages_out", "broadcasts"):
            rate = (counters[name] - before[name]) / elapsed if before is not None else 0.0
            row[f"{name}_per_s"] = round(rate, 1)
        return row

    def local_subscribers(self, topic: str) -> dict[str, Any]:
        """This node's subscribers of ``topic``, cut to :data:`LIST_BYTES`, and how many there are
        (``inspect`` on another node gathers every node's)."""
        subscribers, total = self._local_subscribers(topic)
        return {"subscribers": subscribers, "total": total}

    def _local_subscribers(self, topic: str) -> tuple[list[Any], int]:
        """This node's subscribers of ``topic`` up to :data:`LIST_BYTES`, and how many there are."""
        subscribers = (
            {**_connection(connection), "join_ref": _short(channel.reply_join_ref), "node": self.server.node}
            for connection in self.server.connections
            if (channel := connection.proto.channels.get(topic)) is not None
        )
        return _listed(subscribers, LIST_BYTES)

    def snapshot(self) -> dict[str, Any]:
        """Everything a dashboard shows first: the node, its topics and its connections."""
        server = self.server
        connections = sorted(server.connections, key=lambda c: c.connected_at)
        presence = server.presence.topics()
        topics = server.pubsub.topics()
        shown = sorted(heapq.nlargest(SNAPSHOT_TOPICS, topics.items(), key=itemgetter(1)))
        nodes: list[dict[str, Any]] = [{"name": server.node, "version": __version__, "url": server.url,
                                        "uptime": round(time.time() - server.started_at, 3), "status": "up"}]
        if server.cluster is not None:  # the peers' figures follow in each stats' ``nodes``
            nodes += [{"name": n["node"], "status": n["status"]} for n in server.cluster.nodes() if not n.get("self")]
        listed, _ = _listed((_connection(c) for c in connections[:SNAPSHOT_CONNECTIONS]), LIST_BYTES)
        return {
            "nodes": nodes,
            "topics": {_short(topic): {"subscribers": count, "presence": presence.get(topic, 0)} for topic, count in shown},
            "topics_total": len(topics),
            "connections_total": len(connections),
            "connections": listed,
        }

    async def inspect(self, topic: str) -> dict[str, Any]:
        """One topic's subscribers (on every node of a cluster, each with its ``node``) and full presence."""
        # Each node's count is whole, though its list was cut to LIST_BYTES.
        subscribers, total = self._local_subscribers(topic)
        if self.server.cluster is not None:
            for answer in (await self.server.cluster.ask("inspect", {"topic": topic})).values():
                if isinstance(answer, list):  # a node of a version before the total (a rolling upgrade)
                    answer = {"subscribers": answer, "total": len(answer)}
                subscribers.extend(answer["subscribers"])
                total += answer["total"]
        shown, _ = _listed(subscribers, LIST_BYTES)
        presences = self.server.presence.list(topic)
        presence, _, cut = _presence_side(presences, INSPECT_PRESENCE_BYTES, 25 * PRESENCE_KEYS)
        answer = {"topic": _short(topic), "subscribers": shown, "subscribers_total": total, "presence": presence}
        if cut is not None:
            answer["presence_cut"] = {"bytes": cut, "keys": len(presences)}
        return answer


def _uniform() -> float:
    """A uniform float in (0, 1): logarithms of it are finite."""
    return random.random() or 0.5


def _short(value: Any) -> Any:
    """A client-chosen string cut to :data:`NAME_CHARS` characters (other values as they are)."""
    return value[:NAME_CHARS] + "…" if isinstance(value, str) and len(value) > NAME_CHARS else value


def _encoded(value: Any) -> Any:
    """``value`` encoded once on its own, to embed in an admin frame: the envelope's nesting does not
    add to a client's (orjson encodes at most 254 levels), and one that cannot be encoded is named."""
    return orjson.Fragment(_json(value))


def _json(value: Any) -> bytes:
    """:func:`_encoded`'s bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson's JSONEncodeError: too deep, or not JSON
        return b'{"error":"cannot be shown: not encodable as JSON"}'


def _listed(items: Iterable[dict[str, Any]], budget: int) -> tuple[list[Any], int]:
    """``items`` encoded one by one, as long as they fit in ``budget`` bytes of JSON, and how many
    there were in all (counted on past the budget, where nothing more is encoded)."""
    listed: list[Any] = []
    total = 0
    for item in items:
        total += 1
        if budget > 0:
            encoded = _json(item)
            budget -= len(encoded)
            if budget >= 0:
                listed.append(orjson.Fragment(encoded))
    return listed, total


def _presence_side(presences: Any, budget: int, keys: int) -> tuple[Any, int, int | None]:
    """A presence map (a diff's joins or leaves, or a topic's list) as the admin plane shows it, its
    size in bytes of JSON, and None, or how many bytes were cut: the map whole when it fits in
    ``budget``, else its first ``keys`` keys, each with its number of metas and no metas (a
    dashboard needs the keys; the metas can be asked of a member)."""
    encoded = _json(presences)
    size = len(encoded)
    if size <= budget or not isinstance(presences, dict):
        return orjson.Fragment(encoded), size, None
    shown = {}
    for key, presence in itertools.islice(presences.items(), keys):
        metas = presence.get("metas") if isinstance(presence, dict) else None
        shown[_short(key)] = {"metas": [], "metas_cut": len(metas) if isinstance(metas, list) else 0}
    shown_encoded = orjson.dumps(shown)
    return orjson.Fragment(shown_encoded), len(shown_encoded), size


def _connection(connection: Connection) -> dict[str, Any]:
    session = connection.session
    topics = sorted(connection.proto.channels)
    return {
        "socket_id": _short(connection.socket_id), "user": _short(connection.user.get("id")),
        "remote": peer_address(connection.transport.remote_address), "connected_at": connection.connected_at,
        "topics": [_short(topic) for topic in topics[:CONNECTION_TOPICS]], "topics_total": len(topics),
        # Unix time the socket's token expires (moved by each refresh); None without a token.
        "expires_at": None if session is None else session.expires_at,
    }


def _entry(entry: tuple[float, str, str, str, Any, Any, int]) -> dict[str, Any]:
    t, direction, topic, event, user, payload, recipients = entry
    if isinstance(payload, bytes):  # a binary push or broadcast (PROTOCOL.md §2.3): no JSON to show
        text, size = f"<{len(payload)} bytes, binary>", len(payload)
    else:
        text = orjson.dumps(payload).decode()
        size = len(text)
    return {
        "t": t, "dir": direction, "topic": _short(topic), "event": _short(event), "user": _short(user), "size": size,
        "payload": text if len(text) <= PAYLOAD_CHARS else text[:PAYLOAD_CHARS] + "…", "recipients": recipients,
    }


class AdminChannel(Channel):
    """The handler of ``chanctl:admin``: admin tokens only; snapshot, then the tap; three commands."""

    def __init__(self, tap: AdminTap, claim: str):
        self._tap = tap
        self._claim = claim

    async def join(self, params: Any) -> Outcome | None:
        if self.user.get(self._claim) is not True:
            return error({"reason": "unauthorized", "detail": f"an admin token (claim {self._claim!r}) is required"})
        context = self.socket
        assert isinstance(context, ChannelContext)  # the server's own channel, on a server connection
        context.allow_unsent(ADMIN_OUTBOUND)
        # The snapshot is pushed once the join reply is queued (the next loop turn): a push
        # during join would precede the reply, which phoenix.js would not route to the channel.
        asyncio.get_running_loop().call_soon(self._joined)
        return None

    def _joined(self) -> None:
        if not self.socket.joined:
            return
        self.push("snapshot", self._tap.snapshot())
        self._tap.attach(self)

    async def terminate(self, reason: LeaveReason) -> None:
        self._tap.detach(self)

    async def handle_in(self, event: str, payload: Any) -> Outcome | None:
        if not isinstance(payload, dict):
            return error({"reason": "payload must be an object"})
        if event == "broadcast":
            topic, name, body = payload.get("topic"), payload.get("event"), payload.get("payload", {})
            if not isinstance(topic, str) or not isinstance(name, str) or not isinstance(body, dict):
                return error({"reason": "broadcast takes {topic: string, event: string, payload: object}"})
            return ok({"subscribers": self._tap.server.publish(topic, name, body)})
        if event == "disconnect":
            socket_id = payload.get("socket_id")
            if not isinstance(socket_id, str):
                return error({"reason": "disconnect takes {socket_id: string}"})
            server = self._tap.server
            closed = server.disconnect(socket_id, everywhere=False)
            if server.cluster is not None:
                closed += sum(answer["closed"] for answer in (await server.cluster.ask("disconnect", {"socket_id": socket_id})).values())
            return ok({"closed": closed})
        if event == "inspect":
            topic = payload.get("topic")
            if not isinstance(topic, str):
                return error({"reason": "inspect takes {topic: string}"})
            return ok(await self._tap.inspect(topic))
        if event == "revoke":
            return self._revoke(payload)
        return error({"reason": "unknown event", "event": event, "events": list(ADMIN_EVENTS)})

    def _revoke(self, payload: dict[str, Any]) -> Outcome:
        """``{token: T}`` refuses that token, ``{user: ID}`` every token of the user signed up to now,
        until they would have expired; the sockets they name close with 4403."""
        server = self._tap.server
        token, user = payload.get("token"), payload.get("user")
        if isinstance(token, str) and user is None:
            try:
                entry = server.sessions.revoke_token(token)
            except TokenError as exc:
                return error({"reason": f"token {exc.reason}", "detail": exc.detail})
        elif token is None and isinstance(user, (str, int)) and not isinstance(user, bool):
            entry = server.sessions.revoke_user(user)
        else:
            return error({"reason": "revoke takes {token: string} or {user: id}"})
        return ok({"closed": server.revoke(entry), "until": entry["until"]})
