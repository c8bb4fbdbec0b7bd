"""The library path against the library itself: pruned and flattened variables give the same answers.

chanctl/rules/prune.py hands the ``cel`` library only the parts of the variables a rule reads
(a copied room instead of 2,000, the matches of ``x in list`` instead of the list) and rewrites
static paths into variables of their own. Both are sound only if every expression gives on them what
it gives on the full values: the same value, or a failure where the library fails. Negations are
where an unsound pruning shows (a key dropped turns ``k in m`` false, and ``!(k in m)`` true), so
every expression is also checked negated. End to end, ``Rule.allows`` (compiled path, library
fallback, remembered decisions) must decide as the library does on the full values.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from chanctl.rules import RuleError, compile_rule
from tests.rules.cel_values import compound, literals, maps, reference, same, values

# Paths whose pruning differs: computed keys, keys that may be missing, lists that `in` cuts down.
PATHS = [
    "data.rooms[topic.id]", "data.rooms[topic.id].members", "data.rooms[params.a]", "data.rooms[params.a].members",
    "data.rooms[string(user.id)]", "data.rooms", "data.admins", "data.flags", "data", "user", "user.id", "topic.id",
    "params.a", "params", "topic", ".user",
]
SAME_ISH = [1, 1.0, True, "1", 42, 42.0, "42", 7, False, 0, None, "lobby"]


def _pruning(inner):
    paths = st.sampled_from(PATHS)
    return st.one_of(
        compound(inner, paths),
        st.tuples(inner, paths).map(lambda t: f"{t[0]} in {t[1]}"),
        st.tuples(inner, paths).map(lambda t: f"!({t[0]} in {t[1]})"),
        st.tuples(paths, st.sampled_from(["members", "public", "id", "a"])).map(lambda t: f"has({t[0]}.{t[1]})"),
        st.tuples(paths, inner).map(lambda t: f"{t[0]}.exists(m, m == {t[1]})"),
        st.tuples(paths, inner).map(lambda t: f"{t[0]}.all(m, m != {t[1]})"),
        st.tuples(paths, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
    )


KEYS = ["topic.id", "params.a", "user.id", "string(user.id)", '"42"', "1", "true", "null"]
CONTAINERS = ["data.rooms", "data.rooms[topic.id].members", "data.admins", "data.flags", "data.rooms[params.a]", "params"]
# The shapes rules have (`topic.id in data.rooms && user.id in data.rooms[topic.id].members`), so
# that most examples exercise a pruning step rather than an arbitrary expression around one.
shaped = st.recursive(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(CONTAINERS)).map(lambda t: f"{t[0]} in {t[1]}")
    | st.tuples(st.sampled_from(KEYS), st.sampled_from(["==", "!="]), st.sampled_from(PATHS)).map(" ".join),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&&", "||"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"!({e})"),
    ),
    max_leaves=4,
)
expressions = shaped | st.recursive(st.one_of(literals, st.sampled_from(PATHS)), _pruning, max_leaves=6)
members = st.lists(st.sampled_from(SAME_ISH) | values, max_size=6)
room = st.fixed_dictionaries({}, optional={"members": members | values, "public": st.booleans() | values, "a": values})


@st.composite
def variables(draw):
    keys = st.sampled_from(["42", "lobby", "1", "7"])
    topic_id = draw(keys)
    rooms = draw(st.dictionaries(keys, room, max_size=3))
    if draw(st.booleans()):  # the room the topic names is there half of the time
        rooms[topic_id] = draw(room)
    return {
        "user": {**draw(maps), "id": draw(st.sampled_from(SAME_ISH) | values)},
        "topic": {**draw(maps), "id": topic_id, "name": "room:" + topic_id},
        "params": {**draw(maps), **draw(st.fixed_dictionaries({}, optional={"a": keys | values}))},
        "data": {
            "rooms": rooms,
            "admins": draw(members),
            "flags": draw(st.dictionaries(keys, values, max_size=3)),
        },
    }


def _fresh(rule, **changes):
    """A copy of ``rule`` that remembers no decisions (they assume one static ``data``); ``fast=None``
    sends every evaluation to the library, pruned."""
    expression = dataclasses.replace(rule.expression, **changes)
    return dataclasses.replace(rule, expression=expression, _decisions=type(rule._decisions)())


def _evaluates(expression, values_):
    try:
        return expression.evaluate(values_)
    except Exception as exc:  # noqa: BLE001 - any failure is an answer here
        return type(exc)


def _case(user_id, admins):
    return {"user": {"id": user_id}, "topic": {"id": "1", "name": "room:1"}, "params": {}, "data": {"rooms": {}, "admins": admins}}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(expressions, st.lists(variables(), min_size=1, max_size=3))
# `x in list` keeps only the matches; Python finds true where CEL wants 1, and 1.0 where it wants 1.
@example("user.id in data.admins", [_case(1, [True, 1]), _case(True, [1, True]), _case(1, [1.0]), _case(1, [True])])
def test_pruned_evaluation_gives_what_the_library_gives_on_the_full_values(source, cases):
    for written in (source, f"!({source})"):
        try:
            rule = compile_rule(written)
        except RuleError:  # not CEL, or a rule that can never be true or false
            assume(written != source)
            continue
        assume(rule.expression is not None and rule.expression.prune is not None)
        for values_ in cases:
            compiled, library = _fresh(rule), _fresh(rule, fast=None)
            expected = reference(written, values_)
            got = _evaluates(library.expression, values_)
            if isinstance(expected, type) and issubclass(expected, Exception):
                assert isinstance(got, type) and issubclass(got, Exception), (written, values_, got, expected)
            else:
                assert same(got, expected), (written, values_, got, expected)
            for decide in (compiled, compiled, library, library):  # the second pass may answer from memory
                assert decide.allows(values_) is (expected is True), (written, values_, decide is compiled)


def test_the_library_reads_at_most_max_library_input_values_of_client_input():
    """A rule only the library evaluates (a macro) is not run over more client input than the bound;
    the budget counts values, map entries, list items and KiBs of strings, in payload and params only."""
    from chanctl.errors import RuleInputTooLarge
    from chanctl.rules import EVENT_VARIABLES
    from chanctl.rules.prune import MAX_LIBRARY_INPUT

    rule = compile_rule("payload.items.all(i, i < 10) && data.big.all(d, d < 10)", EVENT_VARIABLES)
    assert rule.expression is not None and rule.expression.fast is None

    def variables(items, big=()):
        return {"user": {"id": 1}, "topic": {"name": "t"}, "params": {}, "payload": {"items": items}, "data": {"big": list(big)}}

    assert rule.allows(variables([1] * (MAX_LIBRARY_INPUT - 2)))
    assert rule.allows(variables([1], [1] * (10 * MAX_LIBRARY_INPUT)))  # data is the operator's: not counted
    for items in ([1] * MAX_LIBRARY_INPUT, ["x" * 1024] * (MAX_LIBRARY_INPUT // 2), [[[1]] * 4] * (MAX_LIBRARY_INPUT // 4)):
        with pytest.raises(RuleInputTooLarge, match="payload is larger than the 2048 values"):
            rule.allows(variables(items))
    compiled = compile_rule("size(payload.items) < 10", EVENT_VARIABLES)  # read in place: no bound
    assert compiled.expression is not None and compiled.expression.fast is not None
    assert not compiled.allows(variables([1] * (10 * MAX_LIBRARY_INPUT)))
