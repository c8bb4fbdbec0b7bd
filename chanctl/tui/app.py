"""The ``chanctl watch`` application: thin; the dashboard screen does the work."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from chanctl.errors import ClientError
from chanctl.tui.screens.dashboard import DashboardScreen

__all__ = ["WatchApp"]


class WatchApp(App[None]):
    """A live view of one server through its admin plane.

    Args:
        url: the server's socket URL.
        token: a token with the admin claim.
        timeout: seconds for the handshake, the join and each command's reply.
        clock: the wall clock (``time.time``), fixed by snapshot tests and the screenshot script.
    """

    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: a subclass elsewhere finds it too
    TITLE = "chanctl watch"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        # Textual asks for Ctrl+Q on Ctrl+C; people press Ctrl+C to stop a terminal program.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, url: str, token: str, *, timeout: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.url = url
        self.token = token
        self.timeout = timeout
        self.clock = clock
        """Wall-clock time for uptimes and presence lines; fixed in snapshot tests."""
        self.failure: ClientError | None = None
        """Why the dashboard could not start (refused, unreachable); the CLI turns it into an exit code."""

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen(self.url, self.token, self.timeout)

    def fail(self, error: ClientError) -> None:
        """End the app because it could not connect at start."""
        self.failure = error
        self.exit(return_code=1)
