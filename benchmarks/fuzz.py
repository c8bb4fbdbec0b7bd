"""Fuzz campaign: generated and mutated frames at a real ``chanctl serve`` while a control pair chats.

    nice -n 19 python benchmarks/fuzz.py --frames 1000000 --seed 1     # issue 15's campaign
    python benchmarks/fuzz.py --frames 5000 --seed 7                   # a few seconds

Starts ``chanctl serve`` on :data:`CONFIG` (rooms with presence, CEL join and event rules, schemas,
every ``do:`` behaviour, a count-mode topic, a history topic, the admin topic) with its log in a
file, joins a control pair (users 1 and 2) to ``room:control``, and has user 1 send numbered
``new_msg`` broadcasts the whole time, while an admin (user 3) watches ``chanctl:admin``. Meanwhile ``--connections`` fuzz workers open socket after
socket (vsn 2.0.0, 1.0.0, and some refused handshakes) and send frames from :class:`FrameMaker`:

- valid envelopes with hostile payloads: nesting at and past the 250-level limit (and past
  orjson's 1,024), strings near the frame, name and join limits, unicode with controls, bidi
  overrides, NUL, line separators and lone surrogates, wrong types in every payload field, big and
  odd numbers, thousands of keys, duplicate keys;
- wrong types in every envelope field (integer, float, null, list, object refs; non-string topic
  and event), short and long arrays, missing and extra V1 keys, truncated and invalid JSON,
  invalid UTF-8 in a text frame, frames over ``max_frame_size``;
- joins and leaves interleaved: duplicate joins, stale and null join_refs, ``phx_leave`` of
  topics never joined, joins past ``max_channels``, refused joins, heartbeats with bad refs,
  unknown events, server-only events sent by the client, ``access_token`` with garbage;
- V2 binary frames: pushes (kind 0) with hostile bytes to joined topics, kinds 1, 2 and others,
  headers cut short, length fields that lie (past the end, or short), invalid UTF-8 fields.

Every few frames a worker sends a heartbeat and waits for its reply, so frames are paced by the
server and a stall is seen; a close ends the socket and the worker opens another. The same
``--seed`` makes the same frames (the interleaving of workers differs from run to run).

Checks, printed at the end and exit 1 when one fails: the server process lives and ``/healthz``
answers; every control message arrives at user 2 once and in order; the admin feed still
ticks; no ``Traceback`` and no ERROR line in the server log; after the fuzz sockets close, the
server holds only the control sockets' connections, channels and topics, no more asyncio tasks
(``chanctl_tasks``) or file descriptors than at the baseline, and its RSS is back within ``--rss-slack`` of the
baseline taken after a warm-up round, each read once the server's memory trim after the last closes
has run (``server.memory_trim``; Python keeps some freed memory in its arenas, so the baseline is
RSS after a first round of fuzzing, not before any).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import metric, rss_kib  # noqa: E402
from chanctl.tokens import TokenSigner  # noqa: E402

SECRET = "fuzz-secret-0123456789abcdef0123456789abcdef"
MAX_FRAME = 64 * 1024
CONFIG = """
server:
  host: 127.0.0.1
  idle_timeout: 30s
  max_frame_size: 64KiB
  max_join_payload: 16KiB
  max_channels: 12
  rate_limit: {per_second: 2000, burst: 400}
  max_connections_per_user: 50
  outbound_buffer: 16MiB  # the control pair reads in a process 32 fuzzers share: room to lag behind their broadcasts
auth: {secret: "%s"}
data:
  rooms: {locked: {members: [1]}}
topics:
  "room:{id}":
    join: '!(topic.id in data.rooms) || user.id in data.rooms[topic.id].members'
    presence: {meta: {typing: false, status: "here"}}
    events:
      new_msg: {schema: {body: {type: string, minLength: 1, maxLength: 2000}}, do: broadcast}
      typing: {schema: {typing: {type: boolean}}, do: presence}
      status: {do: presence}
      cursor: {allow: 'has(payload.x) && payload.x < 1000', do: broadcast_from}
      ping: {do: reply}
      pong: {do: reply, reply: {pong: true}}
      dm: {do: push_to, to: '"notifications:user_" + string(payload.to)'}
      nothing: {do: noop}
      guarded: {allow: 'params.role == "host"', do: broadcast}
  "count:{id}":
    join: true
    presence: {mode: count}
  "hist:{id}":
    join: true
    history: {size: 50, ttl: 1m}
    events:
      msg: {do: broadcast}
  "notifications:user_{uid}":
    join: topic.uid == string(user.id)
  "updates:all":
    join: true
