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

__all__ = ["RULE_VARIABLES", "Rule", "RuleError", "compile_rule"]

log = logging.getLogger("chanctl.rules")

RULE_VARIABLES = frozenset({"user", "topic", "params", "payload", "data"})


class RuleError(ValueError):
    """A rule that does not compile; ``column`` is 1-based within the expression when known."""

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.column = column


@dataclass(frozen=True)
class Rule:
    """A compiled rule; ``allows`` never raises."""

    source: str
    program: Any = None
    constant: bool | None = None
    user_ids: frozenset[str] | None = None

    def allows(self, variables: dict[str, Any]) -> bool:
        if self.constant is not None:
            return self.constant
        if self.user_ids is not None:
            return str(variables["user"].get("id")) in self.user_ids
        try:
            result = self.program.execute(variables)
        except Exception as exc:  # the CEL runtime raises KeyError, TypeError, RuntimeError...
            log.info("rule %r denied: %s: %s", self.source, type(exc).__name__, exc)
            return False
        if not isinstance(result, bool):
            log.info("rule %r denied: it gave %r, not true or false", self.source, result)
            return False
        return result


def compile_rule(rule: bool | list[Any] | str, allowed: frozenset[str] = RULE_VARIABLES) -> Rule:
    """Compile a rule as written in the config.

    Raises:
        RuleError: the expression does not parse or names a variable outside ``allowed``.
    """
    if isinstance(rule, bool):
        return Rule(str(rule).lower(), constant=rule)
    if isinstance(rule, list):
        return Rule(repr(rule), user_ids=frozenset(str(uid) for uid in rule))
    try:
        program = cel.compile(rule)
    except ValueError as exc:
        raise RuleError(*_parse_error(str(exc))) from None
    unknown = sorted(set(program.variables()) - allowed)
    if unknown:
        raise RuleError(
            f"unknown variable {unknown[0]!r}; a rule here may read {', '.join(sorted(allowed))}",
            _column_of(rule, unknown[0]),
        )
    return Rule(rule, program=program)


def _parse_error(text: str) -> tuple[str, int | None]:
    """The CEL parser's message and column, from ``ERROR: <input>:1:11: Syntax error: ...``."""
    marker = "<input>:"
    at = text.find(marker)
    if at < 0:
        return text, None
    rest = text[at + len(marker):]
    parts = rest.split(":", 2)
    try:
        column = int(parts[1])
    except (IndexError, ValueError):
        return text, None
    message = parts[2].split("\n", 1)[0].strip() if len(parts) > 2 else text
    return message, column


def _column_of(source: str, name: str) -> int | None:
    index = source.find(name)
    return index + 1 if index >= 0 else None
