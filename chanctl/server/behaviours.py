"""The declarative behaviours of the YAML: one :class:`~chanctl.channel.Channel` built from config.

Everything a topic declares is compiled once at load (join rule, payload validators), so that the
per-message path is a dict lookup, a validation and one fan-out.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonschema

from chanctl.channel import Channel, Outcome, error, ok
from chanctl.config.load import JOIN_VARIABLES, expand_schema
from chanctl.config.model import EventConfig, TopicConfig
from chanctl.rules import Rule, compile_rule

__all__ = ["CompiledEvent", "DeclarativeChannel", "compile_topic", "schema_errors"]

_UNAUTHORIZED = error({"reason": "unauthorized"})
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
        errors.setdefault(_error_field(err), []).append(_error_text(err))
    return errors


@dataclass(frozen=True)
class CompiledEvent:
    """One declared event, ready for the hot path."""

    config: EventConfig
    validator: jsonschema.protocols.Validator | None

    @classmethod
    def compile(cls, config: EventConfig) -> "CompiledEvent":
        validator = None
        if config.schema_ is not None:
            validator = jsonschema.Draft202012Validator(expand_schema(config.schema_))
        return cls(config, validator)


class DeclarativeChannel(Channel):
    """A channel whose join rule and events come from a topic's YAML."""

    def __init__(self, join_rule: Rule, events: dict[str, CompiledEvent], data: dict[str, Any]):
        self._join_rule = join_rule
        self._events = events
        self._data = data

    async def join(self, params: Any) -> Outcome | None:
        topic = {**self.captures, "name": self.topic}
        variables = {"user": self.user, "topic": topic, "params": params, "data": self._data}
        return None if self._join_rule.allows(variables) else _UNAUTHORIZED

    async def handle_in(self, event: str, payload: Any) -> Outcome | None:
        spec = self._events.get(event)
        if spec is None:
            return error({"reason": "unknown event", "event": event})
        if spec.validator is not None:
            errors = schema_errors(spec.validator, payload)
            if errors is not None:
                return error({"errors": errors})
        do = spec.config.do
        if do == "broadcast":
            body = dict(payload) if isinstance(payload, dict) else {"payload": payload}
            body["user_id"] = self.user.get("id")
            body["id"] = _message_id()
            body["inserted_at"] = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            self.broadcast(event, body)
            return ok()
        if do == "reply":
            return ok(payload if spec.config.reply is None else spec.config.reply)
        return ok()


def compile_topic(config: TopicConfig, data: dict[str, Any]) -> Callable[[], Channel]:
    """A factory of channels for one topic pattern, with its rules compiled now."""
    join_rule = compile_rule(config.join, JOIN_VARIABLES)
    events = {name: CompiledEvent.compile(event) for name, event in config.events.items()}
    return lambda: DeclarativeChannel(join_rule, events, data)
