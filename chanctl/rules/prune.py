"""What the ``cel`` library sees of the variables: only the parts a rule reads.

The library converts every variable it is handed into its own values on each evaluation, so a rule
over a large ``data`` would pay for all of it at every join. :class:`Pruner` hands it fresh small
maps holding exactly what the rule can read; :func:`flatten` gives each static path outside
``data`` (``user.id``) a variable of its own, since the library converts a scalar faster than the
map around it. Only the library path uses this: compiled rules (:mod:`chanctl.rules.compiled`)
read the variables as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from chanctl.errors import RuleInputTooLarge
from chanctl.rules import syntax

__all__ = ["CLIENT_INPUTS", "MAX_LIBRARY_INPUT", "Pruner", "bound_library_input", "flatten"]

_MISSING = object()


class Pruner:
    """Cuts the variables down to the parts an expression can read, before CEL sees them.

    The CEL library converts every variable into its own values on each evaluation, so a rule over
    ``data`` with 2,000 rooms cost 13 ms where the room it reads costs microseconds. From the syntax
    tree we know each path a rule may read (:func:`~chanctl.rules.syntax.accesses`); the dynamic keys
    (``data.rooms[topic.id]``, ``topic.id in data.rooms``) are computed here first, and CEL gets
    fresh small maps holding exactly those entries: a key that exists is copied, one that does not
    stays missing, so every lookup, ``in`` and ``has()`` answers as it would on the full value.
    """

    def __init__(self, source: str, tree: syntax.Node, key_tree: syntax.Node,
                 flats: list[tuple[str, str, tuple[str, ...]]]):
        """Args:
            source, tree: the expression CEL runs (with static paths flattened, see :func:`flatten`).
            key_tree: the expression as written, whose inputs key the remembered decisions.
            flats: ``(variable, root, names)``: bind ``variable`` to ``root.name1.name2...``.
        """
        self.flats = flats
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self.paths: list[tuple[str, list[tuple[str, Any]]]] = []
        for root, steps in syntax.accesses(tree):
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
        for root, steps in syntax.accesses(key_tree):
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

    def key(self, variables: dict[str, Any]) -> tuple[Any, ...] | None:
        """A hashable summary of every input the expression reads, for remembering its results;
        None when the inputs are larger than :data:`KEY_BUDGET` (they are not worth remembering, and
        a client could pin memory with them: 200 refused joins with 256 KiB ids pinned 50 MiB)."""
        values: list[Any] = []
        budget = [KEY_BUDGET]
        try:
            for root, names in self.inputs:
                value = variables.get(root, _MISSING)
                for name in names:
                    value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
                value = _freeze(value, budget) if isinstance(value, (dict, list)) else _spend(value, budget)
                values.append(value)
                values.append(type(value))  # CEL tells 1, 1.0 and true apart; Python's == does not
        except _TooBig:
            return None
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


def flatten(source: str, tree: syntax.Node) -> tuple[str, list[tuple[str, str, tuple[str, ...]]]]:
    """The expression with each static path outside ``data`` (``user.id``, ``topic.id``) replaced by
    a variable of its own, and those variables: CEL converts a scalar several times faster than a
    map around it. Paths inside ``has()`` stay, since ``has`` needs a field selection."""
    keep: list[tuple[int, int]] = [
        (arg.start, arg.end)
        for node, _ in syntax.walk(tree, frozenset())
        if node.kind == "call" and node.value == "has"
        for arg in node.children
    ]
    names: dict[tuple[str, tuple[str, ...]], str] = {}
    spans: list[tuple[int, int, str]] = []
    for path in syntax.paths(tree):
        fields: list[str] = []
        node = path
        while node.kind == "select":
            fields.append(str(node.value))
            node = node.children[0]
        if node.kind != "ident" or not fields or node.value == "data":
            continue
        if any(start <= path.start and path.end <= end for start, end in keep):
            continue
        if source[path.start : node.start].strip() not in ("", "."):
            continue  # (user).id: a parenthesized root stays as written
        key = (str(node.value), tuple(reversed(fields)))
        name = names.setdefault(key, f"{_FLAT_PREFIX}{len(names)}")
        spans.append((node.start, path.end, name))  # .user.id keeps its dot: the library reads it apart
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


def _key_getter(source: str, node: syntax.Node) -> Any:
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
    program = syntax.cel_compile(source[node.start : node.end])
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




MAX_LIBRARY_INPUT = 2048
"""The default of ``server.max_library_input``: the most client input a rule evaluated by the ``cel`` library may read, in values: one per
number, boolean, null, map entry or list item, and one per started KiB of a string (the library
converts a KiB of string about as fast as one map entry, some 2-4 µs). Past it the rule is not
evaluated (:class:`~chanctl.errors.RuleInputTooLarge`): so one message costs at most a few ms of
the event loop, where a 1 MiB payload of small objects cost 0.4 s. Checked on what the rule reads
(after :class:`Pruner`), and only on the library path: compiled rules read their values in place."""
CLIENT_INPUTS = frozenset({"payload", "params"})
"""The variables a client fills: an event's payload, a join's params (``user`` comes from a signed
token, ``topic`` has a name limit, ``data`` is the operator's)."""


def bound_library_input(variables: dict[str, Any], flats: Sequence[tuple[str, str, tuple[str, ...]]] = (),
                        limit: int = MAX_LIBRARY_INPUT) -> None:
    """Raise :class:`~chanctl.errors.RuleInputTooLarge` when the client inputs among ``variables``
    (as handed to the library: ``flats`` name the flattened variables and their roots) are larger
    than ``limit`` values (``server.max_library_input``). The walk stops once the budget is spent, so it costs at most
    that many steps whatever the input."""
    roots = {name: root for name, root, _ in flats} if flats else None
    left = limit
    for name, value in variables.items():
        root = roots.get(name, name) if roots else name
        if root in CLIENT_INPUTS:
            left = _count(value, left)
            if left < 0:
                raise RuleInputTooLarge(root, limit)


def _count(value: Any, left: int) -> int:
    """``left`` less one per value, map entry or list item in ``value`` and one per KiB of its
    strings; stops (returning less than 0) as soon as it is spent. Scalars are counted by their
    container, so only maps and lists are walked."""
    kind = value.__class__
    if kind is not dict and kind is not list:
        return left - 1 - (len(value) >> 10 if kind is str or kind is bytes else 0)
    left -= 1
    stack = [value]
    while stack:
        value = stack.pop()
        left -= len(value)
        if left < 0:
            return left
        if value.__class__ is dict:
            left -= sum(map(len, value)) >> 10  # JSON keys are strings
            value = value.values()
        for child in value:
            kind = child.__class__
            if kind is dict or kind is list:
                stack.append(child)
            elif kind is str or kind is bytes:
                left -= len(child) >> 10
    return left


KEY_BUDGET = 1024
"""How big the inputs of a remembered decision may be: characters of strings plus one per other
value, map entry or list item. The walk stops as soon as it is spent."""


class _TooBig(Exception):
    pass


def _spend(value: Any, budget: list[int]) -> Any:
    budget[0] -= len(value) if isinstance(value, (str, bytes)) else 1
    if budget[0] < 0:
        raise _TooBig
    return value


def _freeze(value: Any, budget: list[int]) -> Any:
    """A hashable snapshot of a map or list that tells ``1``, ``1.0`` and ``true`` apart, as CEL does.

    Raises:
        _TooBig: the value is larger than what is left of ``budget``.
    """
    _spend(value if isinstance(value, (str, bytes)) else None, budget)
    if isinstance(value, dict):
        return ("map", tuple(sorted(((_freeze(k, budget), _freeze(v, budget)) for k, v in value.items()), key=repr)))
    if isinstance(value, list):
        return ("list", tuple(_freeze(v, budget) for v in value))
    return (type(value), value)
