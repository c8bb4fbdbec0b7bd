"""The front door's fast path (chanctl.server.upgrade): it takes only upgrades websockets would take,
and answers them with the bytes websockets would write.

Pure tests read plain bytes and hold every head :func:`read_upgrade` takes against websockets' own
sans-I/O server (parse, ``accept``, ``send_response``). Socket tests send the same requests to a
server with and without the fast path and compare the answers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.http11 import MAX_NUM_HEADERS, Request
from websockets.server import ServerProtocol
from websockets.asyncio.server import Server
from websockets.uri import parse_uri

from chanctl.server import runtime
from chanctl.server.upgrade import HEAD_LIMIT, read_upgrade, switching_protocols
from tests.support import TIMEOUT

PATH = b"/socket/websocket"
SERVER = "chanctl/test"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key


def head(*lines: str, target: str = "/socket/websocket?token=a.b.c&vsn=2.0.0", start: str = "") -> bytes:
    request = start or f"GET {target} HTTP/1.1"
    return "".join(f"{line}\r\n" for line in (request, *lines)).encode("latin-1") + b"\r\n"


PLAIN = ("Host: 127.0.0.1:4000", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
         f"Sec-WebSocket-Key: {KEY}")


def websockets_answer(request_head: bytes) -> tuple[Request | None, bytes]:
    """What websockets' own server makes of ``request_head`` (chanctl's settings: no extensions,
    phoenix echoed when offered, its Server header): the request it parsed and its answer."""
    protocol = ServerProtocol(select_subprotocol=lambda _, offered: "phoenix" if "phoenix" in offered else None)
    protocol.receive_data(request_head)
    events = protocol.events_received()
    if not events:
        return None, b"".join(protocol.data_to_send())
    request = events[0]
    response = protocol.accept(request)
    response.headers["Server"] = SERVER
    protocol.send_response(response)
    return request, b"".join(protocol.data_to_send())


def dateless(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", answer)


def assert_as_websockets(request_head: bytes) -> bool:
    """If the fast path takes ``request_head``, websockets reads the same upgrade and writes the same
    answer (Date aside). Returns whether it took it."""
    upgrade = read_upgrade(request_head, PATH)
    if upgrade is None:
        return False
    request, answer = websockets_answer(request_head)
    assert request is not None, "taken, but websockets does not parse it"
    url = urlsplit(request.path)
    assert (request.method, url.path, url.query) == ("GET", PATH.decode(), upgrade.query)
    assert request.headers.get_all("Sec-WebSocket-Protocol") == upgrade.protocol_values
    assert request.headers.get("Origin") == upgrade.origin  # one at most (else MultipleValuesError)
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    chosen = "phoenix" if "phoenix" in upgrade.protocols else None
    assert dateless(switching_protocols(upgrade.key, chosen, SERVER)) == dateless(answer)
    return True


# -- pure: what is taken ------------------------------------------------------------------------


@pytest.mark.parametrize("lines", [
    PLAIN,
    ("Host: x", "Connection: keep-alive, Upgrade", "Upgrade: WebSocket", "Sec-WebSocket-Version: 13",  # Firefox
     f"Sec-WebSocket-Key: {KEY}", "Origin: https://app.example.com", "Sec-WebSocket-Extensions: permessage-deflate"),
    (*PLAIN, "Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.YS5iLmM"),  # phoenix.js authToken
    (*PLAIN, "Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Protocol: phoenix"),
    ("connection:upgrade", "UPGRADE:\t websocket \t", "sec-websocket-version: 13", f"sec-websocket-key:{KEY}", "X-Empty:"),
    (*PLAIN, "Connection: Upgrade", "User-Agent: caf\xe9"),  # two Connection headers; obs-text
    ("Connection: ,Upgrade,,", *PLAIN[2:], "Sec-WebSocket-Protocol: phoenix,"),  # empty list elements, which websockets skips
])
def test_plain_upgrades_are_taken_and_answered_as_websockets_does(lines):
    assert assert_as_websockets(head(*lines))


def test_clients_heads_are_taken():
    """websockets' own client, as chanctl's CLI and the Python clients send it."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1:4000/socket/websocket?token=t&vsn=2.0.0"), subprotocols=["phoenix"])
    assert assert_as_websockets(client.connect().serialize())


@pytest.mark.parametrize("target", ["/socket/websocket", "/socket/websocket?", "/socket/websocket?vsn=2.0.0&token=a%2Eb"])
def test_the_query_is_what_urlsplit_reads(target):
    upgrade = read_upgrade(head(*PLAIN, target=target), PATH)
    assert upgrade is not None and upgrade.query == urlsplit(target).query


# -- pure: what goes to websockets ----------------------------------------------------------------


@pytest.mark.parametrize("request_head", [
    head(*PLAIN, start="get /socket/websocket HTTP/1.1"),
    head(*PLAIN, start="POST /socket/websocket HTTP/1.1"),
    head(*PLAIN, start="GET /socket/websocket HTTP/1.0"),
    head(*PLAIN, start="GET  /socket/websocket HTTP/1.1"),
    head(*PLAIN, target="/socket/websocket/"), head(*PLAIN, target="/healthz"), head(*PLAIN, target="//socket/websocket"),
    head(*PLAIN, target="/socket/websocket#x"), head(*PLAIN, target="/socket/websocket?a=b#x"),
    head(*PLAIN[:-1]), head(*PLAIN[:-2], PLAIN[-1]), head(*PLAIN[:1], *PLAIN[2:]), head(*PLAIN[:2], *PLAIN[3:]),
    head(*PLAIN, f"Sec-WebSocket-Key: {KEY}"), head(*PLAIN, "Sec-WebSocket-Version: 13"),
    head(*PLAIN[:-1], "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA="), head(*PLAIN[:-1], "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA"),
    head(*PLAIN[:3], "Sec-WebSocket-Version: 8", PLAIN[4]), head(*PLAIN, "Upgrade: websocket"),
    head(PLAIN[0], "Connection: close", *PLAIN[2:]),
    head(PLAIN[0], "Connection: Upgrade;x", *PLAIN[2:]), head(PLAIN[0], "Connection: upgrade", "Upgrade: websocket, h2c", *PLAIN[3:]),
    head(*PLAIN, "Content-Length: 0"), head(*PLAIN, "Transfer-Encoding: chunked"),
    head(*PLAIN, "Origin: https://a", "Origin: https://b"),
    head(*PLAIN, "Sec-WebSocket-Protocol:"),
    head(*PLAIN, "Sec-WebSocket-Protocol: a b"),
    head(*PLAIN, "X-Folded: a", " b"), head(*PLAIN, "Bad Name: x"), head(*PLAIN, "X: a\x00b"), head(*PLAIN, "X: a\rb"),
    head(*PLAIN, "X: a\x7f"), head(*PLAIN, ": x"), head(*PLAIN, "NoColon"),
    head(*PLAIN).replace(b"Upgrade\r\n", b"Upgrade\n", 1),
    head(*PLAIN, "X: " + "a" * HEAD_LIMIT),
    head(*PLAIN, *["X: 1"] * (MAX_NUM_HEADERS - len(PLAIN) + 1)),
])
def test_anything_else_goes_to_websockets(request_head):
    assert read_upgrade(request_head, PATH) is None


def test_the_head_limits_are_websockets():
    at_limit = head(*PLAIN, *["X: 1"] * (MAX_NUM_HEADERS - len(PLAIN)))
    assert len(at_limit) <= HEAD_LIMIT and assert_as_websockets(at_limit)


# -- pure: any head --------------------------------------------------------------------------------

NAMES = ["Host", "Connection", "Upgrade", "Sec-WebSocket-Key", "sec-websocket-key", "Sec-WebSocket-Version",
         "Sec-WebSocket-Protocol", "Origin", "Content-Length", "Transfer-Encoding", "X-A", "Bad Name", ""]