""" % SECRET

CONTROL_TOPIC = "room:control"
CONTROL_USERS = (1, 2)
OPERATOR = 3
"""An admin (``chanctl watch``'s view) on ``chanctl:admin`` the whole time: the traffic it reports
is the fuzzers', and its feed must go on."""

# -- frames ------------------------------------------------------------------------------------------

Frame = str | bytes
"""A text frame (str, or bytes sent as text when :class:`Text` wraps them) or a binary frame."""


class Text(bytes):
    """Bytes sent in a text frame: how a frame with invalid UTF-8 gets there."""


def j(value: Any) -> str:
    """JSON text (ASCII: a lone surrogate goes out as its escape, which the server must refuse)."""
    return json.dumps(value)


TOPICS = [
    "room:1", "room:2", "room:3", "room:4", CONTROL_TOPIC, "room:locked", "count:1", "count:2", "hist:1", "hist:2",
    "updates:all", "phoenix", "chanctl:admin", "nomatch:1", "", "room:", "room:\u202e1", "room:\n2", "room:1\x00",
    "room:" + "x" * 250, "room:" + "x" * 251, "room:" + "\u00e9" * 125, "room:" + "\u00e9" * 126, "room:" + "y" * 5000,
]
EVENTS = [
    "phx_join", "phx_leave", "heartbeat", "new_msg", "typing", "status", "cursor", "ping", "pong", "dm", "nothing",
    "guarded", "msg", "access_token", "phx_reply", "phx_close", "phx_error", "presence_diff", "presence_state",
    "unknown", "", "new_msg\n", "\u202enew_msg", "e" * 255, "e" * 256, "\U0001f600" * 64,
]
ODD_STRINGS = [
    "", " ", "\x00", "\x1b[31mred\x1b[0m", "\u202eevil\u202c", "\u2028\u2029", "\ufeff", "\uffff", "\U0001f600" * 50,
    "e\u0301" * 30, "\x85\x9b", "\r\n\r\n", "\\", '"', "null", "<script>", "[b]x[/b]", "%s%n",
]
ODD_NUMBERS = ["0", "-0.0", "1e308", "-1e308", "1e-400", "9223372036854775807", "9223372036854775808",
               "18446744073709551616", "-" + "9" * 30, "0.1", "3.141592653589793", "1E2"]
REFUSED_VALUES = ['"\\ud800"', '"\\udfff\\ud800"', '"a\\ud800b"', "1" * 400, "1e999", "-1e999"]
"""JSON text that orjson refuses (lone surrogates, numbers past a double): the frame is malformed."""


class FrameMaker:
    """Frames for one socket of one serializer, from one ``random.Random``: what it sends next
    depends only on the seed and on what it sent (the topics it tried to join), never on replies."""

    def __init__(self, rng: random.Random, vsn: str, user: int):
        self.rng = rng
        self.v1 = vsn.startswith("1.")
        self.user = user
        self.joined: dict[str, str] = {}
        """Topic -> join_ref of the joins this socket sent (refused ones included: the server decides)."""
        self.old_refs: list[tuple[str, str]] = []
        self.n = 0
        self.risky = False
        """Whether the last frame may well close the socket: the sender then syncs at once, so
        that frames sent after a close (which the server discards unread) are few."""

    def ref(self) -> str:
        self.n += 1
        return str(self.n)

    # -- payloads: JSON text ------------------------------------------------------------------

    def value(self, depth: int = 0) -> str:
        """A random JSON value, small."""
        rng = self.rng
        kind = rng.randrange(9 if depth < 3 else 6)
        if kind == 0:
            return "null"
        if kind == 1:
            return rng.choice(["true", "false"])
        if kind == 2:
            return str(rng.randint(-(2**70), 2**70))
        if kind == 3:
            return rng.choice(ODD_NUMBERS)
        if kind == 4:
            return j(rng.choice(ODD_STRINGS))
        if kind == 5:
            return j("".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12))))
        if kind == 6:
            return "[" + ",".join(self.value(depth + 1) for _ in range(rng.randrange(5))) + "]"
        keys = [rng.choice(["body", "typing", "x", "to", "since", "role", "status", "", "__proto__", "\u0000"])
                for _ in range(rng.randrange(5))]
        return "{" + ",".join(f"{j(k)}:{self.value(depth + 1)}" for k in keys) + "}"

    def deep(self) -> str:
        """A payload nested at the limit (a payload is one level inside its frame, so 249 is the
        deepest accepted) or, a quarter of the time, past it and past orjson's own 1,024."""
        if self.rng.random() < 0.75:
            depth = self.rng.choice([10, 100, 247, 248, 249])
        else:
            depth = self.rng.choice([250, 251, 252, 254, 255, 256, 300, 1023, 1024, 1025, 5000])
            self.risky = True
        if self.rng.random() < 0.5:
            return "[" * depth + "1" + "]" * depth
        return '{"a":' * depth + "1" + "}" * depth

    def payload(self, event: str) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:  # what the event expects, or near it
            if event == "new_msg":
                return j({"body": rng.choice(["hi", "x" * rng.choice([1, 2000, 2001]), rng.choice(ODD_STRINGS)])})
            if event == "typing":
                return '{"typing":' + rng.choice(["true", "false", '"yes"', "null", "1"]) + "}"
            if event == "status":
                return '{"status":' + self.value() + ',"typing":' + self.value() + "}"
            if event == "cursor":
                return '{"x":' + rng.choice(["1", "999", "1000", '"1"', "null", "1e308", "[]"]) + "}"
            if event == "dm":
                return '{"to":' + rng.choice([str(self.user), "2", '"1"', "null", "[1]", '{"a":1}', j("x" * 300)]) + ',"body":"hey"}'
            if event == "msg":
                return j({"n": rng.randrange(1000)})
            if event == "access_token":
                return '{"access_token":' + rng.choice(['"garbage"', "null", "1", j("a." * 500), '"SFMyNTY.x.y"']) + "}"
            if event == "phx_join":
                return rng.choice(["{}", '{"role":"host"}', '{"since":{"offset":1,"epoch":"x"}}',
                                   '{"since":' + self.value() + "}", '{"role":' + self.value() + "}"])
            return "{}"
        if roll < 0.55:
            return "{" + ",".join(f"{j(k)}:{self.value()}" for k in ("body", "typing", "x", "to", "since")[: rng.randrange(1, 6)]) + "}"
        if roll < 0.65:
            return self.value()
        if roll < 0.72:
            return self.deep()
        if roll < 0.80:  # huge strings, near the join, frame and schema limits (JSON-escaped: 1 to 12 bytes a character)
            size = rng.choice([2001, 16 * 1024 - 60, 16 * 1024 + 10, 30_000, MAX_FRAME - 100, MAX_FRAME + 10])
            char = rng.choice(["x", "\u00e9", "\U0001f600", "\u202e", "\x00"])
            text = j({"body": char * (size // len(j(char)[1:-1]))})
            self.risky = len(text) > MAX_FRAME - 100
            return text
        if roll < 0.86:
            n = rng.choice([100, 1000, 3000])
            if rng.random() < 0.5:
                return "{" + ",".join(f'"k{i}":{i}' for i in range(n)) + "}"
            return "[" + ",".join("{}" for _ in range(n)) + "]"
        if roll < 0.92:
            return '{"body":"a","body":' + self.value() + ',"typing":true,"typing":' + self.value() + "}"
        if roll < 0.99:
            return j(rng.choice(ODD_STRINGS))
        self.risky = True
        return '{"body":' + rng.choice(REFUSED_VALUES) + "}"

    # -- envelopes ----------------------------------------------------------------------------

    def envelope(self, join_ref: str, ref: str, topic: str, event: str, payload: str) -> str:
        """Join_ref, ref, topic and event are JSON text too, so any of them can be any value."""
        if self.v1:
            return f'{{"topic":{topic},"event":{event},"payload":{payload},"ref":{ref},"join_ref":{join_ref}}}'
        return f"[{join_ref},{ref},{topic},{event},{payload}]"

    def message(self, topic: str, event: str, payload: str | None = None, join_ref: str | None = None) -> str:
        ref = self.ref()
        jr = j(join_ref if join_ref is not None else self.joined.get(topic))
        return self.envelope(jr, j(ref), j(topic), j(event), self.payload(event) if payload is None else payload)

    def odd_ref(self) -> str:
        self.risky = True
        return self.rng.choice(["1", "-1", "1.5", "1e3", "null", "true", "[]", "[1]", '{"a":1}', j("r" * 20_000),
                                j("\u202e"), j(""), '"\\ud800"', "0", "9" * 40])

    def next_frame(self) -> Frame:
        """One frame; the mix is weighted so that most keep the socket open (a close ends it)."""
        rng, roll = self.rng, self.rng.random()
        self.risky = False
        if roll < 0.17:
            return self.join()
        if roll < 0.26:
            return self.leave()
        if roll < 0.56:  # an event on a joined topic (or a topic this socket never joined)
            topic = rng.choice(list(self.joined)) if self.joined and rng.random() < 0.8 else rng.choice(TOPICS)
            return self.message(topic, rng.choice(EVENTS[3:13]) if rng.random() < 0.8 else rng.choice(EVENTS))
        if roll < 0.63:  # a stale or missing join_ref
            if self.old_refs and rng.random() < 0.6:
                topic, old = rng.choice(self.old_refs)
                return self.message(topic, rng.choice(EVENTS[:13]), join_ref=old)
            topic = rng.choice(list(self.joined) or TOPICS)
            return self.envelope("null", j(self.ref()), j(topic), j(rng.choice(EVENTS[3:13])), self.payload("new_msg"))
        if roll < 0.69:  # heartbeats, some with refs of the wrong kind
            ref = j(self.ref()) if rng.random() < 0.75 else self.odd_ref()
            return self.envelope(rng.choice(["null", '"1"', "null", '"1"', "5"]), ref, '"phoenix"', '"heartbeat"', rng.choice(["{}", "null", self.value()]))
        if roll < 0.86:
            return self.message(rng.choice(TOPICS), rng.choice(EVENTS))
        if roll < 0.97 and not self.v1:
            return self.binary()
        if roll < 0.97:
            return self.message(rng.choice(TOPICS), rng.choice(EVENTS)).encode()  # V1 reads a binary frame as JSON
        return self.mutated()

    def join(self) -> str:
        rng = self.rng
        topic = rng.choice(list(self.joined)) if self.joined and rng.random() < 0.2 else rng.choice(TOPICS[:14])
        if topic in self.joined:
            self.old_refs.append((topic, self.joined[topic]))
            del self.old_refs[:-20]
        join_ref = self.ref()
        self.joined[topic] = join_ref
        # The ref usually equals the join_ref, as phoenix.js sends it; sometimes not, sometimes null.
        ref = rng.choice([join_ref, join_ref, self.ref(), None])
        jr = rng.choice([join_ref, join_ref, join_ref, None])
        return self.envelope(j(jr), j(ref), j(topic), '"phx_join"', self.payload("phx_join"))

    def leave(self) -> str:
        rng = self.rng
        if self.joined and rng.random() < 0.6:
            topic = rng.choice(list(self.joined))
            join_ref = self.joined.pop(topic)
            self.old_refs.append((topic, join_ref))
            return self.message(topic, "phx_leave", "{}", join_ref=join_ref)
        return self.message(rng.choice(TOPICS), "phx_leave", rng.choice(["{}", "null", self.value()]))

    def binary(self) -> bytes:
        """V2 binary frames (PROTOCOL.md §2.3): ``kind len(J) len(R) len(T) len(E) J R T E payload``."""
        rng = self.rng
        topic = rng.choice(list(self.joined)) if self.joined and rng.random() < 0.7 else rng.choice(TOPICS)
        fields = [self.joined.get(topic, "").encode(), self.ref().encode(), topic.encode()[:255],
                  rng.choice(EVENTS[3:13]).encode()]
        body = rng.randbytes(rng.choice([0, 1, 16, 1000, 30_000]))
        roll = rng.random()
        if roll < 0.75:  # well formed
            return bytes([0, *map(len, fields)]) + b"".join(fields) + body
        self.risky = True
        if roll < 0.8:  # a kind only servers send, or none at all
            return bytes([rng.choice([1, 2, 3, 127, 255])]) + bytes(map(len, fields)) + b"".join(fields) + body
        if roll < 0.85:  # the header cut short
            return bytes([0, *map(len, fields)])[: rng.randrange(0, 5)]
        if roll < 0.9:  # a length field that lies: past the end
            sizes = [*map(len, fields)]
            sizes[rng.randrange(4)] = 255
            return bytes([0, *sizes]) + b"".join(fields)[: rng.randrange(40)]
        if roll < 0.95:  # lengths that lie short or long inside the frame: fields shift
            sizes = [max(0, min(255, len(f) + rng.randint(-3, 3))) for f in fields]
            return bytes([0, *sizes]) + b"".join(fields) + body
        fields[rng.randrange(4)] = rng.choice([b"\xff\xfe", b"\xc3", b"room:\xed\xa0\x80", b"\x00\x00"])
        return bytes([0, *map(len, fields)]) + b"".join(fields) + body

    def mutated(self) -> Frame:
        """A frame whose envelope is wrong (most close the socket: 1007, 1009)."""
        rng = self.rng
        self.risky = True
        topic = rng.choice(list(self.joined) or TOPICS)
        base = self.message(topic, rng.choice(EVENTS[:13]))
        roll = rng.random()
        if roll < 0.25:  # a wrong type in one envelope field
            parts = [j(self.joined.get(topic)), j(self.ref()), j(topic), j(rng.choice(EVENTS)), self.payload("ping")]
            parts[rng.randrange(4)] = self.odd_ref() if rng.random() < 0.5 else self.value()
            return self.envelope(*parts)
        if roll < 0.35:  # too few or too many elements; the other serializer's shape
            if self.v1:
                return rng.choice(['{"topic":"room:1","event":"ping","payload":{}}', '{"topic":"room:1","event":"ping","ref":"1"}',
                                   base[:-1] + ',"extra":[1,2,3]}', "[null,\"1\",\"room:1\",\"ping\",{}]", "{}"])
            return rng.choice(["[]", "[null]", '[null,"1","room:1","ping"]', base[:-1] + ',"extra",{}]',
                               '{"topic":"room:1","event":"ping","payload":{},"ref":"1"}', "[[],[],[],[],[]]"])
        if roll < 0.55:  # truncated JSON
            return base[: rng.randrange(len(base))]
        if roll < 0.65:  # invalid JSON that looks close
            return rng.choice(["", " ", "nul", "[1,]", "{'a':1}", "[NaN]", "[Infinity]", "\ufeff[]", "[1e999]",
                               base.replace(",", ";", 1), base + "garbage", base + base])
        if roll < 0.72:  # invalid UTF-8 inside a text frame
            raw = base.encode()
            cut = rng.randrange(len(raw))
            return Text(raw[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]) + raw[cut:])
        if roll < 0.76:  # over max_frame_size
            return self.envelope("null", '"1"', j(topic), '"ping"', j("z" * (MAX_FRAME + rng.randrange(1, 5000))))
        if roll < 0.86:  # too deep at the envelope level
            depth = rng.choice([249, 250, 251, 1100])
            return "[" * depth + "]" * depth
        return self.envelope(j(self.joined.get(topic)), j(self.ref()), j(topic), j(rng.choice(EVENTS)), self.deep())


# -- the server under test -------------------------------------------------------------------------


class ServerUnderTest:
    """``chanctl serve`` of a config (with :data:`SECRET`) in a subprocess, its log in a file
    (benchmarks/soak.py serves its own config with it)."""

    def __init__(self, workdir: Path, log_level: str = "info", config_text: str = CONFIG):
        config = workdir / "server.yaml"
        config.write_text(config_text)
        self.log_path = workdir / "server.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chanctl", "serve", str(config), "--port", "0", "--log-level", log_level],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.base = ""
        deadline = time.monotonic() + 60
        while not self.base:  # the banner (on stderr, into the log) says where it listens
            match = re.search(r"serving .* at ws://([\d.]+:\d+)", self.log_path.read_text(errors="replace"))
            if match:
                self.base = match.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"chanctl serve did not start:\n{self.log_path.read_text()}")
            else:
                time.sleep(0.05)
        self.signer = TokenSigner(SECRET)
        self.tokens: dict[int, str] = {}

    def url(self, user: int | None, vsn: str | None = "2.0.0") -> str:
        if user is not None and user not in self.tokens:
            self.tokens[user] = self.signer.mint(user, {"admin": True} if user == OPERATOR else {})
        query = [f"token={self.tokens[user]}"] if user is not None else []
        if vsn is not None:
            query.append(f"vsn={vsn}")
        return f"ws://{self.base}/socket/websocket?" + "&".join(query)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.base}{path}", timeout=30) as answer:  # noqa: S310 (loopback)
            return answer.read().decode()

    def health(self) -> dict[str, Any]:
        return json.loads(self.get("/healthz"))

    def metric(self, name: str) -> float:
        """The sum of a /metrics family's samples (0 when absent)."""
        return metric(self.base, name)

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_problems(self) -> tuple[int, list[str]]:
        """How many tracebacks the log holds, and the ERROR/CRITICAL lines with each traceback's last line."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        tracebacks = sum(line.startswith("Traceback") for line in lines)
        problems = [line for line in lines if re.search(r" (ERROR|CRITICAL) ", line)]
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                end = next((k for k in range(i + 1, len(lines)) if not lines[k].startswith((" ", "Traceback", "During", "The above"))
                            and lines[k].strip()), i)
                problems.append("traceback ending: " + lines[end])
        return tracebacks, problems

    def stop(self) -> int | None:
        code = self.proc.poll()
        if code is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return code


# -- the control pair ------------------------------------------------------------------------------


@dataclass
class Control:
    """User 1 broadcasts numbered messages on room:control; user 2 must get each once, in order.
    User 3, an admin, watches the admin plane's feed, which must keep coming."""

    server: ServerUnderTest
    interval: float = 0.02
    sent: int = 0
    received: int = 0
    out_of_order: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)
    sent_at: dict[int, float] = field(default_factory=dict)
    feed: Counter[str] = field(default_factory=Counter)
    """The admin frames the operator got, by event."""

    async def __aenter__(self) -> "Control":
        self.ann = await websockets.connect(self.server.url(CONTROL_USERS[0]), max_size=None, compression=None)
        self.bob = await websockets.connect(self.server.url(CONTROL_USERS[1]), max_size=None, compression=None)
        self.operator = await websockets.connect(self.server.url(OPERATOR), max_size=None, compression=None)
        for ws, topic in ((self.ann, CONTROL_TOPIC), (self.bob, CONTROL_TOPIC), (self.operator, "chanctl:admin")):
            await ws.send(j(["1", "1", topic, "phx_join", {}]))
            while (frame := json.loads(await ws.recv()))[3] != "phx_reply":
                pass
            assert frame[4]["status"] == "ok", frame
        self.stopping = asyncio.Event()
        self.tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._read_bob()),
                      asyncio.create_task(self._read_ann()), asyncio.create_task(self._heartbeat()),
                      asyncio.create_task(self._watch())]
        return self

    async def _watch(self) -> None:
        async for data in self.operator:
            self.feed[json.loads(data)[3]] += 1

    async def feed_goes_on(self, timeout: float = 30.0) -> bool:
        """Whether the admin feed sends another ``stats`` frame (it does every second)."""
        seen = self.feed["stats"]
        deadline = time.monotonic() + timeout
        while self.feed["stats"] == seen and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.feed["stats"] > seen

    async def _send(self) -> None:
        while not self.stopping.is_set():
            n = self.sent
            self.sent_at[n] = time.monotonic()
            await self.ann.send(j(["1", f"c{n}", CONTROL_TOPIC, "new_msg", {"body": f"ctl {n}"}]))
            self.sent += 1
            await asyncio.sleep(self.interval)

    async def _heartbeat(self) -> None:
        """Both sockets heartbeat every 5 s on their own (as phoenix.js does, every 30 s), so that
        a slowed send loop cannot let bob, who only reads, reach the idle timeout."""
        n = 0
        while not self.stopping.is_set():
            n += 1
            for ws in (self.ann, self.bob, self.operator):
                await ws.send(j([None, f"hb{n}", "phoenix", "heartbeat", {}]))
            try:
                await asyncio.wait_for(self.stopping.wait(), 5)
            except TimeoutError:
                pass

    def closed(self) -> str | None:
        """How a control socket ended before the campaign did, if one did."""
        for name, ws in (("user 1", self.ann), ("user 2", self.bob), ("the operator", self.operator)):
            if ws.close_code is not None:
                return f"{name}'s socket closed: {ws.close_code} {ws.close_reason!r}"
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return f"control task failed: {task.exception()!r}"
        return None

    async def _read_bob(self) -> None:
        async for data in self.bob:
            frame = json.loads(data)
            if frame[3] != "new_msg" or frame[2] != CONTROL_TOPIC or frame[4].get("user_id") != CONTROL_USERS[0]:
                continue
            n = int(frame[4]["body"].split()[1])
            if n != self.received:
                self.out_of_order += 1
            self.received = max(self.received, n + 1)
            self.latencies.append(time.monotonic() - self.sent_at.pop(n, time.monotonic()))

    async def _read_ann(self) -> None:
        async for data in self.ann:
            if '"phx_reply"' in data and '"c' in data and '"ok"' not in data:
                self.refused += 1

    async def finish(self, timeout: float = 30.0) -> None:
        """Stop sending; wait until bob has every message (or the timeout)."""
        self.stopping.set()
        await asyncio.gather(self.tasks[0], return_exceptions=True)
        deadline = time.monotonic() + timeout
        while self.received < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for ws in (self.ann, self.bob, self.operator):
            await ws.close()


