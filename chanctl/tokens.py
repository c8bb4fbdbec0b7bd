"""Signed, expiring socket tokens (Phoenix.Token's contract, on itsdangerous).

A token is ``URLSafeTimedSerializer(secret, salt).dumps(claims)``: readable by the client, signed
by the server, stamped with the signing time. ``claims["id"]`` is the user id; a ``ttl`` given at
minting is stored in the claims as ``"ttl"`` so that one token can be shorter-lived than the
server's ``max_age`` (PROTOCOL.md §7: itsdangerous has no max_age stored in the token).

Verification tells apart the four outcomes a user needs to act on: missing, malformed, bad
signature, expired (with the age and the limit).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
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


def _canonical(part: str) -> bool:
    """Whether ``part`` is the one base64url spelling of its bytes.

    base64 decoding ignores the spare low bits of the last character (2 bits when the length is 3
    mod 4, 4 when it is 2 mod 4), so several spellings decode alike and would all verify. One
    token must have one spelling, or a deny list or a log search could be dodged by retyping it.
    """
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == part


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
        self._signer = self._serializer.make_signer()
        """What ``loads`` would build anew for every token (the serializer has no fallback signers)."""

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
        if not all(map(_canonical, token.split("."))):
            raise TokenInvalid("malformed: not in canonical base64url (altered?)")
        now = self._clock()
        try:
            # URLSafeTimedSerializer.loads, less the signer it builds per call.
            payload, signed = self._signer.unsign(token, return_timestamp=True)
            claims = self._serializer.load_payload(payload)
        except SignatureExpired as exc:  # pragma: no cover - we pass no max_age to loads
            raise TokenInvalid(str(exc)) from None
        except BadSignature as exc:
            raise TokenInvalid("bad signature: signed with another secret or salt, or altered") from exc
        except BadData as exc:
            raise TokenInvalid(f"malformed: {exc}") from None
        if not isinstance(claims, dict) or "id" not in claims:
            raise TokenInvalid("malformed: the claims carry no user id")
        signed_at = signed.timestamp()
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
