import sys
import textwrap

import pytest

from chanctl.config.load import SAMPLE_SECRET, load_config, load_config_text
from chanctl.errors import ConfigError
from chanctl.server.compile import compile_config, compile_text

ENV = {"CHANCTL_SECRET": "x" * 40}
GOOD = """\
auth:
  secret: ${CHANCTL_SECRET}
topics:
  "room:{id}":
    join: true
"""


def problems(text: str, env=ENV):
    """What loading and compiling find (what ``chanctl check`` and ``serve`` refuse)."""
    with pytest.raises(ConfigError) as info:
        compile_text(textwrap.dedent(text), "app.yaml", env)
    return info.value.problems


def test_a_good_config_loads_with_interpolation():
    loaded = load_config_text(GOOD, "app.yaml", ENV)
    assert loaded.config.auth.secret == "x" * 40
    assert loaded.warnings == []


def test_interpolation_default_applies_when_unset():
    loaded = load_config_text(GOOD.replace("${CHANCTL_SECRET}", "${NOPE:-" + "d" * 40 + "}"), "a.yaml", {})
    assert loaded.config.auth.secret == "d" * 40


def test_unset_variable_is_an_error_at_its_position():
    [problem] = problems(GOOD, env={})
    assert (problem.line, problem.column, problem.path) == (2, 11, "auth.secret")
    assert "CHANCTL_SECRET is not set" in problem.message


def test_invalid_yaml_has_a_position():
    [problem] = problems("auth:\n  secret: [unclosed\ntopics: {}\n")
    assert problem.message.startswith("invalid YAML")
    assert problem.line == 3


def test_unknown_key_suggests_the_close_one():
    [problem] = problems(GOOD + "servre:\n  port: 1\n")
    assert (problem.line, problem.path) == (6, "servre")
    assert problem.hint == "did you mean 'server'?"


def test_unknown_nested_key_has_its_own_position():
    [problem] = problems(GOOD.replace("    join: true", "    join: true\n    evnts: {}"))
    assert (problem.line, problem.column, problem.path) == (6, 5, "topics.room:{id}.evnts")
    assert "events" in problem.hint


def test_a_topic_without_join_rule_does_not_load():
    [problem] = problems(GOOD.replace("    join: true", "    events: {}"))
    assert problem.path == "topics.room:{id}.join" and problem.line == 4
    assert "join: true" in problem.hint


def test_wrong_types_are_located():
    found = problems(GOOD + "server:\n  port: lots\n  idle_timeout: soon\n")
    assert [(p.path, p.line) for p in found] == [("server.port", 7), ("server.idle_timeout", 8)]
    assert "not a duration" in found[1].message


def test_every_problem_is_reported_at_once():
    text = """\
    auth:
      secret: short
      salt: 3
    topics:
      "room:{id":
        join: 12
      "a:{x}":
        join: user.id ==
        events:
          m: {do: shout, schema: {body: {type: strin}}}
    """
    found = problems(text)
    paths = [p.path for p in found if p.severity == "error"]
    assert "auth.salt" in paths
    assert "topics.room:{id" in paths
    assert "topics.a:{x}.events.m.do" in paths
    assert "topics.room:{id.join" in paths
    assert all(p.line for p in found), found


def test_bad_rule_points_at_the_column():
    [problem] = problems(GOOD.replace("join: true", "join: user.idd == 1 && frob.x"))
    assert problem.path == "topics.room:{id}.join" and problem.line == 5
    assert "unknown variable 'frob'" in problem.message
    assert problem.column == 28
    assert problem.excerpt.splitlines() == ["    join: user.idd == 1 && frob.x", " " * 27 + "^"]


def test_bad_schema_is_reported():
    [problem] = problems(GOOD + "    events:\n      m:\n        schema: {body: {type: strin}}\n")
    assert problem.path.startswith("topics.room:{id}.events.m.schema")
    assert "invalid JSON Schema" in problem.message


