"""Rules: compiled and pruned evaluation give CEL's own answers, decisions are remembered only when sound."""

import dataclasses
import logging

import cel
import pytest

from chanctl.rules import EVENT_VARIABLES, Rule, RuleError, compile_expression, compile_rule

DATA = {
    "rooms": {"42": {"members": [42, 7]}, "lobby": {"public": True}, "7": {"members": [1.0, True, "x"]}},
    "admins": [1, 2],
    "flags": {"k": {"nested": [1, 2]}},
    "b": [True, 1],
}
RULES = [
    'topic.id in data.rooms && (("public" in data.rooms[topic.id] && data.rooms[topic.id].public) || '
    '("members" in data.rooms[topic.id] && user.id in data.rooms[topic.id].members))',
    "user.id in data.admins || size(data.rooms) > 5",
    'has(data.rooms.lobby) && data.rooms["lobby"].public',
    "data.rooms.exists(r, r == topic.id) && data.flags.k.nested[0] == 1",
    'user.id in data.b && !(user.role in data.b) && "k" in data.flags',
    "data.rooms[topic.id].members[0] == user.id",
    "params.level >= 2 || user.id == 1",
    'has(user.role) && user.role == "admin" || user.name.startsWith("a") || size(user) > 3',
    "user.tags.exists(t, t == topic.id) || .user.id == 99",
]
CASES = [
    ({"id": 42}, {"id": "42"}, {}), ({"id": 99}, {"id": "42"}, {}), ({"id": 99}, {"id": "lobby"}, {"level": 3}),
    ({"id": 1}, {"id": "7"}, {}), ({"id": True, "role": 1}, {"id": "7"}, {}), ({"id": 1.0}, {"id": "nope"}, {"level": 1}),
    ({"id": "x"}, {"id": "7"}, {}), ({"id": 7}, {"id": "42"}, {"level": "high"}),
    ({"id": 99, "role": "admin"}, {"id": "42"}, {}), ({"id": 3, "name": "ann", "tags": ["42"]}, {"id": "42"}, {}),
    ({"id": 3, "name": 5, "tags": "x", "a": 1, "b": 2}, {"id": "7"}, {}),
]


def reference(source, variables):
    try:
        result = cel.compile(source).execute(variables)
    except Exception:
        return False
    return result if isinstance(result, bool) else False


@pytest.mark.parametrize("source", RULES)
def test_pruned_and_remembered_evaluation_agree_with_cel_on_the_full_values(source):
    compiled = compile_rule(source)
    library = Rule(source, dataclasses.replace(compiled.expression, fast=None))  # pruned, remembered
    for rule in (compiled, library):
        for _ in range(2):  # the second pass answers from the remembered decisions
            for user, topic, params in CASES:
                variables = {"user": user, "topic": {**topic, "name": "room:" + topic["id"]}, "params": params, "data": DATA}
                assert rule.allows(variables) == reference(source, variables), (user, topic, params)


def test_only_what_the_rule_reads_reaches_cel():
    rule = compile_rule(RULES[0])
    big = {"rooms": {str(i): {"members": list(range(5000))} for i in range(3000)}}
    pruned = rule.expression.prune({"user": {"id": 4999, "exp": 1}, "topic": {"id": "12", "name": "room:12"}, "data": big})
    # user.id and topic.id reach CEL as plain values (the rule runs with them flattened).
    assert pruned == {"data": {"rooms": {"12": {"members": [4999]}}}, "__chanctl_0": "12", "__chanctl_1": 4999}
    assert rule.expression.program.source.startswith("__chanctl_0 in data.rooms && ")


def test_a_run_time_failure_denies_logs_and_is_not_remembered(caplog):
    rule = compile_rule("params.level >= 2")
    with caplog.at_level(logging.INFO, logger="chanctl.rules"):
        assert rule.decide({"params": {}}) == (False, rule.decide({"params": {}})[1])
        assert rule.allows({"params": {}}) is False
    assert len([r for r in caplog.records if "denied" in r.getMessage()]) == 3
    assert rule.allows({"params": {"level": 2}}) is True


def test_user_id_lists_and_constants():
    assert compile_rule([1, "7"]).allows({"user": {"id": 7}}) and not compile_rule([1]).allows({"user": {"id": 2}})
    assert compile_rule(True).allows({}) and not compile_rule(False).allows({})


def test_rule_errors_carry_a_column_within_the_expression():
    with pytest.raises(RuleError) as info:
        compile_rule("user.id == 1 &&\n  frob > 2")
    assert info.value.column == len("user.id == 1 &&\n  ") + 1
    with pytest.raises(RuleError) as info:
        compile_rule("user.id ==\n")
    assert "ends too early" in info.value.message


def test_only_rules_the_library_evaluates_remember_decisions_and_not_over_a_payload():
    rule = compile_rule("payload.n.exists(n, n > 1) && user.id == 1")  # a macro: the library's
    assert rule.expression.fast is None
    assert rule.allows({"payload": {"n": [2]}, "user": {"id": 1}}) and not rule.allows({"payload": {"n": [0]}, "user": {"id": 1}})
    assert len(rule._decisions) == 0
    join = compile_rule("user.tags.exists(t, t == 1)")
    assert join.allows({"user": {"tags": [1]}})
    assert len(join._decisions) == 1
    compiled = compile_rule("user.id == 1")  # compiled: remembering would cost what evaluating does
    assert compiled.expression.fast is not None and compiled.allows({"user": {"id": 1}})
    assert len(compiled._decisions) == 0


@pytest.mark.parametrize("params", [None, 5, "s", [1], {}, {"x": 1}])
def test_a_failure_names_the_path_as_written_not_the_flattened_variable(params):
    # A client's join params (or payload) decide which key is missing; the log line and push_to's
    # error reply must name it as the rule says it, not as chanctl rewrote it for CEL.
    rule = compile_rule('params.x == 1 && params.name.startsWith("a")')
    allowed, why = rule.decide({"params": params})
    assert allowed is False
    assert "__chanctl_" not in why
    assert "params.name" in why or "params.x" in why


def test_push_to_names_the_missing_payload_path():
    expression = compile_expression('"p:" + payload.target', EVENT_VARIABLES, frozenset(), "string")
    with pytest.raises(RuntimeError, match="'payload.target'"):
        expression.evaluate({"payload": {}})


def test_decisions_over_large_inputs_are_not_remembered():
    """Issue 16: 200 refused joins with 256 KiB ids pinned 50 MiB in one rule's decisions."""
    rule = compile_rule("params.ids.exists(i, i == 'ok')")
    assert rule.expression.fast is None
    assert not rule.allows({"params": {"ids": ["x" * 2000]}})
    assert not rule.allows({"params": {"ids": ["y"] * 2000}})
    assert len(rule._decisions) == 0
    assert rule.allows({"params": {"ids": ["ok"]}}) and len(rule._decisions) == 1
