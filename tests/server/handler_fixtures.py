"""Channel handlers the handler tests name in their YAML (``tests.server.handler_fixtures:...``)."""

from __future__ import annotations

import asyncio
from typing import Any

from chanctl import Channel, error, ok

EVENTS: list[tuple[str, Any]] = []
"""What the handlers saw, in order; each test clears it."""
TIMERS: list[asyncio.TimerHandle] = []
TERMINATED: asyncio.Queue[tuple[str, str]] | None = None


class Lifecycle(Channel):
    async def join(self, params: Any):
        if params.get("crash"):
            raise RuntimeError("boom in join")
        self.assigns["joins"] = self.assigns.get("joins", 0) + 1
        EVENTS.append(("join", params))
        if params.get("after_join"):
            TIMERS.append(self.send_after(0, "after_join"))
        return ok({"joins": self.assigns["joins"], "user": self.user["id"], "id": self.captures["id"]})

    async def handle_in(self, event: str, payload: Any):
        EVENTS.append((event, payload))
        if event == "crash":
            raise ValueError("boom in handle_in")
        if event == "echo":
            return ok(payload)
        if event == "push":
            self.push("pushed", payload)
            return ok()
        if event == "broadcast":
            self.broadcast("shout", payload)
            return ok()
        if event == "broadcast_from":
            self.broadcast_from("shout", payload)
            return ok()
        if event == "later":
            self.send_after(0, ("reply", self.socket_ref(), payload))
            return None
        if event == "timer":
            TIMERS.append(self.send_after(payload["after"], ("tick", payload)))
            return ok()
        return error({"reason": "unknown event", "event": event})

    async def handle_info(self, message: Any) -> None:
        EVENTS.append(("info", message))
        if message == "after_join":
            self.push("welcome", {"joins": self.assigns["joins"]})
        elif isinstance(message, tuple) and message[0] == "reply":
            self.reply(message[1], ok({"later": message[2]}))
        elif isinstance(message, tuple) and message[0] == "tick":
            self.push("tick", message[1])
        elif message == "crash":
            raise KeyError("boom in handle_info")
        elif isinstance(message, dict):
            self.push("info", message)

    async def terminate(self, reason) -> None:
        if TERMINATED is not None:
            TERMINATED.put_nowait((self.topic, reason.value))
