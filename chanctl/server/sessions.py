"""Sessions that outlive their first token: expiry on open sockets, in-band refresh, revocation.

Phoenix checks a token only at connect, so a socket opened an hour before its token expires stays
authorized forever. chanctl holds an open socket to its token's expiry (``signed_at`` plus the
token's ``ttl`` claim or ``auth.max_age``, whichever is sooner):

- ``auth.expiry_warning`` ahead of it the client gets ``[null, null, "phoenix", "token_expiring",
  {"expires_in": S, "expires_at": T}]`` (phoenix.js shows it to ``socket.onMessage``);
- a fresh token sent as the event ``access_token`` with payload ``{"access_token": TOKEN}``, on
  topic ``phoenix`` or on any joined channel, is verified exactly as at connect (signature, age,
  revocation), must name the same user (claim ``id``), and moves the expiry; the reply is
  ``{"expires_in": S, "expires_at": T}`` or an error with the reason. The socket keeps the claims it
  connected with: a refresh extends a session, it does not change who it is;
- ``auth.expiry_grace`` after the expiry a socket that did not refresh is closed with
  :data:`TOKEN_EXPIRED` (4401); phoenix.js reconnects through its ``params``/``authToken``
  function, and a stale token is refused at the handshake (403).

Revocation (:class:`Revocations`) refuses one token, or every token of a user signed up to now,
until it would have expired anyway, and the server closes the sockets it names with
:data:`TOKEN_REVOKED` (4403). Its entries are plain JSON-able dicts and applying one twice changes
nothing, so a cluster can publish them to every node and replay them to a node that joins.

Timers: each socket has at most one deadline at a time (the warning, then the close) in the
server's :class:`~chanctl.server.deadlines.Deadlines` (met at most 50 ms late), moved by a refresh
and dropped when the socket ends, so a closed socket leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chanctl.channel import Outcome, error, ok
from chanctl.errors import TokenError
from chanctl.protocol.messages import ACCESS_TOKEN
from chanctl.server.deadlines import Deadlines
from chanctl.tokens import TokenSigner, VerifiedToken

if TYPE_CHECKING:
    from chanctl.server.connection import Connection

__all__ = [
    "Grant", "Revocations", "Session", "SessionStats", "Sessions", "TOKEN_EXPIRED", "TOKEN_EXPIRING",
    "TOKEN_REVOKED", "token_key",
]

log = logging.getLogger("chanctl.sessions")

TOKEN_EXPIRING = "token_expiring"
"""The server's warning push on topic ``phoenix``."""
TOKEN_EXPIRED = 4401
"""Close code of a socket whose token expired and was not refreshed within the grace."""
TOKEN_REVOKED = 4403
"""Close code of a socket whose token, or user, was revoked."""


def token_key(token: str) -> str:
    """What the revocation list keeps of a token: a digest, so it never holds a usable credential."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Grant:
    """What the handshake learned about a socket's token, for its session."""

    user_id: Any
    signed_at: float
    expires_at: float
    """Unix time after which the token is no longer accepted."""
    key: str
    """:func:`token_key` of the token."""

    @classmethod
    def of(cls, token: str, verified: VerifiedToken) -> Grant:
        return cls(verified.user_id, verified.signed_at, verified.signed_at + verified.max_age, token_key(token))


@dataclass
class SessionStats:
    """Counters for /metrics."""

    refreshes: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    """``access_token`` events by outcome."""
    warnings: int = 0
    expired: int = 0
    """Sockets closed because their token expired (4401)."""
    revocations: int = 0
    """Revocations applied (tokens and users)."""
    revoked_closed: int = 0
    """Sockets closed by a revocation (4403)."""
    revoked_refused: int = 0
    """Handshakes and refreshes refused because the token was revoked."""


