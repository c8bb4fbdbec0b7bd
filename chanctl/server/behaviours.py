"""The declarative behaviours of the YAML: one :class:`~chanctl.channel.Channel` built from config.

Everything a topic declares is compiled once, by :func:`chanctl.server.compile.compile_config`
(join rule, payload validators), so that the per-message path is a dict lookup, a validation and
one fan-out. :meth:`CompiledTopic.authorize_join` and :meth:`CompiledTopic.check_event` are the
decisions; the connection, :class:`DeclarativeChannel` and the explainer all call them.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jsonschema

from chanctl.throttle import LogThrottle
from chanctl.channel import Channel, Outcome, error, ok
from chanctl.config.model import EventConfig
from chanctl.errors import RuleInputTooLarge
from chanctl.protocol.socket import limit_reply
from chanctl.rules import Expression, Rule
from chanctl.pubsub.history import HistorySpec
from chanctl.escape import shown

__all__ = ["CompiledEvent", "CompiledTopic", "DeclarativeChannel", "EventCheck", "schema_errors", "stamp"]

log = logging.getLogger("chanctl.behaviours")
log.addFilter(LogThrottle())  # lines a client's messages cause: bounded per kind (chanctl.throttle)

_UNAUTHORIZED = error({"reason": "unauthorized"})
_STAMPED = frozenset({"broadcast", "broadcast_from", "push_to"})
"""The behaviours that send the payload on, stamped with its sender."""
LIBRARY_INPUT_LIMIT = "server.max_library_input"
"""The setting a refusal by :class:`~chanctl.errors.RuleInputTooLarge` names."""
_BINARY = error({"errors": {"payload": ["must be JSON, not binary"]}})


def _too_large(exc: RuleInputTooLarge, counted: Counter[str]) -> Outcome:
    """The refusal of a message whose rule would read more client input than the CEL library may,
    counted in ``counted`` (the topic's :attr:`CompiledTopic.limit_refusals`) by the limit's name."""
    log.info("refused: %s", exc)
    counted[LIBRARY_INPUT_LIMIT] += 1
    return error(limit_reply(f"{exc.root} too large for this topic's rule", LIBRARY_INPUT_LIMIT, exc.limit))


_ids = itertools.count(1)
_NODE = os.urandom(3).hex()


def _message_id() -> str:
    """A server-assigned id: unique across nodes, ordered within one."""
    return f"{_NODE}-{next(_ids)}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _error_text(err: jsonschema.ValidationError) -> str:
    kind, limit = err.validator, err.validator_value
    if kind == "required":
        return "can't be blank"
    if kind == "minLength":
        return "can't be blank" if limit == 1 else f"should be at least {_plural(limit, 'character')}"
    if kind == "maxLength":
        return f"should be at most {_plural(limit, 'character')}"
    if kind == "type":
        return f"must be of type {limit if isinstance(limit, str) else ' or '.join(limit)}"
    if kind == "enum":
        return "is invalid; expected one of " + ", ".join(map(repr, limit))
    if kind == "minimum":
        return f"must be greater than or equal to {limit}"
    if kind == "maximum":
        return f"must be less than or equal to {limit}"
    return err.message


def _error_field(err: jsonschema.ValidationError) -> str:
    path = [str(p) for p in err.absolute_path]
    if err.validator == "required":
        missing = next((name for name in err.validator_value if isinstance(err.instance, dict) and name not in err.instance), None)
        if missing is not None:
            path.append(missing)
    return ".".join(path) or "payload"


def schema_errors(validator: jsonschema.protocols.Validator, payload: Any) -> dict[str, list[str]] | None:
    """``{field: [message, ...]}`` for an invalid payload (Ecto's wording), or None when valid."""
    if validator.is_valid(payload):
        return None
    errors: dict[str, list[str]] = {}
    for err in sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path))):
        if err.validator == "additionalProperties" and err.validator_value is False and isinstance(err.instance, dict):
            # One entry per unexpected field, named as the client wrote it (escaped by whoever prints it).
            declared = err.schema.get("properties", {})
            path = [str(p) for p in err.absolute_path]
            for name in sorted(set(err.instance) - set(declared))[:10]:
                errors.setdefault(".".join([*path, name]), []).append("is not allowed")
            continue
        errors.setdefault(_error_field(err), []).append(_error_text(err))
    return errors


