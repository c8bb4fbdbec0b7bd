"""A worker process: its share of the clients, driven through a scenario by the coordinator.

Client ``i`` of the run belongs to worker ``i % workers``. Every worker sets its clients up, says
``ready``, and starts the measured part at the ``go`` time the coordinator chose (one monotonic
clock for the machine), so waves, drops and chat schedules line up across processes without more
messages. Progress goes up every quarter second; the ``result`` (histograms, tallies, counts, the
worker's own CPU time) when the coordinator says ``stop``.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from array import array
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

import orjson

from chanctl.bench.control import Control
from chanctl.bench.plan import STAMP, Plan, now_us, render, stamp
from chanctl.bench.stats import Histogram, Tally
from chanctl.bench.wire import BenchSocket, FrameHandler
from chanctl.client.presence import Presence
from chanctl.errors import ClientError, ConnectionLost, ConnectRefused, Unreachable
from chanctl.protocol.messages import HEARTBEAT, PHOENIX_TOPIC, PHX_JOIN, PHX_LEAVE, PHX_REPLY, Message, Reply

__all__ = ["loop_name", "raise_fd_limit", "run_loop", "worker_main"]

PROGRESS_EVERY = 0.25
HEARTBEAT_EVERY = 30.0
"""phoenix.js's heartbeat period: servers close sockets that stay silent (Phoenix after 60 s)."""
CHAT_DRAIN = 2.0
"""Seconds the chat scenario waits after its last scheduled send for deliveries still on their way."""


def raise_fd_limit(wanted: int) -> str | None:
    """Raise this process's open-file limit towards ``wanted``; a note when it cannot reach it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return None
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < wanted:
        return f"open-file limit is {target} (hard limit {hard}); {wanted} sockets need more: raise it with `ulimit -n`"
    return None


def reason_of(response: Any) -> str:
    """A refusal's reason as the report prints it: ``reason`` when the server gave one."""
    if isinstance(response, dict) and isinstance(response.get("reason"), str):
        return response["reason"]
    return orjson.dumps(response).decode()[:200]


