"""YAML text → :class:`Config`, with every problem located at file:line:column and key path.

PyYAML's node tree keeps the position of every key and value; we build plain data from it while
recording those positions, interpolate ``${VAR}`` and ``${VAR:-default}``, let pydantic validate,
and map each validation error's location back to the YAML. ``check`` wants every problem at once,
so nothing stops at the first one.

Loading only reads: it imports no user code, edits no ``sys.path`` and compiles no rule. The one
compile step, :func:`chanctl.server.compile.compile_config`, does those, and locates its problems
through :meth:`LoadedConfig.locate`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ValidationError

from chanctl.config.model import Config, TopicConfig
from chanctl.durations import parse_duration
from chanctl.errors import ConfigError, Problem
from chanctl.protocol.messages import ADMIN_TOPIC
from chanctl.protocol.router import Router, TopicPattern

__all__ = ["LoadedConfig", "SAMPLE_SECRET", "load_config", "load_config_text"]

SAMPLE_SECRET = "dev-only-secret-change-me-0123456789abcdef"
"""The secret the sample configs fall back to; the server warns loudly when it is used."""
MIN_SECRET_BYTES = 32
MAX_VALUES = 100_000
"""How many values a config may hold once YAML aliases are expanded (a billion-laughs file would
otherwise take all memory); real configs hold a few hundred."""

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
Loc = tuple[str, ...]


@dataclass
class LoadedConfig:
    """A validated config and what was noticed on the way (warnings)."""

    config: Config
    path: str
    warnings: list[Problem] = field(default_factory=list)
    positions: _Reader | None = field(default=None, repr=False, compare=False)
    """Where each key sits in the file, for :meth:`locate`."""

    @property
    def base_dir(self) -> Path:
        return _base_dir(self.path)

    def locate(self, loc: Loc, message: str, hint: str = "", severity: str = "error", column: int | None = None) -> Problem:
        """A problem at key path ``loc`` (e.g. ``("topics", "room:{id}", "join")``) with its file
        position; ``column`` (1-based, within a string value) points inside the value."""
        if self.positions is None:
            return Problem(message, _dotted(loc), self.path, None, None, hint, severity)
        return self.positions.locate(loc, message, hint, severity, column)


def _base_dir(file: str) -> Path:
    """The directory relative paths in a config resolve against (cwd for a config given as text)."""
    return Path(file).resolve().parent if not file.startswith("<") else Path.cwd()


def _scalar(node: yaml.Node) -> Any:
    """A node's value as ``yaml.safe_load`` gives it, from the tag the composer already resolved.

    Serializing each node and loading it again cost about 90 µs a value: 9 s of CPU for the
    100,000 values an alias bomb reaches before it is refused.
    """
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


@dataclass
class _Reader:
    file: str
    env: Mapping[str, str]
    marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    scalars: dict[Loc, yaml.ScalarNode] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    values: int = 0

    def problem(self, loc: Loc, message: str, hint: str = "", severity: str = "error", column: int | None = None) -> None:
        """Record a problem at ``loc``; ``column`` (1-based, within the string value) points inside it."""
        path = _dotted(loc)
        if severity == "error" and any(p.path == path and p.severity == "error" for p in self.problems):
            return  # one error per key: a union type or an unset variable would otherwise echo
        self.problems.append(self.locate(loc, message, hint, severity, column))

    def locate(self, loc: Loc, message: str, hint: str = "", severity: str = "error", column: int | None = None) -> Problem:
        line, col = self.position(loc)
        excerpt = ""
        node = self.scalars.get(loc)
        if column is not None and node is not None:
            line, col, text = _position_in_scalar(node, column - 1)
            excerpt = f"{text}\n{' ' * (col - 1)}^"
        return Problem(message, _dotted(loc), self.file, line, col, hint, severity, excerpt)

    def position(self, loc: Loc) -> tuple[int | None, int | None]:
        for end in range(len(loc), -1, -1):
            mark = self.marks.get(tuple(loc[:end]))
            if mark is not None:
                return mark
        return None, None

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise ConfigError([Problem(_too_many("the config"), "", self.file, *self.position(loc))])
        self.marks[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(_scalar(key_node)) if key_node.tag != "tag:yaml.org,2002:str" else key_node.value
                child = loc + (key,)
                if key in result:
                    self.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                    self.problem(child, f"duplicate key {key!r}", "a later value would silently replace the first")
                    continue
                value = self.build(value_node, child)
                self.marks[child + ("<key>",)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = value
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, loc + (str(i),)) for i, item in enumerate(node.value)]
        self.scalars[loc] = node
        value = _scalar(node)
        if isinstance(value, str) and "$" in value:
            value = self.interpolate(value, loc)
        return value

    def interpolate(self, text: str, loc: Loc) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.problem(loc, f"environment variable {name} is not set", f"export {name}=..., or write ${{{name}:-default}}")
                    return ""
                return default
            return value

        return _VAR.sub(substitute, text)


def _position_in_scalar(node: yaml.ScalarNode, offset: int) -> tuple[int, int, str]:
    """File line, column and line text of character ``offset`` of a scalar's value.

    YAML folds and unindents multi-line scalars (``>-``, ``|``, plain or quoted over several lines),
    so the value's offsets are not the file's. We walk the source and the value together: a run of
    whitespace in the value matches a run of whitespace (line breaks, indentation) in the source;
    any other character skips ahead to its next occurrence (past quotes and block indicators).
    """
    buffer = node.start_mark.buffer.rstrip("\0")
    value = node.value
    pos = node.start_mark.index
    if node.style in ("|", ">"):
        pos = buffer.find("\n", pos) + 1 or len(buffer)  # content starts on the next line
    elif node.style in ("'", '"'):
        pos += 1
    end = max(node.end_mark.index, pos)
    for i, char in enumerate(value[: offset + 1]):
        if char.isspace():
            while i < offset and pos < end and buffer[pos].isspace():
                pos += 1
            continue
        found = buffer.find(char, pos, end)
        if found < 0:
            break
        pos = found if i == offset else found + 1
    line_start = buffer.rfind("\n", 0, pos) + 1
    line_end = buffer.find("\n", pos)
    text = buffer[line_start : line_end if line_end >= 0 else len(buffer)]
    return buffer.count("\n", 0, pos) + 1, pos - line_start + 1, text


def _dotted(loc: Loc) -> str:
    return ".".join(part for part in loc if part != "<key>")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and validate a config file.

    Raises:
        ConfigError: with every problem found, each located.
    """
    path = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(f"cannot read the config: {exc.strerror}", file=path)]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(f"the config {_not_utf8(exc)}", file=path)]) from None
    return load_config_text(text, path, env)


