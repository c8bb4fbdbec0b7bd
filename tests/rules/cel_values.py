"""Random CEL expressions and JSON-shaped variables, shared by the differential tests of the rules.

Variables hold missing keys, nesting and mixed types (``1``, ``1.0``, ``true`` and ``"1"`` side by
side), the places where Python and CEL disagree; expressions come from the compiled subset's
grammar plus a few constructs outside it, so both evaluation paths get exercised.
"""

from __future__ import annotations

import math

import cel
from hypothesis import strategies as st

__all__ = [
    "FLOATS", "INTS", "KEYS", "STRINGS", "compound", "expressions", "literals", "maps", "reference", "same", "values", "variables",
]

KEYS = ["id", "a", "b", "members", "public", "rooms", "1", "42", "é"]
STRINGS = ["", "a", "b", "1", "42", "ab", "a b", "é", "lobby", "-7", "+3", "007", "9223372036854775808"]
INTS = [0, 1, 7, 42, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**63, 2**64]
FLOATS = [0.0, -0.0, 1.0, 1.5, 42.0, 2.0**53, 2.0**63, math.inf, math.nan, 1e300]

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INTS), st.integers(-50, 50), st.sampled_from(FLOATS),
    st.floats(-100, 100), st.sampled_from(STRINGS), st.text(st.characters(blacklist_categories=["Cs"]), max_size=4),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=6,
)
maps = st.dictionaries(st.sampled_from(KEYS), values, max_size=3)


@st.composite
def variables(draw):
    user = {**draw(maps), "id": draw(st.sampled_from([42, 7, "42", 1.0, True, 2**63]) | values)}
    topic_id = draw(st.sampled_from(["42", "lobby", "1", "x"]))
    rooms = draw(st.dictionaries(st.sampled_from(["42", "lobby", "1", "7"]), maps, max_size=2))
    return {
        "user": user,
        "topic": {"id": topic_id, "name": "room:" + topic_id, **draw(maps)},
        "params": draw(maps),
        "payload": draw(maps),
        "data": {"rooms": rooms, **draw(maps)},
    }


def _literal(value) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) and value >= 0 else "1.0"
    return str(value) if -(2**63) < value < 2**63 else "1"


literals = st.one_of(st.sampled_from(STRINGS), st.sampled_from(INTS), st.sampled_from([0.5, 1.0, 42.0]), st.booleans(), st.none()).map(_literal)
ROOTS = ["user", "topic", "params", "payload", "data", "data.rooms", "topic.id", "user.id", ".user"]


def compound(inner, roots=st.sampled_from(ROOTS)):
    """One step up the grammar from ``inner``: operators, paths, calls, a macro, a few outsiders."""
    two = st.tuples(inner, inner)
    return st.one_of(
        st.tuples(inner, st.sampled_from(KEYS)).map(lambda t: f"{t[0]}.{t[1]}" if t[1].isidentifier() and t[1].isascii() else f'{t[0]}["{t[1]}"]'),
        two.map(lambda t: f"{t[0]}[{t[1]}]"),
        inner.map(lambda e: f"!{e}"),
        inner.map(lambda e: f"({e})"),
        st.tuples(inner, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "&&", "||", "+"]), inner).map(" ".join),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.tuples(roots, st.sampled_from(KEYS[:6])).map(lambda t: f"has({t[0]}.{t[1]})"),
        st.tuples(st.sampled_from(["size", "string", "int"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
        inner.map(lambda e: f"{e}.size()"),
        st.tuples(inner, st.sampled_from(["startsWith", "endsWith", "contains"]), inner).map(lambda t: f"{t[0]}.{t[1]}({t[2]})"),
        st.sampled_from(["-1", "-(42)", "-9223372036854775808", "1u", "b'a'", "{'a': 1}", "double(1)", "x.?a", "dyn(1)"]),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}.exists(m, m == {t[1]})"),
    )


expressions = st.recursive(st.one_of(literals, st.sampled_from(ROOTS)), compound, max_leaves=8)


def reference(source, variables):
    """The library's value on the full variables, or the exception type it raised."""
    try:
        return cel.compile(source).execute(variables)
    except Exception as exc:  # noqa: BLE001 - any failure is an answer here
        return type(exc)


def same(a, b) -> bool:
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))
