"""``chanctl send`` and ``chanctl listen`` as subprocesses against a real chat-sample server."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from chanctl.client import Client
from chanctl.server.admin import ADMIN_TOPIC
from chanctl.server.runtime import build_server
from tests.cli.run import chanctl, start_chanctl, user_args
from chanctl.config.load import load_config
from tests.conftest import CHAT
from tests.support import ROOT, SECRET, TIMEOUT, RawClient


@pytest.fixture
async def spawn():
    """``await spawn(*args)``: a running ``chanctl`` process, killed at teardown if still running."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> asyncio.subprocess.Process:
        procs.append(await start_chanctl(*args))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_send_defaults_to_an_empty_payload_and_prints_the_validation_error(chat_server):
    result = await chanctl("send", "room:42", "new_msg", *user_args(chat_server.url, "42"))
    assert result.code == 1, result.err
    assert result.out == 'error {"errors":{"body":["can\'t be blank"]}}\n'


async def test_send_ok_exits_0_and_json_prints_the_reply(chat_server):
    result = await chanctl("send", "room:42", "new_msg", '{"body":"hi"}', "--json", *user_args(chat_server.url, "42"))
    assert result.code == 0, result.err
    assert orjson.loads(result.out) == {"status": "ok", "response": {}}


async def test_send_reads_the_payload_from_a_file(chat_server, tmp_path):
    (tmp_path / "msg.json").write_text('{"body": "from a file"}')
    result = await chanctl("send", "room:lobby", "new_msg", f"@{tmp_path / 'msg.json'}", *user_args(chat_server.url, "7"))
    assert (result.code, result.out) == (0, "ok {}\n"), result.err


async def test_send_streams_stdin_lines_on_one_connection_with_replies_in_order(chat_server, mint):
    async with Client(chat_server.url, token=mint(7)) as client:
        room = client.channel("room:42")
        await room.join(TIMEOUT)
        lines = '{"body":"one"}\n{"body":""}\n\n{"body":"three"}\n'
        result = await chanctl("send", "room:42", "new_msg", "-", *user_args(chat_server.url, "42"), stdin=lines)
        bodies = [(await next_message(room, "new_msg"))["body"] for _ in range(2)]
    assert result.code == 1, result.err  # one of the replies is an error
    assert result.out.splitlines() == ["ok {}", 'error {"errors":{"body":["can\'t be blank"]}}', "ok {}"]
    assert bodies == ["one", "three"]
    assert chat_server.stats.connections == 2  # the listener, and one for all the stdin lines


async def next_message(channel, event: str):
    """The payload of the next ``event`` on ``channel``, skipping presence and other events."""
    async with asyncio.timeout(TIMEOUT):
        async for message in channel.events():
            if getattr(message, "event", None) == event:
                return message.payload


async def broadcast(url: str, mint, topic: str, event: str, payload: dict) -> None:
    """Publish server-side through the admin plane, as ``send --broadcast`` does."""
    async with Client(url, token=mint(1, admin=True)) as client:
        admin = client.channel(ADMIN_TOPIC)
        await admin.join(TIMEOUT)
        reply = await admin.push("broadcast", {"topic": topic, "event": event, "payload": payload}, TIMEOUT)
        assert reply.status == "ok"


async def test_send_a_bad_stdin_line_is_skipped_and_exits_2(chat_server):
    result = await chanctl("send", "room:42", "new_msg", "-", *user_args(chat_server.url, "42"), stdin='nope\n{"body":"x"}\n')
    assert result.code == 2
    assert result.out == "ok {}\n"
    assert "stdin line 1 is not JSON" in result.err


async def test_send_usage_errors_exit_2_without_traceback(chat_server):
    bad_json = await chanctl("send", "room:42", "new_msg", "{bad", *user_args(chat_server.url, "42"))
    no_server = await chanctl("send", "room:42", "new_msg")
    # No --user, --token, CHANCTL_TOKEN, and no secret to act as the operator with.
    no_identity = await chanctl("send", "room:42", "new_msg", "--url", chat_server.url, env={"CHANCTL_SECRET": ""})
    for result in (bad_json, no_server, no_identity):
        assert result.code == 2 and "Traceback" not in result.err, result.err
    assert "PAYLOAD is not JSON" in bad_json.err
    assert "no server given" in no_server.err
    assert "no identity" in no_identity.err


async def test_send_refused_join_and_refused_token_exit_3(chat_server, mint):
    join = await chanctl("send", "room:42", "new_msg", '{"body":"x"}', *user_args(chat_server.url, "99"))
    token = await chanctl("send", "room:42", "new_msg", "--url", chat_server.url, env={"CHANCTL_TOKEN": "forged.token.here"})
    not_admin = await chanctl("send", "room:lobby", "announce", "--broadcast", "--url", chat_server.url,
                              env={"CHANCTL_TOKEN": mint(42)})
    assert join.code == 3 and 'join room:42 refused: {"reason": "unauthorized"}' in join.err
    assert token.code == 3 and "HTTP 403" in token.err
    assert not_admin.code == 3 and "join chanctl:admin refused" in not_admin.err


async def test_send_unreachable_and_no_reply_exit_4(chat_server, unused_tcp_port):
    unreachable = await chanctl("send", "room:42", "new_msg", *user_args(f"ws://127.0.0.1:{unused_tcp_port}/socket", "42"))
    assert unreachable.code == 4 and "cannot reach" in unreachable.err
    # A server that accepts the socket and never answers: the join times out.
    silent = await asyncio.start_server(_accept_and_stall, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    async with silent:
        stalled = await chanctl("send", "room:42", "new_msg", "--timeout", "0.5", *user_args(f"ws://127.0.0.1:{port}/socket", "42"))
    assert stalled.code == 4, stalled.err


async def _accept_and_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)  # the upgrade request; never answered
    await reader.read()


async def test_listen_prints_events_of_every_topic_until_count(chat_server, mint, spawn):
    listener = await spawn("listen", "updates:all", "notifications:user_7", "--count", "2",
                                   *user_args(chat_server.url, "7"))
    assert listener.stderr is not None and listener.stdout is not None
    assert "listening on updates:all, notifications:user_7" in (await asyncio.wait_for(listener.stderr.readline(), TIMEOUT)).decode()
    await broadcast(chat_server.url, mint, "updates:all", "release", {"version": "1.2"})
    await broadcast(chat_server.url, mint, "notifications:user_7", "mention", {"by": 42})
    out, errors = await asyncio.wait_for(listener.communicate(), TIMEOUT)
    assert listener.returncode == 0
    assert out.decode().splitlines() == ['updates:all release {"version":"1.2"}', 'notifications:user_7 mention {"by":42}']
    assert errors == b""  # its own close at --count is no "disconnected (close code 1000)"


async def test_listen_summarizes_presence_joins_and_leaves(chat_server, mint, spawn):
    listener = await spawn("listen", "room:lobby", "--event", "presence", "--count", "3", *user_args(chat_server.url, "7"))
    assert listener.stderr is not None and listener.stdout is not None
    await asyncio.wait_for(listener.stderr.readline(), TIMEOUT)  # listening on ...
    assert await asyncio.wait_for(listener.stdout.readline(), TIMEOUT) == b"room:lobby presence joined: 7\n"
    async with Client(chat_server.url, token=mint(42)) as client:
        await client.channel("room:lobby").join(TIMEOUT)
        assert await asyncio.wait_for(listener.stdout.readline(), TIMEOUT) == b"room:lobby presence joined: 42\n"
    assert await asyncio.wait_for(listener.stdout.readline(), TIMEOUT) == b"room:lobby presence left: 42\n"
    assert await asyncio.wait_for(listener.wait(), TIMEOUT) == 0


async def test_listen_shows_a_presence_update_as_an_update(chat_server, mint, spawn):
    listener = await spawn("listen", "room:lobby", *user_args(chat_server.url, "7"))  # killed at teardown
    assert listener.stderr is not None and listener.stdout is not None
    await asyncio.wait_for(listener.stderr.readline(), TIMEOUT)  # listening on ...
    assert await asyncio.wait_for(listener.stdout.readline(), TIMEOUT) == b"room:lobby presence joined: 7\n"
    async with Client(chat_server.url, token=mint(42)) as client:
        lobby = client.channel("room:lobby")
        await lobby.join(TIMEOUT)
        assert await asyncio.wait_for(listener.stdout.readline(), TIMEOUT) == b"room:lobby presence joined: 42\n"
        assert (await lobby.push("typing", {"typing": True}, TIMEOUT)).status == "ok"
        # Phoenix sends it as a leave of the old meta and a join of the new one, in one diff.
        assert await asyncio.wait_for(listener.stdout.readline(), TIMEOUT) == b"room:lobby presence updated: 42\n"


async def test_listen_refused_join_exits_3_and_timeout_without_count_exits_0(chat_server):
    refused = await chanctl("listen", "room:42", *user_args(chat_server.url, "99"))
    quiet = await chanctl("listen", "updates:all", "--timeout", "0.3", *user_args(chat_server.url, "7"))
    short = await chanctl("listen", "updates:all", "--timeout", "0.3", "--count", "1", *user_args(chat_server.url, "7"))
    assert refused.code == 3
    assert refused.err.splitlines() == ["chanctl: join room:42 refused: {\"reason\": \"unauthorized\"}"]
    assert (quiet.code, quiet.out) == (0, "")
    assert "disconnected" not in quiet.err  # the close at --timeout is its own
    assert short.code == 4


async def test_listen_survives_a_server_restart_on_the_same_port(chat_config, mint, spawn):
    server = build_server(chat_config, host="127.0.0.1", port=0)
    await server.start()
    port = server.port
    listener = await spawn("listen", "updates:all", "--json", "--count", "2", *user_args(server.url, "7"))
    assert listener.stderr is not None and listener.stdout is not None
    try:
        await asyncio.wait_for(listener.stderr.readline(), TIMEOUT)  # listening on ...
        await broadcast(server.url, mint, "updates:all", "news", {"body": "before"})
        first = orjson.loads(await asyncio.wait_for(listener.stdout.readline(), TIMEOUT))
        await server.shutdown()
        server = build_server(chat_config, host="127.0.0.1", port=port)
        await server.start()
        async with asyncio.timeout(TIMEOUT):
            while b"rejoined" not in await listener.stderr.readline():
                pass
        await broadcast(server.url, mint, "updates:all", "news", {"body": "after"})
        second = orjson.loads(await asyncio.wait_for(listener.stdout.readline(), TIMEOUT))
        assert await asyncio.wait_for(listener.wait(), TIMEOUT) == 0
    finally:
        await server.shutdown()
    assert (first["payload"]["body"], second["payload"]["body"]) == ("before", "after")


async def test_token_revoke_closes_the_users_sockets(chat_server, mint):
    async with await RawClient.connect(chat_server.url, mint(7)) as member:
        result = await chanctl("token", "revoke", "--user", "7", "--url", chat_server.url, "--config", str(CHAT))
        assert result.code == 0, result.err
        assert result.out.startswith("revoked: closed 1 socket; refused until 20")
        with pytest.raises(ConnectionClosed):
            await member.recv()
        assert member.ws.close_code == 4403
    token = mint(42)
    result = await chanctl("token", "revoke", token, "--url", chat_server.url, "--config", str(CHAT), "--json")
    assert result.code == 0 and orjson.loads(result.out)["response"]["closed"] == 0
    result = await chanctl("token", "revoke", token, "--user", "7", "--url", chat_server.url, "--config", str(CHAT))
    assert result.code == 2 and "one of them" in result.err
    result = await chanctl("token", "revoke", "forged.x.y", "--url", chat_server.url, "--config", str(CHAT))
    assert result.code == 1 and result.out.startswith('error {"reason":"token invalid"')


async def test_listen_since_replays_from_an_offset(make_server, mint):
    yaml = 'auth: {secret: "${CHANCTL_SECRET}"}\ntopics:\n  "room:{id}": {join: true, history: {size: 10, ttl: 5m}}\n'
    async with make_server(yaml) as server:
        for n in (1, 2, 3):
            server.pubsub.broadcast("room:1", "n", {"n": n})
        args = ["--url", server.url, "--token", mint(7), "--json"]
        result = await chanctl("listen", "room:1", "--since", "1", "--count", "2", *args)
        assert result.code == 0, result.err
        assert [orjson.loads(line)["payload"]["n"] for line in result.out.splitlines()] == [2, 3]
        result = await chanctl("listen", "room:1", "--since", "1@nope", "--timeout", "0.5", *args)
        assert "could not recover the broadcasts missed since {'offset': 1, 'epoch': 'nope'}" in result.err
        result = await chanctl("listen", "room:1", "--since", "x", *args)
        assert result.code == 2 and "--since takes OFFSET" in result.err


async def test_listen_and_send_escape_what_the_server_sends(chat_server, mint, spawn):
    """Issue 16: server-controlled strings (an event name, C1 controls and bidi overrides inside a
    payload) reached the terminal raw; JSON output stays JSON that decodes to the same strings."""
    hostile = {"t": "a\u202eb\x85c\x1b[2J"}
    for json_flag in ([], ["--json"]):
        listener = await spawn("listen", "updates:all", "--count", "1", *json_flag, *user_args(chat_server.url, "7"))
        assert listener.stderr is not None
        await asyncio.wait_for(listener.stderr.readline(), TIMEOUT)  # listening
        await broadcast(chat_server.url, mint, "updates:all", "evil\x1b]0;title\x07", hostile)
        out, _ = await asyncio.wait_for(listener.communicate(), TIMEOUT)
        line = out.decode().strip()
        assert not any(ch in line for ch in "\x1b\x07\x85\u202e"), line
        if json_flag:
            assert orjson.loads(line) == {"topic": "updates:all", "event": "evil\x1b]0;title\x07", "payload": hostile}
        else:
            assert line == 'updates:all evil\\x1b]0;title\\x07 {"t":"a\\u202eb\\u0085c\\u001b[2J"}'


