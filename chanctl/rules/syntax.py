"""A small CEL syntax tree, for the checks the CEL library does not make.

``cel.compile`` parses and evaluates but has no type checker, and its ``variables()`` cannot tell a
free variable from a macro's bound one (the ``m`` in ``list.exists(m, m > 1)``). This module parses an
expression the library has already accepted into nodes that keep their offsets, so the loader can
say *where* a rule names an unknown variable or topic capture, whether its result can be boolean at
all, and the explainer can show the value of each path a rule read (``data.rooms[topic.id]``).

It evaluates nothing itself: :mod:`chanctl.rules.compiled` writes a Python function from this tree for
the common subset of CEL, and the compiled ``cel`` program evaluates the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Node", "Step", "accesses", "cel_compile", "free_variables", "parse", "paths", "result_kind", "selections", "walk",
]


def cel_compile(source: str) -> Any:
    """The ``cel`` library's ``compile``, imported on first use.

    The library's package imports its own command line (prompt_toolkit and more, about 100 ms) on
    import; commands that never compile a rule (``chanctl token``, ``send``, ``listen``) skip it.
    """
    import cel

    return cel.compile(source)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>[rRbB]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[-+*/%!<>?:.,\[\](){}])
    """,
    re.VERBOSE | re.DOTALL,
)
_MACROS = {"all", "exists", "exists_one", "map", "filter"}
_BOOL_FUNCTIONS = {"has", "startsWith", "endsWith", "contains", "matches", "all", "exists", "exists_one", "in"}
_KIND_OF_FUNCTION = {"size": "number", "int": "number", "uint": "number", "double": "number",
                     "string": "string", "bytes": "bytes", "map": "list", "filter": "list",
                     "timestamp": "timestamp", "duration": "duration", "type": "type"}


@dataclass
class Node:
    """One expression: ``kind`` is ident, select, index, call, literal, list, map, unary, binary or
    ternary; ``start``/``end`` are offsets into the source. A node's text is itself an expression
    (the explainer and the pruner compile it): a parenthesized node spans what is inside its
    parentheses, and a node around one spans the closing parenthesis too (``!(a)``, ``(a).b``)."""

    kind: str
    start: int
    end: int
    value: object = None
    """Identifier, field or function name, operator, or literal kind (bool, number, string, ...)."""
    value_at: int = 0
    """Offset of the name (a select's field, a call's function)."""
    children: list[Node] = field(default_factory=list)
    text: str = ""
    """A string literal's text between its quotes (escapes left as written)."""


@dataclass
class _Token:
    kind: str
    text: str
    start: int
    end: int


