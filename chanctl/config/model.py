"""The only declaration of the config format.

Every model is frozen and rejects unknown keys; the field docstrings become the descriptions of
the exported JSON Schema (``Config.model_json_schema()``), so the reference never drifts from what
loads.
"""

from __future__ import annotations

import os
import string
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from chanctl.durations import parse_duration
from chanctl.origins import OriginPolicy
from chanctl.tokens import DEFAULT_ADMIN_CLAIM

__all__ = ["AuthConfig", "ClusterConfig", "Config", "EventConfig", "HistoryConfig", "JoinRule", "PolicyTest", "PresenceConfig", "PresenceLimit", "REALTIME_PREFIX", "REALTIME_RESERVED_EVENTS", "ServerConfig", "TopicConfig"]


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _window(value: Any) -> float:
    """A duration that may also be 0 (off)."""
    if not isinstance(value, bool) and str(value).strip() in ("0", "0.0", "0s", "0ms"):
        return 0.0
    return _duration(value)


_UNITS = {"": 1, "b": 1, "kib": 1024, "kb": 1000, "mib": 1024**2, "mb": 1000**2}


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmib")
    unit = text[len(number):]
    if unit not in _UNITS or not number.isdigit():
        raise ValueError(f"not a size: {value!r} (use bytes, or e.g. 64KiB, 1MiB)")
    return int(number) * _UNITS[unit]


Duration = Annotated[float, BeforeValidator(_duration)]
"""Seconds, written as a number or a human duration (``90s``, ``15m``, ``2h``, ``14d``, ``2w``)."""
ByteSize = Annotated[int, BeforeValidator(_size), Field(gt=0)]
Window = Annotated[float, BeforeValidator(_window)]
"""A duration that may also be 0 (off)."""
"""Bytes, written as a number or with a unit (``64KiB``, ``1MiB``)."""


def _origin(entry: str) -> str:
    OriginPolicy([entry])  # the handshake's own parser: what passes here, `serve` can use
    return entry


Origin = Annotated[str, AfterValidator(_origin)]
"""An allowed ``Origin``: a URL or a bare host, ``*.`` for a domain and its subdomains."""

