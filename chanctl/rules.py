"""Authorization rules: ``true``, ``false``, a list of user ids, or a CEL expression.

CEL (Common Expression Language) is compiled once at load by the ``common-expression-language``
package (Rust core), so a typo is a load error, not a surprise at the first join; the checks the
library lacks (unknown captures, rules that cannot be boolean) run on :mod:`chanctl.rules_syntax`'s
tree. At run time a rule that fails (a missing key, a type mismatch) denies and logs why; it never
crashes a channel. Rules in the common subset of CEL run as generated Python functions
(:mod:`chanctl.rules_compile`), which leave every error and every doubtful case to the library; the
library sees only the parts of the variables a rule reads (:class:`_Pruner`). A rule also remembers
its recent decisions (:class:`Rule`).

Variables a rule may read: ``user`` (token claims; ``user.id`` is always set), ``topic`` (the
pattern's captures plus ``topic.name``), ``params`` (the join payload), ``payload`` (an event's
payload) and ``data`` (the config's static data).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


from chanctl import rules_compile, rules_syntax

__all__ = ["EVENT_VARIABLES", "JOIN_VARIABLES", "RULE_VARIABLES", "Expression", "Rule", "RuleError", "compile_expression", "compile_rule"]

log = logging.getLogger("chanctl.rules")

RULE_VARIABLES = frozenset({"user", "topic", "params", "payload", "data"})
JOIN_VARIABLES = frozenset({"user", "topic", "params", "data"})
"""What a join rule may read: there is no event payload yet."""
EVENT_VARIABLES = RULE_VARIABLES
"""What an event's ``allow`` rule and a ``push_to`` expression may read."""


class RuleError(ValueError):
    """A rule that does not load; ``column`` is 1-based within the expression when known."""

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.column = column


_MISSING = object()