class _Parser:
    def __init__(self, source: str):
        self.tokens = [
            _Token(m.lastgroup or "", m.group(), m.start(), m.end())
            for m in _TOKEN.finditer(source)
            if m.lastgroup != "space"
        ]
        covered = sum(len(m.group()) for m in _TOKEN.finditer(source))
        if covered != len(source):
            raise ValueError("unrecognised characters")
        self.tokens.append(_Token("end", "", len(source), len(source)))
        self.pos = 0

    def peek(self, *texts: str) -> bool:
        token = self.tokens[self.pos]
        return token.kind in ("op", "ident") and token.text in texts

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.take()
        if token.text != text:
            raise ValueError(f"expected {text!r} at {token.start}")
        return token

    def last_end(self) -> int:
        """Where the last token taken ends: a node's span runs to its closing parenthesis, if any."""
        return self.tokens[self.pos - 1].end

    def expr(self) -> Node:
        first = self.tokens[self.pos].start
        cond = self.binary(0)
        if self.peek("?"):
            self.take()
            then = self.binary(0)
            self.expect(":")
            other = self.expr()
            return Node("ternary", first, self.last_end(), "?:", children=[cond, then, other])
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        first = self.tokens[self.pos].start
        left = self.binary(level + 1)
        while self.peek(*self._LEVELS[level]):
            op = self.take().text
            right = self.binary(level + 1)
            left = Node("binary", first, self.last_end(), op, children=[left, right])
        return left

    def unary(self) -> Node:
        if self.peek("!", "-"):
            token = self.take()
            operand = self.unary()
            return Node("unary", token.start, self.last_end(), token.text, children=[operand])
        return self.member()

    def member(self) -> Node:
        first = self.tokens[self.pos].start
        node = self.primary()
        while True:
            if self.peek("."):
                self.take()
                if self.peek("?"):
                    self.take()
                name = self.take()
                if self.peek("("):
                    args = self.args("(", ")")
                    node = Node("call", first, self.last_end(), name.text, name.start, [node, *args])
                else:
                    node = Node("select", first, name.end, name.text, name.start, [node])
            elif self.peek("["):
                self.take()
                if self.peek("?"):
                    self.take()
                index = self.expr()
                close = self.expect("]")
                node = Node("index", first, close.end, None, children=[node, index])
            else:
                return node

    def args(self, open_: str, close: str) -> list[Node]:
        self.expect(open_)
        items: list[Node] = []
        while not self.peek(close):
            items.append(self.expr())
            if self.peek(":"):  # a map entry: key, then value
                self.take()
                items.append(self.expr())
            if not self.peek(","):
                break
            self.take()
        self.expect(close)
        return items

    def primary(self) -> Node:
        token = self.tokens[self.pos]
        if token.kind == "op" and token.text == ".":
            self.take()  # a leading dot names the root scope
            token = self.tokens[self.pos]
        if token.kind == "ident":
            self.take()
            if token.text in ("true", "false"):
                return Node("literal", token.start, token.end, "bool")
            if token.text == "null":
                return Node("literal", token.start, token.end, "null")
            if self.peek("("):
                args = self.args("(", ")")
                return Node("call", token.start, self.tokens[self.pos - 1].end, token.text, token.start, args)
            if self.peek("{"):  # a message literal, Type{field: value}
                fields = self.args("{", "}")
                return Node("map", token.start, self.tokens[self.pos - 1].end, "message", children=fields[1::2])
            return Node("ident", token.start, token.end, token.text, token.start)
        if token.kind == "number":
            self.take()
            return Node("literal", token.start, token.end, "number")
        if token.kind == "string":
            self.take()
            prefix = len(token.text) - len(token.text.lstrip("rRbB"))
            kind = "bytes" if "b" in token.text[:prefix].lower() else "string"
            quote = 3 if token.text[prefix : prefix + 3] in ('"""', "'''") else 1
            text = token.text[prefix + quote : len(token.text) - quote]
            return Node("literal", token.start, token.end, kind, token.start + prefix + quote, text=text)
        if token.text == "(":
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        if token.text == "[":
            items = self.args("[", "]")
            return Node("list", token.start, self.tokens[self.pos - 1].end, "list", children=items)
        if token.text == "{":
            items = self.args("{", "}")
            return Node("map", token.start, self.tokens[self.pos - 1].end, "map", children=items)
        raise ValueError(f"unexpected {token.text!r} at {token.start}")


def parse(source: str) -> Node | None:
    """The tree of an expression ``cel.compile`` accepted, or None where this parser falls short."""
    try:
        parser = _Parser(source)
        node = parser.expr()
        if parser.tokens[parser.pos].kind != "end":
            return None
        return node
    except (ValueError, IndexError):
        return None


def walk(node: Node, bound: frozenset[str]) -> Iterator[tuple[Node, frozenset[str]]]:
    """Every node under ``node`` with the macro variables bound there (``m`` in ``l.exists(m, m > 1)``)."""
    yield node, bound
    if node.kind == "call" and node.value in _MACROS and len(node.children) >= 3 and node.children[1].kind == "ident":
        target, var, *rest = node.children
        yield from walk(target, bound)
        inner = bound | {str(var.value)}
        for child in rest:
            yield from walk(child, inner)
        return
    for child in node.children:
        yield from walk(child, bound)


def free_variables(node: Node) -> list[Node]:
    """Identifiers that name a variable (not one bound by a macro), in source order."""
    return [n for n, bound in walk(node, frozenset()) if n.kind == "ident" and n.value not in bound]


def selections(node: Node, variable: str) -> list[tuple[str, int]]:
    """``(field, offset)`` for each ``variable.field`` or ``variable["field"]`` in the expression."""
    found = []
    for n, bound in walk(node, frozenset()):
        if not n.children or variable in bound:
            continue
        base = n.children[0]
        if base.kind != "ident" or base.value != variable:
            continue
        if n.kind == "select":
            found.append((str(n.value), n.value_at))
        elif n.kind == "index" and n.children[1].kind == "literal" and n.children[1].value == "string":
            found.append((n.children[1].text, n.children[1].value_at))
    return found


def paths(node: Node) -> list[Node]:
    """The outermost variable paths (``user.id``, ``data.rooms[topic.id].members``), in source order,
    for the explainer to evaluate one by one; paths inside an index are listed too."""
    found: list[Node] = []

    def root_is_variable(n: Node) -> bool:
        while n.kind in ("select", "index"):
            n = n.children[0]
        return n.kind == "ident"

    def visit(n: Node, bound: frozenset[str]) -> None:
        if n.kind in ("select", "index", "ident") and root_is_variable(n):
            root = n
            while root.kind in ("select", "index"):
                root = root.children[0]
            if root.value not in bound:
                found.append(n)
            for part in _indexes(n):
                visit(part, bound)
            return
        _descend(n, bound, visit)

    visit(node, frozenset())
    return found


