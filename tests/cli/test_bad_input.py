"""Bad input typed on the command line or found in a file: a located message and a documented
exit code, never a Python traceback (each case runs ``python -m chanctl`` in a subprocess)."""

from __future__ import annotations

import pytest

from tests.cli.run import chanctl
from tests.conftest import CHAT

GOOD_HEAD = 'auth:\n  secret: "${CHANCTL_SECRET}"\ntopics:\n  "room:{id}": {join: true}\n'


def no_traceback(result) -> None:
    assert "Traceback" not in result.err and "Error:" not in result.err.split("chanctl:")[0], result.err


def alias_bomb(levels: int = 9) -> str:
    """Billion laughs: each level holds nine aliases to the one before, 9**levels leaves in all."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name, content, message", [
    ("latin1.yaml", b'server:\n  host: "\xe9"\n', "is not UTF-8 text"),
    ("deep.yaml", ("data: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
    ("bomb.yaml", alias_bomb().encode(), "YAML aliases"),
    ("tag.yaml", b"server: !foo x\n", "could not determine a constructor for the tag '!foo'"),
], ids=["not-utf8", "deep", "alias-bomb", "unknown-tag"])
async def test_a_config_that_cannot_be_read_is_a_located_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    result = await chanctl("check", str(path))
    no_traceback(result)
    assert result.code == 1
    assert result.out.startswith(f"{path}:") and message in result.out


@pytest.mark.parametrize("name, content, message", [
    ("data.yaml", b"rooms: \xff\xfe\n", "is not UTF-8 text"),
    ("data.yaml", ("rooms: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
    ("data.yaml", alias_bomb().encode(), "YAML aliases"),
], ids=["not-utf8", "deep", "alias-bomb"])
async def test_a_data_file_that_cannot_be_read_is_a_located_problem(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    config = tmp_path / "chanctl.yaml"
    config.write_text(GOOD_HEAD + f"data_file: {name}\n")
    result = await chanctl("check", str(config))
    no_traceback(result)
    assert result.code == 1
    assert f"{config}:5:" in result.out and message in result.out


@pytest.mark.parametrize("url", [
    "ws://127.0.0.1:99999/socket", "ws://127.0.0.1:abc/socket", "ws://[::1/socket", "ws://", "http:///socket",
])
async def test_a_malformed_url_is_a_usage_error(url):
    result = await chanctl("send", "room:lobby", "new_msg", "--url", url, "--token", "t")
    no_traceback(result)
    assert result.code == 2
    assert result.err.startswith("chanctl: --url") and url in result.err


@pytest.mark.parametrize("port", ["70000", "-1"])
async def test_serve_rejects_a_port_out_of_range_as_usage(port):
    result = await chanctl("serve", str(CHAT), "--port", port)
    no_traceback(result)
    assert result.code == 2
    assert "--port" in result.err


async def test_serve_rejects_an_unknown_log_level_as_usage():
    result = await chanctl("serve", str(CHAT), "--port", "0", "--log-level", "loud")
    no_traceback(result)
    assert result.code == 2
    assert "--log-level" in result.err and "'loud'" in result.err


async def test_a_ttl_too_large_for_a_token_is_a_usage_error():
    result = await chanctl("token", "--user", "1", "--ttl", "9" * 400 + "s")
    no_traceback(result)
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("chanctl: --ttl:")


@pytest.mark.parametrize("where", ["missing/dir/chanctl.yaml", "."], ids=["missing-dir", "a-directory"])
async def test_init_where_it_cannot_write_is_a_clear_error(tmp_path, where):
    target = tmp_path / where
    result = await chanctl("init", str(target), "--force")
    no_traceback(result)
    assert result.code == 2
    assert result.err.startswith(f"chanctl: cannot write {target}: ")


@pytest.mark.parametrize("command", [["send", "room:lobby", "new_msg"], ["listen", "room:lobby"], ["watch"]])
@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
async def test_a_timeout_that_is_not_positive_is_a_usage_error(command, timeout):
    result = await chanctl(*command, "--url", "ws://127.0.0.1:1/socket", "--token", "t", "--timeout", timeout)
    no_traceback(result)
    assert result.code == 2
    assert "--timeout" in result.err and "cannot reach" not in result.err


async def test_a_malformed_chanctl_url_is_named_as_such():
    result = await chanctl("send", "room:lobby", "new_msg", "--token", "t", env={"CHANCTL_URL": "ws://[::1/socket"})
    no_traceback(result)
    assert result.code == 2
    assert result.err.startswith("chanctl: CHANCTL_URL 'ws://[::1/socket' is not a valid URL")