JoinRule = bool | list[int | str] | str
"""``true`` (any authenticated user), ``false`` (nobody), a list of user ids, or a CEL expression
over ``user``, ``topic``, ``params`` and ``data`` (and ``payload`` in an event's ``allow``)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True)


class RateLimitConfig(_Model):
    """Client messages one connection may send: a token bucket. Heartbeats and leaves never count."""

    per_second: float = Field(100.0, gt=0)
    """Average messages a second; beyond it a message gets ``{"reason": "rate limited", "limit": "server.rate_limit", "retry_after_ms": N}``."""
    burst: int = Field(200, ge=1)
    """Messages that may arrive at once; a client refused more than twice this in a row is closed (1008)."""


class LongPollConfig(_Model):
    """Phoenix's LongPoll transport at ``<path>/longpoll``, for clients behind proxies that block
    WebSockets (phoenix.js ``longPollFallbackMs``). Off unless enabled, as in Phoenix."""

    enabled: bool = False
    """Serve LongPoll beside the WebSocket."""
    window: Duration = Field(10.0, gt=0)
    """How long a poll waits for messages before answering 204; a session that has not polled for
    1.5 windows ends (Phoenix's ``window_ms``)."""
    max_body: ByteSize = 8_000_000
    """Bytes one POST (a batch of up to 100 client messages) may carry; a larger one is refused (413)."""


class ServerConfig(_Model):
    """Where and how the server listens."""

    host: str = "127.0.0.1"
    """Interface to bind; ``0.0.0.0`` for every interface."""
    port: int = Field(4000, ge=0, le=65535)
    """TCP port; 0 picks a free one (the banner prints the real URL)."""
    path: str = Field("/socket", pattern=r"^/[^?#]*$")
    """Socket mount point; the WebSocket lives at ``<path>/websocket`` as Phoenix has it."""
    origins: list[Origin] | None = None
    """Allowed ``Origin`` hosts, e.g. ``https://app.example.com`` or ``*.example.com``; unset: any."""
    idle_timeout: Duration = 60.0
    """Close a connection (1001) that sent no frame for this long; phoenix.js heartbeats every 30s."""
    max_frame_size: ByteSize = 1024 * 1024
    """Largest inbound frame; a larger one closes the connection with 1009."""
    max_channels: int = Field(100, ge=1)
    """Channels one connection may have joined at once."""
    max_name_length: ByteSize = 255
    """Bytes of a topic or event name; a longer one gets ``{"reason": "name too long"}``."""
    max_join_payload: ByteSize = 64 * 1024
    """Bytes of a ``phx_join`` frame (its params, in practice); a larger one gets
    ``{"reason": "join payload too large"}``. Join params may be kept for the channel's life."""
    max_ref_bytes: int = Field(255, ge=20, le=255)
    """Bytes of a client's ``ref`` or ``join_ref`` (any JSON value; a string's UTF-8, an array's or
    object's JSON text), echoed in its replies; a longer one closes the connection (1007) with a
    reason naming this setting. At most 255, what a binary frame can carry; at least 20 (a 64-bit
    integer's digits)."""
    max_library_input: int = Field(2048, ge=1)
    """Values of client input (``payload``, ``params``: one per value, map entry or list item, one
    per KiB of a string) a rule only the CEL library can evaluate may read; past it the message is
    refused with ``{"reason": "payload too large for this topic's rule"}`` without evaluating,
    which bounds its CPU (about 2-4 µs a value)."""
    max_connections: int | None = Field(10_000, ge=1)
    """Open connections in all; past it a new one is closed at once (1013) with a reason naming
    this setting. ``null``: no limit."""
    max_connections_per_user: int | None = Field(100, ge=1)
    """Open connections of one ``user.id``; past it, as above. ``null``: no limit."""
    max_connections_per_address: int | None = Field(1_000, ge=1)
    """Open connections from one remote IP address (a NAT may hide many users); past it, as above.
    ``null``: no limit."""
    outbound_buffer: ByteSize = 4 * 1024 * 1024
    """Bytes queued for one slow client before it is disconnected (1013, slow consumer)."""
    longpoll: LongPollConfig = LongPollConfig()
    """Phoenix's LongPoll transport (off by default)."""
    rate_limit: RateLimitConfig | None = RateLimitConfig()
    """Per-connection limit on client messages; ``null`` turns it off (benchmarks, trusted peers)."""
    memory_trim: Duration | None = 5.0
    """How long after a connection closes the server gives the C heap's free pages back to the
    operating system (glibc's ``malloc_trim``), at most once per this period, so RSS falls after a
    burst of sockets or large frames; ``null``: never (RSS then stays at its high-water mark)."""


class AuthConfig(_Model):
    """Socket tokens: every connection must present one, signed with ``secret``."""

    secret: str = Field(min_length=1)
    """Token secret; use ``${CHANCTL_SECRET}``. At least 32 bytes, or the server warns loudly."""
    salt: str = "user socket"
    """Token namespace, as Phoenix.Token's salt."""
    max_age: Duration = 14 * 86400.0
    """Longest a token is accepted after signing, at connect and on open sockets (a token's ``ttl``
    claim may shorten it)."""
    expiry_warning: Window = 60.0
    """How long before a socket's token expires it gets ``token_expiring`` ``{expires_in,
    expires_at}`` on topic ``phoenix``; 0 sends none."""
    expiry_grace: Window = 25.0
    """How long after its token expired a socket may still refresh (event ``access_token``) before
    it is closed with 4401 "token expired"."""
    admin_claim: str = Field(DEFAULT_ADMIN_CLAIM, min_length=1)
    """Token claim that must be ``true`` to join the admin topic ``chanctl:admin``
    (``chanctl token --admin`` sets it)."""
    socket_id: str = "user_socket:{id}"
    """Each socket's id, from its token claims (``{claim}`` placeholders); ``server.disconnect(id)``
    and the admin plane's ``disconnect`` close every socket with that id (1001). A token without a
    claim the template names makes an anonymous socket, which cannot be targeted."""

    @field_validator("socket_id")
    @classmethod
    def _socket_id_template(cls, template: str) -> str:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad socket id template: {exc}") from None
        if not fields or any(not name.isidentifier() for name in fields):
            raise ValueError("a socket id names token claims as {claim}, e.g. 'user_socket:{id}'")
        return template


class EventConfig(_Model):
    """What a client event on this topic does: validate, authorize, then act.

    Behaviours (``do``), each with an example:

    - ``broadcast``: ``new_msg: {schema: {body: {type: string}}, do: broadcast}`` sends
      ``{body, user_id, id, inserted_at}`` to every subscriber, the sender included.
    - ``broadcast_from``: ``cursor: {do: broadcast_from}`` the same, to every subscriber but the sender.
    - ``reply``: ``ping: {do: reply, reply: {pong: true}}`` answers ok with that response;
      without ``reply:`` it echoes the payload.
    - ``push_to``: ``dm: {do: push_to, to: '"notifications:user_" + string(payload.to)'}`` forwards the
      stamped payload, as the same event, to the subscribers of the topic the expression computes.
    - ``noop``: ``typing: {do: noop}`` answers ok and does nothing else.
    - ``presence``: ``typing: {do: presence}`` merges the payload into the sender's presence meta
      (only keys the topic's ``presence.meta`` declares); every member gets the ``presence_diff``.
    """

    schema_: dict[str, Any] | None = Field(None, alias="schema")
    """JSON Schema of the payload; a map of properties is shorthand for an object schema whose
    properties are all required and the only ones allowed (a full schema may say
    ``additionalProperties: true``). A failure replies ``{"errors": {"field": ["message", ...]}}``."""
    allow: JoinRule = True
    """Who may send this event (checked after ``schema``): true, false, a list of user ids, or CEL over
    ``user``, ``topic``, ``params``, ``payload`` and ``data``. A denial replies
    ``{"reason": "unauthorized"}``; a rule that fails at run time denies and is logged."""
    do: Literal["broadcast", "broadcast_from", "reply", "push_to", "noop", "presence"] = "reply"
    """What happens once the payload is valid and allowed; see the behaviours above."""
    reply: Any = None
    """Fixed ok response for ``do: reply``; unset echoes the payload."""
    to: str | None = None
    """For ``do: push_to``: a CEL expression giving the destination topic, e.g.
    ``'"notifications:user_" + string(payload.to)'``. A failure replies ``{"reason": ...}``."""


class PresenceLimit(_Model):
    """At most ``updates`` presence updates per ``per`` seconds from one connection, on the topics
    of this pattern (a token bucket: it refills evenly, and rejoining does not reset it)."""

    updates: int = Field(20, ge=1)
    """Updates allowed in a burst (and per window)."""
    per: Duration = 5.0
    """The window; the allowance refills evenly over it."""


class PresenceConfig(_Model):
    """Track who is on the topic, in the format phoenix.js ``Presence`` consumes."""

    key: str = "user.id"
    """The presence key, a CEL expression over ``user``, ``topic`` and ``params`` (the join
    payload); several sessions with one key are several metas under it."""
    meta: dict[str, Any] = {}
    """Meta fields every presence starts with; ``online_at`` (unix seconds) is always added.
    A ``do: presence`` event may set only these keys."""
    mode: Literal["list", "count"] = "list"
    """``list``: ``presence_state`` and ``presence_diff`` with every member (Phoenix's events);
    ``count``: only ``presence_count`` ``{count, sessions}``, for topics too big to list."""
    batch: Window = 0.0
    """Opt-in: coalesce the diffs of one topic over this window (say ``50ms``): the first change
    after a quiet window goes out at once, later ones together at its end, and a joiner inside a
    window gets the list as of the window's start, which the window's diff completes. 0 (the
    default) sends every diff at once, to every member, as Phoenix does."""
    max_updates: PresenceLimit = PresenceLimit()
    """Cap on presence updates per connection; past it an update gets an error reply."""


PRESENCE_KEY_VARIABLES = frozenset({"user", "topic", "params", "data"})
"""What a presence ``key`` expression may read."""


def _presence_switch(value: Any) -> Any:
    """``presence: true`` means the defaults, ``false`` (or nothing) means off."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


MAX_HISTORY = 10_000
"""The most broadcasts one topic may keep (``history.size``); each is kept in memory per topic."""


class HistoryConfig(_Model):
    """Keep the recent broadcasts of each topic so that a client that rejoins gets what it missed.

    Every broadcast gets the topic's next ``offset`` within an ``epoch`` (both in its payload); a
    join with ``{"since": {"offset": N, "epoch": E}}`` is answered ``recovered: true`` and sent
    exactly the broadcasts after N, or ``recovered: false`` and none when some are no longer kept."""

    size: int = Field(ge=1, le=MAX_HISTORY)
    """Broadcasts kept per topic (the oldest go first), at most 10,000."""
    ttl: Duration
    """How long a broadcast is kept, e.g. ``5m``."""


class TopicConfig(_Model):
    """One topic pattern: who may join, and what its events do (in YAML, or in a Python handler)."""

    join: JoinRule | None = None
    """Who may join. Required unless a ``handler`` decides: write ``true`` to mean any authenticated
    user, on purpose. With a handler too, the rule is checked first, then the handler's ``join``."""
    events: dict[str, EventConfig] = {}
    """Client events this topic accepts; any other event gets an ``unknown event`` error reply."""
    handler: str | None = None
    """A Python channel class, ``package.module:Class`` (a subclass of ``chanctl.Channel``), imported
    when the config is compiled (serve, check), with the config's directory on ``sys.path``. It
    replaces ``events``."""
    history: HistoryConfig | None = None
    """Opt-in: number this topic's broadcasts and keep the recent ones for recovery on rejoin,
    e.g. ``{size: 100, ttl: 5m}`` (both required)."""
    presence: Annotated[PresenceConfig | None, BeforeValidator(_presence_switch)] = None
    """Track presence on join (``true`` for the defaults); each joiner gets ``presence_state``,
    every member a ``presence_diff``."""
    realtime: bool = False
    """Opt-in: serve this topic to Supabase Realtime's clients (``@supabase/realtime-js``, inside
    supabase-js) unchanged: the pattern starts with ``realtime:``, the socket also takes its token as
    ``?apikey=``, a client event is ``broadcast`` ``{type, event, payload}`` (checked as the event
    it names) or ``presence`` ``track``/``untrack``, and every broadcast on the topic goes out as
    ``broadcast``. Postgres changes are refused. See README, "Supabase Realtime clients"."""

    @field_validator("events")
    @classmethod
    def _no_reserved_events(cls, events: dict[str, EventConfig]) -> dict[str, EventConfig]:
        if "access_token" in events:
            raise ValueError("event 'access_token' is reserved: the socket takes it as a token refresh")
        return events

    @model_validator(mode="after")
    def _presence_events_need_presence(self) -> "TopicConfig":
        for name, event in self.events.items():
            if event.do == "presence" and self.presence is None:
                raise ValueError(f"event {name!r} does `do: presence`, but the topic has no `presence:`")
        return self

    @model_validator(mode="after")
    def _realtime_topic(self) -> "TopicConfig":
        if not self.realtime:
            return self
        if self.handler is not None:
            raise ValueError("a `realtime: true` topic is declarative: it cannot have a `handler`")
        reserved = sorted(set(self.events) & REALTIME_RESERVED_EVENTS)
        if reserved:
            raise ValueError(f"event {reserved[0]!r} is reserved on a `realtime: true` topic: Supabase clients wrap their events in it")
        return self


REALTIME_PREFIX = "realtime:"
"""What ``@supabase/realtime-js`` puts before every topic it joins."""
REALTIME_RESERVED_EVENTS = frozenset({"broadcast", "presence"})
"""The client events of a ``realtime: true`` topic that carry Supabase's envelopes."""


REDIS_SCHEMES = ("redis", "rediss", "unix")


def default_node_name() -> str:
    """``host-pid``: readable in ``chanctl watch`` and unique on one machine (``serve --workers``)."""
    return f"{os.uname().nodename}-{os.getpid()}"


class ClusterConfig(_Model):
    """Several nodes that share one Redis behave as one server: broadcasts, presence, disconnects
    and the admin plane cross nodes. Without this section nothing changes and no Redis is needed."""

    redis: str
    """The Redis every node of the cluster uses, e.g. ``redis://redis.internal:6379/0``
    (``rediss://`` for TLS, ``unix:///run/redis.sock``); ``${REDIS_URL}`` works."""
    node: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$")
    """This node's name in ``chanctl watch``, ``/metrics`` and the logs; default ``host-pid``.
    Two live nodes must not share a name."""
    prefix: str = Field("chanctl", pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    """Prefix of every Redis key and channel, so that several clusters can share one Redis."""
    down_after: Duration = Field(15.0, ge=1.0, le=3600.0)
    """A node silent this long (killed, cut off) is declared down: its presences leave every topic,
    with ``presence_diff`` leaves. Nodes heartbeat every third of it."""
    max_pending: ByteSize = 16 * 1024 * 1024
    """Bytes of broadcasts waiting for a slow Redis; past it broadcasts are dropped and counted
    (``chanctl_cluster_dropped``) instead of growing the node's memory."""

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(f"not a Redis URL: {url!r} (write redis://host:6379/0, rediss://... or unix:///path)")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"the Redis URL {url!r} names no host (write redis://host:6379/0)")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"the Redis URL {url!r} has a bad port") from None
        return url

    @property
    def redis_shown(self) -> str:
        """``redis`` with its password replaced by ``***``, for banners, logs and the admin plane."""
        parts = urlsplit(self.redis)
        if parts.password is None:
            return self.redis
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))

    @property
    def node_name(self) -> str:
        """``node``, or the default ``host-pid``."""
        return self.node or default_node_name()


