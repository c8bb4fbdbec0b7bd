"""``chanctl watch``: a Textual dashboard that is only a client of the admin plane (``chanctl:admin``).

Importing this package imports Textual, so the CLI imports it inside the ``watch`` command only.
"""

from chanctl.tui.app import WatchApp

__all__ = ["WatchApp"]