class Worker:
    """What every scenario's worker does: open and join clients, count errors, report progress."""

    def __init__(self, plan: Plan, index: int, clients: list[int], tokens: dict[int, str | None], control: Control):
        self.plan = plan
        self.index = index
        self.clients = clients
        self.tokens = tokens
        self.control = control
        self.errors = Tally()
        self.sockets: dict[int, BenchSocket] = {}
        self.counters = {"connected": 0, "joined": 0, "sent": 0, "delivered": 0, "errors": 0}
        self.concurrency = max(1, -(-plan.concurrency // plan.workers))
        self.join_refs: dict[int, str] = {}
        self.joined_with: dict[int, Any] = {}
        self.stopping = False
        self._cpu0 = self._wall0 = 0.0

    # -- set-up and helpers ------------------------------------------------------------------

    def error(self, reason: str) -> None:
        self.errors.add(reason)
        self.counters["errors"] += 1

    def handler(self) -> FrameHandler | None:
        return None

    def on_message(self, sock: BenchSocket, message: Message) -> None:
        if message.event == PHX_REPLY and isinstance(message.payload, dict) and message.payload.get("status") != "ok":
            self.error(f"error reply: {reason_of(message.payload.get('response'))}")

    def on_close(self, sock: BenchSocket, code: int) -> None:
        if not sock.closed_by_us and not self.stopping:
            self.error(f"closed by the server: {code}")
            self.counters["joined"] -= sock.tag in self.join_refs
            self.join_refs.pop(sock.tag, None)

    async def connect(self, i: int) -> BenchSocket | None:
        """Open client ``i``'s socket; None (and an error counted by reason) when that fails."""
        sock = BenchSocket(self.plan.client_url(i, self.tokens.get(i)), self.handler(), self.on_message, self.on_close)
        sock.tag = i
        try:
            await sock.open(self.plan.timeout)
        except ConnectRefused as exc:
            self.error(f"refused: HTTP {exc.status}")
            return None
        except Unreachable as exc:
            self.error(f"unreachable: {exc.detail}")
            return None
        self.sockets[i] = sock
        self.counters["connected"] += 1
        return sock

    async def join(self, i: int, sock: BenchSocket, topic: str | None = None, params: Any = None) -> bool:
        """Join client ``i``'s topic; False (and an error counted by reason) when refused or lost.
        The reply's response is kept in ``joined_with[i]``."""
        future = sock.request(topic or self.plan.topic_of(i), PHX_JOIN, self.plan.params if params is None else params)
        try:
            reply = await asyncio.wait_for(future, self.plan.timeout)
        except TimeoutError:
            self.error(f"join: no reply within {self.plan.timeout:g} s")
            return False
        except ConnectionLost:
            self.error("join: connection lost")
            return False
        if reply.status != "ok":
            self.error(f"join refused: {reason_of(reply.response)}")
            return False
        self.join_refs[i] = reply.join_ref or ""
        self.joined_with[i] = reply.response
        self.counters["joined"] += 1
        return True

    async def each(self, indices: Iterable[int], job: Callable[[int], Any]) -> None:
        """Run ``job(i)`` for every index, ``concurrency`` at a time (this worker's share)."""
        pending = iter(indices)

        async def lane() -> None:
            for i in pending:
                await job(i)

        await asyncio.gather(*(lane() for _ in range(self.concurrency)))

    async def open_and_join(self, i: int) -> None:
        sock = await self.connect(i)
        if sock is not None and not await self.join(i, sock):
            sock.close()

    async def sleep_until(self, t_us: int) -> None:
        delay = (t_us - now_us()) / 1e6
        if delay > 0:
            await asyncio.sleep(delay)  # the scenario's own schedule, not a wait for an event

    def start_clock(self) -> None:
        self._cpu0, self._wall0 = time.process_time(), time.monotonic()

    def cpu(self) -> dict[str, float]:
        cpu, wall = time.process_time() - self._cpu0, time.monotonic() - self._wall0
        return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "cpu_share": round(cpu / wall, 3) if wall > 0 else 0.0}

    def _heartbeat(self) -> None:
        for sock in list(self.sockets.values()):
            if sock.open_now:
                sock.push(PHOENIX_TOPIC, HEARTBEAT, {}, None)
        asyncio.get_running_loop().call_later(HEARTBEAT_EVERY, self._heartbeat)

    def _progress(self) -> None:
        self.control.send("progress", dict(self.counters))
        if not self.stopping:
            asyncio.get_running_loop().call_later(PROGRESS_EVERY, self._progress)

    # -- the scenario's shape ----------------------------------------------------------------

    async def setup(self) -> None:
        """Before ``ready``: not measured."""

    async def measure(self, go: dict[str, Any]) -> None:
        """From ``go``; returns when this worker's part is done (or keeps running until ``stop``)."""

    def result(self) -> dict[str, Any]:
        return {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(HEARTBEAT_EVERY, self._heartbeat)
        self._progress()
        setup = loop.create_task(self.setup())
        message = loop.create_task(self.control.recv())
        await asyncio.wait({setup, message}, return_when=asyncio.FIRST_COMPLETED)
        if setup.done():
            setup.result()
            self.control.send("ready", {"errors": dict(self.errors), **self.counters})
        else:  # stopped during the set-up (the coordinator's --time-limit): report what there is
            setup.cancel()
            await asyncio.gather(setup, return_exceptions=True)
        kind, go = await message
        self.start_clock()
        measuring = loop.create_task(self.measure(go) if kind == "go" else asyncio.sleep(0))
        while kind not in ("stop", "eof"):
            kind, data = await self.control.recv()
            if kind not in ("stop", "eof"):
                await self.command(kind, data)
        self.stopping = True
        measuring.cancel()
        (failure,) = await asyncio.gather(measuring, return_exceptions=True)
        if isinstance(failure, Exception):  # a bug in the scenario: reported, not a hung run
            self.error(f"bench worker failed: {failure!r}")
        cpu = self.cpu()
        result = {"errors": dict(self.errors), "counters": dict(self.counters), "cpu": cpu, **self.result()}
        self.control.send("result", result)
        for sock in self.sockets.values():
            sock.abort()

    async def command(self, kind: str, data: Any) -> None:
        """A scenario-specific message from the coordinator during the measured part."""


class ConnectWorker(Worker):
    """K clients connect and join, C at a time: connect and join latency, refusals by reason."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.connect_latency = Histogram()
        self.join_latency = Histogram()
        self.total_latency = Histogram()
        self.last_done = 0

    async def measure(self, go: dict[str, Any]) -> None:
        await self.sleep_until(go["at"])
        await self.each(self.clients, self._one)
        self.control.send("settled", {"at": self.last_done})

    async def _one(self, i: int) -> None:
        t0 = now_us()
        sock = await self.connect(i)
        if sock is None:
            return
        t1 = now_us()
        self.connect_latency.add(t1 - t0)
        if await self.join(i, sock):
            t2 = now_us()
            self.join_latency.add(t2 - t1)
            self.total_latency.add(t2 - t0)
            self.last_done = max(self.last_done, t2)
        else:
            sock.close()

    def result(self) -> dict[str, Any]:
        return {"connect": self.connect_latency.to_dict(), "join": self.join_latency.to_dict(),
                "connect_join": self.total_latency.to_dict(), "last_done": self.last_done}


class FanoutWorker(Worker):
    """Subscribers of one topic, counting deliveries per message; worker 0 also publishes.

    The publisher keeps ``window`` messages in flight: sent, not refused, and not yet delivered to
    every subscriber. Each worker knows how many messages all of its own subscribers have; worker 0
    holds the publisher, so with one worker the window closes and opens inside one process (as in a
    single-process generator), and other workers' counts reach it through the coordinator.
    """

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.latency = Histogram()
        self.remaining = array("i", [0]) * self.plan.messages
        self.completed = 0
        self.alive = 0
        self._report_due = False
        self.publisher: BenchSocket | None = None
        self.publisher_join_ref: str | None = None
        self.peers = {w: 0 for w in range(1, self.plan.workers)}
        """Other workers' completed counts (worker 0 only)."""
        self.moved = asyncio.Event()
        self.sent = self.refused = self.start_us = self.end_us = 0
        self.finished = False

    def handler(self) -> FrameHandler:
        remaining, counters, messages = self.remaining, self.counters, self.plan.messages
        search, clock, add = STAMP.search, time.monotonic_ns, self.latency.add  # locals: this runs per delivery

        def delivery(sock: BenchSocket, buf: bytes, start: int, end: int, opcode: int) -> bool:
            found = search(buf, start, end)
            if found is None or sock.is_reply(buf, start, end):
                return False
            add(clock() // 1000 - int(found.group(2)))
            counters["delivered"] += 1
            seq = int(found.group(1))
            if 0 <= seq < messages:
                remaining[seq] -= 1
                if remaining[seq] == 0:
                    self._complete()
            return True

        return delivery

    def _complete(self) -> None:
        self.completed += 1
        self.moved.set()
        if not self._report_due and self.index != 0:  # one report per event-loop turn
            self._report_due = True
            asyncio.get_running_loop().call_soon(self._report)

    def _report(self) -> None:
        self._report_due = False
        self.control.send("completed", self.completed)

    async def setup(self) -> None:
        await self.each(self.clients, self.open_and_join)
        self.alive = len(self.join_refs)
        for seq in range(self.plan.messages):
            self.remaining[seq] = self.alive
        if self.alive == 0:
            self.completed = self.plan.messages
        if self.index == 0:
            await self._open_publisher()

    async def _open_publisher(self) -> None:
        """The publisher is client ``clients`` (user K+1 with minted tokens), a member of the topic."""
        i = self.plan.clients
        sock = BenchSocket(self.plan.client_url(i, self.tokens.get(i)), on_message=self.on_message)
        try:
            await sock.open(self.plan.timeout)
            reply = await asyncio.wait_for(sock.request(self.plan.topic_of(0), PHX_JOIN, self.plan.params), self.plan.timeout)
        except ConnectRefused as exc:
            self.error(f"publisher: refused: HTTP {exc.status}")
            return
        except (ClientError, TimeoutError) as exc:
            self.error(f"publisher: {exc or 'join: no reply'}")
            sock.abort()
            return
        if reply.status != "ok":
            self.error(f"publisher: join refused: {reason_of(reply.response)}")
            sock.close()
            return
        sock.handler = _own_copies
        sock.on_close = lambda _, code: self.moved.set()  # wakes the publishing loop, which reports it
        self.publisher, self.publisher_join_ref = sock, reply.join_ref

    def on_close(self, sock: BenchSocket, code: int) -> None:
        was_joined = sock.tag in self.join_refs
        super().on_close(sock, code)
        if was_joined and not self.stopping and not sock.closed_by_us:
            # A lost subscriber will not get the rest: stop waiting for it.
            self.alive -= 1
            for seq in range(self.plan.messages):
                if self.remaining[seq] > 0:
                    self.remaining[seq] -= 1
                    if self.remaining[seq] == 0:
                        self._complete()

    async def command(self, kind: str, data: Any) -> None:
        if kind == "peer":
            worker, completed = data
            self.peers[worker] = completed
            self.moved.set()

    def _done(self) -> int:
        return min([self.completed, *self.peers.values()]) + self.refused

    def _replied(self, future: asyncio.Future[Reply]) -> None:
        if future.cancelled() or self.finished:  # replies still on their way when the run ended
            return
        exc = future.exception()
        if exc is not None or future.result().status != "ok":
            self.refused += 1
            self.error(f"publish refused: {'connection lost' if exc is not None else reason_of(future.result().response)}")
            self.moved.set()

    async def measure(self, go: dict[str, Any]) -> None:
        await self.sleep_until(go["at"])
        if self.index != 0:
            self.control.send("completed", self.completed)
            return
        publisher, plan = self.publisher, self.plan
        if publisher is None:
            self.control.send("settled", {"at": None})
            return
        topic, window, messages = plan.topic_of(0), plan.window, plan.messages
        self.start_us = now_us()
        while self.sent < messages:
            while self.sent < messages and self.sent - self._done() < window:
                payload = render(plan.payload, stamp(self.sent, now_us()))
                publisher.request(topic, plan.event, payload, self.publisher_join_ref).add_done_callback(self._replied)
                self.sent += 1
                self.counters["sent"] = self.sent
            if not publisher.open_now:
                self.error(f"publisher: closed by the server: {publisher.close_code}")
                return
            self.moved.clear()
            if self.sent - self._done() >= window:
                await self.moved.wait()
        while self._done() < messages:
            if not publisher.open_now:
                self.error(f"publisher: closed by the server: {publisher.close_code}")
                return
            self.moved.clear()
            await self.moved.wait()
        self.end_us = now_us()
        self.finished = True
        self.control.send("settled", {"at": self.end_us})

    def result(self) -> dict[str, Any]:
        return {"delivery": self.latency.to_dict(), "subscribers": self.alive,
                "publisher": {"sent": self.sent, "refused": self.refused, "start": self.start_us, "end": self.end_us}}


def _own_copies(sock: BenchSocket, buf: bytes, start: int, end: int, opcode: int) -> bool:
    """The publisher is a member of its topic too: its copies are not deliveries; replies go through."""
    return not sock.is_reply(buf, start, end)


class ChatWorker(Worker):
    """Members of T topics, each publishing R messages a second for D seconds on a fixed schedule.

    A message's stamp is the time it was *scheduled* to go, not the time it went: if the generator
    falls behind, its lateness counts in the latency instead of hiding it (coordinated omission).
    """

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.latency = Histogram()
        self.sends_each = max(1, round(self.plan.rate * self.plan.duration))
        self.expected = 0
        self.all_delivered = asyncio.Event()
        self.behind = Histogram()
        """How late each send went out against its schedule: the generator's own lag."""

    def handler(self) -> FrameHandler:
        counters = self.counters
        search, clock, add = STAMP.search, time.monotonic_ns, self.latency.add

        def delivery(sock: BenchSocket, buf: bytes, start: int, end: int, opcode: int) -> bool:
            found = search(buf, start, end)
            if found is None or sock.is_reply(buf, start, end):
                return False
            add(clock() // 1000 - int(found.group(2)))
            counters["delivered"] += 1
            if counters["delivered"] >= self.expected > 0:
                self.all_delivered.set()
            return True

        return delivery

    async def setup(self) -> None:
        await self.each(self.clients, self.open_and_join)

    async def measure(self, go: dict[str, Any]) -> None:
        plan, start = self.plan, go["at"]
        total = plan.total_clients()
        period = 1e6 / plan.rate
        members = [i for i in self.clients if i in self.join_refs]
        self.expected = len(members) * self.sends_each * plan.members
        schedule = [(int(period * i / total), i, plan.topic_of(i)) for i in members]
        schedule.sort()
        sent = self.counters
        for k in range(self.sends_each):
            base = start + int(k * period)
            for offset, i, topic in schedule:
                due = base + offset
                if due > now_us() + 500:
                    await self.sleep_until(due)
                sock = self.sockets.get(i)
                if sock is None or not sock.open_now or i not in self.join_refs:
                    continue
                self.behind.add(now_us() - due)
                sock.push(topic, plan.event, render(plan.payload, stamp(k, due)), self.join_refs[i])
                sent["sent"] += 1
        # Expect what the members that stayed joined will have been sent.
        if self.counters["delivered"] < self.expected:
            try:
                await asyncio.wait_for(self.all_delivered.wait(), CHAT_DRAIN)
            except TimeoutError:
                pass
        self.control.send("settled", {"at": now_us()})

    def result(self) -> dict[str, Any]:
        return {"delivery": self.latency.to_dict(), "send_lag": self.behind.to_dict(), "members": len(self.join_refs)}


class PresenceWorker(Worker):
    """Clients that join one presence topic in waves, then half of them leave in waves."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.presences: dict[int, Presence] = {}
        self.expected_keys = 0
        self.settled_at: dict[int, int] = {}
        self.phase_done = asyncio.Event()
        self.waiting: set[int] = set()
        self.join_latency = Histogram()
        self.frames0 = self.bytes0 = 0

    async def setup(self) -> None:
        await self.each(self.clients, self.connect)

    def on_message(self, sock: BenchSocket, message: Message) -> None:
        super().on_message(sock, message)
        presence = self.presences.get(sock.tag)
        if presence is None or message.event not in ("presence_state", "presence_diff"):
            return
        presence.receive(message.event, message.payload)
        self._check(sock.tag)

    def _check(self, i: int) -> None:
        presence = self.presences.get(i)
        if i in self.waiting and presence is not None and len(presence.list()) == self.expected_keys:
            self.waiting.discard(i)
            self.settled_at[i] = now_us()
            if not self.waiting:
                self.phase_done.set()

    async def _waves(self, start: int, indices: list[int], action: Callable[[int], Any]) -> None:
        wave_us = int(self.plan.wave_interval * 1e6)
        by_wave: dict[int, list[int]] = {}
        for i in indices:
            by_wave.setdefault(i // self.plan.wave, []).append(i)
        tasks = []
        for wave in sorted(by_wave):
            await self.sleep_until(start + wave * wave_us)
            tasks += [asyncio.ensure_future(action(i)) for i in by_wave[wave]]
        await asyncio.gather(*tasks)

    async def _join(self, i: int) -> None:
        sock = self.sockets.get(i)
        if sock is None:
            return
        self.presences[i] = Presence(self.plan.topic_of(i))
        t0 = now_us()
        if await self.join(i, sock):
            self.join_latency.add(now_us() - t0)
            self._check(i)
        else:
            self.presences.pop(i, None)
            self.waiting.discard(i)

    async def _leave(self, i: int) -> None:
        sock = self.sockets.get(i)
        self.presences.pop(i, None)
        if sock is not None and i in self.join_refs:
            future = sock.request(self.plan.topic_of(i), PHX_LEAVE, {}, self.join_refs.pop(i))
            try:
                await asyncio.wait_for(future, self.plan.timeout)
            except (TimeoutError, ConnectionLost):
                self.error("leave: no reply")

    async def _phase(self, start: int, expected_keys: int, movers: list[int], action: Callable[[int], Any],
                     watchers: list[int]) -> None:
        self.expected_keys = expected_keys
        self.settled_at.clear()
        self.phase_done.clear()
        self.waiting = {i for i in watchers if i in self.sockets}
        if not self.waiting:
            self.phase_done.set()
        await self._waves(start, movers, action)
        for i in list(self.waiting):
            self._check(i)
        await self.phase_done.wait()

    async def measure(self, go: dict[str, Any]) -> None:
        self.frames0 = sum(sock.frames for sock in self.sockets.values())
        self.bytes0 = sum(sock.bytes for sock in self.sockets.values())
        await self._phase(go["at"], go["keys"], self.clients, self._join, self.clients)
        self.control.send("settled", {"phase": "join", "at": max(self.settled_at.values(), default=None)})

    async def command(self, kind: str, data: Any) -> None:
        if kind == "leave":
            asyncio.ensure_future(self._leave_phase(data))

    async def _leave_phase(self, go: dict[str, Any]) -> None:
        leavers = [i for i in self.clients if i < go["leavers"]]
        stayers = [i for i in self.clients if i >= go["leavers"] and i in self.join_refs]
        await self._phase(go["at"], go["keys"], leavers, self._leave, stayers)
        self.control.send("settled", {"phase": "leave", "at": max(self.settled_at.values(), default=None)})

    def result(self) -> dict[str, Any]:
        return {"join": self.join_latency.to_dict(),
                "frames": sum(sock.frames for sock in self.sockets.values()) - self.frames0,
                "bytes": sum(sock.bytes for sock in self.sockets.values()) - self.bytes0}


class ReconnectWorker(Worker):
    """Joined clients dropped at once (no closing handshake), then back: time until all rejoined.

    On a topic with history (chanctl's ``history:``, whose join reply carries ``epoch`` and
    ``offset``) each client rejoins with ``since`` that position, as chanctl's client does, and the
    report counts the replies that said ``recovered``.
    """

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.latency = Histogram()
        self.last_done = 0
        self.rejoined = 0
        self.recovered = Tally()

    async def setup(self) -> None:
        await self.each(self.clients, self.open_and_join)

    async def measure(self, go: dict[str, Any]) -> None:
        await self.sleep_until(go["at"])
        dropped = [i for i in self.clients if i in self.join_refs]
        for i in dropped:
            self.sockets.pop(i).abort()
        self.join_refs.clear()
        self.counters["joined"] = self.counters["connected"] = 0
        drop = now_us()

        positions = {i: _position(self.joined_with.get(i)) for i in dropped}

        async def back(i: int) -> None:
            sock = await self.connect(i)
            if sock is None:
                return
            since = positions[i]
            params = None if since is None or not isinstance(self.plan.params, dict) else {**self.plan.params, "since": since}
            if await self.join(i, sock, params=params):
                answer = self.joined_with[i].get("recovered") if isinstance(self.joined_with[i], dict) else None
                if since is not None:
                    self.recovered.add("recovered" if answer is True else "not_recovered")
                done = now_us()
                self.latency.add(done - drop)
                self.last_done = max(self.last_done, done)
                self.rejoined += 1
            else:
                sock.close()

        await self.each(dropped, back)
        self.control.send("settled", {"at": self.last_done, "dropped_at": drop, "dropped": len(dropped)})

    def result(self) -> dict[str, Any]:
        return {"rejoin": self.latency.to_dict(), "rejoined": self.rejoined, "recovery": dict(self.recovered)}


def _position(response: Any) -> dict[str, Any] | None:
    """A history position from a join reply (``{"epoch": E, "offset": N}``), or None without history."""
    if isinstance(response, dict) and isinstance(response.get("offset"), int) and isinstance(response.get("epoch"), str):
        return {"offset": response["offset"], "epoch": response["epoch"]}
    return None


WORKERS: dict[str, type[Worker]] = {
    "connect": ConnectWorker, "fanout": FanoutWorker, "chat": ChatWorker,
    "presence": PresenceWorker, "reconnect": ReconnectWorker,
}


def loop_name() -> str:
    """``uvloop`` when it is installed (``pip install 'chanctl[bench]'``) and not turned off with
    ``CHANCTL_BENCH_LOOP=asyncio``; else ``asyncio``."""
    if os.environ.get("CHANCTL_BENCH_LOOP", "").lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_loop(main: Any) -> Any:
    """Run ``main`` on the loop :func:`loop_name` names: libuv's spends less CPU per socket read
    than asyncio's, and a fan-out worker reads a socket per delivery."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def worker_main(plan: Plan, index: int, clients: list[int], tokens: dict[int, str | None], conn: Connection) -> None:
    """A worker process's entry point (spawned by the coordinator)."""
    note = raise_fd_limit(len(clients) + 64)

    async def main() -> None:
        control = Control(conn)
        if note:
            control.send("note", note)
        try:
            await WORKERS[plan.scenario](plan, index, clients, tokens, control).run()
        finally:
            control.close()

    try:
        run_loop(main())
    except KeyboardInterrupt:
        os._exit(130)