@dataclass(frozen=True)
class CompiledEvent:
    """One declared event, ready for the hot path."""

    config: EventConfig
    validator: jsonschema.protocols.Validator | None
    allow: Rule
    to: Expression | None
    passed: EventCheck = field(init=False, repr=False, compare=False)
    """:meth:`CompiledTopic.check_event`'s answer when this event may go on to its ``do``: the same
    for every message, so made once here (building the frozen dataclass per message cost about
    600 ns, an eighth of a declarative event's handling)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", EventCheck(None, "allow", self))


@dataclass(frozen=True, slots=True)
class EventCheck:
    """What :meth:`CompiledTopic.check_event` decided about one client event."""

    refused: Outcome | None
    """The error reply, or None: the event may go on to its ``do``."""
    step: str
    """What decided: ``events`` (not declared), ``schema`` (invalid payload) or ``allow``."""
    event: CompiledEvent | None = None


class _InsertedAt:
    """``inserted_at`` for now: ISO 8601 in UTC with microseconds and ``Z``, the text of
    ``datetime.now(UTC).isoformat(timespec="microseconds")`` with ``Z`` for ``+00:00``.

    The date and time of day are formatted once a second and only the microseconds per message:
    datetime's formatting was 1.8 µs of a stamp's 2.6 (every ``do: broadcast`` message)."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def __call__(self) -> str:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self.second:
            self.text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self.second = second
        return f"{self.text}{micro:06d}Z"


_inserted_at = _InsertedAt()


def stamp(user: dict[str, Any], payload: Any) -> dict[str, Any]:
    """A broadcast body: the payload plus the sender's ``user_id``, an ``id`` and ``inserted_at``."""
    body = dict(payload) if isinstance(payload, dict) else {"payload": payload}
    body["user_id"] = user.get("id")
    body["id"] = _message_id()
    body["inserted_at"] = _inserted_at()
    return body


class DeclarativeChannel(Channel):
    """A channel whose join rule and events come from a topic's YAML."""

    def __init__(self, topic: CompiledTopic):
        self._spec = topic
        self._params: Any = {}
        self.data = topic.data

    async def join(self, params: Any) -> Outcome | None:
        # The join rule already allowed this join: the connection checks a topic's
        # CompiledTopic.authorize_join before any channel's join.
        if self._spec.events_read_params:
            self._params = params  # the event rules read it for the channel's life (bounded by server.max_join_payload)
        return None

    async def handle_in(self, event: str, payload: Any) -> Outcome | None:
        check = self._spec.check_event(
            event, payload, lambda: self._spec.variables(self.user, self.topic, self.captures, self._params, payload)
        )
        if check.refused is not None:
            return check.refused
        spec = check.event
        assert spec is not None
        do = spec.config.do
        if isinstance(payload, bytes) and do in _STAMPED:
            # A V2 binary push: the stamp (user_id, id, inserted_at) needs a JSON object, and a
            # broadcast of bytes inside one could go out on no wire (it crashed the channel).
            return _BINARY
        if do == "broadcast":
            self.broadcast(event, stamp(self.user, payload))
        elif do == "broadcast_from":
            self.broadcast_from(event, stamp(self.user, payload))
        elif do == "reply":
            return ok(payload if spec.config.reply is None else spec.config.reply)
        elif do == "push_to":
            assert spec.to is not None
            variables = self._spec.variables(self.user, self.topic, self.captures, self._params, payload)
            try:
                target = spec.to.evaluate(variables)
            except Exception as exc:  # the CEL runtime raises KeyError, TypeError, RuntimeError...
                log.info("push_to %r failed on %s: %s: %s", spec.to.source, shown(self.topic), type(exc).__name__, shown(exc),
                         extra={"throttle": spec.to.source})
                return error({"reason": "no destination topic", "detail": str(exc)})
            if not isinstance(target, str):
                log.info("push_to %r gave %s, not a topic", spec.to.source, shown(repr(target)), extra={"throttle": spec.to.source})
                return error({"reason": "no destination topic", "detail": f"got {target!r}, not a string"})
            self.publish(target, event, stamp(self.user, payload))
        elif do == "presence":
            return self._merge_presence(payload)
        return ok()

    def _merge_presence(self, payload: Any) -> Outcome:
        """``do: presence``: merge the payload into the sender's meta (see :meth:`presence_refusal`)."""
        refused = self.presence_refusal(payload)
        if refused is not None:
            return refused
        if self.presence_key is None:
            return error({"reason": "nopresence"})
        self.update(self.presence_key, lambda meta: {**meta, **payload})
        return ok()

    def presence_refusal(self, payload: Any) -> Outcome | None:
        """The error reply for presence meta a client may not set, else None: only the fields the
        topic's ``presence.meta`` declares, so that a client cannot grow what every joiner downloads."""
        if not isinstance(payload, dict):
            return error({"errors": {"payload": ["must be of type object"]}})
        unknown = sorted(name for name in payload if name not in self._spec.presence_meta)
        if unknown:
            return error({"errors": {name: ["is not a presence field of this topic"] for name in unknown}})
        return None

    @property
    def presence_defaults(self) -> Mapping[str, Any]:
        """The meta every presence of this topic starts with (its ``presence.meta``)."""
        return self._spec.presence_meta


