"""Pure checks of the upgrade request (PROTOCOL.md §1): origin, token subprotocol, method.

Kept apart from the runtime so each rule is a plain function tested with plain strings.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["AUTH_PROTOCOL_PREFIX", "OriginPolicy", "PHOENIX_PROTOCOL", "TokenRedactor", "token_from_subprotocols"]

PHOENIX_PROTOCOL = "phoenix"
"""The subprotocol phoenix.js offers next to its token, and the one the server must echo."""
AUTH_PROTOCOL_PREFIX = "base64url.bearer.phx."
"""phoenix.js ``authToken``: ``base64url.bearer.phx.`` + btoa(token) without ``=`` padding."""


def token_from_subprotocols(offered: Sequence[str]) -> str | None:
    """The token phoenix.js carried in ``Sec-WebSocket-Protocol``, or None.

    The name says base64url but phoenix.js uses ``btoa`` (the standard alphabet); both decode.
    """
    for protocol in offered:
        if protocol.startswith(AUTH_PROTOCOL_PREFIX):
            encoded = protocol[len(AUTH_PROTOCOL_PREFIX):].translate(str.maketrans("-_", "+/"))
            try:
                return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None


_SECRETS = re.compile(r"(token=|" + re.escape(AUTH_PROTOCOL_PREFIX) + r")[^&\s,]+", re.IGNORECASE)


class TokenRedactor(logging.Filter):
    """Redacts socket tokens from log records: websockets logs every request line and header at
    debug level, and those carry ``?token=`` and phoenix.js's ``authToken`` subprotocol."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRETS.sub(r"\1<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


@dataclass(frozen=True)
class _Allowed:
    scheme: str | None
    host: str
    port: int | None
    wildcard: bool

    def admits(self, scheme: str, host: str, port: int | None) -> bool:
        if self.scheme is not None and self.scheme != scheme:
            return False
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return host == self.host or host.endswith("." + self.host)
        return host == self.host


class OriginPolicy:
    """Phoenix's ``check_origin`` with a list: each entry constrains scheme, host and port.

    Entries: ``https://app.example.com`` (that scheme and host, any port unless given),
    ``//example.com`` or ``example.com`` (any scheme and port), ``*.example.com`` (the domain and
    every subdomain). A request without an ``Origin`` header is always accepted, as in Phoenix
    (non-browser clients send none).

    Raises:
        ValueError: an entry that names no host.
    """

    def __init__(self, entries: Sequence[str]):
        self._allowed = [self._parse(entry) for entry in entries]

    @staticmethod
    def _parse(entry: str) -> _Allowed:
        text = entry.strip()
        url = urlsplit(text if "//" in text else "//" + text)
        host = (url.hostname or "").lower()
        if not host:
            raise ValueError(f"origin {entry!r} names no host")
        wildcard = host.startswith("*.")
        return _Allowed(url.scheme.lower() or None, host[2:] if wildcard else host, url.port, wildcard)

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        try:
            url = urlsplit(origin.strip())
            port = url.port
        except ValueError:
            return False
        host = (url.hostname or "").lower()
        if not host:
            return False
        return any(allowed.admits(url.scheme.lower(), host, port) for allowed in self._allowed)