VALUES = ["Upgrade", "upgrade", "keep-alive, Upgrade", "websocket", "WebSocket", "websocket, h2c", "13", "8",
          KEY, "AAAAAAAAAAAAAAAAAAAAAB==", "x==", "phoenix", "phoenix, chat", "phoenix,", "", " 0 ", "\t13",
          "https://a", "caf\xe9", "a\x00", "a\x7f", "a:b", ",Upgrade", "Upgrade;"]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Upgrade heads, most of them plain, many changed a little (a header added or dropped, a byte
    changed), so that both sides of every check are drawn. The simplest draw (what hypothesis
    tries first and shrinks towards) is the plain head."""
    odd = draw(st.integers(0, 9)) == 9
    start = " ".join((
        draw(st.sampled_from(["get", "POST"])) if odd else "GET",
        "/socket/websocket?token=a&vsn=2.0.0" if draw(st.integers(0, 3)) else draw(st.sampled_from(
            ["/socket/websocket", "/socket/websocket?#", "/x", "//socket/websocket", "/socket/websocket?a=%20"])),
        draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1 "])) if odd else "HTTP/1.1",
    ))
    lines = [] if draw(st.integers(0, 9)) == 9 else list(PLAIN)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        line = draw(st.sampled_from(NAMES)) + ":" + draw(st.sampled_from(["", " ", "\t"])) + draw(st.sampled_from(VALUES))
        lines.insert(draw(st.integers(0, len(lines))), line)
    if lines and draw(st.integers(0, 4)) == 4:
        del lines[draw(st.integers(0, len(lines) - 1))]
    data = bytearray(head(*lines, start=start))
    if draw(st.integers(0, 3)) == 3:  # a byte changed anywhere before the end
        at = draw(st.integers(0, len(data) - 5))
        data[at] = draw(st.sampled_from([0, 9, 10, 13, 32, 44, 58, 127, 128, 255, 65, 97]))
    return bytes(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads())
def test_whatever_the_fast_path_takes_websockets_takes_alike(request_head):
    assert_as_websockets(request_head)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_after_a_plain_head_line_are_never_taken_unless_websockets_agrees(tail):
    assert_as_websockets(b"GET /socket/websocket HTTP/1.1\r\n" + tail + b"\r\n\r\n")


# -- through real sockets ------------------------------------------------------------------------

CONFIG = """
auth: {secret: "${CHANCTL_SECRET}"}
server: {%s}
topics:
  "room:{id}": {join: true}
"""


async def exchange(srv, request: bytes) -> bytes:
    """The server's answer to ``request``: the head for a 101, everything until it closes otherwise
    (nothing, for a request websockets cannot read)."""
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    try:
        writer.write(request)
        try:
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        except asyncio.IncompleteReadError as closed:
            return closed.partial
        if not answer.startswith(b"HTTP/1.1 101 "):
            answer += await asyncio.wait_for(reader.read(), TIMEOUT)
        return answer
    finally:
        writer.close()


async def answers(srv, monkeypatch, request: bytes) -> tuple[bytes, bytes]:
    """``request``'s answer with the fast path, then with every request read by websockets."""
    fast = await exchange(srv, request)
    with monkeypatch.context() as patched:
        patched.setattr(runtime, "read_upgrade", lambda head, path: None)
        slow = await exchange(srv, request)
    return dateless(fast), dateless(slow)


def authtoken(token: str) -> str:
    """phoenix.js's ``authToken``: the token in a second subprotocol, btoa'd without padding."""
    return "Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx." + base64.b64encode(token.encode()).decode().rstrip("=")


@pytest.mark.parametrize("server, path", [("", "/socket/websocket"), ("longpoll: {enabled: true}", "/socket/websocket"),
                                          ("path: /live/", "/live/websocket"), ("path: /", "/websocket")])
async def test_the_fast_answer_is_websockets_answer(make_server, mint, monkeypatch, server, path):
    answered = []
    monkeypatch.setattr(runtime, "switching_protocols", lambda *args: answered.append(args) or switching_protocols(*args))
    async with make_server(CONFIG % server) as srv:
        token = mint(1)
        for request in (head(*PLAIN, target=f"{path}?token={token}&vsn=2.0.0"),
                        head(*PLAIN, authtoken(token), "Origin: https://app.example.com", target=f"{path}?vsn=1.0.0")):
            fast, slow = await answers(srv, monkeypatch, request)
            assert fast.startswith(b"HTTP/1.1 101 ") and fast == slow
        assert b"Sec-WebSocket-Protocol: phoenix\r\n" in fast
        assert srv.stats.refused == 0
    assert len(answered) == 2  # once per request: the first answers were the fast path's


