"""The one exception tree of chanctl.

    ChanctlError
    ├── ConfigError            a config file that cannot be loaded (carries every Problem)
    ├── RuleError              a rule or expression that does not compile (located by the compile step)
    ├── HandlerError           a ``handler:`` class that cannot be imported (located by the compile step)
    ├── TokenError
    │   ├── TokenMissing       no token was given
    │   ├── TokenInvalid       malformed, forged, wrong salt or wrong secret
    │   └── TokenExpired       older than its allowed age
    ├── ProtocolViolation      a frame a client should never send (closes the connection)
    ├── PresenceError          a presence operation that cannot be done (already_tracked, nopresence, ...)
    ├── PubSubError
    ├── ServerError
    └── ClientError            chanctl.client talking to a server
        ├── ConnectRefused     the handshake was answered with an HTTP error (bad token: 403)
        ├── Unreachable        no server answered, or not in time
        ├── JoinRefused        the join reply was an error
        ├── ReplyTimeout       no reply to a push in time
        └── ConnectionLost     the socket closed while a reply was awaited

Errors keep their data in attributes and build the message in ``__str__``, so the CLI,
the server log and the tests all print the same words.
"""

from __future__ import annotations

__all__ = [
    "ChanctlError",
    "ClientError",
    "ConfigError",
    "ConnectRefused",
    "ConnectionLost",
    "HandlerError",
    "HandshakeRefused",
    "JoinRefused",
    "PresenceError",
    "Problem",
    "ProtocolViolation",
    "PubSubError",
    "ReplyTimeout",
    "RuleError",
    "ServerError",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenMissing",
    "Unreachable",
]

import json
from typing import Any
from dataclasses import dataclass


class ChanctlError(Exception):
    """Root of every error chanctl raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located as precisely as we can."""

    message: str
    path: str = ""
    """Dotted key path, e.g. ``topics.room:{id}.events.new_msg.do``."""
    file: str = ""
    line: int | None = None
    """1-based line, when the YAML position is known."""
    column: int | None = None
    hint: str = ""
    severity: str = "error"
    """``error`` refuses to load; ``warning`` is reported and loads."""
    excerpt: str = ""
    """Source lines to print under the message, e.g. a rule's line with a caret under the column."""

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.severity}: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        if self.excerpt:
            text += "\n" + "\n".join("    " + line for line in self.excerpt.splitlines())
        return text


class ConfigError(ChanctlError):
    """A config that does not load; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem], partial: Any = None):
        super().__init__(problems)
        self.problems = problems
        self.partial = partial
        """From the loader: the parts that did load (a ``LoadedConfig`` of the valid topics), which
        ``chanctl check`` compiles too so that one run reports every problem."""

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class RuleError(ChanctlError, ValueError):
    """A rule that does not compile; ``column`` is 1-based within the expression when known.

    (Also a ValueError, as it was before it joined this tree.)"""

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return self.message


class RuleInputTooLarge(ChanctlError):
    """A rule that only the ``cel`` library can evaluate was handed client input (``payload``,
    ``params``) larger than ``server.max_library_input`` values: it is not evaluated, as
    the library converts every value it reads on each evaluation (a 1 MiB payload cost 0.4 s of the
    event loop). Callers answer with an error reply that names the limit."""

    def __init__(self, root: str, limit: int):
        super().__init__(f"{root} is larger than the {limit} values a rule evaluated by the CEL library may read (server.max_library_input)")
        self.root = root
        self.limit = limit


class HandlerError(ChanctlError, ValueError):
    """A ``handler:`` class that cannot be imported; ``column`` is 1-based within the spec."""

    def __init__(self, message: str, column: int = 1):
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return self.message


class TokenError(ChanctlError):
    """A socket token that cannot be used."""

    reason = "invalid"

    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"token {self.reason}" + (f": {self.detail}" if self.detail else "")


class TokenMissing(TokenError):
    reason = "missing"


class TokenInvalid(TokenError):
    reason = "invalid"


class TokenExpired(TokenError):
    reason = "expired"

    def __init__(self, age: float, max_age: float):
        from chanctl.durations import format_duration

        super().__init__(f"age {format_duration(age)} exceeds the limit of {format_duration(max_age)}")
        self.age = age
        self.max_age = max_age


class ProtocolViolation(ChanctlError):
    """A frame that breaks the wire contract; the connection is closed with ``code``. ``limit``
    names the limit it passed, when that is why (counted by that name in /metrics)."""

    def __init__(self, reason: str, code: int = 1007, limit: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.limit = limit

    def __str__(self) -> str:
        return self.reason


class PresenceError(ChanctlError):
    """A presence track/update/untrack that cannot be done; ``reason`` is Phoenix's word for it.

    ``already_tracked`` (the channel already tracks that key), ``nopresence`` (it does not),
    ``not joined`` (called before the channel joined) or ``too many presence updates`` (the
    connection passed its update cap). Raised out of ``handle_in`` it becomes an error reply.
    """

    def __init__(self, reason: str, key: str | None = None):
        super().__init__(reason, key)
        self.reason = reason
        self.key = key

    def __str__(self) -> str:
        return self.reason if self.key is None else f"{self.reason} (key {self.key!r})"


class PubSubError(ChanctlError):
    """The pubsub backend failed."""


class ServerError(ChanctlError):
    """The server could not start or keep running."""


class HandshakeRefused(ServerError):
    """A client refused at connect (origin, vsn or token): HTTP 403 on a WebSocket upgrade, a
    ``{"status": 403}`` answer on LongPoll. ``reason`` is what the server logs."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ClientError(ChanctlError):
    """Talking to a server from :mod:`chanctl.client` failed."""


class ConnectRefused(ClientError):
    """The server answered the WebSocket upgrade with an HTTP error (403 for a bad token)."""

    def __init__(self, status: int, body: str = ""):
        super().__init__(status, body)
        self.status = status
        self.body = body

    def __str__(self) -> str:
        return f"connection refused (HTTP {self.status})" + (f": {self.body}" if self.body else "")


class Unreachable(ClientError):
    """Nothing answered at ``url``, or not within the timeout."""

    def __init__(self, url: str, detail: str):
        super().__init__(url, detail)
        self.url = url
        self.detail = detail

    def __str__(self) -> str:
        return f"cannot reach {self.url}: {self.detail}"


class JoinRefused(ClientError):
    """The server refused to join ``topic``; ``response`` is its error reply."""

    def __init__(self, topic: str, response: object):
        super().__init__(topic, response)
        self.topic = topic
        self.response = response

    def __str__(self) -> str:
        return f"join {self.topic} refused: {json.dumps(self.response)}"


class ReplyTimeout(ClientError):
    """No reply to ``event`` on ``topic`` within ``timeout`` seconds."""

    def __init__(self, topic: str, event: str, timeout: float):
        super().__init__(topic, event, timeout)
        self.topic = topic
        self.event = event
        self.timeout = timeout

    def __str__(self) -> str:
        return f"no reply to {self.event} on {self.topic} within {self.timeout:g}s"


class ConnectionLost(ClientError):
    """The socket closed before the awaited reply came; ``code`` and ``reason`` are the server's
    close frame, when it sent one (1009: a frame too big for it)."""

    def __init__(self, code: int | None = None, reason: str = ""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        if self.code is None or self.code == 1006:  # 1006: no close frame, the connection just dropped
            return "connection lost before the reply"
        return f"the server closed the connection before the reply: {self.code}" + (f" {self.reason}" if self.reason else "")