def _descend(n: Node, bound: frozenset[str], visit: Callable[[Node, frozenset[str]], None]) -> None:
    """Visit ``n``'s children; inside a macro's body its variable (the ``m`` of
    ``list.exists(m, m > 1)``) is bound, so it is not a free variable there."""
    if n.kind == "call" and n.value in _MACROS and len(n.children) >= 3 and n.children[1].kind == "ident":
        visit(n.children[0], bound)
        for child in n.children[2:]:
            visit(child, bound | {str(n.children[1].value)})
        return
    for child in n.children:
        visit(child, bound)


def _indexes(n: Node) -> Iterator[Node]:
    while n.kind in ("select", "index"):
        if n.kind == "index":
            yield n.children[1]
        n = n.children[0]


def result_kind(node: Node) -> str | None:
    """What an expression yields when that is clear from its shape: ``bool``, ``number``, ``string``,
    ``list``, ``map``, ``null``...; None when it depends on the data (a variable, an index)."""
    if node.kind == "literal":
        return str(node.value)
    if node.kind in ("list", "map"):
        return "list" if node.kind == "list" else "map"
    if node.kind == "unary":
        return "bool" if node.value == "!" else "number"
    if node.kind == "binary":
        if node.value in ("||", "&&", "==", "!=", "<", "<=", ">", ">=", "in"):
            return "bool"
        if node.value == "+":
            kinds = {result_kind(child) for child in node.children} - {None}
            return kinds.pop() if len(kinds) == 1 else None
        return "number"
    if node.kind == "ternary":
        kinds = {result_kind(node.children[1]), result_kind(node.children[2])}
        if None in kinds or "bool" in kinds:
            return "bool" if kinds == {"bool"} else None
        return " or ".join(sorted(str(kind) for kind in kinds))
    if node.kind == "call":
        if node.value in _BOOL_FUNCTIONS:
            return "bool"
        return _KIND_OF_FUNCTION.get(str(node.value))
    return None


Step = tuple[str, object]
"""One step down a variable: ``("key", name)`` for ``.name`` or ``["name"]``, ``("expr", node)`` for
``[expr]``, ``("in", node)`` for the left side of ``expr in path`` (the last step)."""


def accesses(node: Node) -> list[tuple[str, list[Step]]]:
    """Every ``(variable, steps)`` path the expression may read, so that a caller can hand CEL only
    those parts of a large value (CEL converts every variable on each evaluation).

    A path ends early (the whole value from there on is needed) where a step cannot be known before
    evaluation: an index that uses a macro-bound variable. ``k in path`` reads only key ``k`` of a
    map, so it adds a step; a caller that finds a list there keeps the whole list.
    """
    found: list[tuple[str, list[Step]]] = []

    def chain(n: Node) -> tuple[Node, list[Node]] | None:
        links: list[Node] = []
        while n.kind in ("select", "index"):
            links.append(n)
            n = n.children[0]
        return (n, links[::-1]) if n.kind == "ident" else None

    def uses(n: Node, names: frozenset[str]) -> bool:
        return any(i.kind == "ident" and i.value in names for i, _ in walk(n, frozenset()))

    def record(path: Node, bound: frozenset[str], member: Node | None) -> None:
        root, links = chain(path)  # type: ignore[misc]
        if root.value in bound:
            for link in links:
                if link.kind == "index":
                    visit(link.children[1], bound)
            return
        steps: list[Step] = []
        complete = True
        for link in links:
            if link.kind == "select":
                steps.append(("key", str(link.value)))
                continue
            index = link.children[1]
            visit(index, bound)
            if index.kind == "literal" and index.value == "string":
                steps.append(("key", index.text))
            elif complete and not uses(index, bound):
                steps.append(("expr", index))
            else:
                complete = False
            if not complete:
                break
        if complete and member is not None and not uses(member, bound):
            steps.append(("in", member))
        found.append((str(root.value), steps))

    def visit(n: Node, bound: frozenset[str]) -> None:
        if n.kind in ("select", "index", "ident") and chain(n) is not None:
            record(n, bound, None)
            return
        if n.kind == "binary" and n.value == "in" and chain(n.children[1]) is not None:
            visit(n.children[0], bound)
            record(n.children[1], bound, n.children[0])
            return
        _descend(n, bound, visit)

    visit(node, frozenset())
    return found