# -- fuzz workers ----------------------------------------------------------------------------------


@dataclass
class Tally:
    frames: int = 0
    binary: int = 0
    sockets: int = 0
    refused_handshakes: int = 0
    stalls: int = 0
    received: int = 0
    closes: Counter[str] = field(default_factory=Counter)


VSNS = ["2.0.0"] * 12 + ["1.0.0"] * 5 + [None, "3.0.0"]
"""Mostly V2 (what phoenix.js speaks), V1 by name and by default, and a vsn the server refuses."""


async def fuzz_socket(server: ServerUnderTest, maker: FrameMaker, vsn: str | None, budget: int, tally: Tally,
                      stall_after: float) -> int:
    """One socket: up to ``budget`` frames, a heartbeat round trip every few; returns frames sent."""
    rng = maker.rng
    try:
        ws = await websockets.connect(server.url(maker.user, vsn), max_size=None, compression=None, open_timeout=60)
    except websockets.InvalidStatus:
        tally.refused_handshakes += 1
        return 0
    tally.sockets += 1
    waiting: list[Any] = [None, None]  # the sync ref's JSON text, its event

    async def read() -> None:
        async for data in ws:
            tally.received += 1
            if waiting[0] is not None and isinstance(data, str) and waiting[0] in data:
                waiting[1].set()

    reader = asyncio.create_task(read())
    sent, sync_every = 0, rng.choice([4, 16, 32, 64])
    try:
        while sent < budget:
            frame = maker.next_frame()
            if isinstance(frame, Text):
                await ws.send(bytes(frame), text=True)
            else:
                await ws.send(frame)
            sent += 1
            tally.binary += isinstance(frame, bytes) and not isinstance(frame, Text)
            if sent % sync_every == 0 or maker.risky:
                ref = f"sync{sent}"
                waiting[:] = [j(ref), asyncio.Event()]
                await ws.send(maker.envelope("null", j(ref), '"phoenix"', '"heartbeat"', "{}"))
                replied = asyncio.ensure_future(waiting[1].wait())
                done, _ = await asyncio.wait([reader, replied], timeout=stall_after, return_when=asyncio.FIRST_COMPLETED)
                replied.cancel()
                if not done:
                    tally.stalls += 1
                    break
                if reader in done:
                    break
        else:
            await ws.close()
    except websockets.ConnectionClosed:
        pass
    finally:
        if not reader.done():
            await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        rcvd = ws.protocol.close_rcvd
        tally.closes[str(rcvd.code) if rcvd is not None else "none"] += 1
    tally.frames += sent
    return sent


