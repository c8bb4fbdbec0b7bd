"""Python channel handlers for the harness tests: timers, a crash, a stop."""

from __future__ import annotations

from typing import Any

from chanctl import Channel, error, ok


class Ticker(Channel):
    """Pushes ``tick`` n times from handle_info timers after ``start``; ``boom`` raises; ``bye`` stops."""

    async def join(self, params: Any):
        if params.get("crash"):
            raise RuntimeError("join exploded")
        if params.get("refuse"):
            return error({"reason": "go away"})
        self._params = params
        return ok({"hello": self.user["id"]})

    async def handle_in(self, event: str, payload: Any):
        if event == "start":
            self.send_after(0.01, ("tick", payload["n"]))
            return ok()
        if event == "echo":
            return ok({"got": payload, "params": self._params})
        if event == "bin":
            self.push("blob", payload)
            self.broadcast("blob", payload[::-1])
            return ok(payload + b"\x03\x04")
        if event == "boom":
            raise RuntimeError("handler exploded")
        if event == "bye":
            self.stop()
            return ok({"bye": True})
        return error({"reason": "unknown event", "event": event})

    async def handle_info(self, message: Any) -> None:
        tag, left = message
        if tag == "crash":
            raise RuntimeError("info exploded")
        self.push("tick", {"left": left})
        if left > 1:
            self.send_after(0.01, ("tick", left - 1))
        else:
            self.send_after(0.01, ("crash", 0))