@pytest.mark.parametrize("target", ["/socket/websocket?token=forged&vsn=2.0.0", "/socket/websocket?token={token}&vsn=3.0.0",
                                    "/socket/websocket?vsn=2.0.0"])
async def test_a_refusal_read_by_the_fast_path_is_websockets_403_counted_once(make_server, mint, monkeypatch, caplog, target):
    caplog.set_level(logging.INFO, logger="chanctl")
    async with make_server(CONFIG % "") as srv:
        fast, slow = await answers(srv, monkeypatch, head(*PLAIN, target=target.format(token=mint(1))))
        assert fast.startswith(b"HTTP/1.1 403 Forbidden\r\n") and fast == slow
        assert srv.stats.refused == 2  # once per request
        assert len([r for r in caplog.records if r.getMessage().startswith("connection refused")]) == 2


@pytest.mark.parametrize("request_head", [
    head(*PLAIN, start="get /socket/websocket?token={token} HTTP/1.1"),
    head(*PLAIN, start="GET /socket/websocket?token={token} HTTP/1.0"),
    head(*PLAIN[:-1], target="/socket/websocket?token={token}"),
    head(*PLAIN[:3], "Sec-WebSocket-Version: 8", PLAIN[4], target="/socket/websocket?token={token}"),
    head(*PLAIN, "Content-Length: 0", target="/socket/websocket?token={token}"),
    head(*PLAIN, "Content-Length: 5", target="/socket/websocket?token={token}"),
    head(*PLAIN, "Origin: https://a", "Origin: https://b", target="/socket/websocket?token={token}"),
    head(*PLAIN, "X-Folded: a", " b", target="/socket/websocket?token={token}"),
    head(*PLAIN, "X: " + "a" * HEAD_LIMIT, target="/socket/websocket?token={token}"),
    head(*PLAIN, "Sec-WebSocket-Protocol: a b", target="/socket/websocket?vsn=2.0.0"),
    head("Host: x", target="/healthz"), head(*PLAIN, target="/socket/websocket/"), head(*PLAIN, start="POST /socket/websocket HTTP/1.1"),
], ids=["lowercase method", "HTTP/1.0", "no key", "version 8", "empty body", "a body", "two origins", "folded line",
        "a line over the limit", "a bad subprotocol list", "healthz", "another path", "POST"])
async def test_odd_requests_get_what_websockets_answers(make_server, mint, monkeypatch, request_head):
    async with make_server(CONFIG % "") as srv:
        request = request_head.replace(b"{token}", mint(1).encode())
        # /healthz: its uptime, and so its length, differs from one answer to the next
        fast, slow = (re.sub(rb'"uptime":[0-9.]+|Content-Length: [0-9]+', b"", answer) for answer in await answers(srv, monkeypatch, request))
        assert fast == slow


async def test_frames_behind_a_fast_upgrade_reach_the_socket_and_the_joins_work(make_server, mint):
    """The 101 and then, from the same TCP write, a join and a heartbeat: both answered."""
    async with make_server(CONFIG % "") as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        join, beat = b'["1","1","room:1","phx_join",{}]', b'[null,"2","phoenix","heartbeat",{}]'
        writer.write(head(*PLAIN, target=f"/socket/websocket?token={mint(1)}&vsn=2.0.0") + masked(join) + masked(beat))
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).startswith(b"HTTP/1.1 101 ")
        replies = [await asyncio.wait_for(reader.readexactly((await reader.readexactly(2))[1]), TIMEOUT) for _ in range(2)]
        writer.close()
        assert replies == [b'["1","1","room:1","phx_reply",{"status":"ok","response":{}}]',
                           b'[null,"2","phoenix","phx_reply",{"status":"ok","response":{}}]']


