"""``chanctl watch`` as a user runs it: exit codes when it cannot start, and Textual loaded only by it."""

from __future__ import annotations


from tests.cli.run import chanctl, user_args


async def test_a_non_admin_token_exits_3_with_the_reason(chat_server, mint):
    result = await chanctl("watch", "--url", chat_server.url, "--token", mint(42))
    assert result.code == 3, result.err
    assert "chanctl: join chanctl:admin refused:" in result.err and "unauthorized" in result.err


async def test_an_unreachable_server_exits_4(unused_tcp_port):
    result = await chanctl("watch", *user_args(f"ws://127.0.0.1:{unused_tcp_port}/socket", "1"))
    assert result.code == 4, result.err
    assert "chanctl: cannot reach" in result.err


async def test_no_server_given_is_a_usage_error():
    result = await chanctl("watch", "--token", "x")
    assert result.code == 2
    assert "no server given" in result.err