class PolicyTest(_Model):
    """One authorization case that ``chanctl check`` runs: a join, or an event on a joined topic."""

    user: int | str
    """The user id the token would carry."""
    claims: dict[str, Any] = {}
    """Other token claims, e.g. ``{role: admin}``."""
    join: str | None = None
    """Test joining this topic."""
    params: Any = {}
    """The join payload."""
    topic: str | None = None
    """With ``event``: test sending an event on this topic (its join is checked first)."""
    event: str | None = None
    """The event to send on ``topic``."""
    payload: Any = {}
    """The event payload."""
    expect: Literal["allow", "deny"]
    """What the YAML rules must decide. Where a Python handler decides (its ``join`` with no ``join:``
    rule, any event of a handler topic), the test fails with "handler decides": test it in Python."""


class Config(_Model):
    """A chanctl server."""

    server: ServerConfig = ServerConfig()
    """Where and how the server listens."""
    auth: AuthConfig
    """Socket tokens; required."""
    data: dict[str, Any] = {}
    """Static facts the rules may read as ``data``."""
    data_file: str | None = None
    """A YAML or JSON file of more facts (a mapping), relative to this config; its keys join ``data``
    (a key in both is an error)."""
    topics: dict[str, TopicConfig] = Field(min_length=1)
    """Topic patterns (``room:{id}``, ``updates:all``, ``room:*``) and their rules. When patterns
    overlap the most specific wins: literal topics, then more literal characters, then ``*``."""
    cluster: ClusterConfig | None = None
    """Run as one node of a cluster that shares a Redis (``chanctl serve --redis URL`` sets it too)."""
    tests: list[PolicyTest] = []
    """Authorization cases ``chanctl check`` runs, e.g. ``{user: 99, join: "room:42", expect: deny}``."""

    @field_validator("topics")
    @classmethod
    def _realtime_patterns(cls, topics: dict[str, TopicConfig]) -> dict[str, TopicConfig]:
        for pattern, topic in topics.items():
            if topic.realtime and not pattern.startswith(REALTIME_PREFIX):
                raise ValueError(
                    f"topic {pattern!r} is `realtime: true`, but Supabase clients join `realtime:<name>`: "
                    f"write the pattern as {REALTIME_PREFIX + pattern!r}"
                )
        return topics

    @property
    def realtime(self) -> bool:
        """Whether a topic serves Supabase Realtime's clients (the socket then takes ``?apikey=``)."""
        return any(topic.realtime for topic in self.topics.values())
