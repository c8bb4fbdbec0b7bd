"""The upgrade request read directly: the front door's fast path for a plain WebSocket upgrade.

websockets reads an upgrade through a generator per line, a regex per header, a header multidict,
a parser per list-valued header and an answer built as headers and serialized again: about
290,000 instructions per connect (callgrind, websockets 17.4), a third of a whole connect + join.
Nearly every upgrade a Phoenix client sends is the same plain shape, and it is read here in a few
C-level passes (:func:`read_upgrade`), and answered with the bytes websockets would have written
(:func:`switching_protocols`).

The rule that keeps this safe: :func:`read_upgrade` returns an :class:`Upgrade` only for a head
that websockets would parse and accept with the answer built here; everything else (another
method, path or version, a body header, a line or head over websockets' own limits, a header
websockets would refuse, anything unusual) returns None, and the runtime hands the request to
websockets unchanged, so every odd request still gets exactly websockets' answer. Being strict
only costs the slow path; being lax would change behaviour, so every check errs strict.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import NamedTuple

from websockets.exceptions import InvalidHeaderFormat
from websockets.headers import parse_connection, parse_subprotocol
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS
from websockets.utils import accept_key

__all__ = ["HEAD_LIMIT", "Upgrade", "read_upgrade", "switching_protocols"]

HEAD_LIMIT = MAX_LINE_LENGTH
"""Bytes of a head read here: no longer than websockets' limit on one line, so no line of it can be
over that limit either. A longer head goes to websockets, which applies its own limits."""

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
"""An HTTP token (RFC 9110 §5.6.2), as websockets' header-name check has it."""
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
"""A header value: HTAB, SP, VCHAR, obs-text, as websockets' value check has it (no CR, LF, NUL)."""
_HEAD = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1\r\n((?:" + _TOKEN + rb":" + _VALUE + rb"\r\n)*)\r\n")
"""The whole head: a GET of a visible-ASCII target over HTTP/1.1, then well-formed header lines."""
_FIELD = re.compile(b"(" + _TOKEN + b"):(" + _VALUE + rb")\r\n")
_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")
"""A Sec-WebSocket-Key websockets accepts: base64 of exactly 16 bytes (it does not check the
unused bits of the last digit, so neither is this)."""
_OWS = b" \t"

_READ = frozenset((b"connection", b"upgrade", b"sec-websocket-key", b"sec-websocket-version",
                   b"sec-websocket-protocol", b"origin", b"content-length", b"transfer-encoding"))
"""The (lower-case) header names the fast path looks at; every other header is ignored, as
websockets ignores it (Sec-WebSocket-Extensions included: the server offers none)."""


class Upgrade(NamedTuple):
    """What the handshake needs of a plain upgrade request."""

    query: str
    """The target's query, after the ``?`` (empty without one)."""
    key: str
    """Sec-WebSocket-Key."""
    protocols: list[str]
    """The subprotocols offered (Sec-WebSocket-Protocol, parsed as websockets parses it)."""
    protocol_values: list[str]
    """The Sec-WebSocket-Protocol header values as they came (for the token in phoenix.js's ``authToken``)."""
    origin: str | None
    """The Origin header (None without one)."""


def read_upgrade(head: bytes, path: bytes) -> Upgrade | None:
    """The upgrade that ``head`` (a request's head, through its ``\\r\\n\\r\\n``) asks for at ``path``,
    or None when it is anything but a plain, valid WebSocket upgrade of ``path``: then websockets
    must read it (see the module's docstring)."""
    if len(head) > HEAD_LIMIT:
        return None
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    target, block = match.groups()
    where, mark, query = target.partition(b"?")
    if where != path or b"#" in query:
        return None
    fields = _FIELD.findall(block)
    if len(fields) > MAX_NUM_HEADERS:
        return None
    found: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        name = name.lower()
        if name in _READ:
            values = found.get(name)
            if values is None:
                found[name] = [value.strip(_OWS)]
            else:
                values.append(value.strip(_OWS))
    get = found.get
    if b"content-length" in found or b"transfer-encoding" in found:
        return None  # websockets refuses a body, or reads a zero Content-Length: its call
    key, version, upgrade = get(b"sec-websocket-key"), get(b"sec-websocket-version"), get(b"upgrade")
    if (key is None or len(key) != 1 or _KEY.fullmatch(key[0]) is None or version != [b"13"]
            or upgrade is None or len(upgrade) != 1 or upgrade[0].lower() != b"websocket"):
        return None
    connection, origin = get(b"connection"), get(b"origin")
    if connection is None or not _upgrades(connection) or (origin is not None and len(origin) > 1):
        return None
    protocol_values = [value.decode("latin-1") for value in get(b"sec-websocket-protocol", ())]
    protocols: list[str] = []
    try:
        for value in protocol_values:
            protocols += parse_subprotocol(value)
    except InvalidHeaderFormat:
        return None
    return Upgrade(query.decode("ascii"), key[0].decode("ascii"), protocols, protocol_values,
                   None if origin is None else origin[0].decode("latin-1"))


def _upgrades(values: list[bytes]) -> bool:
    """Whether the Connection header values carry the ``upgrade`` option, each value well-formed."""
    if len(values) == 1 and values[0].lower() == b"upgrade":
        return True  # what nearly every client sends
    try:
        options = [option for value in values for option in parse_connection(value.decode("latin-1"))]
    except InvalidHeaderFormat:
        return False
    return any(option.lower() == "upgrade" for option in options)


_date: tuple[int, bytes] = (0, b"")
"""The Date header's value for the second it was formatted in (one format a second, not per connect)."""


def _http_date() -> bytes:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True).encode("ascii"))
    return _date[1]


def switching_protocols(key: str, subprotocol: str | None, server: str) -> bytes:
    """The 101 answer websockets writes for this upgrade, byte for byte (its headers in its order:
    Date, Upgrade, Connection, Sec-WebSocket-Accept, Sec-WebSocket-Protocol when one was chosen,
    then Server; ``server`` is the header's value)."""
    chosen = b"" if subprotocol is None else b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n"
    return b"".join((
        b"HTTP/1.1 101 Switching Protocols\r\nDate: ", _http_date(),
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ", accept_key(key).encode("ascii"),
        b"\r\n", chosen, b"Server: ", server.encode("latin-1"), b"\r\n\r\n",
    ))
