"""`chanctl check`: a rule typo with its position, the explainer, policy tests, the reference."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from chanctl.cli.main import app
from chanctl.config.reference import render_reference
from tests.conftest import CHAT
from tests.support import ROOT, SECRET

TYPO = """\
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}":
    join: >-
      topic.id in data.rooms &&
      user.id in data.rooms[topic.id].membres || usr.admin
"""


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    return CliRunner()


def test_check_catches_a_typo_in_a_rule_with_its_position(tmp_path):
    (tmp_path / "app.yaml").write_text(TYPO)
    result = subprocess.run([sys.executable, "-m", "chanctl", "check", str(tmp_path / "app.yaml")],
                            capture_output=True, text=True, cwd=ROOT, env={"CHANCTL_SECRET": SECRET, "PATH": ""})
    assert result.returncode == 1
    first, source, caret = result.stdout.splitlines()[:3]
    assert first.startswith(f"{tmp_path / 'app.yaml'}:6:50: error: topics.room:{{id}}.join: bad join rule: unknown variable 'usr'")
    assert source.strip() == "user.id in data.rooms[topic.id].membres || usr.admin"
    assert caret.index("^") == source.index("usr.admin")
    assert "Traceback" not in result.stderr


def test_explain_says_why_user_99_cannot_join_room_42(runner):
    result = runner.invoke(app, ["check", str(CHAT), "--explain", "--user", "99", "--topic", "room:42"])
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["deny: join room:42", "  pattern: room:{id}", "  decided by: topics.room:{id}.join"]
    assert lines[3].startswith("  rule: topic.id in data.rooms && ((")
    assert '    topic.id = "42"' in lines
    assert "    user.id = 99" in lines
    assert "    data.rooms[topic.id].members = [42,7]" in lines


def test_explain_as_json(runner):
    result = runner.invoke(app, ["check", str(CHAT), "--explain", "--user", "99", "--topic", "room:42", "--json"])
    assert result.exit_code == 3
    body = json.loads(result.stdout)
    assert (body["verdict"], body["allowed"], body["decided_by"]) == ("deny", False, "topics.room:{id}.join")
    assert {"path": "data.rooms[topic.id].members", "value": [42, 7]} in body["values"]
    assert {"path": "user.id", "value": 99} in body["values"]
    assert any(v["path"] == "data.rooms[topic.id].public" and "KeyError" in v["error"] for v in body["values"])


def test_explain_an_event_with_claims_and_payload(runner, tmp_path):
    config = tmp_path / "app.yaml"
    config.write_text("""\
auth: {secret: "${CHANCTL_SECRET}"}
topics:
  "room:{id}":
    join: true
    events:
      kick: {allow: user.role == "admin" && payload.who != user.id, do: broadcast}
