"""Phoenix's LongPoll transport: phoenix.js over it, the fallback from a blocked WebSocket, and the
HTTP side's answers to bad input (read off Phoenix.Transports.LongPoll)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from chanctl.protocol.serializers import negotiate
from chanctl.server.runtime import ChannelServer
from tests.conftest import CHAT
from tests.support import TIMEOUT, RawClient, run_js


def chat_with_longpoll(window: str = "10s", **server: str) -> str:
    """The chat sample with LongPoll enabled (and other ``server:`` keys)."""
    extra = "".join(f"\n  {key}: {value}" for key, value in server.items())
    return CHAT.read_text().replace("  path: /socket\n", f"  path: /socket\n  longpoll: {{enabled: true, window: {window}}}{extra}\n", 1)


@pytest.fixture
async def lp_server(make_server: Callable[..., ChannelServer]) -> AsyncIterator[ChannelServer]:
    async with make_server(chat_with_longpoll()) as server:
        yield server


class Http:
    """A keep-alive HTTP/1.1 client on one TCP connection, as a browser's fetch would use."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: ChannelServer) -> Http:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def request(self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT * 3)
        status_line, *header_lines = head.decode().split("\r\n")
        found = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if h)}
        data = await self.reader.readexactly(int(found.get("content-length", "0")))
        return int(status_line.split()[1]), found, data

    async def json(self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        status, _, data = await self.request(method, target, body, headers)
        assert status == 200
        return orjson.loads(data)

    def close(self) -> None:
        self.writer.close()


def lp(server: ChannelServer, token: str, session: str | None = None) -> str:
    target = f"/socket/longpoll?token={token}&vsn=2.0.0"
    return target + (f"&token={session}" if session else "&")


async def open_session(http: Http, server: ChannelServer, token: str) -> str:
    opened = await http.json("GET", lp(server, token))
    assert opened["status"] == 410 and opened["messages"] == []
    return opened["token"]


@asynccontextmanager
async def lp_session(server: ChannelServer, mint: Callable[..., str]) -> AsyncIterator[tuple[Http, str, str]]:
    """An HTTP connection with an open LongPoll session of user 42: the connection, the user's token, the session's."""
    http = await Http.connect(server)
    token = mint(42)
    try:
        yield http, token, await open_session(http, server, token)
    finally:
        http.close()


async def poll_until(http: Http, server: ChannelServer, token: str, session: str, count: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < count:
        answer = await http.json("GET", lp(server, token, session))
        assert answer["status"] in (200, 204), answer
        got += [orjson.loads(m) for m in answer["messages"]]
    return got


# -- phoenix.js ------------------------------------------------------------------------------

LONGPOLL_CHAT = """
const connect = (token, transport) => {
  const socket = new Socket(env.URL, { transport, params: { token }, reconnectAfterMs: () => 60000 });
  socket.connect();
  return socket;
};
const ann = connect(env.T42, LongPoll), bob = connect(env.T7, WebSocket);
const annRoom = ann.channel("room:42"), bobRoom = bob.channel("room:42");
const annPresence = new Presence(annRoom), bobPresence = new Presence(bobRoom);
const bobGot = new Promise((ok) => bobRoom.on("new_msg", ok));
const annGot = new Promise((ok) => annRoom.on("new_msg", ok));
await until((ok) => bobRoom.join().receive("ok", ok));
emit({ joined: await until((ok) => annRoom.join().receive("ok", ok)), transport: ann.transport.name });
const both = (p) => until((ok) => { const check = () => p.list((id) => id).length === 2 && ok(p.list((id) => id).sort()); p.onSync(check); check(); });
emit({ annSees: await both(annPresence), bobSees: await both(bobPresence) });
emit({ reply: await until((ok) => annRoom.push("new_msg", { body: "over longpoll" }).receive("ok", ok)) });
emit({ ann: await annGot, bob: await bobGot });
const bobBack = new Promise((ok) => annRoom.on("new_msg", ok));
await until((ok) => bobRoom.push("new_msg", { body: "over websocket" }).receive("ok", ok));
emit({ annFromBob: await bobBack });
emit({ blank: await until((ok) => annRoom.push("new_msg", { body: "" }).receive("error", ok)) });
emit({ refused: await until((ok) => ann.channel("room:9").join().receive("error", ok)) });
const left = until((ok) => { bobPresence.onLeave((id) => ok(id)); });
await until((ok) => annRoom.leave().receive("ok", ok));
emit({ left: await left });
const forged = connect(env.FORGED, LongPoll);
emit({ forged: await until((ok) => forged.onError((e) => ok(e))) });
for (const s of [ann, bob, forged]) s.disconnect();
"""


@pytest.mark.node
async def test_phoenix_js_chats_over_longpoll_with_a_websocket_peer(lp_server: ChannelServer, mint: Callable[..., str]):
    t42 = mint(42)
    forged = t42[:-4] + ("AAAA" if not t42.endswith("AAAA") else "BBBB")
    out = await run_js(LONGPOLL_CHAT, URL=lp_server.url.removesuffix("/websocket"), T42=t42, T7=mint(7), FORGED=forged)
    joined, sees, reply, got, from_bob, blank, refused, left, forged_result = out
    assert joined == {"joined": {}, "transport": "LongPoll"}
    assert sees == {"annSees": ["42", "7"], "bobSees": ["42", "7"]}
    assert reply == {"reply": {}}
    assert got["ann"]["body"] == got["bob"]["body"] == "over longpoll" and got["ann"]["id"] == got["bob"]["id"]
    assert from_bob["annFromBob"]["body"] == "over websocket"
    assert blank == {"blank": {"errors": {"body": ["can't be blank"]}}}
    assert refused == {"refused": {"reason": "unauthorized"}}
    assert left == {"left": "42"}
    assert forged_result == {"forged": 403}


FALLBACK = """
// A proxy that blocks WebSockets: every upgrade fails at once.
class Blocked extends WebSocket { constructor(url, protocols) { super("ws://127.0.0.1:9/blocked", protocols); } }
const socket = new Socket(env.URL, { transport: Blocked, longPollFallbackMs: 300, params: { token: env.T42 } });
socket.connect();
const room = socket.channel("room:42");
await until((ok) => room.join().receive("ok", ok), 10000);
emit({ transport: socket.transport.name });
const got = new Promise((ok) => room.on("new_msg", ok));
await until((ok) => room.push("new_msg", { body: "fell back" }).receive("ok", ok));
emit({ got: (await got).body });
socket.disconnect();
"""


@pytest.mark.node
async def test_phoenix_js_falls_back_to_longpoll_when_websockets_are_blocked(lp_server: ChannelServer, mint: Callable[..., str]):
    out = await run_js(FALLBACK, URL=lp_server.url.removesuffix("/websocket"), T42=mint(42))
    assert out == [{"transport": "LongPoll"}, {"got": "fell back"}]


# -- the HTTP side, frame by frame ------------------------------------------------------------

async def test_a_session_gets_replies_and_broadcasts_in_one_poll(lp_server: ChannelServer, mint: Callable[..., str]):
    async with lp_session(lp_server, mint) as (http, token, session):
        frames = b"\n".join(orjson.dumps(f) for f in (["1", "1", "room:42", "phx_join", {}], ["1", "2", "room:42", "new_msg", {"body": "hi"}]))
        assert await http.json("POST", lp(lp_server, token, session), frames, {"Content-Type": "application/x-ndjson"}) == {"status": 200}
        got = await poll_until(http, lp_server, token, session, 4)
        events = [(m[3], m[1]) for m in got]
        assert ("phx_reply", "1") in events and ("phx_reply", "2") in events and ("new_msg", None) in events


async def test_the_session_token_may_come_in_a_header(lp_server: ChannelServer, mint: Callable[..., str]):
    async with lp_session(lp_server, mint) as (http, token, session):
        join = orjson.dumps(["1", "1", "room:42", "phx_join", {}])
        headers = {"X-Phoenix-Longpoll-Token": session, "Content-Type": "application/x-ndjson"}
        assert await http.json("POST", "/socket/longpoll?vsn=2.0.0", join, headers) == {"status": 200}
        answer = await http.json("GET", "/socket/longpoll?vsn=2.0.0", headers={"X-Phoenix-Longpoll-Token": session})
        assert answer["status"] == 200 and orjson.loads(answer["messages"][0])[3] == "phx_reply"


@pytest.mark.parametrize("query", ["token=nope&vsn=2.0.0", "vsn=2.0.0", "token={token}&vsn=9.0.0"])
async def test_a_refused_connect_answers_403(lp_server: ChannelServer, mint: Callable[..., str], query: str):
    http = await Http.connect(lp_server)
    refused = lp_server.stats.refused
    assert await http.json("GET", "/socket/longpoll?" + query.format(token=mint(42))) == {"status": 403}
    assert lp_server.stats.refused == refused + 1
    http.close()


async def test_an_unknown_session_is_gone(lp_server: ChannelServer, mint: Callable[..., str]):
    http = await Http.connect(lp_server)
    assert (await http.json("GET", lp(lp_server, mint(42), "lp.nosuchsession")))["status"] == 410
    assert await http.json("POST", lp(lp_server, mint(42), "lp.nosuchsession"), b"[]") == {"status": 410}
    http.close()


async def test_bad_batches_get_a_status_and_leave_the_session_working(lp_server: ChannelServer, mint: Callable[..., str]):
    async with lp_session(lp_server, mint) as (http, token, session):
        ndjson = {"Content-Type": "application/x-ndjson"}
        assert await http.json("POST", lp(lp_server, token, session), b"not base64 !", ndjson) == {"status": 400}
        assert await http.json("POST", lp(lp_server, token, session), b"\n".join([b"[]"] * 101), ndjson) == {"status": 400}
        assert await http.json("POST", lp(lp_server, token, session), b"\xff\xfe", ndjson) == {"status": 400}
        join = orjson.dumps(["1", "1", "room:42", "phx_join", {}])
        assert await http.json("POST", lp(lp_server, token, session), join, ndjson) == {"status": 200}
        assert (await poll_until(http, lp_server, token, session, 1))[0][3] == "phx_reply"


async def test_a_message_over_the_frame_limit_closes_the_session_with_1009(make_server: Callable[..., ChannelServer], mint: Callable[..., str]):
    async with make_server(chat_with_longpoll(max_frame_size="1KiB")) as server, lp_session(server, mint) as (http, token, session):
        big = orjson.dumps(["1", "1", "room:42", "phx_join", {"x": "y" * 2000}])
        assert await http.json("POST", lp(server, token, session), big, {"Content-Type": "application/x-ndjson"}) == {"status": 413}
        assert (await http.json("GET", lp(server, token, session)))["status"] == 410
        await asyncio.wait_for(server.until_connections(0), TIMEOUT)  # the close is counted as the handler ends
        assert server.stats.closes[1009] == 1


async def test_a_body_over_max_body_is_refused_before_it_is_read(make_server: Callable[..., ChannelServer], mint: Callable[..., str]):
    async with make_server(chat_with_longpoll().replace("window: 10s}", "window: 10s, max_body: 1KiB}")) as server, lp_session(server, mint) as (http, token, session):
        status, headers, body = await http.request("POST", lp(server, token, session), b"[" * 2000)
        assert status == 413 and orjson.loads(body) == {"status": 413} and headers["connection"] == "close"


async def test_a_session_that_stops_polling_ends_and_leaves_its_channels(make_server: Callable[..., ChannelServer], mint: Callable[..., str]):
    async with make_server(chat_with_longpoll(window="0.2s")) as server, lp_session(server, mint) as (http, token, session):
        join = orjson.dumps(["1", "1", "room:42", "phx_join", {}])
        await http.json("POST", lp(server, token, session), join, {"Content-Type": "application/x-ndjson"})
        assert len(server.connections) == 1 and server.pubsub.subscriptions("room:42")
        await asyncio.wait_for(server.until_connections(0), TIMEOUT)  # 1.5 windows without a poll
        assert not server.pubsub.subscriptions("room:42") and server.longpoll is not None and not server.longpoll.sessions
        assert server.stats.closes[1001] == 1
        assert (await http.json("GET", lp(server, token, session)))["status"] == 410


async def test_a_quiet_poll_answers_204_after_the_window(make_server: Callable[..., ChannelServer], mint: Callable[..., str]):
    async with make_server(chat_with_longpoll(window="0.2s")) as server, lp_session(server, mint) as (http, token, session):
        assert await http.json("GET", lp(server, token, session)) == {"status": 204, "token": session, "messages": []}


async def test_cors_preflight_and_headers(lp_server: ChannelServer):
    http = await Http.connect(lp_server)
    status, headers, _ = await http.request("OPTIONS", "/socket/longpoll", headers={"Access-Control-Request-Headers": "x-phoenix-longpoll-token"})
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-headers"] == "x-phoenix-longpoll-token"
    assert headers["access-control-allow-methods"] == "get, post, options"
    status, headers, _ = await http.request("PUT", "/socket/longpoll")
    assert status == 400 and headers["cache-control"] == "no-store"
    http.close()


async def test_longpoll_is_off_unless_enabled(chat_server: ChannelServer):
    http = await Http.connect(chat_server)
    status, _, _ = await http.request("GET", "/socket/longpoll?vsn=2.0.0")
    assert status == 404
    http.close()


async def test_the_websocket_and_health_still_answer_beside_longpoll(lp_server: ChannelServer, mint: Callable[..., str]):
    async with await RawClient.connect(lp_server.url, mint(42)) as client:
        assert (await client.call(["1", "1", "room:42", "phx_join", {}]))[4]["status"] == "ok"
    http = await Http.connect(lp_server)
    assert (await http.json("GET", "/healthz"))["status"] == "ok"
    http.close()


async def test_a_broadcast_costs_one_encode_over_both_transports(lp_server: ChannelServer, mint: Callable[..., str], monkeypatch: pytest.MonkeyPatch):
    async with lp_session(lp_server, mint) as (http, token, session):
        await http.json("POST", lp(lp_server, token, session), orjson.dumps(["1", "1", "room:42", "phx_join", {}]), {"Content-Type": "application/x-ndjson"})
        await poll_until(http, lp_server, token, session, 1)
        async with await RawClient.connect(lp_server.url, mint(7), ignore=frozenset({"presence_diff", "presence_state"})) as ws:
            await ws.call(["1", "1", "room:42", "phx_join", {}])
            serializer = negotiate("2.0.0")
            assert serializer is not None
            calls: list[object] = []
            encode = type(serializer).encode
            monkeypatch.setattr(type(serializer), "encode", lambda self, message: calls.append(message) or encode(self, message))
            assert lp_server.pubsub.broadcast("room:42", "news", {"n": 1}) == 2
            assert len([c for c in calls if getattr(c, "event", None) == "news"]) == 1
            assert (await ws.recv())[3] == "news"
            got = await poll_until(http, lp_server, token, session, 1)
            assert [m[3] for m in got if m[3] == "news"] == ["news"]