async def fuzz_worker(server: ServerUnderTest, seed: int, index: int, frames: int, tally: Tally, stall_after: float) -> None:
    rng = random.Random(f"{seed}:{index}")
    user = 100 + index
    while frames > 0:
        vsn = rng.choice(VSNS)
        maker = FrameMaker(rng, vsn or "1.0.0", user)
        frames -= await fuzz_socket(server, maker, vsn, min(frames, rng.choice([8, 50, 200, 1000])), tally, stall_after)


# -- the campaign ----------------------------------------------------------------------------------


@dataclass
class Report:
    frames: int = 0
    server_frames_read: int = 0
    """What the server read in all (the control pair's included); frames a client sent after its
    socket was closed are discarded unread, and frames over max_frame_size are refused by the
    WebSocket layer, so this can be lower than ``frames``."""
    binary: int = 0
    sockets: int = 0
    refused_handshakes: int = 0
    stalls: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    server_alive: bool = False
    health: str = ""
    health_failures: int = 0
    control_sent: int = 0
    control_closed: str | None = None
    control_lost: int = 0
    control_out_of_order: int = 0
    control_refused: int = 0
    control_p50_ms: float = 0.0
    control_p99_ms: float = 0.0
    control_max_ms: float = 0.0
    admin_feed_alive: bool = False
    admin_feed: dict[str, int] = field(default_factory=dict)
    tracebacks: int = 0
    log_problems: list[str] = field(default_factory=list)
    rss_start_kib: int = 0
    rss_baseline_kib: int = 0
    rss_peak_kib: int = 0
    rss_after_kib: int = 0
    fds_baseline: int = 0
    fds_after: int = 0
    tasks_baseline: int = 0
    tasks_after: int = 0
    connections_after: float = 0.0
    channels_after: float = 0.0
    topics_after: int = 0
    failures: list[str] = field(default_factory=list)


