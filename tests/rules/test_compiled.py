"""The compiled fast path against the ``cel`` library: same answers on random rules and values.

The contract (chanctl/rules/compiled.py): a compiled expression returns a value only when the library
gives that same value on the full, unpruned variables; otherwise it raises Unknown and the library
decides. Random expressions come from the compiled subset's grammar (plus a few constructs outside
it), over random JSON-shaped variables with missing keys, nesting and mixed types.
"""

from __future__ import annotations

import math

import cel
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from chanctl.rules import RuleError, compile_expression, compile_rule, syntax
from chanctl.rules.compiled import Unknown, compile_tree
from tests.rules.cel_values import FLOATS, INTS, STRINGS, expressions, reference, same, values, variables

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(expressions, st.lists(variables(), min_size=1, max_size=3))
def test_the_fast_path_answers_only_as_the_library_does(source, cases):
    try:
        cel.compile(source)
    except Exception:  # noqa: BLE001 - not CEL at all
        assume(False)
    tree = syntax.parse(source)
    assume(tree is not None)
    fast = compile_tree(source, tree)
    event("compiled" if fast is not None else "left to the library")
    for values_ in cases:
        expected = reference(source, values_)
        if fast is None:
            continue
        try:
            got = fast(values_)
        except Unknown:
            event("unknown")
            continue
        event("answered")
        assert same(got, expected), (source, values_, got, expected)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(expressions, st.lists(variables(), min_size=1, max_size=3))
def test_rules_and_push_to_targets_decide_as_the_library(source, cases):
    """End to end through compile_rule / compile_expression: allow/deny, and a push_to's string."""
    try:
        rule = compile_rule(source)
    except RuleError:
        rule = None
    try:
        target = compile_expression(source, kind="string")
    except RuleError:
        target = None
    assume(rule is not None or target is not None)
    for values_ in cases:
        expected = reference(source, values_)
        if rule is not None:
            rule._decisions.clear()  # decisions are remembered on the premise that data is static
            for _ in range(2):  # the second time from the remembered decision, when there is one
                assert rule.allows(values_) is (expected is True), (source, values_)
        if target is not None:
            try:
                got = target.evaluate(values_)
            except Exception as exc:  # noqa: BLE001
                got = type(exc)
            if isinstance(expected, str) or isinstance(got, str):
                assert same(got, expected), (source, values_, got, expected)


CHAT_ROOM = (
    'topic.id in data.rooms && (("public" in data.rooms[topic.id] && data.rooms[topic.id].public) || '
    '("members" in data.rooms[topic.id] && user.id in data.rooms[topic.id].members))'
)


@pytest.mark.parametrize(
    ("source", "values_", "expected"),
    [
        (CHAT_ROOM, {"user": {"id": 42}, "topic": {"id": "42"}, "data": {"rooms": {"42": {"members": [7, 42]}}}}, True),
        (CHAT_ROOM, {"user": {"id": 99}, "topic": {"id": "42"}, "data": {"rooms": {"42": {"members": [7, 42]}}}}, False),
        (CHAT_ROOM, {"user": {"id": 99}, "topic": {"id": "lobby"}, "data": {"rooms": {"lobby": {"public": True}}}}, True),
        (CHAT_ROOM, {"user": {"id": 1}, "topic": {"id": "nope"}, "data": {"rooms": {}}}, False),
        (CHAT_ROOM, {"user": {"id": True}, "topic": {"id": "7"}, "data": {"rooms": {"7": {"members": [1, True]}}}}, True),
        (CHAT_ROOM, {"user": {"id": 1}, "topic": {"id": "7"}, "data": {"rooms": {"7": {"members": [True, 1.0]}}}}, True),
        (CHAT_ROOM, {"user": {"id": 1}, "topic": {"id": "7"}, "data": {"rooms": {"7": {"members": [True]}}}}, False),
        ("topic.uid == string(user.id)", {"user": {"id": 42}, "topic": {"uid": "42"}}, True),
        ('"notifications:user_" + string(payload.to)', {"payload": {"to": 7}}, "notifications:user_7"),
        ('has(user.role) && user.role == "admin" || params.level >= 2', {"user": {"id": 1}, "params": {"level": 2.5}}, True),
        ("false && user.nope", {"user": {}}, False),
        ("user.nope && false", {"user": {}}, False),
        ("user.nope || true", {"user": {}}, True),
        ("size(user.name) <= 3 && user.name.startsWith('a')", {"user": {"name": "añ"}}, True),
        ("int(params.n) > 2 ? params.tag in ['x', 'y'] : false", {"params": {"n": "+3", "tag": "y"}}, True),
        # A path read twice is evaluated once; two paths that differ only by a space are two paths.
        ('data.m[params.k + "a b"] == 1 && data.m[params.k + "ab"] == 2 && data.m[params.k + "a b"] == 1',
         {"params": {"k": "x"}, "data": {"m": {"xa b": 1, "xab": 2}}}, True),
    ],
)
def test_common_rules_are_answered_without_the_library(source, values_, expected):
    fast = compile_tree(source, syntax.parse(source))
    assert fast is not None
    assert same(fast(values_), expected)
    assert same(reference(source, values_), expected)


