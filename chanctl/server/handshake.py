"""Pure checks of the upgrade request (PROTOCOL.md §1): its query, the token subprotocol (origins: :mod:`chanctl.origins`).

Kept apart from the runtime so each rule is a plain function tested with plain strings.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Sequence
from urllib.parse import parse_qs

__all__ = ["AUTH_PROTOCOL_PREFIX", "PHOENIX_PROTOCOL", "REALTIME_TOKEN_PARAM", "TokenRedactor", "query_params", "token_from_subprotocols"]

PHOENIX_PROTOCOL = "phoenix"
"""The subprotocol phoenix.js offers next to its token, and the one the server must echo."""
AUTH_PROTOCOL_PREFIX = "base64url.bearer.phx."
"""phoenix.js ``authToken``: ``base64url.bearer.phx.`` + btoa(token) without ``=`` padding."""
REALTIME_TOKEN_PARAM = "apikey"
"""The query parameter Supabase's realtime-js carries its token in (``params: {apikey}``); taken
when ``?token=`` is absent and the config has a ``realtime: true`` topic."""


def query_params(query: str) -> dict[str, str]:
    """Each query parameter's last non-blank value, as ``parse_qs(query)[name][-1]`` gives it: read
    directly when nothing in it is escaped (no ``%``, no ``+``, as in the URLs clients build), else
    by ``parse_qs``, which costs a connect some forty Python calls."""
    if "%" in query or "+" in query:
        return {name: values[-1] for name, values in parse_qs(query).items()}
    found = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if value:  # parse_qs drops a blank value, and a pair without "="
            found[name] = value
    return found


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


_SECRETS = re.compile(r'(token=|apikey=|"access_token"\s*:\s*"|' + re.escape(AUTH_PROTOCOL_PREFIX) + r')[^&\s,"]+', re.IGNORECASE)


class TokenRedactor(logging.Filter):
    """Redacts socket tokens from log records: websockets logs every request line and header at
    debug level, and those carry ``?token=`` (``access_token=`` too), realtime-js's ``?apikey=``,
    phoenix.js's ``authToken`` subprotocol, and (in frames) an ``"access_token"`` payload field."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRETS.sub(r"\1<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
