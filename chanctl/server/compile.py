"""The one compile step: a loaded config → everything the server runs, or every located problem.

:func:`compile_config` compiles each topic's join rule, event schemas, ``allow`` rules and
``push_to`` expressions, its presence key, and imports its handler class (with the config's
directory on ``sys.path``). ``chanctl serve``, ``chanctl check`` (and ``--explain``, and the
config's policy tests), :mod:`chanctl.testing` and the presence tracker all use its result, so
``check`` refuses exactly what ``serve`` would, and nothing is compiled twice. Loading
(:mod:`chanctl.config.load`) only reads and validates the file; it runs no user code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from dataclasses import dataclass
from typing import Any

import jsonschema

from chanctl.config.load import LoadedConfig, Loc, expand_schema, load_config, load_config_text
from chanctl.config.model import PRESENCE_KEY_VARIABLES, Config, PresenceConfig, TopicConfig
from chanctl.errors import ConfigError, HandlerError, Problem, RuleError
from chanctl.handlers import import_handler
from chanctl.presence.tracker import PresenceSpec
from chanctl.protocol.router import Router, TopicPattern
from chanctl.rules import EVENT_VARIABLES, JOIN_VARIABLES, compile_expression, compile_rule
from chanctl.pubsub.history import HistorySpec
from chanctl.server.behaviours import CompiledEvent, CompiledTopic
from chanctl.server.realtime import RealtimeChannel

__all__ = ["CompiledConfig", "compile_config", "compile_file", "compile_text"]

_PARAMS = re.compile(r"\bparams\b")
"""An event rule that names ``params`` may read the join params (a string literal that says it only
makes the channel keep them)."""


@dataclass(frozen=True)
class CompiledConfig:
    """A config with every rule compiled and every handler imported: what a server runs."""

    loaded: LoadedConfig
    topics: dict[str, CompiledTopic]
    """By topic pattern, in the config's order."""
    presence: dict[str, PresenceSpec]
    """By topic pattern, the topics with ``presence:`` (tracked on join)."""
    manual_presence: PresenceSpec
    """The defaults for presences a handler tracks on a topic without ``presence:``."""

    @property
    def config(self) -> Config:
        return self.loaded.config

    @property
    def path(self) -> str:
        return self.loaded.path

    @property
    def warnings(self) -> list[Problem]:
        return self.loaded.warnings

    def router(self) -> Router[CompiledTopic]:
        """A new router of the compiled topics (most specific pattern first)."""
        router: Router[CompiledTopic] = Router()
        for pattern, topic in self.topics.items():
            router.add(pattern, topic)
        return router


def compile_config(loaded: LoadedConfig) -> CompiledConfig:
    """Compile ``loaded``.

    Raises:
        ConfigError: every problem found (rules, schemas, expressions, handlers), each located in
            the file, with the loader's warnings.
    """
    compiler = _Compiler(loaded)
    config = loaded.config
    topics = {pattern: compiler.topic(pattern, topic) for pattern, topic in config.topics.items()}
    presence = {
        pattern: spec for pattern, topic in config.topics.items()
        if topic.presence is not None
        and (spec := compiler.presence(("topics", pattern, "presence"), topic.presence, track_on_join=not topic.realtime)) is not None
    }
    manual = compiler.presence(("topics",), PresenceConfig(), auto=False)
    if compiler.problems:
        problems = loaded.warnings + compiler.problems
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    assert manual is not None
    return CompiledConfig(loaded, topics, presence, manual)


def compile_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> CompiledConfig:
    """Load and compile a config file: what ``chanctl serve`` runs and ``chanctl check`` checks.

    Raises:
        ConfigError: every problem of the file at once: when it does not load, the topics that did
            are compiled too, so a bad rule shows up in the same run as a misspelled key.
    """
    return _compiled(lambda: load_config(path, env))


def compile_text(text: str, file: str = "<string>", env: Mapping[str, str] | None = None) -> CompiledConfig:
    """:func:`compile_file` for config text; ``file`` only names positions."""
    return _compiled(lambda: load_config_text(text, file, env))


