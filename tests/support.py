"""Shared test tools: timeouts, a raw frame client, the phoenix.js runner, tool requirements."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
SECRET = "test-secret-0123456789abcdef0123456789abcdef"
PRESENCE_EVENTS = frozenset({"presence_state", "presence_diff", "presence_count"})

TIMEOUT = 5.0 * float(os.environ.get("CHANCTL_TEST_TIMEOUT_SCALE", "1"))
"""Every wait in the suite derives from this; scale it on a slow machine."""
QUIET = 0.3 * float(os.environ.get("CHANCTL_TEST_TIMEOUT_SCALE", "1"))
"""How long 'nothing arrives' is watched for (PROTOCOL.md §10's '(none)' window)."""


def require(tool: str, reason: str) -> None:
    """Skip when ``tool`` is missing on a developer machine; fail in CI, where it must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must install it (.ci/run)", pytrace=False)
    pytest.skip(reason)


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        require("node", "Node.js is not installed")
    for package in ("phoenix", "@supabase/realtime-js", "@supabase/supabase-js"):  # what harness.mjs imports
        if not (JS_DIR / "node_modules" / package).is_dir():
            require("npm", f"{package} is not installed: run `npm ci --prefix tests/js`")
    return node  # type: ignore[return-value]


class RawClient:
    """A WebSocket speaking raw Phoenix frames, for conformance tests."""

    def __init__(self, ws: websockets.ClientConnection, ignore: frozenset[str] = frozenset()):
        self.ws = ws
        self.ignore = ignore
        """Events whose frames ``recv`` and ``nothing`` skip, e.g. presence frames in tests not about presence."""

    @classmethod
    async def connect(
        cls, url: str, token: str | None, vsn: str | None = "2.0.0", ignore: frozenset[str] = frozenset(), **kwargs: Any
    ) -> "RawClient":
        query = []
        if token is not None:
            query.append(f"token={token}")
        if vsn is not None:
            query.append(f"vsn={vsn}")
        ws = await websockets.connect(url + ("?" + "&".join(query) if query else ""), **kwargs)
        return cls(ws, ignore)

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                frame = orjson.loads(await self.ws.recv())
                if not self._ignored(frame):
                    return frame

    def _ignored(self, frame: Any) -> bool:
        event = frame[3] if isinstance(frame, list) else frame.get("event") if isinstance(frame, dict) else None
        return event in self.ignore

    async def recv_until(self, predicate: Any, timeout: float = TIMEOUT) -> Any:
        """The first frame matching ``predicate``, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if predicate(frame):
                    return frame

    async def nothing(self, window: float = QUIET) -> None:
        """Assert that no frame (but ignored ones) arrives within ``window``."""
        try:
            frame = await self.recv(window)
        except TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {frame!r}")

    async def call(self, frame: list[Any]) -> Any:
        """Send a frame and return the reply with its ref, skipping pushes and broadcasts."""
        await self.send(frame)
        return await self.recv_until(lambda f: f[3] == "phx_reply" and f[1] == frame[1])

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def flood_past_the_rate_limit(flood: RawClient, calm: RawClient, topic: str, event: str) -> None:
    """``flood`` pushes 100 ``event`` messages at once on ``topic``, which both clients have joined,
    into a bucket of ``{per_second: 5, burst: 10}``: 9 pass (the join took one of 10), 20 are
    refused, the 21st closes the socket (1008), whose close handshake still completes though the
    client sends on; ``calm`` gets the 9 that passed, in order, and is answered after. Each message's
    payload is ``{"body": "<its number>"}``."""
    for ref in range(100):
        await flood.send(["1", str(ref), topic, event, {"body": str(ref)}])
    replies = []
    with pytest.raises(websockets.ConnectionClosedError) as info:
        while True:
            replies.append(await flood.recv())
    assert info.value.rcvd.code == 1008 and "rate limit" in info.value.rcvd.reason
    limited = [r for r in replies if r[3] == "phx_reply" and r[4]["response"].get("reason") == "rate limited"]
    assert len(limited) == 20 and limited[0][4]["response"]["retry_after_ms"] > 0
    passed = [(await calm.recv_until(lambda f: f[3] == event))[4]["body"] for _ in range(9)]
    assert passed == [str(n) for n in range(9)]
    assert (await calm.call([None, "2", "phoenix", "heartbeat", {}]))[4]["status"] == "ok"


async def until_trimmed(server: Any, trims: int) -> None:
    """Until ``server`` has made ``trims`` memory trims (chanctl.server.memory), which its timer runs."""
    async with asyncio.timeout(TIMEOUT):
        while server.stats.memory.trims < trims:
            await asyncio.sleep(0.01)


async def closed_with(client: RawClient) -> websockets.frames.Close:
    """The close frame the server sent, after asserting no data frame came before it."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        frame = await asyncio.wait_for(client.ws.recv(), TIMEOUT)
        raise AssertionError(f"expected a close, got {frame!r}")
    assert info.value.rcvd is not None
    return info.value.rcvd


async def until_subscribed(pubsub: Any, topic: str, scenario: asyncio.Task[Any]) -> None:
    """Wait until ``topic`` has a subscriber joined by a Node ``scenario`` (no event says a JS
    client joined, so the subscription is watched); a scenario that ended first fails the test with
    its own error instead of a count that reads 0 later."""
    async with asyncio.timeout(2 * TIMEOUT):
        while pubsub.subscriber_count(topic) == 0:
            if scenario.done():
                raise AssertionError(f"the scenario ended before it joined {topic}: {await scenario!r}")
            await asyncio.sleep(0.01)


async def run_js(script: str, timeout: float = 4 * TIMEOUT, **env: str) -> list[dict[str, Any]]:
    """Run a phoenix.js scenario (see tests/js/harness.mjs); returns its emitted JSON lines.

    Fails the test with the scenario's output when it errors or times out.
    """
    node = require_node()
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "harness.mjs"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HARNESS_TIMEOUT_MS": str(int(timeout * 1000)), **env},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(script.encode()), timeout + 5)
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    if proc.returncode != 0:
        pytest.fail(f"phoenix.js scenario failed (exit {proc.returncode}):\n{stdout.decode()}\n{stderr.decode()}")
    return lines


class ManualClock:
    """A clock for :attr:`PresenceTracker.clock`: time stands still until a test calls :meth:`advance`,
    which runs the timers that fall due, so batching windows are stepped through, never waited for."""

    class Timer:
        def __init__(self, when: float, callback: Any, args: tuple[Any, ...]):
            self.when, self.callback, self.args, self.cancelled = when, callback, args, False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self, now: float = 1000.0):
        self.now = now
        self._timers: list[ManualClock.Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> "ManualClock.Timer":
        timer = self.Timer(when, callback, args)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted((t for t in self._timers if t.when <= self.now), key=lambda t: t.when)
        self._timers = [t for t in self._timers if t.when > self.now]
        for timer in due:
            if not timer.cancelled:
                timer.callback(*timer.args)


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence; ``restart`` keeps the port."""

    def __init__(self, binary: str):
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "no", "--loglevel", "notice"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        seen = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # it logs this line once it listens: no polling
            seen.append(line)
            if "Ready to accept connections" in line:
                threading.Thread(target=lambda: seen.extend(self.proc.stdout), daemon=True).start()  # type: ignore[union-attr]
                return
        raise AssertionError("redis-server did not start:\n" + "".join(seen))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_redis() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        require("redis-server", "redis-server is not installed (apt-get install -y redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        require("redis", "the redis client is not installed: pip install -e '.[test]'")
    return binary  # type: ignore[return-value]