def masked(text: bytes) -> bytes:
    """One masked text frame (under 126 bytes), as a client sends it."""
    return bytes([0x81, 0x80 | len(text), 1, 2, 3, 4]) + bytes(b ^ (1, 2, 3, 4)[i % 4] for i, b in enumerate(text))


@pytest.mark.parametrize("sent", [b"", b"GET /socket/websocket HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half a head"])
async def test_a_client_that_does_not_finish_its_request_is_dropped_after_the_open_timeout(make_server, monkeypatch, sent):
    """websockets' own open_timeout is off (a timer per handshake); the front door's deadline drops it."""
    monkeypatch.setattr(runtime, "OPEN_TIMEOUT", 0.1)
    async with make_server(CONFIG % "") as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(sent)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # dropped
        writer.close()
        await srv.until_connections(0)
        assert len(srv.deadlines) == 0


async def test_answered_and_lost_connections_leave_no_open_deadline(make_server, mint):
    async with make_server(CONFIG % "") as srv:
        await exchange(srv, head(*PLAIN, target=f"/socket/websocket?token={mint(1)}&vsn=2.0.0"))
        await exchange(srv, head("Host: x", target="/healthz"))
        _, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.close()
    assert len(srv.deadlines) == 0  # the server has closed: every connection's end has run


async def test_with_debug_logging_websockets_reads_the_upgrade_and_logs_it(make_server, mint, caplog):
    """websockets logs each request line and header at debug level (tokens redacted): kept."""
    caplog.set_level(logging.DEBUG, logger="websockets.server")
    async with make_server(CONFIG % "") as srv:
        answer = await exchange(srv, head(*PLAIN, target=f"/socket/websocket?token={mint(1)}&vsn=2.0.0"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    logged = [r.getMessage() for r in caplog.records]
    assert "< GET /socket/websocket?token=<redacted>&vsn=2.0.0 HTTP/1.1" in logged and "> HTTP/1.1 101 Switching Protocols" in logged


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(heads())
def test_any_head_gets_the_same_answer_with_the_fast_path_as_without(make_server, mint, monkeypatch, request_head):
    """Through real sockets: whatever the head, the server answers as it does with every request
    read by websockets (the token made valid first, so that most heads reach the upgrade)."""
    request = request_head.replace(b"token=a&", f"token={mint(1)}&".encode())

    async def compare() -> None:
        async with make_server(CONFIG % "") as srv:
            fast, slow = (re.sub(rb'"uptime":[0-9.]+|Content-Length: [0-9]+', b"", answer)
                          for answer in await answers(srv, monkeypatch, request))
            assert fast == slow

    asyncio.run(compare())


async def test_a_malformed_subprotocol_header_without_a_token_is_a_403_not_a_traceback(make_server, caplog):
    """The token is looked for in phoenix.js's authToken subprotocol when the query has none, and a
    Sec-WebSocket-Protocol websockets cannot parse made that raise: "process_request failed" with a
    traceback in the log, and a 500."""
    caplog.set_level(logging.INFO)
    async with make_server(CONFIG % "") as srv:
        answer = await exchange(srv, head(*PLAIN, "Sec-WebSocket-Protocol: phoenix base64url.bearer.phx.YQ",
                                          target="/socket/websocket?vsn=2.0.0"))
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert answer.endswith(b"no token: invalid Sec-WebSocket-Protocol header: expected comma at 8 in "
                               b"phoenix base64url.bearer.phx.YQ\n")
        assert srv.stats.refused == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_an_upgrade_read_while_the_server_closes_gets_websockets_503(make_server, mint, monkeypatch):
    """websockets answers 503 to an upgrade it reads once its server stopped serving (a connection
    accepted just before): the fast path leaves those to it."""
    async with make_server(CONFIG % "") as srv:
        monkeypatch.setattr(Server, "is_serving", lambda self: False)
        answer = await exchange(srv, head(*PLAIN, target=f"/socket/websocket?token={mint(1)}&vsn=2.0.0"))
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and answer.endswith(b"Server is shutting down.\n")
