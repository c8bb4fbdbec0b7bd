"""A token bucket for client messages: pure arithmetic on a ``now`` the runtime passes in."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass
class TokenBucket:
    """``rate`` messages a second on average, bursts of up to ``burst``.

    A bucket starts full, so a client that joins its channels at connect is never refused.
    """

    rate: float
    burst: int
    tokens: float = -1.0
    last: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float) -> float:
        """0.0 when a message may pass (and counts it), else the seconds until one may."""
        tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate
