from __future__ import annotations

import pytest

from chanctl.tui import WatchApp
from tests.support import TIMEOUT


@pytest.fixture
def watch_app(chat_server, mint) -> WatchApp:
    """The dashboard as user 1 with an admin token, on the chat sample."""
    return WatchApp(chat_server.url, mint(1, admin=True), timeout=TIMEOUT)
