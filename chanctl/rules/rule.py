"""A rule as the config writes it (true, false, user ids, CEL), compiled once, and how it decides.

:func:`compile_rule` and :func:`compile_expression` check an expression at load (the library parses
it, :mod:`chanctl.rules.syntax` finds unknown variables and captures and results that cannot be
boolean); :class:`Expression` evaluates through the compiled Python function when there is one and
the library otherwise; :class:`Rule` turns any failure into a logged denial.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from chanctl.throttle import LogThrottle
from chanctl.errors import RuleError, RuleInputTooLarge
from chanctl.rules import compiled, syntax
from chanctl.rules.prune import MAX_LIBRARY_INPUT, Pruner, bound_library_input, flatten
from chanctl.escape import shown

__all__ = ["EVENT_VARIABLES", "JOIN_VARIABLES", "RULE_VARIABLES", "Expression", "Rule", "RuleError", "compile_expression", "compile_rule"]

log = logging.getLogger("chanctl.rules")
log.addFilter(LogThrottle())  # lines a client's messages cause: bounded per kind (chanctl.throttle)

RULE_VARIABLES = frozenset({"user", "topic", "params", "payload", "data"})
JOIN_VARIABLES = frozenset({"user", "topic", "params", "data"})
"""What a join rule may read: there is no event payload yet."""
EVENT_VARIABLES = RULE_VARIABLES
"""What an event's ``allow`` rule and a ``push_to`` expression may read."""


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression with its syntax tree (None where the tree parser falls short)."""

    source: str
    program: Any
    tree: syntax.Node | None
    prune: Any = None
    """Cuts the variables down to what the expression reads (see :class:`~chanctl.rules.prune.Pruner`); None: all."""
    fast: compiled.Compiled | None = None
    """The expression as a Python function, when it is within the compiled subset of CEL."""
    max_input: int = MAX_LIBRARY_INPUT
    """Values of client input the library may read (``server.max_library_input``)."""

    def evaluate(self, variables: dict[str, Any]) -> Any:
        """The value; raises whatever the CEL runtime raises (KeyError, TypeError, RuntimeError...).

        The Python function answers when it is sure of the library's answer; otherwise (an error, or a
        case they leave to it) the library evaluates, and says what went wrong.

        Raises:
            RuleInputTooLarge: the library would read more client input than
                :attr:`max_input` values (it is not run).
        """
        if self.fast is not None:
            try:
                return self.fast(variables)
            except compiled.Unknown:
                pass
        if self.prune is None:
            handed = variables
            bound_library_input(handed, (), self.max_input)
        else:
            handed = self.prune(variables)
            bound_library_input(handed, self.prune.flats, self.max_input)
        try:
            return self.program.execute(handed)
        except RuntimeError as exc:  # "Undefined variable": name the path as the rule writes it
            written = str(exc) if self.prune is None else self.prune.written(str(exc))
            if written == str(exc):
                raise
            raise RuntimeError(written) from None


CACHE_SIZE = 4096
"""Decisions a rule remembers; when full, the oldest goes first."""


@dataclass(frozen=True)
class Rule:
    """A compiled rule; ``allows`` raises nothing but :class:`~chanctl.errors.RuleInputTooLarge`.

    A rule the ``cel`` library evaluates remembers its decisions, keyed by the parts of ``user``,
    ``topic`` and ``params`` it reads: ``data`` is static, so those parts decide the result. The
    library costs about 17 µs an evaluation, a remembered decision under 1 µs (a whole join is about
    19 µs of server CPU). A compiled rule (:mod:`chanctl.rules.compiled`) costs 1-2 µs, which
    remembering would not save: its key and upkeep cost as much. Rules that read ``payload``,
    failures (each one is logged) and decisions over inputs larger than
    :data:`~chanctl.rules.prune.KEY_BUDGET` are not remembered: at most ``CACHE_SIZE`` small keys.
    """

    source: str
    expression: Expression | None = None
    constant: bool | None = None
    user_ids: frozenset[str] | None = None
    _decisions: OrderedDict[Any, bool] = field(default_factory=OrderedDict, compare=False, repr=False)

    def allows(self, variables: dict[str, Any]) -> bool:
        """Whether the rule allows; a failure is a logged denial.

        Raises:
            RuleInputTooLarge: see :meth:`Expression.evaluate`; the caller's refusal names the limit.
        """
        return self.decide(variables)[0]

    def decide(self, variables: dict[str, Any]) -> tuple[bool, str]:
        """``(allowed, why)``: why is empty when the rule gave a boolean, else the failure logged.

        Raises:
            RuleInputTooLarge: as :meth:`allows`.
        """
        if self.constant is not None:
            return self.constant, ""
        if self.user_ids is not None:
            return str(variables["user"].get("id")) in self.user_ids, ""
        expression = self.expression
        assert expression is not None
        key = None
        if expression.fast is None and expression.prune is not None and expression.prune.cacheable:
            key = expression.prune.key(variables)  # None: inputs too large to remember
            known = None if key is None else self._decisions.get(key)
            if known is not None:
                return known, ""
        try:
            result = expression.evaluate(variables)
        except RuleInputTooLarge:
            raise  # not a decision: the caller refuses the message, naming the limit
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
        log.info("rule %r denied: %s", self.source, shown(why), extra={"throttle": self.source})
        return False, why


def compile_rule(
    rule: bool | list[Any] | str,
    allowed: frozenset[str] = RULE_VARIABLES,
    captures: frozenset[str] | None = None,
    max_input: int = MAX_LIBRARY_INPUT,
) -> Rule:
    """Compile a rule as written in the config: true, false, a list of user ids, or CEL.

    Args:
        allowed: the variables the rule may read.
        captures: the topic pattern's capture names; when given, ``topic.<other>`` is an error.
        max_input: values of client input the CEL library may read (``server.max_library_input``).

    Raises:
        RuleError: the expression does not parse, names an unknown variable or capture, or cannot
            be true or false.
    """
    if isinstance(rule, bool):
        return Rule(str(rule).lower(), constant=rule)
    if isinstance(rule, list):
        return Rule(repr(rule), user_ids=frozenset(str(uid) for uid in rule))
    return Rule(rule, expression=compile_expression(rule, allowed, captures, "bool", max_input))


def compile_expression(
    source: str,
    allowed: frozenset[str] = RULE_VARIABLES,
    captures: frozenset[str] | None = None,
    kind: str = "bool",
    max_input: int = MAX_LIBRARY_INPUT,
) -> Expression:
    """Compile a CEL expression that must be able to yield ``kind`` (``bool`` or ``string``).

    Raises:
        RuleError: as :func:`compile_rule`.
    """
    try:
        program = syntax.cel_compile(source)
    except ValueError as exc:
        raise RuleError(*_parse_error(str(exc), source)) from None
    tree = syntax.parse(source)
    if tree is None:  # beyond our small parser: keep the library's (coarser) variable list
        unknown = sorted(set(program.variables()) - allowed)
        if unknown:
            raise RuleError(_unknown_variable(unknown[0], allowed), _column_of(source, unknown[0]))
        return Expression(source, program, None, max_input=max_input)
    for ident in syntax.free_variables(tree):
        if ident.value not in allowed:
            raise RuleError(_unknown_variable(str(ident.value), allowed), ident.start + 1)
    if captures is not None:
        known = captures | {"name"}
        for name, offset in syntax.selections(tree, "topic"):
            if name not in known:
                have = ", ".join(f"topic.{c}" for c in sorted(known))
                raise RuleError(f"the topic pattern has no capture {{{name}}}; this rule may read {have}", offset + 1)
    found = syntax.result_kind(tree)
    if found is not None and found != kind:
        what = "true or false" if kind == "bool" else f"a {kind}"
        raise RuleError(f"this expression gives a {found}, never {what}", tree.start + 1)
    run_source, flats = flatten(source, tree)
    run_tree = syntax.parse(run_source) if flats else tree
    if run_tree is None:  # never expected; evaluate the expression as written
        run_source, run_tree, flats = source, tree, []
    run_program = syntax.cel_compile(run_source) if flats else program
    fast = compiled.compile_tree(source, tree)
    return Expression(source, run_program, tree, Pruner(run_source, run_tree, tree, flats), fast, max_input)


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