""")
    args = ["check", str(config), "--explain", "--user", "1", "--topic", "room:1", "--event", "kick"]
    allowed = runner.invoke(app, [*args, "--claim", "role=admin", "--payload", '{"who": 2}'])
    assert allowed.exit_code == 0 and allowed.stdout.startswith("allow: kick on room:1\n")
    assert '    user.role = "admin"' in allowed.stdout and "    payload.who = 2" in allowed.stdout
    failing = runner.invoke(app, [*args, "--payload", '{"who": 2}'])
    assert failing.exit_code == 3
    assert "the rule failed (" in failing.stdout and "a failing rule denies" in failing.stdout
    assert runner.invoke(app, [*args, "--payload", "{nope"]).exit_code == 2


def test_policy_tests_pass_and_fail(runner, tmp_path):
    assert "policy tests: 8 passed, 0 failed" in runner.invoke(app, ["check", str(CHAT)]).stdout
    config = tmp_path / "app.yaml"
    config.write_text(CHAT.read_text() + '  - {user: 99, join: "room:42", expect: allow}\n')
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 1
    assert "policy tests: 8 passed, 1 failed" in result.stdout
    assert f"FAIL {config}:tests[8]: expected allow, got deny" in result.stdout


def test_the_countdown_sample_checks_and_a_handler_decides_its_events(runner):
    countdown = ROOT / "sample_configs" / "countdown.yaml"
    result = runner.invoke(app, ["check", str(countdown)])
    assert result.exit_code == 0 and "policy tests: 2 passed, 0 failed" in result.stdout
    assert "    handler: countdown_app.channels:CountdownChannel" in result.stdout
    explained = runner.invoke(app, ["check", str(countdown), "--explain", "--user", "1", "--topic", "countdown:kitchen",
                                    "--event", "start", "--payload", '{"seconds": 3}'])
    assert explained.exit_code == 0
    assert explained.stdout.splitlines()[:2] == [
        "handler decides: start on countdown:kitchen", "  after: join countdown:kitchen: allow (topics.countdown:{room}.join)"]


@pytest.mark.parametrize("sample", sorted(p.name for p in (ROOT / "sample_configs").glob("*.yaml")))
def test_every_sample_config_checks(runner, sample):
    result = runner.invoke(app, ["check", str(ROOT / "sample_configs" / sample)])
    assert result.exit_code == 0 and ", 0 failed" in result.stdout, result.stdout


def test_the_realtime_sample_says_which_topics_serve_supabase_clients(runner):
    result = runner.invoke(app, ["check", str(ROOT / "sample_configs" / "realtime.yaml")])
    assert "policy tests: 9 passed, 0 failed" in result.stdout
    assert "  realtime:room:{id}\n    join: " in result.stdout
    assert "    realtime: Supabase Realtime clients" in result.stdout
    envelope = '{"type": "broadcast", "event": "new_msg", "payload": {"body": ""}}'
    explained = runner.invoke(app, ["check", str(ROOT / "sample_configs" / "realtime.yaml"), "--explain", "--user", "42",
                                    "--topic", "realtime:room:42", "--event", "broadcast", "--payload", envelope])
    assert explained.stdout.splitlines()[0] == "deny: new_msg (in a Supabase broadcast) on realtime:room:42"
    assert "decided by: topics.realtime:room:{id}.events.new_msg.schema" in explained.stdout


def test_a_malformed_policy_test_is_a_load_error(runner, tmp_path):
    config = tmp_path / "app.yaml"
    config.write_text(CHAT.read_text() + '  - {user: 1, join: "room:42", event: new_msg, expect: allow}\n')
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 1 and "tests.8: a policy test has `join: TOPIC`" in result.stdout


def test_the_committed_reference_is_up_to_date():
    committed = (ROOT / "docs" / "config-reference.md").read_text()
    assert committed == render_reference().rstrip("\n") + "\n", "regenerate: chanctl check --reference > docs/config-reference.md"
    for behaviour in ("broadcast", "broadcast_from", "reply", "push_to", "noop"):
        assert f"- `{behaviour}`: `" in committed


def test_explain_the_admin_topic_as_the_server_decides_it(runner):
    """chanctl:admin is the server's own topic: the token's admin claim decides, as AdminChannel
    does, not "no pattern matches" (which would say the server replies 'unmatched topic')."""
    args = ["check", str(CHAT), "--explain", "--user", "1", "--topic", "chanctl:admin"]
    denied = runner.invoke(app, args)
    assert denied.exit_code == 3
    assert "decided by: the admin plane: auth.admin_claim ('admin') must be true" in denied.stdout
    assert "an admin token (claim 'admin' = true) is required" in denied.stdout
    assert runner.invoke(app, [*args, "--claim", "admin=true"]).exit_code == 0
    assert runner.invoke(app, [*args, "--claim", "admin=true", "--event", "inspect"]).exit_code == 0
    unknown = runner.invoke(app, [*args, "--claim", "admin=true", "--event", "kick"])
    assert unknown.exit_code == 3 and "'kick' is no admin command" in unknown.stdout
