"""Rules are checked by the compile step: each problem at file:line:col, with a caret under the column."""

import textwrap

import pytest

from chanctl.config.load import load_config, load_config_text
from chanctl.errors import ConfigError
from chanctl.server.compile import compile_config, compile_text

ENV = {"CHANCTL_SECRET": "x" * 40}
HEAD = "auth:\n  secret: ${CHANCTL_SECRET}\ntopics:\n"


def problems(topics: str, file="app.yaml"):
    with pytest.raises(ConfigError) as info:
        compile_text(HEAD + textwrap.indent(textwrap.dedent(topics), "  "), file, ENV)
    return info.value.problems


def caret(problem) -> str:
    """The excerpt's line cut at the caret: what the caret points at."""
    text, marker = problem.excerpt.splitlines()
    return text[marker.index("^"):]


def test_a_typo_in_a_folded_multi_line_rule_points_into_the_right_line():
    [p] = problems('''\
      "room:{id}":
        join: >-
          topic.id in data.rooms &&
          usr.id in data.rooms[topic.id].members
    ''')
    assert (p.line, p.column) == (7, 7)
    assert "unknown variable 'usr'" in p.message
    assert caret(p).startswith("usr.id in data")
    assert str(p).startswith("app.yaml:7:7: error: topics.room:{id}.join: bad join rule: unknown variable 'usr'")


def test_a_literal_block_and_a_quoted_rule_are_located_too():
    [literal] = problems('''\
      "room:{id}":
        join: |
          user.id == 1 ||
            topic.id ==
    ''')
    assert literal.line == 8 and "ends too early" in literal.message
    [quoted] = problems('''\
      "room:{id}":
        join: "user.id == 1 && frob"
    ''')
    assert (quoted.line, quoted.column) == (5, 28) and caret(quoted) == 'frob"'


def test_an_unknown_capture_is_a_load_error():
    [p] = problems('''\
      "room:{id}":
        join: topic.room_id == "1"
    ''')
    assert "no capture {room_id}" in p.message and "topic.id, topic.name" in p.message
    assert caret(p).startswith("room_id ==")
    [p] = problems('''\
      "room:{id}":
        join: topic["foo"] == "1"
    ''')
    assert "no capture {foo}" in p.message


@pytest.mark.parametrize("rule, gives", [
    ('"yes"', "string"), ("size(user.name)", "number"), ("user.id + 1 > 2 ? 1 : 0", "number"), ("[user.id]", "list"),
])
def test_a_rule_that_cannot_be_boolean_is_a_load_error(rule, gives):
    [p] = problems(f'''\
      "room:{{id}}":
        join: '{rule}'
    ''')
    assert f"gives a {gives}, never true or false" in p.message


def test_payload_is_not_a_join_variable_but_is_an_event_one():
    [p] = problems('''\
      "room:{id}":
        join: payload.x == 1
    ''')
    assert "unknown variable 'payload'" in p.message
    loaded = load_config_text(HEAD + '  "room:{id}":\n    join: true\n    events:\n      m: {allow: payload.x == topic.id}\n', "a.yaml", ENV)
    assert loaded.config.topics["room:{id}"].events["m"].allow == "payload.x == topic.id"


def test_macro_variables_are_not_unknown():
    load_config_text(HEAD + '  "room:{id}":\n    join: data.admins.exists(a, a == user.id)\n', "a.yaml", ENV)


def test_event_rule_and_push_to_problems_are_located():
    found = problems('''\
      "room:{id}":
        join: true
        events:
          a: {allow: user.rol == "x" && payloads.x}
          b: {do: push_to, to: user.id == 1}
          c: {do: push_to}
          d: {do: broadcast, reply: {x: 1}}
    ''')
    by_path = {p.path: p for p in found}
    assert "unknown variable 'payloads'" in by_path["topics.room:{id}.events.a.allow"].message
    assert "gives a bool, never a string" in by_path["topics.room:{id}.events.b.to"].message
    assert "push_to needs `to:`" in by_path["topics.room:{id}.events.c.do"].message
    assert "only read by `do: reply`" in by_path["topics.room:{id}.events.d.reply"].message


def test_data_file_yaml_and_json_join_data(tmp_path):
    (tmp_path / "rooms.json").write_text('{"rooms": {"42": {"members": [42]}}}')
    config = tmp_path / "app.yaml"
    config.write_text(HEAD + '  "room:{id}":\n    join: user.id in data.rooms[topic.id].members\ndata_file: rooms.json\ndata: {x: 1}\n')
    assert load_config(config, ENV).config.data == {"x": 1, "rooms": {"42": {"members": [42]}}}
    (tmp_path / "rooms.yaml").write_text("x: 2\n")
    config.write_text(config.read_text().replace("rooms.json", "rooms.yaml"))
    with pytest.raises(ConfigError, match="repeats data key 'x'"):
        load_config(config, ENV)
    config.write_text(config.read_text().replace("rooms.yaml", "nope.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(config, ENV)


def test_a_missing_handler_module_or_class_is_located(tmp_path):
    (tmp_path / "mymod.py").write_text("from chanctl import Channel\nclass Game(Channel):\n    pass\nclass NotOne:\n    pass\n")
    config = tmp_path / "app.yaml"
    good = HEAD + '  "game:{id}":\n    handler: mymod:Game\n'
    config.write_text(good)
    loaded = load_config(config, ENV)
    assert loaded.config.topics["game:{id}"].join is None
    for spec, message, column in [
        ("nomod:Game", "no module named 'nomod'", 14), ("mymod:Gam", "module mymod has no 'Gam'", 20),
        ("mymod:NotOne", "not a subclass of chanctl.Channel", 20),
    ]:
        config.write_text(good.replace("mymod:Game", spec))
        loaded = load_config(config, ENV)  # loading imports nothing; compiling imports the handler
        with pytest.raises(ConfigError) as info:
            compile_config(loaded)
        [p] = info.value.problems
        assert message in p.message and (p.line, p.column) == (5, column), p


def test_a_shadowed_pattern_is_a_warning():
    loaded = load_config_text(HEAD + '  "room:{id}": {join: true}\n  "room:{other}": {join: false}\n  "room:*": {join: true}\n', "a.yaml", ENV)
    [warning] = loaded.warnings
    assert (warning.path, warning.line) == ("topics.room:{other}", 5)
    assert "never used: every topic it matches goes to 'room:{id}' first" in warning.message
