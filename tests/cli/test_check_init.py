import subprocess
import sys

import pytest
from typer.testing import CliRunner

from chanctl.cli.main import app
from tests.conftest import CHAT
from tests.support import TIMEOUT

BROKEN = """\
server:
  prot: 4000
auth:
  secret: ${CHANCTL_SECRET}
topics:
  "room:{id}":
    events:
      new_msg: {do: broadcst}
  "lobby":
    join: user.id ==
"""


@pytest.fixture
def runner(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHANCTL_SECRET", "k" * 40)
    return CliRunner()


def test_check_lists_every_problem_with_its_line(runner, tmp_path):
    (tmp_path / "broken.yaml").write_text(BROKEN)
    result = runner.invoke(app, ["check", "broken.yaml"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("broken.yaml:2:3: error: server.prot: unknown key 'prot' (did you mean 'port'?)")
    assert any(line.startswith("broken.yaml:6:3: error: topics.room:{id}.join: is required") for line in lines)
    assert any(line.startswith("broken.yaml:8:") and "new_msg.do" in line for line in lines)
    assert any(line.startswith("broken.yaml:10:") and "bad join rule" in line for line in lines)
    assert "4 errors" in result.stderr


def test_check_summarizes_a_good_config(runner):
    result = runner.invoke(app, ["check", str(CHAT)])
    assert result.exit_code == 0, result.output
    assert "ok — 3 topic patterns" in result.stdout
    assert "room:{id}" in result.stdout and "event new_msg: broadcast (schema)" in result.stdout


def test_init_writes_a_config_that_passes_check(runner, tmp_path):
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0
    assert (tmp_path / "chanctl.yaml").read_text().startswith("# chanctl starter config")
    assert runner.invoke(app, ["check", "chanctl.yaml"]).exit_code == 0
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.parametrize("secret, says", [
    ("dev-only-secret-change-me-0123456789abcdef", "the sample's default secret is in use"),
    ("short", "the secret is 5 bytes; use at least 32"),
], ids=["sample", "short"])
def test_check_warns_about_a_weak_secret_as_serve_does(runner, tmp_path, secret, says):
    config = tmp_path / "weak.yaml"
    config.write_text(f'auth: {{secret: "{secret}"}}\ntopics:\n  "room:{{id}}": {{join: true}}\n')
    checked = runner.invoke(app, ["check", str(config)])
    assert checked.exit_code == 0
    warning = next(line for line in checked.stdout.splitlines() if "warning: auth.secret" in line)
    assert says in warning
    serve = subprocess.Popen([sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0"],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert serve.stderr is not None
        banner = [serve.stderr.readline()]
        while banner[-1] and not banner[-1].startswith("  WARNING"):  # after the URL, topics and auth lines
            banner.append(serve.stderr.readline())
        assert banner[-1] == f"  WARNING {warning}\n", banner
    finally:
        serve.terminate()
        serve.wait(TIMEOUT)