@pytest.mark.parametrize(
    ("source", "values_"),
    [
        ("user.id == 1", {"user": {"id": 2**63}}),  # a uint in the library
        ("user.id < 1.0", {"user": {"id": 2**53 + 1}}),  # the library compares as doubles
        ("user.id < 1.0", {"user": {"id": math.nan}}),  # the library fails on NaN
        ("user.id in data.admins", {"user": {"id": 1}, "data": {"admins": {True: 1}}}),  # non-string keys
        ("string(user.id) == '1'", {"user": {"id": 1.0}}),  # a double's digits
        ("user.nope == 1", {"user": {}}),  # a missing key: the library fails, and says why
    ],
)
def test_doubtful_cases_are_left_to_the_library(source, values_):
    fast = compile_tree(source, syntax.parse(source))
    assert fast is not None
    with pytest.raises(Unknown):
        fast(values_)


OPERATIONS = [
    *(f"params.a {op} params.b" for op in ["==", "!=", "<", "<=", ">", ">=", "in", "&&", "||", "+"]),
    "!params.a", "params.a ? params.b : 1", "params.a[params.b]", "params.a.b", "has(params.a.b)", "size(params.a)",
    "params.a.size()", "string(params.a)", "int(params.a)", "params.a.startsWith(params.b)", "params.a.endsWith(params.b)",
    "params.a.contains(params.b)", "[params.a] == [params.b]", "{'k': params.a} == {'k': params.b}", "params.a in [params.b]",
]
pairs = st.one_of(values, st.sampled_from(INTS), st.sampled_from(FLOATS), st.sampled_from(STRINGS), st.booleans())


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(OPERATIONS), pairs, pairs | st.builds(lambda x: [x, 1], pairs) | st.builds(lambda x: {"1": x}, pairs))
def test_each_operation_on_any_pair_of_values(source, a, b):
    """Every operation of the subset on every kind of operand the variables can hold."""
    params = {"a": a, "b": b}
    fast = compile_tree(source, syntax.parse(source))
    expected = reference(source, {"params": params})
    if fast is None:  # a map literal: outside the subset
        return
    try:
        got = fast({"params": params})
    except Unknown:
        event("left to the library")
        return
    event("answered")
    assert same(got, expected), (source, params, got, expected)


def test_a_rule_nested_deeper_than_python_allows_is_left_to_the_library():
    """Each && nests the generated code deeper; past Python's limit the library runs the rule."""
    source = " && ".join(f"user.id != {i}" for i in range(30))
    rule = compile_rule(source)
    assert rule.expression.fast is None
    assert rule.allows({"user": {"id": 99}}) and not rule.allows({"user": {"id": 7}})
    shallow = compile_rule(" && ".join(f"user.id != {i}" for i in range(5)))
    assert shallow.expression.fast is not None
