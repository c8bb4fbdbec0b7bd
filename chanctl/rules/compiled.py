"""The CEL that authorization rules use, compiled into a Python function, with the library as referee.

Why: the ``cel`` library converts every variable it is handed into its own values on each
evaluation. For the chat sample's room rule that cost about 17 µs (pruning the variables, then
converting and running) against about 19 µs of server CPU for a whole ``join: true`` join, so every
new user's join cost twice as much as an open one. Rules are mostly paths, ``in``, comparisons and
``&&``/``||``, which Python answers in a microsecond or two on the variables as they are.

The contract that keeps decisions unchanged: a compiled expression returns a value only when it is
the value the library gives on the same variables. Wherever the library fails (a missing key, a
type mismatch: the rule denies and the library's message is the one logged) or where the two might
differ (uint, NaN, integers beyond 64 bits or doubles compared with integers beyond 2**53, bytes,
strings of doubles, map keys that are not strings, Python types outside JSON's), it raises
:class:`Unknown` and the caller asks the library. ``tests/rules/test_compiled.py`` checks the
contract against the library on random expressions and values. As with the library's pruned
evaluation (:class:`chanctl.rules.prune.Pruner`), only the parts of the variables a rule reads count: a
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


from chanctl.rules.syntax import Node, cel_compile

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
    generator = _Generator(source, tree)
    try:
        result = generator.emit(tree)
    except _Outside:
        return None
    generator.line(f"if type({result}) is bool or type({result}) is str: return {result}")
    generator.line(f"return _result({result})")
    body = "".join(f"        {line}\n" for line in generator.memos + generator.lines)
    text = f"def evaluate(v):\n    try:\n{body}    except Exception:\n        raise Unknown from None\n"
    try:
        code = compile(text, f"<rule {source!r}>", "exec")
    except (SyntaxError, RecursionError, MemoryError):  # Python allows 20 nested blocks, which a
        return None  # chain of about 20 && reaches: the library runs such a rule
    namespace = {**_HELPERS, **generator.constants}
    exec(code, namespace)  # noqa: S102 - our own generated code
    return namespace["evaluate"]  # type: ignore[no-any-return]


_UNSET, _FAILED = object(), object()


def _result(value: Any) -> Any:
    if _int(value):
        return value
    raise Unknown  # a list, a map, a double...: the library's own conversion says what it is


class _Generator:
    """Writes the Python source of one function for an expression.

    One function rather than a closure per node, because a Python call costs about as much as the
    work of a node (the chat room rule: about 1.2 µs, against 2.2 µs as closures). Each node becomes
    a few statements that leave its value in a local ``t<N>``; any Python exception along the way
    (a KeyError for a missing key, a TypeError for a field of a list, :class:`Unknown` from a
    helper) means "no answer here", which ``&&`` and ``||`` absorb when the other side decides, as
    CEL does with errors, and which otherwise reaches the caller as :class:`Unknown`. Operations
    with CEL's own rules on types (``==``, ``in``, ``<``...) are the helper functions below. A path
    with a computed key read more than once (the chat rule reads ``data.rooms[topic.id]`` four
    times) is computed once, into a local ``m<N>``. Nothing from the rule's text reaches the source
    but identifiers and ``repr`` of names; literal values are passed in as constants.
    """

    def __init__(self, source: str, tree: Node):
        self.source = source
        self.lines: list[str] = []
        self.memos: list[str] = []
        self.constants: dict[str, Any] = {}
        self.depth = 0
        self.count = 0
        self.shared: dict[str, str] = {}
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

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def temp(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def constant(self, value: Any) -> str:
        if value is None or type(value) is bool:
            return repr(value)
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, node: Node) -> str:
        """Statements computing ``node``; returns the name (or constant) holding its value."""
        kind = node.kind
        if kind == "literal":
            return self.constant(self.literal(node))
        if kind in ("ident", "select", "index"):
            return self.shared_path(node) if self.repeated(node) else self.path(node)
        if kind == "list":
            items = [self.emit(child) for child in node.children]
            out = self.temp()
            self.line(f"{out} = [{', '.join(items)}]")
            return out
        if kind == "unary" and node.value == "!":
            value, out = self.emit(node.children[0]), self.temp()
            self.line(f"if {value} is True: {out} = False")
            self.line(f"elif {value} is False: {out} = True")
            self.line("else: raise Unknown")
            return out
        if kind == "unary" and node.children[0].kind == "literal" and node.children[0].value == "number":
            value = -self.literal(node.children[0])  # -1, -1.5
            if type(value) is int and not _int(value):
                raise _Outside
            return self.constant(value)
        if kind == "binary":
            op = node.value
            if op in ("&&", "||"):
                return self.logic(node, op == "&&")
            if op not in _BINARY:
                raise _Outside
            left, right = node.children
            if op == "in" and _is_string(left):  # "public" in data.rooms[topic.id]
                key, container, out = self.emit(left), self.emit(right), self.temp()
                self.line(f"if type({container}) is dict or type({container}) is list: {out} = {key} in {container}")
                self.line("else: raise Unknown")
                return out
            if op in ("in", "==", "!="):  # between strings, Python's answer is CEL's: no call
                a, b, out = self.emit(left), self.emit(right), self.temp()
                python, helper = {"in": ("in", _in), "==": ("==", _equal), "!=": ("!=", _not_equal)}[op]
                fast = f"type({b}) is dict or type({b}) is list" if op == "in" else f"type({b}) is str"
                self.line(f"if type({a}) is str and ({fast}): {out} = {a} {python} {b}")
                self.line(f"else: {out} = {self.constant(helper)}({a}, {b})")
                return out
            return self.call_helper(_BINARY[op], [left, right])
        if kind == "ternary":
            condition = self.emit(node.children[0])
            out = self.temp()
            for test, branch in ((f"if {condition} is True:", node.children[1]), (f"elif {condition} is False:", node.children[2])):
                self.line(test)
                self.depth += 1
                self.line(f"{out} = {self.emit(branch)}")
                self.depth -= 1
            self.line("else: raise Unknown")
            return out
        if kind == "call":
            return self.call(node)
        raise _Outside

    def logic(self, node: Node, conjunction: bool) -> str:
        """CEL's ``&&`` (``||``) is commutative over errors: ``false`` (``true``) on either side wins,
        whatever the other side gives."""
        wins, loses = ("False", "True") if conjunction else ("True", "False")
        first, out = self.temp(), self.temp()
        self.line("try:")
        self.depth += 1
        self.line(f"{first} = {self.emit(node.children[0])}")
        self.depth -= 1
        self.line("except Exception:")
        self.line(f"    {first} = None")
        self.line(f"if {first} is {wins}: {out} = {wins}")
        self.line("else:")
        self.depth += 1
        second = self.emit(node.children[1])
        self.line(f"if {second} is {wins}: {out} = {wins}")
        self.line(f"elif {first} is {loses} and {second} is {loses}: {out} = {loses}")
        self.line("else: raise Unknown")
        self.depth -= 1
        return out

    def call_helper(self, function: Callable[..., Any], args: list[Node]) -> str:
        values = [self.emit(arg) for arg in args]
        out = self.temp()
        self.line(f"{out} = {self.constant(function)}({', '.join(values)})")
        return out

    def repeated(self, node: Node) -> bool:
        """Whether ``node`` is a path with a computed key (``data.rooms[topic.id]``) read more than once."""
        return node.kind == "index" and self.counts.get(self.text(node), 0) > 1 and not _is_string(node.children[1])

    def shared_path(self, node: Node) -> str:
        text = self.text(node)
        if text in self.shared:
            memo = self.shared[text]
            self.line(f"if {memo} is _UNSET:")
        else:
            memo = self.shared[text] = f"m{len(self.shared)}"
            self.memos.append(f"{memo} = _UNSET")
            self.line(f"if {memo} is _UNSET:")
        self.depth += 1
        self.line("try:")
        self.depth += 1
        self.line(f"{memo} = {self.path(node)}")
        self.depth -= 1
        self.line("except Exception:")
        self.line(f"    {memo} = _FAILED")
        self.depth -= 1
        self.line(f"if {memo} is _FAILED: raise Unknown")
        return memo

    def path(self, node: Node) -> str:
        """A variable, then fields (``.members``, ``["members"]``) and computed keys (``[topic.id]``)."""
        source = self.source
        steps: list[tuple[bool, Node]] = []
        while node.kind in ("select", "index") and not (steps and self.repeated(node)):
            target = node.children[0]
            if node.kind == "select":
                if "?" in source[target.end : node.value_at]:  # x.?field: optional selection
                    raise _Outside
                steps.append((True, node))
            else:
                if "?" in source[target.end : node.children[1].start]:  # x[?key]
                    raise _Outside
                steps.append((_is_string(node.children[1]), node))
            node = target
        steps.reverse()
        out = self.temp()
        if node.kind == "ident":
            if source[: node.start].rstrip().endswith("."):
                raise _Outside  # .user, the root scope spelled out: the library treats it apart in has()
            self.line(f"{out} = v[{str(node.value)!r}]")
        else:
            self.line(f"{out} = {self.emit(node)}")
        for static, step in steps:
            if static:  # a KeyError (no such key) or TypeError (not a map) is a failure, as in CEL
                name = str(step.value) if step.kind == "select" else self.literal(step.children[1])
                self.line(f"{out} = {out}[{name!r}]")
            else:  # a list's position, or a map's key; Python's [1, 2][True] is not CEL's
                key = self.emit(step.children[1])
                self.line(f"{out} = {out}[{key}] if type({key}) is str else _item({out}, {key})")
        return out

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
            return cel_compile(text).execute({})
        except ValueError:  # 9223372036854775808: valid only after a minus, which the library folds
            raise _Outside from None

    def call(self, node: Node) -> str:
        name = str(node.value)
        method = node.value_at > node.start  # receiver.name(...): the receiver is the first child
        if not method and name == "has" and len(node.children) == 1 and node.children[0].kind == "select":
            selected = node.children[0]
            if "?" in self.source[selected.children[0].end : selected.value_at]:
                raise _Outside
            target, out = self.emit(selected.children[0]), self.temp()
            self.line(f"if type({target}) is not dict: raise Unknown")
            self.line(f"{out} = {str(selected.value)!r} in {target}")
            return out
        function = (_METHODS if method else _FUNCTIONS).get(name)
        arity = 2 if method and name != "size" else 1
        if function is None or len(node.children) != arity:
            raise _Outside
        return self.call_helper(function, node.children)


def _is_string(node: Node) -> bool:
    return node.kind == "literal" and node.value == "string"


def _item(container: Any, key: Any) -> Any:
    """``container[key]``: a map's string key or a list's position; the rest to the library."""
    kind = type(container)
    if kind is dict:
        if type(key) is str and key in container:
            return container[key]
    elif kind is list and type(key) is int and 0 <= key < len(container):
        return container[key]
    raise Unknown


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


_HELPERS = {"Unknown": Unknown, "_UNSET": _UNSET, "_FAILED": _FAILED, "_item": _item, "_result": _result}
"""What the generated functions call by name (the operations are passed in as constants)."""