@dataclass(frozen=True)
class CompiledTopic:
    """One topic pattern with its rules compiled; calling it makes the channel for one join, and
    the connection checks :meth:`authorize_join` before that channel's ``join`` runs."""

    pattern: str
    join_rule: Rule | None
    events: dict[str, CompiledEvent]
    data: dict[str, Any]
    handler: type[Channel] | None = None
    presence_meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """The topic's ``presence.meta``: the meta every presence starts with, and the only keys a
    client may set (``do: presence``, a Supabase ``track``)."""
    history: HistorySpec | None = None
    """The topic's ``history:`` settings, when it keeps its broadcasts for recovery."""
    events_read_params: bool = False
    """Whether an event's ``allow`` or ``to`` reads ``params``: only then does a channel keep its join
    payload, which could otherwise pin up to ``server.max_join_payload`` of objects per channel."""
    realtime: bool = False
    """``realtime: true``: Supabase Realtime's clients (chanctl.server.realtime); every broadcast on
    the topic goes out in Supabase's ``broadcast`` envelope."""
    channel_class: type[DeclarativeChannel] | None = None
    """The declarative channel this topic runs (with ``realtime``, the Supabase adapter); None: plain."""
    limit_refusals: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    """Joins and messages of this topic refused by a limit of its rules, by the limit's name: the
    server's /metrics adds them to ``chanctl_limit_refusals_total`` (the decisions run here, not
    in the socket, so they are counted here)."""

    def __call__(self) -> Channel:
        if self.handler is None:
            return (self.channel_class or DeclarativeChannel)(self)
        channel = self.handler()
        channel.data = self.data
        return channel

    def variables(self, user: dict[str, Any], topic: str, captures: dict[str, str], params: Any, payload: Any = None) -> dict[str, Any]:
        """What a rule of this topic reads."""
        variables = {"user": user, "topic": {**captures, "name": topic}, "params": params, "data": self.data}
        if payload is not None:
            variables["payload"] = payload
        return variables

    def authorize_join(self, user: dict[str, Any], topic: str, captures: dict[str, str], params: Any) -> Outcome | None:
        """None when the join rule allows (or there is none), else the unauthorized reply."""
        rule = self.join_rule
        if rule is None or rule.constant is True:
            return None
        try:
            return None if rule.allows(self.variables(user, topic, captures, params)) else _UNAUTHORIZED
        except RuleInputTooLarge as exc:
            return _too_large(exc, self.limit_refusals)

    def check_event(self, event: str, payload: Any, variables: Callable[[], dict[str, Any]]) -> EventCheck:
        """Whether a client event may go on to its ``do``, in ``handle_in``'s order: declared, then
        its schema, then its ``allow`` rule (on ``variables()``, built only when a rule reads them)."""
        spec = self.events.get(event)
        if spec is None:
            return EventCheck(error({"reason": "unknown event", "event": event}), "events")
        if spec.validator is not None:
            errors = schema_errors(spec.validator, payload)
            if errors is not None:
                return EventCheck(error({"errors": errors}), "schema", spec)
        if spec.allow.constant is not True:
            try:
                allowed = spec.allow.allows(variables())
            except RuleInputTooLarge as exc:
                return EventCheck(_too_large(exc, self.limit_refusals), "allow", spec)
            if not allowed:
                return EventCheck(_UNAUTHORIZED, "allow", spec)
        return spec.passed
