"""The README's exit-code table, one case per command and class of failure, each run as a user runs
it (``python -m chanctl`` in a subprocess, in a folder of its own).

0 ok, 1 error (config problems included), 2 usage or missing config/secret, 3 refused,
4 timeout or unreachable, 130 Ctrl+C.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.cli.run import chanctl, start_chanctl, user_args
from tests.support import TIMEOUT

GOOD = 'auth: {secret: "${CHANCTL_SECRET}"}\ntopics:\n  "room:{id}": {join: true}\n'
BROKEN = 'auth: {secret: "${CHANCTL_SECRET}"}\ntopics:\n  "room:{id}": {evnts: {}}\n'
UNSET_VAR = 'auth: {secret: "${NO_SUCH_VAR}"}\ntopics:\n  "room:{id}": {join: true}\n'


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder with a good, a broken and an unset-variable config, and no chanctl.yaml."""
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    (tmp_path / "unset.yaml").write_text(UNSET_VAR)
    return tmp_path


async def run(folder, *args: str, env: dict[str, str] | None = None):
    result = await chanctl(*args, env=env, cwd=folder)
    assert "Traceback" not in result.err, result.err
    return result


@pytest.mark.parametrize("command", [["check"], ["serve", "--port", "0"]])
@pytest.mark.parametrize("config, code, says", [
    ("nope.yaml", 2, "config file not found: nope.yaml"),
    (None, 2, "no ./chanctl.yaml here"),
    ("broken.yaml", 1, "unknown key 'evnts'"),
    ("unset.yaml", 1, "environment variable NO_SUCH_VAR is not set"),
], ids=["missing", "none-here", "problems", "unset-var"])
async def test_check_and_serve_agree_on_config_failures(folder, command, config, code, says):
    result = await run(folder, *command, *([config] if config else []))
    assert result.code == code, result.err
    assert says in result.out + result.err


async def test_check_ok_is_0_and_a_denied_explain_is_3(folder):
    assert (await run(folder, "check", "good.yaml")).code == 0
    denied = await run(folder, "check", "good.yaml", "--explain", "--user", "1", "--topic", "nowhere")
    assert denied.code == 3


@pytest.mark.parametrize("args, env, code", [
    (["token", "--user", "42"], {}, 0),
    (["token"], {}, 2),
    (["token", "--user", "42", "--config", "nope.yaml"], {}, 2),
    (["token", "--user", "42"], {"CHANCTL_SECRET": ""}, 2),
    (["token", "--user", "42", "--config", "broken.yaml"], {}, 1),
    (["token", "verify", "not.a.token"], {}, 1),
], ids=["ok", "no-user", "missing-config", "no-secret", "config-problems", "invalid-token"])
async def test_token(folder, args, env, code):
    result = await run(folder, *args, env=env)
    assert result.code == code, result.err


@pytest.mark.parametrize("command", ["send", "listen"])
async def test_send_and_listen_failures(folder, chat_server, unused_tcp_port, command):
    args = [command, "room:42"] + (["new_msg", '{"body":"hi"}'] if command == "send" else ["--timeout", "0.3"])
    assert (await run(folder, *args, *user_args(chat_server.url, "42"))).code == 0
    assert (await run(folder, *args, "--config", "nope.yaml", "--url", chat_server.url, "--user", "1")).code == 2
    assert (await run(folder, *args, "--config", "broken.yaml", "--user", "1")).code == 1
    assert (await run(folder, *args, *user_args(chat_server.url, "99"))).code == 3
    assert (await run(folder, *args, *user_args(f"ws://127.0.0.1:{unused_tcp_port}/socket", "42"))).code == 4


async def test_send_error_reply_is_1(folder, chat_server):
    assert (await run(folder, "send", "room:42", "new_msg", '{"body":""}', *user_args(chat_server.url, "42"))).code == 1


async def test_ctrl_c_in_listen_and_send_exits_130(folder, chat_server):
    listen = await start_chanctl("listen", "room:42", *user_args(chat_server.url, "42"), cwd=folder)
    assert listen.stdout is not None
    assert b"joined: 42" in await asyncio.wait_for(listen.stdout.readline(), TIMEOUT)
    # send reads stdin line by line: an open stdin keeps it waiting, as a typing user would. The
    # listener sees it join (user 7's presence), so both are mid-command when Ctrl+C comes.
    send = await start_chanctl("send", "room:42", "new_msg", "-", *user_args(chat_server.url, "7"), cwd=folder)
    assert b"joined: 7" in await asyncio.wait_for(listen.stdout.readline(), TIMEOUT)
    for proc in (listen, send):
        proc.send_signal(signal.SIGINT)
    for proc in (listen, send):
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 130, err.decode()
        assert b"Traceback" not in err


@pytest.mark.parametrize("origin, message", [
    ("https://", "origin 'https://' names no host"),
    ("https://app.example.com:99999", "is not a valid URL: Port out of range"),
], ids=["no-host", "bad-port"])
async def test_check_reports_what_serve_would_refuse_at_start(folder, origin, message):
    """`server.origins` entries serve could not parse (it crashed with a ValueError traceback):
    check names the entry with its line, and serve refuses the same way, as a config problem."""
    (folder / "origins.yaml").write_text(f'server: {{origins: ["{origin}"]}}\n' + GOOD)
    checked = await run(folder, "check", "origins.yaml")
    assert checked.code == 1
    assert checked.out.startswith("origins.yaml:1:20: error: server.origins.0: ") and message in checked.out
    served = await run(folder, "serve", "origins.yaml", "--port", "0")
    assert served.code == 1 and message in served.err