async def test_listen_count_counts_events_not_its_own_join(chat_server, mint, spawn):
    listener = await spawn("listen", "room:lobby", "--count", "1", *user_args(chat_server.url, "7"))
    assert listener.stdout is not None
    assert await asyncio.wait_for(listener.stdout.readline(), TIMEOUT) == b"room:lobby presence joined: 7\n"
    await broadcast(chat_server.url, mint, "room:lobby", "news", {"n": 1})
    out, _ = await asyncio.wait_for(listener.communicate(), TIMEOUT)
    assert listener.returncode == 0
    assert out == b'room:lobby news {"n":1}\n'


async def test_listen_event_and_no_presence_select_what_prints(chat_server, mint, spawn):
    listener = await spawn("listen", "room:lobby", "--event", "news", "--no-presence", "--count", "1",
                           *user_args(chat_server.url, "7"))
    assert listener.stderr is not None
    assert b"listening on" in await asyncio.wait_for(listener.stderr.readline(), TIMEOUT)
    await broadcast(chat_server.url, mint, "room:lobby", "other", {"n": 1})
    await broadcast(chat_server.url, mint, "room:lobby", "news", {"n": 2})
    out, _ = await asyncio.wait_for(listener.communicate(), TIMEOUT)
    assert (listener.returncode, out) == (0, b'room:lobby news {"n":2}\n')


async def test_listen_into_head_1_ends_with_0_and_no_traceback(chat_server, mint):
    """`chanctl listen ... | head -1`: head takes one line and goes; listen ends at its next line."""
    command = " ".join([sys.executable, "-m", "chanctl", "listen", "room:lobby", *user_args(chat_server.url, "7")])
    shell = await asyncio.create_subprocess_exec(
        "bash", "-c", command + ' | head -1; echo "listen exited ${PIPESTATUS[0]}" >&2',
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, "CHANCTL_SECRET": SECRET},
    )
    assert shell.stdout is not None
    assert await asyncio.wait_for(shell.stdout.readline(), TIMEOUT) == b"room:lobby presence joined: 7\n"
    await broadcast(chat_server.url, mint, "room:lobby", "news", {"n": 1})  # written into the closed pipe
    out, err = await asyncio.wait_for(shell.communicate(), TIMEOUT)
    assert b"listen exited 0" in err and b"Traceback" not in err and b"Exception ignored" not in err, err.decode()


async def test_listen_exits_3_when_the_server_refuses_its_token_on_reconnect(chat_config, mint, spawn):
    """A rotated secret (the same for an expired or revoked token): the handshake gets 403 on
    every retry, so listen says why and exits 3 instead of retrying forever. Before that, the
    reconnect attempts say their number and their wait."""
    server = build_server(chat_config, host="127.0.0.1", port=0)
    await server.start()
    port = server.port
    listener = await spawn("listen", "updates:all", "--url", server.url, "--token", mint(7))
    assert listener.stderr is not None
    try:
        assert b"listening on" in await asyncio.wait_for(listener.stderr.readline(), TIMEOUT)
        await server.shutdown()
        async with asyncio.timeout(TIMEOUT):
            while not (await listener.stderr.readline()).startswith(b"chanctl: reconnecting in 1 s, attempt"):
                pass
        rotated = load_config(CHAT, env={"CHANCTL_SECRET": "another-secret-" + "x" * 32})
        server = build_server(rotated, host="127.0.0.1", port=port)
        await server.start()
        _, err = await asyncio.wait_for(listener.communicate(), TIMEOUT)
        assert listener.returncode == 3, err.decode()
        assert b"connection refused (HTTP 403): token invalid: bad signature" in err
        assert err.count(b"bad signature") == 1, err.decode()  # said once, as listen exits
    finally:
        await server.shutdown()


async def test_an_oversized_push_reports_the_close_and_metrics_count_1009(make_server):
    """The server closes with 1009 and says why; send reports that code and reason (exit 1, an
    error, not 4, a timeout), and /metrics counts 1009, not the 1006 websockets sees."""
    config = ('server: {max_frame_size: 1KiB}\nauth: {secret: "${CHANCTL_SECRET}"}\n'
              'topics:\n  "room:{id}": {join: true, events: {new_msg: {do: broadcast}}}\n')
    async with make_server(config) as server:
        payload = orjson.dumps({"body": "x" * 2000}).decode()
        result = await chanctl("send", "room:1", "new_msg", payload, "--url", server.url, "--user", "1")
        assert result.code == 1, result.err
        assert "the server closed the connection before the reply: 1009 frame with" in result.err
        assert "exceeds limit of 1024 bytes" in result.err
        await asyncio.wait_for(server.until_connections(0), TIMEOUT)  # the server's handler ends as the client goes
        assert dict(server.stats.closes) == {1009: 1}
