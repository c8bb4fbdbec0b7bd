"""Phoenix's ``check_origin`` with a list of allowed origins (``server.origins``).

Pure and stdlib-only, so that the config's validation (``chanctl check``) and the server's
handshake use the one parser: an entry ``check`` accepts is one ``serve`` can start with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OriginPolicy"]


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
        ValueError: an entry that names no host or is no URL; the config's validation raises it
            first, so that ``chanctl check`` reports it where ``serve`` would have crashed.
    """

    def __init__(self, entries: Sequence[str]):
        self._allowed = [self._parse(entry) for entry in entries]

    @staticmethod
    def _parse(entry: str) -> _Allowed:
        text = entry.strip()
        try:
            url = urlsplit(text if "//" in text else "//" + text)
            port = url.port
        except ValueError as exc:  # a port that is not a number in 0-65535, a bad IPv6 literal
            raise ValueError(f"origin {entry!r} is not a valid URL: {exc}") from None
        host = (url.hostname or "").lower()
        if not host:
            raise ValueError(f"origin {entry!r} names no host")
        wildcard = host.startswith("*.")
        return _Allowed(url.scheme.lower() or None, host[2:] if wildcard else host, port, wildcard)

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