def _compiled(load: Any) -> CompiledConfig:
    try:
        return compile_config(load())
    except ConfigError as exc:
        if exc.partial is None:
            raise
        try:
            compile_config(exc.partial)
        except ConfigError as more:
            seen = set(exc.problems)
            merged = exc.problems + [p for p in more.problems if p not in seen]
            raise ConfigError(sorted(merged, key=lambda p: (p.line or 0, p.column or 0))) from None
        raise


class _Compiler:
    """Compiles piece by piece, so that one bad rule does not hide the next."""

    def __init__(self, loaded: LoadedConfig):
        self.loaded = loaded
        self.problems: list[Problem] = []
        self.max_input = loaded.config.server.max_library_input
        """``server.max_library_input``: what every rule of the config may hand the CEL library."""

    def problem(self, loc: Loc, message: str, column: int | None = None) -> None:
        self.problems.append(self.loaded.locate(loc, message, column=column))

    def topic(self, pattern: str, config: TopicConfig) -> CompiledTopic:
        loc: Loc = ("topics", pattern)
        captures = frozenset(TopicPattern.parse(pattern).captures)  # the loader checked the pattern
        join_rule = None
        if config.join is not None:
            try:
                join_rule = compile_rule(config.join, JOIN_VARIABLES, captures, self.max_input)
            except RuleError as exc:
                self.problem(loc + ("join",), f"bad join rule: {exc.message}", exc.column)
        events = {}
        for name, event in config.events.items():
            compiled = self.event(loc + ("events", name), event, captures)
            if compiled is not None:
                events[name] = compiled
        handler = None
        if config.handler is not None:
            try:
                handler = import_handler(config.handler, self.loaded.base_dir)
            except HandlerError as exc:
                self.problem(loc + ("handler",), f"bad handler: {exc.message}", exc.column)
        meta = MappingProxyType(dict(config.presence.meta)) if config.presence is not None else MappingProxyType({})
        history = None if config.history is None else HistorySpec(config.history.size, config.history.ttl)
        sources = [source for event in config.events.values() for source in (event.allow, event.to) if isinstance(source, str)]
        reads_params = any(_PARAMS.search(source) for source in sources)
        return CompiledTopic(
            pattern, join_rule, events, self.loaded.config.data, handler, meta, history, reads_params,
            realtime=config.realtime, channel_class=RealtimeChannel if config.realtime else None,
        )

    def event(self, loc: Loc, config: Any, captures: frozenset[str]) -> CompiledEvent | None:
        problems = len(self.problems)
        validator = None
        if config.schema_ is not None:
            schema = expand_schema(config.schema_)
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                self.problem(loc + ("schema",) + tuple(str(p) for p in exc.path), f"invalid JSON Schema: {exc.message}")
            else:
                validator = jsonschema.Draft202012Validator(schema)
        allow = to = None
        try:
            allow = compile_rule(config.allow, EVENT_VARIABLES, captures, self.max_input)
        except RuleError as exc:
            self.problem(loc + ("allow",), f"bad allow rule: {exc.message}", exc.column)
        if config.to is not None:
            try:
                to = compile_expression(config.to, EVENT_VARIABLES, captures, "string", self.max_input)
            except RuleError as exc:
                self.problem(loc + ("to",), f"bad push_to expression: {exc.message}", exc.column)
        if len(self.problems) > problems or allow is None:
            return None
        return CompiledEvent(config, validator, allow, to)

    def presence(self, loc: Loc, config: PresenceConfig, auto: bool = True, track_on_join: bool = True) -> PresenceSpec | None:
        try:
            key = compile_expression(config.key, PRESENCE_KEY_VARIABLES, None, "string")
        except RuleError as exc:
            self.problem(loc + ("key",), f"bad presence key expression: {exc.message}", exc.column)
            return None
        return PresenceSpec(config, auto, key, track_on_join)