async def settle(server: ServerUnderTest, connections: int, memory_trim: float | None, timeout: float = 60.0) -> None:
    """Wait until the server holds ``connections`` sockets (the fuzzers' closes are handled) and
    has given the freed memory back: the trim that the last closes scheduled ``memory_trim``
    seconds after them has run (or had run before the last close was handled: a second more)."""
    deadline = time.monotonic() + timeout
    while server.health()["connections"] != connections and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    wait = memory_trim + 1 if memory_trim is not None else 0
    trims, deadline = server.metric("chanctl_memory_trims_total"), time.monotonic() + wait
    while server.metric("chanctl_memory_trims_total") == trims and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the closes' leaves and presence diffs, then RSS is read


async def fuzz_round(server: ServerUnderTest, seed: int, frames: int, connections: int, tally: Tally, offset: int,
                     stall_after: float) -> None:
    share = [frames // connections + (i < frames % connections) for i in range(connections)]
    await asyncio.gather(*(fuzz_worker(server, seed, offset + i, share[i], tally, stall_after)
                           for i in range(connections) if share[i]))


async def campaign(frames: int, seed: int, connections: int = 16, warmup: float = 0.05, workdir: Path | None = None,
                   stall_after: float = 60.0, rss_slack_kib: int = 8192, progress: bool = False,
                   memory_trim: float | None = 5.0) -> Report:
    """Run the campaign and check it; ``report.failures`` lists every check that failed.
    ``memory_trim``: the server's ``server.memory_trim`` in seconds (None: off)."""
    tmp = tempfile.TemporaryDirectory(prefix="chanctl-fuzz-") if workdir is None else None
    work = Path(tmp.name) if tmp is not None else workdir
    assert work is not None
    work.mkdir(parents=True, exist_ok=True)
    trim = "null" if memory_trim is None else f"{memory_trim}s"
    server = ServerUnderTest(work, config_text=CONFIG.replace("server:\n", f"server:\n  memory_trim: {trim}\n", 1))
    report, tally = Report(), Tally()
    started = time.monotonic()
    try:
        async with Control(server) as control:
            report.rss_start_kib = server.rss_kib()
            sampler_stop = asyncio.Event()

            async def sample() -> None:
                while not sampler_stop.is_set():
                    report.rss_peak_kib = max(report.rss_peak_kib, server.rss_kib())
                    try:
                        await asyncio.to_thread(server.health)
                    except OSError:
                        report.health_failures += 1
                    if progress:
                        print(f"# {time.monotonic() - started:7.0f}s frames {tally.frames:,} sockets {tally.sockets:,} "
                              f"rss {server.rss_kib():,} KiB control {control.received}/{control.sent}",
                              file=sys.stderr, flush=True)
                    try:
                        await asyncio.wait_for(sampler_stop.wait(), 5 if progress else 0.5)
                    except TimeoutError:
                        pass

            sampler = asyncio.create_task(sample())
            first = max(1, int(frames * warmup)) if frames > 1 else frames
            await fuzz_round(server, seed, first, connections, tally, 0, stall_after)
            await settle(server, len(CONTROL_USERS) + 1, memory_trim)
            report.rss_baseline_kib, report.fds_baseline = server.rss_kib(), server.fds()
            tasks_baseline = server.metric("chanctl_tasks")
            report.tasks_baseline = int(tasks_baseline)
            if frames - first > 0:
                await fuzz_round(server, seed, frames - first, connections, tally, connections, stall_after)
            await settle(server, len(CONTROL_USERS) + 1, memory_trim)
            sampler_stop.set()
            await sampler
            await control.finish()
            report.admin_feed_alive = await control.feed_goes_on()
            report.admin_feed = dict(control.feed)
            report.control_closed = control.closed()
            report.rss_after_kib, report.fds_after = server.rss_kib(), server.fds()
            tasks_after = server.metric("chanctl_tasks")
            report.tasks_after = int(tasks_after)
            health = server.health()
            report.health = health["status"]
            report.connections_after = health["connections"]
            report.topics_after = health["topics"]
            report.channels_after = server.metric("chanctl_channels")
            report.server_frames_read = int(server.metric("chanctl_messages_in_total"))
            report.control_sent, report.control_lost = control.sent, control.sent - control.received
            report.control_out_of_order, report.control_refused = control.out_of_order, control.refused
            lat = sorted(control.latencies) or [0.0]
            report.control_p50_ms = round(lat[len(lat) // 2] * 1000, 2)
            report.control_p99_ms = round(lat[int(len(lat) * 0.99)] * 1000, 2)
            report.control_max_ms = round(lat[-1] * 1000, 2)
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        report.failures.append(f"the campaign broke off: {exc!r}")
        tasks_baseline = tasks_after = 0.0
    finally:
        report.seconds = round(time.monotonic() - started, 1)
        report.server_alive = server.alive()
        exit_code = server.stop()
        report.tracebacks, report.log_problems = server.log_problems()
        if tmp is not None:
            tmp.cleanup()
    for name in ("frames", "binary", "sockets", "refused_handshakes", "stalls"):
        setattr(report, name, getattr(tally, name))
    report.closes = dict(sorted(tally.closes.items()))
    checks = [
        (report.server_alive, f"the server died (exit {exit_code})"),
        (report.health == "ok" and report.health_failures == 0, f"/healthz: {report.health!r}, {report.health_failures} failed"),
        (report.control_closed is None, f"a control socket ended early: {report.control_closed}"),
        (report.control_lost == 0, f"{report.control_lost} control messages lost"),
        (report.admin_feed_alive, f"the admin feed stopped: {report.admin_feed}"),
        (report.control_out_of_order == 0, f"{report.control_out_of_order} control messages out of order"),
        (report.control_refused == 0, f"{report.control_refused} control messages refused"),
        (report.tracebacks == 0 and not report.log_problems, f"{report.tracebacks} tracebacks in the server log"),
        (report.stalls == 0, f"{report.stalls} sockets stalled (no heartbeat reply in {stall_after:g}s)"),
        (report.connections_after == 3, f"{report.connections_after} connections left, expected the control's 3"),
        (report.channels_after == 3, f"{report.channels_after} channels left, expected the control's 3"),
        (report.topics_after == 2, f"{report.topics_after} topics left, expected room:control and chanctl:admin"),
        (tasks_after <= tasks_baseline, f"{tasks_after:g} asyncio tasks after, {tasks_baseline:g} at the baseline"),
        (report.fds_after <= report.fds_baseline, f"{report.fds_after} fds after, {report.fds_baseline} at the baseline"),
        (report.rss_after_kib - report.rss_baseline_kib <= rss_slack_kib,
         f"RSS {report.rss_after_kib} KiB after, {report.rss_baseline_kib} KiB at the baseline"),
    ]
    report.failures += [message for ok, message in checks if not ok]
    return report


class InProcess:
    """A server built in this process (for tracemalloc), with :class:`ServerUnderTest`'s ``url``."""

    def __init__(self, port: int):
        self.port, self.signer, self.tokens = port, TokenSigner(SECRET), {}

    def url(self, user: int | None, vsn: str | None = "2.0.0") -> str:
        query = [f"token={self.tokens.setdefault(user, self.signer.mint(user, {}))}"] if user is not None else []
        return f"ws://127.0.0.1:{self.port}/socket/websocket?" + "&".join(query + ([f"vsn={vsn}"] if vsn else []))


async def retained(frames: int, seed: int, connections: int, top: int = 8) -> None:
    """What stays allocated in the server after ``frames`` fuzz frames whose sockets have all closed:
    a warm-up round (5%), then tracemalloc over the rest, against a server in this process. RSS
    cannot tell a leak from memory Python keeps in its arenas; this can."""
    import gc
    import logging
    import tracemalloc

    from chanctl.config.load import load_config_text
    from chanctl.server.runtime import build_server

    logging.disable(logging.CRITICAL)
    server = build_server(load_config_text(CONFIG, "<fuzz>", {}), host="127.0.0.1", port=0)
    async with server:
        target, tally = InProcess(server.port), Tally()
        warm = max(1, frames // 20)
        await fuzz_round(target, seed, warm, connections, tally, 0, 60)  # type: ignore[arg-type]
        await asyncio.wait_for(server.until_connections(0), 60)
        gc.collect()
        tracemalloc.start(6)
        before, blocks = tracemalloc.take_snapshot(), sys.getallocatedblocks()
        await fuzz_round(target, seed, frames - warm, connections, tally, connections, 60)  # type: ignore[arg-type]
        await asyncio.wait_for(server.until_connections(0), 60)
        gc.collect()
        diff = tracemalloc.take_snapshot().compare_to(before, "traceback")
        print(f"{frames - warm:,} frames over {tally.sockets:,} sockets after a {warm:,}-frame warm-up: "
              f"{sys.getallocatedblocks() - blocks:+,} live blocks, {sum(d.size_diff for d in diff):+,} bytes traced")
        for stat in diff[:top]:
            print(f"{stat.size_diff:+,} bytes in {stat.count_diff:+,} blocks, allocated at")
            print("    " + "\n    ".join(stat.traceback.format()[-6:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16, help="fuzz sockets open at once")
    parser.add_argument("--rss-slack", type=int, default=8192, help="KiB RSS may end above the warm-up baseline")
    parser.add_argument("--memory-trim", type=lambda value: None if value in ("off", "null") else float(value),
                        default=5.0, help="the server's server.memory_trim, seconds, or off")
    parser.add_argument("--keep", type=Path, help="keep the server's config and log in this directory")
    parser.add_argument("--retained", action="store_true",
                        help="instead: what stays allocated (tracemalloc) in a server in this process, no control pair")
    args = parser.parse_args()
    if args.retained:
        asyncio.run(retained(args.frames, args.seed, args.connections))
        return
    report = asyncio.run(campaign(args.frames, args.seed, args.connections, workdir=args.keep,
                                  rss_slack_kib=args.rss_slack, progress=True, memory_trim=args.memory_trim))
    print(json.dumps(report.__dict__, indent=1, ensure_ascii=True))
    print("PASS" if not report.failures else "FAIL:\n  " + "\n  ".join(report.failures))
    raise SystemExit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
