"""Signed, expiring socket tokens (Phoenix.Token's contract, on itsdangerous).

A token is ``URLSafeTimedSerializer(secret, salt).dumps(claims)``: readable by the client, signed
by the server, stamped with the signing time. ``claims["id"]`` is the user id; a ``ttl`` given at
minting is stored in the claims as ``"ttl"`` so that one token can be shorter-lived than the
server's ``max_age`` (PROTOCOL.md §7: itsdangerous has no max_age stored in the token).

Verification tells apart the four outcomes a user needs to act on: missing, malformed, bad
signature, expired (with the age and the limit).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from itsdangerous.signer import HMACAlgorithm

from chanctl.errors import TokenExpired, TokenInvalid, TokenMissing

__all__ = ["DEFAULT_ADMIN_CLAIM", "DEFAULT_SALT", "TokenSigner", "VerifiedToken"]

DEFAULT_SALT = "user socket"
DEFAULT_ADMIN_CLAIM = "admin"
"""The claim that makes a token an admin token (``auth.admin_claim``)."""
_SHAPE = re.compile(r"\.?[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")
"""payload.timestamp.signature, url-safe base64; a leading ``.`` marks a payload itsdangerous
compressed (long claims). Matched whole (``fullmatch``)."""
_CLOCK_SKEW = 5  # seconds a token may be stamped ahead of our clock (another node's clock)


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _decoded(part: str) -> bytes | None:
    """The bytes of a base64url ``part`` (unpadded, of url-safe characters: ``_SHAPE`` checked
    that), or None when ``part`` is not the one base64url spelling of them.

    base64 decoding ignores the spare low bits of the last character (2 bits when the length is 3
    mod 4, 4 when it is 2 mod 4), so several spellings decode alike and would all verify. One
    token must have one spelling, or a deny list or a log search could be dodged by retyping it.
    """
    spelled = part.encode()  # bytes: their translate is a table lookup, str's a dict lookup per character
    try:
        raw = binascii.a2b_base64(spelled.translate(_FROM_URLSAFE) + b"=" * (-len(spelled) % 4))
    except binascii.Error:
        return None
    return raw if binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=") == spelled else None


class _KeyedHMAC(HMACAlgorithm):
    """itsdangerous's HMAC-SHA1, keyed once per key: checking a token is then a copy, an update and
    a digest. itsdangerous builds a new HMAC for every token, through its pure-Python path (its
    default digest is a Python function, which ``hmac.new`` cannot hand to OpenSSL), about half of
    a token check's time. The same bytes either way (tests/test_tokens.py)."""

    def __init__(self) -> None:
        super().__init__(hashlib.sha1)
        self._keyed: dict[bytes, Any] = {}

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        keyed = self._keyed.get(key)
        if keyed is None:
            keyed = self._keyed[key] = hmac.new(key, digestmod="sha1")
        mac = keyed.copy()
        mac.update(value)
        return mac.digest()


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed verification."""

    claims: dict[str, Any]
    signed_at: float
    """Unix time of signing (whole seconds, as itsdangerous stamps them)."""
    age: float
    max_age: float

    @property
    def user_id(self) -> Any:
        return self.claims.get("id")


class TokenSigner:
    """Mints and verifies socket tokens for one secret and salt.

    Args:
        secret: the server's token secret.
        salt: namespace of the token; Phoenix's convention is ``"user socket"``.
        max_age: the longest a token may live, in seconds (the config's ``auth.max_age``).
        clock: ``() -> unix seconds``; injected by tests to expire tokens without sleeping.
    """

    def __init__(
        self,
        secret: str,
        *,
        salt: str = DEFAULT_SALT,
        max_age: float = 14 * 86400,
        clock: Callable[[], float] = time.time,
    ):
        self.max_age = max_age
        self._clock = clock

        derived: dict[tuple[bytes, bytes | None], bytes] = {}

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

            def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
                # One hash per secret for the server's life instead of one per token.
                key = (self.salt, secret_key if secret_key is None or isinstance(secret_key, bytes) else secret_key.encode())
                found = derived.get(key)
                if found is None:
                    found = derived[key] = super().derive_key(secret_key)
                return found

        self._serializer = URLSafeTimedSerializer(
            secret, salt=salt, signer=_Signer, signer_kwargs={"digest_method": hashlib.sha1, "algorithm": _KeyedHMAC()},
        )
        signer = self._serializer.make_signer()
        self._key = signer.derive_key()
        self._algorithm = signer.algorithm

    def mint(self, user_id: Any, claims: dict[str, Any] | None = None, *, ttl: float | None = None) -> str:
        """A token for ``user_id`` with extra ``claims``; ``ttl`` shortens its life below ``max_age``."""
        body = dict(claims or {})
        body["id"] = user_id
        if ttl is not None:
            body["ttl"] = ttl
        return self._serializer.dumps(body)

    def verify(self, token: str | None) -> VerifiedToken:
        """The token's claims, or the reason it cannot be used.

        Raises:
            TokenMissing, TokenInvalid, TokenExpired
        """
        if token is None or token == "":
            raise TokenMissing("no token was given")
        if not isinstance(token, str) or not _SHAPE.fullmatch(token):
            raise TokenInvalid("malformed: not a chanctl token (expected three dot-separated parts)")
        # What URLSafeTimedSerializer.loads checks, read directly: payload.timestamp.signature, the
        # signature an HMAC of "payload.timestamp" with the derived key, the timestamp a big-endian
        # integer, the payload JSON (zlib-compressed after a leading "."). itsdangerous's own path
        # decodes each part twice, through some twenty Python calls, on every connect (issue 15).
        signed, _, signature = token.rpartition(".")
        payload, _, stamp = signed.rpartition(".")
        compressed = payload.startswith(".")
        body, stamp_bytes, mac = _decoded(payload[1:] if compressed else payload), _decoded(stamp), _decoded(signature)
        if body is None or stamp_bytes is None or mac is None:
            raise TokenInvalid("malformed: not in canonical base64url (altered?)")
        now = self._clock()
        if not hmac.compare_digest(mac, self._algorithm.get_signature(self._key, signed.encode())):
            raise TokenInvalid("bad signature: signed with another secret or salt, or altered")
        try:
            body = zlib.decompress(body) if compressed else body
        except zlib.error:
            raise TokenInvalid("malformed: Could not zlib decompress the payload before decoding the payload") from None
        try:
            claims = json.loads(body.decode())  # what the serializer's reader (itsdangerous's _CompactJSON) calls
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser
            raise TokenInvalid("malformed: Could not load the payload because an exception occurred on unserializing the data.") from None
        if not isinstance(claims, dict) or "id" not in claims:
            raise TokenInvalid("malformed: the claims carry no user id")
        signed_at = float(int.from_bytes(stamp_bytes, "big"))
        age = now - signed_at
        if age < -_CLOCK_SKEW:
            raise TokenInvalid("signed in the future: check the clocks of the minting host")
        limit = self.max_age
        ttl = claims.get("ttl")
        if ttl is not None:
            # Fail closed: a ttl that is not a number ("15m" from --claim) used to be ignored, which
            # gave the token the whole max_age instead of the short life its minter meant.
            if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl < float("inf"):
                raise TokenInvalid(f"malformed: the ttl claim must be a number of seconds, not {str(ttl)[:20]!r} (mint with --ttl)")
            limit = min(limit, float(ttl))
        if age > limit:
            raise TokenExpired(age, limit)
        return VerifiedToken(claims=claims, signed_at=signed_at, age=max(age, 0.0), max_age=limit)
