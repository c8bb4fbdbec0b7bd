"""A countdown per room, driven by server timers.

- join: replies with the room's countdown (``{"remaining": N, "by": user}`` or ``{}``).
- ``start`` ``{"seconds": N}``: starts a countdown (one per room); everyone gets ``tick`` each
  second with ``remaining``, then ``done``. Answers ``{"reason": "already running"}`` if one runs.
- ``stop``: only its starter may stop it; everyone gets ``stopped``.
The countdown belongs to the channel that started it: if its client leaves, the timer is cancelled
with the channel, and ``terminate`` tells the room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chanctl import Channel, error, ok

__all__ = ["CountdownChannel"]


@dataclass
class Countdown:
    remaining: int
    by: Any


RUNNING: dict[str, Countdown] = {}
"""The countdown of each room, on this server."""


class CountdownChannel(Channel):
    tick_seconds = 1.0

    async def join(self, params: Any):
        self.tick_seconds = float(self.data.get("tick", 1.0))
        self.assigns.setdefault("countdowns_started", 0)
        running = RUNNING.get(self.topic)
        return ok({} if running is None else {"remaining": running.remaining, "by": running.by})

    async def handle_in(self, event: str, payload: Any):
        if event == "start":
            seconds = payload.get("seconds") if isinstance(payload, dict) else None
            if not isinstance(seconds, int) or not 1 <= seconds <= 3600:
                return error({"errors": {"seconds": ["must be a whole number from 1 to 3600"]}})
            if self.topic in RUNNING:
                return error({"reason": "already running"})
            RUNNING[self.topic] = Countdown(seconds, self.user["id"])
            self.assigns["countdowns_started"] += 1
            self.broadcast("tick", {"remaining": seconds, "by": self.user["id"]})
            self._timer = self.send_after(self.tick_seconds, "tick")
            return ok({"started": self.assigns["countdowns_started"]})
        if event == "stop":
            running = RUNNING.get(self.topic)
            if running is None or running.by != self.user["id"] or getattr(self, "_timer", None) is None:
                return error({"reason": "not yours to stop"})
            self._timer.cancel()
            self._finish("stopped")
            return ok()
        return error({"reason": "unknown event", "event": event})

    async def handle_info(self, message: Any) -> None:
        running = RUNNING.get(self.topic)
        if message != "tick" or running is None:
            return
        running.remaining -= 1
        if running.remaining <= 0:
            self._finish("done")
            return
        self.broadcast("tick", {"remaining": running.remaining, "by": running.by})
        self._timer = self.send_after(self.tick_seconds, "tick")

    async def terminate(self, reason) -> None:
        if getattr(self, "_timer", None) is not None and RUNNING.get(self.topic) is not None:
            self._finish("stopped")  # our timer dies with us: tell the room

    def _finish(self, event: str) -> None:
        RUNNING.pop(self.topic, None)
        self._timer = None
        self.broadcast(event, {})
