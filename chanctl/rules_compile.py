"""The CEL that authorization rules use, compiled into Python closures, with the library as referee.

Why: the ``cel`` library converts every variable it is handed into its own values on each
evaluation. For the chat sample's room rule that cost about 17 µs (pruning the variables, then
converting and running) against about 19 µs of server CPU for a whole ``join: true`` join, so every
new user's join cost twice as much as an open one. Rules are mostly paths, ``in``, comparisons and
``&&``/``||``, which Python answers in a couple of microseconds on the variables as they are.

The contract that keeps decisions unchanged: a compiled expression returns a value only when it is
the value the library gives on the same variables. Wherever the library fails (a missing key, a
type mismatch: the rule denies and the library's message is the one logged) or where the two might
differ (uint, NaN, integers beyond 64 bits or doubles compared with integers beyond 2**53, bytes,
strings of doubles, map keys that are not strings, Python types outside JSON's), it raises
:class:`Unknown` and the caller asks the library. ``tests/test_rules_compile.py`` checks the
contract against the library on random expressions and values. As with the library's pruned
evaluation (:class:`chanctl.rules._Pruner`), only the parts of the variables a rule reads count: a
value the library could not convert (a date in a YAML data file) matters only where it is read.

The subset: literals (no ``u`` or bytes), lists, variables, ``.field`` and ``[index]``, ``has()``,
``!``, ``&&``, ``||``, ``?:``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``+``,
``size``, ``string``, ``int``, ``startsWith``, ``endsWith`` and ``contains``. Anything else (macros,
map literals, optional selection, other functions) leaves the whole expression to the library.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from math import isnan
from typing import Any

import cel

from chanctl.rules_syntax import Node

__all__ = ["Compiled", "Unknown", "compile_tree"]

Compiled = Callable[[dict[str, Any]], Any]


class Unknown(Exception):
    """The fast path has no answer here (a CEL error, or a case it leaves to the library)."""


class _Outside(Exception):
    """The expression uses CEL beyond the compiled subset."""


_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_EXACT = 2**53
"""Integers up to this size compare with doubles the same way in Python (exactly) and in the
library (converted to double)."""
_DIGITS = re.compile(r"[+-]?[0-9]+")


def compile_tree(source: str, tree: Node) -> Compiled | None:
    """A function of the variables giving the expression's value or raising :class:`Unknown`;
    None when the expression uses CEL outside the subset."""
    compiler = _Compiler(source, tree)
    try:
        body = compiler.build(tree)
    except _Outside:
        return None
    cells = compiler.cells

    def run(variables: dict[str, Any]) -> Any:
        try:
            value = body(variables)
        finally:
            for cell in cells:  # the next evaluation computes shared paths afresh
                cell[0] = _UNSET
        kind = type(value)
        if kind is bool or kind is str or (kind is int and _INT_MIN <= value <= _INT_MAX):
            return value
        raise Unknown  # a list, a map, a double...: the library's own conversion says what it is

    return run


_UNSET, _FAILED = object(), object()


class _Compiler:
    """Builds the closures of one expression.

    A path with a computed key that the expression reads more than once (the chat rule reads
    ``data.rooms[topic.id]`` four times) is evaluated once per evaluation: its closure keeps the
    value in a cell that :func:`compile_tree`'s ``run`` clears after each evaluation. So an
    expression evaluates once at a time (chanctl evaluates rules on the event loop's thread).
    """

    def __init__(self, source: str, tree: Node):
        self.source = source
        self.cells: list[list[Any]] = []
        self.shared: dict[str, Compiled] = {}
        self.counts: dict[str, int] = {}
        nodes = [tree]
        while nodes:
            node = nodes.pop()
            nodes.extend(node.children)
            if node.kind == "index":
                text = self.text(node)
                self.counts[text] = self.counts.get(text, 0) + 1

    def text(self, node: Node) -> str:
        return self.source[node.start : node.end]  # as written: spaces inside a string count

    def build(self, node: Node) -> Compiled:
        kind = node.kind
        if kind == "literal":
            return _constant(self.literal(node))
        if kind in ("ident", "select", "index"):
            if not self.repeated(node):
                return self.chain(node)
            text = self.text(node)
            if text not in self.shared:
                self.shared[text] = self.memo(self.chain(node))
            return self.shared[text]
        if kind == "list":
            items = [self.build(child) for child in node.children]
            return lambda variables: [item(variables) for item in items]
        if kind == "unary" and node.value == "!":
            return _not(self.build(node.children[0]))
        if kind == "unary" and node.children[0].kind == "literal" and node.children[0].value == "number":
            value = -self.literal(node.children[0])  # -1, -1.5
            if type(value) is int and not _int(value):
                raise _Outside
            return _constant(value)
        if kind == "binary":
            op = node.value
            left, right = node.children
            if op == "&&":
                return _and(self.build(left), self.build(right))
            if op == "||":
                return _or(self.build(left), self.build(right))
            if op in _BINARY:
                return self.binary(_BINARY[op], left, right)
            raise _Outside
        if kind == "ternary":
            return _ternary(*(self.build(child) for child in node.children))
        if kind == "call":
            return self.call(node)
        raise _Outside

    def repeated(self, node: Node) -> bool:
        """Whether ``node`` is a path with a computed key (``data.rooms[topic.id]``) read more than once."""
        return node.kind == "index" and self.counts.get(self.text(node), 0) > 1 and not _is_string(node.children[1])

    def memo(self, compute: Compiled) -> Compiled:
        cell = [_UNSET]
        self.cells.append(cell)

        def shared(variables: dict[str, Any]) -> Any:
            value = cell[0]
            if value is _UNSET:
                try:
                    value = compute(variables)
                except Unknown:
                    value = _FAILED
                cell[0] = value
            if value is _FAILED:
                raise Unknown
            return value

        return shared

    def binary(self, op: Callable[[Any, Any], Any], left: Node, right: Node) -> Compiled:
        if right.kind == "literal":  # "public" in x, user.role == "admin": one closure call fewer
            constant = self.literal(right)
            operand = self.build(left)
            return lambda variables: op(operand(variables), constant)
        if left.kind == "literal":
            constant = self.literal(left)
            operand = self.build(right)
            if op is _in and type(constant) is str:
                return _has_key(constant, operand)
            return lambda variables: op(constant, operand(variables))
        first, second = self.build(left), self.build(right)
        return lambda variables: op(first(variables), second(variables))

    def chain(self, node: Node) -> Compiled:
        """A path (``data.rooms[topic.id].members``) as one closure rather than one per step: paths
        are most of what a rule reads. A step is a field name (``.members``, ``["members"]``) or a
        computed key."""
        source = self.source
        steps: list[str | Compiled] = []
        while node.kind in ("select", "index") and not (steps and self.repeated(node)):
            target = node.children[0]
            if node.kind == "select":
                if "?" in source[target.end : node.value_at]:  # x.?field: optional selection
                    raise _Outside
                steps.append(str(node.value))
            else:
                key = node.children[1]
                if "?" in source[target.end : key.start]:  # x[?key]
                    raise _Outside
                steps.append(self.literal(key) if _is_string(key) else self.build(key))
            node = target
        steps.reverse()
        if node.kind != "ident":
            return _walk(self.build(node), steps)
        if source[: node.start].rstrip().endswith("."):
            raise _Outside  # .user, the root scope spelled out: the library treats it apart in has()
        static = 0
        while static < min(len(steps), 2) and type(steps[static]) is str:
            static += 1
        base = _variable(str(node.value), steps[:static])  # type: ignore[arg-type]
        return _walk(base, steps[static:]) if steps[static:] else base

    def literal(self, node: Node) -> Any:
        """A literal's value as the library reads it (escapes, hex, exponents), at compile time."""
        if node.value == "bool":
            return self.source[node.start : node.end] == "true"
        if node.value == "null":
            return None
        text = self.source[node.start : node.end]
        if node.value not in ("number", "string") or text[-1] in "uU":
            raise _Outside  # bytes and uint: types that Python values do not carry
        try:
            return cel.compile(text).execute({})
        except ValueError:  # 9223372036854775808: valid only after a minus, which the library folds
            raise _Outside from None

    def call(self, node: Node) -> Compiled:
        name = str(node.value)
        method = node.value_at > node.start  # receiver.name(...): the receiver is the first child
        if not method and name == "has" and len(node.children) == 1 and node.children[0].kind == "select":
            selected = node.children[0]
            if "?" in self.source[selected.children[0].end : selected.value_at]:
                raise _Outside
            return _has(self.build(selected.children[0]), str(selected.value))
        function = (_METHODS if method else _FUNCTIONS).get(name)
        arity = 2 if method and name != "size" else 1
        if function is None or len(node.children) != arity:
            raise _Outside
        if arity == 2:
            return self.binary(function, *node.children)
        arg = self.build(node.children[0])
        return lambda variables: function(arg(variables))


def _is_string(node: Node) -> bool:
    return node.kind == "literal" and node.value == "string"


def _constant(value: Any) -> Compiled:
    return lambda variables: value


def _variable(root: str, names: list[str]) -> Compiled:
    """A variable and up to two fields (``user``, ``user.id``, ``data.rooms``)."""
    if not names:

        def variable(variables: dict[str, Any]) -> Any:
            try:
                return variables[root]
            except KeyError:
                raise Unknown from None

        return variable
    if len(names) == 1:
        (name,) = names

        def field(variables: dict[str, Any]) -> Any:
            try:
                value = variables[root]
                if type(value) is dict:
                    return value[name]
            except KeyError:
                pass
            raise Unknown

        return field
    first, second = names

    def fields(variables: dict[str, Any]) -> Any:
        try:
            value = variables[root]
            if type(value) is dict:
                value = value[first]
                if type(value) is dict:
                    return value[second]
        except KeyError:
            pass
        raise Unknown

    return fields


def _walk(base: Compiled, steps: list[str | Compiled]) -> Compiled:
    """The steps after ``base``: one closure for them all (one field or one key: no loop)."""
    if len(steps) == 1:
        (step,) = steps
        if type(step) is str:

            def field(variables: dict[str, Any]) -> Any:  # data.rooms[topic.id].members
                value = base(variables)
                if type(value) is dict and step in value:
                    return value[step]
                raise Unknown

            return field
        return lambda variables: _item(base(variables), step(variables))  # type: ignore[operator]
    plan = tuple((type(step) is str, step) for step in steps)

    def walk(variables: dict[str, Any]) -> Any:
        value = base(variables)
        for static, step in plan:
            if static:
                if type(value) is not dict or step not in value:
                    raise Unknown  # no such key, or a field of a list, string, number or null
                value = value[step]
            else:
                value = _item(value, step(variables))  # type: ignore[operator]
        return value

    return walk


def _item(container: Any, key: Any) -> Any:
    """``container[key]``: a map's string key or a list's position; the rest to the library."""
    kind = type(container)
    if kind is dict:
        if type(key) is str and key in container:
            return container[key]
    elif kind is list and type(key) is int and 0 <= key < len(container):
        return container[key]
    raise Unknown


def _not(operand: Compiled) -> Compiled:
    def negate(variables: dict[str, Any]) -> bool:
        value = operand(variables)
        if value is True:
            return False
        if value is False:
            return True
        raise Unknown

    return negate


def _and(left: Compiled, right: Compiled) -> Compiled:
    """CEL's ``&&`` is commutative over errors: ``false`` on either side wins, whatever the other."""

    def both(variables: dict[str, Any]) -> bool:
        try:
            a = left(variables)
        except Unknown:
            a = None
        if a is False:
            return False
        b = right(variables)
        if b is False:
            return False
        if a is True and b is True:
            return True
        raise Unknown

    return both


def _or(left: Compiled, right: Compiled) -> Compiled:
    """``true`` on either side of ``||`` wins, whatever the other (as :func:`_and`)."""

    def either(variables: dict[str, Any]) -> bool:
        try:
            a = left(variables)
        except Unknown:
            a = None
        if a is True:
            return True
        b = right(variables)
        if b is True:
            return True
        if a is False and b is False:
            return False
        raise Unknown

    return either


def _ternary(condition: Compiled, then: Compiled, other: Compiled) -> Compiled:
    def choose(variables: dict[str, Any]) -> Any:
        chosen = condition(variables)
        if chosen is True:
            return then(variables)
        if chosen is False:
            return other(variables)
        raise Unknown

    return choose


def _int(value: Any) -> bool:
    """An integer the library holds as a CEL int (not a bool, not beyond 64 bits)."""
    return type(value) is int and _INT_MIN <= value <= _INT_MAX


def _equal(a: Any, b: Any) -> bool:
    """CEL's ``==``: numbers by value across int and double, other types never equal each other."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is str or ta is bool or ta is float or a is None:
            return a == b  # NaN is unequal to itself, in Python's float == as in CEL
        if ta is int:
            if _int(a) and _int(b):
                return a == b
        elif ta is list:
            return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
        elif ta is dict:
            if not all(type(key) is str for key in (*a, *b)):
                raise Unknown  # other keys: the library compares them its own way
            return len(a) == len(b) and all(key in b and _equal(value, b[key]) for key, value in a.items())
        raise Unknown
    if ta is int and tb is float:
        return _equal_number(a, b)
    if ta is float and tb is int:
        return _equal_number(b, a)
    if ta in _PLAIN and tb in _PLAIN:
        return False  # a string and a number, a bool and an int (true != 1), a list and null...
    raise Unknown


def _equal_number(i: int, f: float) -> bool:
    if -_EXACT <= i <= _EXACT:
        return i == f
    raise Unknown


_PLAIN = frozenset({str, bool, int, float, type(None), list, dict})
"""The Python types JSON gives, which the library converts one to one."""


def _not_equal(a: Any, b: Any) -> bool:
    return not _equal(a, b)


def _ordered(a: Any, b: Any) -> None:
    """Raise :class:`Unknown` unless Python orders ``a`` and ``b`` as the library does."""
    ta, tb = type(a), type(b)
    if ta is tb and (ta is str or ta is bool):
        return  # code point order is UTF-8 byte order
    if ta is int and tb is int and _int(a) and _int(b):
        return
    if ta is float and tb is float and not (isnan(a) or isnan(b)):  # NaN: the library fails
        return
    if ta is int and tb is float and -_EXACT <= a <= _EXACT and not isnan(b):
        return
    if ta is float and tb is int and -_EXACT <= b <= _EXACT and not isnan(a):
        return
    raise Unknown


def _less(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a < b


def _less_equal(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a <= b


def _greater(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a > b


def _greater_equal(a: Any, b: Any) -> bool:
    _ordered(a, b)
    return a >= b


def _in(needle: Any, haystack: Any) -> bool:
    """``needle in list`` (CEL equality) or ``key in map``."""
    kind, tn = type(haystack), type(needle)
    if kind is dict:
        if tn is str:
            return needle in haystack
        if _int(needle) and needle not in haystack:
            return False  # present, it may be a bool or an int key: the library decides
        raise Unknown
    if kind is not list:
        raise Unknown
    if tn is str:
        return needle in haystack  # a string equals only a string, in Python as in CEL
    if tn is bool or needle is None:
        same: tuple[type, ...] = (tn,)
    elif (tn is int and -_EXACT <= needle <= _EXACT) or (tn is float and -_EXACT < needle < _EXACT):
        same = (int, float)  # exact in both; Python's True == 1 is ruled out below
    else:
        return any(_equal(needle, item) for item in haystack)
    if needle not in haystack:  # C speed over a list of 10,000 member ids; Python misses no CEL match
        return False
    first = haystack.index(needle)
    if type(haystack[first]) in same:
        return True
    return any(type(item) in same and item == needle for item in haystack[first + 1 :])


def _has_key(key: str, haystack: Compiled) -> Compiled:
    """``"members" in data.rooms[topic.id]``: :func:`_in` for a string, in one call fewer."""

    def has_key(variables: dict[str, Any]) -> bool:
        container = haystack(variables)
        kind = type(container)
        if kind is dict or kind is list:
            return key in container
        raise Unknown

    return has_key


def _add(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is str or ta is list or ta is float:
            return a + b
        if ta is int and _int(a) and _int(b) and _INT_MIN <= a + b <= _INT_MAX:
            return a + b
    raise Unknown


_BINARY: dict[object, Callable[[Any, Any], Any]] = {
    "==": _equal, "!=": _not_equal, "<": _less, "<=": _less_equal, ">": _greater, ">=": _greater_equal,
    "in": _in, "+": _add,
}


def _size(value: Any) -> int:
    kind = type(value)
    if kind is str:
        if value.isascii():
            return len(value)
        try:
            return len(value.encode())  # the library counts UTF-8 bytes
        except UnicodeEncodeError:  # a lone surrogate, which the library cannot convert
            raise Unknown from None
    if kind is list or kind is dict:
        return len(value)
    raise Unknown


def _string(value: Any) -> str:
    if type(value) is str:
        return value
    if _int(value):
        return str(value)
    raise Unknown  # a double's digits, a bool (which the library refuses), ...


def _to_int(value: Any) -> int:
    if _int(value):
        return value
    if type(value) is str and _DIGITS.fullmatch(value):  # ASCII digits only, as the library parses
        number = int(value)
        if _INT_MIN <= number <= _INT_MAX:
            return number
    raise Unknown


def _text_method(method: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def call(text: Any, arg: Any) -> bool:
        if type(text) is str and type(arg) is str:
            return method(text, arg)
        raise Unknown

    return call


_FUNCTIONS: dict[str, Callable[..., Any]] = {"size": _size, "string": _string, "int": _to_int}
_METHODS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "startsWith": _text_method(str.startswith),
    "endsWith": _text_method(str.endswith),
    "contains": _text_method(str.__contains__),
}


def _has(target: Compiled, name: str) -> Compiled:
    def has(variables: dict[str, Any]) -> bool:
        value = target(variables)
        if type(value) is dict:
            return name in value
        raise Unknown

    return has
