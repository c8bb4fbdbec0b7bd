"""Supabase Realtime's clients on a ``realtime: true`` topic: an adapter at the edge, not a second server.

``@supabase/realtime-js`` (inside supabase-js) speaks Phoenix Channels with its own envelopes
(README, "Supabase Realtime clients"). :class:`RealtimeChannel` is the topic's declarative channel
with those envelopes opened and closed at its edges, so that everything in between is the YAML's
machinery, unchanged: the join rule, the events' schemas and ``allow`` rules, ``do:``, presence,
rate limits, ``watch`` and metrics.

- join: the payload ``{config: {broadcast: {self, ack}, presence: {key, enabled}, private,
  postgres_changes: [...]}, access_token}`` is read here; a join that asks for Postgres changes is
  refused with a reason that says so; the ok reply is ``{postgres_changes: []}``, which the client
  waits for. (The connection checks ``access_token`` as a token refresh before the join runs.)
- ``broadcast`` ``{type: "broadcast", event: E, payload: P}`` is checked and done as the event ``E``
  with payload ``P``; the sender gets its own broadcast only when it joined with
  ``broadcast.self``, and an ok reply only with ``broadcast.ack`` (Supabase answers nothing else).
- ``presence`` ``{type: "presence", event: "track", payload: META}`` tracks the sender under the
  topic's ``presence.key`` (or replaces its meta); ``untrack`` stops. Only the keys of the topic's
  ``presence.meta`` may be set, as for ``do: presence``, and each track spends the connection's
  ``presence.max_updates`` allowance.
- every broadcast on the topic, whoever publishes it, goes out as ``broadcast`` ``{type, event,
  payload}`` (:func:`outbound`); ``presence_state``/``presence_diff`` go out as Phoenix sends them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from chanctl.channel import Outcome, error, ok
from chanctl.server.behaviours import CompiledTopic, DeclarativeChannel

if TYPE_CHECKING:
    from chanctl.server.context import ChannelContext

__all__ = ["BROADCAST", "PRESENCE", "JoinConfig", "RealtimeChannel", "outbound"]

BROADCAST = "broadcast"
"""The client and server event that carries a Supabase broadcast envelope."""
PRESENCE = "presence"
"""The client event that carries ``track``/``untrack``."""
NO_POSTGRES_CHANGES = (
    "postgres_changes are not supported: this server (chanctl) serves Broadcast and Presence only"
)
NO_REPLAY = "broadcast.replay is not supported: this server keeps no Supabase messages (see history: for recovery)"


def outbound(event: str, payload: Any) -> tuple[str, dict[str, Any]]:
    """What a broadcast of ``event`` on a ``realtime: true`` topic is on the wire."""
    return BROADCAST, {"type": BROADCAST, "event": event, "payload": payload}


@dataclass(frozen=True, slots=True)
class JoinConfig:
    """What a realtime-js join asked for (its ``config``); a Phoenix client's ``{}`` means the defaults."""

    self_broadcast: bool = False
    """``broadcast.self``: the sender gets its own broadcasts."""
    ack: bool = False
    """``broadcast.ack``: the sender waits for an ok reply to each broadcast."""

    @classmethod
    def parse(cls, params: Any) -> JoinConfig | Outcome:
        """The join's settings, or the error reply for a join this server cannot serve."""
        config = params.get("config") if isinstance(params, dict) else None
        config = {} if config is None else config
        if not isinstance(config, dict):
            return error({"reason": "config must be an object"})
        if config.get("postgres_changes"):
            return error({"reason": NO_POSTGRES_CHANGES})
        broadcast = config.get("broadcast") or {}
        if not isinstance(broadcast, dict):
            return error({"reason": "config.broadcast must be an object"})
        if broadcast.get("replay"):
            return error({"reason": NO_REPLAY})
        flags = {}
        for name in ("self", "ack"):
            value = broadcast.get(name, False)
            if not isinstance(value, bool):
                return error({"reason": f"config.broadcast.{name} must be true or false"})
            flags[name] = value
        return cls(flags["self"], flags["ack"])


class RealtimeChannel(DeclarativeChannel):
    """A ``realtime: true`` topic's channel: Supabase's envelopes in and out, the YAML's rules inside."""

    def __init__(self, topic: CompiledTopic):
        super().__init__(topic)
        self._config = JoinConfig()
        self._tracked = False

    async def join(self, params: Any) -> Outcome | None:
        config = JoinConfig.parse(params)
        if isinstance(config, Outcome):
            return config
        self._config = config
        refused = await super().join(params)
        return refused if refused is not None else ok({"postgres_changes": []})

    async def handle_in(self, event: str, payload: Any) -> Outcome | None:
        if event == BROADCAST:
            return await self._broadcast(payload)
        if event == PRESENCE:
            return self._presence(payload)
        return await super().handle_in(event, payload)  # a Phoenix client may send the YAML's events as such

    def broadcast(self, event: str, payload: Any) -> None:
        # ``do: broadcast`` reaches the sender only when it joined with broadcast.self, as Supabase does.
        if self._config.self_broadcast:
            super().broadcast(event, payload)
        else:
            self.broadcast_from(event, payload)

    async def _broadcast(self, envelope: Any) -> Outcome | None:
        if not isinstance(envelope, dict) or not isinstance(envelope.get("event"), str):
            return error({"reason": "broadcast takes {type: \"broadcast\", event: NAME, payload: ...}"})
        payload = envelope.get("payload", {})
        if isinstance(payload, bytes):
            return error({"reason": "binary broadcast payloads are not supported; send JSON"})
        outcome = await super().handle_in(envelope["event"], payload)
        if outcome is not None and outcome.status == "ok" and not self._config.ack:
            return None  # realtime-js without ack resolves at once and waits for no reply
        return outcome

    def _presence(self, envelope: Any) -> Outcome:
        if not isinstance(envelope, dict) or envelope.get("event") not in ("track", "untrack"):
            return error({"reason": "presence takes {type: \"presence\", event: \"track\" | \"untrack\", payload: META}"})
        key = self.presence_key
        if key is None:
            return error({"reason": "this topic has no presence"})
        if envelope["event"] == "untrack":
            self.untrack(key)
            self._tracked = False
            return ok()
        meta = envelope.get("payload", {})
        refused = self.presence_refusal(meta)
        if refused is not None:
            return refused
        defaults = self.presence_defaults
        if self._tracked:
            self.update(key, lambda old: {**defaults, "online_at": old.get("online_at"), **meta})
        else:
            context = cast("ChannelContext", self.socket)  # the runtime's: a client-asked track is limited
            context.track(key, {**defaults, "online_at": int(time.time()), **meta}, limited=True)
            self._tracked = True
        return ok()
