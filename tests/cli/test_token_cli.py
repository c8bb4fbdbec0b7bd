import orjson
import pytest
from typer.testing import CliRunner

from chanctl.cli.main import app
from chanctl.tokens import TokenSigner
from tests.conftest import CHAT
from tests.support import SECRET


@pytest.fixture
def runner(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./chanctl.yaml unless a test writes one
    monkeypatch.delenv("CHANCTL_SECRET", raising=False)
    return CliRunner()


def test_token_user_42_from_env_prints_only_the_token(runner, monkeypatch):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    result = runner.invoke(app, ["token", "--user", "42"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "\n" not in token
    assert TokenSigner(SECRET).verify(token).claims == {"id": 42}


def test_secret_lookup_order_config_then_local_file_then_env(runner, monkeypatch, tmp_path):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    local = "auth: {secret: " + "L" * 40 + "}\ntopics: {a: {join: true}}\n"
    (tmp_path / "chanctl.yaml").write_text(local)
    from_local = runner.invoke(app, ["token", "--user", "1"]).stdout.strip()
    TokenSigner("L" * 40).verify(from_local)
    from_config = runner.invoke(app, ["token", "--user", "1", "--config", str(CHAT)]).stdout.strip()
    TokenSigner(SECRET).verify(from_config)  # chat.yaml reads CHANCTL_SECRET


def test_no_secret_anywhere_names_all_three_places(runner):
    result = runner.invoke(app, ["token", "--user", "42"])
    assert result.exit_code == 2
    assert "--config" in result.stderr and "chanctl.yaml" in result.stderr and "CHANCTL_SECRET" in result.stderr
    assert result.stdout == ""


def test_claims_keep_numbers_and_ttl_takes_durations(runner, monkeypatch):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    result = runner.invoke(app, ["token", "--user", "7", "--claim", "role=admin", "--claim", "level=3", "--ttl", "15m"])
    claims = TokenSigner(SECRET).verify(result.stdout.strip()).claims
    assert claims == {"id": 7, "role": "admin", "level": 3, "ttl": 900}


@pytest.mark.parametrize("args", [["--claim", "novalue"], ["--ttl", "soon"], ["--claim", "id=3"], []])
def test_bad_arguments_exit_2(runner, monkeypatch, args):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    user = ["--user", "1"] if args else []
    result = runner.invoke(app, ["token", *user, *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("chanctl:")


def test_verify_prints_claims_and_age(runner, monkeypatch):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    token = TokenSigner(SECRET).mint(42, {"role": "admin"})
    result = runner.invoke(app, ["token", "verify", token])
    assert result.exit_code == 0
    assert '"id":42' in result.stdout and "age:" in result.stdout
    as_json = orjson.loads(runner.invoke(app, ["token", "verify", token, "--json"]).stdout)
    assert as_json["valid"] and as_json["claims"] == {"role": "admin", "id": 42}


def test_verify_says_why_and_exits_1(runner, monkeypatch):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    forged = TokenSigner("z" * 40).mint(42)
    result = runner.invoke(app, ["token", "verify", forged])
    assert result.exit_code == 1 and "bad signature" in result.stderr
    expired = TokenSigner(SECRET, clock=lambda: 1_000_000.0).mint(42)
    result = runner.invoke(app, ["token", "verify", expired])
    assert result.exit_code == 1 and "expired" in result.stderr and "exceeds the limit of 14d" in result.stderr


@pytest.mark.parametrize("ttl, code", [("14d", 0), ("15d", 2), ("2w", 0), ("3w", 2)])
def test_ttl_longer_than_max_age_is_a_usage_error(runner, monkeypatch, ttl, code):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)  # no config: Phoenix's default max_age, 14 days
    result = runner.invoke(app, ["token", "--user", "1", "--ttl", ttl])
    assert result.exit_code == code, result.output
    if code:
        assert "longer than auth.max_age (14d)" in result.stderr and result.stdout == ""


def test_admin_with_a_contrary_admin_claim_is_a_usage_error(runner, monkeypatch):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    contrary = runner.invoke(app, ["token", "--user", "1", "--admin", "--claim", "admin=false"])
    assert contrary.exit_code == 2 and contrary.stdout == ""
    assert "--claim admin=false says otherwise" in contrary.stderr
    agreeing = runner.invoke(app, ["token", "--user", "1", "--admin", "--claim", "admin=true"])
    assert TokenSigner(SECRET).verify(agreeing.stdout.strip()).claims == {"id": 1, "admin": True}


def test_verify_dash_reads_the_token_from_stdin(runner, monkeypatch):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    token = TokenSigner(SECRET).mint(42)
    result = runner.invoke(app, ["token", "verify", "-"], input=token + "\n")
    assert result.exit_code == 0, result.output
    assert '"id":42' in result.stdout


@pytest.mark.parametrize("command", [["send", "room:1", "ping"], ["listen", "room:1"], ["watch"]])
def test_user_and_token_together_are_a_usage_error(runner, monkeypatch, command):
    monkeypatch.setenv("CHANCTL_SECRET", SECRET)
    result = runner.invoke(app, [*command, "--url", "ws://127.0.0.1:9/socket", "--user", "1", "--token", "t"])
    assert result.exit_code == 2
    assert "pass only one of them" in result.stderr
