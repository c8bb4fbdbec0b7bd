"""Authorization rules: ``true``, ``false``, a list of user ids, or a CEL expression.

CEL (Common Expression Language) is compiled once at load by the ``common-expression-language``
package (Rust core, about 11 µs per evaluation here), so a typo is a load error, not a surprise
at the first join. At run time a rule that fails (a missing key, a type mismatch) denies and logs
why; it never crashes a channel.

Variables a rule may read: ``user`` (token claims; ``user.id`` is always set), ``topic`` (the
pattern's captures plus ``topic.name``), ``params`` (the join payload), ``payload`` (an event's
payload) and ``data`` (the config's static data).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cel

from chanctl import rules_syntax

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


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression with its syntax tree (None where the tree parser falls short)."""

    source: str
    program: Any
    tree: rules_syntax.Node | None

    def evaluate(self, variables: dict[str, Any]) -> Any:
        """The value; raises whatever the CEL runtime raises (KeyError, TypeError, RuntimeError...)."""
        return self.program.execute(variables)


@dataclass(frozen=True)
class Rule:
    """A compiled rule; ``allows`` never raises."""

    source: str
    expression: Expression | None = None
    constant: bool | None = None
    user_ids: frozenset[str] | None = None

    def allows(self, variables: dict[str, Any]) -> bool:
        return self.decide(variables)[0]

    def decide(self, variables: dict[str, Any]) -> tuple[bool, str]:
        """``(allowed, why)``: why is empty when the rule gave a boolean, else the failure logged."""
        if self.constant is not None:
            return self.constant, ""
        if self.user_ids is not None:
            return str(variables["user"].get("id")) in self.user_ids, ""
        assert self.expression is not None
        try:
            result = self.expression.program.execute(variables)
        except Exception as exc:  # the CEL runtime raises KeyError, TypeError, RuntimeError...
            why = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(result, bool):
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
        program = cel.compile(source)
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
    return Expression(source, program, tree)


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