class _Pruner:
    """Cuts the variables down to the parts an expression can read, before CEL sees them.

    The CEL library converts every variable into its own values on each evaluation, so a rule over
    ``data`` with 2,000 rooms cost 13 ms where the room it reads costs microseconds. From the syntax
    tree we know each path a rule may read (:func:`~chanctl.rules_syntax.accesses`); the dynamic keys
    (``data.rooms[topic.id]``, ``topic.id in data.rooms``) are computed here first, and CEL gets
    fresh small maps holding exactly those entries: a key that exists is copied, one that does not
    stays missing, so every lookup, ``in`` and ``has()`` answers as it would on the full value.
    """

    def __init__(self, source: str, tree: rules_syntax.Node, key_tree: rules_syntax.Node,
                 flats: list[tuple[str, str, tuple[str, ...]]]):
        """Args:
            source, tree: the expression CEL runs (with static paths flattened, see :func:`_flatten`).
            key_tree: the expression as written, whose inputs key the remembered decisions.
            flats: ``(variable, root, names)``: bind ``variable`` to ``root.name1.name2...``.
        """
        self.flats = flats
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self.paths: list[tuple[str, list[tuple[str, Any]]]] = []
        for root, steps in rules_syntax.accesses(tree):
            spelled = tuple((kind, arg if kind == "key" else source[arg.start : arg.end]) for kind, arg in steps)  # type: ignore[union-attr]
            if (root, spelled) in seen:
                continue
            seen.add((root, spelled))
            self.paths.append((root, [(kind, arg if kind == "key" else _key_getter(source, arg)) for kind, arg in steps]))
        # Whole values last: a whole value replaces any partial copy made for the same place.
        self.paths.sort(key=lambda path: -len(path[1]))
        # What decides a result: every value read outside the static ``data`` (up to the first
        # computed key; from there on the whole value counts).
        inputs = set()
        for root, steps in rules_syntax.accesses(key_tree):
            if root == "data":
                continue
            static: list[str] = []
            for kind, arg in steps:
                if kind != "key":
                    break
                static.append(str(arg))
            inputs.add((root, tuple(static)))
        self.inputs = sorted(inputs)
        self.cacheable = all(root != "payload" for root, _ in self.inputs)
        """False for rules over an event payload: those inputs rarely repeat, and can be large."""

    def written(self, text: str) -> str:
        """``text`` with each flattened variable (``__chanctl_0``) put back as its path (``params.x``)."""
        paths = {name: ".".join((root, *names)) for name, root, names in self.flats}
        return _FLAT_NAME.sub(lambda match: paths.get(match.group(), match.group()), text)

    def key(self, variables: dict[str, Any]) -> tuple[Any, ...]:
        """A hashable summary of every input the expression reads, for remembering its results."""
        values: list[Any] = []
        for root, names in self.inputs:
            value = variables.get(root, _MISSING)
            for name in names:
                value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
            if isinstance(value, (dict, list)):
                value = _freeze(value)
            values.append(value)
            values.append(type(value))  # CEL tells 1, 1.0 and true apart; Python's == does not
        return tuple(values)

    def __call__(self, variables: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, root, names in self.flats:
            value = variables.get(root, _MISSING)
            for part in names:
                value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
            if value is not _MISSING:  # unbound, CEL reports the same error the missing key would
                out[name] = value
        scope = {**variables, **out} if out else variables  # computed keys may read the flat names
        for root, steps in self.paths:
            src = variables.get(root, _MISSING)
            if src is _MISSING:
                continue
            if not steps or not isinstance(src, dict):
                out[root] = src
                continue
            dst = out.get(root)
            if dst is src:
                continue
            if dst is None:
                dst = out[root] = {}
            last = len(steps) - 1
            for i, (kind, arg) in enumerate(steps):
                key = arg if kind == "key" else arg(scope)
                if kind == "in":  # `key in map` asks only whether the key is there
                    try:
                        if key in src and key not in dst:
                            dst[key] = None  # a longer or whole path puts the real value
                    except TypeError:
                        pass
                    break
                try:
                    value = src.get(key, _MISSING)
                except TypeError:  # an unhashable key: CEL will report it
                    break
                if value is _MISSING:
                    break
                if i == last or not isinstance(value, dict):
                    if i < last and steps[i + 1][0] == "in" and isinstance(value, list) and dst.get(key) is not value:
                        # `x in list` only asks whether x is there: keep the matches, not 10,000 ids.
                        # (Python's == says true == 1 where CEL does not: bools only match bools.)
                        dst[key] = dst.get(key, []) + _matches(value, steps[i + 1][1](scope))
                        break
                    dst[key] = value
                    break
                inner = dst.get(key)
                if inner is value:
                    break
                if inner is None:
                    inner = dst[key] = {}
                src, dst = value, inner
        return out


_FLAT_PREFIX = "__chanctl_"
_FLAT_NAME = re.compile(_FLAT_PREFIX + r"\d+")


def _flatten(source: str, tree: rules_syntax.Node) -> tuple[str, list[tuple[str, str, tuple[str, ...]]]]:
    """The expression with each static path outside ``data`` (``user.id``, ``topic.id``) replaced by
    a variable of its own, and those variables: CEL converts a scalar several times faster than a
    map around it. Paths inside ``has()`` stay, since ``has`` needs a field selection."""
    keep: list[tuple[int, int]] = [
        (arg.start, arg.end)
        for node, _ in rules_syntax._walk(tree, frozenset())
        if node.kind == "call" and node.value == "has"
        for arg in node.children
    ]
    names: dict[tuple[str, tuple[str, ...]], str] = {}
    spans: list[tuple[int, int, str]] = []
    for path in rules_syntax.paths(tree):
        fields: list[str] = []
        node = path
        while node.kind == "select":
            fields.append(str(node.value))
            node = node.children[0]
        if node.kind != "ident" or not fields or node.value == "data":
            continue
        if any(start <= path.start and path.end <= end for start, end in keep):
            continue
        key = (str(node.value), tuple(reversed(fields)))
        name = names.setdefault(key, f"{_FLAT_PREFIX}{len(names)}")
        spans.append((node.start, path.end, name))
    rewritten = source
    for start, end, name in sorted(spans, reverse=True):
        rewritten = rewritten[:start] + name + rewritten[end:]
    return rewritten, [(name, root, fields) for (root, fields), name in names.items()]


def _matches(items: list[Any], needle: Any) -> list[Any]:
    """The items of ``items`` equal to ``needle`` as CEL sees it (``1 == 1.0``, but ``true != 1``)."""
    try:
        first = items.index(needle)  # C speed: a list of 10,000 ids is scanned in microseconds
    except (ValueError, TypeError):
        return []
    if isinstance(items[first], bool) is isinstance(needle, bool):
        return [items[first]]
    return [item for item in items if item == needle and isinstance(item, bool) is isinstance(needle, bool)]


def _key_getter(source: str, node: rules_syntax.Node) -> Any:
    """A function of the variables giving the key ``node`` computes (``topic.id``, ``"x"``, ...)."""
    names: list[str] = []
    walk = node
    while walk.kind == "select":
        names.append(str(walk.value))
        walk = walk.children[0]
    if walk.kind == "ident":  # a plain path: read it in Python, no CEL round trip
        root, names = str(walk.value), names[::-1]

        def read(variables: dict[str, Any]) -> Any:
            value = variables.get(root, _MISSING)
            for name in names:
                value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
            return value

        return read
    program = rules_syntax.cel_compile(source[node.start : node.end])
    if node.kind == "literal":
        constant = program.execute({})
        return lambda variables: constant
    names = program.variables()

    def evaluate(variables: dict[str, Any]) -> Any:
        try:
            return program.execute({name: variables[name] for name in names if name in variables})
        except Exception:  # the rule itself will fail on the same expression and say why
            return _MISSING

    return evaluate


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression with its syntax tree (None where the tree parser falls short)."""

    source: str
    program: Any
    tree: rules_syntax.Node | None
    prune: Any = None
    """Cuts the variables down to what the expression reads (see :class:`_Pruner`); None: all."""
    fast: rules_compile.Compiled | None = None
    """The expression as a Python function, when it is within the compiled subset of CEL."""

    def evaluate(self, variables: dict[str, Any]) -> Any:
        """The value; raises whatever the CEL runtime raises (KeyError, TypeError, RuntimeError...).

        The Python function answers when it is sure of the library's answer; otherwise (an error, or a
        case they leave to it) the library evaluates, and says what went wrong."""
        if self.fast is not None:
            try:
                return self.fast(variables)
            except rules_compile.Unknown:
                pass
        try:
            return self.program.execute(variables if self.prune is None else self.prune(variables))
        except RuntimeError as exc:  # "Undefined variable": name the path as the rule writes it
            if self.prune is None or _FLAT_NAME.search(str(exc)) is None:
                raise
            raise RuntimeError(self.prune.written(str(exc))) from None


CACHE_SIZE = 4096
"""Decisions a rule remembers; when full, the oldest goes first."""


def _freeze(value: Any) -> Any:
    """A hashable snapshot of a map or list that tells ``1``, ``1.0`` and ``true`` apart, as CEL does."""
    if isinstance(value, dict):
        return ("map", tuple(sorted(((_freeze(k), _freeze(v)) for k, v in value.items()), key=repr)))
    if isinstance(value, list):
        return ("list", tuple(_freeze(v) for v in value))
    return (type(value), value)


@dataclass(frozen=True)
class Rule:
    """A compiled rule; ``allows`` never raises.

    A rule the ``cel`` library evaluates remembers its decisions, keyed by the parts of ``user``,
    ``topic`` and ``params`` it reads: ``data`` is static, so those parts decide the result. The
    library costs about 17 µs an evaluation, a remembered decision under 1 µs (a whole join is about
    19 µs of server CPU). A compiled rule (:mod:`chanctl.rules_compile`) costs 1-2 µs, which
    remembering would not save: its key and upkeep cost as much. Rules that read ``payload`` and
    failures (each one is logged) are not remembered.
    """

    source: str
    expression: Expression | None = None
    constant: bool | None = None
    user_ids: frozenset[str] | None = None
    _decisions: OrderedDict[Any, bool] = field(default_factory=OrderedDict, compare=False, repr=False)

    def allows(self, variables: dict[str, Any]) -> bool:
        return self.decide(variables)[0]

    def decide(self, variables: dict[str, Any]) -> tuple[bool, str]:
        """``(allowed, why)``: why is empty when the rule gave a boolean, else the failure logged."""
        if self.constant is not None:
            return self.constant, ""
        if self.user_ids is not None:
            return str(variables["user"].get("id")) in self.user_ids, ""
        expression = self.expression
        assert expression is not None
        key = None
        if expression.fast is None and expression.prune is not None and expression.prune.cacheable:
            key = expression.prune.key(variables)
            known = self._decisions.get(key)
            if known is not None:
                return known, ""
        try:
            result = expression.evaluate(variables)
        except Exception as exc:  # the CEL runtime raises KeyError, TypeError, RuntimeError...
            why = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(result, bool):
                if key is not None:
                    if len(self._decisions) >= CACHE_SIZE:
                        self._decisions.popitem(last=False)  # O(1), where a dict's first key is not
                    self._decisions[key] = result
                return result, ""
            why = f"it gave {result!r}, not true or false"
        log.info("rule %r denied: %s", self.source, why)
        return False, why


def compile_rule(
    rule: bool | list[Any] | str,
    allowed: frozenset[str] = RULE_VARIABLES,
    captures: frozenset[str] | None = None,
) -> Rule:
    """Compile a rule as written in the config: true, false, a list of user ids, or CEL.

    Args:
        allowed: the variables the rule may read.
        captures: the topic pattern's capture names; when given, ``topic.<other>`` is an error.

    Raises:
        RuleError: the expression does not parse, names an unknown variable or capture, or cannot
            be true or false.
    """
    if isinstance(rule, bool):
        return Rule(str(rule).lower(), constant=rule)
    if isinstance(rule, list):
        return Rule(repr(rule), user_ids=frozenset(str(uid) for uid in rule))
    return Rule(rule, expression=compile_expression(rule, allowed, captures, "bool"))


def compile_expression(
    source: str,
    allowed: frozenset[str] = RULE_VARIABLES,
    captures: frozenset[str] | None = None,
    kind: str = "bool",
) -> Expression:
    """Compile a CEL expression that must be able to yield ``kind`` (``bool`` or ``string``).

    Raises:
        RuleError: as :func:`compile_rule`.
    """
    try:
        program = rules_syntax.cel_compile(source)
    except ValueError as exc:
        raise RuleError(*_parse_error(str(exc), source)) from None
    tree = rules_syntax.parse(source)
    if tree is None:  # beyond our small parser: keep the library's (coarser) variable list
        unknown = sorted(set(program.variables()) - allowed)
        if unknown:
            raise RuleError(_unknown_variable(unknown[0], allowed), _column_of(source, unknown[0]))
        return Expression(source, program, None)
    for ident in rules_syntax.free_variables(tree):
        if ident.value not in allowed:
            raise RuleError(_unknown_variable(str(ident.value), allowed), ident.start + 1)
    if captures is not None:
        known = captures | {"name"}
        for name, offset in rules_syntax.selections(tree, "topic"):
            if name not in known:
                have = ", ".join(f"topic.{c}" for c in sorted(known))
                raise RuleError(f"the topic pattern has no capture {{{name}}}; this rule may read {have}", offset + 1)
    found = rules_syntax.result_kind(tree)
    if found is not None and found != kind:
        what = "true or false" if kind == "bool" else f"a {kind}"
        raise RuleError(f"this expression gives a {found}, never {what}", tree.start + 1)
    run_source, flats = _flatten(source, tree)
    run_tree = rules_syntax.parse(run_source) if flats else tree
    if run_tree is None:  # never expected; evaluate the expression as written
        run_source, run_tree, flats = source, tree, []
    run_program = rules_syntax.cel_compile(run_source) if flats else program
    fast = rules_compile.compile_tree(source, tree)
    return Expression(source, run_program, tree, _Pruner(run_source, run_tree, tree, flats), fast)


def _unknown_variable(name: str, allowed: frozenset[str]) -> str:
    return f"unknown variable {name!r}; a rule here may read {', '.join(sorted(allowed))}"

def _parse_error(text: str, source: str) -> tuple[str, int | None]:
    """The CEL parser's message and 1-based column within ``source``, from
    ``ERROR: <input>:LINE:COL: Syntax error: ...`` (LINE matters in a multi-line rule)."""
    marker = "<input>:"
    at = text.find(marker)
    if at < 0:
        return text, None
    parts = text[at + len(marker):].split(":", 2)
    try:
        line, column = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return text, None
    message = parts[2].split("\n", 1)[0].strip() if len(parts) > 2 else text
    if "<EOF>" in message:
        message = "Syntax error: the expression ends too early"
    message = message.split(" expecting {", 1)[0]
    offset = sum(len(previous) + 1 for previous in source.split("\n")[: line - 1]) + column - 1
    return message, offset + 1


def _column_of(source: str, name: str) -> int | None:
    index = source.find(name)
    return index + 1 if index >= 0 else None