class Revocations:
    """Revoked tokens and users, each until the last token it refuses would have expired anyway.

    An entry is ``{"token": KEY, "until": T}`` (one token, by :func:`token_key`) or ``{"user": ID,
    "before": T0, "until": T}`` (every token of user ID signed at or before T0). Entries are data, so
    a cluster can publish them; :meth:`apply` is idempotent.

    Args:
        clock: ``() -> unix seconds``.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._users: dict[Any, tuple[float, float]] = {}
        """user id -> (signed at or before, until)."""

    def apply(self, entry: dict[str, Any]) -> None:
        """Add one entry (a repeat, or an older one, changes nothing); drops entries that ran out.

        Raises:
            ValueError: the entry has neither ``token`` nor ``user``.
        """
        now = self._clock()
        until = float(entry["until"])
        if "token" in entry:
            self._tokens[entry["token"]] = max(until, self._tokens.get(entry["token"], 0.0))
        elif "user" in entry:
            before, old_until = self._users.get(entry["user"], (0.0, 0.0))
            self._users[entry["user"]] = (max(before, float(entry["before"])), max(until, old_until))
        else:
            raise ValueError(f"a revocation names a token or a user, not {sorted(entry)}")
        self._tokens = {key: t for key, t in self._tokens.items() if t > now}
        self._users = {user: v for user, v in self._users.items() if v[1] > now}

    def refuses(self, grant: Grant) -> bool:
        """Whether the token of ``grant`` is revoked now."""
        if not self._tokens and not self._users:
            return False
        now = self._clock()
        if self._tokens.get(grant.key, 0.0) > now:
            return True
        user = _user_key(grant.user_id)
        entry = self._users.get(user) if user is not None else None
        return entry is not None and entry[1] > now and grant.signed_at <= entry[0]

    def entries(self) -> list[dict[str, Any]]:
        """Every live entry, e.g. for a node that joins a cluster."""
        now = self._clock()
        tokens = [{"token": key, "until": until} for key, until in self._tokens.items() if until > now]
        users = [{"user": user, "before": before, "until": until}
                 for user, (before, until) in self._users.items() if until > now]
        return tokens + users


def _user_key(user_id: Any) -> Any:
    """User ids are compared as JSON values; only strings and numbers can be revoked."""
    return user_id if isinstance(user_id, (str, int, float)) and not isinstance(user_id, bool) else None


class Sessions:
    """The server's side of every socket's token: policy, revocations, counters.

    Args:
        signer: verifies fresh tokens exactly as the handshake does.
        warning: seconds before expiry to push ``token_expiring``; 0 pushes none.
        grace: seconds after expiry before the socket is closed.
        clock: ``() -> unix seconds`` (tokens are stamped in wall-clock time).
    """

    def __init__(self, signer: TokenSigner, *, warning: float, grace: float, max_age: float,
                 clock: Callable[[], float] = time.time, deadlines: Deadlines | None = None):
        self.signer = signer
        self.deadlines = Deadlines() if deadlines is None else deadlines
        """Where sessions set their deadlines (the server's, shared with the idle timeouts)."""
        self.warning = warning
        self.grace = grace
        self.max_age = max_age
        self.clock = clock
        self.revocations = Revocations(clock)
        self.stats = SessionStats()
        self.on_revoke: list[Callable[[dict[str, Any]], None]] = []
        """Called with each entry revoked on this node (a cluster publishes it to the others)."""

    def admit(self, token: str, verified: VerifiedToken) -> Grant | None:
        """The grant of a verified token, or None when it is revoked."""
        grant = Grant.of(token, verified)
        if self.revocations.refuses(grant):
            self.stats.revoked_refused += 1
            return None
        return grant

    def open(self, connection: Connection, grant: Grant) -> Session:
        """Start holding ``connection`` to its token's expiry."""
        session = Session(self, connection, grant)
        session.arm()
        return session

    def revoke_token(self, token: str) -> dict[str, Any]:
        """The entry that refuses ``token`` until it would expire.

        Raises:
            TokenError: the token is not one of this server's live tokens (nothing to revoke).
        """
        verified = self.signer.verify(token)
        return {"token": token_key(token), "until": verified.signed_at + verified.max_age}

    def revoke_user(self, user_id: Any) -> dict[str, Any]:
        """The entry that refuses every token of ``user_id`` signed up to now."""
        now = self.clock()
        return {"user": user_id, "before": now, "until": now + self.max_age}

    def apply(self, entry: dict[str, Any], sessions: list[Session]) -> int:
        """Apply a revocation and close the given sockets' sessions it names; returns how many."""
        self.revocations.apply(entry)
        self.stats.revocations += 1
        closed = 0
        for session in sessions:
            if not session.ended and self.revocations.refuses(session.grant):
                session.connection.close(TOKEN_REVOKED, "token revoked")
                closed += 1
        self.stats.revoked_closed += closed
        return closed


class Session:
    """One socket's token: its expiry, the one timer that warns and then closes, and refresh."""

    __slots__ = ("connection", "ended", "grant", "_key", "_owner", "_warned")

    def __init__(self, owner: Sessions, connection: Connection, grant: Grant):
        self._owner = owner
        self.connection = connection
        self.grant = grant
        self.ended = False
        self._key: int | None = None
        """The next step's key in ``owner.deadlines`` while one is set."""
        self._warned = False

    @property
    def expires_at(self) -> float:
        """Unix time the socket's current token expires (the admin plane shows it)."""
        return self.grant.expires_at

    def _warns_next(self) -> bool:
        """Whether the next step is the warning (one is due and not yet sent), else the close."""
        return self._owner.warning > 0 and not self._warned

    def arm(self) -> None:
        """(Re)schedule the next step: the warning if one is due and not yet sent, else the close."""
        owner = self._owner
        if self._key is not None:
            owner.deadlines.drop(self._key, self)
        due = self.grant.expires_at - owner.warning if self._warns_next() else self.grant.expires_at + owner.grace
        # Tokens live in wall-clock time, deadlines in the loop's monotonic time: convert once here.
        self._key = owner.deadlines.add(asyncio.get_running_loop().time() + max(0.0, due - owner.clock()), self)

    def end(self) -> None:
        """The socket is gone: drop its deadline (and with it the last reference to the socket)."""
        self.ended = True
        if self._key is not None:
            self._owner.deadlines.drop(self._key, self)
            self._key = None

    def deadline_passed(self) -> None:
        """The step :meth:`arm` set is due."""
        self._key = None
        if self._warns_next():
            self._warn()
        else:
            self._expire()

    def _warn(self) -> None:
        if self.ended:
            return
        self._warned = True
        self._owner.stats.warnings += 1
        self.connection.notify(TOKEN_EXPIRING, self._expiry())
        self.arm()

    def _expire(self) -> None:
        if self.ended:
            return
        self._owner.stats.expired += 1
        log.info("closing %s: token expired", self.connection.socket_id or "an anonymous socket")
        self.connection.close(TOKEN_EXPIRED, "token expired")

    def _expiry(self) -> dict[str, Any]:
        expires_at = self.grant.expires_at
        return {"expires_in": max(0, round(expires_at - self._owner.clock())), "expires_at": expires_at}

    def refresh(self, payload: Any) -> Outcome:
        """An ``access_token`` event: verify the token as at connect, same user, move the expiry."""
        stats = self._owner.stats
        outcome = self._check(payload)
        stats.refreshes[outcome.status] += 1
        return outcome

    def _check(self, payload: Any) -> Outcome:
        token = payload.get(ACCESS_TOKEN) if isinstance(payload, dict) else None
        if not isinstance(token, str):
            return error({"reason": "access_token takes {\"access_token\": TOKEN}"})
        owner = self._owner
        try:
            verified = owner.signer.verify(token)
        except TokenError as exc:
            return error({"reason": f"token {exc.reason}", "detail": exc.detail})
        grant = owner.admit(token, verified)
        if grant is None:
            return error({"reason": "token revoked"})
        if grant.user_id != self.grant.user_id:
            return error({"reason": "wrong user", "detail": "a refresh must name the socket's own user"})
        self.grant = grant
        # A token already inside the warning window gets no warning: the client has just refreshed,
        # and warning it again at once would loop with a client whose tokens are all that short.
        self._warned = grant.expires_at - owner.clock() <= owner.warning
        self.arm()
        return ok(self._expiry())