def test_duplicate_keys_are_errors():
    found = problems(GOOD + "  \"room:{id}\":\n    join: false\n")
    assert any("duplicate key" in p.message and p.line == 6 for p in found)


def test_short_and_sample_secrets_warn():
    short = load_config_text(GOOD, "a.yaml", {"CHANCTL_SECRET": "tiny"})
    assert [w.path for w in short.warnings] == ["auth.secret"] and "4 bytes" in short.warnings[0].message
    sample = load_config_text(GOOD, "a.yaml", {"CHANCTL_SECRET": SAMPLE_SECRET})
    assert "default secret" in sample.warnings[0].message


def test_an_empty_secret_refuses_to_load():
    [problem] = problems(GOOD, env={"CHANCTL_SECRET": ""})
    assert problem.path == "auth.secret"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_problem_prints_file_line_column_and_path():
    [problem] = problems(GOOD + "servre: 1\n")
    assert str(problem).startswith("app.yaml:6:1: error: servre: unknown key 'servre'")


def test_an_alias_inside_the_node_it_names_is_a_problem_not_a_traceback():
    # YAML allows `&x [*x]`; building it never ends, and the RecursionError reached the user.
    with pytest.raises(ConfigError) as info:
        load_config_text("auth: {secret: x}\ndata: {loop: &x [*x]}\ntopics: {a: {join: true}}\n", "c.yaml", {})
    problem = info.value.problems[0]
    assert problem.message == "the YAML is nested too deeply to read"
    assert "alias" in problem.hint


def test_loading_imports_no_user_code_and_leaves_sys_path_alone(tmp_path):
    (tmp_path / "loud_handler_mod.py").write_text("raise RuntimeError('imported at load')\n")
    config = tmp_path / "app.yaml"
    config.write_text(GOOD + '  "game:{id}":\n    handler: loud_handler_mod:Game\n')
    before = list(sys.path)
    loaded = load_config(config, ENV)
    assert sys.path == before and "loud_handler_mod" not in sys.modules
    # The compile step imports it (serve, check, the harness), and says what went wrong where.
    with pytest.raises(ConfigError) as info:
        compile_config(loaded)
    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("topics.game:{id}.handler", 7)
    assert "importing loud_handler_mod failed: RuntimeError: imported at load" in problem.message


def test_history_and_expiry_settings_are_checked_where_they_are_written():
    text = GOOD.replace("    join: true", "    join: true\n    history: {size: 20000}") + "  lobby:\n    join: true\n    history: {size: 10, ttl: forever}\n"
    found = problems(text)
    assert [(p.path, p.line) for p in found] == [
        ("topics.room:{id}.history.ttl", 6), ("topics.room:{id}.history.size", 6), ("topics.lobby.history.ttl", 9)]
    assert "less than or equal to 10000" in found[1].message and "not a duration" in found[2].message
    loaded = load_config_text(GOOD.replace("  secret: ${CHANCTL_SECRET}", "  secret: ${CHANCTL_SECRET}\n  max_age: 10m\n  expiry_warning: 1h"), "app.yaml", ENV)
    [warning] = loaded.warnings
    assert (warning.path, warning.line, warning.severity) == ("auth.expiry_warning", 4, "warning")
    assert "every socket would be warned as soon as it connects" in warning.message
    assert load_config_text(GOOD.replace("  secret: ${CHANCTL_SECRET}", "  secret: ${CHANCTL_SECRET}\n  expiry_warning: 0"), "app.yaml", ENV).warnings == []



def test_the_ref_and_rule_input_limits_are_checked_where_they_are_written():
    found = problems(GOOD + "server:\n  max_ref_bytes: 1000\n  max_library_input: 0\n")
    assert [(p.path, p.line) for p in found] == [("server.max_ref_bytes", 7), ("server.max_library_input", 8)]
    assert "less than or equal to 255" in found[0].message and "greater than or equal to 1" in found[1].message
    server = load_config_text(GOOD, "app.yaml", ENV).config.server
    assert (server.max_ref_bytes, server.max_library_input) == (255, 2048)