def load_config_text(text: str, file: str = "<string>", env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and validate config text; ``file`` is only used to name positions."""
    reader = _Reader(file, os.environ if env is None else env)
    try:
        if _too_deep(text):
            raise ConfigError([Problem(_TOO_DEEP, "", file, 1, 1)])
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(f"invalid YAML: {message}", "", file, line, col)]) from None
    except RecursionError:
        raise ConfigError([Problem(_TOO_DEEP, "", file, 1, 1)]) from None
    if node is None:
        raise ConfigError([Problem("the config is empty", "", file, 1, 1, "run `chanctl init` for a starter config")])
    try:
        data = reader.build(node, ())
    except RecursionError:
        raise ConfigError([Problem(_TOO_DEEP, "", file, 1, 1, _SELF_ALIAS)]) from None
    except yaml.MarkedYAMLError as exc:  # a tag the safe loader does not know, e.g. `!foo x`
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigError([Problem(f"invalid YAML: {exc.problem}", "", file, line, col,
                                   "chanctl reads plain YAML: no custom tags")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem("the config must be a mapping of keys (server, auth, topics, ...)", "", file, 1, 1)])
    config = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            _report(reader, data, error)
    _check_semantics(reader, data)
    if config is not None and config.data_file is not None:
        extra = _read_data_file(reader, config.data_file, _base_dir(file), config.data)
        if extra:
            config = config.model_copy(update={"data": {**config.data, **extra}})
    errors = [p for p in reader.problems if p.severity == "error"]
    if errors or config is None:
        raise ConfigError(sorted(reader.problems, key=_order), _partial(reader, data, file))
    return LoadedConfig(config, file, [p for p in reader.problems if p.severity != "error"], reader)


def _partial(reader: _Reader, data: dict[str, Any], file: str) -> LoadedConfig:
    """The topics that are valid on their own, for ``chanctl check`` to compile too, so that it
    reports a bad rule in the same run as a misspelled key elsewhere."""
    topics = {}
    raw = data.get("topics")
    for pattern, topic in (raw.items() if isinstance(raw, dict) else ()):
        try:
            TopicPattern.parse(pattern)
            topics[pattern] = TopicConfig.model_validate(topic)
        except (ValueError, ValidationError):  # already reported above
            continue
    facts = data.get("data")
    config = Config.model_construct(topics=topics, data=facts if isinstance(facts, dict) else {})
    return LoadedConfig(config, file, [], reader)


def _read_data_file(reader: _Reader, name: str, base_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The mapping in ``data_file`` (YAML, or JSON by its ``.json`` suffix), or {} after a problem."""
    path = base_dir / name
    loc = ("data_file",)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() != ".json" and _too_deep(text):
            raise RecursionError
        extra = orjson.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except OSError as exc:
        reader.problem(loc, f"cannot read {path}: {exc.strerror}")
        return {}
    except UnicodeDecodeError as exc:
        reader.problem(loc, f"{path} {_not_utf8(exc)}")
        return {}
    except RecursionError:
        reader.problem(loc, f"{path}: {_TOO_DEEP}")
        return {}
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        reader.problem(loc, f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}")
        return {}
    if _exceeds_max_values(extra):
        reader.problem(loc, _too_many(str(path)))
        return {}
    if not isinstance(extra, dict):
        reader.problem(loc, f"{path} must hold a mapping of keys, like `data:`")
        return {}
    both = sorted(set(map(str, extra)) & set(data))
    if both:
        reader.problem(loc, f"{path} repeats data key {both[0]!r}", "a key lives in `data:` or in the file, not both")
        return {}
    return {str(key): value for key, value in extra.items()}


MAX_DEPTH = 100
"""Levels of nesting a config or data file may have. PyYAML composes recursively, so a deeper file
(``[[[[...]]]]``) used to cost seconds of CPU before Python's recursion limit refused it."""


def _too_deep(text: str) -> bool:
    """Whether the YAML nests deeper than MAX_DEPTH, read from the parser's events (which PyYAML
    makes without recursion), stopping at the limit. A syntax error is left to the composer."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return True
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return False
    return False


def _too_many(what: str) -> str:
    return f"{what} holds more than {MAX_VALUES:,} values once its YAML aliases are expanded"


def _exceeds_max_values(value: Any) -> bool:
    """Whether ``value`` holds more than MAX_VALUES values, counting each alias use again (as every
    reader of the data will); stops counting at the limit, so a billion laughs costs no more."""
    stack, seen = [value], 0
    while stack:
        seen += 1
        if seen > MAX_VALUES:
            return True
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_TOO_DEEP = "the YAML is nested too deeply to read"
_SELF_ALIAS = "or an alias sits inside the node it names, as in `a: &x [*x]`"


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"


def _order(problem: Problem) -> tuple[int, int]:
    return (problem.line or 0, problem.column or 0)


def _report(reader: _Reader, data: dict[str, Any], error: Any) -> None:
    loc = tuple(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        key = loc[-1]
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (f"known keys: {', '.join(known)}" if known else "")
        reader.marks.setdefault(loc, reader.marks.get(loc + ("<key>",), reader.position(loc)))
        key_mark = reader.marks.get(loc + ("<key>",))
        if key_mark:
            reader.marks[loc] = key_mark
        reader.problem(loc, f"unknown key {key!r}", hint)
        return
    if kind == "missing":
        # Point at the key that lacks the field, not at its first child.
        key_mark = reader.marks.get(loc[:-1] + ("<key>",))
        if key_mark:
            reader.marks[loc] = key_mark
        reader.problem(loc, "is required", _missing_hint(loc))
        return
    # Unions (join: bool | list) add the tried type to the location; keep the user's part of it.
    loc = _user_loc(loc, data)
    reader.problem(loc, _message(error))


def _message(error: Any) -> str:
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    rule = next((part for part in error["loc"] if part in ("join", "allow")), None)
    if error["type"] in ("bool_type", "bool_parsing", "list_type", "string_type") and rule is not None:
        return f"a{'n' * (rule == 'allow')} {rule} rule is true, false, a list of user ids, or a CEL expression"
    return msg


def _user_loc(loc: Loc, data: Any) -> Loc:
    kept: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            continue
        kept.append(part)
    return tuple(kept)


def _missing_hint(loc: Loc) -> str:
    hints = {
        ("auth",): "every server needs auth.secret: write `auth: {secret: ${CHANCTL_SECRET}}`",
        ("auth", "secret"): "write `secret: ${CHANCTL_SECRET}` and export a secret of 32+ bytes",
        ("topics",): "declare at least one topic pattern, e.g. `topics: {\"room:{id}\": {join: true}}`",
    }
    if loc in hints:
        return hints[loc]
    if len(loc) == 3 and loc[0] == "topics" and loc[2] == "join":
        return "every topic states who may join; write `join: true` to mean any authenticated user"
    return ""


def _known_keys(loc: Loc) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            fieldinfo = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
            if fieldinfo is None:
                return []
            model = fieldinfo.annotation
        else:
            # dict[str, Model]: the key is a user's name; step into the value type.
            args = getattr(model, "__args__", ())
            model = args[-1] if args else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _check_semantics(reader: _Reader, data: dict[str, Any]) -> None:
    """Checks beyond types, run on the raw data so that they report even when types fail."""
    auth = data.get("auth")
    secret = auth.get("secret") if isinstance(auth, dict) else None
    if isinstance(secret, str) and secret:
        if secret == SAMPLE_SECRET:
            reader.problem(
                ("auth", "secret"),
                "the sample's default secret is in use: anyone can mint tokens for this server",
                "export CHANCTL_SECRET with 32+ random bytes, e.g. `openssl rand -hex 32`",
                "warning",
            )
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            reader.problem(
                ("auth", "secret"),
                f"the secret is {len(secret.encode())} bytes; use at least {MIN_SECRET_BYTES}",
                "e.g. `openssl rand -hex 32`",
                "warning",
            )
    if isinstance(auth, dict):
        _check_expiry(reader, auth)
    topics = data.get("topics")
    if not isinstance(topics, dict):
        return
    router: Router[None] = Router()
    for source, topic in topics.items():
        reader.marks[("topics", source)] = reader.marks.get(("topics", source, "<key>"), reader.position(("topics", source)))
        try:
            pattern = TopicPattern.parse(source)
        except ValueError as exc:
            reader.problem(("topics", source), f"bad topic pattern: {exc}")
        else:
            router.add(pattern, None)
            if source == ADMIN_TOPIC:
                reader.problem(("topics", source), f"{ADMIN_TOPIC} is reserved for the admin plane",
                               "admin tokens join it (`chanctl token --admin`); name your topic otherwise")
        if isinstance(topic, dict):
            _check_topic(reader, ("topics", source), topic)
    for earlier, later in router.shadowed():
        reader.problem(("topics", later.source), f"never used: every topic it matches goes to {earlier.source!r} first",
                       "patterns are tried most specific first; drop one or make them disjoint", "warning")
    tests = data.get("tests")
    for index, test in enumerate(tests if isinstance(tests, list) else ()):
        if isinstance(test, dict) and ("join" in test) == ("event" in test or "topic" in test):
            reader.problem(("tests", str(index)), "a policy test has `join: TOPIC`, or `topic:` and `event:`",
                           'e.g. {user: 99, join: "room:42", expect: deny}')
        elif isinstance(test, dict) and "join" not in test and ("topic" not in test or "event" not in test):
            reader.problem(("tests", str(index)), "an event test needs both `topic:` and `event:`")


def _seconds(value: Any, default: float) -> float:
    """A duration as the schema reads it (0 allowed); ValueError when the schema will refuse it."""
    if value is None:
        return default
    if not isinstance(value, bool) and str(value).strip() in ("0", "0.0", "0s", "0ms"):
        return 0.0
    return parse_duration(value)


def _check_expiry(reader: _Reader, auth: dict[str, Any]) -> None:
    """Expiry settings that load but cannot do what they say (chanctl.server.sessions)."""
    try:
        max_age = _seconds(auth.get("max_age"), 14 * 86400.0)
        warning = _seconds(auth.get("expiry_warning"), 60.0)
    except ValueError:
        return  # the schema reports the value itself
    if warning >= max_age:
        reader.problem(("auth", "expiry_warning"),
                       "is not shorter than auth.max_age: every socket would be warned as soon as it connects",
                       "make it a fraction of max_age (e.g. 1m), or 0 for no warning", "warning")


def _check_topic(reader: _Reader, loc: Loc, topic: dict[str, Any]) -> None:
    """What can be said without compiling: rules, schemas and handlers are compile_config's."""
    handler = topic.get("handler")
    if "join" not in topic and handler is None:
        reader.marks.setdefault(loc + ("join",), reader.marks.get(loc + ("<key>",), reader.position(loc)))
        reader.problem(loc + ("join",), "is required", _missing_hint(loc + ("join",)))
    if isinstance(handler, str):
        if topic.get("events"):
            reader.problem(loc + ("events",), "a topic with a handler handles its own events", "drop `events:` or `handler:`")
    events = topic.get("events")
    for name, event in (events.items() if isinstance(events, dict) else ()):
        if not isinstance(event, dict):
            continue
        where = loc + ("events", name)
        do, to = event.get("do", "reply"), event.get("to")
        if do == "push_to" and to is None:
            reader.problem(where + ("do",), "push_to needs `to:`, the destination topic", 'e.g. to: \'"notifications:user_" + string(payload.to)\'')
        elif to is not None and do != "push_to":
            reader.problem(where + ("to",), "`to:` is only read by `do: push_to`")
        if event.get("reply") is not None and do != "reply":
            reader.problem(where + ("reply",), "`reply:` is only read by `do: reply`")


def expand_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Expand the property-map shorthand: ``{body: {type: string}}`` → an object schema.

    A mapping that already looks like a schema (has ``type``, ``properties``, ``$ref``, ...) is
    returned as it is. In the shorthand every property is required and no other is allowed: a
    broadcast copies the payload to every member, so a ``body`` limited to 2,000 characters must not
    carry 900 KB beside it (issue 16). A full schema may say ``additionalProperties: true``.
    """
    schema_words = {"type", "properties", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "not", "$schema"}
    if schema_words & schema.keys():
        return schema
    return {"type": "object", "properties": schema, "required": list(schema), "additionalProperties": False}
